//! Lambda's event source mapping semantics, on an in-memory stream so every case is exact:
//! batching, filtering, ReportBatchItemFailures checkpointing, bisect on error, bounded retries,
//! record age, the on-failure record, and parents before children.

use event_source_mapping::source::{Position, ReadResult, SourceError, SourceKind};
use event_source_mapping::{
    EventSourceMapping, FilterCriteria, Function, FunctionError, MappingConfig, MemoryOnFailure, ShardInfo,
    SourceRecord, StreamSource,
};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

/// Shards with fixed records; an iterator is "shard/offset". Every shard is closed.
struct MemorySource {
    shards: Vec<(ShardInfo, Vec<SourceRecord>)>,
}

fn record(seq: u64, kind: &str, arrival: OffsetDateTime) -> SourceRecord {
    let lambda_record =
        json!({ "eventName": "INSERT", "kind": kind, "dynamodb": { "SequenceNumber": format!("{seq:05}") } });
    SourceRecord {
        sequence_number: format!("{seq:05}"),
        approximate_arrival: arrival,
        filter_view: lambda_record.clone(),
        lambda_record,
    }
}

fn shard(id: &str, parents: &[&str], seqs: std::ops::Range<u64>) -> (ShardInfo, Vec<SourceRecord>) {
    let info = ShardInfo {
        shard_id: id.into(),
        parent_shard_ids: parents.iter().map(|p| p.to_string()).collect(),
    };
    (
        info,
        seqs.map(|s| record(s, if s % 10 == 7 { "poison" } else { "ok" }, OffsetDateTime::now_utc()))
            .collect(),
    )
}

impl StreamSource for MemorySource {
    fn kind(&self) -> SourceKind {
        SourceKind::DynamoDbStreams
    }
    fn event_source_arn(&self) -> &str {
        "arn:aws:dynamodb:local:000000000000:table/t/stream/x"
    }
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        Ok(self.shards.iter().map(|(info, _)| info.clone()).collect())
    }
    async fn shard_iterator(&self, shard_id: &str, position: &Position) -> Result<String, SourceError> {
        let records = &self.shards.iter().find(|(i, _)| i.shard_id == shard_id).unwrap().1;
        let offset = match position {
            Position::TrimHorizon => 0,
            Position::Latest => records.len(),
            Position::AfterSequenceNumber(seq) => records.iter().position(|r| &r.sequence_number == seq).unwrap() + 1,
        };
        Ok(format!("{shard_id}/{offset}"))
    }
    async fn read(&self, shard_id: &str, iterator: &str, limit: usize) -> Result<ReadResult, SourceError> {
        let offset: usize = iterator.rsplit('/').next().unwrap().parse().unwrap();
        let records = &self.shards.iter().find(|(i, _)| i.shard_id == shard_id).unwrap().1;
        let end = (offset + limit).min(records.len());
        let next = (end < records.len()).then(|| format!("{shard_id}/{end}"));
        Ok(ReadResult {
            records: records[offset..end].to_vec(),
            next_iterator: next,
        })
    }
}

/// Records every invocation; fails records of kind "poison" as configured.
#[derive(Default)]
struct Recorder {
    invocations: Mutex<Vec<Vec<String>>>,
    mode: Mode,
}

#[derive(Default, Clone, Copy)]
enum Mode {
    #[default]
    Succeed,
    /// Report the first poison record of the batch as a batch item failure.
    ReportPoison,
    /// Fail the whole invocation when a poison record is in it.
    ErrorOnPoison,
}

impl Function for Recorder {
    async fn invoke(&self, event: Value, _deadline: Instant) -> Result<Value, FunctionError> {
        let records = event["Records"].as_array().unwrap();
        let seqs: Vec<String> = records
            .iter()
            .map(|r| r["dynamodb"]["SequenceNumber"].as_str().unwrap().to_owned())
            .collect();
        self.invocations.lock().unwrap().push(seqs);
        let poison = records.iter().find(|r| r["kind"] == "poison");
        match (self.mode, poison) {
            (Mode::ReportPoison, Some(p)) => {
                Ok(json!({ "batchItemFailures": [{ "itemIdentifier": p["dynamodb"]["SequenceNumber"] }] }))
            }
            (Mode::ErrorOnPoison, Some(_)) => Err(FunctionError::new("Unhandled", "poison")),
            _ => Ok(json!({ "batchItemFailures": [] })),
        }
    }
}

type TestMapping = EventSourceMapping<MemorySource, Arc<Recorder>, Arc<MemoryOnFailure>>;

fn mapping(
    source: MemorySource,
    mode: Mode,
    config: MappingConfig,
) -> (TestMapping, Arc<Recorder>, Arc<MemoryOnFailure>) {
    let recorder = Arc::new(Recorder {
        mode,
        ..Default::default()
    });
    let dlq = Arc::new(MemoryOnFailure::default());
    let config = MappingConfig {
        retry_backoff: Duration::from_millis(1),
        ..config
    };
    (
        EventSourceMapping::new(source, recorder.clone(), Some(dlq.clone()), config),
        recorder,
        dlq,
    )
}

fn flat(recorder: &Recorder) -> Vec<Vec<String>> {
    recorder.invocations.lock().unwrap().clone()
}

#[tokio::test]
async fn batches_are_at_most_batch_size_in_shard_order() {
    let source = MemorySource {
        shards: vec![shard("s0", &[], 0..25)],
    };
    let (mut esm, recorder, _) = mapping(
        source,
        Mode::Succeed,
        MappingConfig {
            batch_size: 10,
            ..Default::default()
        },
    );
    let report = esm.drain().await.unwrap();
    let sizes: Vec<_> = flat(&recorder).iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!((report.records_read, report.invocations), (25, 3));
}

#[tokio::test]
async fn filtered_out_records_never_reach_the_function() {
    let source = MemorySource {
        shards: vec![shard("s0", &[], 0..20)],
    };
    let filter = FilterCriteria::from_patterns([r#"{"kind": ["ok"]}"#]).unwrap();
    let (mut esm, recorder, _) = mapping(
        source,
        Mode::Succeed,
        MappingConfig {
            filter,
            ..Default::default()
        },
    );
    let report = esm.drain().await.unwrap();
    let seen: Vec<String> = flat(&recorder).concat();
    assert_eq!(seen.len(), 18);
    assert!(!seen.contains(&"00007".to_string()) && !seen.contains(&"00017".to_string()));
    assert_eq!(report.records_filtered_out, 2);
}

#[tokio::test]
async fn a_reported_item_failure_resumes_the_batch_from_that_record_until_retries_run_out() {
    let source = MemorySource {
        shards: vec![shard("s0", &[], 0..10)],
    };
    let config = MappingConfig {
        maximum_retry_attempts: Some(2),
        ..Default::default()
    };
    let (mut esm, recorder, dlq) = mapping(source, Mode::ReportPoison, config);
    esm.drain().await.unwrap();
    let calls = flat(&recorder);
    assert_eq!(calls[0].len(), 10);
    // Retried from 00007 (the reported record), twice, then given up on.
    assert_eq!(calls[1], ["00007", "00008", "00009"]);
    assert_eq!(calls.len(), 3);
    let failures = dlq.records();
    assert_eq!(failures.len(), 1);
    let info = &failures[0]["DDBStreamBatchInfo"];
    assert_eq!(
        (info["startSequenceNumber"].as_str(), info["endSequenceNumber"].as_str()),
        (Some("00007"), Some("00009"))
    );
    assert_eq!(info["batchSize"], 3);
    assert_eq!(failures[0]["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(failures[0]["requestContext"]["approximateInvokeCount"], 3);
}

#[tokio::test]
async fn bisect_on_error_isolates_the_poison_record() {
    let source = MemorySource {
        shards: vec![shard("s0", &[], 0..8)],
    };
    let config = MappingConfig {
        bisect_batch_on_function_error: true,
        maximum_retry_attempts: Some(0),
        ..Default::default()
    };
    let (mut esm, recorder, dlq) = mapping(source, Mode::ErrorOnPoison, config);
    esm.drain().await.unwrap();
    let delivered_ok: Vec<String> = flat(&recorder)
        .into_iter()
        .filter(|c| !c.contains(&"00007".to_string()))
        .flatten()
        .collect();
    assert_eq!(
        delivered_ok,
        ["00000", "00001", "00002", "00003", "00004", "00005", "00006"]
    );
    let failures = dlq.records();
    assert_eq!(failures.len(), 1, "only the poison record is given up on: {failures:?}");
    assert_eq!(failures[0]["DDBStreamBatchInfo"]["startSequenceNumber"], "00007");
    assert_eq!(failures[0]["DDBStreamBatchInfo"]["batchSize"], 1);
    assert_eq!(failures[0]["responseContext"]["functionError"], "Unhandled");
}

#[tokio::test]
async fn records_older_than_the_maximum_age_go_to_the_on_failure_destination_unprocessed() {
    let old = OffsetDateTime::now_utc() - time::Duration::hours(2);
    let mut records: Vec<_> = (0..3).map(|s| record(s, "ok", old)).collect();
    records.extend((3..5).map(|s| record(s, "ok", OffsetDateTime::now_utc())));
    let info = ShardInfo {
        shard_id: "s0".into(),
        parent_shard_ids: vec![],
    };
    let source = MemorySource {
        shards: vec![(info, records)],
    };
    let config = MappingConfig {
        maximum_record_age: Some(Duration::from_secs(3600)),
        ..Default::default()
    };
    let (mut esm, recorder, dlq) = mapping(source, Mode::Succeed, config);
    esm.drain().await.unwrap();
    assert_eq!(flat(&recorder), [vec!["00003".to_string(), "00004".to_string()]]);
    assert_eq!(dlq.records()[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(dlq.records()[0]["DDBStreamBatchInfo"]["batchSize"], 3);
}

#[tokio::test]
async fn children_start_only_after_their_parents_are_read_to_the_end() {
    // s2 was split from s0 and merged with s1 into s3.
    let source = MemorySource {
        shards: vec![
            shard("s3", &["s2", "s1"], 400..405),
            shard("s2", &["s0"], 200..205),
            shard("s1", &[], 100..105),
            shard("s0", &[], 0..5),
        ],
    };
    let (mut esm, recorder, _) = mapping(
        source,
        Mode::Succeed,
        MappingConfig {
            batch_size: 2,
            ..Default::default()
        },
    );
    esm.drain().await.unwrap();
    let calls = flat(&recorder);
    let position = |seq: &str| calls.iter().position(|c| c.contains(&seq.to_string())).unwrap();
    let last_of = |prefix: char| {
        calls
            .iter()
            .rposition(|c| c.iter().any(|s| s.starts_with(&format!("00{prefix}"))))
            .unwrap()
    };
    assert!(position("00200") > last_of('0'), "s2 after all of s0: {calls:?}");
    assert!(
        position("00400") > last_of('2') && position("00400") > last_of('1'),
        "s3 after s1 and s2: {calls:?}"
    );
    assert_eq!(calls.concat().len(), 20);
}

#[tokio::test]
async fn retries_without_a_limit_block_the_shard_until_the_function_recovers() {
    struct FailTwice(Mutex<u32>);
    impl Function for FailTwice {
        async fn invoke(&self, _event: Value, _deadline: Instant) -> Result<Value, FunctionError> {
            let mut failures = self.0.lock().unwrap();
            if *failures < 2 {
                *failures += 1;
                return Err(FunctionError::new("Unhandled", "down"));
            }
            Ok(json!({}))
        }
    }
    let source = MemorySource {
        shards: vec![shard("s0", &[], 0..3)],
    };
    let config = MappingConfig {
        retry_backoff: Duration::from_millis(1),
        ..Default::default()
    };
    let mut esm = EventSourceMapping::new(source, FailTwice(Mutex::new(0)), None::<MemoryOnFailure>, config);
    let report = esm.drain().await.unwrap();
    assert_eq!(
        (report.invocations, report.function_errors, report.batches_to_on_failure),
        (3, 2, 0)
    );
}

/// One open shard whose records become readable over time, as writes land on a live stream.
struct TimedSource {
    start: Instant,
    /// (readable after, record)
    records: Vec<(Duration, SourceRecord)>,
}

impl TimedSource {
    fn one_record_every(interval: Duration, count: u64) -> Self {
        Self {
            start: Instant::now(),
            records: (0..count)
                .map(|i| (interval * i as u32, record(i, "ok", OffsetDateTime::now_utc())))
                .collect(),
        }
    }
}

impl StreamSource for TimedSource {
    fn kind(&self) -> SourceKind {
        SourceKind::DynamoDbStreams
    }
    fn event_source_arn(&self) -> &str {
        "arn:aws:dynamodb:local:000000000000:table/t/stream/x"
    }
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        Ok(vec![ShardInfo {
            shard_id: "open".into(),
            parent_shard_ids: vec![],
        }])
    }
    async fn shard_iterator(&self, _shard_id: &str, position: &Position) -> Result<String, SourceError> {
        let offset = match position {
            Position::TrimHorizon => 0,
            Position::Latest => self.records.len(),
            Position::AfterSequenceNumber(seq) => {
                self.records
                    .iter()
                    .position(|(_, r)| &r.sequence_number == seq)
                    .unwrap()
                    + 1
            }
        };
        Ok(offset.to_string())
    }
    async fn read(&self, _shard_id: &str, iterator: &str, limit: usize) -> Result<ReadResult, SourceError> {
        let offset: usize = iterator.parse().unwrap();
        let now = self.start.elapsed();
        let records: Vec<SourceRecord> = self.records[offset..]
            .iter()
            .take_while(|(readable_after, _)| *readable_after <= now)
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect();
        // An open shard always has a next iterator.
        Ok(ReadResult {
            next_iterator: Some((offset + records.len()).to_string()),
            records,
        })
    }
}

async fn first_invocation_with_window(window: Duration, batch_size: usize) -> (Vec<String>, Duration) {
    let source = TimedSource::one_record_every(Duration::from_millis(100), 10);
    let recorder = Arc::new(Recorder::default());
    let config = MappingConfig {
        batch_size,
        maximum_batching_window: window,
        ..Default::default()
    };
    let mut esm: EventSourceMapping<TimedSource, Arc<Recorder>, MemoryOnFailure> =
        EventSourceMapping::new(source, recorder.clone(), None, config);
    let started = Instant::now();
    esm.poll_once().await.unwrap();
    let elapsed = started.elapsed();
    (flat(&recorder).remove(0), elapsed)
}

#[tokio::test(start_paused = true)]
async fn without_a_batching_window_what_is_there_is_delivered_at_once() {
    let (batch, waited) = first_invocation_with_window(Duration::ZERO, 100).await;
    assert_eq!(batch, ["00000"]);
    assert!(waited < Duration::from_millis(100), "waited {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_batching_window_gathers_records_until_it_ends() {
    // Records land every 100 ms; a 450 ms window collects those readable by then: 0 ms .. 400 ms.
    let (batch, waited) = first_invocation_with_window(Duration::from_millis(450), 100).await;
    assert_eq!(batch, ["00000", "00001", "00002", "00003", "00004"]);
    assert!(waited >= Duration::from_millis(450), "waited {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_is_delivered_before_the_window_ends() {
    let (batch, waited) = first_invocation_with_window(Duration::from_secs(5), 3).await;
    assert_eq!(batch, ["00000", "00001", "00002"]);
    assert!(waited < Duration::from_millis(300), "waited {waited:?}");
}
