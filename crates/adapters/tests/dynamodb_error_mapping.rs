//! How the DynamoDB store turns SDK outcomes into business outcomes and store errors, with the
//! SDK's own responses faked by aws-smithy-mocks: cancellation reasons, conditional failures,
//! throttling (and the SDK's retry of it), and unknown errors.

use adapters::{DynamoReservationStore, StoreTables};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::ErrorMetadata;
use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemOutput};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::error::{
    ConditionalCheckFailedException, ProvisionedThroughputExceededException, TransactionCanceledException,
};
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use domain::ports::{
    CommitError, NewReservation, ReservationStore, SlotStore, SlotWriteError, StoreError, StoreErrorKind,
};
use domain::{Capacity, EventId, GuestId, Reservation, ReservationId, Seats, SlotId, TraceId};
use std::collections::HashMap;
use std::time::Duration;

fn tables() -> StoreTables {
    StoreTables {
        reservations_table: "reservations".into(),
        outbox_table: "reservation-outbox".into(),
        outbox_retention: time::Duration::days(7),
        idempotency_retention: time::Duration::hours(24),
        relay_mode: adapters::RelayMode::Stream,
        regions: settings::Regions::single("us-east-1"),
        slot_homes: vec!["us-east-1".into()],
    }
}

/// A store whose client answers from `rules`, with the SDK's retries off unless asked for.
fn store(rules: &[&Rule], retry: RetryConfig) -> DynamoReservationStore {
    let client: Client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, rules, |config| config
        .retry_config(retry.clone()));
    DynamoReservationStore::new(client, tables())
}

fn new_reservation(with_key: bool) -> NewReservation {
    let (reservation, event) = Reservation::confirm(
        ReservationId::generate(),
        SlotId::parse("s1").unwrap(),
        GuestId::parse("ada").unwrap(),
        Seats::new(1).unwrap(),
        time::OffsetDateTime::now_utc(),
    );
    let idempotency = with_key.then(|| domain::ports::IdempotencyRecord {
        key: domain::IdempotencyKey::parse("k1").unwrap(),
        fingerprint: "f".into(),
        response_status: 201,
        response_body: "{}".into(),
        created_at: reservation.created_at,
    });
    NewReservation {
        event: event.into_envelope(EventId::generate(), TraceId::generate()),
        reservation,
        idempotency,
    }
}

fn reason(code: &str, item: Option<HashMap<String, AttributeValue>>) -> CancellationReason {
    CancellationReason::builder().code(code).set_item(item).build()
}

fn cancelled_with(reasons: Vec<CancellationReason>) -> Rule {
    mock!(Client::transact_write_items).then_error(move || {
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .set_cancellation_reasons(Some(reasons.clone()))
                .meta(ErrorMetadata::builder().code("TransactionCanceledException").build())
                .build(),
        )
    })
}

fn slot_image(reserved: u32) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".into(), AttributeValue::S("SLOT#s1".into())),
        ("item_type".into(), AttributeValue::S("Slot".into())),
        ("slot_id".into(), AttributeValue::S("s1".into())),
        ("capacity".into(), AttributeValue::N("5".into())),
        ("reserved".into(), AttributeValue::N(reserved.to_string())),
        ("available".into(), AttributeValue::N((5 - reserved).to_string())),
    ])
}

/// The store's first booking of a slot reads the slot item once, to learn how many shards it
/// has: here, one.
fn slot_read() -> Rule {
    mock!(Client::get_item).then_output(|| GetItemOutput::builder().set_item(Some(slot_image(0))).build())
}

fn throttled_get() -> GetItemError {
    GetItemError::ProvisionedThroughputExceededException(
        ProvisionedThroughputExceededException::builder()
            .message("slow down")
            .meta(
                ErrorMetadata::builder()
                    .code("ProvisionedThroughputExceededException")
                    .build(),
            )
            .build(),
    )
}

#[tokio::test]
async fn slot_condition_failure_with_the_old_item_is_sold_out() {
    let rule = cancelled_with(vec![
        reason("ConditionalCheckFailed", Some(slot_image(5))),
        reason("None", None),
        reason("None", None),
    ]);
    let result = store(&[&slot_read(), &rule], RetryConfig::disabled())
        .create_reservation(&new_reservation(false))
        .await;
    assert!(matches!(result, Err(CommitError::SoldOut)), "{result:?}");
}

#[tokio::test]
async fn slot_condition_failure_without_an_item_is_an_unknown_slot() {
    let rule = cancelled_with(vec![
        reason("ConditionalCheckFailed", None),
        reason("None", None),
        reason("None", None),
    ]);
    let result = store(&[&slot_read(), &rule], RetryConfig::disabled())
        .create_reservation(&new_reservation(false))
        .await;
    assert!(matches!(result, Err(CommitError::SlotNotFound)), "{result:?}");
}

#[tokio::test]
async fn idempotency_record_condition_failure_means_the_key_is_taken() {
    let rule = cancelled_with(vec![
        reason("None", None),
        reason("None", None),
        reason("None", None),
        reason("ConditionalCheckFailed", None),
    ]);
    let result = store(&[&slot_read(), &rule], RetryConfig::disabled())
        .create_reservation(&new_reservation(true))
        .await;
    assert!(matches!(result, Err(CommitError::IdempotencyKeyTaken)), "{result:?}");
}

#[tokio::test]
async fn transaction_conflict_is_contention_to_retry() {
    let rule = cancelled_with(vec![
        reason("TransactionConflict", None),
        reason("None", None),
        reason("None", None),
    ]);
    let result = store(&[&slot_read(), &rule], RetryConfig::disabled())
        .create_reservation(&new_reservation(false))
        .await;
    assert!(matches!(result, Err(CommitError::Contention)), "{result:?}");
}

#[tokio::test]
async fn cancellation_throttled_inside_the_transaction_is_a_throttled_store_error() {
    let rule = cancelled_with(vec![
        reason("None", None),
        reason("ThrottlingError", None),
        reason("None", None),
    ]);
    let result = store(&[&slot_read(), &rule], RetryConfig::disabled())
        .create_reservation(&new_reservation(false))
        .await;
    match result {
        Err(CommitError::Store(e)) => assert_eq!(e.kind, StoreErrorKind::Throttled),
        other => panic!("expected a throttled store error, got {other:?}"),
    }
}

#[tokio::test]
async fn version_condition_failure_on_cancel_means_the_reservation_changed() {
    let current = new_reservation(false).reservation;
    let (cancelled, event) = current.cancel(time::OffsetDateTime::now_utc()).unwrap();
    let change = domain::ports::Cancellation {
        event: event.into_envelope(EventId::generate(), TraceId::generate()),
        current,
        placement: domain::Placement::default(),
        cancelled,
    };
    let rule = cancelled_with(vec![
        reason("ConditionalCheckFailed", None),
        reason("None", None),
        reason("None", None),
    ]);
    let result = store(&[&rule], RetryConfig::disabled())
        .cancel_reservation(&change)
        .await;
    assert!(matches!(result, Err(CommitError::ReservationChanged)), "{result:?}");
}

#[tokio::test]
async fn shrinking_a_slot_below_its_reservations_reports_what_is_reserved() {
    let exists = mock!(Client::put_item).then_error(|| {
        PutItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .meta(ErrorMetadata::builder().code("ConditionalCheckFailedException").build())
                .build(),
        )
    });
    let too_small = mock!(Client::update_item).then_error(|| {
        UpdateItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .set_item(Some(slot_image(3)))
                .meta(ErrorMetadata::builder().code("ConditionalCheckFailedException").build())
                .build(),
        )
    });
    let result = store(&[&exists, &too_small], RetryConfig::disabled())
        .put_slot(&SlotId::parse("s1").unwrap(), Capacity::new(2).unwrap(), None, None)
        .await;
    match result {
        Err(SlotWriteError::CapacityBelowReserved { requested, reserved }) => assert_eq!((requested, reserved), (2, 3)),
        Err(other) => panic!("expected capacity below reserved, got {other:?}"),
        Ok(_) => panic!("expected capacity below reserved, got success"),
    }
}

#[tokio::test]
async fn throttling_that_outlasts_the_sdk_retries_is_a_throttled_store_error() {
    let rule = mock!(Client::get_item).then_error(throttled_get);
    let result = store(&[&rule], RetryConfig::disabled())
        .get_slot(&SlotId::parse("s1").unwrap())
        .await;
    let err: StoreError = result.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Throttled);
    assert_eq!(err.operation, "GetItem(slot)");
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_retry_config() {
    let rule = mock!(Client::get_item)
        .sequence()
        .error(throttled_get)
        .times(2)
        .output(|| GetItemOutput::builder().set_item(Some(slot_image(1))).build())
        .build();
    let retry = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1));
    let slot = store(&[&rule], retry)
        .get_slot(&SlotId::parse("s1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(slot.reserved, 1);
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn unknown_errors_keep_their_cause_and_the_aws_request_id() {
    let rule = mock!(Client::get_item).then_http_response(|| {
        let mut response = HttpResponse::new(
            StatusCode::try_from(500).unwrap(),
            SdkBody::from(r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"boom"}"#),
        );
        response.headers_mut().insert("x-amzn-requestid", "REQ-123");
        response
    });
    let err = store(&[&rule], RetryConfig::disabled())
        .get_reservation(&ReservationId::parse("r1").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Other);
    assert_eq!(err.aws_request_id.as_deref(), Some("REQ-123"));
    let source = std::error::Error::source(&err).expect("the SDK error is kept as the source");
    let sdk_error = source
        .downcast_ref::<aws_sdk_dynamodb::error::SdkError<GetItemError, HttpResponse>>()
        .unwrap();
    assert_eq!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(sdk_error),
        Some("InternalServerError")
    );
}

/// A channel that takes every notification.
struct AcceptingChannel;

impl domain::ports::NotificationChannel for AcceptingChannel {
    async fn publish(&self, _: &domain::Notification) -> Result<domain::ports::Delivery, StoreError> {
        Ok(domain::ports::Delivery {
            message_id: "m-1".into(),
            sequence_number: None,
        })
    }

    fn dedup_window(&self) -> time::Duration {
        time::Duration::minutes(5)
    }
}

/// The notifier's store on a client answering from `rules`: the claim, then the record.
async fn notify_through(rules: &[&Rule]) -> Result<domain::ApplyOutcome, StoreError> {
    use domain::ports::NotificationSender;
    let client: Client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, rules, |config| config
        .retry_config(RetryConfig::disabled()));
    let notifications = adapters::DynamoNotifications::new(
        client,
        "reservation-notifications",
        time::Duration::days(7),
        AcceptingChannel,
    );
    let envelope = new_reservation(false).event;
    let event = domain::ReservationEvent::from_envelope(envelope).unwrap();
    notifications.send_once(&domain::Notification::for_event(&event)).await
}

fn claimed() -> Rule {
    mock!(Client::update_item)
        .then_output(|| aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build())
}

#[tokio::test]
async fn a_notification_record_that_meets_a_conflicting_writer_is_contention_not_throttling() {
    let conflict = cancelled_with(vec![reason("TransactionConflict", None), reason("None", None)]);
    let err = notify_through(&[&claimed(), &conflict]).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Contended);

    let in_progress = mock!(Client::transact_write_items).then_error(|| {
        TransactWriteItemsError::TransactionInProgressException(
            aws_sdk_dynamodb::types::error::TransactionInProgressException::builder()
                .meta(ErrorMetadata::builder().code("TransactionInProgressException").build())
                .build(),
        )
    });
    let err = notify_through(&[&claimed(), &in_progress]).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Contended);

    // Throttling inside the transaction is still throttling.
    let throttled = cancelled_with(vec![reason("ThrottlingError", None), reason("None", None)]);
    let err = notify_through(&[&claimed(), &throttled]).await.unwrap_err();
    assert_eq!(err.kind, StoreErrorKind::Throttled);
}
