//! Real event shapes for tests and benchmarks.
//!
//! Envelopes and outbox items come from the product's own types (`domain::EventEnvelope`, the
//! store's `OutboxItem`), so a fixture cannot describe a layout the code no longer writes.

use adapters::RelayMode;
use adapters::dynamodb::items::OutboxItem;
use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::kinesis::KinesisEvent;
use base64::Engine;
use domain::EventEnvelope;
use serde_json::{Value, json};
use std::collections::HashMap;

/// Lambda events and stream records captured from AWS, committed as they were received.
pub mod fixtures {
    /// A DynamoDB Streams event with one outbox INSERT.
    pub const OUTBOX_INSERT: &str = include_str!("../fixtures/outbox-insert.json");
    /// A TTL deletion of an outbox item (userIdentity Service / dynamodb.amazonaws.com).
    pub const TTL_REMOVE: &str = include_str!("../fixtures/ttl-remove.json");
    pub const OUTBOX_MODIFY: &str = include_str!("../fixtures/outbox-modify.json");
    pub const NON_OUTBOX_INSERT: &str = include_str!("../fixtures/non-outbox-insert.json");
    pub const INSERT_WITHOUT_NEW_IMAGE: &str = include_str!("../fixtures/insert-without-new-image.json");
    pub const OUTBOX_INSERT_BROKEN_ENVELOPE: &str = include_str!("../fixtures/outbox-insert-broken-envelope.json");
    /// AWS's sample Kinesis event (its data is not one of our envelopes).
    pub const KINESIS_EVENT_AWS_SAMPLE: &str = include_str!("../fixtures/kinesis-event-aws-sample.json");
}

/// The envelope of reservation `id` at `version` (1 = created, later = cancelled) as JSON, as the
/// relay puts it on Kinesis.
pub fn envelope_json(id: &str, version: u64) -> Value {
    let created = version == 1;
    let mut payload = json!({
        "reservation_id": id, "slot_id": "dinner", "guest_id": format!("guest-of-{id}"), "seats": 2,
        "status": if created { "CONFIRMED" } else { "CANCELLED" }, "version": version,
        "created_at": "2026-11-24T10:00:00Z",
    });
    if !created {
        payload["cancelled_at"] = json!("2026-11-24T11:00:00Z");
    }
    json!({
        "event_id": format!("E-{id}-{version}"),
        "event_type": if created { "ReservationCreated" } else { "ReservationCancelled" },
        "aggregate_type": "Reservation", "aggregate_id": id, "version": version,
        "occurred_at": "2026-11-24T10:00:00Z", "payload": payload, "trace_id": format!("T-{id}-{version}"),
    })
}

/// [`envelope_json`] as the domain's envelope.
pub fn envelope(id: &str, version: u64) -> EventEnvelope {
    serde_json::from_value(envelope_json(id, version)).expect("the built envelope is valid")
}

/// TTL of the outbox items built here (epoch seconds, late 2026).
pub const EXPIRES_AT: i64 = 1_795_500_000;

fn outbox_item_value(envelope: &EventEnvelope, mode: RelayMode) -> serde_dynamo::Item {
    let expires_at = time::OffsetDateTime::from_unix_timestamp(EXPIRES_AT).expect("a valid time");
    serde_dynamo::to_item(OutboxItem::new(
        envelope,
        expires_at,
        mode,
        &settings::Regions::single(crate::stack::TEST_REGION),
    ))
    .expect("an outbox item serializes")
}

/// The outbox item the store writes for `envelope`, in DynamoDB JSON: a stream record's
/// `NewImage`.
pub fn outbox_image(envelope: &EventEnvelope) -> Value {
    serde_json::to_value(outbox_item_value(envelope, RelayMode::Stream)).expect("DynamoDB JSON")
}

/// The outbox item the store writes for `envelope` in `mode`, ready to put into a table (tests
/// break one on purpose by changing an attribute).
pub fn outbox_item(
    envelope: &EventEnvelope,
    mode: RelayMode,
) -> HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    outbox_item_value(envelope, mode).into()
}

/// A DynamoDB Streams record of the outbox table as Lambda delivers it: `event_name` (INSERT,
/// MODIFY, REMOVE) of the item keyed by (`aggregate_id`, `version`), with `new_image`.
pub fn outbox_stream_record(event_name: &str, sequence: u64, key: (&str, u64), new_image: Value) -> Value {
    json!({
        "eventID": format!("ev{sequence}"), "eventName": event_name, "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": EXPIRES_AT,
            "Keys": { "aggregate_id": { "S": key.0 }, "version": { "N": key.1.to_string() } },
            "NewImage": new_image, "SequenceNumber": format!("{sequence:030}"), "SizeBytes": 300,
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/reservation-outbox/stream/x"
    })
}

/// A Kinesis record as Lambda delivers it.
pub fn kinesis_record(sequence: u64, partition_key: &str, data: &[u8]) -> Value {
    json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": format!("{sequence:056}"),
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "approximateArrivalTimestamp": 1795500000.123
        },
        "eventSource": "aws:kinesis", "eventVersion": "1.0",
        "eventID": format!("shardId-000000000000:{sequence:056}"), "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/consumer",
        "awsRegion": "us-east-1", "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/reservation-events"
    })
}

/// A Kinesis event of (partition key, data) records, sequence numbers from `first_sequence`.
pub fn kinesis_event<K: AsRef<str>, D: AsRef<[u8]>>(
    first_sequence: u64,
    records: impl IntoIterator<Item = (K, D)>,
) -> KinesisEvent {
    let records: Vec<Value> = records
        .into_iter()
        .enumerate()
        .map(|(i, (key, data))| kinesis_record(first_sequence + i as u64, key.as_ref(), data.as_ref()))
        .collect();
    serde_json::from_value(json!({ "Records": records })).expect("a Kinesis event")
}

/// A Kinesis event of the envelopes of (reservation, version), sequence numbers from
/// `first_sequence`.
pub fn envelopes_event(first_sequence: u64, events: &[(&str, u64)]) -> KinesisEvent {
    kinesis_event(
        first_sequence,
        events
            .iter()
            .map(|(id, version)| (*id, serde_json::to_vec(&envelope_json(id, *version)).expect("JSON"))),
    )
}

/// A Kafka record as Lambda's Kafka event source mapping delivers it: key and value in base64,
/// headers as lists of (signed) bytes, the millisecond timestamp of the producer.
pub fn kafka_record(topic: &str, partition: i64, offset: i64, key: Option<&str>, value: &[u8]) -> Value {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let header = |text: &str| text.bytes().map(|b| b as i8).collect::<Vec<i8>>();
    json!({
        "topic": topic, "partition": partition, "offset": offset,
        "timestamp": 1_795_500_000_000i64, "timestampType": "CREATE_TIME",
        "key": key.map(|k| b64(k.as_bytes())), "value": b64(value),
        "headers": [{ "event_type": header("ReservationCreated") }]
    })
}

/// A Kafka record of a test event: (offset, key, value).
pub type KafkaTestRecord<'a> = (i64, Option<&'a str>, Vec<u8>);

/// A Kafka event of the topic-partitions `partitions`, each a list of (offset, key, value).
pub fn kafka_event(topic: &str, partitions: &[(i64, Vec<KafkaTestRecord>)]) -> KafkaEvent {
    let records: serde_json::Map<String, Value> = partitions
        .iter()
        .map(|(partition, records)| {
            let records: Vec<Value> = records
                .iter()
                .map(|(offset, key, value)| kafka_record(topic, *partition, *offset, *key, value))
                .collect();
            (format!("{topic}-{partition}"), Value::Array(records))
        })
        .collect();
    serde_json::from_value(json!({
        "eventSource": "aws:kafka",
        "eventSourceArn": "arn:aws:kafka:us-east-1:123456789012:cluster/reservations/abc-1",
        "bootstrapServers": "b-1.reservations.abc.kafka.us-east-1.amazonaws.com:9098",
        "records": records
    }))
    .expect("a Kafka event")
}

/// The envelope of (reservation, version) as a Kafka record's (offset, key, value).
pub fn kafka_envelope(offset: i64, id: &str, version: u64) -> KafkaTestRecord<'_> {
    (
        offset,
        Some(id),
        serde_json::to_vec(&envelope_json(id, version)).expect("JSON"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_image_is_the_envelope_with_its_item_type_and_ttl() {
        let image = outbox_image(&envelope("R1", 2));
        assert_eq!(image["item_type"]["S"], domain::OUTBOX_ITEM_TYPE);
        assert_eq!(image["aggregate_id"]["S"], "R1");
        assert_eq!(image["version"]["N"], "2");
        assert_eq!(image["event_type"]["S"], "ReservationCancelled");
        assert_eq!(image["expires_at"]["N"], EXPIRES_AT.to_string());
        assert!(image.get("unpublished").is_none());
    }

    #[test]
    fn built_events_deserialize_as_lambda_events() {
        let event = envelopes_event(7, &[("A", 1), ("A", 2)]);
        assert_eq!(event.records.len(), 2);
        assert_eq!(event.records[1].kinesis.partition_key, "A");
        let record: aws_lambda_events::event::dynamodb::EventRecord = serde_json::from_value(outbox_stream_record(
            "INSERT",
            1,
            ("R1", 1),
            outbox_image(&envelope("R1", 1)),
        ))
        .unwrap();
        assert_eq!(record.event_name, "INSERT");
    }
}
