//! The events as the contract publishes them (`schemas/events/v1` of the reservation service):
//! an envelope whose payload is the reservation after the change.
//!
//! Decoding checks what the contract says (identifiers, bounds, the key) and that the envelope
//! and its payload describe the same reservation and version. It is lenient where the contract's
//! evolution rules ask consumers to be: unknown fields are ignored, and an event type or a status
//! added after this version of the crate decodes as [`EventType::Other`] or [`Status::Other`].

use crate::order::Version;
use serde::{Deserialize, Serialize};
use std::fmt;
use time::OffsetDateTime;

/// The version of the published contract these types follow.
pub const CONTRACT_VERSION: &str = "v1";

/// One event: the envelope, with the reservation after the change as its payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationEvent {
    /// Unique per event (a ULID), the same in every copy of it.
    pub event_id: String,
    pub event_type: EventType,
    /// `Reservation`.
    pub aggregate_type: String,
    /// The reservation's id; also the record's partition key (Kinesis) or key (Kafka).
    pub aggregate_id: String,
    /// The reservation's version after the change: (`aggregate_id`, `version`) names the event.
    pub version: Version,
    /// When the change committed.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The reservation after the change.
    pub payload: Reservation,
    /// The id of the API request that made the change: log it to follow one request end to end.
    pub trace_id: String,
}

impl ReservationEvent {
    /// The reservation this event belongs to.
    pub fn reservation_id(&self) -> &str {
        &self.aggregate_id
    }
}

/// A reservation as an event carries it: its state after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: String,
    pub slot_id: String,
    pub guest_id: String,
    /// 1 to 1,000.
    pub seats: u32,
    pub status: Status,
    pub version: Version,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Set once the reservation is cancelled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub cancelled_at: Option<OffsetDateTime>,
}

/// What happened. Types may be added within the contract's version: those decode as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum EventType {
    /// A reservation was confirmed (version 1).
    ReservationCreated,
    /// A confirmed reservation was cancelled; its seats went back to the slot.
    ReservationCancelled,
    /// A type this version of the crate does not know.
    Other(String),
}

impl EventType {
    pub fn as_str(&self) -> &str {
        match self {
            Self::ReservationCreated => "ReservationCreated",
            Self::ReservationCancelled => "ReservationCancelled",
            Self::Other(other) => other,
        }
    }
}

impl From<String> for EventType {
    fn from(value: String) -> Self {
        match value.as_str() {
            "ReservationCreated" => Self::ReservationCreated,
            "ReservationCancelled" => Self::ReservationCancelled,
            _ => Self::Other(value),
        }
    }
}

impl From<EventType> for String {
    fn from(value: EventType) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reservation's status. Values may be added within the contract's version: those decode as
/// `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Status {
    Confirmed,
    Cancelled,
    /// A status this version of the crate does not know.
    Other(String),
}

impl Status {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Other(other) => other,
        }
    }
}

impl From<String> for Status {
    fn from(value: String) -> Self {
        match value.as_str() {
            "CONFIRMED" => Self::Confirmed,
            "CANCELLED" => Self::Cancelled,
            _ => Self::Other(value),
        }
    }
}

impl From<Status> for String {
    fn from(value: Status) -> Self {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a record is not an event of the contract. Such a record can never be applied as it is:
/// the handler dead-letters it, whole, with this as the reason.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("data is not an event envelope: {0}")]
    NotAnEnvelope(#[source] serde_json::Error),
    #[error("payload is not a reservation: {0}")]
    PayloadNotAReservation(#[source] serde_json::Error),
    /// A field breaks the contract (an identifier, a bound).
    #[error("{field} {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("payload describes reservation {payload_id} v{payload_version}, the envelope {aggregate_id} v{version}")]
    PayloadMismatch {
        aggregate_id: String,
        version: Version,
        payload_id: String,
        payload_version: Version,
    },
    /// Events are keyed by their reservation, which is what keeps a reservation's events in one
    /// shard or partition, in order. A record keyed otherwise has no order to rely on.
    #[error("partition key {key:?} is not the event's reservation id {aggregate_id}")]
    KeyMismatch { key: String, aggregate_id: String },
}

/// The envelope with its payload still undecoded, so that a bad payload is named as such.
#[derive(Deserialize)]
struct Envelope {
    event_id: String,
    event_type: EventType,
    aggregate_type: String,
    aggregate_id: String,
    version: Version,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    payload: serde_json::Value,
    trace_id: String,
}

/// The event in a record's data, checked against its key (the partition key on Kinesis, the
/// record key on Kafka): the reservation id.
pub fn decode(key: &str, data: &[u8]) -> Result<ReservationEvent, DecodeError> {
    let envelope: Envelope = serde_json::from_slice(data).map_err(DecodeError::NotAnEnvelope)?;
    let payload = Reservation::deserialize(&envelope.payload).map_err(DecodeError::PayloadNotAReservation)?;
    let event = ReservationEvent {
        event_id: envelope.event_id,
        event_type: envelope.event_type,
        aggregate_type: envelope.aggregate_type,
        aggregate_id: envelope.aggregate_id,
        version: envelope.version,
        occurred_at: envelope.occurred_at,
        payload,
        trace_id: envelope.trace_id,
    };
    event.check()?;
    if event.aggregate_id != key {
        return Err(DecodeError::KeyMismatch {
            key: key.to_owned(),
            aggregate_id: event.aggregate_id,
        });
    }
    Ok(event)
}

impl ReservationEvent {
    /// What the contract says beyond the JSON types, and that envelope and payload agree.
    fn check(&self) -> Result<(), DecodeError> {
        let r = &self.payload;
        check_id("event_id", &self.event_id, 64)?;
        check_id("aggregate_id", &self.aggregate_id, 64)?;
        check_id("payload.reservation_id", &r.reservation_id, 64)?;
        check_id("payload.slot_id", &r.slot_id, 64)?;
        check_id("payload.guest_id", &r.guest_id, 128)?;
        if self.trace_id.is_empty() || self.trace_id.chars().count() > 256 {
            return Err(invalid("trace_id", "must be 1 to 256 characters"));
        }
        if !(1..=1000).contains(&r.seats) {
            return Err(invalid("payload.seats", format!("must be 1 to 1000, got {}", r.seats)));
        }
        if r.reservation_id != self.aggregate_id || r.version != self.version {
            return Err(DecodeError::PayloadMismatch {
                aggregate_id: self.aggregate_id.clone(),
                version: self.version,
                payload_id: r.reservation_id.clone(),
                payload_version: r.version,
            });
        }
        Ok(())
    }
}

fn invalid(field: &'static str, problem: impl Into<String>) -> DecodeError {
    DecodeError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// The contract's ids: 1 to `max` of ASCII letters, digits and `- _ . :`.
fn check_id(field: &'static str, value: &str, max: usize) -> Result<(), DecodeError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(invalid(
            field,
            format!("contains {bad:?}; allowed are letters, digits and - _ . :"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created(id: &str) -> serde_json::Value {
        json!({
            "event_id": "01JEVT", "event_type": "ReservationCreated", "aggregate_type": "Reservation",
            "aggregate_id": id, "version": 1, "occurred_at": "2026-11-24T10:00:00.123Z",
            "payload": { "reservation_id": id, "slot_id": "dinner", "guest_id": "ada", "seats": 2,
                         "status": "CONFIRMED", "version": 1, "created_at": "2026-11-24T10:00:00.123Z" },
            "trace_id": "t-1"
        })
    }

    fn data(value: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap()
    }

    #[test]
    fn an_envelope_decodes_into_a_typed_event_and_serializes_back_the_same() {
        let value = created("R1");
        let event = decode("R1", &data(&value)).unwrap();
        assert_eq!(event.event_type, EventType::ReservationCreated);
        assert_eq!(event.payload.status, Status::Confirmed);
        assert_eq!(event.version, Version::FIRST);
        assert_eq!(event.reservation_id(), "R1");
        assert_eq!(serde_json::to_value(&event).unwrap(), value);
    }

    #[test]
    fn types_and_statuses_added_later_decode_as_other_and_unknown_fields_are_ignored() {
        let mut value = created("R1");
        value["event_type"] = json!("ReservationMoved");
        value["payload"]["status"] = json!("MOVED");
        value["region"] = json!("eu-west-1");
        let event = decode("R1", &data(&value)).unwrap();
        assert_eq!(event.event_type, EventType::Other("ReservationMoved".into()));
        assert_eq!(event.payload.status.as_str(), "MOVED");
    }

    #[test]
    fn what_breaks_the_contract_is_named() {
        let reason = |value: serde_json::Value, key: &str| decode(key, &data(&value)).unwrap_err().to_string();
        assert!(reason(json!("text"), "R1").starts_with("data is not an event envelope"));
        let mut bad = created("R1");
        bad["payload"]["seats"] = json!("many");
        assert!(reason(bad, "R1").starts_with("payload is not a reservation"));
        let mut bad = created("R1");
        bad["payload"]["guest_id"] = json!("a b");
        assert_eq!(
            reason(bad, "R1"),
            "payload.guest_id contains ' '; allowed are letters, digits and - _ . :"
        );
        let mut bad = created("R1");
        bad["payload"]["seats"] = json!(1001);
        assert_eq!(reason(bad, "R1"), "payload.seats must be 1 to 1000, got 1001");
        let mut bad = created("R1");
        bad["version"] = json!(0);
        assert!(reason(bad, "R1").starts_with("data is not an event envelope"));
        let mut bad = created("R1");
        bad["payload"]["version"] = json!(7);
        assert_eq!(
            reason(bad, "R1"),
            "payload describes reservation R1 v7, the envelope R1 v1"
        );
        assert_eq!(
            reason(created("R1"), "R2"),
            "partition key \"R2\" is not the event's reservation id R1"
        );
    }
}
