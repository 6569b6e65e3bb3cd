//! Records that can never be published go here, whole, so they can be found, fixed and re-driven.
//! In AWS that is an SQS queue; locally a JSON-lines file; in tests memory.

use serde::{Deserialize, Serialize};
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
pub struct SqsDeadLetters {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

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
    Sqs(SqsDeadLetters),
    File(JsonLinesDeadLetters),
}

impl DeadLetters for ConfiguredDeadLetters {
    async fn send(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        match self {
            Self::Sqs(sqs) => sqs.send(letter).await,
            Self::File(file) => file.send(letter).await,
        }
    }
}
