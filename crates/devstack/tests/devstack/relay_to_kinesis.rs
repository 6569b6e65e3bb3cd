//! The pipeline API → DynamoDB → Streams → relay → Kinesis on the real engines (DynamoDB Local,
//! kinesis-mock), driven deterministically: the relay's event source mapping is drained, never
//! waited for. Invariants 3 (nothing lost), 4 (per-reservation order) and 6 (only outbox inserts).

use adapters::RelayMode;
use aws_sdk_dynamodb::types::AttributeValue;
use dead_letters::JsonLinesDeadLetters;
use serde_json::json;
use std::collections::BTreeSet;
use test_support::events::{envelope, outbox_item};
use test_support::stack::{TestStack, expected_versions as expected, versions_by_reservation};

#[tokio::test]
async fn reservations_and_cancels_via_the_api_reach_kinesis_once_each_in_order() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let (created, cancelled) = api
        .reserve_and_cancel_every_third(&reqwest::Client::new(), "s1", 30)
        .await;

    let mut relay = stack.relay_mapping().await;
    let report = relay.drain().await.unwrap();
    assert_eq!(
        report.records_read, 40,
        "one stream record per outbox insert: {report:?}"
    );
    assert_eq!((report.function_errors, report.batches_to_on_failure), (0, 0));

    let events = stack.events_on_kinesis().await;
    assert_eq!(events.len(), 40, "nothing lost, nothing doubled when nothing failed");
    assert_eq!(versions_by_reservation(&events), expected(&created, &cancelled));
    for event in &events {
        let envelope = event.envelope.as_ref().unwrap();
        assert_eq!(
            envelope.reservation().unwrap().version,
            envelope.version,
            "payload matches the envelope"
        );
    }

    // Draining again publishes nothing new: the checkpoint held.
    assert_eq!(relay.drain().await.unwrap().records_read, 0);
    assert_eq!(stack.events_on_kinesis().await.len(), 40);
}

#[tokio::test]
async fn a_resharded_kinesis_stream_keeps_every_reservation_in_order() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    http.put(api.url("/slots/s1"))
        .json(&json!({ "capacity": 1000 }))
        .send()
        .await
        .unwrap();
    let mut relay = stack.relay_mapping().await;

    let mut created = Vec::new();
    for i in 0..25 {
        created.push(api.reserve(&http, "s1", &format!("g{i}")).await);
    }
    relay.drain().await.unwrap();

    // Mid-run: two shards become four. Creations went to the parents; cancellations of the same
    // reservations go to the children.
    stack.reshard(4).await;
    let stream = stack.name("EVENTS_STREAM");

    let cancelled: BTreeSet<String> = created.iter().cloned().collect();
    for id in &cancelled {
        api.cancel(&http, id).await;
    }
    for i in 25..40 {
        created.push(api.reserve(&http, "s1", &format!("g{i}")).await);
    }
    relay.drain().await.unwrap();

    let shards = stack.kinesis.list_shards().stream_name(&stream).send().await.unwrap();
    assert!(shards.shards().len() > 2, "the stream has parent and child shards");
    let events = stack.events_on_kinesis().await;
    assert_eq!(events.len(), 25 * 2 + 15);
    assert_eq!(versions_by_reservation(&events), expected(&created, &cancelled));
}

#[tokio::test]
async fn only_outbox_inserts_are_published_and_poison_items_are_dead_lettered() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    http.put(api.url("/slots/s1"))
        .json(&json!({ "capacity": 10 }))
        .send()
        .await
        .unwrap();
    let outbox = stack.name("OUTBOX_TABLE");
    let first = api.reserve(&http, "s1", "ada").await;

    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: &str| AttributeValue::N(v.into());
    // Not an outbox event: filtered out before the relay is invoked.
    stack
        .dynamodb
        .put_item()
        .table_name(&outbox)
        .item("aggregate_id", s("other"))
        .item("version", n("1"))
        .item("item_type", s("Note"))
        .send()
        .await
        .unwrap();
    // An outbox item that is not a valid envelope: dead-lettered, and the shard moves on.
    let mut broken = outbox_item(&envelope("broken", 1), RelayMode::Stream);
    broken.insert("event_type".into(), s("ReservationTeleported"));
    stack
        .dynamodb
        .put_item()
        .table_name(&outbox)
        .set_item(Some(broken))
        .send()
        .await
        .unwrap();
    // A modification and a removal of a published item: never published again.
    stack
        .dynamodb
        .update_item()
        .table_name(&outbox)
        .key("aggregate_id", s(&first))
        .key("version", n("1"))
        .update_expression("SET touched = :t")
        .expression_attribute_values(":t", n("1"))
        .send()
        .await
        .unwrap();
    stack
        .dynamodb
        .delete_item()
        .table_name(&outbox)
        .key("aggregate_id", s(&first))
        .key("version", n("1"))
        .send()
        .await
        .unwrap();
    let second = api.reserve(&http, "s1", "bob").await;

    let report = stack.relay_mapping().await.drain().await.unwrap();
    assert_eq!(
        report.records_filtered_out, 3,
        "the Note, the MODIFY and the REMOVE: {report:?}"
    );
    assert_eq!(report.batches_to_on_failure, 0);

    // Two reservations may sit on different shards: only per-reservation order is defined.
    let events = stack.events_on_kinesis().await;
    assert_eq!(
        events.len(),
        2,
        "one event each, nothing for the Note, MODIFY, REMOVE or poison item"
    );
    let keys: BTreeSet<String> = events.into_iter().map(|e| e.partition_key).collect();
    assert_eq!(keys, BTreeSet::from([first, second]));

    let letters = JsonLinesDeadLetters::new(stack.dead_letter_dir().join("relay-dead-letters.jsonl"))
        .read_all()
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("not a valid event envelope"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].record["dynamodb"]["Keys"]["aggregate_id"]["S"], "broken");
    assert!(letters[0].sequence_number.is_some() && letters[0].event_source_arn.is_some());
}
