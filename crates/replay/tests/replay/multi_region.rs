//! Several Regions on DynamoDB global tables (docs/multi-region.md), simulated: two test stacks,
//! each standing for a Region with its own tables, stream, relay and services, joined by the
//! stand-in replication of `test_support::global_table` (no engine here replicates between
//! Regions). us-east-1 is the primary Region, eu-west-1 the other.

use api::request::{CreateReservation, PutSlot};
use api::service::{CreateOutcome, ServiceError};
use api::{ReservationService, RetryPolicy};
use domain::{Capacity, GuestId, Seats, SlotId, TraceId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use test_support::global_table::StandInReplication;
use test_support::stack::TestStack;

const PRIMARY: &str = "us-east-1";
const OTHER: &str = "eu-west-1";
/// How long replication may go without reading or applying anything before a test fails; it
/// usually settles within a second.
const SETTLE: Duration = Duration::from_secs(60);

type Service = ReservationService<adapters::DynamoReservationStore>;

async fn two_regions(lag: Duration) -> (TestStack, TestStack, StandInReplication) {
    let primary = TestStack::start().await.in_region(PRIMARY, PRIMARY);
    let other = TestStack::start().await.in_region(OTHER, PRIMARY);
    let replication = StandInReplication::start([&primary, &other], lag).await;
    (primary, other, replication)
}

fn service(stack: &TestStack) -> Service {
    ReservationService::new(stack.store(), RetryPolicy::default())
}

async fn put_slot(service: &Service, slot: &str, capacity: i64) {
    service
        .put_slot(
            &SlotId::parse(slot).unwrap(),
            PutSlot {
                capacity: Capacity::new(capacity).unwrap(),
            },
        )
        .await
        .expect("the slot is written");
}

async fn reserve(service: &Service, slot: &str, guest: &str) -> Result<String, ServiceError> {
    let command = CreateReservation {
        slot_id: SlotId::parse(slot).unwrap(),
        guest_id: GuestId::parse(guest).unwrap(),
        seats: Seats::new(1).unwrap(),
    };
    match service.create_reservation(command, None, TraceId::generate()).await? {
        CreateOutcome::Created(reservation) => Ok(reservation.reservation_id.to_string()),
        CreateOutcome::Replayed { .. } => unreachable!("no Idempotency-Key was sent"),
    }
}

type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// The items of `item_type` in a Region's replica of the table `var` names.
async fn items_of_type(stack: &TestStack, var: &str, item_type: &str) -> Vec<Item> {
    let mut items = stack.scan_all(&stack.name(var)).await;
    items.retain(|item| item.get("item_type").and_then(|t| t.as_s().ok()).map(String::as_str) == Some(item_type));
    items
}

/// The outbox events a Region's replica holds: event id to the Region it was born in (`None`
/// for an item from before items recorded it).
async fn outbox_of(stack: &TestStack) -> BTreeMap<String, Option<String>> {
    items_of_type(stack, "OUTBOX_TABLE", "OutboxEvent")
        .await
        .into_iter()
        .map(|item| {
            let id = item["event_id"].as_s().unwrap().clone();
            (id, item.get("born_in").map(|r| r.as_s().unwrap().clone()))
        })
        .collect()
}

/// The event ids on a Region's Kinesis stream, once its relay has published what it will.
async fn published_by(stack: &TestStack) -> Vec<String> {
    stack
        .relay_mapping()
        .await
        .drain()
        .await
        .expect("the relay drains its Region's outbox stream");
    stack
        .records_on_kinesis()
        .await
        .into_iter()
        .map(|event| event.envelope.expect("an envelope").event_id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_two_regions_each_event_is_published_by_exactly_one_of_them() {
    let (primary, other, replication) = two_regions(Duration::from_millis(300)).await;
    let (primary_api, other_api) = (service(&primary), service(&other));
    // Each Region books its own slot (the Region that creates a slot is its home), and cancels
    // every third: reservations and their events are born in both Regions.
    put_slot(&primary_api, "slot-east", 100).await;
    put_slot(&other_api, "slot-west", 100).await;
    for i in 0..12 {
        for (api, slot) in [(&primary_api, "slot-east"), (&other_api, "slot-west")] {
            let id = reserve(api, slot, &format!("guest-{i}")).await.unwrap();
            if i % 3 == 0 {
                let id = domain::ReservationId::parse(&id).unwrap();
                api.cancel_reservation(&id, TraceId::generate()).await.unwrap();
            }
        }
    }
    // An outbox item from before items recorded their Region: the primary's to publish.
    let legacy = test_support::events::envelope("01LEGACYRESERVATION0000001", 1);
    let mut item = test_support::events::outbox_item(&legacy, adapters::RelayMode::Stream);
    item.remove("born_in");
    primary
        .dynamodb
        .put_item()
        .table_name(primary.name("OUTBOX_TABLE"))
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    replication.settle(SETTLE).await;

    // Replication: both Regions hold every event, each with the Region it was born in.
    let held = outbox_of(&primary).await;
    assert_eq!(held, outbox_of(&other).await, "the two replicas hold the same outbox");
    assert_eq!(held.len(), 2 * (12 + 4) + 1);
    let born = |region: Option<&str>| -> BTreeSet<String> {
        held.iter()
            .filter(|(_, born_in)| born_in.as_deref() == region)
            .map(|(id, _)| id.clone())
            .collect()
    };
    assert_eq!(born(Some(PRIMARY)).len(), 16);
    assert_eq!(born(Some(OTHER)).len(), 16);

    // Both streams carry every event; each relay publishes its own, exactly once.
    let on_primary = published_by(&primary).await;
    let on_other = published_by(&other).await;
    let primary_ids: BTreeSet<String> = on_primary.iter().cloned().collect();
    let other_ids: BTreeSet<String> = on_other.iter().cloned().collect();
    assert_eq!(
        on_primary.len(),
        primary_ids.len(),
        "nothing published twice by the primary"
    );
    assert_eq!(
        on_other.len(),
        other_ids.len(),
        "nothing published twice by the other Region"
    );
    let mut expected_primary = born(Some(PRIMARY));
    expected_primary.extend(born(None));
    assert_eq!(
        primary_ids, expected_primary,
        "the primary publishes its own and the legacy item"
    );
    assert_eq!(other_ids, born(Some(OTHER)), "the other Region publishes its own only");
    assert!(primary_ids.is_disjoint(&other_ids));
    let (applied, dropped) = replication.counts();
    test_support::figures::record(
        "multi_region_publishing",
        serde_json::json!({
            "events": held.len(),
            "published_by_primary": primary_ids.len(),
            "published_by_other": other_ids.len(),
            "published_by_both": primary_ids.intersection(&other_ids).count(),
            "replicated_writes": applied,
            "replicated_writes_dropped_as_older": dropped,
        }),
    );
}

/// What became of one booking attempt.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Booking {
    Confirmed,
    SoldOut,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bookings_through_both_regions_never_overbook_a_slot() {
    let (primary, other, replication) = two_regions(Duration::from_millis(200)).await;
    let (primary_api, other_api) = (service(&primary), service(&other));
    put_slot(&primary_api, "shared", 20).await;
    replication.settle(SETTLE).await;

    // 60 guests at once, half through each Region's API, for 20 seats. The other Region's API
    // answers that the slot is at home in the primary, and the client books there.
    let redirected = std::sync::atomic::AtomicUsize::new(0);
    let attempts = (0..60).map(|i| {
        let (primary_api, other_api, redirected) = (&primary_api, &other_api, &redirected);
        async move {
            let first = if i % 2 == 0 { primary_api } else { other_api };
            let outcome = match reserve(first, "shared", &format!("guest-{i}")).await {
                Err(ServiceError::HomedElsewhere { region, .. }) => {
                    assert_eq!(region, PRIMARY);
                    redirected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    reserve(primary_api, "shared", &format!("guest-{i}")).await
                }
                outcome => outcome,
            };
            match outcome {
                Ok(_) => Booking::Confirmed,
                Err(ServiceError::SoldOut { .. }) => Booking::SoldOut,
                Err(e) => panic!("booking {i}: {e}"),
            }
        }
    });
    let outcomes = futures::future::join_all(attempts).await;
    replication.settle(SETTLE).await;

    let count = |what: Booking| outcomes.iter().filter(|o| **o == what).count();
    assert_eq!(count(Booking::Confirmed), 20);
    assert_eq!(count(Booking::SoldOut), 40);
    assert_eq!(
        redirected.into_inner(),
        30,
        "every attempt through the other Region was sent home"
    );
    for stack in [&primary, &other] {
        let slot = service(stack)
            .get_slot(&SlotId::parse("shared").unwrap())
            .await
            .unwrap();
        assert_eq!((slot.capacity.get(), slot.reserved), (20, 20), "{:?}", stack.regions);
        let reservations = items_of_type(stack, "RESERVATIONS_TABLE", "Reservation").await.len();
        assert_eq!(reservations, 20, "{:?}", stack.regions);
    }
}

/// The failure the slot's home prevents, shown on the same stand-in: two Regions that both take
/// writes for a slot (each deployed as its own primary, the slot without a home) book its seats
/// at once while replication lags, and last-writer-wins keeps one Region's count of the slot
/// while both Regions' reservations stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_home_two_regions_overbook_a_slot_which_is_what_homes_prevent() {
    let east = TestStack::start().await.in_region(PRIMARY, PRIMARY);
    let west = TestStack::start().await.in_region(OTHER, OTHER);
    let replication = StandInReplication::start([&east, &west], Duration::from_millis(200)).await;
    // A slot without a home: written before slots had one, which every primary takes writes for.
    let slot = adapters::dynamodb::items::SlotItem {
        home_region: None,
        ..adapters::dynamodb::items::SlotItem::new(
            &domain::Slot::new(SlotId::parse("contested").unwrap(), Capacity::new(10).unwrap()),
            PRIMARY,
        )
    };
    east.dynamodb
        .put_item()
        .table_name(east.name("RESERVATIONS_TABLE"))
        .set_item(Some(serde_dynamo::to_item(&slot).unwrap()))
        .send()
        .await
        .unwrap();
    replication.settle(SETTLE).await;

    replication.cut();
    let (east_api, west_api) = (service(&east), service(&west));
    for i in 0..10 {
        reserve(&east_api, "contested", &format!("east-{i}")).await.unwrap();
        reserve(&west_api, "contested", &format!("west-{i}")).await.unwrap();
    }
    replication.restore();
    replication.settle(SETTLE).await;

    let reservations = items_of_type(&east, "RESERVATIONS_TABLE", "Reservation").await.len();
    let slot = service(&east)
        .get_slot(&SlotId::parse("contested").unwrap())
        .await
        .unwrap();
    assert_eq!(reservations, 20, "both Regions' reservations replicated");
    assert_eq!(slot.reserved, 10, "one Region's count of the slot won");
    let (_, dropped) = replication.counts();
    assert!(dropped > 0, "the losing Region's slot writes were dropped as older");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_of_another_region_sends_writes_for_a_slot_to_its_home_with_a_421() {
    let (primary, other, replication) = two_regions(Duration::from_millis(100)).await;
    let primary_api = primary.spawn_api().await;
    let other_api = other.spawn_api().await;
    let http = reqwest::Client::new();
    primary_api.put_slot(&http, "homed", 5).await;
    let booked = primary_api.reserve(&http, "homed", "ada").await;
    replication.settle(SETTLE).await;

    let resize = http
        .put(other_api.url("/slots/homed"))
        .json(&serde_json::json!({"capacity": 9}));
    let book = http
        .post(other_api.url("/reservations"))
        .json(&serde_json::json!({"slot_id": "homed", "guest_id": "bob", "seats": 1}));
    let cancel = http.post(other_api.url(&format!("/reservations/{booked}/cancel")));
    for (what, request) in [("resize", resize), ("book", book), ("cancel", cancel)] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 421, "{what}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "application/problem+json",
            "{what}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "wrong_region", "{what}: {body}");
        assert_eq!(body["home_region"], PRIMARY, "{what}: {body}");
    }
    // Nothing was written in the other Region: the slot, as its home holds it, is unchanged.
    replication.settle(SETTLE).await;
    for api in [&primary_api, &other_api] {
        let slot = api.get_json(&http, "/slots/homed").await;
        assert_eq!(
            (slot["capacity"].as_u64(), slot["reserved"].as_u64()),
            (Some(5), Some(1))
        );
        let reservation = api.get_json(&http, &format!("/reservations/{booked}")).await;
        assert_eq!(reservation["status"], "CONFIRMED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_polling_mode_each_regions_poller_publishes_only_the_events_born_in_it() {
    let primary = TestStack::start().await.in_region(PRIMARY, PRIMARY).polling();
    let other = TestStack::start().await.in_region(OTHER, PRIMARY).polling();
    let replication = StandInReplication::start([&primary, &other], Duration::from_millis(200)).await;
    let (primary_api, other_api) = (service(&primary), service(&other));
    put_slot(&primary_api, "slot-east", 50).await;
    put_slot(&other_api, "slot-west", 50).await;
    let mut booked = BTreeMap::new();
    for i in 0..8 {
        for (api, slot, region) in [(&primary_api, "slot-east", PRIMARY), (&other_api, "slot-west", OTHER)] {
            let id = reserve(api, slot, &format!("guest-{i}")).await.unwrap();
            booked.insert(id, region);
        }
    }
    replication.settle(SETTLE).await;

    // Both pollers at once: each holds a lease of its own and reads its own part of the index,
    // though both Regions' marks are in both replicas.
    let until = tokio::time::Instant::now() + Duration::from_secs(120);
    let interval = Duration::from_millis(100);
    let (primary_poller, other_poller) = (primary.poller(interval), other.poller(interval));
    let (on_primary, on_other) = tokio::join!(
        primary_poller.run(until, true, std::future::pending()),
        other_poller.run(until, true, std::future::pending()),
    );
    assert_eq!((on_primary.published, on_other.published), (8, 8));
    for (stack, region) in [(&primary, PRIMARY), (&other, OTHER)] {
        let published: BTreeSet<String> = stack
            .records_on_kinesis()
            .await
            .into_iter()
            .map(|event| event.partition_key)
            .collect();
        let born_here: BTreeSet<String> = booked
            .iter()
            .filter(|(_, born)| **born == region)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(published, born_here, "{region} publishes what was born in it");
    }
    // The published marks are cleared, and the clearing replicated: nothing is pending anywhere.
    replication.settle(SETTLE).await;
    for stack in [&primary, &other] {
        let outbox = items_of_type(stack, "OUTBOX_TABLE", "OutboxEvent").await;
        assert_eq!(outbox.len(), 16, "{:?}", stack.regions);
        let marked = outbox.iter().filter(|item| item.contains_key("unpublished")).count();
        assert_eq!(marked, 0, "{:?}", stack.regions);
    }
}
