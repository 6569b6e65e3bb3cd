//! A function binary's start under a Lambda Runtime API ([`crate::runtime_api`]): process start
//! → first `GET /runtime/invocation/next` (ready), → the first invocation's response, and the
//! process's peak RSS.

use crate::runtime_api::{RuntimeApi, Signal};
use crate::stats;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::time::Duration;
use test_support::events::fixtures;
use tokio::time::Instant;

/// A function of the product: the API, the relay, the poller, or a consumer of the one list
/// (`consumers::ALL`), by name.
#[derive(Clone, Copy)]
pub enum FunctionKind {
    Api,
    Relay,
    Poller,
    Consumer(&'static consumers::Registration),
}

impl FunctionKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Relay => "relay",
            Self::Poller => "poller",
            Self::Consumer(registration) => registration.name,
        }
    }
}

impl std::str::FromStr for FunctionKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "api" => Ok(Self::Api),
            "relay" => Ok(Self::Relay),
            "poller" => Ok(Self::Poller),
            name => consumers::named(name).map(Self::Consumer).ok_or_else(|| {
                let consumers: Vec<&str> = consumers::ALL.iter().map(|r| r.name).collect();
                format!(
                    "no function '{name}': api, relay, poller or a consumer ({})",
                    consumers.join(", ")
                )
            }),
        }
    }
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
        FunctionKind::Relay => serde_json::from_str(fixtures::OUTBOX_INSERT).expect("fixture"),
        FunctionKind::Consumer(_) => serde_json::from_str(fixtures::KINESIS_EVENT_AWS_SAMPLE).expect("fixture"),
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

/// Starts the binary once against a Runtime API serving `kind`'s first event: (ready ms,
/// answered ms, peak RSS KiB).
async fn start_once(
    binary: &std::path::Path,
    kind: FunctionKind,
    dead_letters: &std::path::Path,
) -> Result<(f64, f64, u64)> {
    let mut api = RuntimeApi::start(serde_json::to_vec(&first_event(kind))?).await?;
    let stack_env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| {
            k.starts_with("AWS_") || k.ends_with("_TABLE") || k == "EVENTS_STREAM" || k == "NOTIFICATIONS_TOPIC_ARN"
        })
        .collect();
    let spawned = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .envs(stack_env)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", api.address())
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
    let timeout = Instant::now() + Duration::from_secs(30);
    let (mut ready, mut answered) = (None, None);
    while answered.is_none() {
        let signal = tokio::time::timeout_at(timeout, api.next_signal())
            .await
            .context("the function did not answer its first event within 30 s")?;
        match signal {
            Some(Signal::Ready(at)) => ready = Some(at.duration_since(spawned)),
            Some(Signal::Answered(at)) => answered = Some(at.duration_since(spawned)),
            Some(Signal::Failed(body)) => bail!("{} answered its first event with an error: {body}", kind.name()),
            None => bail!("the Runtime API stopped"),
        }
    }
    let rss = peak_rss_kib(pid).unwrap_or(0);
    child.kill().await.ok();
    let ready = ready.context("never ready")?;
    let answered = answered.context("never answered")?;
    Ok((ready.as_secs_f64() * 1000.0, answered.as_secs_f64() * 1000.0, rss))
}

pub async fn run(binary: std::path::PathBuf, kind: FunctionKind, runs: usize) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("pipeline-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    let (mut ready, mut first, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (r, f, m) = start_once(&binary, kind, &dir.join("dead-letters.jsonl")).await?;
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
            // The functions take the bus from their environment, as on Lambda.
            "bus": std::env::var("EVENT_BUS").unwrap_or_else(|_| "kinesis".into()),
            "runs": runs,
            "ready_ms": stats::summary(ready),
            "first_invocation_done_ms": stats::summary(first),
            "peak_rss_mib": stats::summary(rss),
        })
    );
    Ok(())
}
