//! Which stream records become events. Only outbox INSERTs do (invariant 6 of docs/design.md); the event
//! source mapping's FilterCriteria already drops the rest, and this check makes a missing or wrong
//! filter harmless.

use crate::dynamodb_json::{deserialize_item_with, from_item_json, from_item_json_with};
use crate::sink::{MAX_BYTES_PER_RECORD, SinkRecord};
use aws_lambda_events::event::dynamodb::EventRecord;
use domain::{EventId, EventType, ReservationId, TraceId, Version};
use serde::Deserialize;
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
/// relay's tests hold the two equal), except that the payload is carried as the JSON it is
/// transcoded to while the item is read, instead of a `serde_json::Value` built from the item
/// and written out again.
#[derive(Debug, Deserialize)]
struct OutboxEnvelope {
    event_id: EventId,
    event_type: EventType,
    aggregate_type: String,
    aggregate_id: ReservationId,
    version: Version,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    /// JSON, as serde_json wrote it.
    #[serde(deserialize_with = "payload_as_json")]
    payload: Vec<u8>,
    trace_id: TraceId,
}

impl OutboxEnvelope {
    /// The envelope as JSON, its fields in the order of [`domain::EventEnvelope`]. The payload
    /// goes in as it was written, without being parsed again.
    fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(br#"{"event_id":"#);
        serde_json::to_writer(&mut *out, &self.event_id)?;
        out.extend_from_slice(br#","event_type":"#);
        serde_json::to_writer(&mut *out, &self.event_type)?;
        out.extend_from_slice(br#","aggregate_type":"#);
        serde_json::to_writer(&mut *out, &self.aggregate_type)?;
        out.extend_from_slice(br#","aggregate_id":"#);
        serde_json::to_writer(&mut *out, &self.aggregate_id)?;
        out.extend_from_slice(br#","version":"#);
        serde_json::to_writer(&mut *out, &self.version)?;
        out.extend_from_slice(br#","occurred_at":"#);
        time::serde::rfc3339::serialize(&self.occurred_at, &mut serde_json::Serializer::new(&mut *out))?;
        out.extend_from_slice(br#","payload":"#);
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(br#","trace_id":"#);
        serde_json::to_writer(&mut *out, &self.trace_id)?;
        out.push(b'}');
        Ok(())
    }
}

/// Any value, written out as plain JSON as it is read.
fn payload_as_json<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    use serde::de::Error;
    let mut json = Vec::with_capacity(256);
    serde_transcode::transcode(deserializer, &mut serde_json::Serializer::new(&mut json)).map_err(D::Error::custom)?;
    Ok(json)
}

/// What the relay reads of a DynamoDB stream record (the shape of `aws_lambda_events`'
/// `EventRecord`), borrowed from the Lambda event's JSON: no attribute maps are built, and the
/// keys and old image are skipped unread. Lambda's JSON escapes none of these strings, so they
/// are borrowed; one that is escaped is copied.
///
/// `I` is how the new image is held: as its JSON, read once the record is known to be an outbox
/// INSERT (the default, which reads any record), or as an [`OutboxImage`] read in the same pass
/// as the rest of the record (which fails on an image that is not an event envelope).
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de>"))]
pub struct StreamRecord<'a, I = &'a RawValue> {
    #[serde(rename = "eventID", borrow, default)]
    pub event_id: Cow<'a, str>,
    #[serde(rename = "eventName", borrow, default)]
    pub event_name: Cow<'a, str>,
    #[serde(rename = "eventSourceARN", borrow, default)]
    pub event_source_arn: Cow<'a, str>,
    #[serde(rename = "userIdentity", borrow, default)]
    pub user_identity: Option<UserIdentity<'a>>,
    #[serde(rename = "dynamodb", borrow, default)]
    pub change: Change<'a, I>,
}

#[derive(Debug, Default, Deserialize)]
pub struct UserIdentity<'a> {
    #[serde(rename = "type", borrow, default)]
    pub type_: Cow<'a, str>,
    #[serde(rename = "principalId", borrow, default)]
    pub principal_id: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de>"))]
pub struct Change<'a, I> {
    /// Seconds since the epoch, with a fraction.
    #[serde(rename = "ApproximateCreationDateTime", default)]
    pub approximate_creation_date_time: Option<f64>,
    #[serde(rename = "SequenceNumber", borrow, default)]
    pub sequence_number: Cow<'a, str>,
    #[serde(rename = "NewImage", default = "Option::default")]
    pub new_image: Option<I>,
}

impl<I> Default for Change<'_, I> {
    fn default() -> Self {
        Self {
            approximate_creation_date_time: None,
            sequence_number: Cow::Borrowed(""),
            new_image: None,
        }
    }
}

impl<I> StreamRecord<'_, I> {
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

/// A new image read as an outbox item in the stream record's own pass: the event envelope and
/// the item type beside it. Reading fails when the image is not an event envelope; the relay
/// then reads that batch again with images held as JSON, which classifies any record.
#[derive(Debug)]
pub struct OutboxImage<'a> {
    item_type: Option<Cow<'a, str>>,
    envelope: OutboxEnvelope,
}

impl<'de> Deserialize<'de> for OutboxImage<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (item_type, envelope) = deserialize_item_with(deserializer, "item_type");
        Ok(Self {
            item_type,
            envelope: envelope?,
        })
    }
}

/// What a new image holds for the relay.
pub struct ImageRead<'a> {
    item_type: Option<Cow<'a, str>>,
    envelope: Result<OutboxEnvelope, serde_json::Error>,
}

/// How a stream record's new image is held until it is classified.
pub trait NewImage<'a> {
    /// The item type and the envelope; `None` for an empty image.
    fn read(self) -> Option<ImageRead<'a>>;
}

impl<'a> NewImage<'a> for &'a RawValue {
    fn read(self) -> Option<ImageRead<'a>> {
        if is_empty_object(self) {
            return None;
        }
        let image = self.get();
        let (item_type, envelope) = from_item_json_with::<OutboxEnvelope>(image, "item_type");
        // A failed pass may have stopped before the item type: read it alone.
        let item_type = match (&envelope, item_type) {
            (Err(_), None) => from_item_json::<ItemType>(image).ok().and_then(|i| i.item_type),
            (_, item_type) => item_type,
        };
        Some(ImageRead { item_type, envelope })
    }
}

impl<'a> NewImage<'a> for OutboxImage<'a> {
    fn read(self) -> Option<ImageRead<'a>> {
        Some(ImageRead {
            item_type: self.item_type,
            envelope: Ok(self.envelope),
        })
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
        Ok(mut view) => classify_record(&mut view),
        Err(e) => Classified::Poison {
            reason: format!("not a DynamoDB stream record: {e}"),
        },
    }
}

/// Decides what becomes of a record; takes its new image (the envelope moves into the result).
pub fn classify_record<'a, I: NewImage<'a>>(record: &mut StreamRecord<'a, I>) -> Classified {
    if let Some(identity) = &record.user_identity
        && identity.type_ == "Service"
        && identity.principal_id == TTL_PRINCIPAL
    {
        return Classified::Skip(SkipReason::TtlRemoval);
    }
    if record.event_name != "INSERT" {
        return Classified::Skip(SkipReason::NotAnInsert);
    }
    let Some(image) = record.change.new_image.take().and_then(NewImage::read) else {
        return Classified::Poison {
            reason: "INSERT without NewImage: the table's stream must use NEW_IMAGE or NEW_AND_OLD_IMAGES".into(),
        };
    };
    if image.item_type.as_deref() != Some(OUTBOX_ITEM_TYPE) {
        return Classified::Skip(SkipReason::NotAnOutboxItem);
    }
    match image.envelope {
        Ok(envelope) => publishable(envelope),
        Err(e) => Classified::Poison {
            reason: format!("outbox item is not a valid event envelope: {e}"),
        },
    }
}

/// The envelope as the Kinesis record to put, unless it is too large to put.
fn publishable(envelope: OutboxEnvelope) -> Classified {
    // The envelope's own fields take about 320 bytes of JSON besides the payload: one allocation.
    let mut data = Vec::with_capacity(envelope.payload.len() + 384);
    if let Err(e) = envelope.write_json(&mut data) {
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
