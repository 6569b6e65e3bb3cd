//! A publisher's watch on its topic's partition count.
//!
//! A key's partition is `murmur2(key) % count`: a producer that maps by another count than its
//! neighbour, or than itself a minute ago, puts one reservation's events in two partitions, and
//! consumers read partitions independently, so a later version can be applied before an earlier
//! one arrives. Hence the publisher maps by one count, fixed when the stack was set up
//! (`KAFKA_PARTITIONS`), and this guard refuses to let it publish when the topic has another: at
//! start, and while it runs, reading the topic's metadata again at most once per interval (not
//! per record: a metadata request lists the cluster's topics).

use crate::{KafkaConfig, KafkaError};
use rskafka::client::Client;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How often a running publisher reads its topic's partition count again, at most. Until a check
/// notices partitions added, the publisher still maps by the configured count, so each
/// reservation's events keep to one partition in the meantime.
pub const PARTITION_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Where a topic's partitions are listed: the brokers' metadata ([`Client`]), or a test's fake.
pub trait TopicMetadata: Send + Sync {
    /// The partitions of `topic` as listed now; `None` when there is no such topic.
    fn partition_ids(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<Option<Vec<i32>>, rskafka::client::error::Error>> + Send;
}

impl TopicMetadata for Client {
    async fn partition_ids(&self, topic: &str) -> Result<Option<Vec<i32>>, rskafka::client::error::Error> {
        // A fresh metadata request, never the client's cache.
        let topics = self.list_topics().await?;
        Ok(topics
            .into_iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.into_iter().collect()))
    }
}

/// Lets a publisher publish only while its topic has the partition count it maps keys by.
#[derive(Debug)]
pub struct PartitionGuard<M> {
    metadata: M,
    config: KafkaConfig,
    expected: NonZeroU32,
    interval: Duration,
    /// When the count was last read, and what it was.
    last_read: Mutex<Option<(Instant, usize)>>,
}

impl<M: TopicMetadata> PartitionGuard<M> {
    /// A guard of `config`'s topic, which was created with `expected` partitions (its
    /// `KAFKA_PARTITIONS`). It reads the count at its first [`Self::check`].
    pub fn new(metadata: M, config: &KafkaConfig, expected: NonZeroU32) -> Self {
        Self {
            metadata,
            config: config.clone(),
            expected,
            interval: PARTITION_CHECK_INTERVAL,
            last_read: Mutex::new(None),
        }
    }

    /// Reads the count again at most once per `interval` (default [`PARTITION_CHECK_INTERVAL`]).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The partition count keys are mapped by: the configured one, whatever the topic has.
    pub fn expected(&self) -> NonZeroU32 {
        self.expected
    }

    pub fn metadata(&self) -> &M {
        &self.metadata
    }

    /// `Ok` when the topic had the configured count at the last read, no older than the
    /// interval (reading it now if older). [`KafkaError::PartitionMismatch`] otherwise; a topic
    /// that cannot be read (gone, or no broker answers) is an error too, and is read again at the
    /// next check.
    pub async fn check(&self) -> Result<(), KafkaError> {
        let recent = self
            .last_read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .filter(|(at, _)| at.elapsed() < self.interval);
        let found = match recent {
            Some((_, found)) => found,
            None => {
                let found = self
                    .metadata
                    .partition_ids(&self.config.topic)
                    .await
                    .map_err(|source| self.config.unreachable(source))?
                    .ok_or_else(|| self.config.no_topic())?
                    .len();
                *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), found));
                found
            }
        };
        if found == self.expected.get() as usize {
            return Ok(());
        }
        Err(KafkaError::PartitionMismatch {
            topic: self.config.topic.clone(),
            brokers: self.config.brokers(),
            expected: self.expected.get(),
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A topic whose partition count a test sets, counting the metadata reads.
    #[derive(Debug, Default)]
    struct FakeTopic {
        partitions: AtomicUsize,
        reads: AtomicUsize,
    }

    impl FakeTopic {
        fn with(partitions: usize) -> Self {
            let topic = Self::default();
            topic.partitions.store(partitions, Ordering::SeqCst);
            topic
        }
    }

    impl TopicMetadata for &FakeTopic {
        async fn partition_ids(&self, _topic: &str) -> Result<Option<Vec<i32>>, rskafka::client::error::Error> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let count = self.partitions.load(Ordering::SeqCst) as i32;
            Ok((count > 0).then(|| (0..count).collect()))
        }
    }

    fn guard(topic: &FakeTopic, configured: u32) -> PartitionGuard<&FakeTopic> {
        let configured = NonZeroU32::new(configured).unwrap();
        let config = KafkaConfig::plaintext("b-1.msk:9098", "reservation-events").with_partitions(configured);
        PartitionGuard::new(topic, &config, configured)
    }

    #[tokio::test]
    async fn a_topic_created_with_another_count_is_refused_naming_the_topic_both_counts_and_the_fix() {
        let topic = FakeTopic::with(6);
        let guard = guard(&topic, 4);
        let err = guard.check().await.unwrap_err();
        assert!(err.is_refusal());
        let message = err.to_string();
        for part in [
            r#"the Kafka topic "reservation-events" on b-1.msk:9098 has 6 partitions"#,
            "KAFKA_PARTITIONS says it was created with 4",
            "nothing is published",
            "Growing the topic",
            "set KafkaTopicPartitions (KAFKA_PARTITIONS) to 6",
        ] {
            assert!(message.contains(part), "{part:?} not in {message}");
        }
        assert_eq!(
            guard.expected().get(),
            4,
            "keys are still mapped by the configured count"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_publisher_notices_added_partitions_reading_the_metadata_at_most_once_per_interval() {
        let topic = FakeTopic::with(4);
        let guard = guard(&topic, 4);
        guard.check().await.unwrap();
        // Many publishes within the interval read the metadata once.
        for _ in 0..100 {
            guard.check().await.unwrap();
        }
        assert_eq!(topic.reads.load(Ordering::SeqCst), 1);

        // Partitions are added: the next read, one interval after the last, refuses.
        topic.partitions.store(8, Ordering::SeqCst);
        tokio::time::advance(PARTITION_CHECK_INTERVAL).await;
        let err = guard.check().await.unwrap_err();
        assert!(
            matches!(
                err,
                KafkaError::PartitionMismatch {
                    expected: 4,
                    found: 8,
                    ..
                }
            ),
            "{err}"
        );
        // And keeps refusing, still reading at most once per interval.
        for _ in 0..100 {
            assert!(guard.check().await.unwrap_err().is_refusal());
        }
        assert_eq!(topic.reads.load(Ordering::SeqCst), 2);
        tokio::time::advance(PARTITION_CHECK_INTERVAL).await;
        assert!(guard.check().await.unwrap_err().is_refusal());
        assert_eq!(topic.reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_topic_that_is_gone_is_an_error_read_again_next_time_not_a_refusal() {
        let topic = FakeTopic::with(0);
        let guard = guard(&topic, 4);
        let err = guard.check().await.unwrap_err();
        assert!(matches!(err, KafkaError::NoTopic { .. }), "{err}");
        assert!(!err.is_refusal());
        topic.partitions.store(4, Ordering::SeqCst);
        guard.check().await.unwrap();
        assert_eq!(topic.reads.load(Ordering::SeqCst), 2);
    }
}
