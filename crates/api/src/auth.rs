//! Who is calling, and what they may touch.
//!
//! API Gateway (or the function URL) has already authenticated the request: it checked the SigV4
//! signature (AuthMode IAM) or the JWT (AuthMode JWT) and put what it verified into the request
//! context. This module turns that into a [`Caller`] and decides, per request, what the caller may
//! do. With JWT the guest is the token's subject: a guest books, reads and cancels only their own
//! reservations, and an admin (a scope or a group) may act for every guest and manage slots.
//! Idempotency-Keys belong to the caller who sent them, so one caller can neither replay nor
//! block another's.

use crate::problem::Problem;
use domain::{GuestId, IdempotencyKey};
use http::StatusCode;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use sha2::{Digest, Sha256};

/// The JWT claim that is the guest, unless the deployment names another (JwtGuestClaim).
pub const DEFAULT_GUEST_CLAIM: &str = "sub";
/// The scope that makes a JWT caller an admin, unless the deployment names another (JwtAdminScope).
pub const DEFAULT_ADMIN_SCOPE: &str = "reservations/admin";
/// The `cognito:groups` member that makes a JWT caller an admin, beside the admin scope.
pub const ADMIN_GROUP: &str = "reservations-admins";

/// How callers are told apart, from the deployment's AuthMode.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AuthPolicy {
    /// AuthMode NONE (demos, the local server): no caller identity; everything allowed and
    /// Idempotency-Keys shared by everyone.
    #[default]
    Open,
    /// AuthMode IAM: the caller is the signing IAM principal. Its IAM policy decides which routes
    /// it may call; its Idempotency-Keys are its own.
    Iam,
    /// AuthMode JWT: the guest is the claim `guest_claim` of the verified token. A token with the
    /// scope `admin_scope`, or in the group `admin_group` (`cognito:groups`), is an admin.
    Jwt {
        guest_claim: String,
        admin_scope: String,
        admin_group: String,
    },
}

impl AuthPolicy {
    /// AuthMode JWT with the guest in `guest_claim` and admins by `admin_scope` or [`ADMIN_GROUP`].
    pub fn jwt(guest_claim: impl Into<String>, admin_scope: impl Into<String>) -> Self {
        Self::Jwt {
            guest_claim: guest_claim.into(),
            admin_scope: admin_scope.into(),
            admin_group: ADMIN_GROUP.to_owned(),
        }
    }

    /// AuthMode JWT as the template deploys it by default.
    pub fn default_jwt() -> Self {
        Self::jwt(DEFAULT_GUEST_CLAIM, DEFAULT_ADMIN_SCOPE)
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Not told apart from other callers (AuthMode NONE).
    Anyone,
    /// An IAM principal (its ARN).
    Principal(String),
    /// A guest, by the token's subject.
    Guest(GuestId),
    /// An admin, by the token's subject.
    Admin(String),
}

impl Caller {
    /// The caller of `req` under `policy`, or 401 when the request carries no identity the
    /// policy needs (API Gateway never lets such a request through; a misconfigured stack might).
    pub fn of(policy: &AuthPolicy, req: &Request) -> Result<Self, Problem> {
        let context = req.request_context_ref();
        let authorizer = match context {
            Some(RequestContext::ApiGatewayV2(context)) => context.authorizer.as_ref(),
            _ => None,
        };
        match policy {
            AuthPolicy::Open => Ok(Self::Anyone),
            AuthPolicy::Iam => {
                // An HTTP API or a function URL names the signer in the authorizer; a REST API in
                // the request's identity.
                let principal = match context {
                    Some(RequestContext::ApiGatewayV1(context)) => {
                        let identity = &context.identity;
                        identity.user_arn.clone().or_else(|| identity.caller.clone())
                    }
                    _ => {
                        let iam = authorizer.and_then(|a| a.iam.as_ref());
                        iam.and_then(|i| i.user_arn.clone().or_else(|| i.caller_id.clone()))
                    }
                };
                principal
                    .filter(|p| !p.is_empty())
                    .map(Self::Principal)
                    .ok_or_else(|| unauthorized("the request is not signed"))
            }
            AuthPolicy::Jwt {
                guest_claim,
                admin_scope,
                admin_group,
            } => {
                let jwt = authorizer
                    .and_then(|a| a.jwt.as_ref())
                    .ok_or_else(|| unauthorized("the request carries no verified token"))?;
                let subject = jwt
                    .claims
                    .get(guest_claim)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| unauthorized(&format!("the token has no {guest_claim} claim")))?;
                let scoped = jwt.scopes.iter().flatten().any(|s| s == admin_scope)
                    || jwt
                        .claims
                        .get("scope")
                        .is_some_and(|s| s.split(' ').any(|s| s == admin_scope));
                let grouped = jwt
                    .claims
                    .get("cognito:groups")
                    .is_some_and(|groups| claim_list(groups).any(|g| g == admin_group));
                if scoped || grouped {
                    return Ok(Self::Admin(subject.clone()));
                }
                GuestId::parse(subject.as_str())
                    .map(Self::Guest)
                    .map_err(|_| forbidden("the token's subject is not a valid guest id"))
            }
        }
    }

    /// Whether the caller may book, read and cancel `guest`'s reservations.
    pub fn may_act_for(&self, guest: &GuestId) -> bool {
        match self {
            Self::Guest(own) => own == guest,
            Self::Anyone | Self::Principal(_) | Self::Admin(_) => true,
        }
    }

    /// Whether the caller may create and resize slots (not a guest's business).
    pub fn may_manage_slots(&self) -> bool {
        !matches!(self, Self::Guest(_))
    }

    /// The caller's own namespace of Idempotency-Keys: `key` as stored for this caller.
    pub fn own_key(&self, key: IdempotencyKey) -> IdempotencyKey {
        let owner = match self {
            Self::Anyone => return key,
            Self::Principal(arn) => format!("iam:{arn}"),
            Self::Guest(guest) => format!("guest:{guest}"),
            Self::Admin(subject) => format!("admin:{subject}"),
        };
        // A digest keeps the stored key short whatever the caller's id looks like.
        let digest = Sha256::digest(owner.as_bytes());
        key.owned_by(&hex::encode(&digest[..16]))
    }
}

/// The values of a list claim as API Gateway passes it on: `[a b]`, or `a,b`.
fn claim_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split([' ', ','])
        .filter(|s| !s.is_empty())
}

fn unauthorized(detail: &str) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail.to_owned())
}

/// 403 `forbidden`: the caller is known, and this is not theirs.
pub fn forbidden(detail: &str) -> Problem {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", detail.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
    };
    use std::collections::HashMap;

    fn jwt_policy() -> AuthPolicy {
        AuthPolicy::default_jwt()
    }

    fn with_claims(claims: &[(&str, &str)], scopes: Option<Vec<String>>) -> Request {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>();
        jwt.scopes = scopes;
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        let mut context = ApiGatewayV2httpRequestContext::default();
        context.authorizer = Some(authorizer);
        Request::default().with_request_context(RequestContext::ApiGatewayV2(context))
    }

    #[test]
    fn the_guest_is_the_tokens_subject_and_an_admin_scope_or_group_acts_for_everyone() {
        let ada = Caller::of(&jwt_policy(), &with_claims(&[("sub", "ada")], None)).unwrap();
        assert_eq!(ada, Caller::Guest(GuestId::parse("ada").unwrap()));
        assert!(ada.may_act_for(&GuestId::parse("ada").unwrap()));
        assert!(!ada.may_act_for(&GuestId::parse("bob").unwrap()));
        assert!(!ada.may_manage_slots());

        let scoped = with_claims(&[("sub", "ops")], Some(vec!["reservations/admin".into()]));
        assert_eq!(Caller::of(&jwt_policy(), &scoped).unwrap(), Caller::Admin("ops".into()));
        let grouped = with_claims(
            &[("sub", "ops"), ("cognito:groups", "[staff reservations-admins]")],
            None,
        );
        let admin = Caller::of(&jwt_policy(), &grouped).unwrap();
        assert!(admin.may_act_for(&GuestId::parse("bob").unwrap()) && admin.may_manage_slots());
    }

    #[test]
    fn a_request_without_a_verified_token_or_subject_is_401() {
        let problem = Caller::of(&jwt_policy(), &Request::default()).unwrap_err();
        assert_eq!(problem.status, 401);
        let problem = Caller::of(&jwt_policy(), &with_claims(&[("email", "a@b")], None)).unwrap_err();
        assert_eq!(problem.code, "unauthorized");
        assert_eq!(
            Caller::of(&AuthPolicy::Open, &Request::default()).unwrap(),
            Caller::Anyone
        );
    }

    #[test]
    fn idempotency_keys_are_each_callers_own() {
        let key = IdempotencyKey::parse("k1").unwrap();
        let ada = Caller::Guest(GuestId::parse("ada").unwrap());
        let bob = Caller::Guest(GuestId::parse("bob").unwrap());
        assert_ne!(ada.own_key(key.clone()), bob.own_key(key.clone()));
        assert_eq!(ada.own_key(key.clone()), ada.own_key(key.clone()));
        assert_eq!(
            Caller::Anyone.own_key(key.clone()),
            key,
            "unchanged when callers are not told apart"
        );
    }
}
