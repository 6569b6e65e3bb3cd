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
    let primary = TestStack::start()
        .await
        .in_region(PRIMARY, PRIMARY)
        .with_regions(&[OTHER]);
    let other = TestStack::start().await.in_region(OTHER, PRIMARY);
    let replication = StandInReplication::start(&[&primary, &other], lag).await;
    (primary, other, replication)
}

fn service(stack: &TestStack) -> Service {
    ReservationService::new(stack.store(), RetryPolicy::default())
}

async fn put_slot(service: &Service, slot: &str, capacity: i64) {
    put_slot_at_home(service, slot, capacity, None).await;
}

/// Creates a slot (through the primary's service) at home in `home`.
async fn put_slot_at_home(service: &Service, slot: &str, capacity: i64, home: Option<&str>) {
    service
        .put_slot(
            &SlotId::parse(slot).unwrap(),
            PutSlot {
                capacity: Capacity::new(capacity).unwrap(),
                home_region: home.map(|home| domain::RegionName::parse(home).unwrap()),
                shards: None,
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
    // Each Region books its own slot (the primary creates both, one at home in the other
    // Region), and cancels every third: reservations and their events are born in both Regions.
    put_slot(&primary_api, "slot-east", 100).await;
    put_slot_at_home(&primary_api, "slot-west", 100, Some(OTHER)).await;
    replication.settle(SETTLE).await;
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
            "replication": replication.figures(),
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

/// Defect 1 of the review (docs/multi-region.md, "Where a slot's home is decided"): a creation
/// sent to two Regions before either has replicated must not give the slot two homes. Both
/// Regions are asked to create the slot at the same moment, then each Region's clients book it
/// at once, without waiting for replication: a booking where the slot has not arrived yet is
/// tried again, one sent to the wrong Region follows its 421. Were the slot created in both,
/// each Region would sell its own 10 seats and last writer wins would keep one count of two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_asked_for_in_two_regions_at_once_is_created_once_with_one_home() {
    let (primary, other, replication) = two_regions(Duration::from_millis(400)).await;
    let (primary_api, other_api) = (service(&primary), service(&other));
    let slot = SlotId::parse("created-twice").unwrap();
    let create = |api: &'static str| {
        let api = if api == PRIMARY { &primary_api } else { &other_api };
        let slot = slot.clone();
        async move {
            api.put_slot(
                &slot,
                PutSlot {
                    capacity: Capacity::new(10).unwrap(),
                    home_region: None,
                    shards: None,
                },
            )
            .await
        }
    };
    let (in_primary, in_other) = tokio::join!(create(PRIMARY), create(OTHER));

    let sent_home = std::sync::atomic::AtomicUsize::new(0);
    let not_there_yet = std::sync::atomic::AtomicUsize::new(0);
    let attempts = (0..30).map(|i| {
        let (primary_api, other_api, sent_home, not_there_yet) = (&primary_api, &other_api, &sent_home, &not_there_yet);
        async move {
            let mut api = if i % 2 == 0 { primary_api } else { other_api };
            loop {
                match reserve(api, "created-twice", &format!("guest-{i}")).await {
                    Ok(_) => return Booking::Confirmed,
                    Err(ServiceError::SoldOut { .. }) => return Booking::SoldOut,
                    Err(ServiceError::HomedElsewhere { region, .. }) => {
                        sent_home.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        api = if region == PRIMARY { primary_api } else { other_api };
                    }
                    Err(ServiceError::SlotNotFound(_)) => {
                        not_there_yet.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("booking {i}: {e}"),
                }
            }
        }
    });
    let outcomes = futures::future::join_all(attempts).await;
    replication.settle(SETTLE).await;

    let confirmed = outcomes.iter().filter(|o| **o == Booking::Confirmed).count();
    for stack in [&primary, &other] {
        let reservations = items_of_type(stack, "RESERVATIONS_TABLE", "Reservation").await.len();
        let held = service(stack).get_slot(&slot).await.unwrap();
        assert_eq!(
            (reservations, held.reserved, held.capacity.get()),
            (10, 10, 10),
            "{:?}: never more reservations than seats, and the slot counts them all",
            stack.regions
        );
        let item = items_of_type(stack, "RESERVATIONS_TABLE", "Slot").await;
        assert_eq!(item[0]["home_region"].as_s().unwrap(), PRIMARY, "{:?}", stack.regions);
    }
    assert_eq!(confirmed, 10);
    assert!(
        matches!(in_primary, Ok(domain::ports::SlotWrite::Created(_))),
        "{in_primary:?}"
    );
    match in_other {
        Err(ServiceError::CreatedInPrimary { primary: named, .. }) => assert_eq!(named, PRIMARY),
        other => panic!("the other Region must send the creation to the primary, answered {other:?}"),
    }
    test_support::figures::record(
        "multi_region_creation",
        serde_json::json!({
            "bookings": outcomes.len(),
            "confirmed": confirmed,
            "sent_home_by_421": sent_home.into_inner(),
            "slot_not_replicated_yet": not_there_yet.into_inner(),
            "replication": replication.figures(),
        }),
    );
}

/// The failure the slot's home prevents, shown on the same stand-in: two Regions that both take
/// writes for a slot (each deployed as its own primary, the slot without a home) book its seats
/// at once while replication lags, and last-writer-wins keeps one Region's count of the slot
/// while both Regions' reservations stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_home_two_regions_overbook_a_slot_which_is_what_homes_prevent() {
    let east = TestStack::start().await.in_region(PRIMARY, PRIMARY);
    let west = TestStack::start().await.in_region(OTHER, OTHER);
    let replication = StandInReplication::start(&[&east, &west], Duration::from_millis(200)).await;
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

    // Creating: only the primary creates, at home where the request says (by default itself).
    let put = |api: &test_support::stack::TestApi, slot: &str, body: serde_json::Value| {
        http.put(api.url(&format!("/slots/{slot}"))).json(&body).send()
    };
    let answer = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };
    let (status, body) = answer(
        put(&other_api, "fresh", serde_json::json!({"capacity": 3}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body["code"], &body["home_region"]),
        (421, &"wrong_region".into(), &PRIMARY.into()),
        "{body}"
    );
    let west = serde_json::json!({"capacity": 3, "home_region": OTHER});
    let (status, _) = answer(put(&primary_api, "west", west.clone()).await.unwrap()).await;
    assert_eq!(status, 201);
    let (status, body) = answer(put(&primary_api, "west", west).await.unwrap()).await;
    assert_eq!(
        (status, &body["home_region"]),
        (421, &OTHER.into()),
        "a repeat goes to its home: {body}"
    );
    replication.settle(SETTLE).await;
    let (status, body) = answer(
        put(&other_api, "west", serde_json::json!({"capacity": 4}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &body["capacity"]), (200, &4.into()), "{body}");
    let elsewhere = serde_json::json!({"capacity": 4, "home_region": PRIMARY});
    let (status, body) = answer(put(&other_api, "west", elsewhere).await.unwrap()).await;
    assert_eq!(
        (status, &body["code"], &body["home_region"]),
        (409, &"home_differs".into(), &OTHER.into()),
        "{body}"
    );
    let nowhere = serde_json::json!({"capacity": 4, "home_region": "ap-south-9"});
    let (status, body) = answer(put(&primary_api, "lost", nowhere).await.unwrap()).await;
    assert_eq!((status, &body["code"]), (422, &"validation_failed".into()), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_polling_mode_each_regions_poller_publishes_only_the_events_born_in_it() {
    let primary = TestStack::start()
        .await
        .in_region(PRIMARY, PRIMARY)
        .with_regions(&[OTHER])
        .polling();
    let other = TestStack::start().await.in_region(OTHER, PRIMARY).polling();
    let replication = StandInReplication::start(&[&primary, &other], Duration::from_millis(200)).await;
    let (primary_api, other_api) = (service(&primary), service(&other));
    put_slot(&primary_api, "slot-east", 50).await;
    put_slot_at_home(&primary_api, "slot-west", 50, Some(OTHER)).await;
    replication.settle(SETTLE).await;
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

// Moving a slot's home (docs/multi-region.md, "Moving a slot's home"): the consumers' tables are
// replicated too, and each Region runs its relay, projector and notifier all along, as deployed.

/// Two Regions whose reservations, outbox, read model and notifications tables are replicated.
async fn two_regions_with_consumers(lag: Duration) -> (TestStack, TestStack, StandInReplication) {
    let primary = TestStack::start()
        .await
        .in_region(PRIMARY, PRIMARY)
        .with_regions(&[OTHER]);
    let other = TestStack::start().await.in_region(OTHER, PRIMARY);
    // Each write up to `lag` later than the lag, its own: one transaction's items arrive apart
    // and reordered, as global tables give no order between them.
    let options = test_support::global_table::Options::lag(lag)
        .jitter(lag)
        .tables(test_support::global_table::WITH_CONSUMER_TABLES);
    let replication = StandInReplication::start_with(&[&primary, &other], options).await;
    (primary, other, replication)
}

/// A Region's relay, projector and notifier, running until stopped.
struct Pipeline {
    relay: Running,
    projector: Running,
    notifier: Running,
}

/// A mapping running in a task, and what stops it.
struct Running {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn spawn<F: Future<Output = ()> + Send + 'static>(
        run: impl FnOnce(tokio::sync::watch::Receiver<bool>) -> F,
    ) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        Self {
            stop,
            task: tokio::spawn(run(stopped)),
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

const IDLE: Duration = Duration::from_millis(50);

async fn until_stopped(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

impl Pipeline {
    async fn start(stack: &TestStack) -> Self {
        let relay = stack.relay_mapping().await;
        let notifier = stack.notifier_mapping().await;
        Self {
            relay: Running::spawn(|stopped| relay.run(IDLE, until_stopped(stopped))),
            projector: Self::projector(stack).await,
            notifier: Running::spawn(|stopped| notifier.run(IDLE, until_stopped(stopped))),
        }
    }

    async fn projector(stack: &TestStack) -> Running {
        let projector = stack.projector_mapping().await;
        Running::spawn(|stopped| projector.run(IDLE, until_stopped(stopped)))
    }

    async fn stop(self) {
        self.relay.stop().await;
        self.projector.stop().await;
        self.notifier.stop().await;
    }
}

/// A Region's slots and what was written for them, as the home commands read and write them.
fn slot_homes(stack: &TestStack) -> adapters::SlotHomes {
    adapters::SlotHomes::new(
        stack.dynamodb.clone(),
        stack.name("RESERVATIONS_TABLE"),
        stack.name("OUTBOX_TABLE"),
        stack.regions.clone(),
    )
}

/// The Regions a takeover by `here` works with.
fn takeover_regions<'a>(
    here: &'a replay::home::Replica,
    others: &'a [&'a replay::home::Replica],
    deployment: &'a [String],
) -> replay::home::TakeoverRegions<'a> {
    replay::home::TakeoverRegions {
        here,
        others,
        deployment,
    }
}

/// A Region's replica as the home commands see it, with its projector's and notifier's state.
async fn replica(stack: &TestStack) -> replay::home::Replica {
    replay::home::Replica {
        homes: slot_homes(stack),
        consumers: vec![
            Box::new(consumers::Projector::new(stack.read_model())),
            Box::new(consumers::Notifier::new(stack.notifications().await)),
        ],
    }
}

/// `notified` and what both Regions' subscriber queues received since, once every one of
/// `expected` is among them (or a minute passed).
async fn notifications_of(
    expected: &BTreeSet<(String, u64)>,
    stacks: [&TestStack; 2],
    mut notified: Vec<(String, u64)>,
) -> Vec<(String, u64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        notified.extend(notified_in(stacks).await);
        let seen: BTreeSet<&(String, u64)> = notified.iter().collect();
        if expected.iter().all(|e| seen.contains(e)) || tokio::time::Instant::now() > deadline {
            return notified;
        }
    }
}

/// Each of `expected` notified exactly once, and nothing else notified twice.
fn assert_once_each(notified: &[(String, u64)], expected: &BTreeSet<(String, u64)>) {
    let mut times: BTreeMap<&(String, u64), usize> = BTreeMap::new();
    for n in notified {
        *times.entry(n).or_default() += 1;
    }
    let missing: Vec<_> = expected.iter().filter(|e| !times.contains_key(e)).collect();
    let repeated: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && repeated.is_empty(),
        "not notified: {missing:?}; notified more than once: {repeated:?}"
    );
}

/// (reservation, version) of every notification both Regions' subscriber queues received.
async fn notified_in(stacks: [&TestStack; 2]) -> Vec<(String, u64)> {
    let mut notified = Vec::new();
    for stack in stacks {
        notified.extend(
            stack
                .received_notifications()
                .await
                .into_iter()
                .map(|n| (n.message.reservation_id, n.message.version)),
        );
    }
    notified
}

/// Reservation id to (version, status) in a Region's replica of the read model.
async fn read_model_of(stack: &TestStack) -> BTreeMap<String, (u64, String)> {
    stack
        .scan_all(&stack.name("READ_MODEL_TABLE"))
        .await
        .into_iter()
        .filter(|item| item.contains_key("status"))
        .map(|item| {
            let id = item["reservation_id"].as_s().unwrap().clone();
            let version = item["version"].as_n().unwrap().parse().unwrap();
            (id, (version, item["status"].as_s().unwrap().clone()))
        })
        .collect()
}

/// Reservation id to (version, status) in a Region's replica of the reservations table.
async fn reservations_of(stack: &TestStack) -> BTreeMap<String, (u64, String)> {
    items_of_type(stack, "RESERVATIONS_TABLE", "Reservation")
        .await
        .into_iter()
        .map(|item| {
            let id = item["reservation_id"].as_s().unwrap().clone();
            let version = item["version"].as_n().unwrap().parse().unwrap();
            (id, (version, item["status"].as_s().unwrap().clone()))
        })
        .collect()
}

/// Waits until both Regions' read models show every reservation as the reservations table does.
async fn read_models_converge(
    stacks: [&TestStack; 2],
    replication: &StandInReplication,
) -> BTreeMap<String, (u64, String)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        replication.settle(SETTLE).await;
        let truth = reservations_of(stacks[0]).await;
        let (first, second) = (read_model_of(stacks[0]).await, read_model_of(stacks[1]).await);
        if first == truth && second == truth {
            return truth;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read models did not converge: {} reservations, read models {} and {} ({} and {} differ)",
            truth.len(),
            first.len(),
            second.len(),
            truth.iter().filter(|(id, v)| first.get(*id) != Some(v)).count(),
            truth.iter().filter(|(id, v)| second.get(*id) != Some(v)).count(),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// (reservation, version) of every event on a Region's Kinesis stream.
async fn event_keys_on(stack: &TestStack) -> Vec<(String, u64)> {
    stack
        .records_on_kinesis()
        .await
        .into_iter()
        .map(|event| {
            let envelope = event.envelope.expect("an envelope");
            (envelope.aggregate_id.to_string(), envelope.version.get())
        })
        .collect()
}

/// What a client that follows the API's answers does: books with its Idempotency-Key where the
/// slot's home is, going where a 421 says and waiting out a 503 `home_moving`.
struct FollowingClient<'a> {
    apis: [(&'a str, &'a Service); 2],
    redirected: std::sync::atomic::AtomicUsize,
    waited_for_moves: std::sync::atomic::AtomicUsize,
}

impl FollowingClient<'_> {
    fn api(&self, region: &str) -> &Service {
        self.apis.iter().find(|(r, _)| *r == region).expect("a known Region").1
    }

    async fn follow<T>(
        &self,
        mut region: String,
        call: impl AsyncFn(&Service) -> Result<T, ServiceError>,
    ) -> (T, String) {
        use std::sync::atomic::Ordering::SeqCst;
        for _ in 0..600 {
            match call(self.api(&region)).await {
                Ok(done) => return (done, region),
                Err(ServiceError::HomedElsewhere { region: home, .. }) => {
                    self.redirected.fetch_add(1, SeqCst);
                    region = home;
                }
                Err(ServiceError::HomeMoving { .. }) => {
                    self.waited_for_moves.fetch_add(1, SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("still refused after 600 tries");
    }

    async fn book(&self, region: &str, slot: &str, guest: &str, key: &str) -> (String, String) {
        let command = || CreateReservation {
            slot_id: SlotId::parse(slot).unwrap(),
            guest_id: GuestId::parse(guest).unwrap(),
            seats: Seats::new(1).unwrap(),
        };
        let key = domain::IdempotencyKey::parse(key).unwrap();
        self.follow(region.to_owned(), async |api: &Service| {
            match api
                .create_reservation(command(), Some(key.clone()), TraceId::generate())
                .await?
            {
                CreateOutcome::Created(reservation) => Ok(reservation.reservation_id.to_string()),
                CreateOutcome::Replayed { body, .. } => {
                    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                    Ok(body["reservation_id"].as_str().unwrap().to_owned())
                }
            }
        })
        .await
    }

    async fn cancel(&self, region: &str, id: &str) -> String {
        let id = domain::ReservationId::parse(id).unwrap();
        self.follow(region.to_owned(), async |api: &Service| {
            api.cancel_reservation(&id, TraceId::generate()).await.map(|_| ())
        })
        .await
        .1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_moved_while_bookings_flow_loses_no_event_and_both_read_models_converge() {
    let (primary, other, replication) = two_regions_with_consumers(Duration::from_millis(300)).await;
    let [mut old_home, new_home] = [Pipeline::start(&primary).await, Pipeline::start(&other).await];
    let (primary_api, other_api) = (service(&primary), service(&other));
    put_slot(&primary_api, "moving", 1000).await;
    replication.settle(SETTLE).await;
    let client = FollowingClient {
        apis: [(PRIMARY, &primary_api), (OTHER, &other_api)],
        redirected: Default::default(),
        waited_for_moves: Default::default(),
    };

    // 60 guests book one after another through the primary's API (following its answers) while
    // the slot's home moves to the other Region after the 20th. As soon as the move ends, every
    // third guest booked in the old home cancels (through its API, sent on to the new home): versions
    // 2 born in the new home right after versions 1 born in the old one, the moment a move that
    // did not wait for the consumers would leave the new home's projector with a gap.
    let booked = std::sync::Mutex::new(Vec::new());
    let booking = async {
        for i in 0..60 {
            let done = client
                .book(PRIMARY, "moving", &format!("guest-{i}"), &format!("moving-{i}"))
                .await;
            booked.lock().unwrap().push(done);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    // The old home's projector is behind when the move starts (stopped for 2 s): the move waits
    // for it, or the new home's projector would meet those cancels before the bookings.
    let moving = async {
        while booked.lock().unwrap().len() < 20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let behind = std::mem::replace(&mut old_home.projector, Running::spawn(|_| async {}));
        behind.stop().await;
        let patience = replay::home::Patience {
            wait: Duration::from_secs(120),
            poll: Duration::from_millis(100),
        };
        let slot = SlotId::parse("moving").unwrap();
        let catching_up = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            old_home.projector = Pipeline::projector(&primary).await;
        };
        let (from, to) = (replica(&primary).await, replica(&other).await);
        let (moved, ()) = tokio::join!(replay::home::move_home(&from, &to, &slot, patience), catching_up);
        let so_far: Vec<String> = booked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, region)| region == PRIMARY)
            .map(|(id, _)| id.clone())
            .collect();
        let mut cancelled_in = BTreeMap::new();
        for id in so_far.iter().step_by(3) {
            cancelled_in.insert(id.clone(), client.cancel(PRIMARY, id).await);
        }
        (moved, cancelled_in)
    };
    let ((), (moved, cancelled_in)) = tokio::join!(booking, moving);
    let booked = booked.into_inner().unwrap();
    let moved = moved.expect("the move finishes");
    assert!(moved.moved && moved.reservations >= 20, "{moved}");
    let truth = read_models_converge([&primary, &other], &replication).await;
    let committed: BTreeSet<(String, u64)> = truth
        .iter()
        .flat_map(|(id, (version, _))| (1..=*version).map(move |v| (id.clone(), v)))
        .collect();
    let notified = notifications_of(&committed, [&primary, &other], Vec::new()).await;
    old_home.stop().await;
    new_home.stop().await;

    // Nothing lost, nothing booked twice: 60 reservations for 60 guests, the slot's count right
    // in both replicas.
    let ids: BTreeSet<&String> = booked.iter().map(|(id, _)| id).collect();
    assert_eq!((booked.len(), ids.len(), truth.len()), (60, 60, 60));
    for stack in [&primary, &other] {
        let slot = service(stack)
            .get_slot(&SlotId::parse("moving").unwrap())
            .await
            .unwrap();
        assert_eq!(slot.reserved as usize, 60 - cancelled_in.len(), "{:?}", stack.regions);
    }
    let booked_where = |region: &str| booked.iter().filter(|(_, r)| r == region).count();
    assert!(booked_where(PRIMARY) >= 20 && booked_where(OTHER) > 0);
    let crossing: Vec<&String> = booked
        .iter()
        .filter(|(id, region)| region == PRIMARY && cancelled_in.get(id).map(String::as_str) == Some(OTHER))
        .map(|(id, _)| id)
        .collect();
    assert!(
        !crossing.is_empty(),
        "some reservations were created in one Region and cancelled in the other"
    );

    // Each event is on exactly one Region's bus, once; together the buses carry every event.
    let (on_primary, on_other) = (event_keys_on(&primary).await, event_keys_on(&other).await);
    let primary_set: BTreeSet<_> = on_primary.iter().cloned().collect();
    let other_set: BTreeSet<_> = on_other.iter().cloned().collect();
    assert!(primary_set.is_disjoint(&other_set), "an event on both buses");
    assert_eq!(
        primary_set.union(&other_set).cloned().collect::<BTreeSet<_>>(),
        committed
    );
    // Both read models show every reservation at its last version (checked by the wait above),
    // and each event was notified once, by one Region or the other.
    assert_eq!(read_model_of(&other).await, truth);
    assert_once_each(&notified, &committed);
    test_support::figures::record(
        "multi_region_move",
        serde_json::json!({
            "bookings": booked.len(),
            "booked_in_old_home": booked_where(PRIMARY),
            "booked_in_new_home": booked_where(OTHER),
            "created_in_one_region_cancelled_in_the_other": crossing.len(),
            "cancelled": cancelled_in.len(),
            "events_on_old_homes_bus": on_primary.len(),
            "events_on_new_homes_bus": on_other.len(),
            "redirected_by_421": client.redirected.load(std::sync::atomic::Ordering::SeqCst),
            "waited_out_503_home_moving": client.waited_for_moves.load(std::sync::atomic::Ordering::SeqCst),
            "move_waited_ms": moved.waited_ms,
            "move_waited_for_reservations": moved.reservations,
            "move_waited_for_idempotency_records": moved.idempotency_records,
            "replication": replication.figures(),
        }),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_move_refuses_what_it_cannot_do_safely_and_a_repeat_changes_nothing() {
    let (primary, other, replication) = two_regions(Duration::from_millis(50)).await;
    put_slot(&service(&primary), "steady", 5).await;
    let zed = reserve(&service(&primary), "steady", "zed").await.unwrap();
    replication.settle(SETTLE).await;
    let (east, west) = (replica(&primary).await, replica(&other).await);
    let east = replay::home::Replica {
        consumers: Vec::new(),
        ..east
    };
    let west = replay::home::Replica {
        consumers: Vec::new(),
        ..west
    };
    let slot = SlotId::parse("steady").unwrap();
    let quick = replay::home::Patience {
        wait: Duration::from_secs(30),
        poll: Duration::from_millis(50),
    };

    let home_already = replay::home::move_home(&west, &east, &slot, quick).await.unwrap();
    assert!(!home_already.moved, "{home_already}");
    let missing = replay::home::move_home(&east, &west, &SlotId::parse("nowhere").unwrap(), quick)
        .await
        .unwrap_err();
    assert_eq!(missing.to_string(), "slot nowhere does not exist in us-east-1");

    // Cut off, the move cannot see its moving state arrive: it stops, the slot frozen in both.
    replication.cut();
    let impatient = replay::home::Patience {
        wait: Duration::from_millis(500),
        poll: Duration::from_millis(50),
    };
    let stuck = replay::home::move_home(&east, &west, &slot, impatient)
        .await
        .unwrap_err();
    assert!(
        matches!(stuck, replay::home::MoveError::StillReplicating { .. }),
        "{stuck}"
    );
    assert!(
        stuck.to_string().contains("waiting for the slot's moving state"),
        "{stuck}"
    );
    let frozen = reserve(&service(&primary), "steady", "ada").await.unwrap_err();
    assert!(
        matches!(frozen, ServiceError::HomeMoving { ref to, .. } if to == OTHER),
        "{frozen}"
    );
    let resize = service(&primary)
        .put_slot(
            &slot,
            PutSlot {
                capacity: Capacity::new(9).unwrap(),
                home_region: None,
                shards: None,
            },
        )
        .await
        .expect_err("no resize while the home moves");
    assert!(matches!(resize, ServiceError::HomeMoving { .. }), "{resize}");
    let cancel = service(&primary)
        .cancel_reservation(&domain::ReservationId::parse(&zed).unwrap(), TraceId::generate())
        .await
        .unwrap_err();
    assert!(matches!(cancel, ServiceError::HomeMoving { .. }), "{cancel}");

    // Run again once the link is back, it goes on and finishes; a third run changes nothing.
    replication.restore();
    let done = replay::home::move_home(&east, &west, &slot, quick).await.unwrap();
    assert!(done.moved);
    let again = replay::home::move_home(&east, &west, &slot, quick).await.unwrap();
    assert!(!again.moved, "{again}");
    assert_eq!(
        again.to_string(),
        "slot steady is at home in eu-west-1 already: nothing to do"
    );
    reserve(&service(&other), "steady", "bob")
        .await
        .expect("the new home takes writes");
    replication.settle(SETTLE).await;
    let refused = reserve(&service(&primary), "steady", "cyd").await.unwrap_err();
    assert!(
        matches!(refused, ServiceError::HomedElsewhere { ref region, .. } if region == OTHER),
        "{refused}"
    );
    let late_abort = replay::home::abort_move(&east, &west, &slot).await.unwrap_err();
    assert!(
        matches!(late_abort, replay::home::MoveError::AlreadyMoved { .. }),
        "{late_abort}"
    );

    // A move aborted before it finished leaves the slot where it was.
    replication.cut();
    let stuck = replay::home::move_home(&west, &east, &slot, impatient)
        .await
        .unwrap_err();
    assert!(
        matches!(stuck, replay::home::MoveError::StillReplicating { .. }),
        "{stuck}"
    );
    replay::home::abort_move(&west, &east, &slot).await.unwrap();
    reserve(&service(&other), "steady", "dan")
        .await
        .expect("the home takes writes again");
    replication.restore();
    replication.settle(SETTLE).await;
    let slot_now = service(&primary).get_slot(&slot).await.unwrap();
    assert_eq!(slot_now.reserved, 3);
}

/// The audit of the other Region's bus after it took over the primary's slots: the events born
/// in either Region that its replica holds.
async fn takeover_audit(
    other: &TestStack,
    projector: &dyn replay::audit::AppliedVersions,
) -> replay::audit::AuditReport {
    let stream = other.name("EVENTS_STREAM");
    let bus = replay::Bus::Kinesis {
        client: &other.kinesis,
        stream: &stream,
    };
    let born = replay::audit::BornIn::Regions {
        regions: vec![OTHER.to_owned(), PRIMARY.to_owned()],
        primary: PRIMARY.to_owned(),
    };
    replay::audit::audit(
        &other.dynamodb,
        &bus,
        &other.name("OUTBOX_TABLE"),
        time::OffsetDateTime::UNIX_EPOCH,
        time::OffsetDateTime::now_utc(),
        &[projector],
        &born,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_after_a_cut_loses_only_the_lost_regions_unreplicated_writes_and_the_audit_names_them() {
    let (primary, other, replication) = two_regions_with_consumers(Duration::from_millis(150)).await;
    let east_pipeline = Pipeline::start(&primary).await;
    let west_pipeline = Pipeline::start(&other).await;
    let (primary_api, other_api) = (service(&primary), service(&other));
    put_slot(&primary_api, "east", 100).await;
    let mut replicated = BTreeSet::new();
    for i in 0..10 {
        replicated.insert(reserve(&primary_api, "east", &format!("early-{i}")).await.unwrap());
    }
    // The primary notifies them and its claims replicate before the cut. (A claim still on its
    // way when a Region is lost is why a takeover can notify again: multi-region.md.)
    let early: BTreeSet<(String, u64)> = replicated.iter().map(|id| (id.clone(), 1)).collect();
    let notified = notifications_of(&early, [&primary, &other], Vec::new()).await;
    replication.settle(SETTLE).await;

    // The link is cut; the primary goes on booking, then is lost with what it never replicated.
    replication.cut();
    let mut unreplicated = BTreeSet::new();
    for i in 0..5 {
        unreplicated.insert(reserve(&primary_api, "east", &format!("late-{i}")).await.unwrap());
    }
    east_pipeline.stop().await;

    // The other Region takes over: it puts the primary's events it holds on its own bus, then
    // takes the primary's slots, and books them from now on.
    let sink = relay::KinesisSink::new(aws_sdk_kinesis::Client::new(&other.sdk), other.name("EVENTS_STREAM"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let west = replica(&other).await;
    let deployment = vec![PRIMARY.to_owned(), OTHER.to_owned()];
    let report = replay::home::take_over(PRIMARY, takeover_regions(&west, &[], &deployment), &sink, deadline)
        .await
        .unwrap();
    assert_eq!(
        (report.republished, report.slots_taken, report.slots_taken_before),
        (10, 1, 0),
        "{report}"
    );
    let mut booked_after = BTreeSet::new();
    for i in 0..5 {
        booked_after.insert(reserve(&other_api, "east", &format!("after-{i}")).await.unwrap());
    }
    let again = replay::home::take_over(PRIMARY, takeover_regions(&west, &[], &deployment), &sink, deadline)
        .await
        .unwrap();
    assert_eq!(
        (again.slots_taken, again.slots_taken_before),
        (0, 1),
        "a repeat takes nothing more"
    );

    // Audited on its bus, the other Region has everything it holds of both Regions.
    let projector = consumers::Projector::new(other.read_model());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let before = loop {
        let report = takeover_audit(&other, &projector).await;
        if report.nothing_missing() || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(before.nothing_missing(), "{before}: {:?}", before.lines());
    assert_eq!(before.committed, 10 + 5);

    // The lost Region comes back and replicates what it wrote while cut off: its late bookings
    // are now in the other Region's replica, never on its bus. The audit names exactly them.
    replication.restore();
    replication.settle(SETTLE).await;
    let after = takeover_audit(&other, &projector).await;
    // No event was notified twice, though the takeover put the primary's on a second bus: the
    // notifier's claims had replicated. Every booking the other Region holds is notified.
    let expected: BTreeSet<(String, u64)> = replicated
        .iter()
        .chain(&booked_after)
        .map(|id| (id.clone(), 1))
        .collect();
    let notified = notifications_of(&expected, [&primary, &other], notified).await;
    // The lost Region's late bookings may have been notified there before it was lost, once.
    let late: BTreeSet<(String, u64)> = unreplicated.iter().map(|id| (id.clone(), 1)).collect();
    let (late_notified, rest): (Vec<_>, Vec<_>) = notified.into_iter().partition(|n| late.contains(n));
    assert_once_each(&rest, &expected);
    let late_distinct: BTreeSet<&(String, u64)> = late_notified.iter().collect();
    assert_eq!(
        late_distinct.len(),
        late_notified.len(),
        "a late booking notified twice"
    );
    let missing: BTreeSet<String> = after.missing_on_stream.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(missing, unreplicated, "{after}");
    assert!(after.missing_on_stream.iter().all(|(_, version)| *version == 1));
    // Last writer wins kept the takeover's count of the slot: the late bookings' seats are not in
    // it, which is what docs/multi-region.md says a failover can cost.
    let slot = service(&other).get_slot(&SlotId::parse("east").unwrap()).await.unwrap();
    assert_eq!(slot.reserved, 15);
    let reservations = items_of_type(&other, "RESERVATIONS_TABLE", "Reservation").await.len();
    assert_eq!(reservations, 20);
    west_pipeline.stop().await;
    let (_, dropped) = replication.counts();
    test_support::figures::record(
        "multi_region_failover",
        serde_json::json!({
            "booked_before_the_cut": replicated.len(),
            "booked_in_the_lost_region_while_cut": unreplicated.len(),
            "republished_by_the_takeover": report.republished,
            "booked_after_the_takeover": booked_after.len(),
            "audit_missing_after_the_return": after.missing_on_stream.len(),
            "slot_reserved_after_the_return": slot.reserved,
            "reservations_after_the_return": reservations,
            "replicated_writes_dropped_as_older": dropped,
            "replication": replication.figures(),
        }),
    );
}

/// `reservations-replay` with the names of `stack`'s tables, as a deployed stack's outputs give them.
fn cli(stack: &TestStack) -> std::process::Command {
    let mut command = std::process::Command::new(test_support::workspace_binary("reservations-replay"));
    for var in [
        "RESERVATIONS_TABLE",
        "OUTBOX_TABLE",
        "READ_MODEL_TABLE",
        "NOTIFICATIONS_TABLE",
        "EVENTS_STREAM",
    ] {
        command.env(var, stack.name(var));
    }
    command.env_remove("PRIMARY_REGION");
    command
}

fn one_line(output: &std::process::Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

/// The commands as a person runs them, on one set of tables that both Regions read (as LocalStack
/// serves a global table's replica): the move goes through its states on the real engine.
#[tokio::test]
async fn the_cli_moves_a_home_takes_over_and_refuses_with_one_line() {
    let stack = TestStack::start().await;
    put_slot(&service(&stack), "by-hand", 4).await;
    reserve(&service(&stack), "by-hand", "ada").await.unwrap();
    stack.relay_mapping().await.drain().await.unwrap();
    stack.projector_mapping().await.drain().await.unwrap();
    stack.notifier_mapping().await.drain().await.unwrap();
    let move_home = ["move-home", "--slot", "by-hand", "--from", PRIMARY, "--to", OTHER];

    let unknown_primary = cli(&stack).args(move_home).output().unwrap();
    assert_eq!(unknown_primary.status.code(), Some(2));
    assert!(
        one_line(&unknown_primary).contains("the primary Region is not known: set --primary or PRIMARY_REGION"),
        "{unknown_primary:?}"
    );
    let same = cli(&stack)
        .args([
            "move-home",
            "--slot",
            "by-hand",
            "--from",
            PRIMARY,
            "--to",
            PRIMARY,
            "--primary",
            PRIMARY,
        ])
        .output()
        .unwrap();
    assert_eq!(same.status.code(), Some(2));
    assert!(one_line(&same).contains("a move needs two Regions"), "{same:?}");

    let run_move = || {
        cli(&stack)
            .args(move_home)
            .args(["--primary", PRIMARY])
            .output()
            .unwrap()
    };
    let moved = run_move();
    assert_eq!(moved.status.code(), Some(0), "{moved:?}");
    assert!(
        one_line(&moved).starts_with("slot by-hand moved from us-east-1 to eu-west-1: waited "),
        "{moved:?}"
    );
    let again = run_move();
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert_eq!(
        one_line(&again),
        "slot by-hand is at home in eu-west-1 already: nothing to do\n"
    );
    let slot = serde_dynamo::from_item::<_, adapters::dynamodb::items::SlotItem>(
        stack
            .dynamodb
            .get_item()
            .table_name(stack.name("RESERVATIONS_TABLE"))
            .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("SLOT#by-hand".into()))
            .send()
            .await
            .unwrap()
            .item
            .unwrap(),
    )
    .unwrap();
    assert_eq!((slot.home_region.as_deref(), slot.moving_to), (Some(OTHER), None));

    // The primary, lost, is taken over by the other Region: the one event born there is put on
    // the other Region's stream (kinesis-mock keeps streams per Region) and the primary's slots
    // (none left: the one moved) stay where they are.
    let west = stack.sdk.to_builder().region(aws_config::Region::new(OTHER)).build();
    let stream = stack.name("EVENTS_STREAM");
    let resources = devstack::resources::Resources::embedded().unwrap();
    let shape = &resources
        .streams
        .iter()
        .find(|s| s.name_from == "EVENTS_STREAM")
        .unwrap()
        .properties;
    devstack::resources::create_stream(&aws_sdk_kinesis::Client::new(&west), &stream, shape)
        .await
        .unwrap();
    let taken = cli(&stack)
        .args(["take-over", "--lost", PRIMARY, "--primary", PRIMARY])
        .env("AWS_REGION", OTHER)
        .output()
        .unwrap();
    assert_eq!(taken.status.code(), Some(0), "{taken:?}");
    assert_eq!(
        one_line(&taken),
        "eu-west-1 took over from us-east-1: republished 1 events born there (0 undecodable), took the home of 0 slots (0 taken before), gave 0 to the Region they were moving to, aborted 0 moves to us-east-1\n"
    );
    let mut on_west = devstack::events::collector(&west, &stream).await.unwrap();
    on_west.drain().await.unwrap();
    let republished = on_west.function().handler().events.lock().unwrap().clone();
    assert_eq!(republished.len(), 1);
    assert_eq!(
        republished[0].partition_key,
        stack.records_on_kinesis().await[0].partition_key
    );
    // A second Region taking over the same lost Region is refused: the claim is eu-west-1's.
    let second = cli(&stack)
        .args(["take-over", "--lost", PRIMARY, "--primary", PRIMARY, "--region", OTHER])
        .env("AWS_REGION", "ap-south-1")
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2), "{second:?}");
    assert!(
        one_line(&second).contains("the takeover of us-east-1 is eu-west-1's"),
        "{second:?}"
    );
    // Once the lost Region is back and takes writes again, the heir releases its claim.
    let release = || {
        cli(&stack)
            .args(["take-over", "--lost", PRIMARY, "--primary", PRIMARY, "--release"])
            .env("AWS_REGION", OTHER)
            .output()
            .unwrap()
    };
    let released = release();
    assert_eq!(released.status.code(), Some(0), "{released:?}");
    assert_eq!(one_line(&released), "eu-west-1 released its takeover of us-east-1\n");
    assert_eq!(
        one_line(&release()),
        "nobody holds the takeover of us-east-1: nothing to release\n"
    );
    let itself = cli(&stack)
        .args(["take-over", "--lost", OTHER, "--primary", PRIMARY])
        .env("AWS_REGION", OTHER)
        .output()
        .unwrap();
    assert_eq!(itself.status.code(), Some(2));
    assert!(one_line(&itself).contains("eu-west-1 is this Region"), "{itself:?}");
}

// What a review of the design found that the first stand-in could not show (docs/multi-region.md,
// "How it is proven here"): each test below fails on the code before its fix.

const THIRD: &str = "ap-south-1";

/// A Region's replica for the home commands, waiting for no consumer.
fn bare_replica(stack: &TestStack) -> replay::home::Replica {
    replay::home::Replica {
        homes: slot_homes(stack),
        consumers: Vec::new(),
    }
}

/// A move stopped at once: the slot frozen, nothing waited for.
const FREEZE_ONLY: replay::home::Patience = replay::home::Patience {
    wait: Duration::ZERO,
    poll: Duration::from_millis(50),
};

const PATIENT: replay::home::Patience = replay::home::Patience {
    wait: Duration::from_secs(60),
    poll: Duration::from_millis(50),
};

/// One seat of `slot` for `guest`, starting in `region` and following the APIs' answers (421: go
/// there; not there yet or moving: wait a moment), at most 100 tries: the outcome, or `None` when
/// still refused (or sent to a Region not in `apis`).
async fn book_following(apis: &[(&str, &Service)], region: &str, slot: &str, guest: &str) -> Option<Booking> {
    let mut region = region.to_owned();
    for _ in 0..100 {
        let api = apis.iter().find(|(r, _)| *r == region)?.1;
        match reserve(api, slot, guest).await {
            Ok(_) => return Some(Booking::Confirmed),
            Err(ServiceError::SoldOut { .. }) => return Some(Booking::SoldOut),
            Err(ServiceError::HomedElsewhere { region: home, .. }) => region = home,
            Err(ServiceError::SlotNotFound(_) | ServiceError::HomeMoving { .. }) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("booking {guest}: {e}"),
        }
    }
    None
}

/// Each slot's (reservations, reserved, home, moving_to) in a Region's replica.
async fn slots_of(stack: &TestStack) -> BTreeMap<String, (usize, u32, Option<String>, Option<String>)> {
    let reservations = items_of_type(stack, "RESERVATIONS_TABLE", "Reservation").await;
    items_of_type(stack, "RESERVATIONS_TABLE", "Slot")
        .await
        .into_iter()
        .map(|item| {
            let slot: adapters::dynamodb::items::SlotItem = serde_dynamo::from_item(item).unwrap();
            let id = slot.slot_id.to_string();
            let booked = reservations
                .iter()
                .filter(|r| r["slot_id"].as_s().unwrap() == &id)
                .count();
            (id, (booked, slot.reserved, slot.home_region, slot.moving_to))
        })
        .collect()
}

/// Defect 3 of the review: a takeover left the slots moving between the lost Region and a third
/// one frozen (both need the lost Region to end), and a second takeover, run in another Region
/// before the first one's writes reached it, claimed the lost Region's slots again: two homes.
/// Three Regions; the primary is lost with one slot moving from it to the third Region and one
/// moving from the third Region to it; the two survivors, cut off from each other, both take
/// over at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_resolves_every_slot_of_the_lost_region_and_a_second_takeover_is_refused() {
    let east = TestStack::start()
        .await
        .in_region(PRIMARY, PRIMARY)
        .with_regions(&[OTHER, THIRD]);
    let west = TestStack::start().await.in_region(OTHER, PRIMARY);
    let south = TestStack::start().await.in_region(THIRD, PRIMARY);
    let replication = StandInReplication::start(&[&east, &west, &south], Duration::from_millis(200)).await;
    let (east_api, west_api, south_api) = (service(&east), service(&west), service(&south));
    put_slot(&east_api, "stays", 10).await;
    put_slot(&east_api, "leaving", 10).await;
    put_slot_at_home(&east_api, "arriving", 10, Some(THIRD)).await;
    replication.settle(SETTLE).await;
    for i in 0..2 {
        reserve(&east_api, "stays", &format!("early-{i}")).await.unwrap();
        reserve(&east_api, "leaving", &format!("early-{i}")).await.unwrap();
        reserve(&south_api, "arriving", &format!("early-{i}")).await.unwrap();
    }
    let (east_replica, west_replica, south_replica) = (bare_replica(&east), bare_replica(&west), bare_replica(&south));
    for (from, to, slot) in [
        (&east_replica, &south_replica, "leaving"),
        (&south_replica, &east_replica, "arriving"),
    ] {
        let frozen = replay::home::move_home(from, to, &SlotId::parse(slot).unwrap(), FREEZE_ONLY).await;
        assert!(
            matches!(frozen, Err(replay::home::MoveError::StillReplicating { .. })),
            "{slot}: {frozen:?}"
        );
    }
    replication.settle(SETTLE).await;

    // The primary is lost; the survivors do not hear each other while both take over.
    replication.isolate(PRIMARY);
    replication.cut_one_way(OTHER, THIRD);
    replication.cut_one_way(THIRD, OTHER);
    let deployment: Vec<String> = [PRIMARY, OTHER, THIRD].map(String::from).to_vec();
    let sink = |stack: &TestStack| relay::KinesisSink::new(stack.kinesis.clone(), stack.name("EVENTS_STREAM"));
    let (west_sink, south_sink) = (sink(&west), sink(&south));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (to_south, to_west) = ([&south_replica], [&west_replica]);
    let (by_west, by_south) = tokio::join!(
        replay::home::take_over(
            PRIMARY,
            takeover_regions(&west_replica, &to_south, &deployment),
            &west_sink,
            deadline
        ),
        replay::home::take_over(
            PRIMARY,
            takeover_regions(&south_replica, &to_west, &deployment),
            &south_sink,
            deadline
        ),
    );
    // Still cut off from each other, both survivors' clients book every slot at once. A booking
    // sent towards the lost Region, or kept waiting by a slot still frozen in a replica that has
    // not heard of the takeover, is tried again once the survivors hear each other.
    let apis = [(OTHER, &west_api), (THIRD, &south_api)];
    let attempts: Vec<(&str, &str, String)> = ["stays", "leaving", "arriving"]
        .into_iter()
        .flat_map(|slot| {
            (0..12).map(move |i| (slot, if i % 2 == 0 { OTHER } else { THIRD }, format!("late-{slot}-{i}")))
        })
        .collect();
    let book_all = |attempts: Vec<(&'static str, &'static str, String)>| {
        let apis = &apis;
        async move {
            futures::future::join_all(attempts.into_iter().map(|(slot, region, guest)| async move {
                let outcome = book_following(apis, region, slot, &guest).await;
                ((slot, region, guest), outcome)
            }))
            .await
        }
    };
    let while_cut = book_all(attempts).await;
    let booked_while_cut = while_cut.iter().filter(|(_, o)| o.is_some()).count();
    replication.restore_one_way(OTHER, THIRD);
    replication.restore_one_way(THIRD, OTHER);
    replication.settle_among(&[OTHER, THIRD], SETTLE).await;
    let again: Vec<_> = while_cut
        .into_iter()
        .filter(|(_, o)| o.is_none())
        .map(|(a, _)| a)
        .collect();
    let tried_again = again.len();
    for ((slot, _, guest), outcome) in book_all(again).await {
        assert!(
            outcome.is_some(),
            "{guest} could not book {slot} once the survivors heard each other"
        );
    }
    replication.settle_among(&[OTHER, THIRD], SETTLE).await;
    for stack in [&west, &south] {
        for (slot, (booked, reserved, _, _)) in slots_of(stack).await {
            assert_eq!(
                (booked, reserved),
                (10, 10),
                "{slot} in {:?}: never more reservations than seats",
                stack.regions
            );
        }
    }

    // One Region took over; the other was refused, naming it.
    let (heir, report) = match (by_west, by_south) {
        (Ok(report), Err(replay::home::MoveError::TakenOverBy { heir, .. })) if heir == OTHER => (OTHER, report),
        (Err(replay::home::MoveError::TakenOverBy { heir, .. }), Ok(report)) if heir == THIRD => (THIRD, report),
        other => panic!("exactly one Region takes over, the other is refused naming it: {other:?}"),
    };
    // "stays" is the heir's; "leaving" is the Region's it was moving to (the heir's too when the
    // heir is that Region); "arriving" went back to its home, which aborted its move.
    assert_eq!(
        (
            report.slots_taken + report.slots_given_to_their_move,
            report.moves_to_lost_aborted,
            report.slots_left.len()
        ),
        (2, 1, 0),
        "{report}"
    );
    // Every slot has one home in both survivors, and none is frozen.
    let expected_home = |slot: &str| if slot == "stays" { heir } else { THIRD };
    for stack in [&west, &south] {
        for (slot, (_, _, home, moving)) in slots_of(stack).await {
            assert_eq!(
                (home.as_deref(), moving.as_deref()),
                (Some(expected_home(&slot)), None),
                "{slot} in {:?}",
                stack.regions
            );
        }
    }
    test_support::figures::record(
        "multi_region_takeover_race",
        serde_json::json!({
            "regions": replication.regions(),
            "heir": heir,
            "slots_taken": report.slots_taken,
            "slots_given_to_their_move": report.slots_given_to_their_move,
            "moves_to_lost_aborted": report.moves_to_lost_aborted,
            "bookings_after": 36,
            "booked_while_the_survivors_were_cut_off": booked_while_cut,
            "tried_again_after": tried_again,
            "replication": replication.figures(),
        }),
    );
}

/// Defect 4 of the review, first half: the move read the old home with eventually consistent
/// scans, so a booking committed a moment before the freeze could be missed; its Idempotency-Key
/// record not yet in the new home, a retry there booked a second time. Here the booking's
/// reservation and idempotency record travel seconds behind its slot update (global tables give
/// one transaction's items no order), and eventually consistent reads lag three seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_reads_the_old_home_consistently_so_a_booking_retried_in_the_new_home_is_not_booked_twice() {
    let primary = TestStack::start().await.in_region(PRIMARY, PRIMARY);
    let other = TestStack::start().await.in_region(OTHER, PRIMARY);
    let options =
        test_support::global_table::Options::lag(Duration::from_millis(200)).stale_reads(Duration::from_secs(3));
    let replication = StandInReplication::start_with(&[&primary, &other], options).await;
    put_slot(&service(&primary), "last-minute", 10).await;
    replication.settle(SETTLE).await;
    replication.delay_items(
        "RESERVATIONS_TABLE",
        |item| {
            item.get("pk")
                .and_then(|pk| pk.as_s().ok())
                .is_some_and(|pk| pk.starts_with("RESERVATION#") || pk.starts_with("IDEMPOTENCY#"))
        },
        Duration::from_secs(4),
    );

    let key = domain::IdempotencyKey::parse("booked-just-before-the-move").unwrap();
    let command = || CreateReservation {
        slot_id: SlotId::parse("last-minute").unwrap(),
        guest_id: GuestId::parse("ada").unwrap(),
        seats: Seats::new(1).unwrap(),
    };
    let first = match service(&primary)
        .create_reservation(command(), Some(key.clone()), TraceId::generate())
        .await
        .unwrap()
    {
        CreateOutcome::Created(reservation) => reservation.reservation_id.to_string(),
        other => panic!("a first booking: {other:?}"),
    };
    let slot = SlotId::parse("last-minute").unwrap();
    let moved = replay::home::move_home(&bare_replica(&primary), &bare_replica(&other), &slot, PATIENT)
        .await
        .unwrap();
    assert!(moved.moved && moved.new_home_took_over, "{moved}");

    // The client never got its answer and sends the same request where the slot lives now.
    let retried = service(&other)
        .create_reservation(command(), Some(key), TraceId::generate())
        .await
        .unwrap();
    replication.settle(SETTLE).await;
    for stack in [&primary, &other] {
        let (booked, reserved, home, _) = slots_of(stack).await["last-minute"].clone();
        assert_eq!((booked, reserved), (1, 1), "booked once, in {:?}", stack.regions);
        assert_eq!(home.as_deref(), Some(OTHER));
    }
    match retried {
        CreateOutcome::Replayed { body, .. } => {
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(body["reservation_id"], first.as_str());
        }
        CreateOutcome::Created(second) => panic!("the retry booked again: {second:?}"),
    }
    test_support::figures::record(
        "multi_region_move_reads",
        serde_json::json!({
            "stale_reads_ms": 3000,
            "reservation_and_record_delayed_ms": 4000,
            "move_waited_for_reservations": moved.reservations,
            "move_waited_for_idempotency_records": moved.idempotency_records,
            "move_waited_ms": moved.waited_ms,
            "replication": replication.figures(),
        }),
    );
}

/// Defect 4 of the review, second half: an abort checked "not finished" in the new home, then
/// wrote in the old one, so a finish landing in between left two homes until last writer wins
/// settled it, with both Regions selling meanwhile. Here the abort stalls between deciding and
/// writing (as any process may), the move finishes meanwhile, and the new home's writes do not
/// reach the old one; then both Regions' clients book the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_and_the_finish_of_one_move_never_both_take_effect() {
    let (primary, other, replication) = two_regions(Duration::from_millis(200)).await;
    put_slot(&service(&primary), "contested-move", 10).await;
    replication.settle(SETTLE).await;
    let east = std::sync::Arc::new(bare_replica(&primary));
    let west = std::sync::Arc::new(bare_replica(&other));
    let slot = SlotId::parse("contested-move").unwrap();
    let frozen = replay::home::move_home(&east, &west, &slot, FREEZE_ONLY).await;
    assert!(
        matches!(frozen, Err(replay::home::MoveError::StillReplicating { .. })),
        "{frozen:?}"
    );
    replication.settle(SETTLE).await;

    // From here the Regions do not hear each other: neither learns what the other wrote.
    replication.cut();
    primary.region_hooks.as_ref().unwrap().pause_writes(
        &primary.name("RESERVATIONS_TABLE"),
        "SLOT#contested-move",
        Duration::from_millis(1_500),
        Duration::from_secs(2),
    );
    let abort = tokio::spawn({
        let (east, west, slot) = (east.clone(), west.clone(), slot.clone());
        async move { replay::home::abort_move(&east, &west, &slot).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let finish = tokio::spawn({
        let (east, west, slot) = (east.clone(), west.clone(), slot.clone());
        let patience = replay::home::Patience {
            wait: Duration::from_secs(3),
            ..PATIENT
        };
        async move { replay::home::move_home(&east, &west, &slot, patience).await }
    });
    let (aborted, moved) = (abort.await.unwrap(), finish.await.unwrap());

    // Both Regions' clients book at once, still cut off; what a Region refuses for now (a slot
    // it still sees frozen) is tried again once the Regions hear each other.
    let (east_api, west_api) = (service(&primary), service(&other));
    let apis = [(PRIMARY, &east_api), (OTHER, &west_api)];
    let book_all = |guests: Vec<(&'static str, String)>| {
        let apis = &apis;
        async move {
            futures::future::join_all(guests.into_iter().map(|(first, guest)| async move {
                let outcome = book_following(apis, first, "contested-move", &guest).await;
                ((first, guest), outcome)
            }))
            .await
        }
    };
    let guests = (0..20)
        .map(|i| (if i % 2 == 0 { PRIMARY } else { OTHER }, format!("guest-{i}")))
        .collect();
    let while_cut = book_all(guests).await;
    let booked_while_cut = while_cut.iter().filter(|(_, o)| o.is_some()).count();
    replication.restore();
    replication.settle(SETTLE).await;
    let again: Vec<_> = while_cut
        .into_iter()
        .filter(|(_, o)| o.is_none())
        .map(|(g, _)| g)
        .collect();
    let tried_again = again.len();
    let outcomes = book_all(again).await;
    assert!(outcomes.iter().all(|(_, o)| o.is_some()), "{outcomes:?}");
    replication.settle(SETTLE).await;
    for stack in [&primary, &other] {
        let (booked, reserved, _, moving) = slots_of(stack).await["contested-move"].clone();
        assert_eq!(
            (booked, reserved, moving),
            (10, 10, None),
            "never overbooked, in {:?}",
            stack.regions
        );
    }
    let homes: BTreeSet<Option<String>> = [
        slots_of(&primary).await["contested-move"].2.clone(),
        slots_of(&other).await["contested-move"].2.clone(),
    ]
    .into();
    assert_eq!(homes.len(), 1, "one home: {homes:?}");
    assert!(
        aborted.is_ok() != moved.is_ok(),
        "the abort and the finish both took effect (or neither): {aborted:?} {moved:?}"
    );
    test_support::figures::record(
        "multi_region_abort_race",
        serde_json::json!({
            "aborted": aborted.is_ok(),
            "finished": moved.is_ok(),
            "bookings": 20,
            "booked_while_cut_off": booked_while_cut,
            "tried_again_after": tried_again,
            "replication": replication.figures(),
        }),
    );
}

/// Defect 5 of the review: outbox items are keyed (reservation, version), so when a lost Region
/// had an unreplicated version n+1 and the Region that took over writes its own n+1, last writer
/// wins keeps one of them everywhere. The lost Region's is named by the audit of its bus once it
/// is back (its relay publishes it from its own stream): the change it announced is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_regions_change_replaced_by_the_heirs_own_is_named_by_the_audit() {
    let (primary, other, replication) = two_regions(Duration::from_millis(200)).await;
    let (east_api, west_api) = (service(&primary), service(&other));
    put_slot(&east_api, "decided-twice", 10).await;
    let id = reserve(&east_api, "decided-twice", "ada").await.unwrap();
    let reservation = domain::ReservationId::parse(&id).unwrap();
    published_by(&primary).await;
    replication.settle(SETTLE).await;

    // The primary cancels the reservation (its version 2) and is lost before that replicates
    // or its relay publishes it.
    replication.isolate(PRIMARY);
    east_api
        .cancel_reservation(&reservation, TraceId::generate())
        .await
        .unwrap();
    // The other Region takes over and cancels the same reservation: its own version 2.
    let deployment: Vec<String> = [PRIMARY, OTHER].map(String::from).to_vec();
    let sink = relay::KinesisSink::new(other.kinesis.clone(), other.name("EVENTS_STREAM"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let west = bare_replica(&other);
    replay::home::take_over(PRIMARY, takeover_regions(&west, &[], &deployment), &sink, deadline)
        .await
        .unwrap();
    west_api
        .cancel_reservation(&reservation, TraceId::generate())
        .await
        .unwrap();
    published_by(&other).await;

    // The primary is back: last writer wins keeps the other Region's version 2 in both
    // replicas, and the primary's relay publishes its own from its stream.
    replication.restore();
    replication.settle(SETTLE).await;
    let on_east = published_by(&primary).await;
    let audit = |stack: &TestStack, born: Vec<String>| {
        let stream = stack.name("EVENTS_STREAM");
        let outbox = stack.name("OUTBOX_TABLE");
        let dynamodb = stack.dynamodb.clone();
        let kinesis = stack.kinesis.clone();
        async move {
            let bus = replay::Bus::Kinesis {
                client: &kinesis,
                stream: &stream,
            };
            let born = replay::audit::BornIn::Regions {
                regions: born,
                primary: PRIMARY.to_owned(),
            };
            replay::audit::audit(
                &dynamodb,
                &bus,
                &outbox,
                time::OffsetDateTime::UNIX_EPOCH,
                time::OffsetDateTime::now_utc(),
                &[],
                &born,
            )
            .await
            .unwrap()
        }
    };
    let east_report = audit(&primary, vec![PRIMARY.to_owned()]).await;
    assert_eq!(
        east_report
            .replaced
            .iter()
            .map(|r| (r.reservation_id.as_str(), r.version, r.in_outbox_born_in.as_deref()))
            .collect::<Vec<_>>(),
        [(id.as_str(), 2, Some(OTHER))],
        "{east_report}: {:?}",
        east_report.lines()
    );
    assert!(!east_report.nothing_missing());
    // The other Region's bus has every event the outbox holds, of both Regions.
    let west_report = audit(&other, vec![PRIMARY.to_owned(), OTHER.to_owned()]).await;
    assert!(
        west_report.nothing_missing(),
        "{west_report}: {:?}",
        west_report.lines()
    );
    test_support::figures::record(
        "multi_region_replaced_version",
        serde_json::json!({
            "on_lost_regions_bus": on_east.len(),
            "named_replaced": east_report.replaced.len(),
            "replicated_writes_dropped_as_older": replication.figures().dropped_as_older,
        }),
    );
}

/// A slot split over 8 shards moves its home while bookings flow through the old home: the move
/// freezes every shard in one transaction, waits until the new home's replica holds every shard
/// frozen with the old home's figures (they replicate one by one), and names the new home on all
/// of them. No booking goes through two homes: both replicas end with every shard at home in
/// the new Region, no shard over its share, and the shards' reservations equal to the
/// reservations both Regions hold; a cancel in the new home gives the seats back to the shards
/// the old home took them from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_slot_moves_its_home_with_every_shard_while_bookings_flow() {
    let (primary, other, replication) = two_regions(Duration::from_millis(100)).await;
    let (east_api, west_api) = (service(&primary), service(&other));
    east_api
        .put_slot(
            &SlotId::parse("flash").unwrap(),
            PutSlot {
                capacity: Capacity::new(40).unwrap(),
                home_region: None,
                shards: Some(domain::ShardCount::new(8).unwrap()),
            },
        )
        .await
        .unwrap();
    let mut first = Vec::new();
    for i in 0..8 {
        first.push(reserve(&east_api, "flash", &format!("early-{i}")).await.unwrap());
    }
    replication.settle(SETTLE).await;
    let (east, west) = (bare_replica(&primary), bare_replica(&other));
    let slot = SlotId::parse("flash").unwrap();

    let apis = [(PRIMARY, &east_api), (OTHER, &west_api)];
    let bookings = async {
        let mut outcomes = Vec::new();
        for i in 0..16 {
            outcomes.push(book_following(&apis, PRIMARY, "flash", &format!("during-{i}")).await);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        outcomes
    };
    let (outcomes, moved) = tokio::join!(bookings, replay::home::move_home(&east, &west, &slot, PATIENT));
    let moved = moved.unwrap();
    assert!(moved.moved, "{moved}");
    assert!(
        outcomes.iter().all(|o| matches!(o, Some(Booking::Confirmed))),
        "{outcomes:?}"
    );

    // A reservation the old home booked, cancelled in the new one: its seats go back to the
    // shards they were taken from, there.
    west_api
        .cancel_reservation(&domain::ReservationId::parse(&first[0]).unwrap(), TraceId::generate())
        .await
        .expect("the new home cancels what the old home booked");
    let refused = reserve(&east_api, "flash", "late").await.unwrap_err();
    replication.settle(SETTLE).await;
    assert!(
        matches!(refused, ServiceError::HomedElsewhere { ref region, .. } | ServiceError::HomeMoving { to: ref region, .. } if region == OTHER),
        "{refused}"
    );

    for stack in [&primary, &other] {
        let mut shards: Vec<adapters::dynamodb::items::SlotItem> = Vec::new();
        for kind in ["Slot", "SlotShard"] {
            shards.extend(
                items_of_type(stack, "RESERVATIONS_TABLE", kind)
                    .await
                    .into_iter()
                    .map(|item| serde_dynamo::from_item(item).unwrap()),
            );
        }
        let region = &stack.regions.here;
        assert_eq!(shards.len(), 8, "{region}: every shard replicated");
        for shard in &shards {
            assert_eq!(
                (shard.home_region.as_deref(), shard.moving_to.as_deref()),
                (Some(OTHER), None),
                "{region}: {} moved with the slot",
                shard.pk
            );
            assert!(
                shard.reserved <= shard.capacity.get(),
                "{region}: {} overbooked",
                shard.pk
            );
        }
        assert_eq!(shards.iter().map(|s| s.capacity.get()).sum::<u32>(), 40);
        let confirmed = items_of_type(stack, "RESERVATIONS_TABLE", "Reservation")
            .await
            .into_iter()
            .filter(|r| r["status"].as_s().unwrap() == "CONFIRMED")
            .count();
        assert_eq!(confirmed, 8 + 16 - 1, "{region}");
        assert_eq!(
            shards.iter().map(|s| s.reserved).sum::<u32>(),
            confirmed as u32,
            "{region}: the shards count exactly the confirmed reservations"
        );
    }
}

/// What a review of the takeover found next: the heir decided every slot on its own replica's
/// view, so a move the lost Region had finished towards a survivor (which already sold the slot)
/// was taken again by the heir, and a survivor's finished move towards the lost Region, not yet
/// heard of by the heir, was left at home in the lost Region. Here both moves finished just
/// before the primary was lost, each heard of by its destination but not by the heir.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_decides_each_slot_in_the_region_that_is_its_home_even_when_the_heir_has_not_heard() {
    let east = TestStack::start()
        .await
        .in_region(PRIMARY, PRIMARY)
        .with_regions(&[OTHER, THIRD]);
    let west = TestStack::start().await.in_region(OTHER, PRIMARY);
    let south = TestStack::start().await.in_region(THIRD, PRIMARY);
    let replication = StandInReplication::start(&[&east, &west, &south], Duration::from_millis(200)).await;
    let (east_api, west_api, south_api) = (service(&east), service(&west), service(&south));
    put_slot(&east_api, "went-south", 10).await;
    put_slot_at_home(&east_api, "came-east", 10, Some(THIRD)).await;
    replication.settle(SETTLE).await;
    let (east_replica, west_replica, south_replica) = (bare_replica(&east), bare_replica(&west), bare_replica(&south));
    let went_south = SlotId::parse("went-south").unwrap();
    let came_east = SlotId::parse("came-east").unwrap();
    for (from, to, slot) in [
        (&east_replica, &south_replica, &went_south),
        (&south_replica, &east_replica, &came_east),
    ] {
        let frozen = replay::home::move_home(from, to, slot, FREEZE_ONLY).await;
        assert!(
            matches!(frozen, Err(replay::home::MoveError::StillReplicating { .. })),
            "{frozen:?}"
        );
    }
    replication.settle(SETTLE).await;
    // The heir hears neither finish: both moves end where they were decided, and reach their
    // destination only.
    replication.cut_one_way(PRIMARY, OTHER);
    replication.cut_one_way(THIRD, OTHER);
    for (from, to, slot) in [
        (&east_replica, &south_replica, &went_south),
        (&south_replica, &east_replica, &came_east),
    ] {
        let moved = replay::home::move_home(from, to, slot, PATIENT).await.unwrap();
        assert!(moved.moved && moved.new_home_took_over, "{moved}");
    }
    replication.isolate(PRIMARY);

    let deployment: Vec<String> = [PRIMARY, OTHER, THIRD].map(String::from).to_vec();
    let sink = relay::KinesisSink::new(west.kinesis.clone(), west.name("EVENTS_STREAM"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let to_south = [&south_replica];
    let report = replay::home::take_over(
        PRIMARY,
        takeover_regions(&west_replica, &to_south, &deployment),
        &sink,
        deadline,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            report.slots_taken,
            report.slots_given_to_their_move,
            report.moves_to_lost_aborted
        ),
        (1, 0, 0),
        "{report}"
    );

    // Both survivors book both slots at once, still not hearing each other one way; what is
    // refused for now is tried again once they do.
    let apis = [(OTHER, &west_api), (THIRD, &south_api)];
    let attempts: Vec<(&str, &str, String)> = ["went-south", "came-east"]
        .into_iter()
        .flat_map(|slot| (0..12).map(move |i| (slot, if i % 2 == 0 { OTHER } else { THIRD }, format!("{slot}-{i}"))))
        .collect();
    let book_all = |attempts: Vec<(&'static str, &'static str, String)>| {
        let apis = &apis;
        async move {
            futures::future::join_all(attempts.into_iter().map(|(slot, region, guest)| async move {
                let outcome = book_following(apis, region, slot, &guest).await;
                ((slot, region, guest), outcome)
            }))
            .await
        }
    };
    let while_cut = book_all(attempts).await;
    replication.restore_one_way(THIRD, OTHER);
    replication.settle_among(&[OTHER, THIRD], SETTLE).await;
    let again: Vec<_> = while_cut
        .into_iter()
        .filter(|(_, o)| o.is_none())
        .map(|(a, _)| a)
        .collect();
    for ((slot, _, guest), outcome) in book_all(again).await {
        assert!(
            outcome.is_some(),
            "{guest} could not book {slot} once the survivors heard each other"
        );
    }
    replication.settle_among(&[OTHER, THIRD], SETTLE).await;
    for stack in [&west, &south] {
        let slots = slots_of(stack).await;
        for (slot, home) in [("went-south", THIRD), ("came-east", OTHER)] {
            let (booked, reserved, held_home, moving) = slots[slot].clone();
            assert_eq!(
                (booked, reserved, held_home.as_deref(), moving),
                (10, 10, Some(home), None),
                "{slot} in {:?}: one home, never overbooked",
                stack.regions
            );
        }
    }
}
