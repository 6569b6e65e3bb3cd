//! One batch through a consumer: a batch of Lambda's Kinesis event source mapping, or of its
//! Amazon MSK one (the same events: keyed by reservation id, the envelope as the data or value).
//!
//! Records are taken in shard order (on Kafka: each topic-partition's in offset order). Each
//! event is applied through [`Consumer::apply`], which says applied, duplicate (acknowledged) or
//! gap.
//!
//! What can never be applied goes to the dead letters, whole and with the reason, and the shard
//! moves on: a record that is not a valid event, a write the store refuses for good, and a gap (a
//! version whose predecessor never came: waiting for it would hold the whole shard). A gap's
//! letter names the missing version; once that version is published again, re-driving the letter
//! (handing its record back to the handler) applies it.
//!
//! What may succeed later (throttling, a transaction conflict, a timeout, a store error) is
//! retried: that reservation's later records in the batch are left alone while other
//! reservations go on, and the earliest record left unapplied is reported as the batch item
//! failure. Lambda re-delivers from it, with no limit but the records' age, and what was applied
//! after it comes back as duplicates.

use crate::config::DEFAULT_METRICS_NAMESPACE;
use crate::consumer::{Consumer, ErrorKind, error_chain};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::event::{DecodeError, ReservationEvent, decode};
use crate::metrics::{Emitter, MetricSet};
use crate::order::ApplyOutcome;
use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::borrow::Cow;
use std::collections::HashSet;

/// Runs a [`Consumer`] over Lambda's batches: [`ConsumerHandler::handle`] for a Kinesis event
/// source mapping, [`ConsumerHandler::handle_kafka`] for an Amazon MSK one.
pub struct ConsumerHandler<C, D> {
    consumer: C,
    dead_letters: D,
    metrics: Emitter,
    namespace: String,
}

/// What one batch did, for logs, metrics, the replay CLI and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchStats {
    pub records: usize,
    pub applied: usize,
    pub duplicates: usize,
    /// Gaps dead-lettered (each held back with its letter until re-driven).
    pub gaps: usize,
    pub store_failures: usize,
    /// Writes that lost a race with another writer (a transaction conflict): retried like store
    /// failures, counted apart so that contention is not read as load.
    pub contended: usize,
    /// Later records of a reservation that already had a gap or failure in this batch.
    pub held_back: usize,
    pub dead_lettered: usize,
}

impl BatchStats {
    pub fn add(&mut self, other: &BatchStats) {
        self.records += other.records;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.gaps += other.gaps;
        self.store_failures += other.store_failures;
        self.contended += other.contended;
        self.held_back += other.held_back;
        self.dead_lettered += other.dead_lettered;
    }
}

/// The fate of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordOutcome {
    Applied,
    Duplicate,
    /// A gap, dead-lettered with the version it waits for.
    Gap,
    /// Worth retrying (throttling, a timeout, a store error): handed back to the mapping.
    StoreFailure,
    /// Lost a race with another writer of the same items: handed back to the mapping.
    Contended,
    HeldBack,
    DeadLettered,
    /// Malformed, and its dead letter could not be stored: nothing after it is handled.
    DeadLetterFailed,
}

impl<C: Consumer, D: DeadLetters> ConsumerHandler<C, D> {
    pub fn new(consumer: C, dead_letters: D) -> Self {
        Self {
            consumer,
            dead_letters,
            metrics: Emitter::Off,
            namespace: DEFAULT_METRICS_NAMESPACE.to_owned(),
        }
    }

    /// Emits each batch's metrics (EMF) here; off unless set.
    pub fn with_metrics(mut self, emitter: Emitter) -> Self {
        self.metrics = emitter;
        self
    }

    /// The CloudWatch namespace of the batch metrics ([`DEFAULT_METRICS_NAMESPACE`] unless set).
    pub fn with_metrics_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn consumer(&self) -> &C {
        &self.consumer
    }

    pub fn dead_letters(&self) -> &D {
        &self.dead_letters
    }

    /// One Kinesis batch: the earliest record left unapplied is the batch item failure Lambda
    /// re-delivers from.
    pub async fn handle(&self, event: &KinesisEvent) -> (KinesisEventResponse, BatchStats) {
        let records: Vec<Delivered> = event.records.iter().map(Delivered::Kinesis).collect();
        let (again, stats) = self.apply_in_order(&records).await;
        let mut response = KinesisEventResponse::default();
        if let Some(index) = again.iter().position(|again| *again) {
            let mut failure = KinesisBatchItemFailure::default();
            failure.item_identifier = Some(records[index].position());
            response.batch_item_failures.push(failure);
        }
        (response, stats)
    }

    /// One batch of Lambda's Kafka event source mapping: each topic-partition's records in offset
    /// order; for every partition with a record left unapplied, that earliest record is the
    /// batch item failure (Lambda resumes the partition from its offset), the other partitions
    /// move on.
    pub async fn handle_kafka(&self, event: &KafkaEvent) -> (KafkaEventResponse, BatchStats) {
        let mut partitions: Vec<(&String, &Vec<KafkaRecord>)> = event.records.iter().collect();
        partitions.sort_by_key(|(partition, _)| *partition);
        let source = event.event_source_arn.as_deref();
        let records: Vec<Delivered> = partitions
            .into_iter()
            .flat_map(|(partition, records)| {
                let mut records: Vec<&KafkaRecord> = records.iter().collect();
                records.sort_by_key(|record| record.offset);
                records.into_iter().map(move |record| Delivered::Kafka {
                    partition,
                    record,
                    source,
                })
            })
            .collect();
        let (again, stats) = self.apply_in_order(&records).await;
        let mut response = KafkaEventResponse::default();
        for (record, _) in records.iter().zip(&again).filter(|(_, again)| **again) {
            if let Delivered::Kafka { partition, record, .. } = record
                && !response
                    .batch_item_failures
                    .iter()
                    .any(|f| &f.item_identifier.partition == *partition)
            {
                response.batch_item_failures.push(KafkaBatchItemFailure {
                    item_identifier: KafkaItemIdentifier {
                        partition: (*partition).clone(),
                        offset: record.offset,
                    },
                });
            }
        }
        (response, stats)
    }

    /// Applies `records` in order, a reservation's later records held back once one of its
    /// records is left for a retry. Returns, per record, whether it must be delivered again, and
    /// what the batch did (also logged and emitted as metrics).
    async fn apply_in_order(&self, records: &[Delivered<'_>]) -> (Vec<bool>, BatchStats) {
        let mut stats = BatchStats {
            records: records.len(),
            ..Default::default()
        };
        let mut again = vec![false; records.len()];
        let mut blocked: HashSet<String> = HashSet::new();
        for (index, record) in records.iter().enumerate() {
            let key = record.key();
            let outcome = if blocked.contains(key.as_ref()) {
                RecordOutcome::HeldBack
            } else {
                self.process(record).await
            };
            stats.count(outcome);
            match outcome {
                RecordOutcome::StoreFailure | RecordOutcome::Contended | RecordOutcome::HeldBack => {
                    blocked.insert(key.into_owned());
                    again[index] = true;
                }
                RecordOutcome::DeadLetterFailed => {
                    // Nothing from here on is handled in this invocation.
                    again[index..].fill(true);
                    break;
                }
                RecordOutcome::Applied
                | RecordOutcome::Duplicate
                | RecordOutcome::Gap
                | RecordOutcome::DeadLettered => {}
            }
        }
        tracing::info!(
            consumer = self.consumer.name(),
            records = stats.records,
            applied = stats.applied,
            duplicates = stats.duplicates,
            gaps = stats.gaps,
            store_failures = stats.store_failures,
            contended = stats.contended,
            held_back = stats.held_back,
            dead_lettered = stats.dead_lettered,
            retry_from = again.iter().position(|a| *a).map(|i| records[i].position()),
            "batch done"
        );
        let oldest_arrival_ms = records.iter().map(Delivered::arrival_ms).filter(|ms| *ms > 0).min();
        self.metrics.emit(&batch_metrics(
            &self.namespace,
            self.consumer.name(),
            &stats,
            oldest_arrival_ms,
            time::OffsetDateTime::now_utc(),
        ));
        (again, stats)
    }

    /// Decodes and applies one record.
    async fn process(&self, record: &Delivered<'_>) -> RecordOutcome {
        let event = match record.decode() {
            Ok(event) => event,
            Err(reason) => return self.dead_letter(record, &reason.to_string()).await,
        };
        // At INFO: the trace id that started at the API request ends here, on every event.
        let span = tracing::info_span!(
            "event",
            consumer = self.consumer.name(),
            trace_id = %event.trace_id,
            reservation_id = %event.reservation_id(),
            event_id = %event.event_id,
            version = %event.version,
        );
        let _entered = span.enter();
        match self.consumer.apply(&event).await {
            Ok(ApplyOutcome::Applied) => {
                tracing::info!("applied");
                RecordOutcome::Applied
            }
            Ok(ApplyOutcome::Duplicate) => {
                tracing::debug!("duplicate; acknowledged");
                RecordOutcome::Duplicate
            }
            Ok(ApplyOutcome::Gap { expected }) => {
                let reason = format!(
                    "gap: version {expected} of reservation {} never arrived before version {}; publish it again \
                     (the recovery sweep), then re-drive this letter",
                    event.reservation_id(),
                    event.version
                );
                match self.dead_letter(record, &reason).await {
                    RecordOutcome::DeadLettered => RecordOutcome::Gap,
                    other => other,
                }
            }
            Err(e) if e.kind == ErrorKind::Rejected => {
                let reason = format!("refused for good: {}", error_chain(&e));
                self.dead_letter(record, &reason).await
            }
            Err(e) if e.kind == ErrorKind::Contended => {
                tracing::info!(error = %error_chain(&e), position = %record.position(), "lost a race with another writer; will retry");
                RecordOutcome::Contended
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), position = %record.position(), "store failed; will retry");
                RecordOutcome::StoreFailure
            }
        }
    }

    /// Stores the record, whole, with why it can never be applied as it is.
    async fn dead_letter(&self, record: &Delivered<'_>, reason: &str) -> RecordOutcome {
        let letter = DeadLetter {
            function: self.consumer.name().to_owned(),
            reason: reason.to_owned(),
            event_source_arn: record.event_source_arn(),
            event_id: record.event_id(),
            sequence_number: Some(record.position()),
            record: record.as_json(),
            dead_lettered_at: time::OffsetDateTime::now_utc(),
        };
        match self.dead_letters.send(&letter).await {
            Ok(()) => {
                tracing::error!(consumer = self.consumer.name(), reason, position = %record.position(), key = %record.key(), "record dead-lettered");
                RecordOutcome::DeadLettered
            }
            Err(e) => {
                tracing::error!(consumer = self.consumer.name(), reason, error = %error_chain(&e), position = %record.position(), "record cannot be applied and its dead letter could not be stored; will retry from it");
                RecordOutcome::DeadLetterFailed
            }
        }
    }
}

impl BatchStats {
    fn count(&mut self, outcome: RecordOutcome) {
        match outcome {
            RecordOutcome::Applied => self.applied += 1,
            RecordOutcome::Duplicate => self.duplicates += 1,
            RecordOutcome::DeadLettered => self.dead_lettered += 1,
            RecordOutcome::Gap => self.gaps += 1,
            RecordOutcome::StoreFailure => self.store_failures += 1,
            RecordOutcome::Contended => self.contended += 1,
            RecordOutcome::HeldBack => self.held_back += 1,
            RecordOutcome::DeadLetterFailed => {}
        }
    }
}

/// A delivered record of either bus, as the handler reads it.
#[derive(Clone, Copy)]
enum Delivered<'a> {
    Kinesis(&'a KinesisEventRecord),
    Kafka {
        /// The topic-partition, as the event's `records` map names it (`topic-0`).
        partition: &'a String,
        record: &'a KafkaRecord,
        source: Option<&'a str>,
    },
}

impl Delivered<'_> {
    /// The record's key: the reservation it belongs to, if the producer keyed it as ours does.
    fn key(&self) -> Cow<'_, str> {
        match self {
            Self::Kinesis(record) => Cow::Borrowed(&record.kinesis.partition_key),
            Self::Kafka { record, .. } => Cow::Owned(
                record
                    .key
                    .as_deref()
                    .and_then(|key| BASE64.decode(key).ok())
                    .map(|key| String::from_utf8_lossy(&key).into_owned())
                    .unwrap_or_default(),
            ),
        }
    }

    fn decode(&self) -> Result<ReservationEvent, RecordError> {
        match self {
            Self::Kinesis(record) => Ok(decode(&record.kinesis.partition_key, &record.kinesis.data.0)?),
            Self::Kafka { record, .. } => {
                let value = record.value.as_deref().ok_or(RecordError::NoValue)?;
                let data = BASE64.decode(value).map_err(RecordError::ValueNotBase64)?;
                if record.key.is_none() {
                    return Err(RecordError::NoKey);
                }
                Ok(decode(&self.key(), &data)?)
            }
        }
    }

    /// Where the record is: its sequence number, or `topic-partition@offset`.
    fn position(&self) -> String {
        match self {
            Self::Kinesis(record) => record.kinesis.sequence_number.clone(),
            Self::Kafka { partition, record, .. } => format!("{partition}@{}", record.offset),
        }
    }

    fn arrival_ms(&self) -> i64 {
        match self {
            Self::Kinesis(record) => record.kinesis.approximate_arrival_timestamp.timestamp_millis(),
            Self::Kafka { record, .. } => record.timestamp.timestamp_millis(),
        }
    }

    fn event_source_arn(&self) -> Option<String> {
        match self {
            Self::Kinesis(record) => record.event_source_arn.clone(),
            Self::Kafka { source, .. } => source.map(str::to_owned),
        }
    }

    fn event_id(&self) -> Option<String> {
        match self {
            Self::Kinesis(record) => record.event_id.clone(),
            Self::Kafka { .. } => None,
        }
    }

    /// The record exactly as Lambda delivered it, for its dead letter and the re-drive.
    fn as_json(&self) -> serde_json::Value {
        match self {
            Self::Kinesis(record) => serde_json::to_value(record),
            Self::Kafka { record, .. } => serde_json::to_value(record),
        }
        .unwrap_or(serde_json::Value::Null)
    }
}

/// Lambda's answer to a Kafka batch with ReportBatchItemFailures: per topic-partition, the
/// offset to resume from (aws_lambda_events has no type for it yet).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaEventResponse {
    pub batch_item_failures: Vec<KafkaBatchItemFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaBatchItemFailure {
    pub item_identifier: KafkaItemIdentifier,
}

/// A Kafka record in a batch item failure: its topic-partition (the key of the event's `records`
/// map) and its offset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KafkaItemIdentifier {
    pub partition: String,
    pub offset: i64,
}

/// A batch as EMF metrics: applied, duplicates skipped, gaps, store failures, transaction
/// conflicts, dead letters, and the consumer's lag (now − the oldest record's arrival on the
/// bus).
pub fn batch_metrics(
    namespace: &str,
    consumer: &str,
    stats: &BatchStats,
    oldest_arrival_ms: Option<i64>,
    now: time::OffsetDateTime,
) -> MetricSet {
    let mut metrics = MetricSet::new(namespace, consumer);
    metrics
        .count("EventsApplied", stats.applied as f64)
        .count("DuplicatesSkipped", stats.duplicates as f64)
        .count("Gaps", stats.gaps as f64)
        .count("StoreFailures", stats.store_failures as f64)
        .count("TransactionConflicts", stats.contended as f64)
        .count("DeadLettered", stats.dead_lettered as f64);
    if let Some(arrived) = oldest_arrival_ms {
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        metrics.milliseconds("ConsumerLag", (now_ms - arrived).max(0) as f64);
    }
    metrics
}

/// Why a delivered record holds no event.
#[derive(Debug, thiserror::Error)]
enum RecordError {
    #[error("the Kafka record has no value")]
    NoValue,
    #[error("the Kafka record's value is not base64: {0}")]
    ValueNotBase64(#[source] base64::DecodeError),
    #[error("the Kafka record has no key; ours are keyed by reservation id")]
    NoKey,
    #[error(transparent)]
    Event(#[from] DecodeError),
}
