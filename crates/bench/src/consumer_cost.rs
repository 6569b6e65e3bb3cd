//! The consumers' cost per event (`consumer-bench`, run by `scripts/bench.sh consumers`, which
//! starts the engines): the projector and the notifier over the same Kinesis Lambda events,
//!
//! 1. with in-memory stores: process CPU per event of the handler alone, counting what the
//!    Lambda runtime does too (event JSON → `KinesisEvent`, response → JSON);
//! 2. against DynamoDB Local: the same through the real adapters and the SDK, each pass on fresh
//!    tables, with the DynamoDB capacity the engine reports per applied event. The notifier's
//!    channel accepts everything in memory: SNS is not what is measured here.
//!
//! Run it on one thread: process CPU time is then the handler's (plus the SDK's) own.

use crate::capacity::{CapacityMeter, metered_client};
use crate::stats::Pass;
use adapters::{DynamoNotifications, DynamoReadModel, InMemoryNotifications, InMemoryReadModel};
use anyhow::{Result, ensure};
use aws_lambda_events::event::kinesis::KinesisEvent;
use consumers::{Consumer, ConsumerHandler, Notifier, Projector};
use dead_letters::MemoryDeadLetters;
use domain::Notification;
use domain::ports::{Delivery, NotificationChannel, StoreError};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use test_support::events::{envelope_json, kinesis_record};
use test_support::stack::TestStack;

#[derive(clap::Args)]
#[command(about = "Projector and notifier cost per event, in memory and against DynamoDB Local")]
pub struct Args {
    /// Events per pass: three quarters creates, then cancels of a third of them.
    #[arg(long, default_value_t = 10_000)]
    pub events: usize,
    /// Records per invocation (the mappings' BatchSize).
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Passes with in-memory stores; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub memory_passes: usize,
    /// Passes against DynamoDB Local, each on fresh tables; the mean is reported.
    #[arg(long, default_value_t = 2)]
    pub dynamodb_passes: usize,
}

/// A channel that takes every notification: the notifier's own work and its table remain.
#[derive(Default)]
struct AcceptingChannel(AtomicU64);

impl NotificationChannel for AcceptingChannel {
    async fn publish(&self, _notification: &Notification) -> Result<Delivery, StoreError> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Delivery {
            message_id: format!("m-{n}"),
            sequence_number: Some(n.to_string()),
        })
    }

    fn dedup_window(&self) -> time::Duration {
        time::Duration::minutes(5)
    }
}

/// The usual shape of the stream: creates, then cancels of a third of them, as Lambda delivers
/// them from Kinesis, in batches; kept as JSON bytes.
fn lambda_events(events: usize, batch_size: usize) -> Vec<Vec<u8>> {
    let creates = events * 3 / 4;
    let ids: Vec<String> = (0..creates).map(|n| format!("01BENCH{n:019}")).collect();
    let records: Vec<Value> = ids
        .iter()
        .map(|id| (id, 1))
        .chain(ids.iter().take(events - creates).map(|id| (id, 2)))
        .enumerate()
        .map(|(sequence, (id, version))| {
            let data = serde_json::to_vec(&envelope_json(id, version)).expect("an envelope is JSON");
            kinesis_record(sequence as u64 + 1, id, &data)
        })
        .collect();
    records
        .chunks(batch_size)
        .map(|batch| serde_json::to_vec(&json!({ "Records": batch })).expect("a Kinesis event is JSON"))
        .collect()
}

/// One pass over every batch, as the Lambda runtime would run the handler.
async fn pass<C: Consumer>(handler: &ConsumerHandler<C, MemoryDeadLetters>, batches: &[Vec<u8>]) -> Result<Pass> {
    let clock = Pass::start();
    for bytes in batches {
        let event: KinesisEvent = serde_json::from_slice(bytes)?;
        let (response, stats) = handler.handle(&event).await;
        ensure!(
            response.batch_item_failures.is_empty() && stats.applied == event.records.len(),
            "{} did not apply the whole batch: {stats:?}",
            handler.consumer().name()
        );
        std::hint::black_box(serde_json::to_vec(&response)?);
    }
    Ok(clock.stop(batches.len() as u32))
}

fn per_event(events: usize, pass: &Pass) -> Value {
    json!({
        "events_per_second": pass.events_per_second(events),
        "cpu_ms_per_event": pass.cpu_ms_per_event(events),
    })
}

async fn in_memory<C: Consumer>(make: impl Fn() -> C, batches: &[Vec<u8>], passes: usize) -> Result<Pass> {
    pass(&ConsumerHandler::new(make(), MemoryDeadLetters::default()), batches).await?; // warm-up
    let mut results = Vec::new();
    for _ in 0..passes {
        // A fresh store each pass: every event is applied, none is a duplicate.
        results.push(pass(&ConsumerHandler::new(make(), MemoryDeadLetters::default()), batches).await?);
    }
    Ok(Pass::median_cpu(&results))
}

pub async fn run(args: &Args) -> Result<Value> {
    let batches = lambda_events(args.events, args.batch_size);
    let events = args.events;

    let projector_memory = in_memory(
        || Projector::new(InMemoryReadModel::default()),
        &batches,
        args.memory_passes,
    )
    .await?;
    let notifier_memory = in_memory(
        || Notifier::new(InMemoryNotifications::default()),
        &batches,
        args.memory_passes,
    )
    .await?;

    let stack = TestStack::start().await;
    let meter = CapacityMeter::default();
    let client = metered_client(&stack.sdk, &meter);
    let retention = consumers::ConsumerConfig::notification_retention_from_vars(&Default::default())?;
    let (mut projector_passes, mut notifier_passes) = (Vec::new(), Vec::new());
    let (mut projector_units, mut notifier_units) = (Vec::new(), Vec::new());
    // The first pass of each warms connections and DynamoDB Local; it is not counted.
    for n in 0..=args.dynamodb_passes {
        let table = stack.create_table_like("READ_MODEL_TABLE", &format!("bench{n}")).await;
        meter.reset();
        let projector = ConsumerHandler::new(
            Projector::new(DynamoReadModel::new(client.clone(), table)),
            MemoryDeadLetters::default(),
        );
        let result = pass(&projector, &batches).await?;
        if n > 0 {
            projector_passes.push(result);
            projector_units.push(meter.snapshot());
        }
        let table = stack
            .create_table_like("NOTIFICATIONS_TABLE", &format!("bench{n}"))
            .await;
        meter.reset();
        let notifier = ConsumerHandler::new(
            Notifier::new(DynamoNotifications::new(
                client.clone(),
                table,
                retention,
                AcceptingChannel::default(),
            )),
            MemoryDeadLetters::default(),
        );
        let result = pass(&notifier, &batches).await?;
        if n > 0 {
            notifier_passes.push(result);
            notifier_units.push(meter.snapshot());
        }
    }
    let units_per_event = |snapshots: &[std::collections::BTreeMap<String, crate::capacity::Units>]| {
        let passes = snapshots.len() as f64 * events as f64;
        let mut by_operation = serde_json::Map::new();
        let (mut read, mut write) = (0.0, 0.0);
        for snapshot in snapshots {
            for (operation, units) in snapshot {
                read += units.read;
                write += units.write;
                let entry = by_operation
                    .entry(operation.clone())
                    .or_insert_with(|| json!({ "calls": 0.0, "read": 0.0, "write": 0.0 }));
                for (key, value) in [
                    ("calls", units.calls as f64),
                    ("read", units.read),
                    ("write", units.write),
                ] {
                    entry[key] = json!(entry[key].as_f64().unwrap_or(0.0) + value / passes);
                }
            }
        }
        json!({ "read": read / passes, "write": write / passes, "by_operation": by_operation })
    };

    Ok(json!({
        "events": events,
        "batch_size": args.batch_size,
        "invocations": batches.len(),
        "memory_passes": args.memory_passes,
        "dynamodb_passes": args.dynamodb_passes,
        "projector": {
            "memory": per_event(events, &projector_memory),
            "dynamodb": per_event(events, &Pass::mean(&projector_passes)),
            "units_per_event": units_per_event(&projector_units),
        },
        "notifier": {
            "memory": per_event(events, &notifier_memory),
            "dynamodb": per_event(events, &Pass::mean(&notifier_passes)),
            "units_per_event": units_per_event(&notifier_units),
        },
    }))
}
