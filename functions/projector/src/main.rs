//! The projector Lambda: events (Kinesis, or Kafka through MSK) → the guest read model. Only
//! wiring.

use adapters::DynamoReadModel;
use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use consumers::{ConsumerConfig, ConsumerHandler, KafkaEventResponse, Projector};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use settings::EventBus;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = ConsumerConfig::projector_from_env()?;
    let bus = config.bus;
    let sdk = settings::sdk_config().await;
    let handler = ConsumerHandler::new(
        Projector::new(DynamoReadModel::new(aws_sdk_dynamodb::Client::new(&sdk), &config.table)),
        config.dead_letters.open(|| aws_sdk_sqs::Client::new(&sdk)),
    )
    .with_metrics(telemetry::Emitter::Stdout);
    let handler = &handler;
    // The bus decides the events: Kinesis batches, or batches of the MSK event source mapping.
    match bus {
        // Boxed: two runtimes' futures in one async block overflow the compiler's layout depth.
        EventBus::Kinesis => {
            Box::pin(lambda_runtime::run(service_fn(
                move |event: LambdaEvent<KinesisEvent>| async move {
                    Ok::<KinesisEventResponse, Error>(handler.handle(&event.payload).await.0)
                },
            )))
            .await
        }
        EventBus::Kafka => {
            Box::pin(lambda_runtime::run(service_fn(
                move |event: LambdaEvent<KafkaEvent>| async move {
                    Ok::<KafkaEventResponse, Error>(handler.handle_kafka(&event.payload).await.0)
                },
            )))
            .await
        }
    }
}
