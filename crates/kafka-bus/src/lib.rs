//! The Kafka event bus: Amazon MSK (provisioned or Serverless), or any broker that speaks the
//! Kafka protocol.
//!
//! - [`KafkaConfig`]: the brokers, the topic, how to authenticate and how many partitions the
//!   topic was created with, read from the environment once (`KAFKA_BOOTSTRAP_SERVERS`,
//!   `KAFKA_TOPIC`, `KAFKA_AUTH`, `KAFKA_PARTITIONS`).
//! - [`connect`]: a client, plaintext or with TLS and MSK IAM (SASL/OAUTHBEARER, the token signed
//!   with the caller's AWS credentials, [`iam`]). A broker that cannot be reached, or a topic that
//!   does not exist, is one [`KafkaError`] that names the brokers and the topic.
//! - [`partition_for`]: the partition of a record key, as Kafka's own clients choose it
//!   (murmur2), so a reservation's events land where any Kafka producer would put them.
//! - [`PartitionGuard`]: a publisher maps keys by the partition
//!   count the topic was created with (`KAFKA_PARTITIONS`), never by the count it finds, and
//!   refuses a topic whose count is another, at start and, at a bounded rate, while it runs. A
//!   key's partition depends on the count: with partitions added, one reservation's events would
//!   land in two partitions, which consumers read independently, and could be applied out of
//!   order.
//!
//! The client is rskafka, a pure-Rust one: nothing to build in C, for the Lambdas or for the
//! tests (docs/adr/0007-kafka-bus.md says what that choice means for ordering).

pub mod iam;
/// What only the tools use (the local stack, replay and audit, the tests): making a topic, and
/// reading a topic back. Behind the `tools` feature, so the relay's and the poller's Lambdas do
/// not link it.
#[cfg(feature = "tools")]
mod tools;
#[cfg(feature = "tools")]
pub use tools::{OffsetOf, ReadRecord, create_topic, ensure_topic, fetch_from, offset_of, read_from};
mod partition_guard;

pub use partition_guard::{PARTITION_CHECK_INTERVAL, PartitionGuard, TopicMetadata};

use rskafka::BackoffConfig;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, OauthBearerCredentials, SaslConfig};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// `KAFKA_BOOTSTRAP_SERVERS`: where the client starts, comma-separated `host:port`.
pub const BOOTSTRAP_SERVERS: settings::ResourceName = settings::ResourceName {
    var: "KAFKA_BOOTSTRAP_SERVERS",
    default: "127.0.0.1:9092",
};
/// `KAFKA_TOPIC`: the topic the events are published to; named as the Kinesis stream is.
pub const TOPIC: settings::ResourceName = settings::ResourceName {
    var: "KAFKA_TOPIC",
    default: "reservation-events",
};

/// `KAFKA_PARTITIONS`: the partition count the topic was created with (the template's
/// `KafkaTopicPartitions`). Publishers need it; readers do not.
pub const PARTITIONS: settings::WholeNumber = settings::WholeNumber::between("KAFKA_PARTITIONS", 1, 1, 100_000);

/// How long the client keeps trying one request (a produce, a fetch, finding a leader) before it
/// gives the failure to its caller, who decides whether to try again.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// How the client proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaAuth {
    /// Plaintext, no authentication: a local broker.
    None,
    /// TLS, and SASL/OAUTHBEARER with an MSK IAM token signed with the function's role (MSK's
    /// IAM listener, port 9098 provisioned or Serverless).
    Iam,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub bootstrap_servers: Vec<String>,
    pub topic: String,
    pub auth: KafkaAuth,
    /// `KAFKA_PARTITIONS`: how many partitions the topic was created with, which is what a
    /// publisher maps keys by and the only count it publishes to. Unset is fine for reading the
    /// topic; a publisher refuses to start without it.
    pub partitions: Option<NonZeroU32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaConfigError {
    #[error(transparent)]
    Setting(#[from] settings::SettingError),
    #[error("KAFKA_AUTH must be NONE or IAM, got {0:?}")]
    Auth(String),
    #[error("KAFKA_BOOTSTRAP_SERVERS must list host:port pairs separated by commas, got {0:?}")]
    Servers(String),
}

impl KafkaConfig {
    /// Reads `KAFKA_BOOTSTRAP_SERVERS` (default `127.0.0.1:9092`), `KAFKA_TOPIC` (default
    /// `reservation-events`), `KAFKA_AUTH` (`NONE`, the default, or `IAM`) and `KAFKA_PARTITIONS`
    /// (no default).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, KafkaConfigError> {
        let env = settings::Vars(vars);
        let servers = env.name(BOOTSTRAP_SERVERS)?;
        let bootstrap_servers: Vec<String> = servers.split(',').map(|s| s.trim().to_owned()).collect();
        let well_formed = |server: &String| {
            server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        };
        if !bootstrap_servers.iter().all(well_formed) {
            return Err(KafkaConfigError::Servers(servers));
        }
        let auth = match env.get("KAFKA_AUTH").unwrap_or("NONE") {
            "NONE" => KafkaAuth::None,
            "IAM" => KafkaAuth::Iam,
            other => return Err(KafkaConfigError::Auth(other.to_owned())),
        };
        let partitions = match env.get(PARTITIONS.var) {
            None => None,
            Some(_) => NonZeroU32::new(env.whole_number(&PARTITIONS)? as u32),
        };
        Ok(Self {
            bootstrap_servers,
            topic: env.name(TOPIC)?,
            auth,
            partitions,
        })
    }

    /// A plaintext broker at `bootstrap` (the local stack's, the tests'), whose topic's partition
    /// count is not known (enough to read it).
    pub fn plaintext(bootstrap: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: vec![bootstrap.into()],
            topic: topic.into(),
            auth: KafkaAuth::None,
            partitions: None,
        }
    }

    /// The same, with the topic's partition count known: what a publisher needs.
    pub fn with_partitions(mut self, partitions: NonZeroU32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    fn brokers(&self) -> String {
        self.bootstrap_servers.join(",")
    }

    fn unreachable(&self, source: rskafka::client::error::Error) -> KafkaError {
        KafkaError::Unreachable {
            brokers: self.brokers(),
            source,
        }
    }

    fn no_topic(&self) -> KafkaError {
        KafkaError::NoTopic {
            topic: self.topic.clone(),
            brokers: self.brokers(),
        }
    }
}

/// Why the bus could not be used, naming what was asked for.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("cannot reach the Kafka brokers {brokers}: {source}")]
    Unreachable {
        brokers: String,
        #[source]
        source: rskafka::client::error::Error,
    },
    #[error("the Kafka topic {topic:?} does not exist on {brokers}: create it (see docs/deploy.md)")]
    NoTopic { topic: String, brokers: String },
    #[error("cannot reach partition {partition} of the Kafka topic {topic:?} on {brokers}: {source}")]
    Partition {
        topic: String,
        partition: i32,
        brokers: String,
        #[source]
        source: rskafka::client::error::Error,
    },
    #[error("KAFKA_AUTH=IAM needs AWS credentials and a region")]
    NoAwsIdentity,
    #[error(
        "KAFKA_PARTITIONS is not set: a publisher maps each reservation to a partition of the Kafka topic {topic:?} by the \
         partition count the topic was created with; set it to that count (the stack's KafkaTopicPartitions)"
    )]
    NoPartitionCount { topic: String },
    /// The topic does not have the partition count keys are mapped by: nothing may be published
    /// until an operator fixes it.
    #[error(
        "the Kafka topic {topic:?} on {brokers} has {found} partitions, but KAFKA_PARTITIONS says it was created with \
         {expected}: nothing is published (the events wait in the outbox), since a reservation's events would land in \
         two partitions and could be applied out of order. If partitions were added to the topic, move to a new topic \
         (docs/deploy.md, \"Growing the topic\"); if the topic was created with {found}, set KafkaTopicPartitions \
         (KAFKA_PARTITIONS) to {found}"
    )]
    PartitionMismatch {
        topic: String,
        brokers: String,
        expected: u32,
        found: usize,
    },
}

impl KafkaError {
    /// Whether this is the bus refusing to be published to until an operator fixes it (a topic
    /// whose partition count is not the configured one), as against a failure that may pass.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::PartitionMismatch { .. } | Self::NoPartitionCount { .. })
    }
}

/// A client of `config`'s brokers; in IAM mode it signs with `aws`.
pub async fn connect(config: &KafkaConfig, aws: Option<iam::AwsIdentity>) -> Result<Client, KafkaError> {
    let mut builder = ClientBuilder::new(config.bootstrap_servers.clone())
        .client_id("reservation-outbox")
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
            deadline: Some(REQUEST_DEADLINE),
        });
    if config.auth == KafkaAuth::Iam {
        let aws = aws.ok_or(KafkaError::NoAwsIdentity)?;
        builder = builder
            .tls_config(tls_config())
            .sasl_config(SaslConfig::Oauthbearer(OauthBearerCredentials {
                callback: Arc::new(move || {
                    let aws = aws.clone();
                    Box::pin(async move { aws.auth_token().await.map_err(Into::into) })
                }),
                authz_id: None,
                bearer_kvs: Vec::new(),
            }));
    }
    builder.build().await.map_err(|source| KafkaError::Unreachable {
        brokers: config.brokers(),
        source,
    })
}

/// TLS to MSK: the public roots (MSK's certificates are issued by Amazon's public CA), with the
/// same crypto provider as the AWS SDK's.
fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client for every partition of the topic, in partition order: for reading it.
pub async fn partitions(client: &Client, config: &KafkaConfig) -> Result<Vec<PartitionClient>, KafkaError> {
    let mut ids = client
        .partition_ids(&config.topic)
        .await
        .map_err(|source| config.unreachable(source))?
        .ok_or_else(|| config.no_topic())?;
    ids.sort_unstable();
    partition_clients(client, config, ids).await
}

/// A client for each of partitions `0..count` of the topic, in partition order: for publishing,
/// once a [`PartitionGuard`] has found that the topic has `count`.
pub async fn partitions_to_publish(
    client: &Client,
    config: &KafkaConfig,
    count: NonZeroU32,
) -> Result<Vec<PartitionClient>, KafkaError> {
    partition_clients(client, config, (0..count.get() as i32).collect()).await
}

async fn partition_clients(
    client: &Client,
    config: &KafkaConfig,
    ids: Vec<i32>,
) -> Result<Vec<PartitionClient>, KafkaError> {
    let mut clients = Vec::with_capacity(ids.len());
    for partition in ids {
        let client = client
            .partition_client(config.topic.clone(), partition, UnknownTopicHandling::Error)
            .await
            .map_err(|source| KafkaError::Partition {
                topic: config.topic.clone(),
                partition,
                brokers: config.brokers(),
                source,
            })?;
        clients.push(client);
    }
    Ok(clients)
}

/// The partition Kafka's own clients choose for `key` among `partitions`: murmur2 of the key with
/// Kafka's seed, made positive, modulo the count.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    hash as usize % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    use settings::vars_of as vars;

    #[test]
    fn the_defaults_are_a_local_broker_and_the_streams_name() {
        let config = KafkaConfig::from_vars(&HashMap::new()).unwrap();
        assert_eq!(config, KafkaConfig::plaintext("127.0.0.1:9092", "reservation-events"));
        let msk = KafkaConfig::from_vars(&vars(&[
            ("KAFKA_BOOTSTRAP_SERVERS", "b-1.msk:9098, b-2.msk:9098"),
            ("KAFKA_AUTH", "IAM"),
        ]))
        .unwrap();
        assert_eq!(msk.bootstrap_servers, ["b-1.msk:9098", "b-2.msk:9098"]);
        assert_eq!(msk.auth, KafkaAuth::Iam);
    }

    #[test]
    fn the_partition_count_is_read_when_set_and_unknown_otherwise() {
        assert_eq!(KafkaConfig::from_vars(&HashMap::new()).unwrap().partitions, None);
        let six = KafkaConfig::from_vars(&vars(&[("KAFKA_PARTITIONS", "6")])).unwrap();
        assert_eq!(six.partitions, NonZeroU32::new(6));
        for bad in ["0", "-1", "six", ""] {
            let err = KafkaConfig::from_vars(&vars(&[("KAFKA_PARTITIONS", bad)])).unwrap_err();
            assert!(err.to_string().starts_with("KAFKA_PARTITIONS must be"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let err = KafkaConfig::from_vars(&vars(&[("KAFKA_AUTH", "SCRAM")])).unwrap_err();
        assert_eq!(err.to_string(), r#"KAFKA_AUTH must be NONE or IAM, got "SCRAM""#);
        let err = KafkaConfig::from_vars(&vars(&[("KAFKA_BOOTSTRAP_SERVERS", "b-1.msk")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("KAFKA_BOOTSTRAP_SERVERS must list host:port"),
            "{err}"
        );
        let err = KafkaConfig::from_vars(&vars(&[("KAFKA_TOPIC", " ")])).unwrap_err();
        assert_eq!(err.to_string(), "KAFKA_TOPIC must not be empty");
    }

    #[test]
    fn keys_go_where_kafkas_default_partitioner_puts_them() {
        // Where librdkafka 2.16's murmur2 partitioner (the Java client's default partitioner)
        // put these keys on a 4-partition topic, read from its delivery reports.
        for (key, partition) in [
            ("a", 0),
            ("reservation", 1),
            ("01M862NN08VG1A2W9F724MN75V", 3),
            ("01KBJ6Q3X7ZP8V2M4N6R8T0W2Y", 3),
        ] {
            assert_eq!(partition_for(key.as_bytes(), 4), partition, "{key}");
        }
    }
}
