//! The projector Lambda: the consumer kit's loop on the bus, around the projector. Only wiring.

#[tokio::main]
async fn main() -> Result<(), reservation_events_consumer::lambda::Error> {
    consumers::run_lambda(&consumers::projector::REGISTRATION).await
}
