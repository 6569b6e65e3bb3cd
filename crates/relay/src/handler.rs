//! One invocation of the relay: classify every record, dead-letter the poison ones, publish the
//! rest in order, and tell Lambda where to resume.

use crate::classify::{Classified, SkipReason, classify};
use crate::publish::{PublishPolicy, PublishReport, publish_in_order};
use crate::sink::{EventSink, SinkRecord};
use aws_lambda_events::event::dynamodb::EventRecord;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use dead_letters::{DeadLetter, DeadLetters};
use serde_json::value::RawValue;
use tokio::time::Instant;

pub struct Relay<S, D> {
    sink: S,
    dead_letters: D,
    policy: PublishPolicy,
    metrics: telemetry::Emitter,
    /// Publishes only the outbox events born in this Region; `None`: every event (the tools
    /// and tests that relay one table of their own).
    regions: Option<settings::Regions>,
}

/// What one invocation did, for logs, metrics and tests.
#[derive(Debug, Default, Clone)]
pub struct RelayStats {
    pub records: usize,
    pub published: usize,
    pub skipped_ttl_removals: usize,
    pub skipped_not_inserts: usize,
    pub skipped_not_outbox: usize,
    /// Outbox events another Region's relay publishes (a global table's replicated items).
    pub skipped_born_elsewhere: usize,
    pub dead_lettered: usize,
    pub publish: PublishReport,
    /// Epoch milliseconds of the oldest record's ApproximateCreationDateTime: the relay's lag.
    pub oldest_record_created_ms: Option<i64>,
}

impl RelayStats {
    fn count_skip(&mut self, reason: SkipReason) {
        match reason {
            SkipReason::TtlRemoval => self.skipped_ttl_removals += 1,
            SkipReason::NotAnInsert => self.skipped_not_inserts += 1,
            SkipReason::NotAnOutboxItem => self.skipped_not_outbox += 1,
            SkipReason::BornElsewhere => self.skipped_born_elsewhere += 1,
        }
    }

    fn skipped(&self) -> usize {
        self.skipped_ttl_removals + self.skipped_not_inserts + self.skipped_not_outbox + self.skipped_born_elsewhere
    }

    fn log(&self, resume_at: Option<usize>) {
        tracing::info!(
            records = self.records,
            published = self.published,
            skipped = self.skipped(),
            dead_lettered = self.dead_lettered,
            calls = self.publish.calls,
            retries = self.publish.retries,
            resume_at = ?resume_at,
            "relay batch done"
        );
    }

    /// This batch as EMF metrics: events relayed, lag, PutRecords failures and retries, dead
    /// letters, and whether the bus refused it.
    pub fn metrics(&self, now: time::OffsetDateTime) -> telemetry::MetricSet {
        let mut metrics = telemetry::metrics(crate::FUNCTION);
        metrics
            .count("EventsRelayed", self.published as f64)
            .count("PutRecordsFailures", self.publish.failed_records as f64)
            .count("PutRecordsRetries", f64::from(self.publish.retries))
            .count("DeadLettered", self.dead_lettered as f64)
            .count("RecordsSkipped", self.skipped() as f64)
            .count(PUBLISH_REFUSED, f64::from(u8::from(self.publish.refused)));
        if let Some(created) = self.oldest_record_created_ms {
            let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
            metrics.milliseconds("RelayLag", (now_ms - created).max(0) as f64);
        }
        metrics
    }
}

/// The metric that counts publishes the bus refused (a Kafka topic whose partition count is not
/// `KAFKA_PARTITIONS`), 1 per refused batch or poll, and per start that found the bus refused;
/// the template's alarms watch it.
pub const PUBLISH_REFUSED: &str = "PublishRefused";

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
            regions: None,
        }
    }

    /// Publishes only what this Region must: events born here, and, in the primary Region,
    /// events from before outbox items recorded their Region (docs/multi-region.md).
    pub fn publishing_for(mut self, regions: settings::Regions) -> Self {
        self.regions = Some(regions);
        self
    }

    fn publishes(&self, born_in: Option<&str>) -> bool {
        self.regions.as_ref().is_none_or(|regions| regions.publishes(born_in))
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

    /// Handles one batch, given as the JSON Lambda delivers. Fails only when the JSON is not
    /// `{"Records": [...]}` at all; otherwise what could not be published is reported as the
    /// batch item failure to re-deliver from (the earliest unfinished record; Lambda re-delivers
    /// it and everything after it in the shard), and a record that is not a stream record at all
    /// is dead-lettered like any other that can never be published.
    ///
    /// The event is split into its records first, and each is read on its own, so that one
    /// record of the wrong shape costs that record, never the batch.
    pub async fn handle(&self, event: &str, deadline: Instant) -> Result<RelayOutcome, serde_json::Error> {
        let raw = serde_json::from_str::<Batch<&RawValue>>(event)?.records;
        let mut records: Vec<Result<EventRecord, serde_json::Error>> =
            raw.iter().map(|record| serde_json::from_str(record.get())).collect();
        let mut stats = RelayStats {
            records: records.len(),
            oldest_record_created_ms: records.iter().flatten().filter_map(created_ms).min(),
            ..Default::default()
        };
        let sorted = self.sort_out(&raw, &mut records, &mut stats).await;

        let report = publish_in_order(&self.sink, &sorted.publishable, &self.policy, deadline).await;
        stats.published = report.published.iter().filter(|p| **p).count();
        let first_unpublished = report.first_unpublished().map(|k| sorted.positions[k]);
        let resume_at = first_unpublished
            .into_iter()
            .chain((sorted.cutoff < records.len()).then_some(sorted.cutoff))
            .min();
        if report.gave_up {
            tracing::warn!(
                unpublished = sorted.publishable.len() - stats.published,
                retries = report.retries,
                last_error = report.last_error.as_deref().unwrap_or(""),
                "giving the rest of the batch back to Lambda"
            );
        }
        stats.publish = report;

        let mut response = DynamoDbEventResponse::default();
        if let Some(index) = resume_at {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(item_identifier(records[index].as_ref().ok()));
            response.batch_item_failures.push(failure);
        }
        stats.log(resume_at);
        self.metrics.emit(&stats.metrics(time::OffsetDateTime::now_utc()));
        Ok(RelayOutcome { response, stats })
    }

    /// Classifies the batch's records in order: the publishable ones are kept with their place
    /// in the batch, skips are counted, and what can never be published is dead-lettered. A dead
    /// letter that cannot be stored stops the pass there: nothing from that record on is handled
    /// in this invocation.
    async fn sort_out(
        &self,
        raw: &[&RawValue],
        records: &mut [Result<EventRecord, serde_json::Error>],
        stats: &mut RelayStats,
    ) -> Sorted {
        let mut sorted = Sorted {
            positions: Vec::with_capacity(records.len()),
            publishable: Vec::with_capacity(records.len()),
            cutoff: records.len(),
        };
        for (index, record) in records.iter_mut().enumerate() {
            let classified = match record {
                Ok(record) => match classify(record) {
                    Classified::Publish { event, .. } if !self.publishes(event.born_in.as_deref()) => {
                        Classified::Skip(SkipReason::BornElsewhere)
                    }
                    classified => classified,
                },
                Err(e) => Classified::Poison {
                    reason: format!("not a DynamoDB stream record: {e}"),
                },
            };
            match classified {
                Classified::Publish {
                    record: sink_record,
                    event,
                } => {
                    tracing::debug!(event_id = %event.event_id, reservation_id = %event.reservation_id, version = %event.version, trace_id = %event.trace_id, "publishing");
                    sorted.positions.push(index);
                    sorted.publishable.push(sink_record);
                }
                Classified::Skip(reason) => {
                    stats.count_skip(reason);
                    if let Ok(record) = record {
                        tracing::debug!(?reason, event_name = %record.event_name, sequence_number = ?record.change.sequence_number, "skipped");
                    }
                }
                Classified::Poison { reason } => {
                    let letter = dead_letter(raw[index], record.as_ref().ok(), &reason);
                    match self.dead_letters.send(&letter).await {
                        Ok(()) => {
                            stats.dead_lettered += 1;
                            tracing::error!(%reason, sequence_number = ?letter.sequence_number, event_source_arn = ?letter.event_source_arn, "record cannot be published; dead-lettered");
                        }
                        Err(e) => {
                            tracing::error!(%reason, error = %e, sequence_number = ?letter.sequence_number, "record cannot be published and its dead letter could not be stored; will retry from it");
                            sorted.cutoff = index;
                            break;
                        }
                    }
                }
            }
        }
        sorted
    }
}

/// A batch's publishable records (in batch order), the place of each in the batch, and the
/// record from which nothing was handled (the batch's length when all were).
struct Sorted {
    positions: Vec<usize>,
    publishable: Vec<SinkRecord>,
    cutoff: usize,
}

/// A Lambda event of DynamoDB stream records.
#[derive(serde::Deserialize)]
struct Batch<T> {
    #[serde(rename = "Records")]
    records: Vec<T>,
}

/// Milliseconds since the epoch of the record's `ApproximateCreationDateTime`, when it is there.
fn created_ms(record: &EventRecord) -> Option<i64> {
    Some(record.change.approximate_creation_date_time.timestamp_millis()).filter(|ms| *ms > 0)
}

/// How Lambda identifies a DynamoDB stream record in a batch item failure: its sequence number,
/// and nothing else. A record without one (not a stream record at all) gets an empty identifier,
/// which Lambda reads as the whole batch failing: it is delivered again, whole, and nothing is
/// lost.
fn item_identifier(record: Option<&EventRecord>) -> String {
    record
        .and_then(|record| record.change.sequence_number.clone())
        .unwrap_or_default()
}

fn dead_letter(raw: &RawValue, record: Option<&EventRecord>, reason: &str) -> DeadLetter {
    let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    DeadLetter {
        function: crate::FUNCTION.into(),
        reason: reason.to_owned(),
        event_source_arn: record.and_then(|r| r.event_source_arn.as_deref().and_then(text)),
        event_id: record.and_then(|r| text(&r.event_id)),
        sequence_number: record.and_then(|r| r.change.sequence_number.as_deref().and_then(text)),
        // The record exactly as Lambda delivered it, for the re-drive.
        record: serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null),
        dead_lettered_at: time::OffsetDateTime::now_utc(),
    }
}
