//! The consumers' typed configuration, read once at start.

use dead_letters::{DeadLetterTarget, NoDeadLetterTarget};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// `READ_MODEL_TABLE` (projector) or `NOTIFICATIONS_TABLE` (notifier).
    pub table: String,
    /// `NOTIFICATION_RETENTION_DAYS`: how long sent notifications are kept (TTL).
    pub notification_retention: time::Duration,
    pub dead_letters: DeadLetterTarget,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConsumerConfigError {
    #[error(transparent)]
    NoDeadLetterTarget(#[from] NoDeadLetterTarget),
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("NOTIFICATION_RETENTION_DAYS must be a whole number of days from 1 to 3650, got {0:?}")]
    Retention(String),
}

impl ConsumerConfig {
    pub const DEFAULT_READ_MODEL_TABLE: &str = "guest-reservations";
    pub const DEFAULT_NOTIFICATIONS_TABLE: &str = "reservation-notifications";

    pub fn projector_from_env() -> Result<Self, ConsumerConfigError> {
        Self::from_vars(
            &std::env::vars().collect(),
            "READ_MODEL_TABLE",
            Self::DEFAULT_READ_MODEL_TABLE,
        )
    }

    pub fn notifier_from_env() -> Result<Self, ConsumerConfigError> {
        Self::from_vars(
            &std::env::vars().collect(),
            "NOTIFICATIONS_TABLE",
            Self::DEFAULT_NOTIFICATIONS_TABLE,
        )
    }

    pub fn from_vars(
        vars: &HashMap<String, String>,
        table_var: &'static str,
        default_table: &str,
    ) -> Result<Self, ConsumerConfigError> {
        let table = match vars.get(table_var) {
            None => default_table.to_owned(),
            Some(v) if v.trim().is_empty() => return Err(ConsumerConfigError::Empty(table_var)),
            Some(v) => v.trim().to_owned(),
        };
        Ok(Self {
            table,
            notification_retention: Self::notification_retention_from_vars(vars)?,
            dead_letters: DeadLetterTarget::from_vars(vars)?,
        })
    }

    /// `NOTIFICATION_RETENTION_DAYS` (default 30): also read by the local stack, which chooses its
    /// dead letters itself.
    pub fn notification_retention_from_vars(
        vars: &HashMap<String, String>,
    ) -> Result<time::Duration, ConsumerConfigError> {
        let days = match vars.get("NOTIFICATION_RETENTION_DAYS") {
            None => 30,
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or_else(|| ConsumerConfigError::Retention(v.clone()))?,
        };
        Ok(time::Duration::days(days))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_and_readable_errors() {
        let config = ConsumerConfig::from_vars(
            &vars(&[("DEAD_LETTER_FILE", "/tmp/dl.jsonl")]),
            "READ_MODEL_TABLE",
            ConsumerConfig::DEFAULT_READ_MODEL_TABLE,
        )
        .unwrap();
        assert_eq!(config.table, "guest-reservations");
        assert_eq!(config.notification_retention, time::Duration::days(30));

        let err = ConsumerConfig::from_vars(&vars(&[]), "READ_MODEL_TABLE", "x").unwrap_err();
        assert!(err.to_string().starts_with("set DEAD_LETTER_QUEUE_URL"));
        let err = ConsumerConfig::from_vars(
            &vars(&[("DEAD_LETTER_FILE", "f"), ("NOTIFICATION_RETENTION_DAYS", "forever")]),
            "NOTIFICATIONS_TABLE",
            "x",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "NOTIFICATION_RETENTION_DAYS must be a whole number of days from 1 to 3650, got \"forever\""
        );
    }
}
