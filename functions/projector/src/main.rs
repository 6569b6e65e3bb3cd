//! The projector Lambda: Kinesis events → the guest read model. Only wiring.

use adapters::DynamoReadModel;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use consumers::{ConsumerConfig, ConsumerHandler, Projector};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = ConsumerConfig::projector_from_env()?;
    let sdk = settings::sdk_config().await;
    let handler = ConsumerHandler::new(
        Projector::new(DynamoReadModel::new(aws_sdk_dynamodb::Client::new(&sdk), &config.table)),
        config.dead_letters.open(|| aws_sdk_sqs::Client::new(&sdk)),
    )
    .with_metrics(telemetry::Emitter::Stdout);
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| async move {
        Ok::<KinesisEventResponse, Error>(handler.handle(&event.payload).await.0)
    }))
    .await
}
