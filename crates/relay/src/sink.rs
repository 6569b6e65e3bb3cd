//! Where events go: one narrow capability, "put these records", with a result per record.

use std::future::Future;

/// Kinesis limits (PutRecords): records per call, bytes per call, bytes per record. Partition key
/// bytes count towards the byte limits.
pub const MAX_RECORDS_PER_CALL: usize = 500;
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
pub const MAX_BYTES_PER_RECORD: usize = 1024 * 1024;

/// The headers an event's record carries on Kafka (docs/events.md): the envelope's own values.
pub const HEADER_EVENT_TYPE: &str = "event_type";
pub const HEADER_EVENT_ID: &str = "event_id";
pub const HEADER_TRACE_ID: &str = "trace_id";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SinkRecord {
    pub partition_key: String,
    pub data: Vec<u8>,
    /// What a consumer may want to know without reading `data` (event type, event id, trace id),
    /// for buses that carry headers (Kafka); Kinesis has none.
    pub headers: Vec<(&'static str, String)>,
}

impl SinkRecord {
    /// The record that publishes `envelope`: its JSON, keyed by its reservation. Refused, with the
    /// reason, when it cannot be put (over the per-record limit).
    pub fn of_envelope(envelope: &domain::EventEnvelope) -> Result<Self, String> {
        let data = serde_json::to_vec(envelope).map_err(|e| format!("envelope does not serialize to JSON: {e}"))?;
        let record = Self {
            partition_key: envelope.partition_key().to_owned(),
            data,
            headers: vec![
                (HEADER_EVENT_TYPE, envelope.event_type.as_str().to_owned()),
                (HEADER_EVENT_ID, envelope.event_id.as_str().to_owned()),
                (HEADER_TRACE_ID, envelope.trace_id.to_string()),
            ],
        };
        if record.size() > MAX_BYTES_PER_RECORD {
            return Err(format!(
                "event is {} bytes; Kinesis accepts at most {MAX_BYTES_PER_RECORD} per record",
                record.size()
            ));
        }
        Ok(record)
    }

    pub fn size(&self) -> usize {
        self.partition_key.len() + self.data.len()
    }
}

/// The fate of one record of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    Accepted,
    Failed { code: String, message: String },
}

impl PutOutcome {
    pub fn is_throttle(&self) -> bool {
        matches!(self, Self::Failed { code, .. } if is_throttle_code(code))
    }
}

pub(crate) fn is_throttle_code(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "KMSThrottlingException"
            | "LimitExceededException"
            | "ThrottlingException"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkErrorKind {
    Throttled,
    /// The bus is not the one the stack was set up with (a Kafka topic whose partition count is
    /// not `KAFKA_PARTITIONS`): nothing is published until an operator fixes it, so trying again
    /// within the invocation cannot help.
    Refused,
    Other,
}

/// The whole call failed (after the SDK's own retries): nothing of it was accepted.
#[derive(Debug, thiserror::Error)]
#[error("put records failed ({kind:?})")]
pub struct SinkError {
    pub kind: SinkErrorKind,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

pub trait EventSink: Send + Sync {
    /// Puts `records` in one call. On `Ok`, the outcomes are in the order of `records`.
    fn put_records(&self, records: &[&SinkRecord]) -> impl Future<Output = Result<Vec<PutOutcome>, SinkError>> + Send;
}
