//! The stream relay: DynamoDB Streams records of the outbox table in, records on the event bus
//! (a Kinesis stream or a Kafka topic) out.
//!
//! - [`classify`] decides per stream record: publish (an outbox INSERT, its new image read into
//!   the envelope with serde_dynamo), skip (TTL removals, modifications, other items), or
//!   dead-letter (a record that can never be published).
//! - [`publish`] puts the publishable records on an [`sink::EventSink`] (Kinesis, [`kinesis`],
//!   or Kafka, [`kafka`]) so that no event of a reservation ever reaches the bus before an
//!   earlier one of the same reservation, even when a call fails for part of its records (see
//!   docs/adr/0002-relay-ordering.md).
//! - [`polling::Poller`] is the second relay mode: it reads unpublished events from the outbox's
//!   index instead of the stream and publishes them with the same core.
//! - [`handler::Relay`] ties them together and answers Lambda with the batch item failure to
//!   re-deliver from.

pub mod classify;
pub mod config;
pub mod handler;
pub mod kafka;
pub mod kinesis;
pub mod polling;
pub mod publish;
pub mod sink;

pub use classify::{BORN_IN, Classified, SkipReason, classify, outbox_insert_filters};
pub use config::{BusConfig, PollerConfig, RelayConfig};
pub use handler::{Relay, RelayOutcome};
pub use kafka::{BusSink, KafkaSink};
pub use kinesis::KinesisSink;
pub use polling::{PollError, PollStats, Poller, PollerRequest, PollerSettings, RunStats};
pub use publish::{PublishPolicy, PublishReport, publish_in_order};
pub use sink::{EventSink, PutOutcome, SinkError, SinkErrorKind, SinkRecord};

/// The relay's name in its dead letters and metrics (`function`, the `Function` dimension).
pub const FUNCTION: &str = "relay";

/// The instant to finish by, from Lambda's deadline (epoch milliseconds), keeping `margin` back
/// to answer before being cut off.
pub fn invocation_deadline(deadline_epoch_ms: u64, margin: std::time::Duration) -> tokio::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    tokio::time::Instant::now()
        + std::time::Duration::from_millis(deadline_epoch_ms.saturating_sub(now_ms)).saturating_sub(margin)
}
