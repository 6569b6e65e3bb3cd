//! The relay Lambda (DynamoDB Streams event source, ReportBatchItemFailures). Only wiring.

use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use relay::{KinesisSink, PublishPolicy, Relay, RelayConfig};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Time kept back from Lambda's deadline to answer before being cut off.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1_500);

fn invocation_deadline(deadline_epoch_ms: u64) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    Instant::now() + Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms)).saturating_sub(DEADLINE_MARGIN)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = RelayConfig::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let dead_letters = config.dead_letters.open(|| aws_sdk_sqs::Client::new(&sdk));
    let relay = Relay::new(
        KinesisSink::new(aws_sdk_kinesis::Client::new(&sdk), &config.events_stream),
        dead_letters,
        PublishPolicy::default(),
    )
    .with_metrics(telemetry::Emitter::Stdout);
    let relay = &relay;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let deadline = invocation_deadline(event.context.deadline);
        Ok::<DynamoDbEventResponse, Error>(relay.handle(&event.payload, deadline).await.response)
    }))
    .await
}
