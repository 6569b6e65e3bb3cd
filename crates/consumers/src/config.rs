//! The consumers' typed configuration, read once at start.

use dead_letters::{DeadLetterTarget, NoDeadLetterTarget};
use settings::{ResourceName, names};
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
    #[error(transparent)]
    Setting(#[from] settings::SettingError),
}

impl ConsumerConfig {
    pub fn projector_from_env() -> Result<Self, ConsumerConfigError> {
        Self::from_vars(&std::env::vars().collect(), names::READ_MODEL_TABLE)
    }

    pub fn notifier_from_env() -> Result<Self, ConsumerConfigError> {
        Self::from_vars(&std::env::vars().collect(), names::NOTIFICATIONS_TABLE)
    }

    /// Reads the consumer's `table`, `NOTIFICATION_RETENTION_DAYS` and the dead-letter target.
    pub fn from_vars(vars: &HashMap<String, String>, table: ResourceName) -> Result<Self, ConsumerConfigError> {
        Ok(Self {
            table: settings::Vars(vars).name(table)?,
            notification_retention: Self::notification_retention_from_vars(vars)?,
            dead_letters: DeadLetterTarget::from_vars(vars)?,
        })
    }

    /// `NOTIFICATION_RETENTION_DAYS` (default 30): also read by the local stack and the replay
    /// tool, which choose their dead letters themselves.
    pub fn notification_retention_from_vars(
        vars: &HashMap<String, String>,
    ) -> Result<time::Duration, settings::SettingError> {
        let days = settings::Vars(vars).whole_number(&settings::retention::NOTIFICATION_DAYS)?;
        Ok(time::Duration::days(days as i64))
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
        let config =
            ConsumerConfig::from_vars(&vars(&[("DEAD_LETTER_FILE", "/tmp/dl.jsonl")]), names::READ_MODEL_TABLE)
                .unwrap();
        assert_eq!(config.table, "guest-reservations");
        assert_eq!(config.notification_retention, time::Duration::days(30));

        let err = ConsumerConfig::from_vars(&vars(&[]), names::READ_MODEL_TABLE).unwrap_err();
        assert!(err.to_string().starts_with("set DEAD_LETTER_QUEUE_URL"));
        let err = ConsumerConfig::from_vars(
            &vars(&[("DEAD_LETTER_FILE", "f"), ("NOTIFICATION_RETENTION_DAYS", "forever")]),
            names::NOTIFICATIONS_TABLE,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "NOTIFICATION_RETENTION_DAYS must be a whole number of days from 1 to 3650, got \"forever\""
        );
    }
}
