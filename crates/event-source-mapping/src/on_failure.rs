//! The on-failure destination: where a batch goes when retries or record age run out. It receives
//! what Lambda sends to an SQS/SNS destination: the batch's metadata, not its records.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

pub trait OnFailureDestination: Send + Sync {
    fn send(&self, invocation_record: &serde_json::Value) -> impl Future<Output = std::io::Result<()>> + Send;
}

pub struct JsonLinesOnFailure {
    path: PathBuf,
    lock: Mutex<()>,
}

impl JsonLinesOnFailure {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }
}

impl OnFailureDestination for JsonLinesOnFailure {
    async fn send(&self, invocation_record: &serde_json::Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(invocation_record)?;
        line.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(parent) = self.path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?
            .write_all(&line)
    }
}

#[derive(Default)]
pub struct MemoryOnFailure {
    records: Mutex<Vec<serde_json::Value>>,
}

impl MemoryOnFailure {
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl OnFailureDestination for MemoryOnFailure {
    async fn send(&self, invocation_record: &serde_json::Value) -> std::io::Result<()> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(invocation_record.clone());
        Ok(())
    }
}

impl<T: OnFailureDestination> OnFailureDestination for std::sync::Arc<T> {
    fn send(&self, invocation_record: &serde_json::Value) -> impl Future<Output = std::io::Result<()>> + Send {
        (**self).send(invocation_record)
    }
}
