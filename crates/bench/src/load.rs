//! Offered load against a running reservations API (`loadgen`).
//!
//! Creates `--slots` slots (of `--shards` shards each) with room for every request, then runs
//! `--clients` concurrent clients, each sending `POST /reservations` back to back (1 seat, a slot
//! picked at random, so clients do not march over the slots in step) until the time is up; a
//! client told to come back later (429, 503 with `Retry-After`) waits that long first. With `--capacity C --until-sold-out` the slots hold
//! C seats and each client stops at its first `sold_out` (a sell-out). Prints one JSON line:
//! requests, statuses and problem codes, rate and latency percentiles.

use crate::stats;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Distinct slots the load is spread over; 1 makes every request contend on one item.
    #[arg(long, default_value_t = 64)]
    pub slots: usize,
    /// Prefix for the slot ids, so runs do not share slots.
    #[arg(long, default_value = "bench")]
    pub slot_prefix: String,
    /// Inventory items each slot's seats are split over.
    #[arg(long, default_value_t = 1)]
    pub shards: u16,
    /// Seats per slot.
    #[arg(long, default_value_t = 1_000_000)]
    pub capacity: u32,
    /// Each client stops at its first 409 `sold_out`.
    #[arg(long)]
    pub until_sold_out: bool,
}

/// Runs the load and prints one JSON line: requests, statuses, rate and latency percentiles.
pub async fn run(args: Args) -> Result<()> {
    if !(args.url.starts_with("http://127.") || args.url.starts_with("http://localhost")) {
        bail!("loadgen only targets loopback addresses, got {}", args.url);
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let slots: Vec<String> = (0..args.slots)
        .map(|i| format!("{}-{run}-{i}", args.slot_prefix))
        .collect();
    for slot in &slots {
        let response = http
            .put(format!("{}/slots/{slot}", args.url))
            .json(&json!({ "capacity": args.capacity, "shards": args.shards }))
            .send()
            .await
            .context("creating a slot")?;
        if !response.status().is_success() {
            bail!("creating slot {slot}: {}", response.status());
        }
    }

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let http = http.clone();
        let url = format!("{}/reservations", args.url);
        let slots = slots.clone();
        let until_sold_out = args.until_sold_out;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
            let mut codes: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let slot = &slots[rand::random_range(0..slots.len())];
                let body = json!({ "slot_id": slot, "guest_id": format!("g{client}"), "seats": 1 });
                let sent = Instant::now();
                let (status, code, retry_after) = match http.post(&url).json(&body).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let retry_after = response
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        let body: serde_json::Value = response.json().await.unwrap_or_default();
                        (status, body["code"].as_str().map(str::to_owned), retry_after)
                    }
                    Err(_) => (0, None, None),
                };
                latencies.push(sent.elapsed());
                // A well-behaved client: told to come back later (429, 503), it waits that long.
                if let Some(seconds) = retry_after {
                    tokio::time::sleep(
                        Duration::from_secs(seconds).min(deadline.saturating_duration_since(Instant::now())),
                    )
                    .await;
                }
                *statuses.entry(status).or_default() += 1;
                if let Some(code) = &code {
                    *codes.entry(code.clone()).or_default() += 1;
                }
                if until_sold_out && code.as_deref() == Some("sold_out") {
                    break;
                }
            }
            (latencies, statuses, codes)
        }));
    }
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let (l, s, c) = task.await?;
        latencies.extend(l);
        for (status, count) in s {
            *statuses.entry(status).or_default() += count;
        }
        for (code, count) in c {
            *codes.entry(code).or_default() += count;
        }
    }
    // What the slots hold at the end, as the API reports them.
    let mut reserved = 0u64;
    for slot in &slots {
        let view: serde_json::Value = http
            .get(format!("{}/slots/{slot}", args.url))
            .send()
            .await
            .context("reading a slot")?
            .json()
            .await
            .context("a slot's JSON")?;
        reserved += view["reserved"].as_u64().unwrap_or_default();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let created = statuses.get(&201).copied().unwrap_or_default();
    let report = json!({
        "clients": args.clients,
        "slots": args.slots,
        "shards": args.shards,
        "capacity": args.capacity,
        "seconds": elapsed,
        "requests": latencies.len(),
        "statuses": statuses,
        "codes": codes,
        "reserved": reserved,
        "created_per_second": created as f64 / elapsed,
        "latency_ms": stats::summary(latencies.iter().map(|l| l.as_secs_f64() * 1000.0).collect()),
    });
    println!("{report}");
    Ok(())
}
