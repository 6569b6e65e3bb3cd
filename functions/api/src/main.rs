//! The reservations API Lambda. Only wiring: config, SDK client and store are built once per
//! execution environment, then every invocation goes to `api::handle`.

use adapters::{DynamoReadModel, DynamoReservationStore};
use api::{ApiConfig, App, ReservationService, RetryPolicy};
use lambda_http::{Error, service_fn};
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = ApiConfig::from_env()?;
    // Endpoints, region and credentials come from the SDK's own configuration chain.
    let sdk_config = aws_config::load_from_env().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk_config);
    let store = DynamoReservationStore::new(dynamodb.clone(), config.store_tables());
    let guests = DynamoReadModel::new(dynamodb, &config.read_model_table);
    let app = App::new(ReservationService::new(store, RetryPolicy::default()), guests)
        .with_metrics(telemetry::Emitter::Stdout);
    let app = &app;
    lambda_http::run(service_fn(move |request| async move {
        Ok::<_, Infallible>(api::handle(app, request).await)
    }))
    .await
}
