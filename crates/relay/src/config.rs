//! The relays' typed configuration, read once at start.

pub use dead_letters::DeadLetterTarget;
use kafka_bus::{KafkaConfig, KafkaConfigError};
use std::collections::HashMap;

/// Where the events go: the bus (`settings::EventBus`) with its own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusConfig {
    /// The Kinesis stream `EVENTS_STREAM`.
    Kinesis { stream: String },
    /// A Kafka topic (Amazon MSK): `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_TOPIC`, `KAFKA_AUTH`,
    /// `KAFKA_PARTITIONS`.
    Kafka(KafkaConfig),
}

impl BusConfig {
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, RelayConfigError> {
        Ok(
            match settings::EventBus::from_vars(vars).map_err(settings::SettingError::from)? {
                settings::EventBus::Kinesis => Self::Kinesis {
                    stream: settings::Vars(vars).name(settings::names::EVENTS_STREAM)?,
                },
                settings::EventBus::Kafka => Self::Kafka(KafkaConfig::from_vars(vars)?),
            },
        )
    }

    /// The stream or topic, for logs.
    pub fn destination(&self) -> String {
        match self {
            Self::Kinesis { stream } => format!("Kinesis stream {stream}"),
            Self::Kafka(kafka) => format!("Kafka topic {} on {}", kafka.topic, kafka.bootstrap_servers.join(",")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    pub bus: BusConfig,
    pub dead_letters: DeadLetterTarget,
    /// Which outbox events are this Region's to publish (`AWS_REGION`, `PRIMARY_REGION`).
    pub regions: settings::Regions,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelayConfigError {
    #[error(transparent)]
    NoDeadLetterTarget(#[from] dead_letters::NoDeadLetterTarget),
    #[error(transparent)]
    Setting(#[from] settings::SettingError),
    #[error(transparent)]
    Kafka(#[from] KafkaConfigError),
}

impl RelayConfig {
    pub fn from_env() -> Result<Self, RelayConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the bus (`EVENT_BUS` and its settings, [`BusConfig`]; on Kafka, `KAFKA_PARTITIONS`
    /// is required: a publisher maps keys by it) and the dead-letter target
    /// (`DEAD_LETTER_QUEUE_URL` or `DEAD_LETTER_FILE`).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, RelayConfigError> {
        let bus = BusConfig::from_vars(vars)?;
        if let BusConfig::Kafka(kafka) = &bus
            && kafka.partitions.is_none()
        {
            return Err(settings::SettingError::Missing {
                var: kafka_bus::PARTITIONS.var,
                what: "the partition count the Kafka topic was created with (the stack's KafkaTopicPartitions)",
            }
            .into());
        }
        Ok(Self {
            bus,
            dead_letters: DeadLetterTarget::from_vars(vars)?,
            regions: settings::Regions::from_vars(vars)?,
        })
    }
}

/// The polling publisher's configuration: the relay's, plus the outbox table and the poll's pace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerConfig {
    pub relay: RelayConfig,
    pub outbox_table: String,
    pub settings: crate::polling::PollerSettings,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PollerConfigError {
    #[error(transparent)]
    Relay(#[from] RelayConfigError),
    #[error(transparent)]
    Setting(#[from] settings::SettingError),
}

/// `POLL_INTERVAL_MS`: the pause between polls.
pub const POLL_INTERVAL_MS: settings::WholeNumber =
    settings::WholeNumber::between("POLL_INTERVAL_MS", 1_000, 10, 60_000);
/// `POLL_BATCH_SIZE`: events read per poll.
pub const POLL_BATCH_SIZE: settings::WholeNumber = settings::WholeNumber::between("POLL_BATCH_SIZE", 500, 1, 10_000);

impl PollerConfig {
    pub fn from_env() -> Result<Self, PollerConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads the relay's variables and `OUTBOX_TABLE`, `POLL_INTERVAL_MS` (default 1000) and
    /// `POLL_BATCH_SIZE` (default 500).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, PollerConfigError> {
        let relay = RelayConfig::from_vars(vars)?;
        let vars = settings::Vars(vars);
        let pace = crate::polling::PollerSettings {
            interval: std::time::Duration::from_millis(vars.whole_number(&POLL_INTERVAL_MS)?),
            batch_limit: vars.whole_number(&POLL_BATCH_SIZE)? as usize,
            ..Default::default()
        };
        Ok(Self {
            relay,
            outbox_table: vars.name(settings::names::OUTBOX_TABLE)?,
            settings: pace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use settings::vars_of as vars;

    #[test]
    fn a_dead_letter_target_is_required_and_the_queue_wins() {
        assert_eq!(
            RelayConfig::from_vars(&vars(&[])),
            Err(RelayConfigError::NoDeadLetterTarget(dead_letters::NoDeadLetterTarget))
        );
        let config = RelayConfig::from_vars(&vars(&[
            ("DEAD_LETTER_QUEUE_URL", "https://q"),
            ("DEAD_LETTER_FILE", "/tmp/x"),
        ]))
        .unwrap();
        assert_eq!(config.dead_letters, DeadLetterTarget::Queue("https://q".into()));
        assert_eq!(
            config.bus,
            BusConfig::Kinesis {
                stream: "reservation-events".into()
            }
        );
    }

    #[test]
    fn the_bus_is_kinesis_unless_kafka_is_chosen_and_anything_else_is_named() {
        let kafka = RelayConfig::from_vars(&vars(&[
            ("DEAD_LETTER_FILE", "/tmp/x"),
            ("EVENT_BUS", "kafka"),
            ("KAFKA_TOPIC", "events"),
            ("KAFKA_PARTITIONS", "6"),
        ]))
        .unwrap();
        assert_eq!(
            kafka.bus,
            BusConfig::Kafka(
                KafkaConfig::plaintext("127.0.0.1:9092", "events")
                    .with_partitions(std::num::NonZeroU32::new(6).unwrap())
            )
        );
        // A publisher maps keys by the topic's partition count: it does not start without it.
        let err = RelayConfig::from_vars(&vars(&[("DEAD_LETTER_FILE", "/tmp/x"), ("EVENT_BUS", "kafka")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "KAFKA_PARTITIONS is not set: it must be the partition count the Kafka topic was created with (the stack's KafkaTopicPartitions)"
        );
        // Reading the topic (the replay tool) does not need it.
        assert!(BusConfig::from_vars(&vars(&[("EVENT_BUS", "kafka")])).is_ok());
        let err = RelayConfig::from_vars(&vars(&[("DEAD_LETTER_FILE", "/tmp/x"), ("EVENT_BUS", "sqs")])).unwrap_err();
        assert_eq!(err.to_string(), r#"EVENT_BUS must be "kinesis" or "kafka", got "sqs""#);
        let err = RelayConfig::from_vars(&vars(&[
            ("DEAD_LETTER_FILE", "/tmp/x"),
            ("EVENT_BUS", "kafka"),
            ("KAFKA_AUTH", "PLAIN"),
        ]))
        .unwrap_err();
        assert_eq!(err.to_string(), r#"KAFKA_AUTH must be NONE or IAM, got "PLAIN""#);
    }

    #[test]
    fn the_poller_reads_its_pace_and_names_a_bad_value() {
        let config = PollerConfig::from_vars(&vars(&[("DEAD_LETTER_FILE", "/tmp/x")])).unwrap();
        assert_eq!(config.outbox_table, "reservation-outbox");
        assert_eq!(config.settings.interval, std::time::Duration::from_secs(1));
        assert_eq!(config.settings.batch_limit, 500);
        let fast = PollerConfig::from_vars(&vars(&[
            ("DEAD_LETTER_FILE", "/tmp/x"),
            ("POLL_INTERVAL_MS", "100"),
            ("OUTBOX_TABLE", "ob"),
        ]))
        .unwrap();
        assert_eq!(fast.settings.interval, std::time::Duration::from_millis(100));
        assert_eq!(fast.outbox_table, "ob");
        let err =
            PollerConfig::from_vars(&vars(&[("DEAD_LETTER_FILE", "/tmp/x"), ("POLL_INTERVAL_MS", "0")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"POLL_INTERVAL_MS must be a whole number from 10 to 60000, got "0""#
        );
    }
}
