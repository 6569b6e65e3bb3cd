//! The consumers' cost per event (`consumer-bench`, run by `scripts/bench.sh consumers`, which
//! starts the engines): every consumer of `consumers::ALL`, built by its registration, over the
//! same Kinesis Lambda events,
//!
//! 1. on its in-memory stores, if its registration has them: process CPU per event of the
//!    handler alone, counting what the Lambda runtime does too (event JSON → `KinesisEvent`,
//!    response → JSON);
//! 2. built as its Lambda builds it, on the local stack (DynamoDB Local; moto's SNS, on a topic
//!    no queue subscribes to: `TestStack::vars_without_subscribers`), each pass on a fresh
//!    table: CPU per event with the SDK's, the DynamoDB capacity the engine reports per applied
//!    event, and every AWS call it makes, of any service.
//!
//! Run it on one thread: process CPU time is then the handler's (plus the SDK's) own.

use crate::calls::CallCounter;
use crate::capacity::{CapacityMeter, Units, metered_client};
use crate::stats::Pass;
use anyhow::{Context, Result, ensure};
use aws_lambda_events::event::kinesis::KinesisEvent;
use consumers::{BoxConsumer, Consumer, ConsumerHandler, Publishes, Registration, Wiring};
use dead_letters::MemoryDeadLetters;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use test_support::events::{envelope_json, kinesis_record};
use test_support::stack::TestStack;

#[derive(clap::Args)]
#[command(about = "Each consumer's cost per event, in memory and on the local stack")]
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
    /// Passes on the local stack, each on a fresh table; the mean is reported.
    #[arg(long, default_value_t = 2)]
    pub dynamodb_passes: usize,
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

async fn in_memory(make: fn() -> BoxConsumer, batches: &[Vec<u8>], passes: usize) -> Result<Pass> {
    pass(&ConsumerHandler::new(make(), MemoryDeadLetters::default()), batches).await?; // warm-up
    let mut results = Vec::new();
    for _ in 0..passes {
        // A fresh store each pass: every event is applied, none is a duplicate.
        results.push(pass(&ConsumerHandler::new(make(), MemoryDeadLetters::default()), batches).await?);
    }
    Ok(Pass::median_cpu(&results))
}

/// DynamoDB capacity per event, in all and by operation, over `snapshots` of one pass each.
fn units_per_event(snapshots: &[BTreeMap<String, Units>], events: usize) -> Value {
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
}

/// AWS calls per event by `service.Operation`, over `snapshots` of one pass each.
fn calls_per_event(snapshots: &[BTreeMap<String, u64>], events: usize) -> Value {
    let passes = snapshots.len() as f64 * events as f64;
    let mut totals: BTreeMap<&str, f64> = BTreeMap::new();
    for (call, count) in snapshots.iter().flatten() {
        *totals.entry(call).or_default() += *count as f64 / passes;
    }
    json!(totals)
}

/// One consumer's figures: in memory (if it has in-memory stores) and on the local stack.
async fn measure(
    registration: &Registration,
    stack: &TestStack,
    stack_vars: &HashMap<String, String>,
    batches: &[Vec<u8>],
    args: &Args,
) -> Result<Value> {
    let memory = match registration.in_memory {
        Some(make) => Some(per_event(
            args.events,
            &in_memory(make, batches, args.memory_passes).await?,
        )),
        None => None,
    };
    let meter = CapacityMeter::default();
    let calls = CallCounter::default();
    let sdk = calls.counted(&stack.sdk);
    let dynamodb = metered_client(&sdk, &meter);
    let (mut passes, mut units, mut counted) = (Vec::new(), Vec::new(), Vec::new());
    // The first pass warms connections and the engines; it is not counted.
    for n in 0..=args.dynamodb_passes {
        let mut vars = stack_vars.clone();
        let table = stack
            .create_table_like(registration.table.var, &format!("bench{n}"))
            .await;
        vars.insert(registration.table.var.to_owned(), table);
        let wiring = Wiring {
            sdk: &sdk,
            dynamodb: dynamodb.clone(),
            vars: &vars,
            publishes: Publishes::Yes,
            metrics: reservation_events_consumer::metrics::Emitter::Off,
        };
        let consumer = registration
            .build(&wiring)
            .with_context(|| format!("building {} on the local stack", registration.name))?;
        meter.reset();
        calls.reset();
        let result = pass(&ConsumerHandler::new(consumer, MemoryDeadLetters::default()), batches).await?;
        if n > 0 {
            passes.push(result);
            units.push(meter.snapshot());
            counted.push(calls.snapshot());
        }
    }
    Ok(json!({
        "memory": memory,
        "dynamodb": per_event(args.events, &Pass::mean(&passes)),
        "units_per_event": units_per_event(&units, args.events),
        "calls_per_event": calls_per_event(&counted, args.events),
    }))
}

pub async fn run(args: &Args) -> Result<Value> {
    let batches = lambda_events(args.events, args.batch_size);
    let stack = TestStack::start().await;
    let vars = stack.vars_without_subscribers().await;
    // In the list's order, each named: the documents show them as the product lists them.
    let mut measured = Vec::new();
    for registration in consumers::ALL {
        let mut figures = measure(registration, &stack, &vars, &batches, args).await?;
        figures["name"] = json!(registration.name);
        measured.push(figures);
    }
    Ok(json!({
        "events": args.events,
        "batch_size": args.batch_size,
        "invocations": batches.len(),
        "memory_passes": args.memory_passes,
        "dynamodb_passes": args.dynamodb_passes,
        "consumers": measured,
    }))
}
