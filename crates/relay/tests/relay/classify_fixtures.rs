//! Real stream record shapes (as Lambda delivers them) through the relay's classification and
//! the whole handler. Invariant 6: only outbox inserts become events.

use crate::common::relay_event;
use aws_lambda_events::event::dynamodb::Event;
use dead_letters::MemoryDeadLetters;
use relay::{Classified, EventSink, PublishPolicy, PutOutcome, Relay, SinkError, SinkRecord, SkipReason, classify};
use std::sync::Mutex;
use std::time::Duration;
use test_support::events::fixtures;
use tokio::time::Instant;

fn fixture(name: &str) -> Event {
    let text = match name {
        "outbox-insert" => fixtures::OUTBOX_INSERT,
        "ttl-remove" => fixtures::TTL_REMOVE,
        "outbox-modify" => fixtures::OUTBOX_MODIFY,
        "non-outbox-insert" => fixtures::NON_OUTBOX_INSERT,
        "insert-without-new-image" => fixtures::INSERT_WITHOUT_NEW_IMAGE,
        "outbox-insert-broken-envelope" => fixtures::OUTBOX_INSERT_BROKEN_ENVELOPE,
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap_or_else(|e| panic!("fixture {name} is a DynamoDB stream event: {e}"))
}

fn only(mut event: Event) -> Classified {
    assert_eq!(event.records.len(), 1);
    classify(&mut event.records[0])
}

#[test]
fn an_outbox_insert_is_published_as_the_design_envelope_keyed_by_reservation() {
    let Classified::Publish { record, event } = only(fixture("outbox-insert")) else {
        panic!("should publish")
    };
    assert_eq!(record.partition_key, "01M862NN08VG1A2W9F724MN75V");
    let json: serde_json::Value = serde_json::from_slice(&record.data).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "event_id": "01M862NN0A3Q2W5S6T7V8X9Y0Z",
            "event_type": "ReservationCreated",
            "aggregate_type": "Reservation",
            "aggregate_id": "01M862NN08VG1A2W9F724MN75V",
            "version": 1,
            "occurred_at": "2026-11-24T06:07:43.112Z",
            "trace_id": "Root=1-6742c0af-2b9e1c5d8f3a4e6b7c8d9e0f",
            "payload": {
                "reservation_id": "01M862NN08VG1A2W9F724MN75V",
                "slot_id": "dinner-2026-12-24",
                "guest_id": "ada",
                "seats": 2,
                "status": "CONFIRMED",
                "version": 1,
                "created_at": "2026-11-24T06:07:43.112Z"
            }
        }),
        "the storage attributes item_type and expires_at stay out of the event"
    );
    let envelope: domain::EventEnvelope = serde_json::from_slice(&record.data).unwrap();
    assert_eq!(envelope.reservation().unwrap().seats.get(), 2);
    assert_eq!(
        (event.event_id, event.reservation_id, event.version, event.trace_id),
        (
            envelope.event_id,
            envelope.aggregate_id,
            envelope.version,
            envelope.trace_id
        )
    );
}

#[test]
fn a_ttl_removal_is_never_published() {
    assert_eq!(only(fixture("ttl-remove")), Classified::Skip(SkipReason::TtlRemoval));
}

#[test]
fn a_modification_is_never_published() {
    assert_eq!(
        only(fixture("outbox-modify")),
        Classified::Skip(SkipReason::NotAnInsert)
    );
}

#[test]
fn an_insert_of_another_item_is_never_published() {
    assert_eq!(
        only(fixture("non-outbox-insert")),
        Classified::Skip(SkipReason::NotAnOutboxItem)
    );
}

#[test]
fn an_insert_without_new_image_and_a_broken_envelope_are_poison() {
    for name in ["insert-without-new-image", "outbox-insert-broken-envelope"] {
        assert!(
            matches!(only(fixture(name)), Classified::Poison { .. }),
            "{name} should be poison"
        );
    }
}

#[test]
fn an_event_over_the_kinesis_record_limit_is_poison() {
    let mut event = fixture("outbox-insert");
    let image = &mut event.records[0].change.new_image;
    let mut payload = match image.get("payload") {
        Some(serde_dynamo::AttributeValue::M(m)) => m.clone(),
        _ => panic!("payload map"),
    };
    payload.insert("note".into(), serde_dynamo::AttributeValue::S("x".repeat(1024 * 1024)));
    image.insert("payload".into(), serde_dynamo::AttributeValue::M(payload));
    let Classified::Poison { reason } = classify(&mut event.records[0]) else {
        panic!("should be poison")
    };
    assert!(reason.contains("at most 1048576"), "{reason}");
}

/// Accepts everything and remembers it.
#[derive(Default)]
struct RecordingSink {
    accepted: Mutex<Vec<SinkRecord>>,
}

impl EventSink for RecordingSink {
    async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, SinkError> {
        self.accepted
            .lock()
            .unwrap()
            .extend(records.iter().map(|r| (*r).clone()));
        Ok(vec![PutOutcome::Accepted; records.len()])
    }
}

#[tokio::test]
async fn a_mixed_batch_publishes_only_the_outbox_insert_and_dead_letters_the_poison() {
    let mut event = fixture("ttl-remove");
    for name in [
        "outbox-modify",
        "non-outbox-insert",
        "insert-without-new-image",
        "outbox-insert",
        "outbox-insert-broken-envelope",
    ] {
        event.records.extend(fixture(name).records);
    }
    let relay = Relay::new(
        RecordingSink::default(),
        MemoryDeadLetters::default(),
        PublishPolicy::default(),
    );
    let outcome = relay_event(&relay, &event, Instant::now() + Duration::from_secs(60)).await;

    assert!(
        outcome.response.batch_item_failures.is_empty(),
        "nothing left for Lambda to retry"
    );
    let accepted = relay.sink().accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].partition_key, "01M862NN08VG1A2W9F724MN75V");
    let stats = outcome.stats;
    assert_eq!(
        (
            stats.skipped_ttl_removals,
            stats.skipped_not_inserts,
            stats.skipped_not_outbox
        ),
        (1, 1, 1)
    );

    let letters = relay.dead_letters().letters();
    assert_eq!(letters.len(), 2);
    assert_eq!(
        letters[0].sequence_number.as_deref(),
        Some("4421584500000000017450439095")
    );
    assert!(letters[0].reason.contains("NewImage"), "{}", letters[0].reason);
    assert_eq!(letters[1].function, "relay");
    assert!(
        letters[1]
            .event_source_arn
            .as_deref()
            .unwrap()
            .contains("reservation-outbox/stream")
    );
    // The whole record is kept, so it can be fixed and re-driven.
    let redrivable: aws_lambda_events::event::dynamodb::EventRecord =
        serde_json::from_value(letters[1].record.clone()).unwrap();
    assert_eq!(redrivable.event_id, "e1");
}

#[tokio::test]
async fn each_batch_emits_emf_metrics_with_the_relay_lag() {
    let mut event = fixture("ttl-remove");
    for name in ["outbox-insert", "outbox-insert-broken-envelope"] {
        event.records.extend(fixture(name).records);
    }
    let (emitter, lines) = telemetry::Emitter::memory();
    let relay = Relay::new(
        RecordingSink::default(),
        MemoryDeadLetters::default(),
        PublishPolicy::default(),
    )
    .with_metrics(emitter);
    relay_event(&relay, &event, Instant::now() + Duration::from_secs(60)).await;

    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 1, "one EMF document per batch");
    let doc: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(doc["Function"], "relay");
    assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ReservationOutbox");
    assert_eq!(doc["EventsRelayed"], 1.0);
    assert_eq!(doc["DeadLettered"], 1.0);
    assert_eq!(doc["RecordsSkipped"], 1.0);
    assert_eq!(doc["PutRecordsFailures"], 0.0);
    // The fixtures were written in 2026: now − their creation time is positive and large.
    assert!(doc["RelayLag"].as_f64().unwrap() > 0.0, "{doc}");
}

#[tokio::test]
async fn a_record_that_is_not_a_stream_record_is_dead_lettered_as_delivered_and_the_rest_published() {
    let insert: serde_json::Value = serde_json::from_str(fixtures::OUTBOX_INSERT).unwrap();
    let good = insert["Records"][0].clone();
    let broken = serde_json::json!({ "eventID": "broken", "eventName": "INSERT", "dynamodb": "not an object" });
    let event = serde_json::json!({ "Records": [broken, good] }).to_string();
    let relay = Relay::new(
        RecordingSink::default(),
        MemoryDeadLetters::default(),
        PublishPolicy::default(),
    );
    let outcome = relay
        .handle(&event, Instant::now() + Duration::from_secs(60))
        .await
        .expect("the event has Records");

    assert!(outcome.response.batch_item_failures.is_empty());
    assert_eq!(
        relay.sink().accepted.lock().unwrap().len(),
        1,
        "the good record is published"
    );
    let letters = relay.dead_letters().letters();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("not a DynamoDB stream record"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].record, broken, "kept exactly as delivered");
    // An event that is not a batch of records at all is the invocation's error.
    assert!(relay.handle(r#"{"records": []}"#, Instant::now()).await.is_err());
}

/// Refuses every record.
struct RefusingSink;

impl EventSink for RefusingSink {
    async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, SinkError> {
        Ok(vec![
            PutOutcome::Failed {
                code: "InternalFailure".into(),
                message: "refused".into(),
            };
            records.len()
        ])
    }
}

/// The identifiers the relay hands back to Lambda to resume from.
fn resume_at(outcome: &relay::RelayOutcome) -> Vec<Option<String>> {
    outcome
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn the_record_to_resume_from_is_named_by_its_sequence_number_and_only_by_it() {
    let give_up_at_once = PublishPolicy {
        max_failed_rounds: 0,
        ..PublishPolicy::default()
    };
    let relay = Relay::new(RefusingSink, MemoryDeadLetters::default(), give_up_at_once);
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = relay_event(&relay, &fixture("outbox-insert"), deadline).await;
    assert_eq!(resume_at(&outcome), [Some("4421584500000000017450439091".to_owned())]);

    // Without a sequence number Lambda could not resume from the record: the identifier is
    // empty (Lambda then retries the whole batch), never the eventID.
    let mut insert: serde_json::Value = serde_json::from_str(fixtures::OUTBOX_INSERT).unwrap();
    insert["Records"][0]["dynamodb"]
        .as_object_mut()
        .unwrap()
        .remove("SequenceNumber");
    let outcome = relay.handle(&insert.to_string(), deadline).await.unwrap();
    assert_eq!(resume_at(&outcome), [Some(String::new())]);
}

/// Several Regions on a global table (docs/multi-region.md): every Region's stream carries every
/// Region's outbox items, and each Region's relay publishes only its own.
#[tokio::test]
async fn a_relay_publishes_the_events_born_in_its_region_and_the_primary_those_from_before_regions() {
    use test_support::events::{envelope, outbox_image, outbox_stream_record};
    assert_eq!(
        relay::BORN_IN,
        adapters::dynamodb::items::BORN_IN,
        "the relay reads what the store writes"
    );
    let record = |sequence: u64, id: &str, born_in: Option<&str>| {
        let mut image = outbox_image(&envelope(id, 1));
        match born_in {
            Some(region) => image[relay::BORN_IN] = serde_json::json!({ "S": region }),
            None => {
                image.as_object_mut().unwrap().remove(relay::BORN_IN);
            }
        }
        outbox_stream_record("INSERT", sequence, (id, 1), image)
    };
    let event: Event = serde_json::from_value(serde_json::json!({ "Records": [
        record(1, "01M862NN08VG1A2W9F724MN7E1", Some("us-east-1")),
        record(2, "01M862NN08VG1A2W9F724MN7W1", Some("eu-west-1")),
        record(3, "01M862NN08VG1A2W9F724MN7L1", None),
    ]}))
    .unwrap();
    let in_region = |here: &str| {
        Relay::new(
            RecordingSink::default(),
            MemoryDeadLetters::default(),
            PublishPolicy::default(),
        )
        .publishing_for(settings::Regions {
            here: here.into(),
            primary: "us-east-1".into(),
        })
    };
    for (here, published) in [
        (
            "us-east-1",
            vec!["01M862NN08VG1A2W9F724MN7E1", "01M862NN08VG1A2W9F724MN7L1"],
        ),
        ("eu-west-1", vec!["01M862NN08VG1A2W9F724MN7W1"]),
    ] {
        let relay = in_region(here);
        let outcome = relay_event(&relay, &event, Instant::now() + Duration::from_secs(60)).await;
        let accepted: Vec<String> = relay
            .sink()
            .accepted
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.partition_key.clone())
            .collect();
        assert_eq!(accepted, published, "{here}");
        assert_eq!(outcome.stats.skipped_born_elsewhere, 3 - published.len(), "{here}");
        assert!(outcome.response.batch_item_failures.is_empty());
    }
}
