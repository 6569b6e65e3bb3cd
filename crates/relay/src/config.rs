//! The relay's typed configuration, read once at start.

pub use dead_letters::DeadLetterTarget;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    pub events_stream: String,
    pub dead_letters: DeadLetterTarget,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RelayConfigError {
    #[error(transparent)]
    NoDeadLetterTarget(#[from] dead_letters::NoDeadLetterTarget),
    #[error("{0} must not be empty")]
    Empty(&'static str),
}

impl RelayConfig {
    pub const DEFAULT_EVENTS_STREAM: &str = "reservation-events";

    pub fn from_env() -> Result<Self, RelayConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, RelayConfigError> {
        let events_stream = match vars.get("EVENTS_STREAM") {
            None => Self::DEFAULT_EVENTS_STREAM.to_owned(),
            Some(v) if v.trim().is_empty() => return Err(RelayConfigError::Empty("EVENTS_STREAM")),
            Some(v) => v.trim().to_owned(),
        };
        let dead_letters = DeadLetterTarget::from_vars(vars)?;
        Ok(Self {
            events_stream,
            dead_letters,
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
        assert_eq!(config.events_stream, "reservation-events");
    }
}
