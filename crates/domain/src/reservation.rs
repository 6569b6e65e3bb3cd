//! Reservations and their state machine: CONFIRMED → CANCELLED, nothing else.

use crate::event::{DomainEvent, EventType};
use crate::ids::{GuestId, ReservationId, SlotId};
use crate::slot::Seats;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A reservation's version: 1 when created, +1 per change. Events carry the version after their
/// change, which is what lets consumers apply a reservation's events in order and spot gaps. The
/// published contract's own type, so the product and its consumers count alike.
pub use reservation_events_consumer::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReservationStatus {
    Confirmed,
    Cancelled,
}

impl ReservationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: ReservationId,
    pub slot_id: SlotId,
    pub guest_id: GuestId,
    pub seats: Seats,
    pub status: ReservationStatus,
    pub version: Version,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub cancelled_at: Option<OffsetDateTime>,
}

/// Cancelling is refused for a reservation that is not CONFIRMED.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reservation {reservation_id} is {status:?} and cannot be cancelled")]
pub struct NotCancellable {
    pub reservation_id: ReservationId,
    pub status: ReservationStatus,
}

impl Reservation {
    /// A new, confirmed reservation at version 1, with the event that announces it.
    pub fn confirm(
        reservation_id: ReservationId,
        slot_id: SlotId,
        guest_id: GuestId,
        seats: Seats,
        now: OffsetDateTime,
    ) -> (Self, DomainEvent) {
        let reservation = Self {
            reservation_id,
            slot_id,
            guest_id,
            seats,
            status: ReservationStatus::Confirmed,
            version: Version::FIRST,
            created_at: truncate_to_millis(now),
            cancelled_at: None,
        };
        let event = DomainEvent::new(
            EventType::ReservationCreated,
            reservation.clone(),
            reservation.created_at,
        );
        (reservation, event)
    }

    /// The cancelled successor of this reservation (version + 1), with its event.
    pub fn cancel(&self, now: OffsetDateTime) -> Result<(Self, DomainEvent), NotCancellable> {
        if self.status != ReservationStatus::Confirmed {
            return Err(NotCancellable {
                reservation_id: self.reservation_id.clone(),
                status: self.status,
            });
        }
        let now = truncate_to_millis(now);
        let cancelled = Self {
            status: ReservationStatus::Cancelled,
            version: self.version.next(),
            cancelled_at: Some(now),
            ..self.clone()
        };
        let event = DomainEvent::new(EventType::ReservationCancelled, cancelled.clone(), now);
        Ok((cancelled, event))
    }
}

/// Timestamps are kept to the millisecond so that what is stored, served and published is the
/// same value after an RFC 3339 round trip.
fn truncate_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(t.millisecond() as u32 * 1_000_000)
        .expect("milliseconds are a valid nanosecond value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn confirmed() -> Reservation {
        Reservation::confirm(
            ReservationId::parse("01J0000000000000000000000A").unwrap(),
            SlotId::parse("slot-1").unwrap(),
            GuestId::parse("guest-1").unwrap(),
            Seats::new(2).unwrap(),
            datetime!(2026-11-24 10:00:00.123456789 UTC),
        )
        .0
    }

    #[test]
    fn a_new_reservation_is_confirmed_at_version_one_and_emits_reservation_created() {
        let (reservation, event) = Reservation::confirm(
            ReservationId::parse("r1").unwrap(),
            SlotId::parse("slot-1").unwrap(),
            GuestId::parse("guest-1").unwrap(),
            Seats::new(2).unwrap(),
            datetime!(2026-11-24 10:00:00.123456789 UTC),
        );
        assert_eq!(reservation.status, ReservationStatus::Confirmed);
        assert_eq!(reservation.version, Version::FIRST);
        assert_eq!(reservation.created_at, datetime!(2026-11-24 10:00:00.123 UTC));
        assert_eq!(event.event_type, EventType::ReservationCreated);
        assert_eq!(event.reservation, reservation);
        assert_eq!(event.version(), Version::FIRST);
    }

    #[test]
    fn cancelling_a_confirmed_reservation_bumps_the_version_and_emits_reservation_cancelled() {
        let original = confirmed();
        let (cancelled, event) = original.cancel(datetime!(2026-11-24 11:00:00 UTC)).unwrap();
        assert_eq!(cancelled.status, ReservationStatus::Cancelled);
        assert_eq!(cancelled.version.get(), 2);
        assert_eq!(cancelled.cancelled_at, Some(datetime!(2026-11-24 11:00:00 UTC)));
        assert_eq!(cancelled.seats, original.seats);
        assert_eq!(event.event_type, EventType::ReservationCancelled);
        assert_eq!(event.version().get(), 2);
    }

    #[test]
    fn a_cancelled_reservation_cannot_be_cancelled_again() {
        let (cancelled, _) = confirmed().cancel(datetime!(2026-11-24 11:00:00 UTC)).unwrap();
        let err = cancelled.cancel(datetime!(2026-11-24 12:00:00 UTC)).unwrap_err();
        assert_eq!(err.status, ReservationStatus::Cancelled);
    }

    #[test]
    fn reservation_json_uses_the_api_field_names() {
        let json = serde_json::to_value(confirmed()).unwrap();
        assert_eq!(json["status"], "CONFIRMED");
        assert_eq!(json["version"], 1);
        assert_eq!(json["seats"], 2);
        assert_eq!(json["created_at"], "2026-11-24T10:00:00.123Z");
        assert!(json.get("cancelled_at").is_none());
        let back: Reservation = serde_json::from_value(json).unwrap();
        assert_eq!(back, confirmed());
    }

    #[test]
    fn version_zero_does_not_exist() {
        assert!(Version::new(0).is_none());
        assert_eq!(Version::new(3).unwrap().next().get(), 4);
    }
}
