//! The polling publisher Lambda. An EventBridge schedule invokes it every minute and it polls at
//! POLL_INTERVAL_MS until just before its deadline; invoked with `{"sweep_since": "<RFC 3339>"}`
//! it runs the recovery sweep instead. Only wiring.

use adapters::DynamoOutbox;
use aws_config::timeout::TimeoutConfig;
use kafka_bus::iam::AwsIdentity;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use relay::{BusSink, Poller, PollerConfig, PublishPolicy, RunStats};
use std::time::Duration;

/// Time kept back from Lambda's deadline to release the lease and answer.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);
/// Bounds a PutRecords call or a Kafka produce with its retries; below the poller's lease margin,
/// so a put still in flight lands before the lease can pass to another poller.
const PUT_TIMEOUT: Duration = Duration::from_secs(4);

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = PollerConfig::from_env()?;
    let sdk = settings::sdk_config().await;
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(&sdk)
            .timeout_config(TimeoutConfig::builder().operation_timeout(PUT_TIMEOUT).build())
            .build(),
    );
    let outbox = DynamoOutbox::in_region(
        aws_sdk_dynamodb::Client::new(&sdk),
        &config.outbox_table,
        &config.relay.regions,
    );
    let dead_letters = config.relay.dead_letters.open(|| aws_sdk_sqs::Client::new(&sdk));
    let metrics = telemetry::Emitter::Stdout;
    let sink = BusSink::open(&config.relay.bus, || kinesis, AwsIdentity::from_sdk_config(&sdk))
        .await
        .inspect_err(|error| metrics.emit(&BusSink::start_metrics(error, "poller")))?;
    let sink = match sink {
        BusSink::Kafka(kafka) => BusSink::Kafka(kafka.with_produce_timeout(PUT_TIMEOUT)),
        kinesis => kinesis,
    };
    let poller = Poller::new(
        outbox.clone(),
        outbox,
        sink,
        dead_letters,
        PublishPolicy::default(),
        config.settings,
    )
    .with_metrics(metrics);
    let poller = &poller;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let deadline = relay::invocation_deadline(event.context.deadline, DEADLINE_MARGIN);
        Ok::<RunStats, Error>(poller.invoke(&event.payload, deadline).await?)
    }))
    .await
}
