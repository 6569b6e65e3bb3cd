//! The notifier Lambda: the consumer kit's loop on the bus, around the notifier. Only wiring.

#[tokio::main]
async fn main() -> Result<(), reservation_events_consumer::lambda::Error> {
    consumers::run_lambda(&consumers::notifier::REGISTRATION).await
}
