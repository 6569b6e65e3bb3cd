//! The reservations API Lambda. Only wiring: config, SDK client and store are built once per
//! execution environment, then every invocation goes to `api::handle`.

use lambda_http::{Error, service_fn};
use reservations_api::ApiConfig;
use std::convert::Infallible;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = ApiConfig::from_env()?;
    // Endpoints, region and credentials come from the SDK's own configuration chain.
    let sdk_config = settings::sdk_config().await;
    let app = reservations_api::app(aws_sdk_dynamodb::Client::new(&sdk_config), &config)
        .with_metrics(telemetry::Emitter::Stdout);
    let app = &app;
    lambda_http::run(service_fn(move |request| async move {
        Ok::<_, Infallible>(api::handle(app, request).await)
    }))
    .await
}
