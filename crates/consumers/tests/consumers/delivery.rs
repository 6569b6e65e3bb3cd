//! Invariants 4 and 5 at the consumers, on in-memory stores: duplicates and out-of-order
//! deliveries from Kinesis-shaped batches, gaps retried, malformed records dead-lettered.

use adapters::{InMemoryNotifications, InMemoryReadModel};
use aws_lambda_events::event::kinesis::KinesisEvent;
use consumers::{BatchStats, ConsumerHandler, Notifier, Projector};
use domain::ports::{GuestReservationsReader, PageRequest, StoreErrorKind};
use domain::{GuestId, ReservationId, Version};
use reservation_events_consumer::MemoryDeadLetters;
use serde_json::{Value, json};
use std::sync::Arc;
use test_support::events::{envelope_json as envelope, envelopes_event as batch, fixtures, kinesis_record as record};

fn failures(response: &aws_lambda_events::event::streams::KinesisEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect()
}

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

#[tokio::test]
async fn duplicates_are_acknowledged_and_applied_once() {
    let handler = projector();
    let (response, stats) = handler
        .handle(&batch(1, &[("A", 1), ("A", 1), ("A", 2), ("A", 1), ("A", 2)]))
        .await;
    assert!(failures(&response).is_empty());
    assert_eq!((stats.applied, stats.duplicates), (2, 3));
    assert_eq!(applied(&handler), [("A".into(), 1), ("A".into(), 2)]);

    // The whole batch again (Lambda retried it): nothing changes.
    let (response, stats) = handler.handle(&batch(1, &[("A", 1), ("A", 2)])).await;
    assert!(failures(&response).is_empty());
    assert_eq!((stats.applied, stats.duplicates), (0, 2));
    assert_eq!(applied(&handler).len(), 2);
}

/// A dead letter's record as a one-record event, as `reservations-replay redrive` hands it back.
fn redriven(letter: &reservation_events_consumer::DeadLetter) -> KinesisEvent {
    serde_json::from_value(json!({ "Records": [letter.record] })).unwrap()
}

#[tokio::test]
async fn a_gap_is_dead_lettered_with_the_version_it_waits_for_and_holds_back_only_its_reservation() {
    let handler = projector();
    // A's v1 is missing: A v2 and v3 are gaps, each dead-lettered; B goes on, and nothing is
    // handed back, so the shard moves on.
    let (response, stats) = handler
        .handle(&batch(10, &[("A", 2), ("B", 1), ("A", 3), ("B", 2)]))
        .await;
    assert!(failures(&response).is_empty(), "a gap never holds the shard");
    assert_eq!(
        stats,
        BatchStats {
            records: 4,
            applied: 2,
            gaps: 2,
            ..Default::default()
        }
    );
    assert_eq!(applied(&handler), [("B".into(), 1), ("B".into(), 2)]);
    let letters = handler.dead_letters().letters();
    assert_eq!(letters.len(), 2, "one letter per held event: {letters:?}");
    for (letter, version) in letters.iter().zip([2, 3]) {
        assert!(
            letter.reason.contains(&format!(
                "version 1 of reservation A never arrived before version {version}"
            )),
            "{}",
            letter.reason
        );
        assert_eq!(letter.record["kinesis"]["partitionKey"], "A", "the record, whole");
        assert!(letter.sequence_number.is_some());
    }

    // Once v1 has been published again, re-driving the letters applies A in order.
    handler.handle(&batch(5, &[("A", 1)])).await;
    for letter in &letters {
        let (response, stats) = handler.handle(&redriven(letter)).await;
        assert!(failures(&response).is_empty());
        assert_eq!(stats.applied, 1);
    }
    let a: Vec<u64> = applied(&handler)
        .into_iter()
        .filter(|(id, _)| id == "A")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(a, [1, 2, 3]);
}

#[tokio::test]
async fn an_out_of_order_delivery_never_applies_a_later_version_first() {
    let handler = projector();
    let (response, _) = handler.handle(&batch(1, &[("A", 2), ("A", 1)])).await;
    // v2 is a gap (dead-lettered, waiting for v1); v1 is then applied, v2 is not.
    assert!(failures(&response).is_empty());
    assert_eq!(applied(&handler), [("A".into(), 1)]);
    let letters = handler.dead_letters().letters();
    assert_eq!(letters.len(), 1);
    // Its re-drive now applies it, after v1.
    handler.handle(&redriven(&letters[0])).await;
    assert_eq!(applied(&handler), [("A".into(), 1), ("A".into(), 2)]);
}

#[tokio::test]
async fn a_write_the_store_refuses_as_invalid_is_dead_lettered_not_retried() {
    let handler = projector();
    handler.consumer().store().fail_next_call(StoreErrorKind::Rejected);
    let (response, stats) = handler.handle(&batch(1, &[("A", 1), ("B", 1)])).await;
    assert!(failures(&response).is_empty(), "nothing to retry: it can never pass");
    assert_eq!((stats.dead_lettered, stats.applied), (1, 1));
    let letters = handler.dead_letters().letters();
    assert!(
        letters[0].reason.starts_with("refused for good"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].record["kinesis"]["partitionKey"], "A");
}

#[tokio::test]
async fn a_store_failure_is_retried_from_that_record() {
    let handler = projector();
    handler.consumer().store().fail_next_call(StoreErrorKind::Throttled);
    let (response, stats) = handler.handle(&batch(1, &[("A", 1), ("B", 1)])).await;
    assert_eq!(failures(&response), [format!("{:056}", 1)]);
    assert_eq!((stats.store_failures, stats.applied), (1, 1));
    let (response, _) = handler.handle(&batch(1, &[("A", 1), ("B", 1)])).await;
    assert!(failures(&response).is_empty());
    assert_eq!(applied(&handler), [("B".into(), 1), ("A".into(), 1)]);
}

#[tokio::test]
async fn a_write_that_lost_a_race_is_retried_and_counted_as_contention_not_as_a_store_failure() {
    let (emitter, lines) = telemetry::Emitter::memory();
    let handler = projector().with_metrics(emitter);
    handler.consumer().store().fail_next_call(StoreErrorKind::Contended);
    let (response, stats) = handler.handle(&batch(1, &[("A", 1), ("B", 1)])).await;
    assert_eq!(failures(&response), [format!("{:056}", 1)]);
    assert_eq!((stats.contended, stats.store_failures, stats.applied), (1, 0, 1));
    let doc: Value = serde_json::from_str(&lines.lock().unwrap()[0]).unwrap();
    assert_eq!(
        (doc["TransactionConflicts"].as_f64(), doc["StoreFailures"].as_f64()),
        (Some(1.0), Some(0.0))
    );

    let (response, _) = handler.handle(&batch(1, &[("A", 1), ("B", 1)])).await;
    assert!(failures(&response).is_empty());
    assert_eq!(applied(&handler), [("B".into(), 1), ("A".into(), 1)]);
}

#[tokio::test]
async fn malformed_records_go_to_the_dead_letters_with_context_and_the_shard_moves_on() {
    let handler = projector();
    let aws_sample: KinesisEvent = serde_json::from_str(fixtures::KINESIS_EVENT_AWS_SAMPLE).unwrap();
    let mut event = batch(100, &[("A", 1)]);
    event.records.insert(0, aws_sample.records[0].clone());
    // An envelope under another reservation's key, and one whose payload contradicts it.
    let mut mismatched = envelope("C", 1);
    mismatched["payload"]["version"] = json!(7);
    let extra: KinesisEvent = serde_json::from_value(json!({ "Records": [
        record(101, "not-B", &serde_json::to_vec(&envelope("B", 1)).unwrap()),
        record(102, "C", &serde_json::to_vec(&mismatched).unwrap()),
    ]}))
    .unwrap();
    event.records.extend(extra.records);

    let (response, stats) = handler.handle(&event).await;
    assert!(failures(&response).is_empty(), "a malformed record is never retried");
    assert_eq!((stats.dead_lettered, stats.applied), (3, 1));
    let letters = handler.dead_letters().letters();
    assert_eq!(letters.len(), 3);
    assert_eq!(letters[0].function, "projector");
    assert!(letters[0].reason.starts_with("data is not an event envelope"));
    assert_eq!(
        letters[0].sequence_number.as_deref(),
        Some("49590338271490256608559692538361571095921575989136588898")
    );
    assert_eq!(
        letters[0].event_source_arn.as_deref(),
        Some("arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream")
    );
    // The record is kept whole, so it can be re-driven once fixed.
    assert_eq!(letters[0].record["kinesis"]["data"], "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==");
    assert!(letters[1].reason.contains("is not the event's reservation id B"));
    assert_eq!(
        letters[2].reason,
        "payload describes reservation C v7, the envelope C v1"
    );
}

#[tokio::test]
async fn the_read_model_lists_a_guests_reservations_newest_first_in_pages() {
    let handler = projector();
    let ids = ["01A", "01B", "01C"];
    let events: Vec<(&str, u64)> = ids.iter().map(|id| (*id, 1)).collect();
    let mut event = batch(1, &events);
    // All three for one guest.
    for record in &mut event.records {
        let mut envelope: Value = serde_json::from_slice(&record.kinesis.data.0).unwrap();
        envelope["payload"]["guest_id"] = json!("ada");
        record.kinesis.data.0 = serde_json::to_vec(&envelope).unwrap();
    }
    handler.handle(&event).await;
    let store = handler.consumer().store();
    let ada = GuestId::parse("ada").unwrap();
    let first = store
        .guest_reservations(&ada, &PageRequest { limit: 2, after: None })
        .await
        .unwrap();
    let ids_of = |p: &domain::ports::Page<domain::GuestReservation>| -> Vec<String> {
        p.items
            .iter()
            .map(|i| i.reservation.reservation_id.as_str().to_owned())
            .collect()
    };
    assert_eq!(ids_of(&first), ["01C", "01B"]);
    assert_eq!(first.next_after, Some(ReservationId::parse("01B").unwrap()));
    let second = store
        .guest_reservations(
            &ada,
            &PageRequest {
                limit: 2,
                after: first.next_after,
            },
        )
        .await
        .unwrap();
    assert_eq!(ids_of(&second), ["01A"]);
    assert_eq!(second.next_after, None);
}

#[tokio::test]
async fn two_notifiers_racing_on_the_same_batch_notify_each_event_once_in_order() {
    let sender = Arc::new(InMemoryNotifications::default());
    let first = ConsumerHandler::new(Notifier::new(sender.clone()), MemoryDeadLetters::default());
    let second = ConsumerHandler::new(Notifier::new(sender.clone()), MemoryDeadLetters::default());
    let event = batch(1, &[("A", 1), ("B", 1), ("A", 2), ("B", 2)]);
    let ((r1, s1), (r2, s2)) = tokio::join!(first.handle(&event), second.handle(&event));
    assert!(failures(&r1).is_empty() && failures(&r2).is_empty());
    assert_eq!(s1.applied + s2.applied, 4);
    assert_eq!(s1.duplicates + s2.duplicates, 4);
    let sent = sender.sent();
    assert_eq!(sent.len(), 4);
    for id in ["A", "B"] {
        let versions: Vec<Version> = sent
            .iter()
            .filter(|n| n.reservation_id.as_str() == id)
            .map(|n| n.version)
            .collect();
        assert_eq!(versions, [Version::new(1).unwrap(), Version::new(2).unwrap()]);
    }
    assert_eq!(sent[0].subject, "Your reservation is confirmed");
}

#[tokio::test]
async fn each_batch_emits_emf_metrics_and_each_event_logs_its_trace_id() {
    use std::io::Write;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);
    impl Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (emitter, lines) = telemetry::Emitter::memory();
    let handler = ConsumerHandler::new(
        Projector::new(InMemoryReadModel::default()),
        MemoryDeadLetters::default(),
    )
    .with_metrics(emitter);
    let event = batch(1, &[("A", 1), ("A", 1), ("B", 2)]);
    let arrived_ms = event.records[0]
        .kinesis
        .approximate_arrival_timestamp
        .timestamp_millis();
    let before_ms = now_ms();
    handler.handle(&event).await;
    let after_ms = now_ms();

    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 1, "one EMF document per batch");
    let doc: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(doc["Function"], "projector");
    assert_eq!(
        (
            doc["EventsApplied"].as_f64(),
            doc["DuplicatesSkipped"].as_f64(),
            doc["Gaps"].as_f64()
        ),
        (Some(1.0), Some(1.0), Some(1.0))
    );
    // The lag is the handler's clock minus the records' arrival, read between the two readings
    // of the clock taken around the call.
    let lag = doc["ConsumerLag"].as_f64().unwrap();
    assert!(
        ((before_ms - arrived_ms) as f64..=(after_ms - arrived_ms) as f64).contains(&lag),
        "lag {lag} ms, arrival {arrived_ms}, called between {before_ms} and {after_ms}"
    );
    let names: Vec<&str> = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ConsumerLag") && names.contains(&"DeadLettered"));

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let applied: Vec<Value> = logs
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["fields"]["message"] == "applied")
        .collect();
    assert_eq!(applied.len(), 1);
    let span = &applied[0]["span"];
    assert_eq!(span["trace_id"], "T-A-1");
    assert_eq!(span["reservation_id"], "A");
    assert_eq!(span["event_id"], "E-A-1");
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
