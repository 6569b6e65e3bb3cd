//! Invariants 3 and 4 for the relay alone: 10,000 outbox inserts of 2,000 reservations through a
//! sink that fails ~20% of records at random and throttles whole calls in bursts, with Lambda's
//! re-delivery simulated from the reported batch item failure. Every event is accepted at least
//! once, and each reservation's accepted versions never go back.

use crate::common::{FlakySink, assert_all_accepted_in_version_order, relay_event};
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use dead_letters::MemoryDeadLetters;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use relay::{PublishPolicy, Relay};
use std::time::Duration;
use test_support::events::{envelope, outbox_image, outbox_stream_record};
use tokio::time::Instant;

const RESERVATIONS: usize = 2_000;
const VERSIONS: u64 = 5;
const BATCH_SIZE: usize = 100;

fn stream_record(sequence: usize, reservation: usize, version: u64) -> EventRecord {
    let id = format!("R{reservation:05}");
    let image = outbox_image(&envelope(&id, version));
    serde_json::from_value(outbox_stream_record(
        "INSERT",
        sequence as u64 + 1,
        (&id, version),
        image,
    ))
    .unwrap()
}

/// The shard: every reservation's versions in order, reservations interleaved at random.
fn shard(rng: &mut StdRng) -> Vec<EventRecord> {
    let mut next_version = vec![1u64; RESERVATIONS];
    let mut open: Vec<usize> = (0..RESERVATIONS).collect();
    let mut records = Vec::new();
    while !open.is_empty() {
        let pick = rng.random_range(0..open.len());
        let reservation = open[pick];
        records.push(stream_record(records.len(), reservation, next_version[reservation]));
        next_version[reservation] += 1;
        if next_version[reservation] > VERSIONS {
            open.swap_remove(pick);
        }
    }
    records
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_events_through_random_failures_and_throttling_all_arrive_in_version_order() {
    let mut rng = StdRng::seed_from_u64(20261124);
    let records = shard(&mut rng);
    assert_eq!(records.len(), RESERVATIONS * VERSIONS as usize);
    let sink = FlakySink::new(7, 0.2);
    // A small failure budget so that giving up and Lambda's re-delivery happen often.
    let policy = PublishPolicy {
        max_failed_rounds: 3,
        backoff: domain::Backoff::new(Duration::from_millis(10), Duration::from_millis(200)),
    };
    let relay = Relay::new(sink, MemoryDeadLetters::default(), policy);

    // What the event source mapping does: a batch from the checkpoint, and on a reported failure,
    // the next batch starts at that record.
    let mut checkpoint = 0;
    let mut invocations = 0;
    let mut redeliveries = 0;
    while checkpoint < records.len() {
        invocations += 1;
        assert!(invocations < 20_000, "the relay must make progress");
        let end = (checkpoint + BATCH_SIZE).min(records.len());
        let mut event = Event::default();
        event.records = records[checkpoint..end].to_vec();
        let outcome = relay_event(&relay, &event, Instant::now() + Duration::from_secs(30)).await;
        match outcome.response.batch_item_failures.first() {
            None => checkpoint = end,
            Some(failure) => {
                redeliveries += 1;
                let sequence = failure.item_identifier.as_deref().unwrap();
                let offset = event
                    .records
                    .iter()
                    .position(|r| r.change.sequence_number.as_deref() == Some(sequence))
                    .unwrap();
                checkpoint += offset;
            }
        }
    }

    let state = relay.sink().state.lock().unwrap();
    assert!(
        state.failed_records > 1_000 && state.throttled_calls > 10,
        "faults were injected: {} records, {} calls",
        state.failed_records,
        state.throttled_calls
    );
    assert!(redeliveries > 0, "some batches were given back to Lambda");

    let expected = (0..RESERVATIONS).flat_map(|r| (1..=VERSIONS).map(move |v| (format!("R{r:05}"), v)));
    assert_all_accepted_in_version_order(&state.accepted, expected);
    println!(
        "accepted {} writes for {} events ({} duplicates), {} record failures, {} throttled calls, {} invocations, {} re-deliveries",
        state.accepted.len(),
        records.len(),
        state.accepted.len() - records.len(),
        state.failed_records,
        state.throttled_calls,
        invocations,
        redeliveries
    );
}
