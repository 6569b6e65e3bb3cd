//! The projector Lambda: events (Kinesis, or Kafka through MSK) → the guest read model. Only
//! wiring: the consumer kit runs it on either bus.

use adapters::DynamoReadModel;
use consumers::{ConsumerConfig, Projector};
use reservation_events_consumer::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    let config = ConsumerConfig::projector_from_env()?;
    let sdk = settings::sdk_config().await;
    let projector = Projector::new(DynamoReadModel::new(aws_sdk_dynamodb::Client::new(&sdk), &config.table));
    lambda::run(projector, &config.kit, &sdk).await
}
