//! A Kinesis stand-in for fault injection, shared by the relay's and the poller's tests, and the
//! relay called with a typed event as Lambda would deliver it.

use aws_lambda_events::event::dynamodb::Event;
use dead_letters::DeadLetters;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use relay::{EventSink, PutOutcome, Relay, RelayOutcome, SinkError, SinkErrorKind, SinkRecord};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Fails a share of records at random (half of them as throttles) and throttles whole calls in
/// bursts of 1 to 4; records every accepted (reservation, version) in acceptance order.
pub struct FlakySink {
    pub state: Mutex<FlakyState>,
}

pub struct FlakyState {
    rng: StdRng,
    failure_rate: f64,
    throttle_burst_left: u32,
    pub accepted: Vec<(String, u64)>,
    pub throttled_calls: u32,
    pub failed_records: u32,
}

impl FlakySink {
    pub fn new(seed: u64, failure_rate: f64) -> Self {
        Self {
            state: Mutex::new(FlakyState {
                rng: StdRng::seed_from_u64(seed),
                failure_rate,
                throttle_burst_left: 0,
                accepted: Vec::new(),
                throttled_calls: 0,
                failed_records: 0,
            }),
        }
    }

    pub fn accepted(&self) -> Vec<(String, u64)> {
        self.state.lock().unwrap().accepted.clone()
    }
}

impl EventSink for FlakySink {
    async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, SinkError> {
        let mut state = self.state.lock().unwrap();
        if state.failure_rate > 0.0 && state.throttle_burst_left == 0 && state.rng.random_bool(0.03) {
            state.throttle_burst_left = state.rng.random_range(1..=4);
        }
        if state.throttle_burst_left > 0 {
            state.throttle_burst_left -= 1;
            state.throttled_calls += 1;
            return Err(SinkError {
                kind: SinkErrorKind::Throttled,
                source: "ProvisionedThroughputExceededException".into(),
            });
        }
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            let rate = state.failure_rate;
            if state.rng.random_bool(rate) {
                state.failed_records += 1;
                let code = if state.rng.random_bool(0.5) {
                    "ProvisionedThroughputExceededException"
                } else {
                    "InternalFailure"
                };
                outcomes.push(PutOutcome::Failed {
                    code: code.into(),
                    message: "injected".into(),
                });
            } else {
                let envelope: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
                state
                    .accepted
                    .push((record.partition_key.clone(), envelope["version"].as_u64().unwrap()));
                outcomes.push(PutOutcome::Accepted);
            }
        }
        Ok(outcomes)
    }
}

/// Invariants 3 and 4 on what a sink accepted: every expected event at least once, and no
/// reservation's accepted versions ever going back.
pub fn assert_all_accepted_in_version_order(
    accepted: &[(String, u64)],
    expected: impl IntoIterator<Item = (String, u64)>,
) {
    let delivered: HashSet<&(String, u64)> = accepted.iter().collect();
    for event in expected {
        assert!(delivered.contains(&event), "{} v{} was lost", event.0, event.1);
    }
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (key, version) in accepted {
        let previous = last.insert(key, *version).unwrap_or(0);
        assert!(*version >= previous, "{key}: v{version} accepted after v{previous}");
    }
}

/// What a consumer needs after a crash made a publisher send a run of events again: nothing lost,
/// and each reservation's versions appearing for the first time in version order, so a consumer
/// applying v only after v-1 never has to wait. Repeats of earlier runs are duplicates to it.
pub fn assert_all_accepted_first_in_version_order(
    accepted: &[(String, u64)],
    expected: impl IntoIterator<Item = (String, u64)>,
) {
    let delivered: HashSet<&(String, u64)> = accepted.iter().collect();
    for event in expected {
        assert!(delivered.contains(&event), "{} v{} was lost", event.0, event.1);
    }
    let mut highest: HashMap<&str, u64> = HashMap::new();
    for (key, version) in accepted {
        let seen = highest.entry(key).or_insert(0);
        assert!(
            *version <= *seen + 1,
            "{key}: v{version} first accepted before v{}",
            *seen + 1
        );
        *seen = (*seen).max(*version);
    }
}

/// Hands `event` to the relay as Lambda does: as its JSON.
pub async fn relay_event<S: EventSink, D: DeadLetters>(
    relay: &Relay<S, D>,
    event: &Event,
    deadline: tokio::time::Instant,
) -> RelayOutcome {
    let json = serde_json::to_string(event).expect("a typed event serializes");
    relay.handle(&json, deadline).await.expect("a typed event has Records")
}
