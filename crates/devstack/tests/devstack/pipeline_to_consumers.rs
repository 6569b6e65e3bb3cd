//! The whole pipeline on the real engines: HTTP → DynamoDB → Streams → relay → Kinesis →
//! projector and notifier → `GET /guests/{guest_id}/reservations`. Every mapping is drained, never
//! waited for. Invariants 4 (per-reservation order) and 5 (exactly-once effect, replays change
//! nothing), and 7 for a malformed record on the stream.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use dead_letters::JsonLinesDeadLetters;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use test_support::stack::{TestApi, TestStack};

type Item = HashMap<String, AttributeValue>;

/// Every item of a table keyed by its key attributes, for comparing whole tables.
fn by_key(items: Vec<Item>, keys: &[&str]) -> BTreeMap<Vec<String>, String> {
    items
        .into_iter()
        .map(|item| {
            let key = keys.iter().map(|k| format!("{:?}", item[*k])).collect();
            let mut fields: Vec<String> = item.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            fields.sort();
            (key, fields.join(","))
        })
        .collect()
}

async fn guest_page(http: &reqwest::Client, api: &TestApi, guest: &str, query: &str) -> Value {
    let response = http
        .get(api.url(&format!("/guests/{guest}/reservations{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn notifications(items: &[Item]) -> Vec<(String, u64)> {
    let mut sent: Vec<(String, u64)> = items
        .iter()
        .filter(|i| i["item_type"].as_s().is_ok_and(|t| t == "Notification"))
        .map(|i| {
            (
                i["reservation_id"].as_s().unwrap().clone(),
                i["version"].as_n().unwrap().parse().unwrap(),
            )
        })
        .collect();
    sent.sort();
    sent
}

#[tokio::test]
async fn a_reservation_and_its_cancel_reach_the_guest_read_model_and_notify_once_each() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "dinner", 100).await;
    let mut relay = stack.relay_mapping().await;
    let mut projector = stack.projector_mapping().await;
    let mut notifier = stack.notifier_mapping().await;

    // Three reservations for ada (created one after another, so newest first is reverse order),
    // one for bob; ada's second is cancelled.
    let mut ada = Vec::new();
    for _ in 0..3 {
        ada.push(api.reserve(&http, "dinner", "ada").await);
    }
    let bob = api.reserve(&http, "dinner", "bob").await;
    api.cancel(&http, &ada[1]).await;

    relay.drain().await.unwrap();
    projector.drain().await.unwrap();
    notifier.drain().await.unwrap();
    // What the consumers read keeps the published event contract.
    assert_eq!(stack.events_on_kinesis().await.len(), 5);

    let page = guest_page(&http, &api, "ada", "").await;
    let items = page["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i["reservation_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [ada[2].as_str(), ada[1].as_str(), ada[0].as_str()]);
    let statuses: Vec<(&str, u64)> = items
        .iter()
        .map(|i| (i["status"].as_str().unwrap(), i["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(statuses, [("CONFIRMED", 1), ("CANCELLED", 2), ("CONFIRMED", 1)]);
    assert!(page.get("next_cursor").is_none());
    // The read model holds what the API answers for the reservation itself.
    let direct = api.get_json(&http, &format!("/reservations/{}", ada[1])).await;
    assert_eq!(items[1], direct);

    // Pages of two: newest first, then the rest.
    let first = guest_page(&http, &api, "ada", "?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = guest_page(&http, &api, "ada", &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(second["items"][0]["reservation_id"], ada[0].as_str());
    assert!(second.get("next_cursor").is_none());
    assert_eq!(
        guest_page(&http, &api, "bob", "").await["items"][0]["reservation_id"],
        bob.as_str()
    );
    assert_eq!(
        guest_page(&http, &api, "nobody", "").await["items"],
        Value::Array(vec![])
    );

    // One notification per event: 4 creations and 1 cancel.
    let sent = notifications(&stack.scan_all(&stack.name("NOTIFICATIONS_TABLE")).await);
    let mut expected: Vec<(String, u64)> = ada.iter().chain([&bob]).map(|id| (id.clone(), 1)).collect();
    expected.push((ada[1].clone(), 2));
    expected.sort();
    assert_eq!(sent, expected);
    // And one message each on the queue subscribed to the notifications topic.
    let mut delivered: Vec<(String, u64)> = stack
        .received_notifications()
        .await
        .into_iter()
        .map(|r| (r.message.reservation_id, r.message.version))
        .collect();
    delivered.sort();
    assert_eq!(delivered, expected);
}

#[tokio::test]
async fn consuming_the_whole_stream_again_changes_nothing() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "lunch", 100).await;
    let mut relay = stack.relay_mapping().await;
    for i in 0..12 {
        let id = api.reserve(&http, "lunch", &format!("guest-{}", i % 3)).await;
        if i % 2 == 0 {
            api.cancel(&http, &id).await;
        }
    }
    relay.drain().await.unwrap();
    stack.projector_mapping().await.drain().await.unwrap();
    stack.notifier_mapping().await.drain().await.unwrap();
    let read_model = stack.name("READ_MODEL_TABLE");
    let notifications_table = stack.name("NOTIFICATIONS_TABLE");
    let model_before = by_key(stack.scan_all(&read_model).await, &["guest_id", "reservation_id"]);
    let sent_before = by_key(stack.scan_all(&notifications_table).await, &["pk"]);
    assert_eq!(model_before.len(), 12);
    assert_eq!(notifications(&stack.scan_all(&notifications_table).await).len(), 18);

    // Fresh mappings start at the trim horizon again: every event is delivered a second time.
    for _ in 0..2 {
        stack.projector_mapping().await.drain().await.unwrap();
        stack.notifier_mapping().await.drain().await.unwrap();
    }
    assert_eq!(
        by_key(stack.scan_all(&read_model).await, &["guest_id", "reservation_id"]),
        model_before
    );
    assert_eq!(by_key(stack.scan_all(&notifications_table).await, &["pk"]), sent_before);
    assert_eq!(
        stack.received_notifications().await.len(),
        18,
        "one message per event on the subscribed queue, after three deliveries of each"
    );
}

#[tokio::test]
async fn two_consumers_racing_across_a_reshard_apply_and_notify_each_version_once() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s", 1000).await;
    let mut relay = stack.relay_mapping().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(api.reserve(&http, "s", &format!("g{}", i % 4)).await);
    }
    relay.drain().await.unwrap();
    // Creations sit in the parent shards, cancellations of the same reservations in the children.
    stack.reshard(4).await;
    for id in &ids {
        api.cancel(&http, id).await;
    }
    relay.drain().await.unwrap();

    // Two projectors and two notifiers on the same tables at once, as during a shard split when
    // an old and a new poller overlap.
    let (mut p1, mut p2) = (stack.projector_mapping().await, stack.projector_mapping().await);
    let (mut n1, mut n2) = (stack.notifier_mapping().await, stack.notifier_mapping().await);
    let (a, b, c, d) = tokio::join!(p1.drain(), p2.drain(), n1.drain(), n2.drain());
    for report in [a, b, c, d] {
        let report = report.unwrap();
        assert_eq!(report.records_to_on_failure, 0, "{report:?}");
    }

    let sent = notifications(&stack.scan_all(&stack.name("NOTIFICATIONS_TABLE")).await);
    let mut expected: Vec<(String, u64)> = ids.iter().flat_map(|id| [(id.clone(), 1), (id.clone(), 2)]).collect();
    expected.sort();
    assert_eq!(sent, expected, "each event notified exactly once");
    // Delivered once each too, each reservation's creation before its cancel. Both notifiers may
    // publish a version they both claimed: the topic deduplicates by notification id, which the
    // local channel (moto) misses for two publishes that arrive at once (it checks its queue, then
    // appends, unlocked), so repeats are set apart here as SNS FIFO would drop them.
    let (delivered, _repeats) = test_support::delivery::first_deliveries(&stack.received_notifications().await);
    assert_eq!(delivered.len(), 20);
    assert!(delivered.values().all(|v| v == &[1, 2]), "{delivered:?}");
    let model = stack.scan_all(&stack.name("READ_MODEL_TABLE")).await;
    assert_eq!(model.len(), 20);
    assert!(
        model
            .iter()
            .all(|i| i["version"].as_n().unwrap() == "2" && i["status"].as_s().unwrap() == "CANCELLED")
    );
}

#[tokio::test]
async fn a_malformed_record_on_the_stream_is_dead_lettered_and_the_shard_moves_on() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s", 10).await;
    let mut relay = stack.relay_mapping().await;
    let id = api.reserve(&http, "s", "ada").await;
    relay.drain().await.unwrap();
    // Someone else's producer writes garbage under the same key, then the cancel follows.
    stack
        .kinesis
        .put_record()
        .stream_name(stack.name("EVENTS_STREAM"))
        .partition_key(&id)
        .data(Blob::new(b"{\"not\": \"an envelope\"}".to_vec()))
        .send()
        .await
        .unwrap();
    api.cancel(&http, &id).await;
    relay.drain().await.unwrap();

    let mut projector = stack.projector_mapping().await;
    let report = projector.drain().await.unwrap();
    assert_eq!(report.records_to_on_failure, 0);
    let page = guest_page(&http, &api, "ada", "").await;
    assert_eq!(page["items"][0]["status"], "CANCELLED");

    let letters = dead_letters::JsonLinesDeadLetters::new(stack.dead_letter_dir().join("projector-dead-letters.jsonl"))
        .read_all()
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].function, "projector");
    assert!(
        letters[0].reason.starts_with("data is not an event envelope"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].record["kinesis"]["partitionKey"], id.as_str());
    assert!(letters[0].sequence_number.is_some());
    let shards: BTreeSet<_> = letters.iter().map(|l| l.event_source_arn.clone()).collect();
    assert_eq!(shards.len(), 1);
}

#[tokio::test]
async fn a_gap_is_dead_lettered_with_the_version_it_waits_for_and_the_shard_moves_on() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s", 10).await;
    let mut relay = stack.relay_mapping().await;
    let kept = api.reserve(&http, "s", "ada").await;
    relay.drain().await.unwrap();
    // A cancel (version 2) of a reservation whose creation never reached the stream.
    let orphan = "01M86ORPHAN0000000000000000";
    let mut envelope = test_support::events::envelope_json(orphan, 2);
    envelope["payload"]["guest_id"] = "ada".into();
    stack
        .kinesis
        .put_record()
        .stream_name(stack.name("EVENTS_STREAM"))
        .partition_key(orphan)
        .data(Blob::new(serde_json::to_vec(&envelope).unwrap()))
        .send()
        .await
        .unwrap();
    // And a reservation after it on the stream: the gap must not hold it up.
    let later = api.reserve(&http, "s", "ada").await;
    relay.drain().await.unwrap();

    let report = stack.projector_mapping().await.drain().await.unwrap();
    assert_eq!(report.batches_to_on_failure, 0, "{report:?}");
    assert_eq!(report.partial_failures, 0, "nothing handed back to wait on: {report:?}");

    let page = guest_page(&http, &api, "ada", "").await;
    let ids: BTreeSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reservation_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([kept.as_str(), later.as_str()]),
        "the gap was never applied"
    );
    let letters = JsonLinesDeadLetters::new(stack.dead_letter_dir().join("projector-dead-letters.jsonl"))
        .read_all()
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].reason.contains(&format!(
            "version 1 of reservation {orphan} never arrived before version 2"
        )),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].record["kinesis"]["partitionKey"], orphan);
}

/// A consumer that notes what it applied, in the order it applied it.
struct Noting<C> {
    inner: C,
    applied: std::sync::Arc<std::sync::Mutex<Vec<(String, u64)>>>,
}

impl<C: consumers::Consumer> consumers::Consumer for Noting<C> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn apply(
        &self,
        event: &reservation_events_consumer::ReservationEvent,
    ) -> Result<domain::ApplyOutcome, consumers::ConsumerError> {
        let outcome = self.inner.apply(event).await?;
        if outcome == domain::ApplyOutcome::Applied {
            let applied = (event.reservation_id().to_owned(), event.version.get());
            self.applied.lock().unwrap().push(applied);
        }
        Ok(outcome)
    }

    async fn applied_version(
        &self,
        event: &reservation_events_consumer::ReservationEvent,
    ) -> Result<Option<domain::Version>, consumers::ConsumerError> {
        self.inner.applied_version(event).await
    }
}

/// Every consumer in the one list (`consumers::ALL`), built as its Lambda builds it, applies each
/// reservation's versions once and in order, and a second reading of the stream changes nothing:
/// a consumer added to the list is held to it here.
#[tokio::test]
async fn every_registered_consumer_applies_each_version_once_in_order_and_a_second_reading_changes_nothing() {
    use consumers::Consumer;
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    let mut relay = stack.relay_mapping().await;
    let (created, cancelled) = api.reserve_and_cancel_every_third(&http, "lunch", 6).await;
    relay.drain().await.unwrap();
    let mut committed: Vec<(String, u64)> = created.iter().map(|id| (id.clone(), 1)).collect();
    committed.extend(cancelled.iter().map(|id| (id.clone(), 2)));
    committed.sort();
    let latest: Vec<reservation_events_consumer::ReservationEvent> = stack
        .events_on_kinesis()
        .await
        .iter()
        .map(|read| reservation_events_consumer::decode(&read.partition_key, &read.data).unwrap())
        .filter(|event| event.version.get() == 2 || !cancelled.contains(event.reservation_id()))
        .collect();
    for registration in consumers::ALL {
        for reading in ["first", "second"] {
            let applied = std::sync::Arc::default();
            let noting = Noting {
                inner: stack.consumer(registration).await,
                applied: std::sync::Arc::clone(&applied),
            };
            stack.consumer_mapping(noting).await.drain().await.unwrap();
            let mut applied = applied.lock().unwrap().clone();
            let name = registration.name;
            if reading == "second" {
                assert_eq!(applied, [], "{name}: the second reading applies nothing");
                continue;
            }
            // In order per reservation: a version is applied only after the one before it.
            for (at, (id, version)) in applied.iter().enumerate() {
                if *version > 1 {
                    assert!(
                        applied[..at].contains(&(id.clone(), version - 1)),
                        "{name}: {id} v{version} first"
                    );
                }
            }
            applied.sort();
            assert_eq!(applied, committed, "{name}: each version once");
        }
        let reader = stack.consumer(registration).await;
        for event in &latest {
            let applied = reader.applied_version(event).await.unwrap();
            assert_eq!(
                applied,
                Some(event.version),
                "{} at {}",
                registration.name,
                event.reservation_id()
            );
        }
    }
}
