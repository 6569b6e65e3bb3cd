//! What consumers of the event stream share: the rule that applies a reservation's events exactly
//! once and in version order, the events as the domain's types, and the effects the two
//! consumers derive from an event.

use crate::event::{EventEnvelope, EventType};
use crate::ids::{EventId, GuestId, ReservationId, SlotId, TraceId};
use crate::reservation::{Reservation, ReservationStatus, Version};
use crate::slot::Seats;
use crate::validation::ValidationError;
use reservation_events_consumer as contract;
use time::OffsetDateTime;

/// What became of one event at a consumer, and the ordering rule that decides it: the published
/// contract's, which every consumer, inside the product or outside it, applies events by.
pub use reservation_events_consumer::{ApplyOutcome, decide};

/// An event whose payload is a valid reservation snapshot of the event's own reservation and
/// version: what consumers act on. Anything else is malformed and dead-lettered.
#[derive(Debug, Clone, PartialEq)]
pub struct ReservationEvent {
    pub event_id: EventId,
    pub event_type: EventType,
    pub occurred_at: OffsetDateTime,
    pub trace_id: TraceId,
    pub reservation: Reservation,
}

#[derive(Debug, thiserror::Error)]
pub enum MalformedEvent {
    #[error("data is not an event envelope: {0}")]
    NotAnEnvelope(#[source] serde_json::Error),
    #[error("payload is not a reservation: {0}")]
    PayloadNotAReservation(#[source] serde_json::Error),
    #[error("payload describes reservation {payload_id} v{payload_version}, the envelope {aggregate_id} v{version}")]
    PayloadMismatch {
        aggregate_id: ReservationId,
        version: Version,
        payload_id: ReservationId,
        payload_version: Version,
    },
}

impl ReservationEvent {
    /// Decodes a record's data (the envelope JSON) and checks it is self-consistent.
    pub fn from_json(data: &[u8]) -> Result<Self, MalformedEvent> {
        let envelope: EventEnvelope = serde_json::from_slice(data).map_err(MalformedEvent::NotAnEnvelope)?;
        Self::from_envelope(envelope)
    }

    pub fn from_envelope(envelope: EventEnvelope) -> Result<Self, MalformedEvent> {
        let reservation = envelope.reservation().map_err(MalformedEvent::PayloadNotAReservation)?;
        if reservation.reservation_id != envelope.aggregate_id || reservation.version != envelope.version {
            return Err(MalformedEvent::PayloadMismatch {
                aggregate_id: envelope.aggregate_id,
                version: envelope.version,
                payload_id: reservation.reservation_id,
                payload_version: reservation.version,
            });
        }
        Ok(Self {
            event_id: envelope.event_id,
            event_type: envelope.event_type,
            occurred_at: envelope.occurred_at,
            trace_id: envelope.trace_id,
            reservation,
        })
    }

    pub fn reservation_id(&self) -> &ReservationId {
        &self.reservation.reservation_id
    }

    pub fn version(&self) -> Version {
        self.reservation.version
    }
}

/// Why an event of the published contract is not one the domain can act on: the contract lets
/// types and statuses be added that this version does not know.
#[derive(Debug, thiserror::Error)]
pub enum UnknownEvent {
    #[error("event type {0} is not one the product knows")]
    EventType(String),
    #[error("status {0} is not one the product knows")]
    Status(String),
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

impl TryFrom<&contract::ReservationEvent> for ReservationEvent {
    type Error = UnknownEvent;

    /// The domain's view of an event the consumer kit decoded (and checked against the contract).
    fn try_from(event: &contract::ReservationEvent) -> Result<Self, UnknownEvent> {
        let event_type = match &event.event_type {
            contract::EventType::ReservationCreated => EventType::ReservationCreated,
            contract::EventType::ReservationCancelled => EventType::ReservationCancelled,
            contract::EventType::Other(other) => return Err(UnknownEvent::EventType(other.clone())),
        };
        let r = &event.payload;
        let status = match &r.status {
            contract::Status::Confirmed => ReservationStatus::Confirmed,
            contract::Status::Cancelled => ReservationStatus::Cancelled,
            contract::Status::Other(other) => return Err(UnknownEvent::Status(other.clone())),
        };
        Ok(Self {
            event_id: EventId::parse(event.event_id.as_str())?,
            event_type,
            occurred_at: event.occurred_at,
            trace_id: TraceId::from_event(&event.trace_id),
            reservation: Reservation {
                reservation_id: ReservationId::parse(r.reservation_id.as_str())?,
                slot_id: SlotId::parse(r.slot_id.as_str())?,
                guest_id: GuestId::parse(r.guest_id.as_str())?,
                seats: Seats::new(i64::from(r.seats))?,
                status,
                version: r.version,
                created_at: r.created_at,
                cancelled_at: r.cancelled_at,
            },
        })
    }
}

/// A guest's view of one reservation, as the projector keeps it: the latest snapshot applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestReservation {
    pub reservation: Reservation,
    pub updated_at: OffsetDateTime,
    pub last_event_id: EventId,
}

impl GuestReservation {
    pub fn from_event(event: &ReservationEvent) -> Self {
        Self {
            reservation: event.reservation.clone(),
            updated_at: event.occurred_at,
            last_event_id: event.event_id.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    ReservationConfirmed,
    ReservationCancelled,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservationConfirmed => "ReservationConfirmed",
            Self::ReservationCancelled => "ReservationCancelled",
        }
    }
}

/// A message to a guest about one event; its id is the event's, so it can only be sent once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub notification_id: EventId,
    pub kind: NotificationKind,
    pub guest_id: GuestId,
    pub reservation_id: ReservationId,
    pub version: Version,
    pub subject: String,
    pub body: String,
    pub trace_id: TraceId,
    pub occurred_at: OffsetDateTime,
}

impl Notification {
    pub fn for_event(event: &ReservationEvent) -> Self {
        let r = &event.reservation;
        let (kind, subject, body) = match event.event_type {
            EventType::ReservationCreated => (
                NotificationKind::ReservationConfirmed,
                "Your reservation is confirmed".to_owned(),
                format!(
                    "Reservation {} for {} seat(s) in {} is confirmed.",
                    r.reservation_id,
                    r.seats.get(),
                    r.slot_id
                ),
            ),
            EventType::ReservationCancelled => (
                NotificationKind::ReservationCancelled,
                "Your reservation is cancelled".to_owned(),
                format!(
                    "Reservation {} for {} seat(s) in {} is cancelled.",
                    r.reservation_id,
                    r.seats.get(),
                    r.slot_id
                ),
            ),
        };
        Self {
            notification_id: event.event_id.clone(),
            kind,
            guest_id: r.guest_id.clone(),
            reservation_id: r.reservation_id.clone(),
            version: r.version,
            subject,
            body,
            trace_id: event.trace_id.clone(),
            occurred_at: event.occurred_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Seats, SlotId};
    use time::macros::datetime;

    fn created() -> EventEnvelope {
        let (_, event) = Reservation::confirm(
            ReservationId::parse("01JRES").unwrap(),
            SlotId::parse("dinner").unwrap(),
            GuestId::parse("ada").unwrap(),
            Seats::new(2).unwrap(),
            datetime!(2026-11-24 10:00:00 UTC),
        );
        event.into_envelope(
            EventId::parse("01JEVT").unwrap(),
            TraceId::from_header_or_new(Some("t-1")),
        )
    }

    #[test]
    fn an_envelope_becomes_a_reservation_event_and_a_confirmation() {
        let data = serde_json::to_vec(&created()).unwrap();
        let event = ReservationEvent::from_json(&data).unwrap();
        assert_eq!(event.version(), Version::FIRST);
        let notification = Notification::for_event(&event);
        assert_eq!(notification.kind, NotificationKind::ReservationConfirmed);
        assert_eq!(notification.notification_id.as_str(), "01JEVT");
        assert_eq!(notification.guest_id.as_str(), "ada");
        assert!(notification.body.contains("2 seat(s) in dinner"));
    }

    #[test]
    fn an_event_the_kit_decoded_is_the_domains_own_and_a_type_added_later_is_named() {
        let data = serde_json::to_vec(&created()).unwrap();
        let decoded = contract::decode("01JRES", &data).unwrap();
        let event = ReservationEvent::try_from(&decoded).unwrap();
        assert_eq!(event, ReservationEvent::from_json(&data).unwrap());

        let mut moved = decoded.clone();
        moved.event_type = contract::EventType::Other("ReservationMoved".into());
        let err = ReservationEvent::try_from(&moved).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event type ReservationMoved is not one the product knows"
        );
    }

    #[test]
    fn malformed_data_is_named_precisely() {
        assert!(matches!(
            ReservationEvent::from_json(b"not json"),
            Err(MalformedEvent::NotAnEnvelope(_))
        ));
        let mut envelope = created();
        envelope.payload = serde_json::json!({ "seats": "many" });
        assert!(matches!(
            ReservationEvent::from_envelope(envelope),
            Err(MalformedEvent::PayloadNotAReservation(_))
        ));
        let mut envelope = created();
        envelope.version = Version::new(3).unwrap();
        let err = ReservationEvent::from_envelope(envelope).unwrap_err();
        assert_eq!(
            err.to_string(),
            "payload describes reservation 01JRES v1, the envelope 01JRES v3"
        );
    }
}
