//! A Kafka topic as the source of Lambda's Kafka event source mapping (Amazon MSK): what the
//! product relies on, and nothing more. Each partition is a shard, its offsets the sequence
//! numbers; a batch is one partition's records in offset order; the offset after the last record
//! handled is committed (held by the mapping) only once the batch succeeded, is filtered or given
//! up, and a partial failure resumes the partition from the reported offset. The event is
//! Lambda's: `records` keyed by `<topic>-<partition>`, keys and values in base64, headers as byte
//! lists.

use crate::source::{Position, ReadResult, ShardInfo, SourceError, SourceKind, SourceRecord, StreamSource};
use base64::Engine;
use kafka_bus::KafkaConfig;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use serde_json::{Value, json};
use std::collections::HashMap;
use time::OffsetDateTime;

pub struct KafkaSource {
    config: KafkaConfig,
    /// The partition clients by shard id (`<topic>-<partition>`).
    partitions: HashMap<String, PartitionClient>,
    /// Lambda's `eventSourceArn` for the topic's cluster (locally a made-up one).
    event_source_arn: String,
}

/// How long one fetch waits for records before it answers empty.
const FETCH_WAIT_MS: i32 = 100;
/// At most this many bytes of records per fetch (Lambda's Kafka batches are at most 6 MB).
const FETCH_MAX_BYTES: i32 = 6 * 1024 * 1024;

impl KafkaSource {
    /// Connects to every partition of `config`'s topic.
    pub async fn new(config: KafkaConfig, event_source_arn: impl Into<String>) -> Result<Self, SourceError> {
        let setup = |e: kafka_bus::KafkaError| SourceError {
            operation: "connect to the Kafka topic",
            iterator_invalid: false,
            source: e.into(),
        };
        let client = kafka_bus::connect(&config, None).await.map_err(setup)?;
        let partitions = kafka_bus::partitions(&client, &config)
            .await
            .map_err(setup)?
            .into_iter()
            .map(|partition| (format!("{}-{}", config.topic, partition.partition()), partition))
            .collect();
        Ok(Self {
            config,
            partitions,
            event_source_arn: event_source_arn.into(),
        })
    }

    fn partition(&self, shard_id: &str) -> Result<&PartitionClient, SourceError> {
        self.partitions.get(shard_id).ok_or_else(|| SourceError {
            operation: "find the partition",
            iterator_invalid: false,
            source: format!("no partition {shard_id} of topic {}", self.config.topic).into(),
        })
    }
}

fn kafka_error(operation: &'static str, error: rskafka::client::error::Error) -> SourceError {
    // An offset the partition no longer (or not yet) holds: open again from the checkpoint.
    let iterator_invalid = matches!(
        &error,
        rskafka::client::error::Error::ServerError {
            protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
            ..
        }
    );
    SourceError {
        operation,
        iterator_invalid,
        source: error.into(),
    }
}

impl StreamSource for KafkaSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Kafka
    }

    fn event_source_arn(&self) -> &str {
        &self.event_source_arn
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        let mut shards: Vec<ShardInfo> = self
            .partitions
            .keys()
            .map(|shard_id| ShardInfo {
                shard_id: shard_id.clone(),
                parent_shard_ids: Vec::new(),
            })
            .collect();
        shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(shards)
    }

    /// The iterator is the next offset to read.
    async fn shard_iterator(&self, shard_id: &str, position: &Position) -> Result<String, SourceError> {
        let partition = self.partition(shard_id)?;
        let offset = match position {
            Position::TrimHorizon => partition
                .get_offset(OffsetAt::Earliest)
                .await
                .map_err(|e| kafka_error("ListOffsets(earliest)", e))?,
            Position::Latest => partition
                .get_offset(OffsetAt::Latest)
                .await
                .map_err(|e| kafka_error("ListOffsets(latest)", e))?,
            Position::AfterSequenceNumber(offset) => {
                offset.parse::<i64>().map_err(|e| SourceError {
                    operation: "read the checkpoint",
                    iterator_invalid: false,
                    source: format!("checkpoint {offset:?} is not an offset: {e}").into(),
                })? + 1
            }
        };
        Ok(offset.to_string())
    }

    async fn read(&self, shard_id: &str, iterator: &str, limit: usize) -> Result<ReadResult, SourceError> {
        let partition = self.partition(shard_id)?;
        let offset: i64 = iterator.parse().map_err(|e| SourceError {
            operation: "read the iterator",
            iterator_invalid: true,
            source: format!("iterator {iterator:?} is not an offset: {e}").into(),
        })?;
        let (mut fetched, _high_watermark) = partition
            .fetch_records(offset, 1..FETCH_MAX_BYTES, FETCH_WAIT_MS)
            .await
            .map_err(|e| kafka_error("Fetch", e))?;
        fetched.retain(|r| r.offset >= offset);
        fetched.truncate(limit);
        let next = fetched.last().map_or(offset, |r| r.offset + 1);
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let records = fetched
            .into_iter()
            .map(|r| {
                let timestamp_ms = r.record.timestamp.timestamp_millis();
                let headers: Vec<Value> = r
                    .record
                    .headers
                    .iter()
                    .map(|(name, value)| json!({ name: value.iter().map(|b| *b as i8).collect::<Vec<i8>>() }))
                    .collect();
                let lambda_record = json!({
                    "topic": self.config.topic,
                    "partition": partition.partition(),
                    "offset": r.offset,
                    "timestamp": timestamp_ms,
                    "timestampType": "CREATE_TIME",
                    "key": r.record.key.as_deref().map(b64),
                    "value": r.record.value.as_deref().map(b64),
                    "headers": headers,
                });
                SourceRecord {
                    sequence_number: r.offset.to_string(),
                    approximate_arrival: OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(timestamp_ms) * 1_000_000,
                    )
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    filter_view: lambda_record.clone(),
                    lambda_record,
                }
            })
            .collect();
        Ok(ReadResult {
            records,
            // A partition never closes.
            next_iterator: Some(next.to_string()),
        })
    }

    fn event(&self, shard_id: &str, records: Vec<Value>) -> Value {
        json!({
            "eventSource": "aws:kafka",
            "eventSourceArn": self.event_source_arn,
            "bootstrapServers": self.config.bootstrap_servers.join(","),
            "records": { shard_id: records },
        })
    }
}
