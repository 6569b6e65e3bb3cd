//! The notifier Lambda: events (Kinesis, or Kafka through MSK) → one message per event on the
//! notifications SNS FIFO topic, recorded in the notifications table. Only wiring.

use adapters::{DynamoNotifications, SnsTopic};
use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use consumers::{ConsumerHandler, KafkaEventResponse, Notifier, NotifierConfig};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use settings::EventBus;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = NotifierConfig::from_env()?;
    let bus = config.consumer.bus;
    let sdk = settings::sdk_config().await;
    let notifications = DynamoNotifications::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &config.consumer.table,
        config.consumer.notification_retention,
        SnsTopic::new(aws_sdk_sns::Client::new(&sdk), &config.topic_arn),
    )
    .with_metrics(telemetry::Emitter::Stdout);
    let handler = ConsumerHandler::new(
        Notifier::new(notifications),
        config.consumer.dead_letters.open(|| aws_sdk_sqs::Client::new(&sdk)),
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
