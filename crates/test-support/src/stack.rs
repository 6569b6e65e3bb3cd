//! The test stack: integration tests run against the real engines (DynamoDB Local, kinesis-mock)
//! through the real SDK, each on its own uniquely named tables and stream.

use adapters::{DynamoReadModel, DynamoReservationStore, RelayMode, StoreTables};
use api::{App, ReservationService, RetryPolicy};
use devstack::resources::{self, ResourceNames, Resources};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The Region a test stack stands for, whatever Region the SDK is configured with (the local
/// engines ignore it); [`crate::events`] writes outbox items born in it.
pub const TEST_REGION: &str = "us-east-1";

pub struct TestStack {
    pub sdk: aws_config::SdkConfig,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kinesis: aws_sdk_kinesis::Client,
    pub names: ResourceNames,
    /// What the API's store does for the relay: `Polling` marks new events unpublished.
    pub relay_mode: RelayMode,
    /// The Region this stack stands for and the primary one: one Region unless a test of
    /// several Regions says otherwise ([`Self::in_region`]).
    pub regions: settings::Regions,
    /// With several Regions: what this Region's DynamoDB client does for the global-table
    /// stand-in (stamps writes, serves stale reads); `None` for a stack of one Region.
    pub region_hooks: Option<std::sync::Arc<crate::global_table::RegionHooks>>,
    /// Every Region of the deployment this stack is part of (a new slot may be at home in any).
    pub deployment: Vec<String>,
    /// The notifications topic and subscriber queue, created on first use.
    channel: tokio::sync::OnceCell<devstack::channel::ChannelResources>,
}

/// A running local API; stops when dropped.
pub struct TestApi {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl TestApi {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl TestApi {
    /// GETs `path` and returns the body as JSON, whatever the status.
    pub async fn get_json(&self, http: &reqwest::Client, path: &str) -> serde_json::Value {
        http.get(self.url(path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("a JSON body")
    }

    /// Creates (or resizes) a slot; panics unless 200/201.
    pub async fn put_slot(&self, http: &reqwest::Client, slot: &str, capacity: u32) {
        self.put_sharded_slot(http, slot, capacity, 1).await;
    }

    /// Creates (or resizes) a slot whose seats are split over `shards` items; panics unless
    /// 200/201.
    pub async fn put_sharded_slot(&self, http: &reqwest::Client, slot: &str, capacity: u32, shards: u16) {
        let response = http
            .put(self.url(&format!("/slots/{slot}")))
            .json(&serde_json::json!({ "capacity": capacity, "shards": shards }))
            .send()
            .await
            .expect("PUT slot");
        assert!(
            response.status().is_success(),
            "PUT slot answered {}",
            response.status()
        );
    }

    /// Reserves one seat and returns the reservation id; panics unless 201.
    pub async fn reserve(&self, http: &reqwest::Client, slot: &str, guest: &str) -> String {
        let response = http
            .post(self.url("/reservations"))
            .json(&serde_json::json!({ "slot_id": slot, "guest_id": guest, "seats": 1 }))
            .send()
            .await
            .expect("POST reservation");
        assert_eq!(response.status(), 201);
        let body: serde_json::Value = response.json().await.expect("reservation JSON");
        body["reservation_id"].as_str().expect("reservation_id").to_owned()
    }

    /// Cancels a reservation; panics unless 200.
    pub async fn cancel(&self, http: &reqwest::Client, id: &str) {
        let response = http
            .post(self.url(&format!("/reservations/{id}/cancel")))
            .send()
            .await
            .expect("POST cancel");
        assert_eq!(response.status(), 200);
    }

    /// The pipeline suites' usual traffic: slot `slot` with 100 seats, `count` reservations of
    /// one seat by guests g0, g1, ..., then every third of them cancelled. Returns the created
    /// ids, in order, and the cancelled ones: `count` + `count`/3 (rounded up) events.
    pub async fn reserve_and_cancel_every_third(
        &self,
        http: &reqwest::Client,
        slot: &str,
        count: usize,
    ) -> (Vec<String>, BTreeSet<String>) {
        self.put_slot(http, slot, 100).await;
        let mut created = Vec::with_capacity(count);
        for i in 0..count {
            created.push(self.reserve(http, slot, &format!("g{i}")).await);
        }
        let cancelled: BTreeSet<String> = created.iter().step_by(3).cloned().collect();
        for id in &cancelled {
            self.cancel(http, id).await;
        }
        (created, cancelled)
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestStack {
    /// Provisions fresh resources on the stack the environment points at. Panics (the test
    /// fails, it is not skipped) when no local stack is configured: run `scripts/test.sh`.
    pub async fn start() -> Self {
        for var in ["AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_KINESIS"] {
            assert!(
                std::env::var(var).is_ok_and(|v| !v.is_empty()),
                "{var} is not set: integration tests need the embedded stack; run them with scripts/test.sh"
            );
        }
        let sdk = settings::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let kinesis = aws_sdk_kinesis::Client::new(&sdk);
        let resources = Resources::embedded().expect("infra/resources.json parses");
        let prefix = format!("t{}-", ulid::Ulid::new().to_string().to_lowercase());
        let names = ResourceNames::resolve(&resources, &HashMap::new(), &prefix);
        resources::provision(&dynamodb, &kinesis, &resources, &names)
            .await
            .expect("provisioning the test resources on the local stack");
        Self {
            dynamodb,
            kinesis,
            names,
            relay_mode: RelayMode::Stream,
            regions: settings::Regions::single(TEST_REGION),
            region_hooks: None,
            deployment: vec![TEST_REGION.to_owned()],
            sdk,
            channel: Default::default(),
        }
    }

    /// The same stack standing for Region `here` of a deployment whose primary is `primary`.
    /// Its DynamoDB client becomes that Region's ([`crate::global_table::region_client`]), so
    /// that a [`crate::global_table::StandInReplication`] can join it to other Regions.
    pub fn in_region(mut self, here: &str, primary: &str) -> Self {
        self.regions = settings::Regions {
            here: here.to_owned(),
            primary: primary.to_owned(),
        };
        self.deployment = self.regions.deployment_from_vars(&HashMap::new());
        let hooks = crate::global_table::RegionHooks::new(here);
        self.dynamodb = crate::global_table::region_client(&self.sdk, hooks.clone());
        self.region_hooks = Some(hooks);
        self
    }

    /// The same stack in a deployment of the Regions `all` (and its own).
    pub fn with_regions(mut self, all: &[&str]) -> Self {
        let listed = HashMap::from([("REGIONS".to_owned(), all.join(","))]);
        self.deployment = self.regions.deployment_from_vars(&listed);
        self
    }

    /// The same stack with its DynamoDB client going through the model of DynamoDB's per-item
    /// limits ([`crate::item_limits`]), and the model, which counts what it refused.
    pub async fn with_item_limits(
        mut self,
        limits: crate::item_limits::Limits,
    ) -> (Self, crate::item_limits::ItemLimitsProxy) {
        let proxy = self.item_limits(limits).await;
        let config = aws_sdk_dynamodb::config::Builder::from(&self.sdk)
            .endpoint_url(proxy.url())
            .build();
        self.dynamodb = aws_sdk_dynamodb::Client::from_conf(config);
        (self, proxy)
    }

    /// A model of DynamoDB's per-item limits in front of this stack's DynamoDB Local.
    pub async fn item_limits(&self, limits: crate::item_limits::Limits) -> crate::item_limits::ItemLimitsProxy {
        let upstream = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("checked when the stack started");
        crate::item_limits::ItemLimitsProxy::start(([127, 0, 0, 1], 0).into(), &upstream, limits)
            .await
            .expect("the item limits proxy listens on loopback")
    }

    /// The SDK configuration the stack's clients are built from.
    pub fn sdk_config(&self) -> &aws_config::SdkConfig {
        &self.sdk
    }

    /// A DynamoDB client on this stack's engine that is no Region's: its writes are not stamped
    /// and its reads are never stale.
    pub fn raw_dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk)
    }

    /// The same stack with the API marking new events for the polling publisher.
    pub fn polling(mut self) -> Self {
        self.relay_mode = RelayMode::Polling;
        self
    }

    /// The polling publisher's view of this stack's outbox table (its index and lease).
    pub fn outbox(&self) -> adapters::DynamoOutbox {
        adapters::DynamoOutbox::in_region(self.dynamodb.clone(), self.name("OUTBOX_TABLE"), &self.regions)
    }

    pub fn name(&self, var: &str) -> String {
        self.names
            .get(var)
            .unwrap_or_else(|| panic!("no resource named by {var}"))
            .to_owned()
    }

    /// The store's tables on this stack, with the default retention.
    pub fn tables(&self) -> StoreTables {
        StoreTables {
            reservations_table: self.name("RESERVATIONS_TABLE"),
            outbox_table: self.name("OUTBOX_TABLE"),
            relay_mode: self.relay_mode,
            regions: self.regions.clone(),
            slot_homes: self.deployment.clone(),
            ..StoreTables::from_vars(&HashMap::new()).expect("the defaults are valid")
        }
    }

    pub fn store(&self) -> DynamoReservationStore {
        DynamoReservationStore::new(self.dynamodb.clone(), self.tables())
    }

    /// The guest read model the projector writes and the API reads.
    pub fn read_model(&self) -> DynamoReadModel {
        DynamoReadModel::new(self.dynamodb.clone(), self.name("READ_MODEL_TABLE"))
    }

    /// Serves the API on an ephemeral loopback port with the Lambda's handler.
    pub async fn spawn_api(&self) -> TestApi {
        self.spawn_api_with_auth(api::AuthPolicy::Open, None).await
    }

    /// [`Self::spawn_api`] telling callers apart by `policy`, with `authorizer` verifying bearer
    /// tokens as API Gateway's JWT authorizer would.
    pub async fn spawn_api_with_auth(
        &self,
        policy: api::AuthPolicy,
        authorizer: Option<devstack::server::LocalJwtAuthorizer>,
    ) -> TestApi {
        let app = Arc::new(
            App::new(
                ReservationService::new(self.store(), RetryPolicy::default()),
                self.read_model(),
            )
            .with_auth(policy),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("listener address");
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(devstack::server::serve_with(
            listener,
            app,
            authorizer.map(Arc::new),
            async {
                let _ = stopped.await;
            },
        ));
        TestApi { addr, stop: Some(stop) }
    }

    /// The relay behind its event source mapping on this stack's outbox stream; `drain()` it to
    /// publish everything committed so far. Dead letters go to [`Self::dead_letter_dir`].
    pub async fn relay_mapping(
        &self,
    ) -> devstack::pipeline::RelayMapping<relay::KinesisSink, dead_letters::JsonLinesDeadLetters> {
        let arn = devstack::pipeline::outbox_stream_arn(&self.dynamodb, &self.name("OUTBOX_TABLE"))
            .await
            .expect("outbox stream");
        devstack::pipeline::relay_mapping(
            &self.sdk,
            &arn,
            &self.name("EVENTS_STREAM"),
            &self.dead_letter_dir(),
            &self.regions,
        )
    }

    /// The relay on this stack's outbox stream, publishing to `topic` on the Kafka bus.
    pub async fn relay_mapping_to_kafka(
        &self,
        topic: &crate::kafka::TestTopic,
    ) -> devstack::pipeline::RelayMapping<relay::KafkaSink, dead_letters::JsonLinesDeadLetters> {
        let arn = devstack::pipeline::outbox_stream_arn(&self.dynamodb, &self.name("OUTBOX_TABLE"))
            .await
            .expect("outbox stream");
        let sink = relay::KafkaSink::connect(&topic.config, None)
            .await
            .expect("the relay reaches the test topic");
        devstack::pipeline::relay_mapping_to(&self.sdk, &arn, sink, &self.dead_letter_dir(), &self.regions)
    }

    /// The polling publisher on this stack's outbox, polling every `interval`, with a short lease
    /// (3 s, so a test replacing a killed poller waits briefly). Pair it with [`Self::polling`].
    pub fn poller(&self, interval: std::time::Duration) -> devstack::pipeline::LocalPoller {
        devstack::pipeline::poller_to(
            self.dynamodb.clone(),
            &self.name("OUTBOX_TABLE"),
            relay::KinesisSink::new(self.kinesis.clone(), self.name("EVENTS_STREAM")),
            &self.dead_letter_dir(),
            poller_settings(interval),
            &self.regions,
        )
    }

    /// The polling publisher on this stack's outbox (as [`Self::poller`]), publishing to `topic`
    /// on the Kafka bus.
    pub async fn poller_to_kafka(
        &self,
        topic: &crate::kafka::TestTopic,
        interval: std::time::Duration,
    ) -> relay::Poller<
        adapters::DynamoOutbox,
        adapters::DynamoOutbox,
        relay::KafkaSink,
        dead_letters::JsonLinesDeadLetters,
    > {
        let sink = relay::KafkaSink::connect(&topic.config, None)
            .await
            .expect("the poller reaches the test topic");
        devstack::pipeline::poller_to(
            self.dynamodb.clone(),
            &self.name("OUTBOX_TABLE"),
            sink,
            &self.dead_letter_dir(),
            poller_settings(interval),
            &self.regions,
        )
    }

    /// The projector behind its mapping on this stack's Kinesis stream, writing this stack's read
    /// model; `drain()` it to apply everything on the stream so far.
    pub async fn projector_mapping(
        &self,
    ) -> devstack::pipeline::ConsumerMapping<consumers::Projector<DynamoReadModel>> {
        self.consumer_mapping(consumers::Projector::new(self.read_model()))
            .await
    }

    /// The notifier behind its mapping, writing this stack's notifications table.
    pub async fn notifier_mapping(
        &self,
    ) -> devstack::pipeline::ConsumerMapping<consumers::Notifier<adapters::DynamoNotifications<adapters::SnsTopic>>>
    {
        self.consumer_mapping(consumers::Notifier::new(self.notifications().await))
            .await
    }

    /// The notifier's log on this stack, publishing to this stack's topic.
    pub async fn notifications(&self) -> adapters::DynamoNotifications<adapters::SnsTopic> {
        self.notifications_through(adapters::SnsTopic::new(
            aws_sdk_sns::Client::new(&self.sdk),
            &self.channel().await.topic_arn,
        ))
    }

    /// The notifier's log on this stack, publishing through `channel` (a wrapper that injects
    /// faults around the real topic, say).
    pub fn notifications_through<C>(&self, channel: C) -> adapters::DynamoNotifications<C> {
        adapters::DynamoNotifications::new(
            self.dynamodb.clone(),
            self.name("NOTIFICATIONS_TABLE"),
            consumers::ConsumerConfig::notification_retention_from_vars(&HashMap::new()).expect("the default is valid"),
            channel,
        )
    }

    /// `name` with this stack's prefix, as its notifications topic and queue are named.
    fn channel_name(&self, name: &str) -> String {
        let prefix = self
            .name("NOTIFICATIONS_TABLE")
            .replace(settings::names::NOTIFICATIONS_TABLE.default, "");
        format!("{prefix}{name}")
    }

    /// This stack's notifications topic and its subscriber queue (SNS and SQS on moto in
    /// `scripts/test.sh`), created on first use.
    pub async fn channel(&self) -> &devstack::channel::ChannelResources {
        self.channel
            .get_or_init(|| async {
                assert!(
                    std::env::var("AWS_ENDPOINT_URL_SNS").is_ok_and(|v| !v.is_empty()),
                    "AWS_ENDPOINT_URL_SNS is not set: the notifications tests need the embedded stack's SNS; run them with scripts/test.sh"
                );
                devstack::channel::provision(
                    &aws_sdk_sns::Client::new(&self.sdk),
                    &aws_sdk_sqs::Client::new(&self.sdk),
                    &self.channel_name(settings::names::NOTIFICATIONS_TOPIC.default),
                    &self.channel_name(settings::names::NOTIFICATIONS_QUEUE.default),
                )
                .await
                .expect("creating the notifications topic and queue on the local stack")
            })
            .await
    }

    /// Every message the subscriber queue holds (received and deleted), once it stays empty for
    /// half a second.
    pub async fn received_notifications(&self) -> Vec<devstack::channel::ReceivedNotification> {
        let queue_url = self.channel().await.queue_url.clone();
        devstack::channel::receive_all(
            &aws_sdk_sqs::Client::new(&self.sdk),
            &queue_url,
            std::time::Duration::from_millis(500),
        )
        .await
        .expect("receiving from the notifications queue")
    }

    /// The variables naming this stack's resources, as a function deployed on it has them: its
    /// tables and stream, and the notifications topic's ARN.
    pub async fn vars(&self) -> HashMap<String, String> {
        let mut vars: HashMap<String, String> = self
            .names
            .as_env()
            .map(|(var, name)| (var.to_owned(), name.to_owned()))
            .collect();
        let topic_arn = self.channel().await.topic_arn.clone();
        vars.insert(settings::names::NOTIFICATIONS_TOPIC_ARN.to_owned(), topic_arn);
        vars
    }

    /// [`Self::vars`], but naming a notifications topic that no queue subscribes to, for
    /// measurements: moto delivers a FIFO topic's message to its subscribed queue inside the
    /// publish, ever slower as the queue fills (here about 230 publishes a second with no
    /// subscriber, 14 once a subscribed queue held 600), where AWS answers the publish first.
    pub async fn vars_without_subscribers(&self) -> HashMap<String, String> {
        let mut vars = self.vars().await;
        let name = self.channel_name(&format!(
            "unsubscribed-{}",
            settings::names::NOTIFICATIONS_TOPIC.default
        ));
        let topic_arn = devstack::channel::create_topic(&aws_sdk_sns::Client::new(&self.sdk), &name)
            .await
            .expect("creating a notifications topic on the local stack");
        vars.insert(settings::names::NOTIFICATIONS_TOPIC_ARN.to_owned(), topic_arn);
        vars
    }

    /// A registered consumer (`consumers::ALL`) on this stack, built as its Lambda builds it.
    pub async fn consumer(&self, registration: &consumers::Registration) -> consumers::BoxConsumer {
        let vars = self.vars().await;
        let wiring = consumers::Wiring {
            // This stack's client: its Region's on a global table, its limits' under a model.
            dynamodb: self.dynamodb.clone(),
            ..consumers::Wiring::new(&self.sdk, &vars, consumers::Publishes::Yes, telemetry::Emitter::Off)
        };
        registration
            .build(&wiring)
            .unwrap_or_else(|e| panic!("{} on the test stack: {e}", registration.name))
    }

    pub async fn consumer_mapping<C: consumers::Consumer>(
        &self,
        consumer: C,
    ) -> devstack::pipeline::ConsumerMapping<C> {
        devstack::pipeline::consumer_mapping(
            &self.sdk,
            &self.name("EVENTS_STREAM"),
            consumer,
            &self.dead_letter_dir(),
        )
        .await
        .expect("kinesis stream")
    }

    /// `consumer` behind a mapping on `topic` (the Kafka bus), as the MSK event source mapping
    /// would invoke it.
    pub async fn consumer_mapping_on_kafka<C: consumers::Consumer>(
        &self,
        topic: &crate::kafka::TestTopic,
        consumer: C,
    ) -> devstack::pipeline::KafkaConsumerMapping<C> {
        let config = devstack::pipeline::consumer_mapping_config(&format!("reservations-{}", consumer.name()));
        devstack::pipeline::consumer_mapping_on_kafka(&topic.config, consumer, &self.dead_letter_dir(), config)
            .await
            .expect("the Kafka topic")
    }

    pub fn dead_letter_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir()
            .join("reservation-outbox-tests")
            .join(self.name("EVENTS_STREAM"))
    }

    /// Every event on this stack's Kinesis stream, read from the start, parents before children;
    /// each checked against the published contract (`schemas/events/v1`), which fails the test
    /// naming the event and the field. Use [`Self::records_on_kinesis`] for a stream that holds
    /// records that are not events on purpose.
    pub async fn events_on_kinesis(&self) -> Vec<devstack::events::ReadEvent> {
        let events = self.records_on_kinesis().await;
        crate::contract::assert_events_keep_the_contract(events.iter().map(|e| e.data.as_slice()));
        events
    }

    /// Every record on this stack's Kinesis stream, unchecked.
    pub async fn records_on_kinesis(&self) -> Vec<devstack::events::ReadEvent> {
        let mut mapping = devstack::events::collector(&self.sdk, &self.name("EVENTS_STREAM"))
            .await
            .expect("kinesis stream");
        mapping.drain().await.expect("read the kinesis stream");
        mapping.function().handler().events.lock().unwrap().clone()
    }

    /// A new, empty table shaped like the one named by `var` (e.g. to rebuild a read model into).
    pub async fn create_table_like(&self, var: &str, suffix: &str) -> String {
        let resources = Resources::embedded().expect("infra/resources.json parses");
        let table = resources
            .tables
            .iter()
            .find(|t| t.name_from == var)
            .unwrap_or_else(|| panic!("no table named by {var}"));
        let name = format!("{}-{suffix}", self.name(var));
        resources::create_table(&self.dynamodb, &name, &table.properties)
            .await
            .expect("creating a table on the local stack");
        name
    }

    /// A new, empty stream shaped like the one named by `var`, active when this returns.
    pub async fn create_stream_like(&self, var: &str, suffix: &str) -> String {
        let resources = Resources::embedded().expect("infra/resources.json parses");
        let stream = resources
            .streams
            .iter()
            .find(|s| s.name_from == var)
            .unwrap_or_else(|| panic!("no stream named by {var}"));
        let name = format!("{}-{suffix}", self.name(var));
        resources::create_stream(&self.kinesis, &name, &stream.properties)
            .await
            .expect("creating a stream on the local stack");
        name
    }

    /// Reshards the Kinesis stream to `target` open shards and waits until it is active again.
    pub async fn reshard(&self, target: i32) {
        use aws_sdk_kinesis::types::{ScalingType, StreamStatus};
        let stream = self.name("EVENTS_STREAM");
        self.kinesis
            .update_shard_count()
            .stream_name(&stream)
            .target_shard_count(target)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await
            .expect("UpdateShardCount");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let summary = self
                .kinesis
                .describe_stream_summary()
                .stream_name(&stream)
                .send()
                .await
                .expect("DescribeStreamSummary");
            let description = summary.stream_description_summary().expect("summary");
            if description.stream_status() == &StreamStatus::Active && description.open_shard_count() == target {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "resharding did not finish");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Every item of a table, following pagination.
    pub async fn scan_all(&self, table: &str) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        scan_all(&self.dynamodb, table).await
    }
}

/// (reservation, versions in the order they appear on the stream), checking each record's
/// partition key is its reservation id.
pub fn versions_by_reservation(events: &[devstack::events::ReadEvent]) -> BTreeMap<String, Vec<(u64, String)>> {
    let mut by_key: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for event in events {
        let envelope = event
            .envelope
            .as_ref()
            .expect("every record on the stream is an envelope");
        assert_eq!(
            event.partition_key,
            envelope.aggregate_id.as_str(),
            "partition key = reservation id"
        );
        by_key
            .entry(event.partition_key.clone())
            .or_default()
            .push((envelope.version.get(), envelope.event_type.as_str().to_owned()));
    }
    by_key
}

/// What the stream should hold for reservations `created`, of which `cancelled` were cancelled.
pub fn expected_versions(created: &[String], cancelled: &BTreeSet<String>) -> BTreeMap<String, Vec<(u64, String)>> {
    created
        .iter()
        .map(|id| {
            let mut versions = vec![(1, "ReservationCreated".to_owned())];
            if cancelled.contains(id) {
                versions.push((2, "ReservationCancelled".to_owned()));
            }
            (id.clone(), versions)
        })
        .collect()
}

/// Signed test tokens for a local API behind [`devstack::server::LocalJwtAuthorizer`]: no network,
/// no identity provider.
pub mod tokens {
    pub const SECRET: &[u8] = b"test-secret-of-the-local-authorizer";
    pub const ISSUER: &str = "https://issuer.test";
    pub const AUDIENCE: &str = "reservations-tests";

    /// The authorizer that accepts the tokens below.
    pub fn authorizer() -> devstack::server::LocalJwtAuthorizer {
        devstack::server::LocalJwtAuthorizer::hs256(SECRET, ISSUER, AUDIENCE)
    }

    /// The JWT policy the template deploys by default.
    pub fn policy() -> api::AuthPolicy {
        api::AuthPolicy::default_jwt()
    }

    /// A token for `subject`, valid for an hour, with `extra` claims.
    pub fn token(subject: &str, extra: serde_json::Value) -> String {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = serde_json::json!({
            "sub": subject, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 3600,
        });
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .expect("a signed token")
    }
}

/// The tests' poller pace: polls every `interval`, a short lease (3 s, so a test replacing a
/// killed poller waits briefly).
fn poller_settings(interval: std::time::Duration) -> relay::PollerSettings {
    relay::PollerSettings {
        interval,
        batch_limit: 500,
        // The Lambda's margin (5 s): a poll must end within it, or the lease lapses mid-poll and
        // another poller publishes the same events again. The Lambda's Kinesis client times out
        // before that; the test's has no timeout, and on a loaded machine a put outlived a 1.5 s
        // margin (two pollers published 95 events for 90).
        lease_duration: std::time::Duration::from_secs(10),
        lease_margin: std::time::Duration::from_secs(5),
        // DynamoDB Local updates an index with the write itself.
        drain_settle: std::time::Duration::from_millis(100),
    }
}

/// Every item of `table`, following pagination, read consistently.
pub async fn scan_all(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(page.items.unwrap_or_default());
        start = page.last_evaluated_key;
        if start.is_none() {
            return items;
        }
    }
}
