//! A consumer function's configuration, read once at start from its environment.
//!
//! | variable | default | what |
//! |---|---|---|
//! | `EVENT_BUS` | `kinesis` | the events the function is invoked with: `kinesis` (a Kinesis event source mapping) or `kafka` (an Amazon MSK one) |
//! | `DEAD_LETTER_QUEUE_URL` | | the SQS queue for records that can never be applied |
//! | `DEAD_LETTER_FILE` | | a JSON-lines file instead, off AWS (the queue wins when both are set) |
//! | `METRICS_NAMESPACE` | `ReservationEventsConsumers` | the CloudWatch namespace of the batch metrics |

use crate::dead_letter::{DeadLetterTarget, NoDeadLetterTarget};
use std::collections::HashMap;

/// The namespace of the batch metrics when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_METRICS_NAMESPACE: &str = "ReservationEventsConsumers";

/// `EVENT_BUS`: which bus the events travel on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bus {
    /// A Kinesis stream (the default).
    #[default]
    Kinesis,
    /// A Kafka topic (Amazon MSK).
    Kafka,
}

impl Bus {
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        match vars.get("EVENT_BUS").map(String::as_str).unwrap_or("kinesis") {
            "kinesis" => Ok(Self::Kinesis),
            "kafka" => Ok(Self::Kafka),
            other => Err(ConfigError::Choice {
                var: "EVENT_BUS",
                allowed: r#""kinesis" or "kafka""#,
                value: other.to_owned(),
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `EVENT_BUS`.
    pub bus: Bus,
    /// `DEAD_LETTER_QUEUE_URL` or `DEAD_LETTER_FILE`.
    pub dead_letters: DeadLetterTarget,
    /// `METRICS_NAMESPACE`.
    pub metrics_namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} must be {allowed}, got {value:?}")]
    Choice {
        var: &'static str,
        allowed: &'static str,
        value: String,
    },
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error(transparent)]
    NoDeadLetterTarget(#[from] NoDeadLetterTarget),
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let metrics_namespace = match vars.get("METRICS_NAMESPACE") {
            None => DEFAULT_METRICS_NAMESPACE.to_owned(),
            Some(namespace) if namespace.trim().is_empty() => return Err(ConfigError::Empty("METRICS_NAMESPACE")),
            Some(namespace) => namespace.trim().to_owned(),
        };
        Ok(Self {
            bus: Bus::from_vars(vars)?,
            dead_letters: DeadLetterTarget::from_vars(vars)?,
            metrics_namespace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_and_what_is_refused() {
        let config = Config::from_vars(&vars(&[("DEAD_LETTER_QUEUE_URL", "https://q")])).unwrap();
        assert_eq!(config.bus, Bus::Kinesis);
        assert_eq!(config.dead_letters, DeadLetterTarget::Queue("https://q".into()));
        assert_eq!(config.metrics_namespace, DEFAULT_METRICS_NAMESPACE);

        let kafka = Config::from_vars(&vars(&[
            ("DEAD_LETTER_FILE", "/tmp/x"),
            ("EVENT_BUS", "kafka"),
            ("METRICS_NAMESPACE", "BookingLedger"),
        ]))
        .unwrap();
        assert_eq!(
            (kafka.bus, kafka.metrics_namespace.as_str()),
            (Bus::Kafka, "BookingLedger")
        );

        let err = |pairs: &[(&str, &str)]| Config::from_vars(&vars(pairs)).unwrap_err().to_string();
        assert!(err(&[]).starts_with("set DEAD_LETTER_QUEUE_URL"));
        assert_eq!(
            err(&[("DEAD_LETTER_FILE", "f"), ("EVENT_BUS", "Kafka")]),
            r#"EVENT_BUS must be "kinesis" or "kafka", got "Kafka""#
        );
        assert_eq!(
            err(&[("DEAD_LETTER_FILE", "f"), ("METRICS_NAMESPACE", " ")]),
            "METRICS_NAMESPACE must not be empty"
        );
    }
}
