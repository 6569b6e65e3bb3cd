//! Item layouts. The reservations table is single-table (key `pk`, prefixed by item type); the
//! outbox table is keyed by (`aggregate_id`, `version`) so its items are the event envelope itself
//! plus `item_type` and the TTL attribute. See docs/adr/0001-outbox-item-layout.md.

use domain::ports::IdempotencyRecord;
use domain::{
    Capacity, EventEnvelope, IdempotencyKey, Placement, Reservation, ReservationId, ShardCount, Slot, SlotId,
};
use serde::{Deserialize, Serialize};
use settings::Regions;
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
/// On an outbox item: the Region whose API wrote it. On a global table every Region's stream
/// carries every Region's items; each Region's relay publishes only the ones born there.
pub const BORN_IN: &str = "born_in";
/// On a slot item: the Region where its inventory is written (docs/multi-region.md).
pub const HOME_REGION: &str = "home_region";
/// On a slot item while its home moves: the Region it moves to. No Region writes the slot's
/// inventory until the move names the new home and removes it.
pub const MOVING_TO: &str = "moving_to";

/// The `unpublished` mark that Region's poller looks for: `pending` in the primary Region (the
/// mark items had before Regions were recorded), `pending#<region>` in every other, so that each
/// poller's partition of the index holds only what that Region must publish.
pub fn unpublished_mark(regions: &Regions) -> String {
    if regions.is_primary() {
        UNPUBLISHED_PENDING.to_owned()
    } else {
        format!("{UNPUBLISHED_PENDING}#{}", regions.here)
    }
}

/// Where slots live: the rule the store's conditions and its answers share. A slot item without
/// a home (created before slots had one) lives in the primary Region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotHome(pub Regions);

impl SlotHome {
    /// The condition that the slot's home is this Region and it is not moving, over
    /// `#home_region` and `:here` (`moving_to` is no reserved word).
    pub fn condition(&self) -> &'static str {
        if self.0.is_primary() {
            "(attribute_not_exists(#home_region) OR #home_region = :here) AND attribute_not_exists(moving_to)"
        } else {
            "#home_region = :here AND attribute_not_exists(moving_to)"
        }
    }

    /// Why this Region may not write the slot, from the home and move its item names; `None`
    /// when it may.
    pub fn refusal(&self, home: Option<&str>, moving_to: Option<&str>) -> Option<NotHome> {
        if let Some(to) = moving_to {
            return Some(NotHome::Moving { to: to.to_owned() });
        }
        let home = home.unwrap_or(&self.0.primary);
        (home != self.0.here).then(|| NotHome::Elsewhere {
            region: home.to_owned(),
        })
    }
}

/// Why a Region may not write a slot's inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotHome {
    /// Its home is `region`.
    Elsewhere { region: String },
    /// Its home is moving to `to`: nowhere takes writes until the move ends.
    Moving { to: String },
}

impl From<NotHome> for domain::ports::CommitError {
    fn from(not_home: NotHome) -> Self {
        match not_home {
            NotHome::Elsewhere { region } => Self::HomedElsewhere { region },
            NotHome::Moving { to } => Self::HomeMoving { to },
        }
    }
}

impl From<NotHome> for domain::ports::SlotWriteError {
    fn from(not_home: NotHome) -> Self {
        match not_home {
            NotHome::Elsewhere { region } => Self::HomedElsewhere { region },
            NotHome::Moving { to } => Self::HomeMoving { to },
        }
    }
}

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

/// The key of shard `shard` of a slot: shard 0 is the slot item itself, so a slot of one shard
/// keeps the layout slots always had. (`#` is no character of a slot id: no slot's key can be a
/// shard's.)
pub fn shard_pk(slot_id: &SlotId, shard: u16) -> String {
    if shard == 0 {
        slot_pk(slot_id)
    } else {
        format!("SLOT#{slot_id}#SHARD#{shard}")
    }
}

/// The keys of every shard of a slot of `shards` shards, shard 0 (the slot item) first.
pub fn shard_pks(slot_id: &SlotId, shards: ShardCount) -> Vec<String> {
    (0..shards.get()).map(|i| shard_pk(slot_id, i)).collect()
}

pub const SLOT_ITEM_TYPE: &str = "Slot";
pub const SLOT_SHARD_ITEM_TYPE: &str = "SlotShard";
/// On the slot item of a sharded slot: how many shards hold its seats (absent: one).
pub const SHARDS: &str = "shards";
/// On each shard of a sharded slot: how many times seats came back to it (a cancel, a resize).
/// A booking that finds too few seats reads the shards twice; when no shard's count moved in
/// between, no seats came back while it read, so the slot lacked them at one moment.
pub const REFILLS: &str = "refills";

pub fn reservation_pk(reservation_id: &ReservationId) -> String {
    format!("RESERVATION#{reservation_id}")
}

pub fn idempotency_pk(key: &IdempotencyKey) -> String {
    format!("IDEMPOTENCY#{}", key.as_str())
}

/// One inventory item of a slot: the slot item itself (shard 0, `item_type` Slot, which also
/// says how many shards there are), or another shard (`item_type` SlotShard). Each carries its
/// share of the seats and the slot's home, so every booking's condition is on its own shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlotItem {
    pub pk: String,
    pub item_type: String,
    pub slot_id: SlotId,
    /// This shard's share: the whole slot's when it has one shard.
    pub capacity: Capacity,
    pub reserved: u32,
    /// Kept equal to capacity - reserved so that "enough seats left" is a plain condition
    /// (`available >= :seats`); condition expressions cannot do arithmetic.
    pub available: u32,
    /// See [`HOME_REGION`]; absent on slots created before slots had a home.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_region: Option<String>,
    /// See [`MOVING_TO`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<String>,
    /// On a slot whose home was taken over from a lost Region: that Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_over_from: Option<String>,
    /// See [`SHARDS`]: on the slot item of a sharded slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ShardCount>,
    /// On a shard other than the slot item: its number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u16>,
    /// See [`REFILLS`]: on the shards of a sharded slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refills: Option<u64>,
}

impl SlotItem {
    /// A new slot of one shard, at home in the Region that creates it.
    pub fn new(slot: &Slot, home_region: &str) -> Self {
        Self {
            pk: slot_pk(&slot.slot_id),
            item_type: SLOT_ITEM_TYPE.into(),
            slot_id: slot.slot_id.clone(),
            capacity: slot.capacity,
            reserved: slot.reserved,
            available: slot.available(),
            home_region: Some(home_region.to_owned()),
            moving_to: None,
            taken_over_from: None,
            shards: None,
            shard: None,
            refills: None,
        }
    }

    /// The shard items of a new slot split over `slot.shards`, shard 0 (the slot item) first.
    pub fn new_shards(slot: &Slot, home_region: &str) -> Vec<Self> {
        let shares = domain::slot::initial_shares(slot.capacity.get(), slot.shards);
        shares
            .into_iter()
            .enumerate()
            .map(|(i, share)| {
                let i = i as u16;
                let capacity = Capacity::new(i64::from(share)).unwrap_or(slot.capacity);
                Self {
                    pk: shard_pk(&slot.slot_id, i),
                    item_type: if i == 0 { SLOT_ITEM_TYPE } else { SLOT_SHARD_ITEM_TYPE }.into(),
                    slot_id: slot.slot_id.clone(),
                    capacity,
                    reserved: 0,
                    available: share,
                    home_region: Some(home_region.to_owned()),
                    moving_to: None,
                    taken_over_from: None,
                    shards: (i == 0).then_some(slot.shards),
                    shard: (i > 0).then_some(i),
                    refills: Some(0),
                }
            })
            .collect()
    }

    /// How many shards the slot has, read on its slot item.
    pub fn shard_count(&self) -> ShardCount {
        self.shards.unwrap_or(ShardCount::ONE)
    }

    /// The slot of one shard, or the slot as a whole from every one of its shards (the slot
    /// item first): capacities and reservations added up.
    pub fn into_slot(self) -> Slot {
        Self::slot_of(std::slice::from_ref(&self))
    }

    pub fn slot_of(shards: &[SlotItem]) -> Slot {
        let first = &shards[0];
        let capacity: u32 = shards.iter().map(|s| s.capacity.get()).sum();
        Slot {
            slot_id: first.slot_id.clone(),
            capacity: Capacity::new(i64::from(capacity)).unwrap_or(first.capacity),
            reserved: shards.iter().map(|s| s.reserved).sum(),
            shards: first.shard_count(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ReservationItem {
    pub pk: String,
    pub item_type: String,
    #[serde(flatten)]
    pub reservation: Reservation,
    /// In a sharded slot: the shards its seats came from (what a cancel gives back). Not part of
    /// the reservation's events or answers.
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub taken: Placement,
}

impl ReservationItem {
    pub fn new(reservation: &Reservation) -> Self {
        Self::placed(reservation, &Placement::default())
    }

    pub fn placed(reservation: &Reservation, placement: &Placement) -> Self {
        Self {
            pk: reservation_pk(&reservation.reservation_id),
            item_type: "Reservation".into(),
            reservation: reservation.clone(),
            taken: placement.clone(),
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
    /// See [`BORN_IN`]; absent on items written before items recorded their Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born_in: Option<String>,
}

impl OutboxItem {
    pub fn new(envelope: &EventEnvelope, expires_at: OffsetDateTime, mode: RelayMode, regions: &Regions) -> Self {
        Self {
            item_type: OUTBOX_ITEM_TYPE.into(),
            envelope: envelope.clone(),
            expires_at: expires_at.unix_timestamp(),
            unpublished: (mode == RelayMode::Polling).then(|| unpublished_mark(regions)),
            born_in: Some(regions.here.clone()),
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
