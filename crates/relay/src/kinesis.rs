//! The Kinesis sink: one `PutRecords` call per batch, with the outcome of every record.

use crate::sink::{EventSink, PutOutcome, SinkError, SinkErrorKind, SinkRecord, is_throttle_code};
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

#[derive(Debug, Clone)]
pub struct KinesisSink {
    client: aws_sdk_kinesis::Client,
    stream_name: String,
}

impl KinesisSink {
    pub fn new(client: aws_sdk_kinesis::Client, stream_name: impl Into<String>) -> Self {
        Self {
            client,
            stream_name: stream_name.into(),
        }
    }
}

impl EventSink for KinesisSink {
    async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, SinkError> {
        let entries = records
            .iter()
            .map(|r| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&r.partition_key)
                    .data(Blob::new(r.data.clone()))
                    .build()
                    .map_err(|e| SinkError {
                        kind: SinkErrorKind::Other,
                        source: e.into(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .put_records()
            .stream_name(&self.stream_name)
            .set_records(Some(entries))
            .send()
            .await
            .map_err(|e| {
                let kind = if e.code().is_some_and(is_throttle_code) {
                    SinkErrorKind::Throttled
                } else {
                    SinkErrorKind::Other
                };
                SinkError { kind, source: e.into() }
            })?;
        // Every record's own result, never just the call's: a "successful" call can still have
        // failed records (failed_record_count > 0).
        Ok(output
            .records()
            .iter()
            .map(|r| match r.error_code() {
                None => PutOutcome::Accepted,
                Some(code) => PutOutcome::Failed {
                    code: code.to_owned(),
                    message: r.error_message().unwrap_or_default().to_owned(),
                },
            })
            .collect())
    }
}
