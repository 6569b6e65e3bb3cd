//! The Kafka sink: the records of a call grouped by partition (the partition of their key, as
//! Kafka's own clients choose it), one produce request per partition, every partition at once,
//! acks=all, and each record's outcome.
//!
//! Keys are mapped by the partition count the topic was created with (`KAFKA_PARTITIONS`), never
//! by the count the topic shows, and a topic with another count is refused: at connect, and
//! while the sink runs, its metadata read again at most every
//! [`kafka_bus::PARTITION_CHECK_INTERVAL`] ([`kafka_bus::PartitionGuard`]). A refused call fails
//! whole ([`SinkErrorKind::Refused`]), so its events stay in the outbox until an operator fixes
//! the topic or the setting.
//!
//! A produce request appends its records to the partition in the order given, all or none. A
//! partition's records of a call go in as few requests as fit under Kafka's default size limit for
//! one record batch, sent one after the other; the first that fails fails the rest, so what a
//! partition accepted of a call is always its first records, in order. The relay's rounds
//! (docs/adr/0002-relay-ordering.md) never put two records of one reservation in one call and
//! never send a reservation's next record before its previous one was acknowledged, so a failed
//! or timed-out produce repeats a record rather than reordering one; docs/adr/0007-kafka-bus.md
//! names the one window this leaves without an idempotent producer, as on Kinesis.

use crate::sink::{EventSink, PutOutcome, SinkError, SinkErrorKind, SinkRecord};
use kafka_bus::{KafkaConfig, KafkaError, PartitionGuard, iam::AwsIdentity};
use rskafka::chrono::Utc;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::Record;
use std::collections::BTreeMap;
use std::time::Duration;

/// The sink of the configured bus: what the relay and the poller publish to.
#[derive(Debug)]
pub enum BusSink {
    Kinesis(crate::kinesis::KinesisSink),
    Kafka(KafkaSink),
}

impl BusSink {
    /// The sink `bus` names: Kinesis through `kinesis`, or Kafka, connected now (an unreachable
    /// broker, a missing topic, or a topic whose partition count is not `KAFKA_PARTITIONS` fails
    /// here, with one line naming them), signing with `aws` in IAM mode.
    pub async fn open(
        bus: &crate::config::BusConfig,
        kinesis: impl FnOnce() -> aws_sdk_kinesis::Client,
        aws: Option<AwsIdentity>,
    ) -> Result<Self, KafkaError> {
        Ok(match bus {
            crate::config::BusConfig::Kinesis { stream } => {
                Self::Kinesis(crate::kinesis::KinesisSink::new(kinesis(), stream))
            }
            crate::config::BusConfig::Kafka(kafka) => Self::Kafka(KafkaSink::connect(kafka, aws).await?),
        })
    }

    /// The metrics of a sink that could not be opened, for `function` (`relay`, `poller`): a
    /// refused bus counts as one refused publish, so the alarm on refusals sees a function that
    /// cannot even start; any other failure, none (the function's errors show it).
    pub fn start_metrics(error: &KafkaError, function: &str) -> telemetry::MetricSet {
        let mut metrics = telemetry::metrics(function);
        if error.is_refusal() {
            metrics.count(crate::handler::PUBLISH_REFUSED, 1.0);
        }
        metrics
    }
}

impl EventSink for BusSink {
    async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, SinkError> {
        match self {
            Self::Kinesis(sink) => sink.put_records(records).await,
            Self::Kafka(sink) => sink.put_records(records).await,
        }
    }
}

pub struct KafkaSink {
    topic: String,
    /// Partitions `0..KAFKA_PARTITIONS`: what keys are mapped to.
    partitions: Vec<PartitionClient>,
    /// Refuses a topic whose partition count is not `partitions.len()`.
    guard: PartitionGuard<rskafka::client::Client>,
    /// How long one partition's produce may take, its client's retries included, before its
    /// records count as failed (a broker that stops answering never fails a request by itself).
    produce_timeout: Duration,
}

/// The default [`KafkaSink::with_produce_timeout`]: Kafka's own default `request.timeout.ms`.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

impl KafkaSink {
    /// Connects to `config`'s brokers and to every partition of its topic: an unreachable broker,
    /// a missing topic, no `KAFKA_PARTITIONS` or a topic with another partition count is an
    /// error that names them, at start rather than at the first event.
    pub async fn connect(config: &KafkaConfig, aws: Option<AwsIdentity>) -> Result<Self, KafkaError> {
        // Before connecting: a missing setting is a configuration error, whatever the brokers say.
        let expected = config.partitions.ok_or_else(|| KafkaError::NoPartitionCount {
            topic: config.topic.clone(),
        })?;
        let guard = PartitionGuard::new(kafka_bus::connect(config, aws).await?, config, expected);
        guard.check().await?;
        let partitions = kafka_bus::partitions_to_publish(guard.metadata(), config, expected).await?;
        Ok(Self {
            topic: config.topic.clone(),
            partitions,
            guard,
            produce_timeout: PRODUCE_TIMEOUT,
        })
    }

    /// How often the running sink reads its topic's partition count again, at most (default
    /// [`kafka_bus::PARTITION_CHECK_INTERVAL`]).
    pub fn with_partition_check_interval(mut self, interval: Duration) -> Self {
        self.guard = self.guard.with_interval(interval);
        self
    }

    /// Bounds each partition's produce (the poller keeps it below its lease margin).
    pub fn with_produce_timeout(mut self, timeout: Duration) -> Self {
        self.produce_timeout = timeout;
        self
    }
}

impl EventSink for KafkaSink {
    async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, SinkError> {
        if let Err(error) = self.guard.check().await {
            let kind = if error.is_refusal() {
                tracing::error!(error = %error, "refusing to publish to the Kafka topic");
                SinkErrorKind::Refused
            } else {
                SinkErrorKind::Other
            };
            return Err(SinkError {
                kind,
                source: Box::new(error),
            });
        }
        // Each partition's records, in the order of the call; by the configured count.
        let count = self.guard.expected().get() as usize;
        let mut by_partition: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, record) in records.iter().enumerate() {
            let partition = kafka_bus::partition_for(record.partition_key.as_bytes(), count);
            by_partition.entry(partition).or_default().push(index);
        }
        let now = Utc::now();
        // Each partition's requests one after the other, every partition at once; per partition,
        // how many of its records went in, and why the next did not.
        let produced = futures::future::join_all(by_partition.iter().map(|(&partition, indices)| async move {
            let mut accepted = 0;
            for run in produce_runs(indices, |i| produce_size(records[i])) {
                let batch: Vec<Record> = run.iter().map(|&i| kafka_record(records[i], now)).collect();
                let produce = self.partitions[partition].produce(batch, Compression::NoCompression);
                let result = match tokio::time::timeout(self.produce_timeout, produce).await {
                    Ok(result) => result.map_err(|e| (error_code(&e), telemetry::error_chain(&e))),
                    Err(_) => Err((
                        "Timeout".to_owned(),
                        format!("no answer within {:?}", self.produce_timeout),
                    )),
                };
                if let Err(failure) = result {
                    return (accepted, Some(failure));
                }
                accepted += run.len();
            }
            (accepted, None)
        }))
        .await;
        let mut outcomes = vec![PutOutcome::Accepted; records.len()];
        for ((partition, indices), (accepted, failure)) in by_partition.iter().zip(produced) {
            if let Some((code, message)) = failure {
                let failed = PutOutcome::Failed {
                    code,
                    message: format!("partition {partition}: {message}"),
                };
                for &i in &indices[accepted..] {
                    outcomes[i] = failed.clone();
                }
            }
        }
        Ok(outcomes)
    }
}

/// The most one produce request carries for a partition: under Kafka's default `message.max.bytes`
/// (1,048,588 bytes for a record batch, which MSK keeps), which refuses a larger batch whatever
/// its records.
const MAX_PRODUCE_BYTES: usize = 1_000_000;

/// What a record weighs in a record batch: its key, value and headers, and room for the record's
/// own framing.
fn produce_size(record: &SinkRecord) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 8)
        .sum();
    record.size() + headers + 32
}

/// `indices`, in order, cut into runs that each fit one produce request; a record too large for
/// any request is a run of its own (the broker's answer then says why).
fn produce_runs(indices: &[usize], size: impl Fn(usize) -> usize) -> Vec<&[usize]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (position, &i) in indices.iter().enumerate() {
        let weight = size(i);
        if position > start && bytes + weight > MAX_PRODUCE_BYTES {
            runs.push(&indices[start..position]);
            (start, bytes) = (position, 0);
        }
        bytes += weight;
    }
    if start < indices.len() {
        runs.push(&indices[start..]);
    }
    runs
}

fn kafka_record(record: &SinkRecord, timestamp: rskafka::chrono::DateTime<Utc>) -> Record {
    Record {
        key: Some(record.partition_key.as_bytes().to_vec()),
        value: Some(record.data.clone()),
        headers: record
            .headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec()))
            .collect(),
        timestamp,
    }
}

/// The Kafka error's name (`NotLeaderOrFollower`, `RequestTimedOut`, ...), or the kind of client
/// failure (a lost connection), for logs and the relay's report.
fn error_code(error: &rskafka::client::error::Error) -> String {
    use rskafka::client::error::Error;
    match error {
        Error::ServerError { protocol_error, .. } => format!("{protocol_error:?}"),
        Error::Connection(_) => "Connection".into(),
        Error::Request(_) => "Request".into(),
        Error::RetryFailed(_) => "RetryFailed".into(),
        Error::Timeout => "Timeout".into(),
        _ => "Other".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sink_without_the_topics_partition_count_is_refused_before_connecting() {
        // No broker listens on port 9: the setting is checked first.
        let config = KafkaConfig::plaintext("127.0.0.1:9", "reservation-events");
        let err = KafkaSink::connect(&config, None).await.unwrap_err();
        assert!(matches!(err, KafkaError::NoPartitionCount { .. }), "{err}");
        assert!(err.is_refusal());
        assert!(err.to_string().contains("KafkaTopicPartitions"), "{err}");
        let metrics = BusSink::start_metrics(&err, "relay").to_line(time::OffsetDateTime::UNIX_EPOCH);
        assert!(metrics.contains(r#""PublishRefused":1.0"#), "{metrics}");
    }

    #[test]
    fn a_partitions_records_go_in_runs_that_fit_one_produce_request_in_order() {
        let indices: Vec<usize> = (0..6).collect();
        let small = |_| 1_000;
        assert_eq!(produce_runs(&indices, small), [&indices[..]]);
        // 400 kB each: two fit under the limit, the third starts the next request.
        let large = |_| 400_000;
        assert_eq!(produce_runs(&indices, large), [&[0, 1][..], &[2, 3], &[4, 5]]);
        // A record over the limit goes alone; the ones around it still share requests.
        let one_huge = |i| if i == 2 { 2_000_000 } else { 1_000 };
        assert_eq!(produce_runs(&indices, one_huge), [&[0, 1][..], &[2], &[3, 4, 5]]);
        assert!(produce_runs(&[], small).is_empty());
    }
}
