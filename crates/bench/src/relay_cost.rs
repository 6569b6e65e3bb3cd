//! The relay's cost per event and its throughput next to raw `PutRecords` (`relay-bench`, run by
//! `scripts/bench.sh relay`, which starts the engines).
//!
//! 1. Commits reservations and cancels through the API's service on DynamoDB Local, then reads the
//!    outbox stream through the local event source mapping: the exact Lambda events (batches of
//!    `--batch-size`) the relay would get, kept as JSON bytes.
//! 2. Overhead: every batch through the relay into a sink that accepts everything, counting what
//!    the Lambda runtime does too (event JSON → `Box<RawValue>`, response → JSON).
//! 3. Against kinesis-mock: the same batches through the relay and its Kinesis sink, next to the
//!    same records sent as plain `PutRecords` calls of the same size, one call at a time; passes in
//!    ABBA order, each on a fresh stream.
//! 4. With `--kafka`, the same against a Kafka broker: the relay and its Kafka sink next to the
//!    same records sent as one call of that sink per batch (a produce per partition), each pass on
//!    a fresh topic.
//!
//! Run it on one thread: process CPU time is then the relay's (plus the SDK's) own.

use crate::stats::Pass;
use anyhow::{Context, Result, bail, ensure};
use api::request::{CreateReservation, PutSlot};
use api::{ReservationService, RetryPolicy};
use aws_lambda_events::event::dynamodb::Event;
use dead_letters::MemoryDeadLetters;
use domain::{Capacity, GuestId, ReservationId, Seats, SlotId, TraceId};
use event_source_mapping::function::Function;
use event_source_mapping::{EventSourceMapping, FunctionError, MappingConfig, MemoryOnFailure};
use futures::StreamExt;
use relay::{Classified, EventSink, KafkaSink, KinesisSink, PublishPolicy, PutOutcome, Relay, SinkError, SinkRecord};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use test_support::stack::TestStack;

#[derive(clap::Args)]
#[command(about = "Relay overhead and throughput against kinesis-mock")]
pub struct Args {
    /// Outbox events per workload.
    #[arg(long, default_value_t = 10_000)]
    pub events: usize,
    /// Records per relay invocation (the mapping's BatchSize).
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Passes of the no-op measurement; the median is reported.
    #[arg(long, default_value_t = 5)]
    pub overhead_passes: usize,
    /// Passes of each of raw PutRecords and the relay against kinesis-mock, alternated (ABBA),
    /// each on a fresh stream; means reported.
    #[arg(long, default_value_t = 2)]
    pub kinesis_passes: usize,
    /// Concurrent API calls while generating the events.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Keeps each workload's captured Lambda events in this folder (one event per line) and
    /// reuses them on the next run, so a profile can repeat the same passes without regenerating.
    #[arg(long)]
    pub events_dir: Option<std::path::PathBuf>,
    /// Only the overhead passes (no kinesis-mock): what a profiler should look at.
    #[arg(long)]
    pub overhead_only: bool,
    /// A Kafka broker (host:port): also measure the relay against it, on fresh topics of
    /// `--kafka-partitions` partitions.
    #[arg(long)]
    pub kafka: Option<String>,
    #[arg(long, default_value_t = 4)]
    pub kafka_partitions: i32,
}

/// How the events of a workload are laid out in the stream.
#[derive(Clone, Copy)]
pub enum Workload {
    /// Three quarters creates, then cancels of a third of them: a batch rarely holds two events
    /// of one reservation.
    CreatesThenCancels,
    /// Every reservation cancelled right after it is created: most batches hold both events of
    /// many reservations, so the ordering rule needs two rounds of calls for them.
    CreateCancelPairs,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Self::CreatesThenCancels => "creates, then cancels of a third",
            Self::CreateCancelPairs => "create and cancel pairs",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Self::CreatesThenCancels => "creates-then-cancels.jsonl",
            Self::CreateCancelPairs => "create-cancel-pairs.jsonl",
        }
    }
}

/// The workload's Lambda events: from `--events-dir` if it has them for this many events and
/// this batch size, otherwise generated on the stack (and kept there if asked).
async fn lambda_events(stack: &TestStack, args: &Args, workload: Workload) -> Result<Vec<Vec<u8>>> {
    let kept = args
        .events_dir
        .as_ref()
        .map(|dir| dir.join(format!("{}-{}-{}", args.events, args.batch_size, workload.file_name())));
    if let Some(path) = kept.as_ref().filter(|p| p.exists()) {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        eprintln!("{}: events from {}", workload.name(), path.display());
        return Ok(text.lines().map(|line| line.as_bytes().to_vec()).collect());
    }
    let generated = Instant::now();
    generate(stack, workload, args.events, args.writers).await?;
    eprintln!(
        "{}: {} events committed in {:.0} s",
        workload.name(),
        args.events,
        generated.elapsed().as_secs_f64()
    );
    let batches = capture_batches(stack, args.batch_size).await?;
    if let Some(path) = kept {
        std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))?;
        let mut text = Vec::new();
        for batch in &batches {
            text.extend_from_slice(batch);
            text.push(b'\n');
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(batches)
}

/// Keeps the events the mapping hands over, as the bytes Lambda would deliver.
#[derive(Default)]
struct Capture {
    batches: Mutex<Vec<Vec<u8>>>,
}

impl Function for Capture {
    async fn invoke(&self, event: Value, _deadline: tokio::time::Instant) -> Result<Value, FunctionError> {
        let bytes = serde_json::to_vec(&event).map_err(|e| FunctionError::new("Capture", e.to_string()))?;
        self.batches.lock().unwrap_or_else(|p| p.into_inner()).push(bytes);
        Ok(json!({ "batchItemFailures": [] }))
    }
}

/// Accepts everything: what is left is the relay's own work.
struct AcceptAll;

impl EventSink for AcceptAll {
    async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, SinkError> {
        Ok(vec![PutOutcome::Accepted; records.len()])
    }
}

async fn generate(stack: &TestStack, workload: Workload, events: usize, writers: usize) -> Result<()> {
    let service = ReservationService::new(stack.store(), RetryPolicy::default());
    let slots: Vec<SlotId> = (0..64).map(|i| SlotId::parse(format!("bench-{i}")).unwrap()).collect();
    for slot in &slots {
        service
            .put_slot(
                slot,
                PutSlot {
                    capacity: Capacity::new(i64::from(Capacity::MAX))?,
                    home_region: None,
                    shards: None,
                },
            )
            .await?;
    }
    let create = |n: usize| {
        let service = &service;
        let command = CreateReservation {
            slot_id: slots[n % slots.len()].clone(),
            guest_id: GuestId::parse(format!("guest-{n}")).unwrap(),
            seats: Seats::new(1).unwrap(),
        };
        async move {
            match service.create_reservation(command, None, TraceId::generate()).await? {
                api::service::CreateOutcome::Created(reservation) => {
                    Ok::<ReservationId, anyhow::Error>(reservation.reservation_id)
                }
                other => bail!("unexpected create outcome {other:?}"),
            }
        }
    };
    let cancel = |id: ReservationId| {
        let service = &service;
        async move {
            service.cancel_reservation(&id, TraceId::generate()).await?;
            Ok::<(), anyhow::Error>(())
        }
    };
    match workload {
        Workload::CreatesThenCancels => {
            let creates = events * 3 / 4;
            let ids: Vec<ReservationId> = futures::stream::iter(0..creates)
                .map(create)
                .buffer_unordered(writers)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_>>()?;
            let results: Vec<Result<()>> = futures::stream::iter(ids.into_iter().take(events - creates))
                .map(cancel)
                .buffer_unordered(writers)
                .collect()
                .await;
            results.into_iter().collect::<Result<()>>()?;
        }
        Workload::CreateCancelPairs => {
            let results: Vec<Result<()>> = futures::stream::iter(0..events / 2)
                .map(|n| async move { cancel(create(n).await?).await })
                .buffer_unordered(writers)
                .collect()
                .await;
            results.into_iter().collect::<Result<()>>()?;
        }
    }
    Ok(())
}

/// The outbox stream as the relay's Lambda events, in invocation order.
async fn capture_batches(stack: &TestStack, batch_size: usize) -> Result<Vec<Vec<u8>>> {
    let arn = devstack::pipeline::outbox_stream_arn(&stack.dynamodb, &stack.name("OUTBOX_TABLE")).await?;
    let mut mapping: EventSourceMapping<_, _, MemoryOnFailure> = EventSourceMapping::new(
        event_source_mapping::DynamoDbStreamsSource::new(aws_sdk_dynamodbstreams::Client::new(&stack.sdk), &arn),
        Capture::default(),
        None,
        MappingConfig {
            batch_size,
            ..devstack::pipeline::relay_mapping_config(&settings::Regions::single(test_support::stack::TEST_REGION))
        },
    );
    mapping.drain().await.context("reading the outbox stream")?;
    Ok(std::mem::take(&mut *mapping.function().batches.lock().unwrap()))
}

/// One pass of the relay over every batch, as the Lambda runtime and the relay's `main` run it:
/// the payload taken as raw JSON, handled, the response written out.
async fn relay_pass<S: EventSink>(relay: &Relay<S, MemoryDeadLetters>, batches: &[Vec<u8>]) -> Result<Pass> {
    let clock = Pass::start();
    let mut calls = 0;
    for bytes in batches {
        let payload: Box<RawValue> = serde_json::from_slice(bytes)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let outcome = relay.handle(payload.get(), deadline).await?;
        ensure!(
            outcome.response.batch_item_failures.is_empty(),
            "the relay gave part of a batch back: {:?}",
            outcome.stats.publish.last_error
        );
        ensure!(
            outcome.stats.published == outcome.stats.records,
            "not every record was published"
        );
        calls += outcome.stats.publish.calls;
        std::hint::black_box(serde_json::to_vec(&outcome.response)?);
    }
    Ok(clock.stop(calls))
}

fn kinesis_sink(stack: &TestStack, stream: &str) -> KinesisSink {
    KinesisSink::new(stack.kinesis.clone(), stream)
}

fn kinesis_relay(stack: &TestStack, stream: &str) -> Relay<KinesisSink, MemoryDeadLetters> {
    Relay::new(
        kinesis_sink(stack, stream),
        MemoryDeadLetters::default(),
        PublishPolicy::default(),
    )
}

/// A fresh stream shaped like the real one, numbered by `count`.
async fn fresh_stream(stack: &TestStack, count: &mut u32) -> String {
    *count += 1;
    stack.create_stream_like("EVENTS_STREAM", &format!("pass{count}")).await
}

/// The same records as plain calls of the relay's own sink (`PutRecords`, or a produce per
/// partition), one per batch:
/// what a relay with no work of its own and no ordering rule would do.
async fn raw_pass<S: EventSink>(sink: &S, calls: &[Vec<SinkRecord>]) -> Result<(Pass, u64)> {
    let clock = Pass::start();
    let mut failed = 0;
    for call in calls {
        let records: Vec<&SinkRecord> = call.iter().collect();
        let outcomes = sink.put_records(&records).await?;
        failed += outcomes.iter().filter(|o| **o != PutOutcome::Accepted).count() as u64;
    }
    Ok((clock.stop(calls.len() as u32), failed))
}

pub async fn run(args: &Args, workload: Workload) -> Result<Value> {
    let stack = TestStack::start().await;
    let batches = lambda_events(&stack, args, workload).await?;
    let mut decoded: Vec<Event> = batches
        .iter()
        .map(|b| serde_json::from_slice(b))
        .collect::<Result<_, _>>()?;
    let events: usize = decoded.iter().map(|e| e.records.len()).sum();
    ensure!(
        events == args.events,
        "expected {} stream records, read {events}",
        args.events
    );
    // The raw calls carry exactly the records the relay publishes, batch by batch.
    let raw_calls: Vec<Vec<SinkRecord>> = decoded
        .iter_mut()
        .map(|event| {
            event
                .records
                .iter_mut()
                .map(|record| match relay::classify(record) {
                    Classified::Publish { record, .. } => Ok(record),
                    other => bail!("a generated record is not publishable: {other:?}"),
                })
                .collect()
        })
        .collect::<Result<_>>()?;

    let overhead_relay = Relay::new(AcceptAll, MemoryDeadLetters::default(), PublishPolicy::default());
    relay_pass(&overhead_relay, &batches).await?; // warm-up
    let mut overhead = Vec::new();
    for _ in 0..args.overhead_passes {
        overhead.push(relay_pass(&overhead_relay, &batches).await?);
    }
    let overhead = Pass::median_cpu(&overhead);
    eprintln!(
        "{}: overhead {:.4} CPU-ms/event",
        workload.name(),
        overhead.cpu_ms_per_event(events)
    );
    let overhead = json!({
        "passes": args.overhead_passes,
        "events_per_second": overhead.events_per_second(events),
        "cpu_ms_per_event": overhead.cpu_ms_per_event(events),
        "calls": overhead.calls,
    });
    if args.overhead_only {
        return Ok(json!({ "workload": workload.name(), "events": events, "overhead": overhead }));
    }

    // Every pass gets a fresh stream shaped like the real one: kinesis-mock slows down as a stream
    // fills, which would otherwise favour whichever side runs first.
    let mut streams = 0;
    // Warm both paths (connections, kinesis-mock's JIT) with a pass each.
    raw_pass(
        &kinesis_sink(&stack, &fresh_stream(&stack, &mut streams).await),
        &raw_calls,
    )
    .await?;
    relay_pass(
        &kinesis_relay(&stack, &fresh_stream(&stack, &mut streams).await),
        &batches,
    )
    .await?;
    // Raw and relay in ABBA order, so drift hits both alike.
    let (mut raw, mut relayed, mut raw_failed) = (Vec::new(), Vec::new(), 0);
    for pass in 0..args.kinesis_passes * 2 {
        let stream = fresh_stream(&stack, &mut streams).await;
        if matches!(pass % 4, 0 | 3) {
            let (result, failed) = raw_pass(&kinesis_sink(&stack, &stream), &raw_calls).await?;
            eprintln!(
                "{}: raw pass {pass}: {:.0} events/s",
                workload.name(),
                result.events_per_second(events)
            );
            raw.push(result);
            raw_failed += failed;
        } else {
            let result = relay_pass(&kinesis_relay(&stack, &stream), &batches).await?;
            eprintln!(
                "{}: relay pass {pass}: {:.0} events/s",
                workload.name(),
                result.events_per_second(events)
            );
            relayed.push(result);
        }
    }
    let raw = Pass::mean(&raw);
    let relayed = Pass::mean(&relayed);
    let kafka = match &args.kafka {
        Some(bootstrap) => Some(kafka_passes(bootstrap, args, workload, &batches, &raw_calls, events).await?),
        None => None,
    };

    Ok(json!({
        "workload": workload.name(),
        "events": events,
        "batch_size": args.batch_size,
        "invocations": batches.len(),
        "overhead": overhead,
        "kinesis": comparison(args.kinesis_passes, &raw, &relayed, raw_failed, events),
        "kafka": kafka,
    }))
}

async fn kafka_sink(bootstrap: &str, partitions: i32) -> Result<KafkaSink> {
    let topic = test_support::kafka::TestTopic::create_on(bootstrap, partitions).await;
    Ok(KafkaSink::connect(&topic.config, None).await?)
}

/// Raw produces and the relay on a Kafka broker, ABBA, each pass on a fresh topic.
async fn kafka_passes(
    bootstrap: &str,
    args: &Args,
    workload: Workload,
    batches: &[Vec<u8>],
    raw_calls: &[Vec<SinkRecord>],
    events: usize,
) -> Result<Value> {
    let relay_on = |sink| Relay::new(sink, MemoryDeadLetters::default(), PublishPolicy::default());
    let partitions = args.kafka_partitions;
    raw_pass(&kafka_sink(bootstrap, partitions).await?, raw_calls).await?;
    relay_pass(&relay_on(kafka_sink(bootstrap, partitions).await?), batches).await?;
    let (mut raw, mut relayed, mut raw_failed) = (Vec::new(), Vec::new(), 0);
    for pass in 0..args.kinesis_passes * 2 {
        if matches!(pass % 4, 0 | 3) {
            let (result, failed) = raw_pass(&kafka_sink(bootstrap, partitions).await?, raw_calls).await?;
            eprintln!(
                "{}: kafka raw pass {pass}: {:.0} events/s",
                workload.name(),
                result.events_per_second(events)
            );
            raw.push(result);
            raw_failed += failed;
        } else {
            let result = relay_pass(&relay_on(kafka_sink(bootstrap, partitions).await?), batches).await?;
            eprintln!(
                "{}: kafka relay pass {pass}: {:.0} events/s",
                workload.name(),
                result.events_per_second(events)
            );
            relayed.push(result);
        }
    }
    let (raw, relayed) = (Pass::mean(&raw), Pass::mean(&relayed));
    let mut figures = comparison(args.kinesis_passes, &raw, &relayed, raw_failed, events);
    figures["partitions"] = json!(partitions);
    Ok(figures)
}

/// The raw and relay passes' figures side by side, as both buses report them.
fn comparison(passes: usize, raw: &Pass, relayed: &Pass, raw_failed: u64, events: usize) -> Value {
    json!({
        "passes": passes,
        "raw_events_per_second": raw.events_per_second(events),
        "raw_cpu_ms_per_event": raw.cpu_ms_per_event(events),
        "raw_calls": raw.calls,
        "raw_failed_records": raw_failed,
        "relay_events_per_second": relayed.events_per_second(events),
        "relay_cpu_ms_per_event": relayed.cpu_ms_per_event(events),
        "relay_calls": relayed.calls,
        "ratio": relayed.events_per_second(events) / raw.events_per_second(events),
    })
}
