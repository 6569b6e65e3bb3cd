//! Storage adapters for the domain's ports.
//!
//! [`dynamodb::DynamoReservationStore`] is the production store: every reservation change is one
//! `TransactWriteItems` spanning the slot, the reservation, the outbox event and the idempotency
//! record. [`memory::InMemoryStore`] has the same observable semantics for fast unit tests.
//! [`sns::SnsTopic`] is the channel notifications leave the system through.

pub mod dynamodb;
pub mod memory;
pub mod memory_consumers;
pub mod memory_outbox;
pub mod sns;

pub use dynamodb::consumers::{DynamoNotifications, DynamoReadModel, RepublishCounts};
pub use dynamodb::items::RelayMode;
pub use dynamodb::outbox::DynamoOutbox;
pub use dynamodb::{DynamoReservationStore, StoreConfigError, StoreTables};
pub use memory::InMemoryStore;
pub use memory_consumers::{InMemoryNotifications, InMemoryReadModel};
pub use memory_outbox::InMemoryOutbox;
pub use sns::SnsTopic;
