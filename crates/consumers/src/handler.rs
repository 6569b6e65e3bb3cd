//! One Kinesis batch through a consumer.
//!
//! Records are taken in shard order. An event is applied through the consumer's port, which says
//! applied, duplicate (acknowledged) or gap.
//!
//! What can never be applied goes to the dead letters, whole and with the reason, and the shard
//! moves on: a record that is not a valid event, a write the store refuses as invalid, and a gap
//! (a version whose predecessor never came: waiting for it would hold the whole shard). A gap's
//! letter names the missing version; once it is published again (the recovery sweep), re-driving
//! the letter applies it (docs/adr/0003-consumer-exactly-once-in-order.md).
//!
//! What may succeed later (throttling, a transaction conflict, a timeout, a store error) is
//! retried: that reservation's later records in the batch are left alone while other
//! reservations go on, and the earliest record left unapplied is reported as the batch item
//! failure. Lambda re-delivers from it, with no limit but the records' age, and what was applied
//! after it comes back as duplicates.

use crate::Consumer;
use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use dead_letters::{DeadLetter, DeadLetters};
use domain::{ApplyOutcome, ReservationEvent};
use std::collections::HashSet;

pub struct ConsumerHandler<C, D> {
    consumer: C,
    dead_letters: D,
    metrics: telemetry::Emitter,
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
            metrics: telemetry::Emitter::Off,
        }
    }

    /// Emits each batch's metrics (EMF) here; off unless set.
    pub fn with_metrics(mut self, emitter: telemetry::Emitter) -> Self {
        self.metrics = emitter;
        self
    }

    pub fn consumer(&self) -> &C {
        &self.consumer
    }

    pub fn dead_letters(&self) -> &D {
        &self.dead_letters
    }

    pub async fn handle(&self, event: &KinesisEvent) -> (KinesisEventResponse, BatchStats) {
        let mut stats = BatchStats {
            records: event.records.len(),
            ..Default::default()
        };
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut first_unapplied: Option<&KinesisEventRecord> = None;
        for record in &event.records {
            let key = record.kinesis.partition_key.as_str();
            let outcome = if blocked.contains(key) {
                RecordOutcome::HeldBack
            } else {
                self.process(record).await
            };
            match outcome {
                RecordOutcome::Applied => stats.applied += 1,
                RecordOutcome::Duplicate => stats.duplicates += 1,
                RecordOutcome::DeadLettered => stats.dead_lettered += 1,
                RecordOutcome::Gap => stats.gaps += 1,
                RecordOutcome::StoreFailure => stats.store_failures += 1,
                RecordOutcome::Contended => stats.contended += 1,
                RecordOutcome::HeldBack => stats.held_back += 1,
                RecordOutcome::DeadLetterFailed => {}
            }
            match outcome {
                RecordOutcome::StoreFailure | RecordOutcome::Contended | RecordOutcome::HeldBack => {
                    blocked.insert(key);
                    first_unapplied.get_or_insert(record);
                }
                RecordOutcome::DeadLetterFailed => {
                    first_unapplied.get_or_insert(record);
                    break;
                }
                RecordOutcome::Applied
                | RecordOutcome::Duplicate
                | RecordOutcome::Gap
                | RecordOutcome::DeadLettered => {}
            }
        }
        let mut response = KinesisEventResponse::default();
        if let Some(record) = first_unapplied {
            let mut failure = KinesisBatchItemFailure::default();
            failure.item_identifier = Some(record.kinesis.sequence_number.clone());
            response.batch_item_failures.push(failure);
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
            retry_from = first_unapplied.map(|r| r.kinesis.sequence_number.as_str()),
            "batch done"
        );
        self.metrics.emit(&batch_metrics(
            self.consumer.name(),
            &stats,
            event,
            time::OffsetDateTime::now_utc(),
        ));
        (response, stats)
    }

    /// Decodes and applies one record.
    async fn process(&self, record: &KinesisEventRecord) -> RecordOutcome {
        let sequence_number = record.kinesis.sequence_number.as_str();
        let event = match decode(record) {
            Ok(event) => event,
            Err(reason) => return self.dead_letter(record, &reason).await,
        };
        // At INFO: the trace id that started at the API request ends here, on every event.
        let span = tracing::info_span!(
            "event",
            consumer = self.consumer.name(),
            trace_id = %event.trace_id,
            reservation_id = %event.reservation_id(),
            event_id = %event.event_id,
            version = %event.version(),
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
                    event.version()
                );
                match self.dead_letter(record, &reason).await {
                    RecordOutcome::DeadLettered => RecordOutcome::Gap,
                    other => other,
                }
            }
            Err(e) if e.kind == domain::ports::StoreErrorKind::Rejected => {
                let reason = format!("refused for good: {}", telemetry::error_chain(&e));
                self.dead_letter(record, &reason).await
            }
            Err(e) if e.kind == domain::ports::StoreErrorKind::Contended => {
                tracing::info!(error = %telemetry::error_chain(&e), sequence_number, "lost a race with another writer; will retry");
                RecordOutcome::Contended
            }
            Err(e) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), sequence_number, "store failed; will retry");
                RecordOutcome::StoreFailure
            }
        }
    }

    /// Stores the record, whole, with why it can never be applied as it is.
    async fn dead_letter(&self, record: &KinesisEventRecord, reason: &str) -> RecordOutcome {
        let letter = DeadLetter {
            function: self.consumer.name().to_owned(),
            reason: reason.to_owned(),
            event_source_arn: record.event_source_arn.clone(),
            event_id: record.event_id.clone(),
            sequence_number: Some(record.kinesis.sequence_number.clone()),
            record: serde_json::to_value(record).unwrap_or(serde_json::Value::Null),
            dead_lettered_at: time::OffsetDateTime::now_utc(),
        };
        match self.dead_letters.send(&letter).await {
            Ok(()) => {
                tracing::error!(consumer = self.consumer.name(), reason, sequence_number = %record.kinesis.sequence_number, partition_key = %record.kinesis.partition_key, "record dead-lettered");
                RecordOutcome::DeadLettered
            }
            Err(e) => {
                tracing::error!(consumer = self.consumer.name(), reason, error = %e, sequence_number = %record.kinesis.sequence_number, "record cannot be applied and its dead letter could not be stored; will retry from it");
                RecordOutcome::DeadLetterFailed
            }
        }
    }
}

/// A batch as EMF metrics: applied, duplicates skipped, gaps, store failures, transaction
/// conflicts, dead letters, and the consumer's lag (now − the oldest record's arrival on the
/// stream).
pub fn batch_metrics(
    consumer: &str,
    stats: &BatchStats,
    event: &KinesisEvent,
    now: time::OffsetDateTime,
) -> telemetry::MetricSet {
    let mut metrics = telemetry::MetricSet::new(consumer);
    metrics
        .count("EventsApplied", stats.applied as f64)
        .count("DuplicatesSkipped", stats.duplicates as f64)
        .count("Gaps", stats.gaps as f64)
        .count("StoreFailures", stats.store_failures as f64)
        .count("TransactionConflicts", stats.contended as f64)
        .count("DeadLettered", stats.dead_lettered as f64);
    let oldest = event
        .records
        .iter()
        .map(|r| r.kinesis.approximate_arrival_timestamp.timestamp_millis())
        .filter(|ms| *ms > 0)
        .min();
    if let Some(arrived) = oldest {
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        metrics.milliseconds("ConsumerLag", (now_ms - arrived).max(0) as f64);
    }
    metrics
}

/// The event in a record, or why it is not one. The partition key must be the reservation id:
/// a record keyed otherwise may sit on another shard than its siblings, with no order to rely on.
pub fn decode(record: &KinesisEventRecord) -> Result<ReservationEvent, String> {
    decode_data(&record.kinesis.partition_key, &record.kinesis.data.0)
}

/// [`decode`] for a record read some other way (the replay CLI reads Kinesis itself).
pub fn decode_data(partition_key: &str, data: &[u8]) -> Result<ReservationEvent, String> {
    let event = ReservationEvent::from_json(data).map_err(|e| e.to_string())?;
    if event.reservation_id().as_str() != partition_key {
        return Err(format!(
            "partition key {partition_key:?} is not the event's reservation id {}",
            event.reservation_id()
        ));
    }
    Ok(event)
}
