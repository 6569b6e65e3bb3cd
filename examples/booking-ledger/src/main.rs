//! The booking ledger: one item per reservation in `LEDGER_TABLE`, keyed by `reservation_id`,
//! with its latest status and version and what finance reconciles by (seats, slot, guest, when
//! it was booked and cancelled, the last event). Written from the reservation events by the
//! consumer kit, on the Kinesis stream or the Kafka topic (`EVENT_BUS`).

use aws_sdk_dynamodb::types::AttributeValue;
use reservation_events_consumer::dynamodb::VersionedTable;
use reservation_events_consumer::{ApplyOutcome, Config, Consumer, ConsumerError, ReservationEvent, Version, lambda};
use std::collections::HashMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

struct Ledger(VersionedTable);

impl Consumer for Ledger {
    fn name(&self) -> &str {
        "booking-ledger"
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, ConsumerError> {
        // Written only if this is the reservation's next version: duplicates and gaps change nothing.
        self.0.put_if_next(event, entry(event)).await
    }

    async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, ConsumerError> {
        self.0.applied_version(event.reservation_id()).await
    }
}

/// The ledger's item for the reservation as `event` leaves it (the kit adds its key and version).
fn entry(event: &ReservationEvent) -> HashMap<String, AttributeValue> {
    let reservation = &event.payload;
    let text = |value: &str| AttributeValue::S(value.to_owned());
    let mut item = HashMap::from([
        ("status".to_owned(), text(reservation.status.as_str())),
        ("seats".to_owned(), AttributeValue::N(reservation.seats.to_string())),
        ("slot_id".to_owned(), text(&reservation.slot_id)),
        ("guest_id".to_owned(), text(&reservation.guest_id)),
        ("booked_at".to_owned(), text(&timestamp(reservation.created_at))),
        ("updated_at".to_owned(), text(&timestamp(event.occurred_at))),
        ("last_event_id".to_owned(), text(&event.event_id)),
        ("last_event_type".to_owned(), text(event.event_type.as_str())),
        ("trace_id".to_owned(), text(&event.trace_id)),
    ]);
    if let Some(cancelled_at) = reservation.cancelled_at {
        item.insert("cancelled_at".to_owned(), text(&timestamp(cancelled_at)));
    }
    item
}

fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_else(|_| at.to_string())
}

#[tokio::main]
async fn main() -> Result<(), lambda::Error> {
    let config = Config::from_env()?; // EVENT_BUS, DEAD_LETTER_QUEUE_URL, METRICS_NAMESPACE
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::v2026_01_12()).await;
    let table = std::env::var("LEDGER_TABLE").map_err(|_| "LEDGER_TABLE is not set: the ledger's table")?;
    let ledger = Ledger(VersionedTable::new(aws_sdk_dynamodb::Client::new(&aws), table));
    lambda::run(ledger, &config, &aws).await
}
