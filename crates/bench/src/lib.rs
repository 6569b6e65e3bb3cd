//! Benchmarks of the product on the embedded local stack, for `scripts/bench.sh`, which starts
//! the engines and writes docs/benchmarks.md from the JSON line each measurement prints. Timings
//! live here and in that document only; no test asserts one.
//!
//! The commands (`src/bin`) only parse arguments; each measurement is a module:
//! - [`latency`]: API `201` → projector applied, through either relay mode;
//! - [`idle`]: what each relay mode asks of DynamoDB while nothing happens;
//! - [`transactions`]: raw `TransactWriteItems` of the API's items, no HTTP, no handler;
//! - [`function_start`]: a function binary's start and first invocation under [`runtime_api`];
//! - [`relay_cost`]: the relay's CPU per event, and its rate next to raw `PutRecords`;
//! - [`load`]: offered load against a running API;
//! - [`capacity`]: DynamoDB capacity units per reservation, cancel and relayed event;
//! - [`consumer_cost`]: each registered consumer's CPU, capacity and AWS calls per event;
//! - [`calls`]: AWS calls of every service, counted on the wire.

pub mod calls;
pub mod capacity;
pub mod consumer_cost;
pub mod function_start;
pub mod idle;
pub mod latency;
pub mod load;
pub mod relay_cost;
pub mod runtime_api;
pub mod stats;
pub mod transactions;

use std::time::Duration;
use test_support::stack::TestStack;

/// Which relay publishes the outbox during a measurement.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Stream,
    Polling,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Polling => "polling",
        }
    }

    /// The poll interval, for result lines; none in stream mode.
    pub fn interval_ms(self, interval: Duration) -> Option<u64> {
        (self == Self::Polling).then_some(interval.as_millis() as u64)
    }

    /// A fresh test stack whose API marks events for this mode's relay.
    pub async fn stack(self) -> TestStack {
        let stack = TestStack::start().await;
        match self {
            Self::Stream => stack,
            Self::Polling => stack.polling(),
        }
    }
}

/// The bus the events travel on during a measurement.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Bus {
    Kinesis,
    /// A fresh topic on the broker at `KAFKA_BOOTSTRAP_SERVERS`.
    Kafka,
}

impl Bus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kinesis => "kinesis",
            Self::Kafka => "kafka",
        }
    }
}

pub type BenchPoller =
    relay::Poller<adapters::DynamoOutbox, adapters::DynamoOutbox, relay::KinesisSink, dead_letters::MemoryDeadLetters>;

/// The polling publisher on the stack's outbox through `dynamodb` (a client with an interceptor,
/// say), publishing to the stack's stream; dead letters kept in memory.
pub fn poller(stack: &TestStack, dynamodb: aws_sdk_dynamodb::Client, settings: relay::PollerSettings) -> BenchPoller {
    let outbox = adapters::DynamoOutbox::new(dynamodb, stack.name("OUTBOX_TABLE"));
    relay::Poller::new(
        outbox.clone(),
        outbox,
        relay::KinesisSink::new(stack.kinesis.clone(), stack.name("EVENTS_STREAM")),
        dead_letters::MemoryDeadLetters::default(),
        relay::PublishPolicy::default(),
        settings,
    )
}

/// The local event source mappings' pause when a shard has nothing new (as `devstack up`).
pub const MAPPING_IDLE_WAIT: Duration = Duration::from_millis(100);

/// A future that completes once `stop` turns true: how a measurement stops what it runs.
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
