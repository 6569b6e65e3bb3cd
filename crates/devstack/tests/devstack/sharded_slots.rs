//! Slots split over shards (docs/design.md, "Sharded slots"), on DynamoDB Local through the real
//! SDK: the API's answers, and a property over concurrent books, cancels and resizes: no shard
//! ever holds more reservations than its share, no seat is lost between shards (the shares add
//! up to the capacity, each shard's reservations are the seats its reservations say they took
//! from it), a `sold_out` only when the slot could have lacked the seats at some moment of the
//! request, and a refused resize only when the reservations could have exceeded it.

use adapters::dynamodb::items::{ReservationItem, SlotItem};
use api::request::{CreateReservation, PutSlot};
use api::service::{CreateOutcome, ServiceError};
use api::{ReservationService, RetryPolicy};
use aws_sdk_dynamodb::types::AttributeValue;
use domain::{Capacity, GuestId, ReservationId, Seats, ShardCount, SlotId, TraceId};
use futures::future::join_all;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use test_support::stack::TestStack;
use tokio::time::Instant;

#[tokio::test]
async fn a_sharded_slot_books_across_shards_gives_seats_back_and_resizes_through_the_api() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    let put = |body: serde_json::Value| http.put(api.url("/slots/flash")).json(&body).send();
    assert_eq!(
        put(json!({ "capacity": 20, "shards": 8 })).await.unwrap().status(),
        StatusCode::CREATED
    );
    let slot = api.get_json(&http, "/slots/flash").await;
    assert_eq!(
        slot,
        json!({ "slot_id": "flash", "capacity": 20, "reserved": 0, "available": 20, "shards": 8 })
    );

    // 15 seats: more than any shard holds (3 at most), so it draws on several in one transaction.
    let reserve = |seats: u32| {
        http.post(api.url("/reservations"))
            .json(&json!({ "slot_id": "flash", "guest_id": "ada", "seats": seats }))
            .send()
    };
    let big: serde_json::Value = reserve(15).await.unwrap().json().await.unwrap();
    assert_eq!(big["seats"], 15, "{big}");
    assert_eq!(reserve(5).await.unwrap().status(), StatusCode::CREATED);
    let refused = reserve(1).await.unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["code"], "sold_out");

    // The cancel gives the 15 seats back to the shards they came from.
    let id = big["reservation_id"].as_str().unwrap();
    let cancelled = http
        .post(api.url(&format!("/reservations/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), StatusCode::OK);
    let slot = api.get_json(&http, "/slots/flash").await;
    assert_eq!(
        (slot["reserved"].as_u64(), slot["available"].as_u64()),
        (Some(5), Some(15))
    );

    // Resizes spread over the shards, never below what is reserved; the count is fixed.
    let resized = put(json!({ "capacity": 9 })).await.unwrap();
    assert_eq!(resized.status(), StatusCode::OK);
    assert_eq!(resized.json::<serde_json::Value>().await.unwrap()["capacity"], 9);
    let below = put(json!({ "capacity": 4 })).await.unwrap();
    assert_eq!(below.status(), StatusCode::CONFLICT);
    assert_eq!(
        below.json::<serde_json::Value>().await.unwrap()["code"],
        "capacity_below_reserved"
    );
    let other_count = put(json!({ "capacity": 9, "shards": 4 })).await.unwrap();
    assert_eq!(other_count.status(), StatusCode::CONFLICT);
    assert_eq!(
        other_count.json::<serde_json::Value>().await.unwrap()["code"],
        "shards_differ"
    );
    assert_eq!(
        put(json!({ "capacity": 9, "shards": 8 })).await.unwrap().status(),
        StatusCode::OK
    );

    let (shards, _) = slot_state(&stack, "flash").await;
    assert_eq!(shards.len(), 8, "eight inventory items");
    assert_eq!(shards.iter().map(|s| s.capacity.get()).sum::<u32>(), 9);
    assert!(
        shards
            .iter()
            .all(|s| s.reserved <= s.capacity.get() && s.available == s.capacity.get() - s.reserved)
    );
}

/// One request of a round; the rounds' requests run at once.
#[derive(Debug, Clone)]
enum Op {
    Book(u32),
    /// Cancels the confirmed reservation at this index (modulo their number), if any.
    Cancel(usize),
}

#[derive(Debug, Clone)]
struct Round {
    ops: Vec<Op>,
    /// At most one resize per round, so that its effect is known.
    resize: Option<u32>,
}

#[derive(Debug, Clone)]
struct Plan {
    shards: u16,
    capacity: u32,
    rounds: Vec<Round>,
}

fn plans() -> impl Strategy<Value = Plan> {
    let op = prop_oneof![3 => (1u32..=6).prop_map(Op::Book), 2 => any::<usize>().prop_map(Op::Cancel)];
    let round = (prop::collection::vec(op, 1..=6), prop::option::weighted(0.3, 0u32..=30))
        .prop_map(|(ops, resize)| Round { ops, resize });
    (2u16..=8, 0u32..=24, prop::collection::vec(round, 1..=5)).prop_map(|(shards, capacity, rounds)| Plan {
        shards,
        capacity,
        rounds,
    })
}

type Request<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send + 'a>>;

/// What one request did, and when it was in flight.
#[derive(Debug)]
struct Done {
    kind: Kind,
    started: Instant,
    ended: Instant,
}

#[derive(Debug)]
enum Kind {
    Booked(ReservationId, u32),
    SoldOut(u32),
    Cancelled(u32),
    Resized(u32),
    ResizeRefused(u32),
    /// Retries ran out (429): nothing committed.
    Contended,
    NothingToDo,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_books_cancels_and_resizes_of_a_sharded_slot_never_overbook_lose_seats_or_say_sold_out_falsely() {
    let stack = TestStack::start().await;
    let service = ReservationService::new(stack.store(), RetryPolicy::default());
    let cases = test_support::cases(6);
    let seed: u64 = std::env::var("SHARDED_SLOTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64);
    println!("sharded slots: {cases} cases, SHARDED_SLOTS_SEED={seed}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(
        Config::with_cases(cases),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    let mut sold_out = 0;
    for case in 0..cases {
        let plan = plans().new_tree(&mut runner).expect("a plan").current();
        sold_out += run(&stack, &service, &format!("prop-{seed}-{case}"), &plan).await;
    }
    println!("sharded slots: {sold_out} sold_out answers checked");
}

/// Runs `plan` on a new slot `slot_id`, checking the invariants after every round; returns how
/// many sold_out answers it checked.
async fn run(
    stack: &TestStack,
    service: &ReservationService<adapters::DynamoReservationStore>,
    slot: &str,
    plan: &Plan,
) -> usize {
    let slot_id = SlotId::parse(slot).unwrap();
    let shards = ShardCount::new(i64::from(plan.shards)).unwrap();
    service
        .put_slot(
            &slot_id,
            PutSlot {
                capacity: Capacity::new(i64::from(plan.capacity)).unwrap(),
                home_region: None,
                shards: Some(shards),
            },
        )
        .await
        .unwrap();
    let mut capacity = plan.capacity;
    let mut confirmed: Vec<(ReservationId, u32)> = Vec::new();
    let mut checked = 0;
    for (r, round) in plan.rounds.iter().enumerate() {
        let context = format!("{plan:?}, round {r}");
        let (_, before) = slot_state(stack, slot).await;
        let reserved_before: u32 = before.values().sum();
        let mut requests = Vec::new();
        for op in &round.ops {
            let target = match op {
                Op::Cancel(i) if !confirmed.is_empty() => Some(confirmed[i % confirmed.len()].clone()),
                _ => None,
            };
            let (slot_id, op) = (slot_id.clone(), op.clone());
            requests.push(Box::pin(async move {
                let started = Instant::now();
                let kind = match op {
                    Op::Book(seats) => book(service, &slot_id, seats).await,
                    Op::Cancel(_) => match target {
                        None => Kind::NothingToDo,
                        Some((id, seats)) => match service.cancel_reservation(&id, TraceId::generate()).await {
                            Ok(_) => Kind::Cancelled(seats),
                            Err(ServiceError::NotCancellable(_)) => Kind::NothingToDo,
                            Err(ServiceError::Contended { .. }) => Kind::Contended,
                            Err(e) => panic!("cancel: {e}"),
                        },
                    },
                };
                Done {
                    kind,
                    started,
                    ended: Instant::now(),
                }
            }) as Request<'_>);
        }
        if let Some(new) = round.resize {
            let slot_id = slot_id.clone();
            requests.push(Box::pin(async move {
                let started = Instant::now();
                let command = PutSlot {
                    capacity: Capacity::new(i64::from(new)).unwrap(),
                    home_region: None,
                    shards: None,
                };
                let kind = match service.put_slot(&slot_id, command).await {
                    Ok(_) => Kind::Resized(new),
                    Err(ServiceError::CapacityBelowReserved { .. }) => Kind::ResizeRefused(new),
                    Err(ServiceError::Contended { .. }) => Kind::Contended,
                    Err(e) => panic!("resize: {e}"),
                };
                Done {
                    kind,
                    started,
                    ended: Instant::now(),
                }
            }) as Request<'_>);
        }
        let done = join_all(requests).await;

        // What each answer may claim, given what else was in flight.
        for d in &done {
            match d.kind {
                Kind::SoldOut(seats) => {
                    checked += 1;
                    let least = least_available(&done, d, capacity, reserved_before);
                    assert!(
                        least < i64::from(seats),
                        "sold_out for {seats} seats though at least {least} were free throughout: {context}, {done:?}"
                    );
                }
                Kind::ResizeRefused(new) => {
                    let most = most_reserved(&done, d, reserved_before);
                    assert!(
                        most > i64::from(new),
                        "resize to {new} refused though at most {most} were reserved: {context}, {done:?}"
                    );
                }
                _ => {}
            }
        }
        for d in &done {
            match &d.kind {
                Kind::Booked(id, seats) => confirmed.push((id.clone(), *seats)),
                Kind::Cancelled(_) => {}
                Kind::Resized(new) => capacity = *new,
                _ => {}
            }
        }
        let cancelled_now: Vec<ReservationId> = cancelled_ids(stack, slot).await;
        confirmed.retain(|(id, _)| !cancelled_now.contains(id));

        // The invariants, once the round is over.
        let (items, by_reservations) = slot_state(stack, slot).await;
        assert_eq!(items.len(), usize::from(plan.shards), "{context}");
        assert_eq!(
            items.iter().map(|s| s.capacity.get()).sum::<u32>(),
            capacity,
            "the shares add up to the capacity: {context}"
        );
        for (i, shard) in items.iter().enumerate() {
            assert!(
                shard.reserved <= shard.capacity.get(),
                "shard {i} overbooked: {context}"
            );
            assert_eq!(shard.available, shard.capacity.get() - shard.reserved, "{context}");
            assert_eq!(
                shard.reserved,
                by_reservations.get(&(i as u16)).copied().unwrap_or(0),
                "shard {i} holds the seats its reservations took from it: {context}"
            );
        }
        assert_eq!(
            items.iter().map(|s| s.reserved).sum::<u32>(),
            confirmed.iter().map(|(_, seats)| seats).sum::<u32>(),
            "{context}"
        );
    }
    checked
}

async fn book(service: &ReservationService<adapters::DynamoReservationStore>, slot_id: &SlotId, seats: u32) -> Kind {
    let command = CreateReservation {
        slot_id: slot_id.clone(),
        guest_id: GuestId::parse("prop").unwrap(),
        seats: Seats::new(i64::from(seats)).unwrap(),
    };
    match service.create_reservation(command, None, TraceId::generate()).await {
        Ok(CreateOutcome::Created(r)) => Kind::Booked(r.reservation_id, seats),
        Ok(other) => panic!("no key, no replay: {other:?}"),
        Err(ServiceError::SoldOut { .. }) => Kind::SoldOut(seats),
        Err(ServiceError::Contended { .. }) => Kind::Contended,
        Err(e) => panic!("book: {e}"),
    }
}

/// The fewest seats the slot can have had free at any moment while `this` was in flight: the
/// round began with `capacity - reserved` free; a booking of the round may have committed by then
/// if it started before `this` ended; a cancel surely had only if it ended before `this`
/// started; a resize counts where it lowers the figure.
fn least_available(done: &[Done], this: &Done, capacity: u32, reserved: u32) -> i64 {
    let mut least = i64::from(capacity) - i64::from(reserved);
    for d in done.iter().filter(|d| !std::ptr::eq(*d, this)) {
        match d.kind {
            Kind::Booked(_, seats) if d.started < this.ended => least -= i64::from(seats),
            Kind::Cancelled(seats) if d.ended < this.started => least += i64::from(seats),
            Kind::Resized(new) => {
                let change = i64::from(new) - i64::from(capacity);
                if d.ended < this.started {
                    least += change;
                } else if d.started < this.ended {
                    least += change.min(0);
                }
            }
            _ => {}
        }
    }
    least
}

/// The most seats that can have been reserved at any moment while `this` was in flight.
fn most_reserved(done: &[Done], this: &Done, reserved: u32) -> i64 {
    let mut most = i64::from(reserved);
    for d in done.iter().filter(|d| !std::ptr::eq(*d, this)) {
        match d.kind {
            Kind::Booked(_, seats) if d.started < this.ended => most += i64::from(seats),
            Kind::Cancelled(seats) if d.ended < this.started => most -= i64::from(seats),
            _ => {}
        }
    }
    most
}

/// The slot's shard items, shard 0 first, and the seats its confirmed reservations say they took
/// from each shard; read from the table, not through the store.
async fn slot_state(stack: &TestStack, slot: &str) -> (Vec<SlotItem>, BTreeMap<u16, u32>) {
    let items = stack.scan_all(&stack.name("RESERVATIONS_TABLE")).await;
    let mut shards: Vec<SlotItem> = Vec::new();
    let mut taken: BTreeMap<u16, u32> = BTreeMap::new();
    for item in items {
        let kind = item
            .get("item_type")
            .and_then(|t| t.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let of_slot = matches!(item.get("slot_id"), Some(AttributeValue::S(s)) if s == slot);
        if !of_slot {
            continue;
        }
        match kind.as_str() {
            "Slot" | "SlotShard" => shards.push(serde_dynamo::aws_sdk_dynamodb_1::from_item(item).unwrap()),
            "Reservation" => {
                let reservation: ReservationItem = serde_dynamo::aws_sdk_dynamodb_1::from_item(item).unwrap();
                assert_eq!(
                    reservation.taken.seats(),
                    reservation.reservation.seats.get(),
                    "a reservation records where every seat came from"
                );
                if reservation.reservation.status == domain::ReservationStatus::Confirmed {
                    for take in &reservation.taken.0 {
                        *taken.entry(take.shard).or_default() += take.seats;
                    }
                }
            }
            _ => {}
        }
    }
    shards.sort_by_key(|s| s.shard.unwrap_or(0));
    (shards, taken)
}

async fn cancelled_ids(stack: &TestStack, slot: &str) -> Vec<ReservationId> {
    stack
        .scan_all(&stack.name("RESERVATIONS_TABLE"))
        .await
        .into_iter()
        .filter(|item| matches!(item.get("slot_id"), Some(AttributeValue::S(s)) if s == slot))
        .filter(|item| matches!(item.get("status"), Some(AttributeValue::S(s)) if s == "CANCELLED"))
        .map(|item| {
            serde_dynamo::aws_sdk_dynamodb_1::from_item::<ReservationItem>(item)
                .unwrap()
                .reservation
                .reservation_id
        })
        .collect()
}
