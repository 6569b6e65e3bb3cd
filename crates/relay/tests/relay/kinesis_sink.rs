//! The Kinesis adapter reads every record's result, not just the call's (aws-smithy-mocks).

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::ErrorMetadata;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use aws_sdk_kinesis::types::PutRecordsResultEntry;
use aws_sdk_kinesis::types::error::ProvisionedThroughputExceededException;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use relay::{EventSink, KinesisSink, PutOutcome, SinkErrorKind, SinkRecord};

fn records() -> Vec<SinkRecord> {
    ["a", "b", "c"]
        .iter()
        .map(|k| SinkRecord {
            partition_key: (*k).into(),
            data: b"{}".to_vec(),
            ..SinkRecord::default()
        })
        .collect()
}

#[tokio::test]
async fn a_call_that_succeeds_with_failed_records_reports_each_failure() {
    let rule = mock!(Client::put_records).then_output(|| {
        PutRecordsOutput::builder()
            .failed_record_count(1)
            .records(
                PutRecordsResultEntry::builder()
                    .shard_id("shardId-0")
                    .sequence_number("1")
                    .build(),
            )
            .records(
                PutRecordsResultEntry::builder()
                    .error_code("ProvisionedThroughputExceededException")
                    .error_message("Rate exceeded for shard shardId-1")
                    .build(),
            )
            .records(
                PutRecordsResultEntry::builder()
                    .shard_id("shardId-0")
                    .sequence_number("2")
                    .build(),
            )
            .build()
            .unwrap()
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::Sequential, [&rule]);
    let sink = KinesisSink::new(client, "reservation-events");
    let records = records();
    let refs: Vec<&SinkRecord> = records.iter().collect();
    let outcomes = sink.put_records(&refs).await.unwrap();
    assert_eq!(outcomes[0], PutOutcome::Accepted);
    assert!(outcomes[1].is_throttle());
    assert_eq!(outcomes[2], PutOutcome::Accepted);
}

#[tokio::test]
async fn a_throttled_call_is_a_throttled_sink_error_after_the_sdk_retries() {
    let rule = mock!(Client::put_records).then_error(|| {
        PutRecordsError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder()
                .message("slow down")
                .meta(
                    ErrorMetadata::builder()
                        .code("ProvisionedThroughputExceededException")
                        .build(),
                )
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_kinesis, RuleMode::MatchAny, [&rule], |c| c.retry_config(
        RetryConfig::standard()
            .with_max_attempts(2)
            .with_initial_backoff(std::time::Duration::from_millis(1))
    ));
    let sink = KinesisSink::new(client, "reservation-events");
    let records = records();
    let refs: Vec<&SinkRecord> = records.iter().collect();
    let err = sink.put_records(&refs).await.unwrap_err();
    assert_eq!(err.kind, SinkErrorKind::Throttled);
    assert_eq!(
        rule.num_calls(),
        2,
        "the SDK's retry config retried the throttled call once"
    );
}
