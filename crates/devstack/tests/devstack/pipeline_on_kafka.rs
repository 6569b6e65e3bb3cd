//! The whole pipeline on the Kafka bus, on the real engines (DynamoDB Local, the Tansu broker):
//! HTTP → DynamoDB → Streams → relay → Kafka topic → projector and notifier through the local
//! Kafka event source mapping → the read model and the notifications. Invariants 4 and 5 as on
//! Kinesis, and 7 for a record another producer put on the topic.

use consumers::{Notifier, Projector};
use dead_letters::JsonLinesDeadLetters;
use std::collections::BTreeMap;
use test_support::kafka::TestTopic;
use test_support::stack::TestStack;

/// reservation id → (status, version) in a table's items of type `Reservation` (or untyped).
fn states(
    items: Vec<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
) -> BTreeMap<String, (String, String)> {
    items
        .into_iter()
        .filter(|item| {
            item.get("item_type")
                .is_none_or(|t| t.as_s().is_ok_and(|t| t == "Reservation"))
        })
        .filter_map(|item| {
            Some((
                item.get("reservation_id")?.as_s().ok()?.clone(),
                (
                    item.get("status")?.as_s().ok()?.clone(),
                    item.get("version")?.as_n().ok()?.clone(),
                ),
            ))
        })
        .collect()
}

#[tokio::test]
async fn events_on_the_kafka_topic_reach_the_read_model_and_notify_once_each_and_a_second_reading_changes_nothing() {
    let stack = TestStack::start().await;
    let topic = TestTopic::create(3).await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    let (created, cancelled) = api.reserve_and_cancel_every_third(&http, "s1", 24).await;
    stack.relay_mapping_to_kafka(&topic).await.drain().await.unwrap();

    let mut projector = stack
        .consumer_mapping_on_kafka(&topic, Projector::new(stack.read_model()))
        .await;
    let mut notifier = stack
        .consumer_mapping_on_kafka(&topic, Notifier::new(stack.notifications().await))
        .await;
    let projected = projector.drain().await.unwrap();
    notifier.drain().await.unwrap();
    assert_eq!(
        (
            projected.records_read,
            projected.function_errors,
            projected.partial_failures
        ),
        (32, 0, 0)
    );

    // The read model equals the reservations table.
    let truth = states(stack.scan_all(&stack.name("RESERVATIONS_TABLE")).await);
    let read_model = states(stack.scan_all(&stack.name("READ_MODEL_TABLE")).await);
    assert_eq!(truth.len(), created.len());
    assert_eq!(read_model, truth);
    // One notification per event, delivered to the topic's subscriber.
    let delivered = stack.received_notifications().await;
    assert_eq!(delivered.len(), created.len() + cancelled.len());

    // A second projector reading the whole topic again (a replay into the same table) changes
    // nothing: every event is a duplicate.
    let mut again = stack
        .consumer_mapping_on_kafka(&topic, Projector::new(stack.read_model()))
        .await;
    let report = again.drain().await.unwrap();
    assert_eq!(report.records_read, 32);
    assert_eq!(states(stack.scan_all(&stack.name("READ_MODEL_TABLE")).await), truth);
}

#[tokio::test]
async fn a_record_from_another_producer_is_dead_lettered_with_its_offset_and_the_partition_moves_on() {
    let stack = TestStack::start().await;
    let topic = TestTopic::create(1).await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s1", 10).await;
    let first = api.reserve(&http, "s1", "ada").await;
    let mut relay = stack.relay_mapping_to_kafka(&topic).await;
    relay.drain().await.unwrap();
    // Another producer writes a record of its own (no key) between our events.
    let partition = kafka_bus::partitions(&topic.client, &topic.config)
        .await
        .unwrap()
        .remove(0);
    partition
        .produce(
            vec![rskafka::record::Record {
                key: None,
                value: Some(b"{\"hello\": \"world\"}".to_vec()),
                headers: Default::default(),
                timestamp: rskafka::chrono::Utc::now(),
            }],
            rskafka::client::partition::Compression::NoCompression,
        )
        .await
        .unwrap();
    let second = api.reserve(&http, "s1", "bob").await;
    relay.drain().await.unwrap();

    let mut projector = stack
        .consumer_mapping_on_kafka(&topic, Projector::new(stack.read_model()))
        .await;
    let report = projector.drain().await.unwrap();
    assert_eq!(
        (report.records_read, report.partial_failures, report.function_errors),
        (3, 0, 0)
    );
    let applied = states(stack.scan_all(&stack.name("READ_MODEL_TABLE")).await);
    assert!(
        applied.contains_key(&first) && applied.contains_key(&second),
        "{applied:?}"
    );
    let letters = JsonLinesDeadLetters::new(stack.dead_letter_dir().join("projector-dead-letters.jsonl"))
        .read_all()
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("no key"), "{}", letters[0].reason);
    assert_eq!(
        letters[0].sequence_number.as_deref(),
        Some(format!("{}-0@1", topic.config.topic).as_str())
    );
}
