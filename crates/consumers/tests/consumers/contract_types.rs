//! The consumer kit's types held to the published contract (`schemas/events/v1`): the fields they
//! read and write are the schema's, its required fields are the ones the types cannot do
//! without, its enum values are known to them, its bounds are theirs, and what they write is an
//! instance of it. A change to either side that the other does not follow fails here.

use reservation_events_consumer::{EventType, ReservationEvent, Status, decode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use test_support::contract::{check_event, current_schema};
use test_support::events::envelope_json;

fn keys(object: &Value) -> BTreeSet<String> {
    object.as_object().expect("an object").keys().cloned().collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// A cancellation, the event with every field set, as the kit writes it back.
fn cancelled() -> (ReservationEvent, Value) {
    let event = decode("R1", &serde_json::to_vec(&envelope_json("R1", 2)).unwrap()).unwrap();
    let written = serde_json::to_value(&event).unwrap();
    (event, written)
}

#[test]
fn the_kits_fields_are_the_contracts_and_what_it_writes_is_an_instance_of_it() {
    let schema = current_schema();
    let defs = &schema["$defs"];
    let (_, written) = cancelled();
    assert_eq!(keys(&written), keys(&defs["Envelope"]["properties"]));
    assert_eq!(keys(&written["payload"]), keys(&defs["Reservation"]["properties"]));
    check_event(&serde_json::to_vec(&written).unwrap()).unwrap();

    // Without its optional fields, what is left is exactly what the contract requires.
    let created = decode("R1", &serde_json::to_vec(&envelope_json("R1", 1)).unwrap()).unwrap();
    let written = serde_json::to_value(&created).unwrap();
    assert_eq!(keys(&written), strings(&defs["Envelope"]["required"]));
    assert_eq!(keys(&written["payload"]), strings(&defs["Reservation"]["required"]));
    check_event(&serde_json::to_vec(&written).unwrap()).unwrap();
}

#[test]
fn every_event_type_and_status_of_the_contract_is_known_to_the_kit() {
    let schema = current_schema();
    let defs = &schema["$defs"];
    for event_type in strings(&defs["Envelope"]["properties"]["event_type"]["enum"]) {
        let known = EventType::from(event_type.clone());
        assert!(
            !matches!(known, EventType::Other(_)),
            "{event_type} is not known to the kit"
        );
        assert_eq!(known.as_str(), event_type);
    }
    for status in strings(&defs["Reservation"]["properties"]["status"]["enum"]) {
        let known = Status::from(status.clone());
        assert!(!matches!(known, Status::Other(_)), "{status} is not known to the kit");
        assert_eq!(known.as_str(), status);
    }
}

/// Each bound of the contract, at its edge: the kit takes what the schema allows and refuses
/// what it does not, whatever the bound becomes.
#[test]
fn the_contracts_bounds_are_the_kits() {
    let schema = current_schema();
    let defs = &schema["$defs"];
    let max = |def: &str, field: &str| defs[def]["properties"][field]["maxLength"].as_u64().unwrap() as usize;
    let cases: [(&str, &str, &str, usize); 5] = [
        ("Envelope", "", "event_id", max("Envelope", "event_id")),
        ("Reservation", "payload", "slot_id", max("Reservation", "slot_id")),
        ("Reservation", "payload", "guest_id", max("Reservation", "guest_id")),
        ("Envelope", "", "trace_id", max("Envelope", "trace_id")),
        (
            "Reservation",
            "payload",
            "reservation_id",
            max("Reservation", "reservation_id"),
        ),
    ];
    for (def, under, field, limit) in cases {
        for (length, allowed) in [(limit, true), (limit + 1, false)] {
            let mut envelope = envelope_json("R1", 1);
            let id = "x".repeat(length);
            let target = if under.is_empty() {
                &mut envelope
            } else {
                &mut envelope[under]
            };
            target[field] = json!(id);
            if field == "reservation_id" {
                // The envelope and its key name the same reservation.
                envelope["aggregate_id"] = json!(id);
            }
            let key = envelope["aggregate_id"].as_str().unwrap().to_owned();
            let data = serde_json::to_vec(&envelope).unwrap();
            assert_eq!(
                decode(&key, &data).is_ok(),
                allowed,
                "{def}.{field} of {length} characters: the kit and the contract disagree"
            );
            assert_eq!(check_event(&data).is_ok(), allowed, "{def}.{field} of {length}");
        }
    }
    let seats = &defs["Reservation"]["properties"]["seats"];
    for (seats, allowed) in [
        (seats["minimum"].as_u64().unwrap(), true),
        (seats["maximum"].as_u64().unwrap(), true),
        (seats["minimum"].as_u64().unwrap() - 1, false),
        (seats["maximum"].as_u64().unwrap() + 1, false),
    ] {
        let mut envelope = envelope_json("R1", 1);
        envelope["payload"]["seats"] = json!(seats);
        let data = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(decode("R1", &data).is_ok(), allowed, "{seats} seats");
    }
    let mut envelope = envelope_json("R1", 1);
    envelope["version"] = json!(defs["Envelope"]["properties"]["version"]["minimum"].as_u64().unwrap() - 1);
    assert!(decode("R1", &serde_json::to_vec(&envelope).unwrap()).is_err());
}

/// The producer's own envelopes (the domain's types, as the relay publishes them) decode with
/// the kit to the same values.
#[test]
fn what_the_product_publishes_the_kit_reads_as_it_was_written() {
    let (event, written) = cancelled();
    let domain: domain::EventEnvelope = serde_json::from_value(envelope_json("R1", 2)).unwrap();
    assert_eq!(written, serde_json::to_value(&domain).unwrap());
    assert_eq!(event.payload.status, Status::Cancelled);
    assert_eq!(event.event_type, EventType::ReservationCancelled);
}
