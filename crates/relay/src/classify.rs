//! Which stream records become events. Only outbox INSERTs do (invariant 6 of docs/design.md); the event
//! source mapping's FilterCriteria already drops the rest, and this check makes a missing or wrong
//! filter harmless.

use crate::sink::{MAX_BYTES_PER_RECORD, SinkRecord};
use aws_lambda_events::event::dynamodb::EventRecord;
use domain::EventEnvelope;

pub use domain::OUTBOX_ITEM_TYPE;
const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A REMOVE made by TTL (userIdentity Service / dynamodb.amazonaws.com).
    TtlRemoval,
    /// MODIFY, or a REMOVE by someone else: outbox items are written once and never published twice.
    NotAnInsert,
    /// An INSERT of something that is not an outbox event.
    NotAnOutboxItem,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Classified {
    Publish {
        envelope: Box<EventEnvelope>,
        record: SinkRecord,
    },
    Skip(SkipReason),
    /// Can never be published; goes to the dead letters with this reason.
    Poison {
        reason: String,
    },
}

fn string_attr<'a>(image: &'a serde_dynamo::Item, name: &str) -> Option<&'a str> {
    match image.get(name) {
        Some(serde_dynamo::AttributeValue::S(s)) => Some(s.as_str()),
        _ => None,
    }
}

pub fn classify(record: &EventRecord) -> Classified {
    if let Some(identity) = &record.user_identity
        && identity.type_ == "Service"
        && identity.principal_id == TTL_PRINCIPAL
    {
        return Classified::Skip(SkipReason::TtlRemoval);
    }
    if record.event_name != "INSERT" {
        return Classified::Skip(SkipReason::NotAnInsert);
    }
    let image = &record.change.new_image;
    if image.is_empty() {
        return Classified::Poison {
            reason: "INSERT without NewImage: the table's stream must use NEW_IMAGE or NEW_AND_OLD_IMAGES".into(),
        };
    }
    match string_attr(image, "item_type") {
        Some(OUTBOX_ITEM_TYPE) => {}
        _ => return Classified::Skip(SkipReason::NotAnOutboxItem),
    }
    let envelope: EventEnvelope = match serde_dynamo::from_item(image.clone()) {
        Ok(envelope) => envelope,
        Err(e) => {
            return Classified::Poison {
                reason: format!("outbox item is not a valid event envelope: {e}"),
            };
        }
    };
    let data = match serde_json::to_vec(&envelope) {
        Ok(data) => data,
        Err(e) => {
            return Classified::Poison {
                reason: format!("envelope does not serialize to JSON: {e}"),
            };
        }
    };
    let record = SinkRecord {
        partition_key: envelope.partition_key().to_owned(),
        data,
    };
    if record.size() > MAX_BYTES_PER_RECORD {
        return Classified::Poison {
            reason: format!(
                "event is {} bytes; Kinesis accepts at most {MAX_BYTES_PER_RECORD} per record",
                record.size()
            ),
        };
    }
    Classified::Publish {
        envelope: Box::new(envelope),
        record,
    }
}

/// The relay's event source mapping filter (template and local runner alike): outbox INSERTs only,
/// so Lambda is not even invoked for TTL removals or anything else.
pub const OUTBOX_INSERT_FILTER: &str =
    r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"item_type": {"S": ["OutboxEvent"]}}}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_matches_the_item_type_the_store_writes() {
        let filter: serde_json::Value = serde_json::from_str(OUTBOX_INSERT_FILTER).unwrap();
        assert_eq!(filter["dynamodb"]["NewImage"]["item_type"]["S"][0], OUTBOX_ITEM_TYPE);
    }
}
