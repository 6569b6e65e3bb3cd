//! Invariant 7 at the relay, by property: whatever an outbox stream record holds, classifying it
//! never panics, and a record is published only as a valid envelope keyed by its reservation.

use aws_lambda_events::event::dynamodb::EventRecord;
use proptest::prelude::*;
use relay::{Classified, classify};
use serde_json::{Value, json};
use test_support::cases;
use test_support::events::{envelope, outbox_image, outbox_stream_record};

/// Any DynamoDB attribute value in DynamoDB JSON, a few levels deep.
fn any_attribute() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        ".{0,30}".prop_map(|s| json!({ "S": s })),
        prop_oneof![any::<i64>().prop_map(|n| n.to_string()), "[0-9.eE+-]{1,12}", ".{0,8}"]
            .prop_map(|n| json!({ "N": n })),
        any::<bool>().prop_map(|b| json!({ "BOOL": b })),
        Just(json!({ "NULL": true })),
        proptest::collection::vec(".{0,8}", 0..4).prop_map(|ss| json!({ "SS": ss })),
    ];
    leaf.prop_recursive(3, 20, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(|l| json!({ "L": l })),
            proptest::collection::btree_map("[a-z_]{1,14}", inner, 0..5).prop_map(|m| json!({ "M": m })),
        ]
    })
}

const ENVELOPE_FIELDS: &[&str] = &[
    "item_type",
    "event_id",
    "event_type",
    "aggregate_type",
    "aggregate_id",
    "version",
    "occurred_at",
    "payload",
    "trace_id",
    "expires_at",
];

/// A NewImage whose attributes are the envelope's names (and a few others) with any values; the
/// item type is usually right, so most cases reach the envelope decoding.
fn any_image() -> impl Strategy<Value = Value> {
    (
        proptest::collection::btree_map(
            prop_oneof![
                proptest::sample::select(ENVELOPE_FIELDS).prop_map(str::to_owned),
                "[a-z_]{1,10}"
            ],
            any_attribute(),
            0..12,
        ),
        any::<bool>(),
    )
        .prop_map(|(mut image, outbox)| {
            if outbox {
                image.insert("item_type".into(), json!({ "S": domain::OUTBOX_ITEM_TYPE }));
            }
            Value::Object(image.into_iter().collect())
        })
}

fn valid_image() -> Value {
    outbox_image(&envelope("R1", 1))
}

/// A valid outbox image with one attribute replaced by any value, or removed.
fn mutated_image() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(ENVELOPE_FIELDS),
        any_attribute(),
        any::<bool>(),
    )
        .prop_map(|(field, value, remove)| {
            let mut image = valid_image();
            let attributes = image.as_object_mut().unwrap();
            if remove {
                attributes.remove(field);
            } else {
                attributes.insert(field.to_owned(), value);
            }
            image
        })
}

fn stream_record(event_name: &str, image: Value) -> Value {
    outbox_stream_record(event_name, 100, ("R1", 1), image)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1024)))]

    #[test]
    fn any_new_image_is_classified_without_panic_and_published_only_as_a_valid_envelope(
        image in any_image(),
        event_name in prop_oneof![
            Just("INSERT".to_owned()),
            Just("MODIFY".to_owned()),
            Just("REMOVE".to_owned()),
            ".{0,8}",
        ],
    ) {
        // What Lambda's runtime could not even deserialize never reaches the relay.
        let Ok(mut record) = serde_json::from_value::<EventRecord>(stream_record(&event_name, image)) else {
            return Ok(());
        };
        let image = image_of(&record);
        match classify(&mut record) {
            Classified::Publish { record: out, .. } => {
                prop_assert_eq!(event_name.as_str(), "INSERT");
                let expected = envelope_by_serde_dynamo(&image);
                let back: domain::EventEnvelope = serde_json::from_slice(&out.data).unwrap();
                prop_assert_eq!(out.partition_key.as_str(), back.aggregate_id.as_str());
                prop_assert_eq!(Some(back), expected);
            }
            Classified::Poison { reason } => prop_assert!(!reason.is_empty()),
            Classified::Skip(_) => {}
        }
    }

    #[test]
    fn a_valid_outbox_image_with_any_attribute_changed_is_published_only_if_still_an_envelope(image in mutated_image()) {
        let mut record: EventRecord = serde_json::from_value(stream_record("INSERT", image)).unwrap();
        let image = image_of(&record);
        match classify(&mut record) {
            Classified::Publish { record: out, .. } => {
                let expected = envelope_by_serde_dynamo(&image);
                let back: domain::EventEnvelope = serde_json::from_slice(&out.data).unwrap();
                prop_assert_eq!(out.partition_key.as_str(), back.aggregate_id.as_str());
                prop_assert_eq!(Some(back), expected);
            }
            Classified::Poison { reason } => prop_assert!(reason.contains("not a valid event envelope"), "{}", reason),
            Classified::Skip(reason) => {
                // Only a changed item type makes it "not an outbox item".
                prop_assert_eq!(reason, relay::SkipReason::NotAnOutboxItem);
            }
        }
    }
}

/// The record's new image as DynamoDB JSON.
fn image_of(record: &EventRecord) -> Value {
    serde_json::to_value(record).unwrap()["dynamodb"]["NewImage"].clone()
}

/// serde_dynamo's reading of the envelope's own attributes of an image: what the relay must
/// publish when it publishes at all.
fn envelope_by_serde_dynamo(image: &Value) -> Option<domain::EventEnvelope> {
    let mut named = image.clone();
    named
        .as_object_mut()?
        .retain(|name, _| ENVELOPE_FIELDS[1..9].contains(&name.as_str()));
    through_serde_dynamo(&named)
}

/// serde_dynamo's reading of an image, through the attribute map.
fn through_serde_dynamo<T: serde::de::DeserializeOwned>(image: &Value) -> Option<T> {
    let item: serde_dynamo::Item = serde_json::from_value(image.clone()).ok()?;
    serde_dynamo::from_item(item).ok()
}
