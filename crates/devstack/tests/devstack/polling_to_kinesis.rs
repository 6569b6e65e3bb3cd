//! The polling publisher on the real engines (DynamoDB Local with the outbox's sparse index,
//! kinesis-mock): the same order and no-loss checks as the stream relay's, two pollers at once,
//! poison items, and the recovery sweep after a stream relay outage.

use adapters::RelayMode;
use aws_sdk_dynamodb::types::AttributeValue;
use dead_letters::JsonLinesDeadLetters;
use devstack::events::ReadEvent;
use domain::ports::UnpublishedEvents;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use test_support::events::{envelope, outbox_item};
use test_support::stack::{TestStack, expected_versions, versions_by_reservation};
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_millis(20);

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

/// No reservation's versions ever go back on the stream, and each appears at most once.
fn assert_in_order_without_duplicates(events: &[ReadEvent]) {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for event in events {
        let version = event.envelope.as_ref().unwrap().version.get();
        let previous = last.insert(&event.partition_key, version).unwrap_or(0);
        assert!(
            version > previous,
            "{}: v{version} on the stream after v{previous}",
            event.partition_key
        );
    }
}

#[tokio::test]
async fn reservations_and_cancels_via_the_api_reach_kinesis_through_the_poller_once_each_in_order() {
    let stack = TestStack::start().await.polling();
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    let (created, cancelled) = api.reserve_and_cancel_every_third(&http, "s1", 30).await;
    assert_eq!(
        stack.outbox().pending(100).await.unwrap().len(),
        40,
        "every event is marked"
    );

    let poller = stack.poller(INTERVAL);
    let stats = poller.run(soon(), true, std::future::pending()).await;
    assert_eq!((stats.published, stats.dead_lettered, stats.failed_polls), (40, 0, 0));
    assert!(stats.drained);

    let events = stack.events_on_kinesis().await;
    assert_eq!(events.len(), 40, "nothing lost, nothing doubled when nothing failed");
    assert_eq!(
        versions_by_reservation(&events),
        expected_versions(&created, &cancelled)
    );
    assert!(
        stack.outbox().pending(100).await.unwrap().is_empty(),
        "every mark was cleared"
    );

    // Polling again publishes nothing: the marks held.
    let again = poller.run(soon(), true, std::future::pending()).await;
    assert_eq!(again.published, 0);
    assert_eq!(stack.events_on_kinesis().await.len(), 40);
}

#[tokio::test]
async fn in_stream_mode_the_api_marks_nothing_so_the_index_stays_empty() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s1", 10).await;
    let id = api.reserve(&http, "s1", "ada").await;
    api.cancel(&http, &id).await;
    assert!(stack.outbox().pending(10).await.unwrap().is_empty());
}

/// Invariants 3 and 4 with two pollers running at once while the API takes traffic: every event
/// reaches Kinesis once, and no reservation's versions ever go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pollers_running_while_the_api_takes_traffic_publish_every_event_once_in_order() {
    let stack = TestStack::start().await.polling();
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s1", 1_000).await;
    let (a, b) = (stack.poller(INTERVAL), stack.poller(INTERVAL));

    let traffic = async {
        let mut created = Vec::new();
        let mut cancelled = BTreeSet::new();
        for i in 0..60 {
            let id = api.reserve(&http, "s1", &format!("g{i}")).await;
            if i % 2 == 0 {
                api.cancel(&http, &id).await;
                cancelled.insert(id.clone());
            }
            created.push(id);
        }
        (created, cancelled)
    };
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let drained = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|done| *done).await;
    };
    let stop_when_published = async {
        let (created, cancelled) = traffic.await;
        let deadline = soon();
        while !stack.outbox().pending(10).await.unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // One more interval: a poll in flight finishes its marks.
        tokio::time::sleep(INTERVAL * 5).await;
        done_tx.send_replace(true);
        (created, cancelled)
    };
    let ((created, cancelled), a_stats, b_stats) = tokio::join!(
        stop_when_published,
        a.run(soon(), false, drained(done_rx.clone())),
        b.run(soon(), false, drained(done_rx))
    );

    assert!(
        a_stats.lease_busy + b_stats.lease_busy > 0,
        "the pollers contended: {a_stats:?} {b_stats:?}"
    );
    assert_eq!(a_stats.published + b_stats.published, 90);
    let events = stack.events_on_kinesis().await;
    assert_in_order_without_duplicates(&events);
    assert_eq!(
        versions_by_reservation(&events),
        expected_versions(&created, &cancelled)
    );
}

#[tokio::test]
async fn poison_outbox_items_are_dead_lettered_with_their_key_and_the_rest_is_published() {
    let stack = TestStack::start().await.polling();
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s1", 10).await;
    let s = |v: &str| AttributeValue::S(v.into());
    let mut broken = outbox_item(&envelope("broken", 1), RelayMode::Polling);
    broken.insert("event_id".into(), s(&ulid::Ulid::new().to_string()));
    broken.insert("event_type".into(), s("ReservationTeleported"));
    stack
        .dynamodb
        .put_item()
        .table_name(stack.name("OUTBOX_TABLE"))
        .set_item(Some(broken))
        .send()
        .await
        .unwrap();
    let id = api.reserve(&http, "s1", "ada").await;

    let stats = stack.poller(INTERVAL).run(soon(), true, std::future::pending()).await;
    assert_eq!((stats.published, stats.dead_lettered), (1, 1));
    let events = stack.events_on_kinesis().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].partition_key, id);
    assert!(stack.outbox().pending(10).await.unwrap().is_empty());

    let letters = JsonLinesDeadLetters::new(stack.dead_letter_dir().join("poller-dead-letters.jsonl"))
        .read_all()
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].function, "poller");
    assert!(
        letters[0].reason.contains("not a valid event envelope"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].record["aggregate_id"], "broken");
    assert_eq!(letters[0].record["item"]["event_type"], "ReservationTeleported");
}

/// The stream relay published the morning, then was down longer than the stream's retention:
/// the sweep publishes everything committed since the outage began, in order, and nothing before.
#[tokio::test]
async fn the_sweep_publishes_what_a_long_stream_relay_outage_left_behind() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s1", 100).await;
    let mut before = Vec::new();
    for i in 0..5 {
        before.push(api.reserve(&http, "s1", &format!("early{i}")).await);
    }
    stack.relay_mapping().await.drain().await.unwrap();
    assert_eq!(stack.events_on_kinesis().await.len(), 5);

    tokio::time::sleep(Duration::from_millis(20)).await;
    let outage_began = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut created = Vec::new();
    for i in 0..6 {
        created.push(api.reserve(&http, "s1", &format!("late{i}")).await);
    }
    let cancelled: BTreeSet<String> = created.iter().take(3).cloned().collect();
    for id in &cancelled {
        api.cancel(&http, id).await;
    }

    let stats = stack.poller(INTERVAL).sweep(outage_began, soon()).await.unwrap();
    assert_eq!((stats.swept, stats.published), (9, 9));
    assert!(stack.outbox().pending(10).await.unwrap().is_empty());

    let events = stack.events_on_kinesis().await;
    assert_eq!(events.len(), 5 + 9);
    let mut swept = versions_by_reservation(&events);
    for id in &before {
        assert_eq!(
            swept.remove(id).map(|v| v.len()),
            Some(1),
            "{id} was not published again"
        );
    }
    assert_eq!(swept, expected_versions(&created, &cancelled));
}
