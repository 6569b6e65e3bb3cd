//! Invariant 2 (no overbooking) under load, on the real engines: 1,000 concurrent
//! `POST /reservations` through the local HTTP API for one slot of capacity 100 (in one item, or
//! split over 16 shards). Exactly 100 are created, the other 900 answer 409 `sold_out`, the slot
//! shows 100 reserved, and exactly 100 ReservationCreated events reach the bus (Kinesis, or a
//! Kafka topic), one per created reservation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use test_support::kafka::TestTopic;
use test_support::stack::TestStack;

const REQUESTS: usize = 1_000;
const CAPACITY: u32 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_reservations_for_a_hundred_seats_sell_exactly_a_hundred() {
    sell_out(None, 1, "load").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_slot_of_sixteen_shards_a_thousand_concurrent_reservations_sell_exactly_a_hundred_seats() {
    sell_out(None, 16, "load-sharded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_kafka_a_thousand_concurrent_reservations_for_a_slot_of_sixteen_shards_sell_a_hundred_seats_and_a_hundred_events_reach_the_topic()
 {
    // Sharded here, one item on Kinesis above: the bus sees the same events either way.
    sell_out(Some(TestTopic::create(4).await), 16, "load-kafka").await;
}

/// The run on a slot of `shards` shards, publishing to `topic` on the Kafka bus, or to the
/// stack's Kinesis stream.
async fn sell_out(topic: Option<TestTopic>, shards: u16, figures: &str) {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_sharded_slot(&http, "hot", CAPACITY, shards).await;

    // All requests leave together: each waits at the barrier with its request ready.
    let barrier = Arc::new(tokio::sync::Barrier::new(REQUESTS));
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let (http, url, barrier) = (http.clone(), api.url("/reservations"), barrier.clone());
            tokio::spawn(async move {
                let request = http
                    .post(url)
                    .json(&serde_json::json!({ "slot_id": "hot", "guest_id": format!("g{i}"), "seats": 1 }));
                barrier.wait().await;
                let response = request.send().await.expect("the local API answers");
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.expect("a JSON body");
                (status, body)
            })
        })
        .collect();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut created = BTreeSet::new();
    for request in requests {
        let (status, body) = request.await.unwrap();
        *statuses.entry(status).or_default() += 1;
        match status {
            201 => {
                created.insert(body["reservation_id"].as_str().unwrap().to_owned());
            }
            _ => *codes.entry(body["code"].as_str().unwrap_or("").to_owned()).or_default() += 1,
        }
    }
    assert_eq!(
        statuses,
        BTreeMap::from([(201, CAPACITY as usize), (409, REQUESTS - CAPACITY as usize)]),
        "codes of the non-201 answers: {codes:?}"
    );
    assert_eq!(
        codes,
        BTreeMap::from([("sold_out".to_owned(), REQUESTS - CAPACITY as usize)]),
        "every refusal is sold_out, none a conflict"
    );
    assert_eq!(created.len(), CAPACITY as usize, "every 201 is its own reservation");

    let slot = api.get_json(&http, "/slots/hot").await;
    assert_eq!(
        (slot["reserved"].as_u64(), slot["available"].as_u64()),
        (Some(100), Some(0))
    );
    assert_eq!(slot["shards"].as_u64(), Some(u64::from(shards)));

    let events = match &topic {
        None => {
            stack.relay_mapping().await.drain().await.unwrap();
            stack.events_on_kinesis().await
        }
        Some(topic) => {
            stack.relay_mapping_to_kafka(topic).await.drain().await.unwrap();
            topic.events().await
        }
    };
    let on_stream: BTreeSet<String> = events
        .iter()
        .map(|e| {
            let envelope = e.envelope.as_ref().unwrap();
            assert_eq!(envelope.event_type.as_str(), "ReservationCreated");
            envelope.aggregate_id.to_string()
        })
        .collect();
    assert_eq!(
        events.len(),
        CAPACITY as usize,
        "exactly one event per created reservation"
    );
    assert_eq!(on_stream, created);
    test_support::figures::record(
        figures,
        serde_json::json!({ "requests": REQUESTS, "capacity": CAPACITY, "shards": shards, "statuses": statuses, "codes": codes, "events_on_the_bus": events.len() }),
    );
}
