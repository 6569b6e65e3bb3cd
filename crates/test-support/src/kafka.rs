//! The Kafka bus in tests: fresh topics on the test broker (Tansu, started by `scripts/test.sh`
//! on `KAFKA_BOOTSTRAP_SERVERS`), and what the relay put on them, read back.

use kafka_bus::{KafkaConfig, ReadRecord};

/// A topic of its own on the test broker; each test makes one, so tests never share records.
pub struct TestTopic {
    pub config: KafkaConfig,
    pub client: rskafka::client::Client,
}

impl TestTopic {
    /// A new topic named after a fresh ULID, with `partitions` partitions.
    pub async fn create(partitions: i32) -> Self {
        let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok().filter(|v| !v.is_empty());
        let bootstrap = bootstrap.expect(
            "KAFKA_BOOTSTRAP_SERVERS is not set: the Kafka tests need the test broker; run them with scripts/test.sh",
        );
        let topic = format!("t{}-events", ulid::Ulid::new().to_string().to_lowercase());
        let config = KafkaConfig::plaintext(bootstrap, topic);
        let client = kafka_bus::connect(&config, None)
            .await
            .expect("the test broker answers");
        kafka_bus::create_topic(&client, &config, partitions)
            .await
            .expect("the test topic is created");
        Self { config, client }
    }

    /// Every record on the topic, partition by partition, each partition in offset order.
    pub async fn records(&self) -> Vec<ReadRecord> {
        let mut records = Vec::new();
        for partition in kafka_bus::partitions(&self.client, &self.config)
            .await
            .expect("the topic's partitions")
        {
            records.extend(kafka_bus::read_from(&partition, 0).await.expect("the partition reads"));
        }
        records
    }

    /// The records as events read from the bus (key as partition key, `partition:offset` as the
    /// position), each held to the published contract.
    pub async fn events(&self) -> Vec<devstack::events::ReadEvent> {
        let events: Vec<_> = self.records().await.into_iter().map(read_event).collect();
        crate::contract::assert_events_keep_the_contract(events.iter().map(|e| e.data.as_slice()));
        events
    }
}

fn read_event(record: ReadRecord) -> devstack::events::ReadEvent {
    let data = record.value.unwrap_or_default();
    devstack::events::ReadEvent {
        partition_key: String::from_utf8_lossy(&record.key.unwrap_or_default()).into_owned(),
        sequence_number: format!("{}:{}", record.partition, record.offset),
        envelope: serde_json::from_slice(&data).map_err(|e| e.to_string()),
        data,
    }
}
