//! The Kafka bus in tests: fresh topics on the test broker (Tansu, started by `scripts/test.sh`
//! on `KAFKA_BOOTSTRAP_SERVERS`), and what the relay put on them, read back.

use kafka_bus::{KafkaConfig, ReadRecord};

/// A topic of its own on the test broker; each test makes one, so tests never share records.
pub struct TestTopic {
    pub config: KafkaConfig,
    pub client: rskafka::client::Client,
}

impl TestTopic {
    /// A new topic named after a fresh ULID, with `partitions` partitions, on the shared test broker.
    pub async fn create(partitions: i32) -> Self {
        Self::create_on(&Self::bootstrap(), partitions).await
    }

    /// A new topic as [`Self::create`] does, on the broker at `bootstrap`; its config names the
    /// partition count it was created with, as `KAFKA_PARTITIONS` does a deployed one's.
    pub async fn create_on(bootstrap: &str, partitions: i32) -> Self {
        let count = u32::try_from(partitions)
            .ok()
            .and_then(std::num::NonZeroU32::new)
            .expect("a topic has at least one partition");
        Self::create_with(bootstrap, partitions, count).await
    }

    /// A new topic of `partitions` partitions whose config says it was created with `configured`:
    /// a stack set up for another count than its topic has.
    pub async fn create_with(bootstrap: &str, partitions: i32, configured: std::num::NonZeroU32) -> Self {
        let topic = format!("t{}-events", ulid::Ulid::new().to_string().to_lowercase());
        let config = KafkaConfig::plaintext(bootstrap, topic).with_partitions(configured);
        let client = kafka_bus::connect(&config, None)
            .await
            .expect("the test broker answers");
        kafka_bus::create_topic(&client, &config, partitions)
            .await
            .expect("the test topic is created");
        Self { config, client }
    }

    /// The test broker's address (`KAFKA_BOOTSTRAP_SERVERS`, which `scripts/test.sh` sets).
    pub fn bootstrap() -> String {
        std::env::var("KAFKA_BOOTSTRAP_SERVERS")
            .ok()
            .filter(|v| !v.is_empty())
            .expect("KAFKA_BOOTSTRAP_SERVERS is not set: the Kafka tests need the test broker; run them with scripts/test.sh")
    }

    /// Deletes the topic and creates it again under its name with `partitions` partitions, empty:
    /// as near as the test broker comes to adding partitions to a topic (Tansu 0.6 does not answer
    /// CreatePartitions), which is what a publisher must notice while it runs.
    pub async fn recreate_with(&self, partitions: i32) {
        self.client
            .controller_client()
            .expect("the test broker's controller")
            .delete_topic(self.config.topic.clone(), 5_000)
            .await
            .expect("the test topic is deleted");
        kafka_bus::create_topic(&self.client, &self.config, partitions)
            .await
            .expect("the test topic is created again");
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

/// A Kafka broker of a test's own, for the tests that stop one (a paused broker would stall every
/// other test on the shared one): the Tansu binary `scripts/test.sh` installs (`TANSU`), on a free
/// loopback port, memory storage. Killed when dropped.
pub struct OwnBroker {
    child: std::process::Child,
    pub bootstrap: String,
}

impl OwnBroker {
    pub async fn start() -> Self {
        let tansu = std::env::var("TANSU").ok().filter(|v| !v.is_empty()).expect(
            "TANSU is not set: the Kafka fault tests start a broker of their own; run them with scripts/test.sh",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = std::process::Command::new(tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the Tansu broker starts");
        // Owned at once, so that it is killed however the start ends.
        let broker = Self {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&broker.bootstrap).await.is_ok() {
                return broker;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!(
            "the test's own Tansu broker did not listen on {} within 5 s",
            broker.bootstrap
        );
    }

    /// Pauses the broker's process (SIGSTOP): it keeps its connections and its data and answers
    /// nothing until [`Self::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.resume();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
