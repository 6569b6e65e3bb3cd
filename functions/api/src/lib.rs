//! The API Lambda's wiring, shared by its `main.rs` and by the local stack so both build the very
//! same application: the typed config read once at start, and the DynamoDB store and read model
//! behind `api::App`.

use adapters::{DynamoReadModel, DynamoReservationStore, StoreConfigError, StoreTables};
use api::{App, AuthPolicy, ReservationService, RetryPolicy};
use std::collections::HashMap;

/// The API's configuration: its store's tables and retention, the read model it serves, and how
/// it tells callers apart.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub store: StoreTables,
    /// `READ_MODEL_TABLE`: the guest read model the projector builds; the API only reads it.
    pub read_model_table: String,
    /// `AUTH_MODE` (NONE, IAM, JWT; the template's AuthMode), with `JWT_GUEST_CLAIM` and
    /// `JWT_ADMIN_SCOPE` in JWT mode.
    pub auth: AuthPolicy,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ApiConfigError {
    #[error(transparent)]
    Store(#[from] StoreConfigError),
    #[error(transparent)]
    Setting(#[from] settings::SettingError),
    #[error("AUTH_MODE must be NONE, IAM or JWT, got {0:?}")]
    AuthMode(String),
}

impl ApiConfig {
    pub fn from_env() -> Result<Self, ApiConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the store's variables (see [`StoreTables::from_vars`]), `READ_MODEL_TABLE` and the
    /// auth settings.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ApiConfigError> {
        let env = settings::Vars(vars);
        let auth = match env.get("AUTH_MODE").unwrap_or("NONE") {
            "NONE" => AuthPolicy::Open,
            "IAM" => AuthPolicy::Iam,
            "JWT" => AuthPolicy::jwt(
                env.text("JWT_GUEST_CLAIM", api::auth::DEFAULT_GUEST_CLAIM)?,
                env.text("JWT_ADMIN_SCOPE", api::auth::DEFAULT_ADMIN_SCOPE)?,
            ),
            other => return Err(ApiConfigError::AuthMode(other.to_owned())),
        };
        Ok(Self {
            store: StoreTables::from_vars(vars)?,
            read_model_table: env.name(settings::names::READ_MODEL_TABLE)?,
            auth,
        })
    }
}

pub type DynamoApp = App<DynamoReservationStore, DynamoReadModel>;

/// The application the Lambda serves, on `dynamodb`.
pub fn app(dynamodb: aws_sdk_dynamodb::Client, config: &ApiConfig) -> DynamoApp {
    let store = DynamoReservationStore::new(dynamodb.clone(), config.store.clone());
    let guests = DynamoReadModel::new(dynamodb, &config.read_model_table);
    App::new(ReservationService::new(store, RetryPolicy::default()), guests).with_auth(config.auth.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::RelayMode;
    use time::Duration;

    use settings::vars_of as vars;

    #[test]
    fn defaults_follow_the_design() {
        let config = ApiConfig::from_vars(&HashMap::new()).unwrap();
        assert_eq!(config.store.reservations_table, "reservations");
        assert_eq!(config.store.outbox_table, "reservation-outbox");
        assert_eq!(config.read_model_table, "guest-reservations");
        assert_eq!(config.store.outbox_retention, Duration::days(7));
        assert_eq!(config.store.idempotency_retention, Duration::hours(24));
    }

    #[test]
    fn overrides_are_read_and_bad_values_name_the_variable() {
        let config = ApiConfig::from_vars(&vars(&[("OUTBOX_TABLE", "ob"), ("OUTBOX_RETENTION_DAYS", "3")])).unwrap();
        assert_eq!(config.store.outbox_table, "ob");
        assert_eq!(config.store.outbox_retention, Duration::days(3));
        let err = ApiConfig::from_vars(&vars(&[("OUTBOX_RETENTION_DAYS", "0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "OUTBOX_RETENTION_DAYS must be a positive whole number, got \"0\""
        );
        assert!(ApiConfig::from_vars(&vars(&[("RESERVATIONS_TABLE", " ")])).is_err());
    }

    #[test]
    fn auth_mode_follows_the_template_and_a_bad_one_is_named() {
        assert_eq!(ApiConfig::from_vars(&HashMap::new()).unwrap().auth, AuthPolicy::Open);
        assert_eq!(
            ApiConfig::from_vars(&vars(&[("AUTH_MODE", "IAM")])).unwrap().auth,
            AuthPolicy::Iam
        );
        let jwt = ApiConfig::from_vars(&vars(&[("AUTH_MODE", "JWT"), ("JWT_GUEST_CLAIM", "email")])).unwrap();
        assert_eq!(jwt.auth, AuthPolicy::jwt("email", "reservations/admin"));
        let err = ApiConfig::from_vars(&vars(&[("AUTH_MODE", "jwt")])).unwrap_err();
        assert_eq!(err.to_string(), r#"AUTH_MODE must be NONE, IAM or JWT, got "jwt""#);
    }

    #[test]
    fn relay_mode_defaults_to_stream_and_rejects_anything_else() {
        assert_eq!(
            ApiConfig::from_vars(&HashMap::new()).unwrap().store.relay_mode,
            RelayMode::Stream
        );
        let polling = ApiConfig::from_vars(&vars(&[("RELAY_MODE", "polling")])).unwrap();
        assert_eq!(polling.store.relay_mode, RelayMode::Polling);
        let err = ApiConfig::from_vars(&vars(&[("RELAY_MODE", "cdc")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"RELAY_MODE must be "stream" or "polling", got "cdc""#
        );
    }
}
