//! What a client sees when DynamoDB says no: the handler over the real DynamoDB store, with the
//! SDK's responses faked by aws-smithy-mocks (conditional failure, throttling, unknown error).

use adapters::{DynamoReservationStore, InMemoryReadModel, StoreTables};
use api::{App, ReservationService, RetryPolicy};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::ErrorMetadata;
use aws_sdk_dynamodb::operation::get_item::{GetItemError, GetItemOutput};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::error::{ProvisionedThroughputExceededException, TransactionCanceledException};
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use http::Request;
use lambda_http::Body;
use serde_json::Value;
use std::collections::HashMap;

fn app(rules: &[&Rule]) -> App<DynamoReservationStore, InMemoryReadModel> {
    let client: Client = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, rules, |config| config
        .retry_config(RetryConfig::disabled()));
    let tables = StoreTables {
        reservations_table: "reservations".into(),
        outbox_table: "reservation-outbox".into(),
        outbox_retention: time::Duration::days(7),
        idempotency_retention: time::Duration::hours(24),
        relay_mode: adapters::RelayMode::Stream,
        regions: settings::Regions::single("us-east-1"),
        slot_homes: vec!["us-east-1".into()],
    };
    App::new(
        ReservationService::new(DynamoReservationStore::new(client, tables), RetryPolicy::default()),
        InMemoryReadModel::default(),
    )
}

/// The store's first booking of a slot reads the slot item once (how many shards it has: one).
fn slot_read() -> Rule {
    mock!(Client::get_item).then_output(|| {
        GetItemOutput::builder()
            .item("pk", AttributeValue::S("SLOT#s1".into()))
            .item("item_type", AttributeValue::S("Slot".into()))
            .item("slot_id", AttributeValue::S("s1".into()))
            .item("capacity", AttributeValue::N("1".into()))
            .item("reserved", AttributeValue::N("1".into()))
            .item("available", AttributeValue::N("0".into()))
            .build()
    })
}

async fn post_reservation(app: &App<DynamoReservationStore, InMemoryReadModel>) -> (u16, Value) {
    let request = Request::builder()
        .method("POST")
        .uri("/reservations")
        .header("content-type", "application/json")
        .body(Body::Text(r#"{"slot_id":"s1","guest_id":"ada","seats":1}"#.into()))
        .unwrap();
    let response = api::handle(app, request).await;
    let Body::Text(text) = response.body() else {
        panic!("text body")
    };
    (response.status().as_u16(), serde_json::from_str(text).unwrap())
}

#[tokio::test]
async fn a_failed_inventory_condition_is_409_sold_out() {
    let old_slot = HashMap::from([("pk".to_string(), AttributeValue::S("SLOT#s1".into()))]);
    let reasons = vec![
        CancellationReason::builder()
            .code("ConditionalCheckFailed")
            .set_item(Some(old_slot))
            .build(),
        CancellationReason::builder().code("None").build(),
        CancellationReason::builder().code("None").build(),
    ];
    let rule = mock!(Client::transact_write_items).then_error(move || {
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .set_cancellation_reasons(Some(reasons.clone()))
                .build(),
        )
    });
    let (status, body) = post_reservation(&app(&[&slot_read(), &rule])).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("sold_out")));
}

#[tokio::test]
async fn throttling_is_503_with_retry_after() {
    let rule = mock!(Client::get_item).then_error(|| {
        GetItemError::ProvisionedThroughputExceededException(
            ProvisionedThroughputExceededException::builder()
                .meta(
                    ErrorMetadata::builder()
                        .code("ProvisionedThroughputExceededException")
                        .build(),
                )
                .build(),
        )
    });
    let request = Request::builder().uri("/slots/s1").body(Body::Empty).unwrap();
    let response = api::handle(&app(&[&rule]), request).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let Body::Text(text) = response.body() else {
        panic!("text body")
    };
    assert_eq!(serde_json::from_str::<Value>(text).unwrap()["code"], "throttled");
}

#[tokio::test]
async fn an_unknown_error_is_500_with_the_request_id_and_no_internals() {
    let rule = mock!(Client::transact_write_items).then_error(|| {
        TransactWriteItemsError::generic(
            ErrorMetadata::builder()
                .code("AccessDeniedException")
                .message("not allowed on arn:aws:...")
                .build(),
        )
    });
    let request = Request::builder()
        .method("POST")
        .uri("/reservations")
        .header("content-type", "application/json")
        .header("x-request-id", "req-42")
        .body(Body::Text(r#"{"slot_id":"s1","guest_id":"ada","seats":1}"#.into()))
        .unwrap();
    let response = api::handle(&app(&[&slot_read(), &rule]), request).await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let Body::Text(text) = response.body() else {
        panic!("text body")
    };
    let body: Value = serde_json::from_str(text).unwrap();
    assert_eq!(body["code"], "internal_error");
    assert_eq!(body["request_id"], "req-42");
    assert!(!text.contains("arn:aws"), "internals stay in the logs: {text}");
}
