//! The model of DynamoDB's per-item limits (`test_support::item_limits`) held to what the
//! DynamoDB developer guide documents, through the real SDK in front of DynamoDB Local:
//! - "Amazon DynamoDB Transactions: how it works", *Transaction conflict handling*: a `PutItem`,
//!   `UpdateItem` or `DeleteItem` of an item conflicts with an ongoing `TransactWriteItems` that
//!   includes it and fails with `TransactionConflictException`; a `TransactWriteItems` with an
//!   item of another ongoing one is cancelled with `TransactionCanceledException`, whose
//!   cancellation reasons are per item, in request order (`TransactionConflict`, else `None`);
//!   plain reads are not refused.
//! - The same page, *Capacity management for transactions*: DynamoDB performs two writes of every
//!   item of a transaction (prepare, commit), so a transactional write of an item up to 1 KB
//!   costs 2 write units; the API reference of `TransactWriteItems` names `ThrottlingError` as
//!   the reason when an item's throughput is exceeded.
//! - "Best practices for designing and using partition keys effectively": a partition takes at
//!   most 1,000 write units a second (one write unit per second per started KB of the item);
//!   over it, a single write is refused with `ProvisionedThroughputExceededException`.
//!
//! And what the store and the API make of those answers: contention to retry, 429 when it lasts.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use std::time::Duration;
use test_support::item_limits::{ItemLimitsProxy, Limits};
use test_support::stack::TestStack;

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// A client through `proxy` that gives up at once: the model's answers reach the test as sent.
fn through(stack: &TestStack, proxy: &ItemLimitsProxy) -> Client {
    let config = aws_sdk_dynamodb::config::Builder::from(stack.sdk_config())
        .endpoint_url(proxy.url())
        .retry_config(RetryConfig::disabled())
        .build();
    Client::from_conf(config)
}

fn update(table: &str, pk: &str) -> TransactWriteItem {
    let update = Update::builder()
        .table_name(table)
        .key("pk", s(pk))
        .update_expression("ADD n :one")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .build()
        .unwrap();
    TransactWriteItem::builder().update(update).build()
}

fn put(table: &str, pk: &str, padding: usize) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .item("pk", s(pk))
        .item("padding", s(&"x".repeat(padding)))
        .build()
        .unwrap();
    TransactWriteItem::builder().put(put).build()
}

/// The cancellation reasons' codes of a cancelled transaction.
fn reasons(
    err: &aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
) -> Vec<String> {
    match err.as_service_error() {
        Some(
            aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(e),
        ) => e
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().unwrap_or("").to_owned())
            .collect(),
        _ => panic!("expected TransactionCanceledException, got {err:?}"),
    }
}

#[tokio::test]
async fn an_item_in_an_ongoing_transaction_refuses_other_writes_as_dynamodb_documents_and_reads_go_on() {
    let stack = TestStack::start().await;
    let table = stack.name("RESERVATIONS_TABLE");
    let proxy = stack
        .item_limits(Limits {
            write_units_per_second: 1_000.0,
            hold: Duration::from_millis(600),
        })
        .await;
    let client = through(&stack, &proxy);

    client
        .transact_write_items()
        .transact_items(update(&table, "hot"))
        .transact_items(put(&table, "other", 10))
        .send()
        .await
        .expect("the first transaction commits");
    // Within the hold: the hot item is still part of that transaction.
    let cancelled = client
        .transact_write_items()
        .transact_items(put(&table, "third", 10))
        .transact_items(update(&table, "hot"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        reasons(&cancelled),
        ["None", "TransactionConflict"],
        "one reason per item, in request order"
    );
    let single = client
        .update_item()
        .table_name(&table)
        .key("pk", s("hot"))
        .update_expression("ADD n :one")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap_err();
    assert_eq!(single.code(), Some("TransactionConflictException"));
    let read = client
        .get_item()
        .table_name(&table)
        .key("pk", s("hot"))
        .consistent_read(true)
        .send()
        .await
        .expect("a read is not refused");
    assert_eq!(
        read.item.unwrap()["n"],
        AttributeValue::N("1".into()),
        "the last committed value"
    );

    tokio::time::sleep(Duration::from_millis(800)).await;
    client
        .transact_write_items()
        .transact_items(update(&table, "hot"))
        .send()
        .await
        .expect("once the transaction is over, the item takes writes again");
    let counts = proxy.counts();
    assert_eq!(
        (counts.transaction_conflicts, counts.write_conflicts),
        (1, 1),
        "{counts:?}"
    );
}

#[tokio::test]
async fn an_item_over_its_write_units_is_throttled_as_dynamodb_documents_two_units_per_kb_in_a_transaction() {
    let stack = TestStack::start().await;
    let table = stack.name("RESERVATIONS_TABLE");
    let proxy = stack
        .item_limits(Limits {
            write_units_per_second: 6.0,
            hold: Duration::ZERO,
        })
        .await;
    let client = through(&stack, &proxy);

    // 6 units a second: three transactional writes of a small item (2 units each), then none.
    for _ in 0..3 {
        client
            .transact_write_items()
            .transact_items(update(&table, "busy"))
            .send()
            .await
            .expect("within the item's write units");
    }
    let throttled = client
        .transact_write_items()
        .transact_items(put(&table, "calm", 10))
        .transact_items(update(&table, "busy"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(reasons(&throttled), ["None", "ThrottlingError"]);
    let single = client
        .put_item()
        .table_name(&table)
        .item("pk", s("busy"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(single.code(), Some("ProvisionedThroughputExceededException"));

    // One unit per started KB: a 2.5 KB item takes 3 units a write (6 in a transaction).
    client
        .put_item()
        .table_name(&table)
        .item("pk", s("large"))
        .item("padding", s(&"x".repeat(2_500)))
        .send()
        .await
        .expect("3 of the 6 units");
    client
        .put_item()
        .table_name(&table)
        .item("pk", s("large"))
        .item("padding", s(&"x".repeat(2_500)))
        .send()
        .await
        .expect("the other 3");
    let over = client
        .put_item()
        .table_name(&table)
        .item("pk", s("large"))
        .item("padding", s(&"x".repeat(2_500)))
        .send()
        .await
        .unwrap_err();
    assert_eq!(over.code(), Some("ProvisionedThroughputExceededException"));

    // The units come back at the item's rate: a second later it takes a write again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    client
        .transact_write_items()
        .transact_items(update(&table, "busy"))
        .send()
        .await
        .expect("refilled");
    let counts = proxy.counts();
    assert_eq!(
        (counts.transactions_throttled, counts.writes_throttled),
        (1, 2),
        "{counts:?}"
    );
}

/// What the product makes of the model's answers: bookings of one slot of one item, racing
/// through the model, lose races (the store says contention, the service retries with backoff
/// within its budget) and never answer 409 for it; the slot sells exactly its seats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_model_racing_bookings_of_one_item_are_retried_never_a_409_and_never_oversold() {
    let (stack, proxy) = TestStack::start()
        .await
        .with_item_limits(Limits {
            write_units_per_second: 1_000.0,
            hold: Duration::from_millis(20),
        })
        .await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "hot", 20).await;
    let requests = (0..40).map(|i| {
        let (http, url) = (http.clone(), api.url("/reservations"));
        async move {
            let response = http
                .post(url)
                .json(&serde_json::json!({ "slot_id": "hot", "guest_id": format!("g{i}"), "seats": 1 }))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["code"].as_str().unwrap_or("").to_owned())
        }
    });
    let answers = futures::future::join_all(requests).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert!(created <= 20, "{answers:?}");
    for (status, code) in &answers {
        assert!(
            matches!(
                (*status, code.as_str()),
                (201, _) | (409, "sold_out") | (429, "contended")
            ),
            "{status} {code}"
        );
    }
    let slot = api.get_json(&http, "/slots/hot").await;
    assert_eq!(slot["reserved"].as_u64(), Some(created as u64));
    assert!(
        proxy.counts().transaction_conflicts > 0,
        "the racers met: {:?}",
        proxy.counts()
    );
}
