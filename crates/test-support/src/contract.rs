//! The published event contract, `schemas/events/v1/reservation-events.schema.json`, as the tests
//! hold the producer to it: every event a suite reads from Kinesis is validated
//! ([`check_event`]), and a field the producer writes that the contract does not declare fails
//! too, so the schema cannot fall behind the Rust types.
//!
//! [`breaking_changes`] is the compatibility gate: what a consumer built on the released
//! schemas (`schemas/events/released/`) would trip over in the current ones.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The repository's `schemas/` folder.
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// The current contract: the schema of every record's data on the events stream.
pub fn current_schema() -> Value {
    read_json(&schemas_dir().join("events/v1/reservation-events.schema.json"))
}

/// The contract as last released (the snapshot consumers were built on).
pub fn released_schema() -> Value {
    read_json(&schemas_dir().join("events/released/v1/reservation-events.schema.json"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The contract's definition for `event_type` (the envelope's, for a type it does not know), as a
/// validator: errors then name the field, where the top-level `oneOf` would only say "no branch".
fn validator(event_type: &str) -> &'static jsonschema::Validator {
    static VALIDATORS: OnceLock<HashMap<String, jsonschema::Validator>> = OnceLock::new();
    let validators = VALIDATORS.get_or_init(|| {
        let schema = current_schema();
        let event_types = strings(&schema["$defs"]["Envelope"]["properties"]["event_type"]["enum"]);
        event_types
            .into_iter()
            .chain(["Envelope".to_owned()])
            .map(|def| {
                let mut one = schema.clone();
                let root = one.as_object_mut().expect("a schema object");
                root.remove("oneOf");
                root.insert("$ref".into(), format!("#/$defs/{def}").into());
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&one)
                    .expect("the event schema compiles");
                (def, validator)
            })
            .collect()
    });
    validators.get(event_type).unwrap_or(&validators["Envelope"])
}

/// Checks one record's data against the contract. The error names the event, the field and why.
pub fn check_event(data: &[u8]) -> Result<(), String> {
    let event: Value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let id = event["event_id"].as_str().unwrap_or("(no event_id)").to_owned();
    let event_type = event["event_type"].as_str().unwrap_or_default();
    if let Some(error) = validator(event_type).iter_errors(&event).next() {
        let at = error.instance_path().to_string();
        let field = if at.is_empty() { "(the event)".to_owned() } else { at };
        return Err(format!("event {id}: {field}: {error}"));
    }
    // Declared, not only valid: the schema lets consumers ignore unknown fields, the producer
    // may not write one the contract does not name.
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    let defs = &SCHEMA.get_or_init(current_schema)["$defs"];
    for (object, def, path) in [
        (&event, &defs["Envelope"], ""),
        (&event["payload"], &defs["Reservation"], "/payload"),
    ] {
        for field in object.as_object().into_iter().flat_map(|o| o.keys()) {
            if def["properties"].get(field).is_none() {
                return Err(format!(
                    "event {id}: {path}/{field}: written by the producer but not in the contract (declare it in schemas/events/v1 first)"
                ));
            }
        }
    }
    Ok(())
}

/// Panics on the first event of `events` that breaks the contract, naming it.
pub fn assert_events_keep_the_contract<'a>(events: impl IntoIterator<Item = &'a [u8]>) {
    for data in events {
        if let Err(why) = check_event(data) {
            panic!("an event on the stream breaks the published contract: {why}");
        }
    }
}

/// What a consumer built on `released` would trip over in `current`, one line each: a field
/// removed or renamed, a type narrowed, a new required field, an enum value removed, a bound
/// tightened. Additions (optional fields, enum values, new definitions) are compatible.
pub fn breaking_changes(released: &Value, current: &Value) -> Vec<String> {
    let mut breaks = Vec::new();
    compare(released, current, "#", &mut breaks);
    let (old_defs, new_defs) = (&released["$defs"], &current["$defs"]);
    for (name, old) in old_defs.as_object().into_iter().flatten() {
        match new_defs.get(name) {
            None => breaks.push(format!("#/$defs/{name}: removed")),
            Some(new) => compare(old, new, &format!("#/$defs/{name}"), &mut breaks),
        }
    }
    breaks
}

fn strings(value: &Value) -> BTreeSet<String> {
    match value {
        Value::String(s) => [s.clone()].into(),
        Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => BTreeSet::new(),
    }
}

fn compare(old: &Value, new: &Value, at: &str, breaks: &mut Vec<String>) {
    // Types: every type a consumer accepted may still come.
    let (old_types, new_types) = (strings(&old["type"]), strings(&new["type"]));
    if !old_types.is_empty() && !new_types.is_empty() && !old_types.is_subset(&new_types) {
        breaks.push(format!("{at}: type narrowed from {old_types:?} to {new_types:?}"));
    }
    // References: pointing elsewhere changes what the field is.
    if old.get("$ref") != new.get("$ref") && old.get("$ref").is_some() {
        breaks.push(format!(
            "{at}: now refers to {} instead of {}",
            new.get("$ref").unwrap_or(&Value::Null),
            old["$ref"]
        ));
    }
    // Enum values and constants: a consumer may match on every value it was told about; a new
    // one is fine (consumers must tolerate unknown values), a removed one is not.
    let (old_enum, new_enum) = (strings(&old["enum"]), strings(&new["enum"]));
    for value in old_enum.difference(&new_enum) {
        if new.get("enum").is_some() {
            breaks.push(format!("{at}: enum value {value:?} removed"));
        }
    }
    if old.get("const").is_some() && old.get("const") != new.get("const") {
        breaks.push(format!(
            "{at}: constant changed from {} to {}",
            old["const"], new["const"]
        ));
    }
    // Required fields: one no longer required may be missing where consumers rely on it; a new
    // one is missing from the events already on the stream, which replays deliver again.
    let (old_required, new_required) = (strings(&old["required"]), strings(&new["required"]));
    for field in old_required.difference(&new_required) {
        breaks.push(format!(
            "{at}: field {field:?} no longer required (consumers rely on it)"
        ));
    }
    for field in new_required.difference(&old_required) {
        breaks.push(format!("{at}: new required field {field:?}"));
    }
    // Bounds: values the old contract allowed must stay allowed.
    for (bound, tighter) in [
        ("minimum", std::cmp::Ordering::Greater),
        ("minLength", std::cmp::Ordering::Greater),
        ("maximum", std::cmp::Ordering::Less),
        ("maxLength", std::cmp::Ordering::Less),
    ] {
        let (Some(old_bound), Some(new_bound)) = (old[bound].as_f64(), new[bound].as_f64()) else {
            if old.get(bound).is_none() && new.get(bound).is_some() {
                breaks.push(format!("{at}: new {bound} {}", new[bound]));
            }
            continue;
        };
        if new_bound.partial_cmp(&old_bound) == Some(tighter) {
            breaks.push(format!("{at}: {bound} tightened from {old_bound} to {new_bound}"));
        }
    }
    if old.get("pattern").is_some() && old.get("pattern") != new.get("pattern") {
        breaks.push(format!(
            "{at}: pattern changed from {} to {}",
            old["pattern"],
            new.get("pattern").unwrap_or(&Value::Null)
        ));
    }
    // Fields: none may go (a rename is a removal plus an addition).
    for (field, old_field) in old["properties"].as_object().into_iter().flatten() {
        match new["properties"].get(field) {
            None => breaks.push(format!("{at}/properties/{field}: removed")),
            Some(new_field) => compare(old_field, new_field, &format!("{at}/properties/{field}"), breaks),
        }
    }
    // Composition: every branch a consumer knew stays, in place.
    for keyword in ["allOf", "oneOf", "anyOf"] {
        let (old_items, new_items) = (old[keyword].as_array(), new[keyword].as_array());
        for (i, old_item) in old_items.into_iter().flatten().enumerate() {
            match new_items.and_then(|items| items.get(i)) {
                None => breaks.push(format!("{at}/{keyword}/{i}: removed")),
                Some(new_item) => compare(old_item, new_item, &format!("{at}/{keyword}/{i}"), breaks),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{EventId, GuestId, Reservation, ReservationId, Seats, SlotId, TraceId};

    fn events() -> Vec<Vec<u8>> {
        let at = time::macros::datetime!(2026-11-24 10:32:11.687 UTC);
        let (reservation, created) = Reservation::confirm(
            ReservationId::generate(),
            SlotId::parse("dinner-2026-12-24").unwrap(),
            GuestId::parse("ada").unwrap(),
            Seats::new(2).unwrap(),
            at,
        );
        let (_, cancelled) = reservation.cancel(at).unwrap();
        [created, cancelled]
            .into_iter()
            .map(|e| serde_json::to_vec(&e.into_envelope(EventId::generate(), TraceId::generate())).unwrap())
            .collect()
    }

    #[test]
    fn every_event_type_the_producer_writes_keeps_the_contract() {
        for event in events() {
            check_event(&event).unwrap();
        }
    }

    #[test]
    fn an_event_that_breaks_the_contract_is_named_with_its_field_and_why() {
        let mut event: Value = serde_json::from_slice(&events()[0]).unwrap();
        event["payload"]["seats"] = 0.into();
        let why = check_event(&serde_json::to_vec(&event).unwrap()).unwrap_err();
        assert!(why.contains("/payload/seats"), "{why}");
        assert!(why.contains("minimum"), "{why}");

        let mut event: Value = serde_json::from_slice(&events()[1]).unwrap();
        event["payload"]["refund"] = "full".into();
        let why = check_event(&serde_json::to_vec(&event).unwrap()).unwrap_err();
        assert!(why.ends_with("/payload/refund: written by the producer but not in the contract (declare it in schemas/events/v1 first)"), "{why}");

        let mut event: Value = serde_json::from_slice(&events()[1]).unwrap();
        event["payload"].as_object_mut().unwrap().remove("cancelled_at");
        assert!(check_event(&serde_json::to_vec(&event).unwrap()).is_err());
    }

    /// The examples consumer teams read in the AsyncAPI document are events of the contract.
    #[test]
    fn the_asyncapi_examples_keep_the_contract() {
        let path = schemas_dir().join("asyncapi/reservation-events.asyncapi.yaml");
        let document: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let messages = document["components"]["messages"].as_object().unwrap();
        let mut checked = 0;
        for (name, message) in messages {
            for example in message["examples"].as_array().unwrap() {
                let payload = &example["payload"];
                assert_eq!(payload["event_type"], name.as_str());
                check_event(&serde_json::to_vec(payload).unwrap()).unwrap_or_else(|why| panic!("{name}: {why}"));
                checked += 1;
            }
        }
        // One message, with an example, per event type the contract defines.
        let event_types = strings(&current_schema()["$defs"]["Envelope"]["properties"]["event_type"]["enum"]);
        assert_eq!(messages.keys().cloned().collect::<BTreeSet<_>>(), event_types);
        assert_eq!(checked, event_types.len());
    }

    /// The gate itself: `scripts/test.sh` fails when the schemas are not backward compatible
    /// with the released ones.
    #[test]
    fn the_schemas_are_backward_compatible_with_the_last_release() {
        let breaks = breaking_changes(&released_schema(), &current_schema());
        assert!(
            breaks.is_empty(),
            "breaking changes for consumers (ship them as a new event type or contract version, docs/events.md):\n{}",
            breaks.join("\n")
        );
    }

    fn reservation(schema: &mut Value) -> &mut Value {
        &mut schema["$defs"]["Reservation"]
    }

    #[test]
    fn breaking_changes_are_refused_one_line_each_and_additions_pass() {
        let released = released_schema();
        let edit = |change: &dyn Fn(&mut Value)| {
            let mut current = released.clone();
            change(&mut current);
            breaking_changes(&released, &current)
        };

        assert_eq!(
            edit(&|s| {
                reservation(s)["properties"].as_object_mut().unwrap().remove("seats");
            }),
            ["#/$defs/Reservation/properties/seats: removed"]
        );
        assert_eq!(
            edit(&|s| {
                let props = reservation(s)["properties"].as_object_mut().unwrap();
                let slot = props.remove("slot_id").unwrap();
                props.insert("slot".into(), slot);
            }),
            ["#/$defs/Reservation/properties/slot_id: removed"]
        );
        assert_eq!(
            edit(&|s| reservation(s)["properties"]["seats"]["type"] = "string".into()),
            ["#/$defs/Reservation/properties/seats: type narrowed from {\"integer\"} to {\"string\"}"]
        );
        assert_eq!(
            edit(&|s| reservation(s)["required"]
                .as_array_mut()
                .unwrap()
                .push("cancelled_at".into())),
            ["#/$defs/Reservation: new required field \"cancelled_at\""]
        );
        assert_eq!(
            edit(&|s| s["$defs"]["Envelope"]["properties"]["event_type"]["enum"] =
                serde_json::json!(["ReservationCreated"])),
            ["#/$defs/Envelope/properties/event_type: enum value \"ReservationCancelled\" removed"]
        );
        assert_eq!(
            edit(&|s| reservation(s)["properties"]["seats"]["maximum"] = 100.into()),
            ["#/$defs/Reservation/properties/seats: maximum tightened from 1000 to 100"]
        );

        // Additive: an optional field, a new enum value, a new event type.
        let added = edit(&|s| {
            reservation(s)["properties"]["party_name"] = serde_json::json!({ "type": "string" });
            let kinds = s["$defs"]["Envelope"]["properties"]["event_type"]["enum"]
                .as_array_mut()
                .unwrap();
            kinds.push("ReservationMoved".into());
            s["$defs"]["ReservationMoved"] = serde_json::json!({ "allOf": [{ "$ref": "#/$defs/Envelope" }] });
            s["oneOf"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({ "$ref": "#/$defs/ReservationMoved" }));
        });
        assert_eq!(added, Vec::<String>::new());
    }
}
