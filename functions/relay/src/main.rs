//! The relay Lambda (DynamoDB Streams event source, ReportBatchItemFailures), publishing to the
//! configured bus (Kinesis or Kafka). Only wiring.

use aws_lambda_events::event::streams::DynamoDbEventResponse;
use kafka_bus::iam::AwsIdentity;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use relay::{BusSink, PublishPolicy, Relay, RelayConfig};
use serde_json::value::RawValue;
use std::time::Duration;

/// mimalloc, not glibc's malloc: the relay allocates and frees each batch's event (about 100 KB)
/// and every record's attribute maps and strings, which glibc's allocator made a large share of
/// its CPU (docs/benchmarks.md, "Relay hot path"). relay-bench declares the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Time kept back from Lambda's deadline to answer before being cut off.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1_500);

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = RelayConfig::from_env()?;
    let sdk = settings::sdk_config().await;
    let dead_letters = config.dead_letters.open(|| aws_sdk_sqs::Client::new(&sdk));
    let metrics = telemetry::Emitter::Stdout;
    let sink = BusSink::open(
        &config.bus,
        || aws_sdk_kinesis::Client::new(&sdk),
        AwsIdentity::from_sdk_config(&sdk),
    )
    .await
    .inspect_err(|error| metrics.emit(&BusSink::start_metrics(error, "relay")))?;
    let relay = Relay::new(sink, dead_letters, PublishPolicy::default())
        .with_metrics(metrics)
        .publishing_for(config.regions);
    let relay = &relay;
    // The event stays JSON: the relay reads it record by record, so that one record of the wrong
    // shape is dead-lettered instead of failing the whole batch (relay::Relay::handle).
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| async move {
        let deadline = relay::invocation_deadline(event.context.deadline, DEADLINE_MARGIN);
        let outcome = relay.handle(event.payload.get(), deadline).await?;
        Ok::<DynamoDbEventResponse, Error>(outcome.response)
    }))
    .await
}
