//! Replay from a Kafka topic: each partition in turn, from its start, a time or an offset of its
//! own, to its end now (or a time). A reservation's events are all in one partition (its id is the
//! key), so reading partition by partition keeps every reservation's order; the consumers' version
//! gate makes a replay over what was already applied change nothing, as on Kinesis.

use crate::{End, Position, Progress, ReplayError, Start, Summary, Target, handle_record, offsets_text};
use consumers::Consumer;
use kafka_bus::{KafkaConfig, OffsetOf};
use reservation_events_consumer::Version;
use rskafka::client::Client;
use rskafka::client::partition::PartitionClient;
use std::collections::HashMap;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct TopicReplayOptions {
    /// Trim horizon (each partition's earliest record), latest, a time, or an offset per
    /// partition (then only those partitions are read).
    pub from: Start,
    /// Stop after this time (inclusive), by the records' timestamps.
    pub to: Option<End>,
    /// Only these partitions; empty = every partition (or those `from` names).
    pub partitions: Vec<i32>,
    /// Count what would be applied; write nothing.
    pub dry_run: bool,
}

/// Reads the topic per `options` and gives every record to `target`.
pub async fn replay_topic<C: Consumer>(
    client: &Client,
    config: &KafkaConfig,
    options: &TopicReplayOptions,
    target: &mut Target<C>,
    progress: &dyn Progress,
) -> Result<Summary, ReplayError> {
    crate::refuse_a_future_start(&options.from)?;
    let end = match &options.to {
        None => None,
        Some(End::At(time)) => Some(millis(*time)),
        Some(End::Sequence(sequence)) => return Err(ReplayError::KinesisPositionOnKafka(sequence.clone())),
    };
    let mut partitions = kafka_bus::partitions(client, config)
        .await
        .map_err(|e| ReplayError::Kafka(Box::new(e)))?;
    let mut wanted = options.partitions.clone();
    match &options.from {
        Start::Sequence(sequence) => return Err(ReplayError::KinesisPositionOnKafka(sequence.clone())),
        Start::Offsets(offsets) if !wanted.is_empty() => {
            return Err(ReplayError::PartitionsNamedTwice(offsets_text(offsets)));
        }
        Start::Offsets(offsets) => wanted = offsets.keys().copied().collect(),
        _ => {}
    }
    for partition in &wanted {
        if !partitions.iter().any(|p| p.partition() == *partition) {
            return Err(ReplayError::UnknownPartition(*partition, config.topic.clone()));
        }
    }
    if !wanted.is_empty() {
        partitions.retain(|p| wanted.contains(&p.partition()));
    }

    let mut summary = Summary::default();
    let mut simulated: HashMap<String, Option<Version>> = HashMap::new();
    for partition in &partitions {
        progress.shard(&format!("partition {}", partition.partition()));
        summary.partitions += 1;
        let mut offset = start_offset(partition, &options.from, &config.topic).await?;
        // Kafka's offset for a time is its first record at or after it, so nothing before it
        // is read. A broker that answers an earlier offset (Tansu 0.6 answers 0 for a time
        // after the last record) would replay older records: they are skipped until the first
        // one at or after the time, which leaves Kafka's own answer unchanged.
        let mut before_the_start = match options.from {
            Start::At(time) => Some(millis(time)),
            _ => None,
        };
        'partition: loop {
            let batch = kafka_bus::fetch_from(partition, offset)
                .await
                .map_err(|e| partition_error("Fetch", &config.topic, partition.partition(), e))?;
            let Some(last) = batch.last() else { break };
            offset = last.offset + 1;
            for record in &batch {
                if before_the_start.is_some_and(|start| record.timestamp_ms < start) {
                    continue;
                }
                before_the_start = None;
                if end.is_some_and(|end| record.timestamp_ms > end) {
                    break 'partition;
                }
                summary.read += 1;
                let key = record.key.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                let position = Position::Offset {
                    partition: record.partition,
                    offset: record.offset,
                };
                let value = record.value.as_deref().unwrap_or_default();
                handle_record(
                    &key,
                    value,
                    position,
                    target,
                    options.dry_run,
                    &mut simulated,
                    &mut summary,
                )
                .await;
                progress.records(1, &summary);
            }
        }
    }
    Ok(summary)
}

async fn start_offset(partition: &PartitionClient, from: &Start, topic: &str) -> Result<i64, ReplayError> {
    let at = match from {
        Start::Offsets(offsets) => return Ok(offsets[&partition.partition()]),
        Start::TrimHorizon => OffsetOf::Earliest,
        Start::Latest => OffsetOf::Latest,
        Start::At(time) => OffsetOf::Time(millis(*time)),
        Start::Sequence(sequence) => return Err(ReplayError::KinesisPositionOnKafka(sequence.clone())),
    };
    kafka_bus::offset_of(partition, at)
        .await
        .map_err(|e| partition_error("ListOffsets", topic, partition.partition(), e))
}

fn millis(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn partition_error(
    operation: &'static str,
    topic: &str,
    partition: i32,
    error: rskafka::client::error::Error,
) -> ReplayError {
    ReplayError::KafkaPartition {
        operation,
        topic: topic.to_owned(),
        partition,
        source: Box::new(error),
    }
}
