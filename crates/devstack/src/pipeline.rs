//! The stream side of the local stack: the relay Lambda's handler behind an in-process event
//! source mapping on the outbox table's stream (or the polling publisher on the outbox's index),
//! and the consumers' handlers behind mappings on the Kinesis stream, each configured as its
//! deployed mapping is.

use adapters::DynamoOutbox;
use anyhow::{Context, Result};
use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use consumers::{Consumer, ConsumerHandler};
use dead_letters::{DeadLetters, JsonLinesDeadLetters};
use event_source_mapping::function::{Function, TypedFunction, TypedHandler};
use event_source_mapping::{
    DynamoDbStreamsSource, EventSourceMapping, FilterCriteria, FunctionError, JsonLinesOnFailure, KafkaSource,
    KinesisSource, MappingConfig, StartingPosition,
};
use relay::{EventSink, KinesisSink, Poller, PollerSettings, PublishPolicy, Relay};
use settings::Regions;
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// The relay as the Lambda calls it (functions/relay): the event's JSON in, the response out.
pub struct RelayHandler<S, D>(pub Relay<S, D>);

impl<S: EventSink, D: DeadLetters> Function for RelayHandler<S, D> {
    async fn invoke(&self, event: serde_json::Value, deadline: Instant) -> Result<serde_json::Value, FunctionError> {
        let outcome = self
            .0
            .handle(&event.to_string(), deadline)
            .await
            .map_err(|e| FunctionError::new("Runtime.UnmarshalError", e.to_string()))?;
        serde_json::to_value(outcome.response).map_err(|e| FunctionError::new("Runtime.MarshalError", e.to_string()))
    }
}

pub type RelayMapping<S, D> = EventSourceMapping<DynamoDbStreamsSource, RelayHandler<S, D>, JsonLinesOnFailure>;

/// The relay mapping's settings: the template's, for the local runner, in Region `regions.here`.
pub fn relay_mapping_config(regions: &Regions) -> MappingConfig {
    MappingConfig {
        function_name: "reservations-relay".into(),
        batch_size: 100,
        maximum_batching_window: Duration::ZERO,
        starting_position: StartingPosition::TrimHorizon,
        // The relay dead-letters poison records itself; what it gives back is transient and must
        // be retried until it succeeds, or events would be dropped (ADR 0002).
        maximum_retry_attempts: None,
        maximum_record_age: None,
        bisect_batch_on_function_error: false,
        report_batch_item_failures: true,
        filter: FilterCriteria::from_patterns(relay::outbox_insert_filters(regions))
            .expect("the relay filter is valid"),
        function_timeout: Duration::from_secs(30),
        retry_backoff: Duration::from_millis(100),
    }
}

/// The outbox table's current stream.
pub async fn outbox_stream_arn(dynamodb: &aws_sdk_dynamodb::Client, outbox_table: &str) -> Result<String> {
    let table = dynamodb.describe_table().table_name(outbox_table).send().await?;
    table
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
        .with_context(|| format!("table {outbox_table} has no stream; it must be created with a NEW_IMAGE stream"))
}

/// The relay, publishing to the Kinesis stream `events_stream`, behind a mapping on
/// `stream_arn`. Dead letters and on-failure records go to JSON-lines files under
/// `dead_letter_dir`.
pub fn relay_mapping(
    sdk: &aws_config::SdkConfig,
    stream_arn: &str,
    events_stream: &str,
    dead_letter_dir: &Path,
    regions: &Regions,
) -> RelayMapping<KinesisSink, JsonLinesDeadLetters> {
    let sink = KinesisSink::new(aws_sdk_kinesis::Client::new(sdk), events_stream);
    relay_mapping_to(sdk, stream_arn, sink, dead_letter_dir, regions)
}

/// The relay, publishing to `sink` (Kinesis or Kafka), behind a mapping on `stream_arn`; it
/// publishes the events `regions.here` must (docs/multi-region.md).
pub fn relay_mapping_to<S: EventSink>(
    sdk: &aws_config::SdkConfig,
    stream_arn: &str,
    sink: S,
    dead_letter_dir: &Path,
    regions: &Regions,
) -> RelayMapping<S, JsonLinesDeadLetters> {
    let relay = Relay::new(
        sink,
        JsonLinesDeadLetters::new(dead_letter_dir.join("relay-dead-letters.jsonl")),
        PublishPolicy::default(),
    )
    .publishing_for(regions.clone());
    EventSourceMapping::new(
        DynamoDbStreamsSource::new(aws_sdk_dynamodbstreams::Client::new(sdk), stream_arn),
        RelayHandler(relay),
        Some(JsonLinesOnFailure::new(dead_letter_dir.join("relay-on-failure.jsonl"))),
        relay_mapping_config(regions),
    )
}

/// The local polling publisher: the poller Lambda's code on `outbox_table`, publishing to the
/// Kinesis stream `events_stream`, its dead letters in a JSON-lines file under `dead_letter_dir`.
/// Its `run` plays the schedule: one long invocation polling every `settings.interval`.
pub fn poller(
    sdk: &aws_config::SdkConfig,
    outbox_table: &str,
    events_stream: &str,
    dead_letter_dir: &Path,
    settings: PollerSettings,
    regions: &Regions,
) -> LocalPoller {
    let sink = KinesisSink::new(aws_sdk_kinesis::Client::new(sdk), events_stream);
    poller_to(
        aws_sdk_dynamodb::Client::new(sdk),
        outbox_table,
        sink,
        dead_letter_dir,
        settings,
        regions,
    )
}

/// The local polling publisher, publishing to `sink` (Kinesis or Kafka), as Region
/// `regions.here`'s poller, reading and marking the outbox through `dynamodb`.
pub fn poller_to<S: EventSink>(
    dynamodb: aws_sdk_dynamodb::Client,
    outbox_table: &str,
    sink: S,
    dead_letter_dir: &Path,
    settings: PollerSettings,
    regions: &Regions,
) -> Poller<DynamoOutbox, DynamoOutbox, S, JsonLinesDeadLetters> {
    let outbox = DynamoOutbox::in_region(dynamodb, outbox_table, regions);
    Poller::new(
        outbox.clone(),
        outbox,
        sink,
        JsonLinesDeadLetters::new(dead_letter_dir.join("poller-dead-letters.jsonl")),
        PublishPolicy::default(),
        settings,
    )
}

pub type LocalPoller = Poller<DynamoOutbox, DynamoOutbox, KinesisSink, JsonLinesDeadLetters>;
/// The local polling publisher on the configured bus.
pub type BusPoller = Poller<DynamoOutbox, DynamoOutbox, relay::BusSink, JsonLinesDeadLetters>;

/// A consumer as Lambda's runtime would call it.
pub struct ConsumerFunction<C, D>(pub ConsumerHandler<C, D>);

impl<C: Consumer, D: DeadLetters> TypedHandler for ConsumerFunction<C, D> {
    type Event = KinesisEvent;
    type Response = KinesisEventResponse;

    async fn handle(&self, event: KinesisEvent, _deadline: Instant) -> Result<KinesisEventResponse, FunctionError> {
        Ok(self.0.handle(&event).await.0)
    }
}

pub type ConsumerMapping<C> =
    EventSourceMapping<KinesisSource, TypedFunction<ConsumerFunction<C, JsonLinesDeadLetters>>, JsonLinesOnFailure>;

/// A consumer mapping's settings: the template's Kinesis mappings', for the local runner. What the
/// consumer hands back may succeed later (throttling, a store error): it is retried without
/// limit. (The local Kafka runner uses them too; the deployed MSK mappings stop after
/// `KafkaConsumerRetryAttempts` instead, docs/guarantees.md.) What can never be applied
/// (malformed records, gaps) the consumer dead-letters itself (invariant 4 of docs/design.md).
pub fn consumer_mapping_config(function_name: &str) -> MappingConfig {
    MappingConfig {
        function_name: function_name.into(),
        batch_size: 100,
        maximum_batching_window: Duration::ZERO,
        starting_position: StartingPosition::TrimHorizon,
        maximum_retry_attempts: None,
        maximum_record_age: None,
        bisect_batch_on_function_error: true,
        report_batch_item_failures: true,
        filter: FilterCriteria::default(),
        function_timeout: Duration::from_secs(30),
        retry_backoff: Duration::from_millis(200),
    }
}

/// `consumer` behind a mapping on the Kinesis stream `events_stream`. Its dead letters and
/// on-failure records go to JSON-lines files named after it under `dead_letter_dir`.
pub async fn consumer_mapping<C: Consumer>(
    sdk: &aws_config::SdkConfig,
    events_stream: &str,
    consumer: C,
    dead_letter_dir: &Path,
) -> Result<ConsumerMapping<C>> {
    let config = consumer_mapping_config(&format!("reservations-{}", consumer.name()));
    consumer_mapping_with(sdk, events_stream, consumer, dead_letter_dir, config).await
}

/// [`consumer_mapping`] with other mapping settings (fault tests shorten the function timeout).
pub async fn consumer_mapping_with<C: Consumer>(
    sdk: &aws_config::SdkConfig,
    events_stream: &str,
    consumer: C,
    dead_letter_dir: &Path,
    config: MappingConfig,
) -> Result<ConsumerMapping<C>> {
    let name = consumer.name().to_owned();
    let source = KinesisSource::new(aws_sdk_kinesis::Client::new(sdk), events_stream)
        .await
        .with_context(|| format!("Kinesis stream {events_stream}"))?;
    let handler = ConsumerHandler::new(
        consumer,
        JsonLinesDeadLetters::new(dead_letter_dir.join(format!("{name}-dead-letters.jsonl"))),
    );
    Ok(EventSourceMapping::new(
        source,
        TypedFunction::new(ConsumerFunction(handler)),
        Some(JsonLinesOnFailure::new(
            dead_letter_dir.join(format!("{name}-on-failure.jsonl")),
        )),
        config,
    ))
}

/// A consumer as Lambda's runtime would call it with the MSK event source mapping's events.
pub struct KafkaConsumerFunction<C, D>(pub ConsumerHandler<C, D>);

impl<C: Consumer, D: DeadLetters> TypedHandler for KafkaConsumerFunction<C, D> {
    type Event = KafkaEvent;
    type Response = consumers::KafkaEventResponse;

    async fn handle(
        &self,
        event: KafkaEvent,
        _deadline: Instant,
    ) -> Result<consumers::KafkaEventResponse, FunctionError> {
        Ok(self.0.handle_kafka(&event).await.0)
    }
}

pub type KafkaConsumerMapping<C> =
    EventSourceMapping<KafkaSource, TypedFunction<KafkaConsumerFunction<C, JsonLinesDeadLetters>>, JsonLinesOnFailure>;

/// `consumer` behind a mapping on the Kafka topic of `kafka`, with the settings `config` (the
/// template's for the MSK event source mapping: TRIM_HORIZON, ReportBatchItemFailures, bounded
/// by nothing but the records' age locally). Dead letters and on-failure records as
/// [`consumer_mapping`].
pub async fn consumer_mapping_on_kafka<C: Consumer>(
    kafka: &kafka_bus::KafkaConfig,
    consumer: C,
    dead_letter_dir: &Path,
    config: MappingConfig,
) -> Result<KafkaConsumerMapping<C>> {
    let name = consumer.name().to_owned();
    let arn = format!("arn:aws:kafka:us-east-1:000000000000:cluster/local/{}", kafka.topic);
    let source = KafkaSource::new(kafka.clone(), arn)
        .await
        .with_context(|| format!("Kafka topic {} on {}", kafka.topic, kafka.bootstrap_servers.join(",")))?;
    let handler = ConsumerHandler::new(
        consumer,
        JsonLinesDeadLetters::new(dead_letter_dir.join(format!("{name}-dead-letters.jsonl"))),
    );
    Ok(EventSourceMapping::new(
        source,
        TypedFunction::new(KafkaConsumerFunction(handler)),
        Some(JsonLinesOnFailure::new(
            dead_letter_dir.join(format!("{name}-on-failure.jsonl")),
        )),
        config,
    ))
}
