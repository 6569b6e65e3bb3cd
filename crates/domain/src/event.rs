//! Domain events and the envelope they travel in (docs/design.md, "Events on Kinesis").

use crate::ids::{EventId, ReservationId, TraceId};
use crate::reservation::{Reservation, Version};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const AGGREGATE_TYPE_RESERVATION: &str = "Reservation";

/// The `item_type` of an outbox item, which is an envelope stored in the outbox table. The store
/// writes it; the relay, its event source mapping filter and the audit match on it
/// (docs/adr/0001-outbox-item-layout.md).
pub const OUTBOX_ITEM_TYPE: &str = "OutboxEvent";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    ReservationCreated,
    ReservationCancelled,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservationCreated => "ReservationCreated",
            Self::ReservationCancelled => "ReservationCancelled",
        }
    }
}

/// Something that happened to a reservation. The payload is the reservation as it is after the
/// change, so a consumer can rebuild state from events alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    pub event_type: EventType,
    pub reservation: Reservation,
    pub occurred_at: OffsetDateTime,
}

impl DomainEvent {
    pub fn new(event_type: EventType, reservation: Reservation, occurred_at: OffsetDateTime) -> Self {
        Self {
            event_type,
            reservation,
            occurred_at,
        }
    }

    pub fn version(&self) -> Version {
        self.reservation.version
    }

    pub fn into_envelope(self, event_id: EventId, trace_id: TraceId) -> EventEnvelope {
        EventEnvelope {
            event_id,
            event_type: self.event_type,
            aggregate_type: AGGREGATE_TYPE_RESERVATION.to_owned(),
            aggregate_id: self.reservation.reservation_id.clone(),
            version: self.reservation.version,
            occurred_at: self.occurred_at,
            payload: serde_json::to_value(&self.reservation).expect("a reservation always serializes to JSON"),
            trace_id,
        }
    }
}

/// The published form of an event: the outbox item holds exactly this, and the relay puts it on
/// Kinesis as JSON with `aggregate_id` as the partition key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: EventId,
    pub event_type: EventType,
    pub aggregate_type: String,
    pub aggregate_id: ReservationId,
    pub version: Version,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub payload: serde_json::Value,
    pub trace_id: TraceId,
}

impl EventEnvelope {
    /// The reservation snapshot carried in the payload.
    pub fn reservation(&self) -> Result<Reservation, serde_json::Error> {
        Reservation::deserialize(&self.payload)
    }

    pub fn partition_key(&self) -> &str {
        self.aggregate_id.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GuestId, Seats, SlotId};
    use time::macros::datetime;

    #[test]
    fn envelope_has_exactly_the_design_fields_and_round_trips() {
        let (reservation, event) = Reservation::confirm(
            ReservationId::parse("01JRES").unwrap(),
            SlotId::parse("slot-1").unwrap(),
            GuestId::parse("guest-1").unwrap(),
            Seats::new(3).unwrap(),
            datetime!(2026-11-24 10:00:00 UTC),
        );
        let envelope = event.into_envelope(
            EventId::parse("01JEVT").unwrap(),
            TraceId::from_header_or_new(Some("t-1")),
        );
        let json = serde_json::to_value(&envelope).unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "aggregate_id",
                "aggregate_type",
                "event_id",
                "event_type",
                "occurred_at",
                "payload",
                "trace_id",
                "version"
            ]
        );
        assert_eq!(json["event_type"], "ReservationCreated");
        assert_eq!(json["aggregate_type"], "Reservation");
        assert_eq!(json["aggregate_id"], "01JRES");
        assert_eq!(json["version"], 1);
        assert_eq!(json["occurred_at"], "2026-11-24T10:00:00Z");
        assert_eq!(json["trace_id"], "t-1");
        assert_eq!(envelope.partition_key(), "01JRES");

        let back: EventEnvelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, envelope);
        assert_eq!(back.reservation().unwrap(), reservation);
    }
}
