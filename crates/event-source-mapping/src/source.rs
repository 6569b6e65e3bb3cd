//! Where records come from: the shards of a DynamoDB stream or a Kinesis stream, read through the
//! real SDKs, and turned into the JSON records Lambda would put in an event.

use base64::Engine;
use serde_json::{Value, json};
use std::future::Future;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    DynamoDbStreams,
    Kinesis,
    /// A Kafka topic: its partitions are the shards, offsets the sequence numbers.
    Kafka,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard_id: String,
    /// One parent after a split, two after a merge (Kinesis), none for an original shard.
    pub parent_shard_ids: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub sequence_number: String,
    pub approximate_arrival: OffsetDateTime,
    /// The record exactly as it appears in the `Records` array of Lambda's event.
    pub lambda_record: Value,
    /// What filter patterns are matched against: the record, and for Kinesis also `data` decoded
    /// from base64 and parsed as JSON when it is JSON (as Lambda does).
    pub filter_view: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    TrimHorizon,
    Latest,
    AfterSequenceNumber(String),
}

pub struct ReadResult {
    pub records: Vec<SourceRecord>,
    /// `None` once a closed shard has been read to its end.
    pub next_iterator: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{operation} failed")]
pub struct SourceError {
    pub operation: &'static str,
    /// The iterator expired or was trimmed: re-open the shard from the checkpoint.
    pub iterator_invalid: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

pub trait StreamSource: Send + Sync {
    fn kind(&self) -> SourceKind;
    fn event_source_arn(&self) -> &str;
    fn list_shards(&self) -> impl Future<Output = Result<Vec<ShardInfo>, SourceError>> + Send;
    fn shard_iterator(
        &self,
        shard_id: &str,
        position: &Position,
    ) -> impl Future<Output = Result<String, SourceError>> + Send;
    fn read(
        &self,
        shard_id: &str,
        iterator: &str,
        limit: usize,
    ) -> impl Future<Output = Result<ReadResult, SourceError>> + Send;

    /// The Lambda event of one shard's batch: `{"Records": [...]}` for streams.
    fn event(&self, _shard_id: &str, records: Vec<Value>) -> Value {
        json!({ "Records": records })
    }
}

/// What one Kinesis record of a Lambda event is made of.
struct KinesisRecordContext<'a> {
    shard_id: &'a str,
    region: &'a str,
    stream_arn: &'a str,
    partition_key: &'a str,
    sequence_number: &'a str,
    data: &'a [u8],
    arrival: OffsetDateTime,
}

/// A record as Lambda puts it in a Kinesis event. The arrival time is epoch seconds with
/// millisecond precision, as Lambda sends it: `aws_lambda_events` reads the digits after the point
/// as milliseconds and rejects anything finer.
fn kinesis_lambda_record(record: &KinesisRecordContext<'_>) -> Value {
    let arrival_millis = (record.arrival.unix_timestamp_nanos() / 1_000_000) as i64;
    json!({
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record.partition_key,
            "sequenceNumber": record.sequence_number,
            "data": base64::engine::general_purpose::STANDARD.encode(record.data),
            "approximateArrivalTimestamp": arrival_millis as f64 / 1000.0,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": format!("{}:{}", record.shard_id, record.sequence_number),
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::000000000000:role/local-event-source-mapping",
        "awsRegion": record.region,
        "eventSourceARN": record.stream_arn,
    })
}

/// Both SDKs re-export the same smithy `DateTime`.
fn to_offset(dt: &aws_sdk_kinesis::primitives::DateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos((dt.as_secs_f64() * 1e9) as i128).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

// ---------------------------------------------------------------------------------------------
// DynamoDB Streams

pub struct DynamoDbStreamsSource {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    region: String,
}

impl DynamoDbStreamsSource {
    pub fn new(client: aws_sdk_dynamodbstreams::Client, stream_arn: impl Into<String>) -> Self {
        let region = client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        Self {
            client,
            stream_arn: stream_arn.into(),
            region,
        }
    }
}

fn streams_error<E>(operation: &'static str, err: aws_sdk_dynamodbstreams::error::SdkError<E>) -> SourceError
where
    E: aws_sdk_dynamodbstreams::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
    let iterator_invalid = matches!(
        err.code(),
        Some("ExpiredIteratorException" | "TrimmedDataAccessException")
    );
    SourceError {
        operation,
        iterator_invalid,
        source: err.into(),
    }
}

fn image(
    item: Option<&std::collections::HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>,
) -> Option<Value> {
    let item = item?;
    let item: serde_dynamo::Item = item.clone().into();
    serde_json::to_value(item).ok()
}

impl StreamSource for DynamoDbStreamsSource {
    fn kind(&self) -> SourceKind {
        SourceKind::DynamoDbStreams
    }

    fn event_source_arn(&self) -> &str {
        &self.stream_arn
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        let mut shards = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(start)
                .send()
                .await
                .map_err(|e| streams_error("DescribeStream", e))?;
            let Some(description) = out.stream_description else {
                return Ok(shards);
            };
            for shard in description.shards() {
                shards.push(ShardInfo {
                    shard_id: shard.shard_id().unwrap_or_default().to_owned(),
                    parent_shard_ids: shard.parent_shard_id().map(str::to_owned).into_iter().collect(),
                });
            }
            start = description.last_evaluated_shard_id;
            if start.is_none() {
                return Ok(shards);
            }
        }
    }

    async fn shard_iterator(&self, shard_id: &str, position: &Position) -> Result<String, SourceError> {
        use aws_sdk_dynamodbstreams::types::ShardIteratorType;
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard_id);
        let request = match position {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Position::AfterSequenceNumber(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
        };
        let out = request.send().await.map_err(|e| streams_error("GetShardIterator", e))?;
        out.shard_iterator.ok_or_else(|| SourceError {
            operation: "GetShardIterator",
            iterator_invalid: false,
            source: "no iterator returned".into(),
        })
    }

    async fn read(&self, _shard_id: &str, iterator: &str, limit: usize) -> Result<ReadResult, SourceError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| streams_error("GetRecords", e))?;
        let mut records = Vec::new();
        for record in out.records() {
            let Some(change) = record.dynamodb() else { continue };
            let sequence_number = change.sequence_number().unwrap_or_default().to_owned();
            let arrival = change
                .approximate_creation_date_time()
                .map(to_offset)
                .unwrap_or_else(OffsetDateTime::now_utc);
            let mut dynamodb = json!({
                "ApproximateCreationDateTime": arrival.unix_timestamp(),
                "SequenceNumber": sequence_number,
                "SizeBytes": change.size_bytes().unwrap_or_default(),
            });
            if let Some(view) = change.stream_view_type() {
                dynamodb["StreamViewType"] = json!(view.as_str());
            }
            for (name, value) in [
                ("Keys", image(change.keys())),
                ("NewImage", image(change.new_image())),
                ("OldImage", image(change.old_image())),
            ] {
                if let Some(value) = value {
                    dynamodb[name] = value;
                }
            }
            let mut lambda_record = json!({
                "eventID": record.event_id().unwrap_or_default(),
                "eventName": record.event_name().map(|n| n.as_str()).unwrap_or_default(),
                "eventVersion": record.event_version().unwrap_or("1.1"),
                "eventSource": "aws:dynamodb",
                "awsRegion": record.aws_region().unwrap_or(&self.region),
                "dynamodb": dynamodb,
                "eventSourceARN": self.stream_arn,
            });
            if let Some(identity) = record.user_identity() {
                lambda_record["userIdentity"] = json!({ "type": identity.r#type().unwrap_or_default(), "principalId": identity.principal_id().unwrap_or_default() });
            }
            records.push(SourceRecord {
                sequence_number,
                approximate_arrival: arrival,
                filter_view: lambda_record.clone(),
                lambda_record,
            });
        }
        Ok(ReadResult {
            records,
            next_iterator: out.next_shard_iterator,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Kinesis

pub struct KinesisSource {
    client: aws_sdk_kinesis::Client,
    stream_name: String,
    stream_arn: String,
    region: String,
}

impl KinesisSource {
    /// Looks the stream's ARN up once (it is part of every record Lambda delivers).
    pub async fn new(client: aws_sdk_kinesis::Client, stream_name: impl Into<String>) -> Result<Self, SourceError> {
        let stream_name = stream_name.into();
        let summary = client
            .describe_stream_summary()
            .stream_name(&stream_name)
            .send()
            .await
            .map_err(|e| SourceError {
                operation: "DescribeStreamSummary",
                iterator_invalid: false,
                source: e.into(),
            })?;
        let stream_arn = summary
            .stream_description_summary()
            .map(|d| d.stream_arn().to_owned())
            .unwrap_or_default();
        let region = client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        Ok(Self {
            client,
            stream_name,
            stream_arn,
            region,
        })
    }
}

fn kinesis_error<E>(operation: &'static str, err: aws_sdk_kinesis::error::SdkError<E>) -> SourceError
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_sdk_kinesis::error::ProvideErrorMetadata;
    let iterator_invalid = matches!(err.code(), Some("ExpiredIteratorException"));
    SourceError {
        operation,
        iterator_invalid,
        source: err.into(),
    }
}

impl StreamSource for KinesisSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Kinesis
    }

    fn event_source_arn(&self) -> &str {
        &self.stream_arn
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, SourceError> {
        crate::lineage::kinesis_shards(&self.client, &self.stream_name)
            .await
            .map_err(|e| kinesis_error("ListShards", e))
    }

    async fn shard_iterator(&self, shard_id: &str, position: &Position) -> Result<String, SourceError> {
        use aws_sdk_kinesis::types::ShardIteratorType;
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream_name)
            .shard_id(shard_id);
        let request = match position {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Position::AfterSequenceNumber(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
        };
        let out = request.send().await.map_err(|e| kinesis_error("GetShardIterator", e))?;
        out.shard_iterator.ok_or_else(|| SourceError {
            operation: "GetShardIterator",
            iterator_invalid: false,
            source: "no iterator returned".into(),
        })
    }

    async fn read(&self, shard_id: &str, iterator: &str, limit: usize) -> Result<ReadResult, SourceError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.clamp(1, 10_000) as i32)
            .send()
            .await
            .map_err(|e| kinesis_error("GetRecords", e))?;
        let mut records = Vec::new();
        for record in out.records() {
            let arrival = record
                .approximate_arrival_timestamp()
                .map(to_offset)
                .unwrap_or_else(OffsetDateTime::now_utc);
            let data = record.data().as_ref();
            let sequence_number = record.sequence_number().to_owned();
            let lambda_record = kinesis_lambda_record(&KinesisRecordContext {
                shard_id,
                region: &self.region,
                stream_arn: &self.stream_arn,
                partition_key: record.partition_key().unwrap_or_default(),
                sequence_number: &sequence_number,
                data,
                arrival,
            });
            let mut filter_view = lambda_record.clone();
            if let Ok(decoded) = serde_json::from_slice::<Value>(data) {
                filter_view["data"] = decoded;
            }
            records.push(SourceRecord {
                sequence_number,
                approximate_arrival: arrival,
                lambda_record,
                filter_view,
            });
        }
        Ok(ReadResult {
            records,
            next_iterator: out.next_shard_iterator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::kinesis::KinesisEvent;

    fn record_at(arrival: OffsetDateTime) -> Value {
        kinesis_lambda_record(&KinesisRecordContext {
            shard_id: "shardId-000000000001",
            region: "eu-west-1",
            stream_arn: "arn:aws:kinesis:eu-west-1:000000000000:stream/reservation-events",
            partition_key: "r-1",
            sequence_number: "49590338271490256608559692538361571095921575989136588898",
            data: br#"{"event_type":"ReservationCreated"}"#,
            arrival,
        })
    }

    #[test]
    fn kinesis_records_deserialize_as_lambda_events_with_millisecond_arrival_times() {
        // Kinesis reports arrival times with sub-millisecond digits; Lambda's event carries
        // milliseconds, and finer digits made aws_lambda_events reject the whole event.
        let arrival = OffsetDateTime::from_unix_timestamp_nanos(1_764_000_000_123_456_789).unwrap();
        let event: KinesisEvent = serde_json::from_value(json!({ "Records": [record_at(arrival)] })).unwrap();

        let record = &event.records[0];
        assert_eq!(
            record.kinesis.approximate_arrival_timestamp.timestamp_millis(),
            1_764_000_000_123
        );
        assert_eq!(record.kinesis.partition_key, "r-1");
        assert_eq!(record.kinesis.data.0, br#"{"event_type":"ReservationCreated"}"#);
        assert_eq!(
            record.event_id.as_deref(),
            Some("shardId-000000000001:49590338271490256608559692538361571095921575989136588898")
        );
        assert_eq!(record.aws_region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn whole_second_arrival_times_deserialize_too() {
        let arrival = OffsetDateTime::from_unix_timestamp(1_764_000_000).unwrap();
        let event: KinesisEvent = serde_json::from_value(json!({ "Records": [record_at(arrival)] })).unwrap();
        assert_eq!(
            event.records[0].kinesis.approximate_arrival_timestamp.timestamp(),
            1_764_000_000
        );
    }
}
