//! Which stream records become events. Only outbox INSERTs do (invariant 6 of docs/design.md); the event
//! source mapping's FilterCriteria already drops the rest, and this check makes a missing or wrong
//! filter harmless.

use crate::sink::SinkRecord;
use aws_lambda_events::event::dynamodb::EventRecord;
use domain::{EventEnvelope, EventId, ReservationId, TraceId, Version};

pub use domain::OUTBOX_ITEM_TYPE;
const TTL_PRINCIPAL: &str = "dynamodb.amazonaws.com";
/// The outbox item's Region attribute (the store's `items::BORN_IN`; the relay does not link the
/// store, a test holds the two equal).
pub const BORN_IN: &str = "born_in";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A REMOVE made by TTL (userIdentity Service / dynamodb.amazonaws.com).
    TtlRemoval,
    /// MODIFY, or a REMOVE by someone else: outbox items are written once and never published twice.
    NotAnInsert,
    /// An INSERT of something that is not an outbox event.
    NotAnOutboxItem,
    /// An outbox event another Region's API wrote, replicated here by a global table: that
    /// Region's relay publishes it (docs/multi-region.md).
    BornElsewhere,
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
    /// The Region whose API wrote the outbox item (`born_in`); `None` on items from before
    /// items recorded it.
    pub born_in: Option<String>,
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
    let born_in = match image.get(BORN_IN) {
        Some(serde_dynamo::AttributeValue::S(region)) => Some(region.clone()),
        _ => None,
    };
    match serde_dynamo::from_item::<_, EventEnvelope>(image) {
        Ok(envelope) => publishable(envelope, born_in),
        Err(e) => Classified::Poison {
            reason: format!("outbox item is not a valid event envelope: {e}"),
        },
    }
}

/// The envelope as the record to put, unless it cannot be put.
fn publishable(envelope: EventEnvelope, born_in: Option<String>) -> Classified {
    match SinkRecord::of_envelope(&envelope) {
        Ok(record) => Classified::Publish {
            record,
            event: PublishedEvent {
                event_id: envelope.event_id,
                reservation_id: envelope.aggregate_id,
                version: envelope.version,
                trace_id: envelope.trace_id,
                born_in,
            },
        },
        Err(reason) => Classified::Poison { reason },
    }
}

/// The relay's event source mapping filters (template and local runner alike; a record passes
/// when one of them matches): the outbox INSERTs this Region publishes, so Lambda is not even
/// invoked for TTL removals, for anything else, or for another Region's events replicated here
/// by a global table (docs/multi-region.md).
pub fn outbox_insert_filters(regions: &settings::Regions) -> Vec<String> {
    let insert_of = |born_in: serde_json::Value| {
        serde_json::json!({
            "eventName": ["INSERT"],
            "dynamodb": {"NewImage": {"item_type": {"S": [OUTBOX_ITEM_TYPE]}, BORN_IN: born_in}}
        })
        .to_string()
    };
    let mut filters = vec![insert_of(serde_json::json!({"S": [regions.here]}))];
    if regions.is_primary() {
        // Items from before outbox items recorded their Region (`exists` matches leaves only).
        filters.push(insert_of(serde_json::json!({"S": [{"exists": false}]})));
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_match_the_item_type_the_store_writes_and_this_regions_events() {
        let primary = settings::Regions::single("us-east-1");
        let filters = outbox_insert_filters(&primary);
        assert_eq!(filters.len(), 2, "the primary also publishes items without a Region");
        for filter in &filters {
            let filter: serde_json::Value = serde_json::from_str(filter).unwrap();
            assert_eq!(filter["dynamodb"]["NewImage"]["item_type"]["S"][0], OUTBOX_ITEM_TYPE);
        }
        let other = settings::Regions {
            here: "eu-west-1".into(),
            primary: "us-east-1".into(),
        };
        let filters = outbox_insert_filters(&other);
        assert_eq!(filters.len(), 1);
        let filter: serde_json::Value = serde_json::from_str(&filters[0]).unwrap();
        assert_eq!(filter["dynamodb"]["NewImage"][BORN_IN]["S"][0], "eu-west-1");
    }
}
