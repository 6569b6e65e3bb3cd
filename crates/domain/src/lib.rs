//! The reservation domain: identifiers and quantities that validate when they are built, slots,
//! reservations and their state machine, and the domain events they emit.
//!
//! Nothing here knows about AWS or Lambda; adapters translate to and from storage and transport.

pub mod consumer;
pub mod event;
pub mod ids;
pub mod ports;
pub mod reservation;
pub mod retry;
pub mod slot;
pub mod validation;

pub use consumer::{
    ApplyOutcome, GuestReservation, MalformedEvent, Notification, NotificationKind, ReservationEvent, UnknownEvent,
    decide,
};
pub use event::{AGGREGATE_TYPE_RESERVATION, DomainEvent, EventEnvelope, EventType, OUTBOX_ITEM_TYPE};
pub use ids::{EventId, GuestId, IdempotencyKey, RegionName, ReservationId, SlotId, TraceId};
pub use reservation::{NotCancellable, Reservation, ReservationStatus, Version};
pub use retry::Backoff;
pub use slot::{Capacity, Placement, Seats, ShardCount, ShardTake, Slot};
pub use validation::ValidationError;
