//! Item layouts. The reservations table is single-table (key `pk`, prefixed by item type); the
//! outbox table is keyed by (`aggregate_id`, `version`) so its items are the event envelope itself
//! plus `item_type` and the TTL attribute. See docs/adr/0001-outbox-item-layout.md.

use domain::ports::IdempotencyRecord;
use domain::{Capacity, EventEnvelope, IdempotencyKey, Reservation, ReservationId, Slot, SlotId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const PK: &str = "pk";
pub const OUTBOX_PARTITION_KEY: &str = "aggregate_id";
pub const OUTBOX_SORT_KEY: &str = "version";
/// TTL attribute (epoch seconds) on outbox and idempotency items.
pub const EXPIRES_AT: &str = "expires_at";
pub use domain::OUTBOX_ITEM_TYPE;
/// Set on an outbox item, in polling mode, until the polling publisher has published it. The
/// sparse index [`UNPUBLISHED_INDEX`] holds exactly the items that have it, oldest event first
/// (docs/adr/0004-polling-publisher.md).
pub const UNPUBLISHED: &str = "unpublished";
pub const UNPUBLISHED_PENDING: &str = "pending";
pub const UNPUBLISHED_INDEX: &str = "unpublished-events";

/// Which relay publishes the outbox, chosen at deploy time (`RELAY_MODE`, the template's
/// `RelayMode`). Only polling needs the API to mark new events unpublished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RelayMode {
    /// DynamoDB Streams → relay Lambda (CDC).
    #[default]
    Stream,
    /// A scheduled poller querying [`UNPUBLISHED_INDEX`].
    Polling,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RELAY_MODE must be \"stream\" or \"polling\", got {0:?}")]
pub struct UnknownRelayMode(pub String);

impl std::str::FromStr for RelayMode {
    type Err = UnknownRelayMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "stream" => Ok(Self::Stream),
            "polling" => Ok(Self::Polling),
            other => Err(UnknownRelayMode(other.to_owned())),
        }
    }
}

impl std::fmt::Display for RelayMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stream => "stream",
            Self::Polling => "polling",
        })
    }
}

pub fn slot_pk(slot_id: &SlotId) -> String {
    format!("SLOT#{slot_id}")
}

pub fn reservation_pk(reservation_id: &ReservationId) -> String {
    format!("RESERVATION#{reservation_id}")
}

pub fn idempotency_pk(key: &IdempotencyKey) -> String {
    format!("IDEMPOTENCY#{}", key.as_str())
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SlotItem {
    pub pk: String,
    pub item_type: String,
    pub slot_id: SlotId,
    pub capacity: Capacity,
    pub reserved: u32,
    /// Kept equal to capacity - reserved so that "enough seats left" is a plain condition
    /// (`available >= :seats`); condition expressions cannot do arithmetic.
    pub available: u32,
}

impl SlotItem {
    pub fn new(slot: &Slot) -> Self {
        Self {
            pk: slot_pk(&slot.slot_id),
            item_type: "Slot".into(),
            slot_id: slot.slot_id.clone(),
            capacity: slot.capacity,
            reserved: slot.reserved,
            available: slot.available(),
        }
    }

    pub fn into_slot(self) -> Slot {
        Slot {
            slot_id: self.slot_id,
            capacity: self.capacity,
            reserved: self.reserved,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReservationItem {
    pub pk: String,
    pub item_type: String,
    #[serde(flatten)]
    pub reservation: Reservation,
}

impl ReservationItem {
    pub fn new(reservation: &Reservation) -> Self {
        Self {
            pk: reservation_pk(&reservation.reservation_id),
            item_type: "Reservation".into(),
            reservation: reservation.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OutboxItem {
    pub item_type: String,
    #[serde(flatten)]
    pub envelope: EventEnvelope,
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpublished: Option<String>,
}

impl OutboxItem {
    pub fn new(envelope: &EventEnvelope, expires_at: OffsetDateTime, mode: RelayMode) -> Self {
        Self {
            item_type: OUTBOX_ITEM_TYPE.into(),
            envelope: envelope.clone(),
            expires_at: expires_at.unix_timestamp(),
            unpublished: (mode == RelayMode::Polling).then(|| UNPUBLISHED_PENDING.to_owned()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IdempotencyItem {
    pub pk: String,
    pub item_type: String,
    pub idempotency_key: IdempotencyKey,
    pub fingerprint: String,
    pub response_status: u16,
    pub response_body: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub expires_at: i64,
}

impl IdempotencyItem {
    pub fn new(record: &IdempotencyRecord, expires_at: OffsetDateTime) -> Self {
        Self {
            pk: idempotency_pk(&record.key),
            item_type: "IdempotencyRecord".into(),
            idempotency_key: record.key.clone(),
            fingerprint: record.fingerprint.clone(),
            response_status: record.response_status,
            response_body: record.response_body.clone(),
            created_at: record.created_at,
            expires_at: expires_at.unix_timestamp(),
        }
    }

    pub fn into_record(self) -> IdempotencyRecord {
        IdempotencyRecord {
            key: self.idempotency_key,
            fingerprint: self.fingerprint,
            response_status: self.response_status,
            response_body: self.response_body,
            created_at: self.created_at,
        }
    }
}
