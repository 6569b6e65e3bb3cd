//! Which stream records become events. Only outbox INSERTs do (invariant 6 of docs/design.md); the event
//! source mapping's FilterCriteria already drops the rest, and this check makes a missing or wrong
//! filter harmless.

use crate::sink::SinkRecord;
use aws_lambda_events::event::dynamodb::EventRecord;
use domain::{EventEnvelope, EventId, ReservationId, TraceId, Version};

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
    /// `record.data` is the event's envelope (docs/design.md) as JSON.
    Publish {
        record: SinkRecord,
        event: PublishedEvent,
    },
    Skip(SkipReason),
    /// Can never be published; goes to the dead letters with this reason.
    Poison {
        reason: String,
    },
}

/// Which event a record is, for logs.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedEvent {
    pub event_id: EventId,
    pub reservation_id: ReservationId,
    pub version: Version,
    pub trace_id: TraceId,
}

/// Decides what becomes of a stream record. The new image of an outbox insert is read into the
/// envelope with serde_dynamo, as the store's items are read everywhere else; it is taken out
/// of the record to be read, not copied.
pub fn classify(record: &mut EventRecord) -> Classified {
    if let Some(identity) = &record.user_identity
        && identity.type_ == "Service"
        && identity.principal_id == TTL_PRINCIPAL
    {
        return Classified::Skip(SkipReason::TtlRemoval);
    }
    if record.event_name != "INSERT" {
        return Classified::Skip(SkipReason::NotAnInsert);
    }
    let image = std::mem::take(&mut record.change.new_image);
    if image.is_empty() {
        return Classified::Poison {
            reason: "INSERT without NewImage: the table's stream must use NEW_IMAGE or NEW_AND_OLD_IMAGES".into(),
        };
    }
    match image.get("item_type") {
        Some(serde_dynamo::AttributeValue::S(item_type)) if item_type == OUTBOX_ITEM_TYPE => {}
        _ => return Classified::Skip(SkipReason::NotAnOutboxItem),
    }
    match serde_dynamo::from_item::<_, EventEnvelope>(image) {
        Ok(envelope) => publishable(envelope),
        Err(e) => Classified::Poison {
            reason: format!("outbox item is not a valid event envelope: {e}"),
        },
    }
}

/// The envelope as the record to put, unless it cannot be put.
fn publishable(envelope: EventEnvelope) -> Classified {
    match SinkRecord::of_envelope(&envelope) {
        Ok(record) => Classified::Publish {
            record,
            event: PublishedEvent {
                event_id: envelope.event_id,
                reservation_id: envelope.aggregate_id,
                version: envelope.version,
                trace_id: envelope.trace_id,
            },
        },
        Err(reason) => Classified::Poison { reason },
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
