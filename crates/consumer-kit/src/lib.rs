//! Consume the reservation service's events in a Lambda function, on its Kinesis stream or its
//! Kafka topic (Amazon MSK), with the guarantees its own consumers have.
//!
//! You write what your consumer does with one event and where it keeps the version it has
//! applied: a [`Consumer`]. The kit does the rest, on either bus:
//! - decodes each record into a typed [`ReservationEvent`] (the published contract, v1), checking
//!   that its key is its reservation;
//! - hands each reservation's events to your consumer in order; what your consumer answers
//!   ([`decide`] tells it) says applied, duplicate (skipped) or gap (dead-lettered with the
//!   version it waits for, the reservation's later events held back);
//! - dead-letters whole, with the reason, what can never be applied, and moves on;
//! - hands back to Lambda the earliest record it could not apply yet (the partial batch
//!   response of a Kinesis or an MSK mapping), so that Lambda retries from there and order holds;
//! - logs each event under its `trace_id`, and prints each batch's metrics (CloudWatch Embedded
//!   Metric Format): `EventsApplied`, `DuplicatesSkipped`, `Gaps`, `StoreFailures`,
//!   `TransactionConflicts`, `DeadLettered` and `ConsumerLag`, by `Function`.
//!
//! # A consumer
//!
//! A booking ledger: one item per reservation with its latest status and version, in a
//! DynamoDB table keyed by `reservation_id` (feature `dynamodb`).
//!
#![cfg_attr(all(feature = "dynamodb", feature = "sqs"), doc = "```no_run")]
#![cfg_attr(not(all(feature = "dynamodb", feature = "sqs")), doc = "```ignore")]
//! use aws_sdk_dynamodb::types::AttributeValue;
//! use reservation_events_consumer::dynamodb::VersionedTable;
//! use reservation_events_consumer::{ApplyOutcome, Config, Consumer, ConsumerError, ReservationEvent, Version, lambda};
//! use std::collections::HashMap;
//!
//! struct Ledger(VersionedTable);
//!
//! impl Consumer for Ledger {
//!     fn name(&self) -> &str {
//!         "ledger"
//!     }
//!
//!     async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, ConsumerError> {
//!         let entry = HashMap::from([
//!             ("status".to_owned(), AttributeValue::S(event.payload.status.to_string())),
//!             ("seats".to_owned(), AttributeValue::N(event.payload.seats.to_string())),
//!         ]);
//!         // Written only if this is the reservation's next version.
//!         self.0.put_if_next(event, entry).await
//!     }
//!
//!     async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, ConsumerError> {
//!         self.0.applied_version(event.reservation_id()).await
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), lambda::Error> {
//!     let config = Config::from_env()?; // EVENT_BUS, DEAD_LETTER_QUEUE_URL, METRICS_NAMESPACE
//!     let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
//!     let table = std::env::var("LEDGER_TABLE")?;
//!     let ledger = Ledger(VersionedTable::new(aws_sdk_dynamodb::Client::new(&aws), table));
//!     lambda::run(ledger, &config, &aws).await
//! }
//! ```
//!
//! Wire it to the stream with a Kinesis event source mapping, or to the topic with an MSK one,
//! with `FunctionResponseTypes: [ReportBatchItemFailures]` and `EVENT_BUS` set to match
//! (`kinesis` or `kafka`).
//!
//! # Features
//! - `lambda` (default): [`ConsumerHandler`] and [`lambda::run`].
//! - `sqs` (default): dead letters to an SQS queue.
//! - `dynamodb`: [`dynamodb::VersionedTable`].
//!
//! Without default features the crate is the contract alone: the event types, [`decide`], the
//! dead letter's format and the metrics' lines.

pub mod config;
pub mod consumer;
pub mod dead_letter;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
pub mod event;
#[cfg(feature = "lambda")]
pub mod handler;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod metrics;
pub mod order;

pub use config::{Bus, Config, ConfigError};
pub use consumer::{BoxConsumer, Consumer, ConsumerError, ErrorKind, error_chain};
pub use dead_letter::{DeadLetter, DeadLetters, MemoryDeadLetters};
pub use event::{CONTRACT_VERSION, DecodeError, EventType, Reservation, ReservationEvent, Status, decode};
#[cfg(feature = "lambda")]
pub use handler::{BatchStats, ConsumerHandler, KafkaEventResponse};
pub use order::{ApplyOutcome, Version, decide};
