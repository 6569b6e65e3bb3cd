//! Where a consumer puts records it can never apply, whole and with the reason, so they can be
//! found, fixed and re-driven: an SQS queue when deployed (`DEAD_LETTER_QUEUE_URL`), a JSON-lines
//! file locally (`DEAD_LETTER_FILE`), memory in tests.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Which function gave up on the record ("relay", "projector", ...).
    pub function: String,
    pub reason: String,
    pub event_source_arn: Option<String>,
    pub event_id: Option<String>,
    pub sequence_number: Option<String>,
    /// The record exactly as the function received it: re-driving means sending this back.
    pub record: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    pub dead_lettered_at: time::OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
#[error("could not store a dead letter in {destination}")]
pub struct DeadLetterError {
    pub destination: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

pub trait DeadLetters: Send + Sync {
    fn send(&self, letter: &DeadLetter) -> impl Future<Output = Result<(), DeadLetterError>> + Send;
}

/// Appends one JSON document per line. For the local stack.
pub struct JsonLinesDeadLetters {
    path: PathBuf,
    lock: Mutex<()>,
}

impl JsonLinesDeadLetters {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    pub fn read_all(&self) -> std::io::Result<Vec<DeadLetter>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

impl DeadLetters for JsonLinesDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| DeadLetterError {
            destination: self.path.display().to_string(),
            source,
        };
        let mut line = serde_json::to_vec(letter).map_err(|e| failed(e.into()))?;
        line.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed(e.into()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| failed(e.into()))?;
        file.write_all(&line).map_err(|e| failed(e.into()))
    }
}

/// Sends each dead letter as one SQS message (the JSON document as the body).
#[cfg(feature = "sqs")]
pub struct SqsDeadLetters {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

#[cfg(feature = "sqs")]
impl SqsDeadLetters {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[cfg(feature = "sqs")]
impl DeadLetters for SqsDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| DeadLetterError {
            destination: self.queue_url.clone(),
            source,
        };
        let body = serde_json::to_string(letter).map_err(|e| failed(e.into()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| failed(e.into()))?;
        Ok(())
    }
}

/// Keeps dead letters in memory, for tests.
#[derive(Default)]
pub struct MemoryDeadLetters {
    letters: Mutex<Vec<DeadLetter>>,
}

impl MemoryDeadLetters {
    pub fn letters(&self) -> Vec<DeadLetter> {
        self.letters.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl DeadLetters for MemoryDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        self.letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(letter.clone());
        Ok(())
    }
}

/// The destination chosen by configuration at start.
pub enum ConfiguredDeadLetters {
    #[cfg(feature = "sqs")]
    Sqs(SqsDeadLetters),
    File(JsonLinesDeadLetters),
}

impl DeadLetters for ConfiguredDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        match self {
            #[cfg(feature = "sqs")]
            Self::Sqs(sqs) => sqs.send(letter).await,
            Self::File(file) => file.send(letter).await,
        }
    }
}

/// Where dead letters go, from the function's environment: `DEAD_LETTER_QUEUE_URL` (an SQS queue,
/// deployed) wins over `DEAD_LETTER_FILE` (a JSON-lines file, local stack).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterTarget {
    Queue(String),
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
#[error(
    "set DEAD_LETTER_QUEUE_URL (an SQS queue) or DEAD_LETTER_FILE (a local file) for records that cannot be processed"
)]
pub struct NoDeadLetterTarget;

impl DeadLetterTarget {
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, NoDeadLetterTarget> {
        let non_empty = |name: &str| vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        match (non_empty("DEAD_LETTER_QUEUE_URL"), non_empty("DEAD_LETTER_FILE")) {
            (Some(url), _) => Ok(Self::Queue(url.to_owned())),
            (None, Some(path)) => Ok(Self::File(PathBuf::from(path))),
            (None, None) => Err(NoDeadLetterTarget),
        }
    }

    /// The destination itself; `sqs` builds the client, only for a queue.
    #[cfg(feature = "sqs")]
    pub fn open(&self, sqs: impl FnOnce() -> aws_sdk_sqs::Client) -> ConfiguredDeadLetters {
        match self {
            Self::Queue(url) => ConfiguredDeadLetters::Sqs(SqsDeadLetters::new(sqs(), url)),
            Self::File(path) => ConfiguredDeadLetters::File(JsonLinesDeadLetters::new(path)),
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
    fn a_target_is_required_and_the_queue_wins() {
        assert_eq!(DeadLetterTarget::from_vars(&vars(&[])), Err(NoDeadLetterTarget));
        assert_eq!(
            DeadLetterTarget::from_vars(&vars(&[("DEAD_LETTER_FILE", "  ")])),
            Err(NoDeadLetterTarget)
        );
        assert_eq!(
            DeadLetterTarget::from_vars(&vars(&[
                ("DEAD_LETTER_QUEUE_URL", "https://q"),
                ("DEAD_LETTER_FILE", "/tmp/x")
            ])),
            Ok(DeadLetterTarget::Queue("https://q".into()))
        );
        assert_eq!(
            DeadLetterTarget::from_vars(&vars(&[("DEAD_LETTER_FILE", "/tmp/x")])),
            Ok(DeadLetterTarget::File("/tmp/x".into()))
        );
    }

    #[tokio::test]
    async fn a_file_keeps_one_letter_per_line_and_reads_them_back() {
        let path = std::env::temp_dir().join(format!("dead-letters-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let file = JsonLinesDeadLetters::new(&path);
        let letter = DeadLetter {
            function: "projector".into(),
            reason: "not an envelope".into(),
            event_source_arn: Some("arn:aws:kinesis:us-east-1:000000000000:stream/s".into()),
            event_id: None,
            sequence_number: Some("49".into()),
            record: serde_json::json!({ "data": "bm90IGpzb24=" }),
            dead_lettered_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        file.send(&letter).await.unwrap();
        file.send(&letter).await.unwrap();
        assert_eq!(file.read_all().unwrap(), vec![letter.clone(), letter]);
        std::fs::remove_file(&path).unwrap();
    }
}
