//! `pipeline-bench`: the benchmarks that compare the two relay modes and the functions, for
//! `scripts/bench.sh` (never tests). Each prints one JSON line; the script writes
//! docs/benchmarks.md from them.
//!
//!   pipeline-bench latency --mode stream|polling [--interval-ms N] --rate R --seconds S
//!       API 201 → projector applied, at a fixed offered rate, through the local pipeline
//!   pipeline-bench idle --mode stream|polling [--interval-ms N] --seconds S
//!       what the relay asks of DynamoDB while nothing happens, by operation
//!   pipeline-bench transactions --clients C --seconds S
//!       raw TransactWriteItems of the API's three items, no HTTP and no handler
//!   pipeline-bench init --binary PATH --kind api|relay|projector|notifier|poller --runs N
//!       a function's start under a Lambda Runtime API emulator: process start → first
//!       `GET /runtime/invocation/next`, the first invocation, and peak RSS

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use clap::{Parser, Subcommand, ValueEnum};
use consumers::{Consumer, Projector};
use devstack::testing::TestStack;
use domain::ports::StoreError;
use domain::{ApplyOutcome, ReservationEvent, Version};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Relay modes, API and function benchmarks on the embedded stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Stream,
    Polling,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Stream => "stream",
            Self::Polling => "polling",
        }
    }

    /// The poll interval, for result lines; none in stream mode.
    fn interval_ms(self, interval: Duration) -> Option<u64> {
        (self == Self::Polling).then_some(interval.as_millis() as u64)
    }
}

#[derive(Subcommand)]
enum Command {
    Latency {
        #[arg(long, value_enum)]
        mode: Mode,
        /// The poller's interval (polling mode).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Reservations per second, offered on a fixed schedule (not closed-loop).
        #[arg(long, default_value_t = 20)]
        rate: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Writes every sample (milliseconds, one per line) here, for the plot.
        #[arg(long)]
        samples_out: Option<std::path::PathBuf>,
    },
    Idle {
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    Transactions {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    Init {
        #[arg(long)]
        binary: std::path::PathBuf,
        #[arg(long, value_enum)]
        kind: FunctionKind,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

/// The local event source mappings' pause when a shard has nothing new (as `devstack up`).
const MAPPING_IDLE_WAIT: Duration = Duration::from_millis(100);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut samples: Vec<f64>) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "samples": samples.len(),
        "p50": percentile(&samples, 50.0),
        "p95": percentile(&samples, 95.0),
        "p99": percentile(&samples, 99.0),
        "max": samples.last().copied().unwrap_or(f64::NAN),
    })
}

/// The projector, noting when it applied each reservation's first version.
struct Timed<C> {
    inner: C,
    applied: Arc<Mutex<HashMap<String, Instant>>>,
}

impl<C: Consumer> Consumer for Timed<C> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, StoreError> {
        let outcome = self.inner.apply(event).await?;
        if outcome == ApplyOutcome::Applied && event.reservation.version == Version::FIRST {
            self.applied
                .lock()
                .unwrap()
                .entry(event.reservation.reservation_id.to_string())
                .or_insert_with(Instant::now);
        }
        Ok(outcome)
    }

    async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, StoreError> {
        self.inner.applied_version(event).await
    }
}

async fn stack_for(mode: Mode) -> TestStack {
    let stack = TestStack::start().await;
    match mode {
        Mode::Stream => stack,
        Mode::Polling => stack.polling(),
    }
}

async fn latency(
    mode: Mode,
    interval: Duration,
    rate: u32,
    seconds: u64,
    out: Option<std::path::PathBuf>,
) -> Result<()> {
    let stack = stack_for(mode).await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    const SLOTS: usize = 16;
    for s in 0..SLOTS {
        api.put_slot(&http, &format!("bench-{s}"), 1_000_000).await;
    }
    let applied = Arc::new(Mutex::new(HashMap::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let projector = stack
        .consumer_mapping(Timed {
            inner: Projector::new(stack.read_model()),
            applied: applied.clone(),
        })
        .await;
    let consumer = tokio::spawn(projector.run(MAPPING_IDLE_WAIT, stopped(stop_rx.clone())));
    let relay = match mode {
        Mode::Stream => {
            let mapping = stack.relay_mapping().await;
            tokio::spawn(mapping.run(MAPPING_IDLE_WAIT, stopped(stop_rx.clone())))
        }
        Mode::Polling => {
            let poller = stack.poller(interval);
            let rx = stop_rx.clone();
            tokio::spawn(async move {
                poller
                    .run(Instant::now() + Duration::from_secs(3600), false, stopped(rx))
                    .await;
            })
        }
    };
    // Let the mappings reach the end of their (empty) shards before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let created: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let total = u64::from(rate) * seconds;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    let mut requests = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until(start + period * i as u32).await;
        let (http, url, created) = (http.clone(), api.url("/reservations"), created.clone());
        requests.push(tokio::spawn(async move {
            let body =
                json!({ "slot_id": format!("bench-{}", i as usize % SLOTS), "guest_id": format!("g{i}"), "seats": 1 });
            let response = http.post(url).json(&body).send().await.ok()?;
            let answered = Instant::now();
            if response.status() != 201 {
                return None;
            }
            let body: serde_json::Value = response.json().await.ok()?;
            let id = body["reservation_id"].as_str()?.to_owned();
            created.lock().unwrap().push((id, answered));
            Some(())
        }));
    }
    for request in requests {
        request.await?;
    }
    let offered_for = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let applied = applied.lock().unwrap();
            created.lock().unwrap().iter().all(|(id, _)| applied.contains_key(id))
        };
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send_replace(true);
    let _ = tokio::join!(consumer, relay);

    let created = created.lock().unwrap().clone();
    let applied = applied.lock().unwrap();
    let samples: Vec<f64> = created
        .iter()
        .filter_map(|(id, answered)| {
            applied
                .get(id)
                .map(|t| t.duration_since(*answered).as_secs_f64() * 1000.0)
        })
        .collect();
    if let Some(path) = out {
        let text: String = samples.iter().map(|s| format!("{s:.3}\n")).collect();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let missing = created.len() - samples.len();
    println!(
        "{}",
        json!({
            "benchmark": "latency",
            "mode": mode.name(),
            "interval_ms": mode.interval_ms(interval),
            "rate": rate,
            "seconds": seconds,
            "offered_seconds": offered_for.as_secs_f64(),
            "created": created.len(),
            "not_applied_within_60s": missing,
            "latency_ms": summary(samples),
        })
    );
    Ok(())
}

/// Counts each operation a client sends (retries included once).
#[derive(Debug, Clone, Default)]
struct CountCalls(Arc<Mutex<BTreeMap<String, u64>>>);

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_after_execution(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            *self.0.lock().unwrap().entry(metadata.name().to_owned()).or_default() += 1;
        }
        Ok(())
    }
}

const TABLE_READS: &[&str] = &["Query", "Scan", "GetItem", "BatchGetItem"];

async fn idle(mode: Mode, interval: Duration, seconds: u64) -> Result<()> {
    let stack = stack_for(mode).await;
    let table_calls = CountCalls::default();
    let stream_calls = CountCalls::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let task = match mode {
        Mode::Stream => {
            // The relay itself has no DynamoDB table client; only its mapping reads the stream.
            let streams = aws_sdk_dynamodbstreams::Client::from_conf(
                aws_sdk_dynamodbstreams::config::Builder::from(&stack.sdk)
                    .interceptor(stream_calls.clone())
                    .build(),
            );
            let arn = devstack::pipeline::outbox_stream_arn(&stack.dynamodb, &stack.name("OUTBOX_TABLE")).await?;
            let relay = relay::Relay::new(
                relay::KinesisSink::new(stack.kinesis.clone(), stack.name("EVENTS_STREAM")),
                relay::MemoryDeadLetters::default(),
                relay::PublishPolicy::default(),
            );
            let mapping = event_source_mapping::EventSourceMapping::new(
                event_source_mapping::DynamoDbStreamsSource::new(streams, arn),
                event_source_mapping::function::TypedFunction::new(devstack::pipeline::RelayHandler(relay)),
                None::<event_source_mapping::MemoryOnFailure>,
                devstack::pipeline::relay_mapping_config(),
            );
            tokio::spawn(mapping.run(MAPPING_IDLE_WAIT, stopped(stop_rx)))
        }
        Mode::Polling => {
            let dynamodb = aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&stack.sdk)
                    .interceptor(table_calls.clone())
                    .build(),
            );
            let outbox = adapters::DynamoOutbox::new(dynamodb, stack.name("OUTBOX_TABLE"));
            let poller = relay::Poller::new(
                outbox.clone(),
                outbox,
                relay::KinesisSink::new(stack.kinesis.clone(), stack.name("EVENTS_STREAM")),
                relay::MemoryDeadLetters::default(),
                relay::PublishPolicy::default(),
                relay::PollerSettings {
                    interval,
                    ..Default::default()
                },
            );
            tokio::spawn(async move {
                poller
                    .run(Instant::now() + Duration::from_secs(3600), false, stopped(stop_rx))
                    .await;
            })
        }
    };
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop_tx.send_replace(true);
    task.await?;
    let per_minute = |calls: &CountCalls, filter: &dyn Fn(&str) -> bool| -> f64 {
        let total: u64 = calls
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, _)| filter(op))
            .map(|(_, n)| n)
            .sum();
        total as f64 * 60.0 / seconds as f64
    };
    let is_read = |op: &str| TABLE_READS.contains(&op);
    println!(
        "{}",
        json!({
            "benchmark": "idle",
            "mode": mode.name(),
            "interval_ms": mode.interval_ms(interval),
            "seconds": seconds,
            "table_reads_per_minute": per_minute(&table_calls, &is_read),
            "table_writes_per_minute": per_minute(&table_calls, &|op| !is_read(op)),
            "stream_reads_per_minute": per_minute(&stream_calls, &|op| op == "GetRecords"),
            "table_calls": *table_calls.0.lock().unwrap(),
            "stream_calls": *stream_calls.0.lock().unwrap(),
        })
    );
    Ok(())
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The API's create as bare SDK calls: the conditional slot update, the reservation put and the
/// outbox put, item sizes like the API's, one transaction per reservation.
fn raw_create(stack: &TestStack, slot: &str) -> Result<Vec<TransactWriteItem>> {
    let id = ulid::Ulid::new().to_string();
    let update = Update::builder()
        .table_name(stack.name("RESERVATIONS_TABLE"))
        .key("pk", s(format!("SLOT#{slot}")))
        .update_expression("SET reserved = reserved + :seats, available = available - :seats")
        .condition_expression("available >= :seats")
        .expression_attribute_values(":seats", n(1))
        .build()?;
    let reservation = Put::builder()
        .table_name(stack.name("RESERVATIONS_TABLE"))
        .item("pk", s(format!("RESERVATION#{id}")))
        .item("item_type", s("Reservation"))
        .item("reservation_id", s(&id))
        .item("slot_id", s(slot))
        .item("guest_id", s("bench"))
        .item("seats", n(1))
        .item("status", s("CONFIRMED"))
        .item("version", n(1))
        .item("created_at", s("2026-11-24T10:00:00.000Z"))
        .condition_expression("attribute_not_exists(pk)")
        .build()?;
    let payload = AttributeValue::M(HashMap::from([
        ("reservation_id".to_owned(), s(&id)),
        ("slot_id".to_owned(), s(slot)),
        ("guest_id".to_owned(), s("bench")),
        ("seats".to_owned(), n(1)),
        ("status".to_owned(), s("CONFIRMED")),
        ("version".to_owned(), n(1)),
        ("created_at".to_owned(), s("2026-11-24T10:00:00.000Z")),
    ]));
    let outbox = Put::builder()
        .table_name(stack.name("OUTBOX_TABLE"))
        .item("aggregate_id", s(&id))
        .item("version", n(1))
        .item("item_type", s("OutboxEvent"))
        .item("event_id", s(ulid::Ulid::new().to_string()))
        .item("event_type", s("ReservationCreated"))
        .item("aggregate_type", s("Reservation"))
        .item("occurred_at", s("2026-11-24T10:00:00.000Z"))
        .item("payload", payload)
        .item("trace_id", s(ulid::Ulid::new().to_string()))
        .item("expires_at", n(1_795_500_000))
        .condition_expression("attribute_not_exists(aggregate_id)")
        .build()?;
    Ok(vec![
        TransactWriteItem::builder().update(update).build(),
        TransactWriteItem::builder().put(reservation).build(),
        TransactWriteItem::builder().put(outbox).build(),
    ])
}

async fn transactions(clients: usize, seconds: u64) -> Result<()> {
    let stack = Arc::new(TestStack::start().await);
    const SLOTS: usize = 64;
    for slot in 0..SLOTS {
        stack
            .dynamodb
            .put_item()
            .table_name(stack.name("RESERVATIONS_TABLE"))
            .item("pk", s(format!("SLOT#bench-{slot}")))
            .item("item_type", s("Slot"))
            .item("capacity", n(1_000_000))
            .item("reserved", n(0))
            .item("available", n(1_000_000))
            .send()
            .await?;
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            let stack = stack.clone();
            tokio::spawn(async move {
                let (mut latencies, mut failures) = (Vec::new(), 0u64);
                let mut i = c;
                while Instant::now() < end {
                    let items = raw_create(&stack, &format!("bench-{}", i % SLOTS))?;
                    let started = Instant::now();
                    let result = stack
                        .dynamodb
                        .transact_write_items()
                        .set_transact_items(Some(items))
                        .client_request_token(uuid_like())
                        .send()
                        .await;
                    match result {
                        Ok(_) => latencies.push(started.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => failures += 1,
                    }
                    i += clients;
                }
                anyhow::Ok((latencies, failures))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (l, f) = worker.await??;
        latencies.extend(l);
        failures += f;
    }
    println!(
        "{}",
        json!({
            "benchmark": "transactions",
            "clients": clients,
            "seconds": seconds,
            "committed": latencies.len(),
            "failed": failures,
            "committed_per_second": latencies.len() as f64 / seconds as f64,
            "latency_ms": summary(latencies),
        })
    );
    Ok(())
}

fn uuid_like() -> String {
    ulid::Ulid::new().to_string()
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FunctionKind {
    Api,
    Relay,
    Projector,
    Notifier,
    Poller,
}

/// The first event each function gets: a real shape for its trigger.
fn first_event(kind: FunctionKind) -> serde_json::Value {
    match kind {
        FunctionKind::Api => json!({
            "version": "2.0",
            "routeKey": "GET /slots/{slot_id}",
            "rawPath": "/slots/bench-slot",
            "rawQueryString": "",
            "headers": { "accept": "application/json" },
            "pathParameters": { "slot_id": "bench-slot" },
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "bench",
                "domainName": "bench.execute-api.us-east-1.amazonaws.com",
                "domainPrefix": "bench",
                "http": { "method": "GET", "path": "/slots/bench-slot", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "bench" },
                "requestId": "bench-request",
                "routeKey": "GET /slots/{slot_id}",
                "stage": "$default",
                "time": "24/Nov/2026:10:00:00 +0000",
                "timeEpoch": 1_795_514_400_000u64
            },
            "isBase64Encoded": false
        }),
        FunctionKind::Relay => {
            serde_json::from_str(include_str!("../../../relay/tests/fixtures/outbox-insert.json")).expect("fixture")
        }
        FunctionKind::Projector | FunctionKind::Notifier => serde_json::from_str(include_str!(
            "../../../consumers/tests/fixtures/kinesis-event-aws-sample.json"
        ))
        .expect("fixture"),
        FunctionKind::Poller => json!({ "source": "aws.events", "detail-type": "Scheduled Event", "detail": {} }),
    }
}

/// Peak resident set size of a process, in KiB (Linux `VmHWM`).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A Lambda Runtime API that serves one event, then reports what it measured.
async fn init_once(
    binary: &std::path::Path,
    kind: FunctionKind,
    dead_letters: &std::path::Path,
) -> Result<(f64, f64, u64)> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let stack_env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k.ends_with("_TABLE") || k == "EVENTS_STREAM")
        .collect();
    let spawned = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(stack_env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
        .env("AWS_LAMBDA_FUNCTION_NAME", "bench")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("DEAD_LETTER_FILE", dead_letters)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id().context("child pid")?;
    let event = serde_json::to_vec(&first_event(kind))?;
    let mut ready = None;
    let mut answered = None;
    let deadline_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis()
        + 1_500;
    let timeout = Instant::now() + Duration::from_secs(30);
    while answered.is_none() {
        let (socket, _) = tokio::time::timeout_at(timeout, listener.accept())
            .await
            .context("the function never called the Runtime API")??;
        let mut reader = BufReader::new(socket);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).await? == 0 {
                break;
            }
            let mut content_length = 0usize;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).await?;
                if header == "\r\n" || header.is_empty() {
                    break;
                }
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body).await?;
            let socket = reader.get_mut();
            if request_line.starts_with("GET") && request_line.contains("/invocation/next") {
                if ready.is_some() {
                    // The second `next`: the first invocation is done; measure and stop.
                    answered.get_or_insert_with(|| spawned.elapsed());
                    break;
                }
                ready = Some(spawned.elapsed());
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nlambda-runtime-aws-request-id: bench-1\r\nlambda-runtime-deadline-ms: {deadline_ms}\r\nlambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:123456789012:function:bench\r\nlambda-runtime-trace-id: Root=1-00000000-000000000000000000000000\r\n\r\n",
                    event.len()
                );
                socket.write_all(head.as_bytes()).await?;
                socket.write_all(&event).await?;
            } else if request_line.starts_with("POST") {
                if request_line.contains("/error") {
                    bail!(
                        "{kind:?} answered its first event with an error: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                answered = Some(spawned.elapsed());
                socket
                    .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
                    .await?;
            } else {
                socket
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await?;
            }
            if answered.is_some() {
                break;
            }
        }
    }
    let rss = peak_rss_kib(pid).unwrap_or(0);
    child.kill().await.ok();
    let ready = ready.context("never ready")?;
    let answered = answered.context("never answered")?;
    Ok((ready.as_secs_f64() * 1000.0, answered.as_secs_f64() * 1000.0, rss))
}

async fn init(binary: std::path::PathBuf, kind: FunctionKind, runs: usize) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("pipeline-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    let (mut ready, mut first, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (r, f, m) = init_once(&binary, kind, &dir.join("dead-letters.jsonl")).await?;
        ready.push(r);
        first.push(f);
        rss.push(m as f64 / 1024.0);
    }
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "{}",
        json!({
            "benchmark": "init",
            "binary": binary.file_name().map(|n| n.to_string_lossy().into_owned()),
            "runs": runs,
            "ready_ms": summary(ready),
            "first_invocation_done_ms": summary(first),
            "peak_rss_mib": summary(rss),
        })
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Latency {
            mode,
            interval_ms,
            rate,
            seconds,
            samples_out,
        } => latency(mode, Duration::from_millis(interval_ms), rate, seconds, samples_out).await,
        Command::Idle {
            mode,
            interval_ms,
            seconds,
        } => idle(mode, Duration::from_millis(interval_ms), seconds).await,
        Command::Transactions { clients, seconds } => transactions(clients, seconds).await,
        Command::Init { binary, kind, runs } => init(binary, kind, runs).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
