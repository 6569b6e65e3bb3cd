//! The consumers' typed configuration, read once at start.

use reservation_events_consumer::{Config, ConfigError};
use settings::ResourceName;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// `READ_MODEL_TABLE` (projector) or `NOTIFICATIONS_TABLE` (notifier).
    pub table: String,
    /// `NOTIFICATION_RETENTION_DAYS`: how long sent notifications are kept (TTL).
    pub notification_retention: time::Duration,
    /// What the consumer kit reads: `EVENT_BUS` (Kinesis or Kafka batches), the dead-letter
    /// target; the metrics go to the product's namespace.
    pub kit: Config,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConsumerConfigError {
    #[error(transparent)]
    Kit(#[from] ConfigError),
    #[error(transparent)]
    Setting(#[from] settings::SettingError),
}

impl ConsumerConfig {
    /// Reads the consumer's `table`, `NOTIFICATION_RETENTION_DAYS`, the dead-letter target and
    /// `EVENT_BUS`.
    pub fn from_vars(vars: &HashMap<String, String>, table: ResourceName) -> Result<Self, ConsumerConfigError> {
        Ok(Self {
            table: settings::Vars(vars).name(table)?,
            notification_retention: Self::notification_retention_from_vars(vars)?,
            kit: Config {
                metrics_namespace: telemetry::NAMESPACE.to_owned(),
                ..Config::from_vars(vars)?
            },
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

    use settings::names;
    use settings::vars_of as vars;

    #[test]
    fn defaults_and_readable_errors() {
        let config =
            ConsumerConfig::from_vars(&vars(&[("DEAD_LETTER_FILE", "/tmp/dl.jsonl")]), names::READ_MODEL_TABLE)
                .unwrap();
        assert_eq!(config.table, "guest-reservations");
        assert_eq!(config.notification_retention, time::Duration::days(30));
        assert_eq!(config.kit.metrics_namespace, telemetry::NAMESPACE);

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

    #[test]
    fn the_bus_is_kinesis_unless_kafka_is_chosen_and_anything_else_is_named() {
        let base = [("DEAD_LETTER_FILE", "/tmp/x")];
        assert_eq!(
            ConsumerConfig::from_vars(&vars(&base), names::READ_MODEL_TABLE)
                .unwrap()
                .kit
                .bus,
            settings::EventBus::Kinesis
        );
        let kafka = vars(&[("DEAD_LETTER_FILE", "/tmp/x"), ("EVENT_BUS", "kafka")]);
        assert_eq!(
            ConsumerConfig::from_vars(&kafka, names::READ_MODEL_TABLE)
                .unwrap()
                .kit
                .bus,
            settings::EventBus::Kafka
        );
        let bad = vars(&[("DEAD_LETTER_FILE", "/tmp/x"), ("EVENT_BUS", "Kafka")]);
        assert_eq!(
            ConsumerConfig::from_vars(&bad, names::READ_MODEL_TABLE)
                .unwrap_err()
                .to_string(),
            r#"EVENT_BUS must be "kinesis" or "kafka", got "Kafka""#
        );
    }
}
