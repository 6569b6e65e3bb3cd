//! The API through the real handler, on DynamoDB Local through the real SDK.
//! Invariants 1 (atomicity) and 2 (no overbooking) of docs/design.md, idempotency, cancel rules.

use aws_sdk_dynamodb::types::AttributeValue;
use domain::ports::{Cancellation, CommitError, NewReservation, ReservationStore};
use domain::{EventEnvelope, EventId, GuestId, Reservation, ReservationId, Seats, SlotId, TraceId};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use test_support::stack::{TestApi, TestStack};

type Item = HashMap<String, AttributeValue>;

async fn put_slot(http: &reqwest::Client, api: &TestApi, slot: &str, capacity: i64) -> reqwest::Response {
    http.put(api.url(&format!("/slots/{slot}")))
        .json(&json!({ "capacity": capacity }))
        .send()
        .await
        .unwrap()
}

async fn reserve(http: &reqwest::Client, api: &TestApi, slot: &str, guest: &str, seats: i64) -> reqwest::Response {
    http.post(api.url("/reservations"))
        .json(&json!({ "slot_id": slot, "guest_id": guest, "seats": seats }))
        .send()
        .await
        .unwrap()
}

async fn slot_json(http: &reqwest::Client, api: &TestApi, slot: &str) -> Value {
    api.get_json(http, &format!("/slots/{slot}")).await
}

fn is_reservation(item: &Item) -> bool {
    matches!(item.get("item_type"), Some(AttributeValue::S(t)) if t == "Reservation")
}

async fn outbox_envelopes(stack: &TestStack) -> Vec<EventEnvelope> {
    stack
        .scan_all(&stack.name("OUTBOX_TABLE"))
        .await
        .into_iter()
        .map(|item| serde_dynamo::aws_sdk_dynamodb_1::from_item(item).expect("outbox item is an envelope"))
        .collect()
}

#[tokio::test]
async fn outbox_item_is_written_with_its_reservation_and_has_the_envelope_layout() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    assert_eq!(put_slot(&http, &api, "s1", 5).await.status(), StatusCode::CREATED);

    let response = http
        .post(api.url("/reservations"))
        .header("x-amzn-trace-id", "Root=1-abc-def")
        .json(&json!({ "slot_id": "s1", "guest_id": "ada", "seats": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let id = created["reservation_id"].as_str().unwrap();
    assert_eq!(location, format!("/reservations/{id}"));
    assert_eq!(created["status"], "CONFIRMED");
    assert_eq!(created["version"], 1);

    let items = stack.scan_all(&stack.name("OUTBOX_TABLE")).await;
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item["item_type"], AttributeValue::S("OutboxEvent".into()));
    assert_eq!(item["aggregate_id"], AttributeValue::S(id.into()));
    assert_eq!(item["version"], AttributeValue::N("1".into()));
    let AttributeValue::N(expires_at) = &item["expires_at"] else {
        panic!("expires_at is a number")
    };
    let expires_in = expires_at.parse::<i64>().unwrap() - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (7 * 86_400 - 60..=7 * 86_400).contains(&expires_in),
        "TTL is 7 days ahead, got {expires_in} s"
    );

    let envelope: EventEnvelope = serde_dynamo::aws_sdk_dynamodb_1::from_item(item.clone()).unwrap();
    assert_eq!(envelope.event_type.as_str(), "ReservationCreated");
    assert_eq!(envelope.aggregate_type, "Reservation");
    assert_eq!(envelope.trace_id.as_str(), "Root=1-abc-def");
    assert_eq!(serde_json::to_value(envelope.reservation().unwrap()).unwrap(), created);
}

#[tokio::test]
async fn a_failed_transaction_writes_neither_the_change_nor_its_event() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    let store = stack.store();
    put_slot(&http, &api, "tiny", 1).await;

    // Creation that must fail: more seats than the slot has. The reservation put and the outbox
    // put in the same transaction would each succeed alone; neither may land.
    let (reservation, event) = Reservation::confirm(
        ReservationId::generate(),
        SlotId::parse("tiny").unwrap(),
        GuestId::parse("bob").unwrap(),
        Seats::new(2).unwrap(),
        time::OffsetDateTime::now_utc(),
    );
    let change = NewReservation {
        event: event.into_envelope(EventId::generate(), TraceId::generate()),
        reservation: reservation.clone(),
        idempotency: None,
    };
    assert!(matches!(
        store.create_reservation(&change).await,
        Err(CommitError::SoldOut)
    ));
    assert_eq!(store.get_reservation(&reservation.reservation_id).await.unwrap(), None);
    assert!(outbox_envelopes(&stack).await.is_empty());
    assert_eq!(slot_json(&http, &api, "tiny").await["reserved"], 0);

    // Cancellation that must fail: it was prepared from a stale version.
    let created: Value = reserve(&http, &api, "tiny", "ada", 1).await.json().await.unwrap();
    let id = ReservationId::parse(created["reservation_id"].as_str().unwrap()).unwrap();
    let current = store.get_reservation(&id).await.unwrap().unwrap();
    let stale = Reservation {
        version: domain::Version::new(7).unwrap(),
        ..current.clone()
    };
    let (cancelled, event) = stale.cancel(time::OffsetDateTime::now_utc()).unwrap();
    let change = Cancellation {
        event: event.into_envelope(EventId::generate(), TraceId::generate()),
        current: stale,
        placement: domain::Placement::default(),
        cancelled,
    };
    assert!(matches!(
        store.cancel_reservation(&change).await,
        Err(CommitError::ReservationChanged)
    ));
    assert_eq!(
        store.get_reservation(&id).await.unwrap().unwrap(),
        current,
        "reservation untouched"
    );
    let events = outbox_envelopes(&stack).await;
    assert_eq!(events.len(), 1, "only the creation event exists: {events:?}");
    assert_eq!(
        slot_json(&http, &api, "tiny").await["reserved"],
        1,
        "seats not returned"
    );
}

#[tokio::test]
async fn two_hundred_concurrent_posts_for_twenty_seats_sell_exactly_twenty() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(200).build().unwrap();
    put_slot(&http, &api, "hot", 20).await;

    let attempts = (0..200).map(|i| {
        let http = http.clone();
        let api = &api;
        async move {
            let response = reserve(&http, api, "hot", &format!("guest-{i}"), 1).await;
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    });
    let results = join_all(attempts).await;

    let created = results.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let sold_out = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && b["code"] == "sold_out")
        .count();
    let others: Vec<_> = results
        .iter()
        .filter(|(s, b)| *s != StatusCode::CREATED && !(*s == StatusCode::CONFLICT && b["code"] == "sold_out"))
        .collect();
    assert!(others.is_empty(), "unexpected answers: {others:?}");
    assert_eq!((created, sold_out), (20, 180));

    let slot = slot_json(&http, &api, "hot").await;
    assert_eq!(
        (slot["reserved"].as_u64(), slot["available"].as_u64()),
        (Some(20), Some(0))
    );
    assert_eq!(outbox_envelopes(&stack).await.len(), 20);
    let reservations = stack.scan_all(&stack.name("RESERVATIONS_TABLE")).await;
    assert_eq!(reservations.iter().filter(|i| is_reservation(i)).count(), 20);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer_and_rejects_another_body() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    put_slot(&http, &api, "s1", 10).await;
    let body = json!({ "slot_id": "s1", "guest_id": "ada", "seats": 2 });
    let post = |key: &'static str, body: Value| {
        http.post(api.url("/reservations"))
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };

    let first = post("key-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    // The client lost that answer and retries: same answer, nothing booked twice.
    let again = post("key-1", body.clone()).await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let other = post("key-1", json!({ "slot_id": "s1", "guest_id": "ada", "seats": 3 }))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.json::<Value>().await.unwrap()["code"], "idempotency_key_reused");

    assert_eq!(slot_json(&http, &api, "s1").await["reserved"], 2);
    assert_eq!(outbox_envelopes(&stack).await.len(), 1);
}

#[tokio::test]
async fn racing_requests_with_one_idempotency_key_book_once_and_all_get_the_same_answer() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    put_slot(&http, &api, "s1", 100).await;
    let body = json!({ "slot_id": "s1", "guest_id": "ada", "seats": 1 });

    let racers = (0..12).map(|_| {
        let request = http
            .post(api.url("/reservations"))
            .header("idempotency-key", "same-key")
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    });
    let results = join_all(racers).await;
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
    }
    let ids: std::collections::HashSet<_> = results.iter().map(|(_, b)| b["reservation_id"].clone()).collect();
    assert_eq!(ids.len(), 1, "every racer got the one reservation: {ids:?}");
    assert_eq!(slot_json(&http, &api, "s1").await["reserved"], 1);
    assert_eq!(outbox_envelopes(&stack).await.len(), 1);
}

#[tokio::test]
async fn cancel_returns_the_seats_and_a_second_cancel_is_not_cancellable() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    put_slot(&http, &api, "s1", 4).await;
    let created: Value = reserve(&http, &api, "s1", "ada", 3).await.json().await.unwrap();
    let id = created["reservation_id"].as_str().unwrap();
    assert_eq!(slot_json(&http, &api, "s1").await["available"], 1);

    let cancel = http
        .post(api.url(&format!("/reservations/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), StatusCode::OK);
    let cancelled: Value = cancel.json().await.unwrap();
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["version"], 2);
    assert!(cancelled["cancelled_at"].is_string());
    assert_eq!(slot_json(&http, &api, "s1").await["available"], 4);

    let fetched = api.get_json(&http, &format!("/reservations/{id}")).await;
    assert_eq!(fetched, cancelled);

    let again = http
        .post(api.url(&format!("/reservations/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.json::<Value>().await.unwrap()["code"], "not_cancellable");
    assert_eq!(
        slot_json(&http, &api, "s1").await["available"],
        4,
        "seats returned once"
    );

    let mut events = outbox_envelopes(&stack).await;
    events.sort_by_key(|e| e.version);
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.event_type.as_str(), e.version.get()))
        .collect();
    assert_eq!(kinds, [("ReservationCreated", 1), ("ReservationCancelled", 2)]);
}

#[tokio::test]
async fn concurrent_cancels_of_one_reservation_cancel_it_once() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    put_slot(&http, &api, "s1", 4).await;
    let created: Value = reserve(&http, &api, "s1", "ada", 2).await.json().await.unwrap();
    let id = created["reservation_id"].as_str().unwrap().to_owned();

    let cancels = (0..8).map(|_| {
        let request = http.post(api.url(&format!("/reservations/{id}/cancel")));
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    });
    let results = join_all(cancels).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused = results
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && b["code"] == "not_cancellable")
        .count();
    assert_eq!((ok, refused), (1, 7), "{results:?}");
    assert_eq!(slot_json(&http, &api, "s1").await["available"], 4);
    assert_eq!(outbox_envelopes(&stack).await.len(), 2);
}

#[tokio::test]
async fn capacity_can_grow_or_shrink_but_never_below_what_is_reserved() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    assert_eq!(put_slot(&http, &api, "s1", 5).await.status(), StatusCode::CREATED);
    reserve(&http, &api, "s1", "ada", 3).await;

    let grown = put_slot(&http, &api, "s1", 8).await;
    assert_eq!(grown.status(), StatusCode::OK);
    assert_eq!(
        grown.json::<Value>().await.unwrap(),
        json!({ "slot_id": "s1", "capacity": 8, "reserved": 3, "available": 5, "shards": 1 })
    );

    let too_small = put_slot(&http, &api, "s1", 2).await;
    assert_eq!(too_small.status(), StatusCode::CONFLICT);
    let problem: Value = too_small.json().await.unwrap();
    assert_eq!(problem["code"], "capacity_below_reserved");
    assert!(problem["detail"].as_str().unwrap().contains('3'), "{problem}");

    assert_eq!(put_slot(&http, &api, "s1", 3).await.status(), StatusCode::OK);
    assert_eq!(
        slot_json(&http, &api, "s1").await,
        json!({ "slot_id": "s1", "capacity": 3, "reserved": 3, "available": 0, "shards": 1 })
    );
    let sold_out = reserve(&http, &api, "s1", "bob", 1).await;
    assert_eq!(sold_out.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn unknown_slot_and_reservation_are_404_with_problem_json() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();

    let response = reserve(&http, &api, "nowhere", "ada", 1).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "slot_not_found");

    let response = http
        .get(api.url("/reservations/01JXXXXXXXXXXXXXXXXXXXXXXX"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "reservation_not_found");
    assert!(outbox_envelopes(&stack).await.is_empty());
}

#[tokio::test]
async fn bodies_over_16_kib_are_refused_by_the_local_server_without_reading_them_whole() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    let huge = format!(r#"{{"capacity": 1, "padding": "{}"}}"#, "x".repeat(1 << 20));
    let response = http
        .put(api.url("/slots/s1"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "payload_too_large");
}
