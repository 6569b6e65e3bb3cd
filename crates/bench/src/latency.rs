//! API `201` → projector applied, at a fixed offered rate, through the local pipeline in either
//! relay mode, on either bus.

use crate::{Bus, MAPPING_IDLE_WAIT, Mode, stats, stopped};
use anyhow::{Context, Result};
use consumers::{Consumer, ConsumerError, Projector};
use domain::{ApplyOutcome, Version};
use reservation_events_consumer::ReservationEvent;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The projector, noting when it applied each reservation's first version.
struct Timed<C> {
    inner: C,
    applied: Arc<Mutex<HashMap<String, Instant>>>,
}

impl<C: Consumer> Consumer for Timed<C> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, ConsumerError> {
        let outcome = self.inner.apply(event).await?;
        if outcome == ApplyOutcome::Applied && event.version == Version::FIRST {
            self.applied
                .lock()
                .unwrap()
                .entry(event.aggregate_id.clone())
                .or_insert_with(Instant::now);
        }
        Ok(outcome)
    }

    async fn applied_version(&self, event: &ReservationEvent) -> Result<Option<Version>, ConsumerError> {
        self.inner.applied_version(event).await
    }
}

pub async fn run(
    mode: Mode,
    bus: Bus,
    interval: Duration,
    rate: u32,
    seconds: u64,
    out: Option<std::path::PathBuf>,
) -> Result<()> {
    let stack = mode.stack().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    const SLOTS: usize = 16;
    for s in 0..SLOTS {
        api.put_slot(&http, &format!("bench-{s}"), 1_000_000).await;
    }
    let applied = Arc::new(Mutex::new(HashMap::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let timed = Timed {
        inner: Projector::new(stack.read_model()),
        applied: applied.clone(),
    };
    let topic = match bus {
        Bus::Kinesis => None,
        Bus::Kafka => Some(test_support::kafka::TestTopic::create(4).await),
    };
    let consumer = match &topic {
        None => {
            let projector = stack.consumer_mapping(timed).await;
            tokio::spawn(projector.run(MAPPING_IDLE_WAIT, stopped(stop_rx.clone())))
        }
        Some(topic) => {
            let projector = stack.consumer_mapping_on_kafka(topic, timed).await;
            tokio::spawn(projector.run(MAPPING_IDLE_WAIT, stopped(stop_rx.clone())))
        }
    };
    let relay = match (mode, &topic) {
        (Mode::Stream, None) => {
            let mapping = stack.relay_mapping().await;
            tokio::spawn(mapping.run(MAPPING_IDLE_WAIT, stopped(stop_rx.clone())))
        }
        (Mode::Stream, Some(topic)) => {
            let mapping = stack.relay_mapping_to_kafka(topic).await;
            tokio::spawn(mapping.run(MAPPING_IDLE_WAIT, stopped(stop_rx.clone())))
        }
        (Mode::Polling, None) => {
            let poller = stack.poller(interval);
            let rx = stop_rx.clone();
            tokio::spawn(async move {
                poller
                    .run(Instant::now() + Duration::from_secs(3600), false, stopped(rx))
                    .await;
            })
        }
        (Mode::Polling, Some(topic)) => {
            let poller = stack.poller_to_kafka(topic, interval).await;
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
            "bus": bus.name(),
            "interval_ms": mode.interval_ms(interval),
            "rate": rate,
            "seconds": seconds,
            "offered_seconds": offered_for.as_secs_f64(),
            "created": created.len(),
            "not_applied_within_60s": missing,
            "latency_ms": stats::summary(samples),
        })
    );
    Ok(())
}
