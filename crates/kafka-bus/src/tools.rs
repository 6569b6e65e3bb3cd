//! Making a topic, and reading one back: the local stack's, the replay's and the tests'.

use crate::{KafkaConfig, KafkaError};
use rskafka::client::Client;
use rskafka::client::partition::PartitionClient;

/// Creates `config`'s topic with `partitions` partitions (the local stack's and the tests'; on
/// MSK the topic is created with the cluster's tools, docs/deploy.md).
pub async fn create_topic(client: &Client, config: &KafkaConfig, partitions: i32) -> Result<(), KafkaError> {
    let unreachable = |source| KafkaError::Unreachable {
        brokers: config.brokers(),
        source,
    };
    client
        .controller_client()
        .map_err(unreachable)?
        .create_topic(config.topic.clone(), partitions, 1, 5_000)
        .await
        .map_err(unreachable)
}

/// Creates `config`'s topic with `partitions` partitions unless it exists (the local stack's
/// provisioning: a second run changes nothing).
pub async fn ensure_topic(client: &Client, config: &KafkaConfig, partitions: i32) -> Result<bool, KafkaError> {
    let topics = client.list_topics().await.map_err(|source| KafkaError::Unreachable {
        brokers: config.brokers(),
        source,
    })?;
    if topics.iter().any(|t| t.name == config.topic) {
        return Ok(false);
    }
    create_topic(client, config, partitions).await.map(|()| true)
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: std::collections::BTreeMap<String, Vec<u8>>,
    /// Milliseconds since the epoch: when the producer made the record.
    pub timestamp_ms: i64,
}

/// The records of `partition` from offset `from` on: fetched until a fetch comes back empty,
/// rather than up to the offset ListOffsets calls the latest, which some Kafka-protocol brokers
/// answer wrongly (Tansu 0.6 does).
pub async fn read_from(
    partition: &PartitionClient,
    from: i64,
) -> Result<Vec<ReadRecord>, rskafka::client::error::Error> {
    let mut records = Vec::new();
    let mut offset = from;
    loop {
        let batch = fetch_from(partition, offset).await?;
        let Some(last) = batch.last() else {
            return Ok(records);
        };
        offset = last.offset + 1;
        records.extend(batch);
    }
}

/// One fetch of `partition` from `offset`: what is there now, empty at the end of the partition.
pub async fn fetch_from(
    partition: &PartitionClient,
    offset: i64,
) -> Result<Vec<ReadRecord>, rskafka::client::error::Error> {
    let (batch, _high_watermark) = partition.fetch_records(offset, 1..4_000_000, FETCH_WAIT_MS).await?;
    Ok(batch
        .into_iter()
        // A fetch may answer from the start of the batch that holds `offset`.
        .filter(|r| r.offset >= offset)
        .map(|r| ReadRecord {
            partition: partition.partition(),
            offset: r.offset,
            key: r.record.key,
            value: r.record.value,
            headers: r.record.headers,
            timestamp_ms: r.record.timestamp.timestamp_millis(),
        })
        .collect())
}

/// A position in a partition, as ListOffsets finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetOf {
    /// The first record the partition still holds.
    Earliest,
    /// After the last record: only what is produced from now on.
    Latest,
    /// The first record whose timestamp is at or after this time (milliseconds since the epoch);
    /// `Latest` when there is none.
    Time(i64),
}

/// The offset `at` names in `partition`.
pub async fn offset_of(partition: &PartitionClient, at: OffsetOf) -> Result<i64, rskafka::client::error::Error> {
    use rskafka::client::partition::OffsetAt;
    let query = match at {
        OffsetOf::Earliest => OffsetAt::Earliest,
        OffsetOf::Latest => OffsetAt::Latest,
        OffsetOf::Time(ms) => match rskafka::chrono::DateTime::from_timestamp_millis(ms) {
            Some(time) => OffsetAt::Timestamp(time),
            None => OffsetAt::Earliest,
        },
    };
    let offset = partition.get_offset(query).await?;
    // Kafka answers -1 for a time after the last record's.
    if offset < 0 {
        return partition.get_offset(OffsetAt::Latest).await;
    }
    Ok(offset)
}

/// How long a fetch waits for records before it answers empty: the end of a read.
const FETCH_WAIT_MS: i32 = 100;
