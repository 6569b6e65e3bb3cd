//! MSK IAM authentication: the SASL/OAUTHBEARER token MSK accepts is a presigned (SigV4, service
//! `kafka-cluster`) `GET https://kafka.<region>.amazonaws.com/?Action=kafka-cluster:Connect`,
//! valid for 15 minutes, with a `User-Agent` parameter added after signing, the whole URL
//! base64url-encoded without padding. MSK checks the signature and then the role's
//! `kafka-cluster:*` permissions on the cluster, topic and group.
//!
//! The parameters come in the order AWS's own signers give them (aws-msk-iam-sasl-signer-python,
//! through botocore's `SigV4QueryAuth`): the action, the signing parameters with
//! `X-Amz-Security-Token` last of them, then `X-Amz-Signature`, then `User-Agent`. The signature
//! does not depend on the order (SigV4 sorts the query to sign it), but no broker-side verifier
//! is public to show that MSK never reads the URL in order, so it gets the order it is tested
//! with.

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use std::time::{Duration, SystemTime};

const SIGNING_NAME: &str = "kafka-cluster";
const ACTION: &str = "kafka-cluster%3AConnect";
const EXPIRES_IN: Duration = Duration::from_secs(900);
const USER_AGENT: &str = concat!("reservation-outbox/", env!("CARGO_PKG_VERSION"));

/// The AWS credentials and Region a token is signed with (a function's role, from its SDK
/// configuration).
#[derive(Debug, Clone)]
pub struct AwsIdentity {
    pub credentials: SharedCredentialsProvider,
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no AWS credentials to sign the MSK IAM token with: {0}")]
    Credentials(#[source] aws_credential_types::provider::error::CredentialsError),
    #[error("could not sign the MSK IAM token: {0}")]
    Signing(String),
}

impl AwsIdentity {
    /// The credentials and Region of an SDK configuration, when it has both.
    pub fn from_sdk_config(sdk: &aws_types::SdkConfig) -> Option<Self> {
        Some(Self {
            credentials: sdk.credentials_provider()?,
            region: sdk.region()?.to_string(),
        })
    }

    /// A fresh MSK IAM token (the client asks for one at each authentication).
    pub async fn auth_token(&self) -> Result<String, TokenError> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(TokenError::Credentials)?;
        token(&credentials.into(), &self.region, SystemTime::now())
    }
}

/// The token for `identity` in `region` at `now`.
pub fn token(identity: &Identity, region: &str, now: SystemTime) -> Result<String, TokenError> {
    let endpoint = format!("https://kafka.{region}.amazonaws.com/?Action={ACTION}");
    let host = format!("kafka.{region}.amazonaws.com");
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(EXPIRES_IN);
    let params = SigningParams::builder()
        .identity(identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| TokenError::Signing(e.to_string()))?
        .into();
    let request = SignableRequest::new(
        "GET",
        endpoint.as_str(),
        [("host", host.as_str())].into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| TokenError::Signing(e.to_string()))?;
    let (_, query) = sign(request, &params)
        .map_err(|e| TokenError::Signing(e.to_string()))?
        .into_parts()
        .0
        .into_parts();
    // aws-sigv4 gives the session token after the signature; AWS's signers put the signature last.
    let (signature, signing): (Vec<_>, Vec<_>) = query.into_iter().partition(|(name, _)| *name == "X-Amz-Signature");
    let mut url = endpoint;
    for (name, value) in signing.into_iter().chain(signature) {
        url.push('&');
        url.push_str(name);
        url.push('=');
        url.push_str(&percent_encode(&value));
    }
    url.push_str("&User-Agent=");
    url.push_str(&percent_encode(USER_AGENT));
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url))
}

/// What RFC 3986 leaves unreserved stays; everything else of a query value is encoded, as SigV4
/// canonicalises it.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn percent_encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn a_token_is_a_presigned_connect_url_for_kafka_cluster_valid_for_15_minutes() {
        let credentials =
            aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", Some("session-token".into()), None, "test");
        // 2026-11-24T10:00:00Z
        let now = UNIX_EPOCH + Duration::from_secs(1_795_514_400);
        let token = token(&credentials.into(), "eu-west-1", now).unwrap();
        assert!(!token.contains(['=', '+', '/']), "base64url without padding: {token}");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token).unwrap();
        let url = String::from_utf8(url).unwrap();
        assert!(
            url.starts_with("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F20261124%2Feu-west-1%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Date=20261124T100000Z",
            "X-Amz-Expires=900",
            "X-Amz-SignedHeaders=host",
            "X-Amz-Security-Token=session-token",
            "X-Amz-Signature=",
        ] {
            assert!(url.contains(&format!("&{part}")), "{part} missing from {url}");
        }
        assert!(
            url.ends_with(&format!("&User-Agent={}", percent_encode(USER_AGENT))),
            "{url}"
        );
    }

    /// The parameter names of a token's URL, in order.
    fn parameter_names(token: &str) -> Vec<String> {
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).unwrap();
        let url = String::from_utf8(url).unwrap();
        let (_, query) = url.split_once('?').unwrap();
        query
            .split('&')
            .map(|p| p.split('=').next().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn the_parameters_come_in_the_order_of_aws_signers_signature_last_then_the_user_agent() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_514_400);
        let with_session =
            aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", Some("session-token".into()), None, "test");
        assert_eq!(
            parameter_names(&token(&with_session.into(), "eu-west-1", now).unwrap()),
            [
                "Action",
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-SignedHeaders",
                "X-Amz-Security-Token",
                "X-Amz-Signature",
                "User-Agent",
            ]
        );
        // Long-lived keys have no session token; the order is otherwise the same.
        let without = aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let names = parameter_names(&token(&without.into(), "eu-west-1", now).unwrap());
        assert_eq!(names[names.len() - 2..], ["X-Amz-Signature", "User-Agent"]);
        assert!(!names.iter().any(|n| n == "X-Amz-Security-Token"));
    }
}
