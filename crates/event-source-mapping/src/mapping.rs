//! The polling loop and Lambda's batch semantics.

use crate::filter::FilterCriteria;
use crate::function::{Function, FunctionError};
use crate::on_failure::OnFailureDestination;
use crate::source::{Position, ShardInfo, SourceError, SourceKind, SourceRecord, StreamSource};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
}

/// The mapping's settings, named as in `AWS::Lambda::EventSourceMapping`.
#[derive(Debug, Clone)]
pub struct MappingConfig {
    /// Shown in on-failure records (`functionArn`).
    pub function_name: String,
    pub batch_size: usize,
    pub maximum_batching_window: Duration,
    pub starting_position: StartingPosition,
    /// `None` = retry until success (`-1` in the template).
    pub maximum_retry_attempts: Option<u32>,
    /// `None` = no limit (`-1` in the template).
    pub maximum_record_age: Option<Duration>,
    pub bisect_batch_on_function_error: bool,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
    pub report_batch_item_failures: bool,
    pub filter: FilterCriteria,
    pub function_timeout: Duration,
    /// Pause between retries of a failing batch.
    pub retry_backoff: Duration,
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            function_name: "function".into(),
            batch_size: 100,
            maximum_batching_window: Duration::ZERO,
            starting_position: StartingPosition::TrimHorizon,
            maximum_retry_attempts: None,
            maximum_record_age: None,
            bisect_batch_on_function_error: false,
            report_batch_item_failures: true,
            filter: FilterCriteria::default(),
            function_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(50),
        }
    }
}

/// What a drain or poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DrainReport {
    pub records_read: usize,
    pub records_filtered_out: usize,
    pub invocations: usize,
    pub function_errors: usize,
    pub partial_failures: usize,
    pub batches_to_on_failure: usize,
    pub records_to_on_failure: usize,
    pub shards_finished: usize,
    pub read_errors: usize,
}

impl DrainReport {
    fn add(&mut self, other: &DrainReport) {
        self.records_read += other.records_read;
        self.records_filtered_out += other.records_filtered_out;
        self.invocations += other.invocations;
        self.function_errors += other.function_errors;
        self.partial_failures += other.partial_failures;
        self.batches_to_on_failure += other.batches_to_on_failure;
        self.records_to_on_failure += other.records_to_on_failure;
        self.shards_finished += other.shards_finished;
        self.read_errors += other.read_errors;
    }
}

#[derive(Debug)]
struct ShardState {
    info: ShardInfo,
    iterator: Option<String>,
    /// Sequence number of the last record handled (processed, filtered out or sent to on-failure).
    checkpoint: Option<String>,
    finished: bool,
}

pub struct EventSourceMapping<S, F, D> {
    source: S,
    function: F,
    on_failure: Option<D>,
    config: MappingConfig,
    shards: Vec<ShardState>,
}

struct Ctx<'a, S, F, D> {
    source: &'a S,
    function: &'a F,
    on_failure: Option<&'a D>,
    config: &'a MappingConfig,
}

impl<S, F, D> EventSourceMapping<S, F, D>
where
    S: StreamSource,
    F: Function,
    D: OnFailureDestination,
{
    pub fn new(source: S, function: F, on_failure: Option<D>, config: MappingConfig) -> Self {
        Self {
            source,
            function,
            on_failure,
            config,
            shards: Vec::new(),
        }
    }

    pub fn function(&self) -> &F {
        &self.function
    }

    /// Where given-up batches go, if anywhere.
    pub fn on_failure(&self) -> Option<&D> {
        self.on_failure.as_ref()
    }

    /// Processes everything that can be read now, shard lineage included, and returns when a
    /// whole pass read nothing.
    pub async fn drain(&mut self) -> Result<DrainReport, SourceError> {
        let mut total = DrainReport::default();
        loop {
            let pass = self.poll_once().await?;
            total.add(&pass);
            if pass.records_read == 0 && pass.shards_finished == 0 {
                return Ok(total);
            }
        }
    }

    /// Polls until `shutdown` completes, pausing `idle_wait` after a pass that read nothing.
    pub async fn run(mut self, idle_wait: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let pass = tokio::select! {
                pass = self.poll_once() => pass,
                () = &mut shutdown => return,
            };
            let idle = match pass {
                Ok(report) => report.records_read == 0 && report.shards_finished == 0,
                Err(e) => {
                    tracing::warn!(error = %telemetry::error_chain(&e), "listing shards failed; retrying");
                    true
                }
            };
            if idle {
                tokio::select! {
                    () = tokio::time::sleep(idle_wait) => {}
                    () = &mut shutdown => return,
                }
            }
        }
    }

    async fn refresh_shards(&mut self) -> Result<(), SourceError> {
        for info in self.source.list_shards().await? {
            if !self.shards.iter().any(|s| s.info.shard_id == info.shard_id) {
                tracing::debug!(shard_id = %info.shard_id, parents = ?info.parent_shard_ids, "new shard");
                self.shards.push(ShardState {
                    info,
                    iterator: None,
                    checkpoint: None,
                    finished: false,
                });
            }
        }
        Ok(())
    }

    /// One pass: every shard whose parents are done reads one batch (concurrently, like Lambda's
    /// one-invocation-per-shard) and hands it to the function.
    pub async fn poll_once(&mut self) -> Result<DrainReport, SourceError> {
        self.refresh_shards().await?;
        let finished: HashSet<String> = self
            .shards
            .iter()
            .filter(|s| s.finished)
            .map(|s| s.info.shard_id.clone())
            .collect();
        let known: HashSet<String> = self.shards.iter().map(|s| s.info.shard_id.clone()).collect();
        let ctx = Ctx {
            source: &self.source,
            function: &self.function,
            on_failure: self.on_failure.as_ref(),
            config: &self.config,
        };
        let ready = self
            .shards
            .iter_mut()
            .filter(|s| !s.finished && s.info.parents_done(|p| finished.contains(p), |p| known.contains(p)));
        let passes = futures::future::join_all(ready.map(|shard| pump_shard(&ctx, shard))).await;
        let mut report = DrainReport::default();
        for pass in passes {
            report.add(&pass);
        }
        Ok(report)
    }
}

async fn pump_shard<S, F, D>(ctx: &Ctx<'_, S, F, D>, shard: &mut ShardState) -> DrainReport
where
    S: StreamSource,
    F: Function,
    D: OnFailureDestination,
{
    let mut report = DrainReport::default();
    let config = ctx.config;
    let mut batch: Vec<SourceRecord> = Vec::new();
    let started = Instant::now();
    loop {
        let iterator = match &shard.iterator {
            Some(iterator) => iterator.clone(),
            None => {
                let position = match (&shard.checkpoint, config.starting_position) {
                    (Some(seq), _) => Position::AfterSequenceNumber(seq.clone()),
                    (None, StartingPosition::TrimHorizon) => Position::TrimHorizon,
                    (None, StartingPosition::Latest) => Position::Latest,
                };
                match ctx.source.shard_iterator(&shard.info.shard_id, &position).await {
                    Ok(iterator) => iterator,
                    Err(e) => {
                        report.read_errors += 1;
                        tracing::warn!(shard_id = %shard.info.shard_id, error = %telemetry::error_chain(&e), "cannot open shard");
                        return report;
                    }
                }
            }
        };
        let read = match ctx
            .source
            .read(&shard.info.shard_id, &iterator, config.batch_size - batch.len())
            .await
        {
            Ok(read) => read,
            Err(e) => {
                report.read_errors += 1;
                tracing::warn!(shard_id = %shard.info.shard_id, error = %telemetry::error_chain(&e), "read failed; re-opening from the checkpoint");
                if e.iterator_invalid || batch.is_empty() {
                    shard.iterator = None;
                }
                break;
            }
        };
        let got_records = !read.records.is_empty();
        report.records_read += read.records.len();
        batch.extend(read.records);
        shard.iterator = read.next_iterator;
        if shard.iterator.is_none() {
            // A closed shard read to its end: its children may start once this batch is handled.
            shard.finished = true;
            report.shards_finished += 1;
            break;
        }
        if batch.len() >= config.batch_size || started.elapsed() >= config.maximum_batching_window {
            break;
        }
        if !got_records {
            let left = config.maximum_batching_window.saturating_sub(started.elapsed());
            tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        }
    }
    if batch.is_empty() {
        return report;
    }
    let last_sequence = batch.last().map(|r| r.sequence_number.clone());
    let before = batch.len();
    batch.retain(|r| config.filter.matches(&r.filter_view));
    report.records_filtered_out += before - batch.len();
    if !batch.is_empty() {
        process(ctx, &shard.info.shard_id, batch, 0, &mut report).await;
    }
    shard.checkpoint = last_sequence;
    report
}

/// Invokes the function with `batch` until it succeeds or the batch is given up on; never
/// returns before that (a failing shard blocks, as in Lambda).
fn process<'a, S, F, D>(
    ctx: &'a Ctx<'a, S, F, D>,
    shard_id: &'a str,
    mut batch: Vec<SourceRecord>,
    mut attempts: u32,
    report: &'a mut DrainReport,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>
where
    S: StreamSource,
    F: Function,
    D: OnFailureDestination,
{
    Box::pin(async move {
        let config = ctx.config;
        loop {
            if let Some(max_age) = config.maximum_record_age {
                let oldest_allowed = OffsetDateTime::now_utc() - max_age;
                let expired = batch
                    .iter()
                    .take_while(|r| r.approximate_arrival < oldest_allowed)
                    .count();
                if expired > 0 {
                    let old: Vec<_> = batch.drain(..expired).collect();
                    send_to_on_failure(ctx, shard_id, &old, attempts, "RecordAgeExceeded", None, report).await;
                    if batch.is_empty() {
                        return;
                    }
                }
            }

            report.invocations += 1;
            let event = ctx
                .source
                .event(shard_id, batch.iter().map(|r| r.lambda_record.clone()).collect());
            let deadline = Instant::now() + config.function_timeout;
            let result = match tokio::time::timeout(config.function_timeout, ctx.function.invoke(event, deadline)).await
            {
                Ok(result) => result,
                Err(_) => Err(FunctionError::new(
                    "Sandbox.Timedout",
                    format!(
                        "Task timed out after {:.2} seconds",
                        config.function_timeout.as_secs_f64()
                    ),
                )),
            };
            attempts += 1;
            let function_error = match result {
                Ok(response) => {
                    let resume = if config.report_batch_item_failures {
                        resume_index(&response, shard_id, &batch)
                    } else {
                        None
                    };
                    match resume {
                        None => return,
                        Some(index) => {
                            report.partial_failures += 1;
                            batch.drain(..index);
                            None
                        }
                    }
                }
                Err(e) => {
                    report.function_errors += 1;
                    tracing::warn!(shard_id, error = %e, records = batch.len(), "function error");
                    if config.bisect_batch_on_function_error && batch.len() > 1 {
                        // Splitting does not count towards the retry quota.
                        let second = batch.split_off(batch.len() / 2);
                        process(ctx, shard_id, batch, attempts - 1, report).await;
                        process(ctx, shard_id, second, attempts - 1, report).await;
                        return;
                    }
                    Some(e)
                }
            };
            if config.maximum_retry_attempts.is_some_and(|max| attempts > max) {
                send_to_on_failure(
                    ctx,
                    shard_id,
                    &batch,
                    attempts,
                    "RetryAttemptsExhausted",
                    function_error.as_ref(),
                    report,
                )
                .await;
                return;
            }
            tokio::time::sleep(config.retry_backoff).await;
        }
    })
}

/// Where a batch resumes after a response with `batchItemFailures`: the lowest reported record.
/// An identifier is a sequence number (streams), or `{"partition": "<topic>-<n>", "offset": n}`
/// (Kafka; this shard's partition). One that is empty or not in the batch fails the whole batch,
/// as in Lambda.
fn resume_index(response: &Value, shard_id: &str, batch: &[SourceRecord]) -> Option<usize> {
    let failures = response.get("batchItemFailures").and_then(Value::as_array)?;
    let mut lowest: Option<usize> = None;
    for failure in failures {
        let identifier = failure.get("itemIdentifier").unwrap_or(&Value::Null);
        let id = match identifier {
            Value::String(sequence_number) => sequence_number.clone(),
            Value::Object(kafka) if kafka.get("partition").and_then(Value::as_str) == Some(shard_id) => kafka
                .get("offset")
                .and_then(Value::as_i64)
                .map(|o| o.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let index = batch
            .iter()
            .position(|r| !id.is_empty() && r.sequence_number == id)
            .unwrap_or(0);
        lowest = Some(lowest.map_or(index, |l| l.min(index)));
    }
    lowest
}

async fn send_to_on_failure<S, F, D>(
    ctx: &Ctx<'_, S, F, D>,
    shard_id: &str,
    records: &[SourceRecord],
    attempts: u32,
    condition: &str,
    error: Option<&FunctionError>,
    report: &mut DrainReport,
) where
    S: StreamSource,
    D: OnFailureDestination,
{
    report.batches_to_on_failure += 1;
    report.records_to_on_failure += records.len();
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return;
    };
    let rfc3339 = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let batch_info = match ctx.source.kind() {
        // Lambda's Kafka record names each topic-partition's first and last offsets.
        SourceKind::Kafka => json!({
            "batchSize": records.len(),
            "eventSourceArn": ctx.source.event_source_arn(),
            "recordsInfo": {
                shard_id: {
                    "firstRecordOffset": first.sequence_number,
                    "lastRecordOffset": last.sequence_number,
                    "firstRecordTimestamp": rfc3339(first.approximate_arrival),
                    "lastRecordTimestamp": rfc3339(last.approximate_arrival),
                }
            },
        }),
        SourceKind::Kinesis | SourceKind::DynamoDbStreams => json!({
            "shardId": shard_id,
            "startSequenceNumber": first.sequence_number,
            "endSequenceNumber": last.sequence_number,
            "approximateArrivalOfFirstRecord": rfc3339(first.approximate_arrival),
            "approximateArrivalOfLastRecord": rfc3339(last.approximate_arrival),
            "batchSize": records.len(),
            "streamArn": ctx.source.event_source_arn(),
        }),
    };
    let info_key = match ctx.source.kind() {
        SourceKind::DynamoDbStreams => "DDBStreamBatchInfo",
        SourceKind::Kinesis => "KinesisBatchInfo",
        SourceKind::Kafka => "KafkaBatchInfo",
    };
    // The function lives in the region and account of its event source.
    let source_arn: Vec<&str> = ctx.source.event_source_arn().split(':').collect();
    let (region, account) = match source_arn.as_slice() {
        [_, _, _, region, account, ..] => (*region, *account),
        _ => ("us-east-1", "000000000000"),
    };
    let mut invocation_record = json!({
        "requestContext": {
            "requestId": format!("{}-{}", shard_id, first.sequence_number),
            "functionArn": format!("arn:aws:lambda:{region}:{account}:function:{}", ctx.config.function_name),
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            // Lambda's X-Amz-Function-Error: "Unhandled" for any error the runtime reports,
            // whatever its errorType.
            "functionError": error.map(|_| "Unhandled"),
        },
        "version": "1.0",
        "timestamp": rfc3339(OffsetDateTime::now_utc()),
    });
    invocation_record[info_key] = batch_info;
    tracing::error!(shard_id, condition, records = records.len(), first = %first.sequence_number, last = %last.sequence_number, "batch given up; sent to the on-failure destination");
    match ctx.on_failure {
        Some(destination) => {
            if let Err(e) = destination.send(&invocation_record).await {
                tracing::error!(error = %telemetry::error_chain(&e), record = %invocation_record, "on-failure destination unavailable; the record is only in this log");
            }
        }
        None => tracing::error!(record = %invocation_record, "no on-failure destination; the batch is dropped"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(offsets: &[u64]) -> Vec<SourceRecord> {
        offsets
            .iter()
            .map(|offset| SourceRecord {
                sequence_number: offset.to_string(),
                approximate_arrival: OffsetDateTime::UNIX_EPOCH,
                lambda_record: Value::Null,
                filter_view: Value::Null,
            })
            .collect()
    }

    #[test]
    fn a_kafka_failure_resumes_its_partition_at_the_reported_offset_and_anything_else_fails_the_batch() {
        let records = batch(&[10, 11, 12]);
        let failure = |identifier: Value| json!({ "batchItemFailures": [{ "itemIdentifier": identifier }] });
        let kafka = failure(json!({ "partition": "events-2", "offset": 11 }));
        assert_eq!(resume_index(&kafka, "events-2", &records), Some(1));
        // Another partition's offset, a missing offset, or nothing to go by: the whole batch.
        assert_eq!(resume_index(&kafka, "events-1", &records), Some(0));
        let no_offset = failure(json!({ "partition": "events-2" }));
        assert_eq!(resume_index(&no_offset, "events-2", &records), Some(0));
        assert_eq!(resume_index(&failure(Value::Null), "events-2", &records), Some(0));
        // Streams' sequence numbers as before.
        assert_eq!(resume_index(&failure(json!("12")), "shard-0", &records), Some(2));
        assert_eq!(
            resume_index(&json!({ "batchItemFailures": [] }), "events-2", &records),
            None
        );
    }
}
