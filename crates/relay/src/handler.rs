//! One invocation of the relay: classify every record, dead-letter the poison ones, publish the
//! rest in order, and tell Lambda where to resume.

use crate::classify::{Classified, SkipReason, classify};
use crate::dead_letter::{DeadLetter, DeadLetters};
use crate::publish::{PublishPolicy, PublishReport, publish_in_order};
use crate::sink::{EventSink, SinkRecord};
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use tokio::time::Instant;

pub struct Relay<S, D> {
    sink: S,
    dead_letters: D,
    policy: PublishPolicy,
    metrics: telemetry::Emitter,
}

/// What one invocation did, for logs, metrics and tests.
#[derive(Debug, Default, Clone)]
pub struct RelayStats {
    pub records: usize,
    pub published: usize,
    pub skipped_ttl_removals: usize,
    pub skipped_not_inserts: usize,
    pub skipped_not_outbox: usize,
    pub dead_lettered: usize,
    pub publish: PublishReport,
    /// Epoch milliseconds of the oldest record's ApproximateCreationDateTime: the relay's lag.
    pub oldest_record_created_ms: Option<i64>,
}

impl RelayStats {
    /// This batch as EMF metrics: events relayed, lag, PutRecords failures and retries, dead letters.
    pub fn metrics(&self, now: time::OffsetDateTime) -> telemetry::MetricSet {
        let mut metrics = telemetry::MetricSet::new("relay");
        metrics
            .count("EventsRelayed", self.published as f64)
            .count("PutRecordsFailures", self.publish.failed_records as f64)
            .count("PutRecordsRetries", f64::from(self.publish.retries))
            .count("DeadLettered", self.dead_lettered as f64)
            .count(
                "RecordsSkipped",
                (self.skipped_ttl_removals + self.skipped_not_inserts + self.skipped_not_outbox) as f64,
            );
        if let Some(created) = self.oldest_record_created_ms {
            let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
            metrics.milliseconds("RelayLag", (now_ms - created).max(0) as f64);
        }
        metrics
    }
}

#[derive(Debug, Default)]
pub struct RelayOutcome {
    pub response: DynamoDbEventResponse,
    pub stats: RelayStats,
}

impl<S: EventSink, D: DeadLetters> Relay<S, D> {
    pub fn new(sink: S, dead_letters: D, policy: PublishPolicy) -> Self {
        Self {
            sink,
            dead_letters,
            policy,
            metrics: telemetry::Emitter::Off,
        }
    }

    /// Emits each batch's metrics (EMF) here; off unless set.
    pub fn with_metrics(mut self, emitter: telemetry::Emitter) -> Self {
        self.metrics = emitter;
        self
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn dead_letters(&self) -> &D {
        &self.dead_letters
    }

    /// Handles one batch. Never fails: what could not be published is reported as the batch item
    /// failure to re-deliver from (the earliest unfinished record; Lambda re-delivers it and
    /// everything after it in the shard).
    pub async fn handle(&self, event: &Event, deadline: Instant) -> RelayOutcome {
        let mut stats = RelayStats {
            records: event.records.len(),
            oldest_record_created_ms: event
                .records
                .iter()
                .map(|r| r.change.approximate_creation_date_time.timestamp_millis())
                .filter(|ms| *ms > 0)
                .min(),
            ..Default::default()
        };
        let mut publishable: Vec<(usize, SinkRecord)> = Vec::new();
        // Records from here on are not handled in this invocation (a dead letter could not be stored).
        let mut cutoff = event.records.len();

        for (index, record) in event.records.iter().enumerate() {
            match classify(record) {
                Classified::Publish {
                    envelope,
                    record: sink_record,
                } => {
                    tracing::debug!(event_id = %envelope.event_id, reservation_id = %envelope.aggregate_id, version = %envelope.version, trace_id = %envelope.trace_id, "publishing");
                    publishable.push((index, sink_record));
                }
                Classified::Skip(reason) => {
                    match reason {
                        SkipReason::TtlRemoval => stats.skipped_ttl_removals += 1,
                        SkipReason::NotAnInsert => stats.skipped_not_inserts += 1,
                        SkipReason::NotAnOutboxItem => stats.skipped_not_outbox += 1,
                    }
                    tracing::debug!(?reason, event_name = %record.event_name, sequence_number = ?record.change.sequence_number, "skipped");
                }
                Classified::Poison { reason } => {
                    let letter = dead_letter(record, &reason);
                    match self.dead_letters.send(&letter).await {
                        Ok(()) => {
                            stats.dead_lettered += 1;
                            tracing::error!(%reason, sequence_number = ?record.change.sequence_number, event_source_arn = ?record.event_source_arn, "record cannot be published; dead-lettered");
                        }
                        Err(e) => {
                            tracing::error!(%reason, error = %e, sequence_number = ?record.change.sequence_number, "record cannot be published and its dead letter could not be stored; will retry from it");
                            cutoff = index;
                            break;
                        }
                    }
                }
            }
        }
        publishable.retain(|(index, _)| *index < cutoff);

        let records: Vec<SinkRecord> = publishable.iter().map(|(_, r)| r.clone()).collect();
        let report = publish_in_order(&self.sink, &records, &self.policy, deadline).await;
        stats.published = report.published.iter().filter(|p| **p).count();
        let first_unpublished = report.first_unpublished().map(|k| publishable[k].0);
        let resume_at = first_unpublished
            .into_iter()
            .chain((cutoff < event.records.len()).then_some(cutoff))
            .min();
        if report.gave_up {
            tracing::warn!(
                unpublished = records.len() - stats.published,
                retries = report.retries,
                last_error = report.last_error.as_deref().unwrap_or(""),
                "giving the rest of the batch back to Lambda"
            );
        }
        stats.publish = report;

        let mut response = DynamoDbEventResponse::default();
        if let Some(index) = resume_at {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(item_identifier(&event.records[index]));
            response.batch_item_failures.push(failure);
        }
        tracing::info!(
            records = stats.records,
            published = stats.published,
            skipped = stats.skipped_ttl_removals + stats.skipped_not_inserts + stats.skipped_not_outbox,
            dead_lettered = stats.dead_lettered,
            calls = stats.publish.calls,
            retries = stats.publish.retries,
            resume_at = ?resume_at,
            "relay batch done"
        );
        self.metrics.emit(&stats.metrics(time::OffsetDateTime::now_utc()));
        RelayOutcome { response, stats }
    }
}

/// Lambda identifies DynamoDB stream records by sequence number.
fn item_identifier(record: &EventRecord) -> String {
    record
        .change
        .sequence_number
        .clone()
        .unwrap_or_else(|| record.event_id.clone())
}

fn dead_letter(record: &EventRecord, reason: &str) -> DeadLetter {
    DeadLetter {
        function: "relay".into(),
        reason: reason.to_owned(),
        event_source_arn: record.event_source_arn.clone(),
        event_id: Some(record.event_id.clone()),
        sequence_number: record.change.sequence_number.clone(),
        record: serde_json::to_value(record).unwrap_or(serde_json::Value::Null),
        dead_lettered_at: time::OffsetDateTime::now_utc(),
    }
}
