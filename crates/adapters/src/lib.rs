//! Storage adapters for the domain's ports.
//!
//! [`dynamodb::DynamoReservationStore`] is the production store: every reservation change is one
//! `TransactWriteItems` spanning the slot, the reservation, the outbox event and the idempotency
//! record. [`sns::SnsTopic`] is the channel notifications leave the system through.
//!
//! With the `test-util` feature (tests and benchmarks only, never a Lambda), in-memory stores
//! with the same observable semantics: `InMemoryStore`, `InMemoryOutbox`, `InMemoryReadModel`,
//! `InMemoryNotifications`.

pub mod dynamodb;
#[cfg(feature = "test-util")]
pub mod memory;
#[cfg(feature = "test-util")]
pub mod memory_consumers;
#[cfg(feature = "test-util")]
pub mod memory_outbox;
pub mod sns;

pub use dynamodb::consumers::{DynamoNotifications, DynamoReadModel, RepublishCounts};
pub use dynamodb::homes::{SlotHomes, TakeoverClaim, WrittenForSlot};
pub use dynamodb::items::RelayMode;
pub use dynamodb::outbox::DynamoOutbox;
pub use dynamodb::{DynamoReservationStore, StoreConfigError, StoreTables};
#[cfg(feature = "test-util")]
pub use memory::InMemoryStore;
#[cfg(feature = "test-util")]
pub use memory_consumers::{InMemoryNotifications, InMemoryReadModel};
#[cfg(feature = "test-util")]
pub use memory_outbox::InMemoryOutbox;
pub use sns::SnsTopic;
