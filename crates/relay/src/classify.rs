//! Which stream records become events. Only outbox INSERTs do (invariant 6 of docs/design.md); the event
//! source mapping's FilterCriteria already drops the rest, and this check makes a missing or wrong
//! filter harmless.

use crate::dynamodb_json::{from_item_json, from_item_json_with};
use crate::sink::{MAX_BYTES_PER_RECORD, SinkRecord};
use aws_lambda_events::event::dynamodb::EventRecord;
use domain::{EventId, EventType, ReservationId, TraceId, Version};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use time::OffsetDateTime;

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

/// The envelope as the relay reads and publishes it: [`domain::EventEnvelope`] field for field (the
/// relay's tests hold the two equal), except that the payload is carried as the JSON text it
/// is transcoded to while the item is read, instead of a `serde_json::Value` built from the
/// item and written out again.
#[derive(Deserialize, Serialize)]
struct OutboxEnvelope {
    event_id: EventId,
    event_type: EventType,
    aggregate_type: String,
    aggregate_id: ReservationId,
    version: Version,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    #[serde(deserialize_with = "payload_as_json")]
    payload: Box<RawValue>,
    trace_id: TraceId,
}

/// Any value, written out as plain JSON as it is read.
fn payload_as_json<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Box<RawValue>, D::Error> {
    use serde::de::Error;
    let mut json = Vec::with_capacity(256);
    serde_transcode::transcode(deserializer, &mut serde_json::Serializer::new(&mut json)).map_err(D::Error::custom)?;
    let json = String::from_utf8(json).map_err(D::Error::custom)?;
    RawValue::from_string(json).map_err(D::Error::custom)
}

/// What the relay reads of a DynamoDB stream record (the shape of `aws_lambda_events`'
/// `EventRecord`), borrowed from the Lambda event's JSON: no attribute maps are built, and the
/// keys and old image are skipped unread. Lambda's JSON escapes none of these strings, so they
/// are borrowed; one that is escaped is copied.
#[derive(Debug, Default, Deserialize)]
pub struct StreamRecord<'a> {
    #[serde(rename = "eventID", borrow, default)]
    pub event_id: Cow<'a, str>,
    #[serde(rename = "eventName", borrow, default)]
    pub event_name: Cow<'a, str>,
    #[serde(rename = "eventSourceARN", borrow, default)]
    pub event_source_arn: Cow<'a, str>,
    #[serde(rename = "userIdentity", borrow, default)]
    pub user_identity: Option<UserIdentity<'a>>,
    #[serde(rename = "dynamodb", borrow, default)]
    pub change: Change<'a>,
}

#[derive(Debug, Default, Deserialize)]
pub struct UserIdentity<'a> {
    #[serde(rename = "type", borrow, default)]
    pub type_: Cow<'a, str>,
    #[serde(rename = "principalId", borrow, default)]
    pub principal_id: Cow<'a, str>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Change<'a> {
    /// Seconds since the epoch, with a fraction.
    #[serde(rename = "ApproximateCreationDateTime", default)]
    pub approximate_creation_date_time: Option<f64>,
    #[serde(rename = "SequenceNumber", borrow, default)]
    pub sequence_number: Cow<'a, str>,
    /// The item as DynamoDB JSON, read only once the record is known to be an outbox INSERT.
    #[serde(rename = "NewImage", borrow, default)]
    pub new_image: Option<&'a RawValue>,
}

impl StreamRecord<'_> {
    /// Milliseconds since the epoch of `ApproximateCreationDateTime`, when it is there.
    pub fn created_ms(&self) -> Option<i64> {
        self.change
            .approximate_creation_date_time
            .map(|seconds| (seconds * 1000.0) as i64)
            .filter(|ms| *ms > 0)
    }

    /// How Lambda identifies the record in a batch item failure: its sequence number.
    pub fn item_identifier(&self) -> &str {
        if self.change.sequence_number.is_empty() {
            &self.event_id
        } else {
            &self.change.sequence_number
        }
    }
}

/// The item type of a new image, read without the rest of it.
#[derive(Deserialize)]
struct ItemType<'a> {
    #[serde(borrow, default)]
    item_type: Option<Cow<'a, str>>,
}

/// Classifies a record of the typed Lambda event: the same decision as [`classify_record`],
/// for callers that hold an `aws_lambda_events` record (tests, tools).
pub fn classify(record: &EventRecord) -> Classified {
    let json = match serde_json::to_string(record) {
        Ok(json) => json,
        Err(e) => {
            return Classified::Poison {
                reason: format!("stream record does not serialize to JSON: {e}"),
            };
        }
    };
    match serde_json::from_str::<StreamRecord>(&json) {
        Ok(view) => classify_record(&view),
        Err(e) => Classified::Poison {
            reason: format!("not a DynamoDB stream record: {e}"),
        },
    }
}

pub fn classify_record(record: &StreamRecord<'_>) -> Classified {
    if let Some(identity) = &record.user_identity
        && identity.type_ == "Service"
        && identity.principal_id == TTL_PRINCIPAL
    {
        return Classified::Skip(SkipReason::TtlRemoval);
    }
    if record.event_name != "INSERT" {
        return Classified::Skip(SkipReason::NotAnInsert);
    }
    let image = match record.change.new_image {
        Some(image) if !is_empty_object(image) => image.get(),
        _ => {
            return Classified::Poison {
                reason: "INSERT without NewImage: the table's stream must use NEW_IMAGE or NEW_AND_OLD_IMAGES".into(),
            };
        }
    };
    // One pass reads the envelope and the item type beside it.
    let (item_type, envelope) = from_item_json_with::<OutboxEnvelope>(image, "item_type");
    let is_outbox_item = |item_type: Option<&str>| item_type == Some(OUTBOX_ITEM_TYPE);
    let envelope = match envelope {
        Ok(envelope) if is_outbox_item(item_type.as_deref()) => envelope,
        Ok(_) => return Classified::Skip(SkipReason::NotAnOutboxItem),
        Err(e) => {
            // The pass may have stopped before the item type: read it alone.
            let item_type = item_type.or_else(|| from_item_json::<ItemType>(image).ok().and_then(|i| i.item_type));
            if !is_outbox_item(item_type.as_deref()) {
                return Classified::Skip(SkipReason::NotAnOutboxItem);
            }
            return Classified::Poison {
                reason: format!("outbox item is not a valid event envelope: {e}"),
            };
        }
    };
    // The published JSON is a little shorter than the image's DynamoDB JSON: one allocation.
    let mut data = Vec::with_capacity(image.len());
    if let Err(e) = serde_json::to_writer(&mut data, &envelope) {
        return Classified::Poison {
            reason: format!("envelope does not serialize to JSON: {e}"),
        };
    }
    let record = SinkRecord {
        partition_key: envelope.aggregate_id.as_str().to_owned(),
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
        record,
        event: PublishedEvent {
            event_id: envelope.event_id,
            reservation_id: envelope.aggregate_id,
            version: envelope.version,
            trace_id: envelope.trace_id,
        },
    }
}

fn is_empty_object(raw: &RawValue) -> bool {
    raw.get()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim()
        .is_empty()
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
