//! Invariants 4, 5 and 7 on batches of Lambda's Kafka event source mapping: each topic-partition's
//! records applied in offset order and once, a failure reported per partition at the offset to
//! resume from (the other partitions move on), and a record that is not one of our envelopes
//! dead-lettered with where it was while its partition moves on.

use adapters::InMemoryReadModel;
use consumers::{ConsumerHandler, Projector};
use domain::ports::StoreErrorKind;
use reservation_events_consumer::MemoryDeadLetters;
use reservation_events_consumer::handler::{KafkaBatchItemFailure, KafkaEventResponse, KafkaItemIdentifier};
use serde_json::Value;
use test_support::events::{kafka_envelope as envelope, kafka_event};

fn projector() -> ConsumerHandler<Projector<InMemoryReadModel>, MemoryDeadLetters> {
    ConsumerHandler::new(
        Projector::new(InMemoryReadModel::default()),
        MemoryDeadLetters::default(),
    )
}

fn applied(handler: &ConsumerHandler<Projector<InMemoryReadModel>, MemoryDeadLetters>) -> Vec<(String, u64)> {
    handler
        .consumer()
        .store()
        .applied()
        .into_iter()
        .map(|(id, v)| (id.as_str().to_owned(), v.get()))
        .collect()
}

fn resume_at(partition: &str, offset: i64) -> KafkaBatchItemFailure {
    KafkaBatchItemFailure {
        item_identifier: KafkaItemIdentifier {
            partition: partition.into(),
            offset,
        },
    }
}

#[tokio::test]
async fn each_partition_is_applied_in_offset_order_and_duplicates_once() {
    let handler = projector();
    // Partition 1 is listed first and its records out of offset order: the handler orders them.
    let event = kafka_event(
        "events",
        &[
            (
                1,
                vec![envelope(11, "B", 2), envelope(10, "B", 1), envelope(12, "B", 2)],
            ),
            (0, vec![envelope(5, "A", 1), envelope(6, "A", 1), envelope(7, "A", 2)]),
        ],
    );
    let (response, stats) = handler.handle_kafka(&event).await;
    assert_eq!(response, KafkaEventResponse::default(), "nothing to retry");
    assert_eq!((stats.applied, stats.duplicates), (4, 2));
    let mut applied = applied(&handler);
    applied.sort();
    assert_eq!(
        applied,
        [("A".into(), 1), ("A".into(), 2), ("B".into(), 1), ("B".into(), 2)]
    );
}

#[tokio::test]
async fn a_failure_is_answered_per_partition_at_the_offset_to_resume_from_and_the_others_move_on() {
    let handler = projector();
    handler.consumer().store().fail_next_call(StoreErrorKind::Throttled);
    let event = kafka_event(
        "events",
        &[
            (0, vec![envelope(5, "A", 1), envelope(6, "A", 2)]),
            (1, vec![envelope(10, "B", 1), envelope(11, "B", 2)]),
        ],
    );
    let (response, stats) = handler.handle_kafka(&event).await;
    // A v1 failed: A v2 is held back, and partition 0 resumes from offset 5; partition 1 is done.
    assert_eq!(response.batch_item_failures, [resume_at("events-0", 5)]);
    assert_eq!((stats.store_failures, stats.held_back, stats.applied), (1, 1, 2));
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(
        json,
        serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": { "partition": "events-0", "offset": 5 } }] }),
        "the shape Lambda's Kafka mapping reads"
    );

    // The mapping re-delivers partition 0 from offset 5.
    let again = kafka_event("events", &[(0, vec![envelope(5, "A", 1), envelope(6, "A", 2)])]);
    let (response, _) = handler.handle_kafka(&again).await;
    assert!(response.batch_item_failures.is_empty());
    let mut applied = applied(&handler);
    applied.sort();
    assert_eq!(
        applied,
        [("A".into(), 1), ("A".into(), 2), ("B".into(), 1), ("B".into(), 2)]
    );
}

#[tokio::test]
async fn a_foreign_record_is_dead_lettered_with_where_it_was_and_its_partition_moves_on() {
    let handler = projector();
    let event = kafka_event(
        "events",
        &[(
            2,
            vec![
                (40, None, b"{\"hello\": \"from another producer\"}".to_vec()),
                (41, Some("C"), b"not json".to_vec()),
                envelope(42, "C", 1),
            ],
        )],
    );
    let (response, stats) = handler.handle_kafka(&event).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "a foreign record never holds the partition"
    );
    assert_eq!((stats.dead_lettered, stats.applied), (2, 1));
    let letters = handler.dead_letters().letters();
    assert_eq!(letters.len(), 2);
    assert!(letters[0].reason.contains("no key"), "{}", letters[0].reason);
    assert_eq!(letters[0].sequence_number.as_deref(), Some("events-2@40"));
    assert_eq!(
        letters[0].event_source_arn.as_deref(),
        Some("arn:aws:kafka:us-east-1:123456789012:cluster/reservations/abc-1")
    );
    assert_eq!(letters[0].record["offset"], 40, "the record is kept as delivered");
    assert_eq!(letters[1].sequence_number.as_deref(), Some("events-2@41"));
    assert_eq!(applied(&handler), [("C".into(), 1)]);
}

#[tokio::test]
async fn a_kafka_batch_emits_the_same_metrics_with_the_lag_from_the_records_timestamps() {
    let (emitter, lines) = telemetry::Emitter::memory();
    let handler = projector().with_metrics(emitter);
    let before_ms = now_ms();
    handler
        .handle_kafka(&kafka_event("events", &[(0, vec![envelope(1, "A", 1)])]))
        .await;
    let after_ms = now_ms();
    let doc: Value = serde_json::from_str(&lines.lock().unwrap()[0]).unwrap();
    assert_eq!(doc["EventsApplied"], 1.0);
    // The records were produced at 1,795,500,000,000 ms (test_support::events::kafka_record).
    let lag = doc["ConsumerLag"].as_f64().unwrap();
    let produced = 1_795_500_000_000i64;
    assert!(
        ((before_ms - produced) as f64..=(after_ms - produced) as f64).contains(&lag),
        "{lag}"
    );
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
