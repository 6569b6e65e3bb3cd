//! The notifier Lambda: events (Kinesis, or Kafka through MSK) → one message per event on the
//! notifications SNS FIFO topic, recorded in the notifications table. Only wiring: the consumer
//! kit runs it on either bus.

use adapters::{DynamoNotifications, SnsTopic};
use consumers::{Notifier, NotifierConfig};
use reservation_events_consumer::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    let config = NotifierConfig::from_env()?;
    let sdk = settings::sdk_config().await;
    let notifications = DynamoNotifications::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        &config.consumer.table,
        config.consumer.notification_retention,
        SnsTopic::new(aws_sdk_sns::Client::new(&sdk), &config.topic_arn),
    )
    .with_metrics(telemetry::Emitter::Stdout);
    lambda::run(Notifier::new(notifications), &config.consumer.kit, &sdk).await
}
