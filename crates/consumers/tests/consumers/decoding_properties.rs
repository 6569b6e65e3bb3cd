//! Invariant 7 at the consumers, by property: no input panics the decoder or the batch handler.
//! Arbitrary bytes, arbitrary JSON and valid envelopes with one field replaced by anything either
//! decode to an event whose reservation is the partition key, or are dead-lettered with their
//! record; a batch of them never blocks the shard on a malformed record.

use adapters::InMemoryReadModel;

use consumers::{ConsumerHandler, Projector};
use proptest::prelude::*;
use reservation_events_consumer::MemoryDeadLetters;
use reservation_events_consumer::decode;
use serde_json::Value;
use test_support::cases;
use test_support::events::{envelope_json, kinesis_event};

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &[
    "event_id",
    "event_type",
    "aggregate_type",
    "aggregate_id",
    "version",
    "occurred_at",
    "payload",
    "trace_id",
];

/// A valid envelope with one field (or one payload field) replaced by anything, or removed.
fn mutated_envelope() -> impl Strategy<Value = Value> {
    (0..FIELDS.len() * 2, any_json(), any::<bool>()).prop_map(|(field, replacement, remove)| {
        let mut envelope = envelope_json("R1", 1);
        let target = if field < FIELDS.len() {
            envelope.as_object_mut().unwrap()
        } else {
            envelope["payload"].as_object_mut().unwrap()
        };
        let name = FIELDS[field % FIELDS.len()];
        if remove {
            target.remove(name);
        } else {
            target.insert(name.to_owned(), replacement);
        }
        envelope
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(data in proptest::collection::vec(any::<u8>(), 0..1024), key in ".{0,64}") {
        if let Ok(event) = decode(&key, &data) {
            prop_assert_eq!(event.reservation_id(), key.as_str());
        }
    }

    #[test]
    fn arbitrary_json_never_panics_the_decoder(value in any_json()) {
        let data = serde_json::to_vec(&value).unwrap();
        prop_assert!(decode("R1", &data).is_err(), "random JSON is not an envelope: {value}");
    }

    #[test]
    fn an_envelope_with_any_field_changed_decodes_only_if_still_consistent(envelope in mutated_envelope()) {
        let data = serde_json::to_vec(&envelope).unwrap();
        if let Ok(event) = decode("R1", &data) {
            prop_assert_eq!(event.reservation_id(), "R1");
            prop_assert_eq!(event.payload.reservation_id.as_str(), "R1");
            prop_assert_eq!(event.payload.version, event.version);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    /// A batch mixing valid events with arbitrary records: every malformed record is dead-lettered
    /// with its record, every valid one applied, and none is handed back to block the shard.
    #[test]
    fn a_batch_with_garbage_applies_the_events_and_dead_letters_the_rest(
        garbage in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..256), mutated_envelope()), 1..8),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut records = Vec::new();
        for (i, (bytes, envelope)) in garbage.iter().enumerate() {
            let id = format!("V{i}");
            records.push((id.clone(), serde_json::to_vec(&envelope_json(&id, 1)).unwrap()));
            records.push(("R1".to_owned(), bytes.clone()));
            records.push(("R1".to_owned(), serde_json::to_vec(envelope).unwrap()));
        }
        let handler = ConsumerHandler::new(Projector::new(InMemoryReadModel::default()), MemoryDeadLetters::default());
        let (response, stats) = runtime.block_on(handler.handle(&kinesis_event(0, records.iter().map(|(key, data)| (key, data)))));
        prop_assert!(response.batch_item_failures.is_empty(), "nothing blocks the shard: {stats:?}");
        prop_assert!(stats.applied >= garbage.len());
        let letters = handler.dead_letters().letters();
        prop_assert_eq!(letters.len(), stats.dead_lettered);
        prop_assert_eq!(stats.applied + stats.duplicates + stats.dead_lettered, records.len());
        for letter in letters {
            prop_assert_eq!(letter.function.as_str(), "projector");
            prop_assert!(!letter.reason.is_empty());
            prop_assert!(letter.record["kinesis"]["data"].is_string(), "the record is kept whole");
        }
    }
}
