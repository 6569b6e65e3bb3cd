//! What the application needs from storage, one narrow capability per trait, so each function
//! gets only the access its IAM policy grants. Adapters implement these; tests use fakes.

use crate::consumer::{ApplyOutcome, GuestReservation, Notification};
use crate::event::EventEnvelope;
use crate::ids::{GuestId, IdempotencyKey, RegionName, ReservationId, SlotId};
use crate::reservation::{Reservation, Version};
use crate::slot::{Capacity, Placement, ShardCount, Slot};
use std::error::Error as StdError;
use std::future::Future;
use time::OffsetDateTime;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store call failed, coarse enough for the caller to choose a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The store asked us to slow down (throughput exceeded, request limit): worth a retry later.
    Throttled,
    /// Another writer held or changed the same items at the same moment (a transaction
    /// conflict, a transaction in progress): worth a retry soon. Contention, not load.
    Contended,
    /// The store refused the request itself (an item over its size limit, an invalid key):
    /// the same request can never succeed.
    Rejected,
    /// Anything else: a bug, a permission problem, a network failure the SDK gave up on.
    Other,
}

/// A storage failure that is not a business outcome. Keeps the SDK error as its source.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({kind:?})")]
pub struct StoreError {
    pub kind: StoreErrorKind,
    pub operation: &'static str,
    /// The AWS request id, when the service answered, for support cases and log searches.
    pub aws_request_id: Option<String>,
    #[source]
    pub source: BoxError,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, operation: &'static str, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            operation,
            aws_request_id: None,
            source: source.into(),
        }
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.aws_request_id = request_id;
        self
    }
}

/// A consumer's store failure, as the consumer kit acts on it: refused for good is
/// dead-lettered, contention and everything else retried.
impl From<StoreError> for reservation_events_consumer::ConsumerError {
    fn from(error: StoreError) -> Self {
        use reservation_events_consumer::ErrorKind;
        let kind = match error.kind {
            StoreErrorKind::Rejected => ErrorKind::Rejected,
            StoreErrorKind::Contended => ErrorKind::Contended,
            StoreErrorKind::Throttled | StoreErrorKind::Other => ErrorKind::Retry,
        };
        Self::new(kind, error)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotWrite {
    Created(Slot),
    Updated(Slot),
}

#[derive(Debug, thiserror::Error)]
pub enum SlotWriteError {
    #[error("capacity {requested} is below the {reserved} seats already reserved")]
    CapacityBelowReserved { requested: u32, reserved: u32 },
    #[error("the slot's home is Region {region}")]
    HomedElsewhere { region: String },
    #[error("the slot's home is moving to Region {to}")]
    HomeMoving { to: String },
    /// The slot does not exist here, and only the primary Region creates slots.
    #[error("new slots are created in the primary Region {primary}")]
    CreatedInPrimary { primary: String },
    /// The request names a home the existing slot does not have.
    #[error("the slot is at home in Region {home}")]
    HomeDiffers { home: String },
    #[error("Region {region} is not one of this deployment's ({})", known.join(", "))]
    UnknownRegion { region: String, known: Vec<String> },
    /// The request names another shard count than the slot has: it is fixed at creation.
    #[error("the slot has {shards} shards, fixed when it was created")]
    ShardsDiffer { shards: u16 },
    /// Bookings kept changing the slot's shards while the resize tried to commit.
    #[error("conflicting concurrent transactions")]
    Contention,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A client's idempotent request and the answer it got, stored with the change it caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key: IdempotencyKey,
    /// Hash of the request (method, route, canonical body): tells a retry from a reused key.
    pub fingerprint: String,
    pub response_status: u16,
    pub response_body: String,
    pub created_at: OffsetDateTime,
}

/// Everything a new reservation commits at once: inventory, reservation, outbox event, and the
/// idempotency record when the client sent a key.
#[derive(Debug, Clone)]
pub struct NewReservation {
    pub reservation: Reservation,
    pub event: EventEnvelope,
    pub idempotency: Option<IdempotencyRecord>,
}

/// A cancellation commits the successor of `current` (whose version it is conditional on), the
/// seats back to the shards they came from (`placement`), and the outbox event, at once.
#[derive(Debug, Clone)]
pub struct Cancellation {
    pub current: Reservation,
    pub placement: Placement,
    pub cancelled: Reservation,
    pub event: EventEnvelope,
}

/// A reservation as stored, with where its seats came from (what a cancel gives back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub reservation: Reservation,
    pub placement: Placement,
}

/// Why a reservation change did not commit. Nothing of it was written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("slot does not exist")]
    SlotNotFound,
    #[error("not enough seats left in the slot")]
    SoldOut,
    #[error("the reservation changed since it was read")]
    ReservationChanged,
    #[error("the idempotency key was used by a request that committed first")]
    IdempotencyKeyTaken,
    /// Another transaction touched the same items at the same moment; trying again may succeed.
    #[error("conflicting concurrent transaction")]
    Contention,
    /// The slot's inventory is written only in its home Region (docs/multi-region.md), and
    /// that is `region`, not this one.
    #[error("the slot's home is Region {region}")]
    HomedElsewhere { region: String },
    /// The slot's home is moving to `to` (docs/multi-region.md): no Region writes its
    /// inventory until the move ends, in a moment.
    #[error("the slot's home is moving to Region {to}")]
    HomeMoving { to: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub trait SlotStore: Send + Sync {
    fn get_slot(&self, slot_id: &SlotId) -> impl Future<Output = Result<Option<Slot>, StoreError>> + Send;

    /// Creates the slot, at home in `home` (else in the Region that creates it), its seats split
    /// over `shards` items (one when `None`), or changes its capacity if it exists, never below
    /// what is reserved. With several Regions only the primary creates slots, so that a slot's
    /// home is decided once (docs/multi-region.md). A slot's shard count is fixed at creation.
    fn put_slot(
        &self,
        slot_id: &SlotId,
        capacity: Capacity,
        home: Option<&RegionName>,
        shards: Option<ShardCount>,
    ) -> impl Future<Output = Result<SlotWrite, SlotWriteError>> + Send;
}

pub trait ReservationStore: Send + Sync {
    /// The reservation and where its seats came from.
    fn get_booking(
        &self,
        reservation_id: &ReservationId,
    ) -> impl Future<Output = Result<Option<Booking>, StoreError>> + Send;

    fn get_reservation(
        &self,
        reservation_id: &ReservationId,
    ) -> impl Future<Output = Result<Option<Reservation>, StoreError>> + Send {
        async move { Ok(self.get_booking(reservation_id).await?.map(|b| b.reservation)) }
    }

    fn create_reservation(&self, change: &NewReservation) -> impl Future<Output = Result<(), CommitError>> + Send;

    fn cancel_reservation(&self, change: &Cancellation) -> impl Future<Output = Result<(), CommitError>> + Send;
}

pub trait IdempotencyStore: Send + Sync {
    fn get_idempotency_record(
        &self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;
}

/// One page of a guest's reservations, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    /// Continue after this reservation (the last one of the previous page).
    pub after: Option<ReservationId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_after: Option<ReservationId>,
}

/// The projector's write side: the guest read model, changed only in version order.
pub trait ReadModelStore: Send + Sync {
    /// Writes `view` iff its version is the next one for that reservation (conditional write):
    /// a duplicate or a gap changes nothing.
    fn apply(&self, view: &GuestReservation) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send;

    /// The version last applied for this guest's reservation (for dry runs).
    fn applied_version(
        &self,
        guest_id: &GuestId,
        reservation_id: &ReservationId,
    ) -> impl Future<Output = Result<Option<Version>, StoreError>> + Send;
}

/// The API's read side of the guest read model.
pub trait GuestReservationsReader: Send + Sync {
    fn guest_reservations(
        &self,
        guest_id: &GuestId,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<GuestReservation>, StoreError>> + Send;
}

/// Where the notifier's messages go. Implementations send a notification only when its version is
/// the reservation's next one at the notifier, atomically with recording that, so each event is
/// notified once, in order.
pub trait NotificationSender: Send + Sync {
    fn send_once(&self, notification: &Notification) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send;

    /// The version last notified for this reservation (for dry runs).
    fn notified_version(
        &self,
        reservation_id: &ReservationId,
    ) -> impl Future<Output = Result<Option<Version>, StoreError>> + Send;
}

/// Where a notification leaves the system (a topic other systems subscribe to). A publish may be
/// repeated for the same notification after a crash; the channel deduplicates by
/// `notification_id` for as long as it can ([`NotificationChannel::dedup_window`]).
pub trait NotificationChannel: Send + Sync {
    fn publish(&self, notification: &Notification) -> impl Future<Output = Result<Delivery, StoreError>> + Send;

    /// How long after a first publish a repeat of it is absorbed by the channel.
    fn dedup_window(&self) -> time::Duration;
}

/// The channel's receipt for one published notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    /// The channel's order within the reservation's message group, when it gives one.
    pub sequence_number: Option<String>,
}

/// Shared handles: one store behind several consumers (a replay next to the live one, tests).
impl<T: ReadModelStore> ReadModelStore for std::sync::Arc<T> {
    fn apply(&self, view: &GuestReservation) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send {
        (**self).apply(view)
    }

    fn applied_version(
        &self,
        guest_id: &GuestId,
        reservation_id: &ReservationId,
    ) -> impl Future<Output = Result<Option<Version>, StoreError>> + Send {
        (**self).applied_version(guest_id, reservation_id)
    }
}

impl<T: NotificationSender> NotificationSender for std::sync::Arc<T> {
    fn send_once(&self, notification: &Notification) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send {
        (**self).send_once(notification)
    }

    fn notified_version(
        &self,
        reservation_id: &ReservationId,
    ) -> impl Future<Output = Result<Option<Version>, StoreError>> + Send {
        (**self).notified_version(reservation_id)
    }
}

impl<T: GuestReservationsReader> GuestReservationsReader for std::sync::Arc<T> {
    fn guest_reservations(
        &self,
        guest_id: &GuestId,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<GuestReservation>, StoreError>> + Send {
        (**self).guest_reservations(guest_id, page)
    }
}

/// An outbox item's key: its reservation and version. Kept as plain values because an item that
/// does not decode (a poison item) still has to be named, dead-lettered and marked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboxKey {
    pub aggregate_id: String,
    pub version: u64,
}

impl std::fmt::Display for OutboxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} v{}", self.aggregate_id, self.version)
    }
}

/// An outbox item the polling publisher has not published yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingEvent {
    pub key: OutboxKey,
    pub event: Result<EventEnvelope, UndecodableItem>,
}

/// An outbox item that is not a valid event envelope: it can never be published.
#[derive(Debug, Clone, PartialEq)]
pub struct UndecodableItem {
    pub reason: String,
    /// The item as stored, for the dead letter.
    pub item: serde_json::Value,
}

/// The polling publisher's view of the outbox: the items marked unpublished at commit, and the
/// conditional write that clears the mark once an event is on the stream.
pub trait UnpublishedEvents: Send + Sync {
    /// Up to `limit` unpublished events, oldest first. May lag commits by a moment (an index).
    fn pending(&self, limit: usize) -> impl Future<Output = Result<Vec<PendingEvent>, StoreError>> + Send;

    /// Whether an earlier version of `key`'s reservation is still unpublished (a consistent read:
    /// the index may not show it yet).
    fn earlier_unpublished(&self, key: &OutboxKey) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Clears the mark of one event. `Ok(false)` when it was already cleared or the item is gone.
    fn mark_published(&self, key: &OutboxKey) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Marks every event committed at or after `since` unpublished again (the recovery sweep).
    /// Returns how many were marked.
    fn mark_unpublished_since(&self, since: OffsetDateTime) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// One publisher at a time: a lease with an expiry, so a crashed holder is replaced.
pub trait PublisherLease: Send + Sync {
    /// Takes the lease for `holder` until `until`, or renews it. `Ok(false)` while another holder's
    /// lease has not expired at `now`.
    fn acquire(
        &self,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease up early, if `holder` still has it.
    fn release(&self, holder: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Shared handles: several pollers on one outbox.
impl<T: UnpublishedEvents> UnpublishedEvents for std::sync::Arc<T> {
    fn pending(&self, limit: usize) -> impl Future<Output = Result<Vec<PendingEvent>, StoreError>> + Send {
        (**self).pending(limit)
    }

    fn earlier_unpublished(&self, key: &OutboxKey) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).earlier_unpublished(key)
    }

    fn mark_published(&self, key: &OutboxKey) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).mark_published(key)
    }

    fn mark_unpublished_since(&self, since: OffsetDateTime) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).mark_unpublished_since(since)
    }
}

impl<T: PublisherLease> PublisherLease for std::sync::Arc<T> {
    fn acquire(
        &self,
        holder: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).acquire(holder, now, until)
    }

    fn release(&self, holder: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).release(holder)
    }
}
