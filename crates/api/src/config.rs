//! Typed configuration, read from the environment once at start.

use std::collections::HashMap;
use time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    pub reservations_table: String,
    pub outbox_table: String,
    /// `READ_MODEL_TABLE`: the guest read model the projector builds; the API only reads it.
    pub read_model_table: String,
    pub outbox_retention: Duration,
    pub idempotency_retention: Duration,
    /// `RELAY_MODE` (`stream` or `polling`): in polling mode new events are marked unpublished.
    pub relay_mode: adapters::RelayMode,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{name} must be a positive whole number, got {value:?}")]
    NotAPositiveNumber { name: &'static str, value: String },
    #[error("{name} must not be empty")]
    Empty { name: &'static str },
    #[error(transparent)]
    RelayMode(#[from] adapters::dynamodb::items::UnknownRelayMode),
}

impl ApiConfig {
    pub const DEFAULT_RESERVATIONS_TABLE: &str = "reservations";
    pub const DEFAULT_OUTBOX_TABLE: &str = "reservation-outbox";
    pub const DEFAULT_READ_MODEL_TABLE: &str = "guest-reservations";
    pub const DEFAULT_OUTBOX_RETENTION_DAYS: i64 = 7;
    pub const DEFAULT_IDEMPOTENCY_RETENTION_HOURS: i64 = 24;

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads `RESERVATIONS_TABLE`, `OUTBOX_TABLE`, `OUTBOX_RETENTION_DAYS` and
    /// `IDEMPOTENCY_RETENTION_HOURS` and `RELAY_MODE`, with DESIGN.md's defaults.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let text = |name: &'static str, default: &str| -> Result<String, ConfigError> {
            match vars.get(name) {
                None => Ok(default.to_owned()),
                Some(v) if v.trim().is_empty() => Err(ConfigError::Empty { name }),
                Some(v) => Ok(v.trim().to_owned()),
            }
        };
        let positive = |name: &'static str, default: i64| -> Result<i64, ConfigError> {
            match vars.get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError::NotAPositiveNumber { name, value: v.clone() }),
            }
        };
        Ok(Self {
            reservations_table: text("RESERVATIONS_TABLE", Self::DEFAULT_RESERVATIONS_TABLE)?,
            outbox_table: text("OUTBOX_TABLE", Self::DEFAULT_OUTBOX_TABLE)?,
            read_model_table: text("READ_MODEL_TABLE", Self::DEFAULT_READ_MODEL_TABLE)?,
            outbox_retention: Duration::days(positive("OUTBOX_RETENTION_DAYS", Self::DEFAULT_OUTBOX_RETENTION_DAYS)?),
            idempotency_retention: Duration::hours(positive(
                "IDEMPOTENCY_RETENTION_HOURS",
                Self::DEFAULT_IDEMPOTENCY_RETENTION_HOURS,
            )?),
            relay_mode: match vars.get("RELAY_MODE") {
                None => adapters::RelayMode::default(),
                Some(v) => v.parse()?,
            },
        })
    }

    pub fn store_tables(&self) -> adapters::StoreTables {
        adapters::StoreTables {
            reservations_table: self.reservations_table.clone(),
            outbox_table: self.outbox_table.clone(),
            outbox_retention: self.outbox_retention,
            idempotency_retention: self.idempotency_retention,
            relay_mode: self.relay_mode,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_follow_the_design() {
        let config = ApiConfig::from_vars(&HashMap::new()).unwrap();
        assert_eq!(config.reservations_table, "reservations");
        assert_eq!(config.outbox_table, "reservation-outbox");
        assert_eq!(config.outbox_retention, Duration::days(7));
        assert_eq!(config.idempotency_retention, Duration::hours(24));
    }

    #[test]
    fn overrides_are_read_and_bad_values_name_the_variable() {
        let config = ApiConfig::from_vars(&vars(&[("OUTBOX_TABLE", "ob"), ("OUTBOX_RETENTION_DAYS", "3")])).unwrap();
        assert_eq!(config.outbox_table, "ob");
        assert_eq!(config.outbox_retention, Duration::days(3));
        let err = ApiConfig::from_vars(&vars(&[("OUTBOX_RETENTION_DAYS", "0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "OUTBOX_RETENTION_DAYS must be a positive whole number, got \"0\""
        );
        assert!(ApiConfig::from_vars(&vars(&[("RESERVATIONS_TABLE", " ")])).is_err());
    }

    #[test]
    fn relay_mode_defaults_to_stream_and_rejects_anything_else() {
        assert_eq!(
            ApiConfig::from_vars(&HashMap::new()).unwrap().relay_mode,
            adapters::RelayMode::Stream
        );
        let polling = ApiConfig::from_vars(&vars(&[("RELAY_MODE", "polling")])).unwrap();
        assert_eq!(polling.store_tables().relay_mode, adapters::RelayMode::Polling);
        let err = ApiConfig::from_vars(&vars(&[("RELAY_MODE", "cdc")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"RELAY_MODE must be "stream" or "polling", got "cdc""#
        );
    }
}
