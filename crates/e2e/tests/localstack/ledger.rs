//! The booking ledger (`examples/booking-ledger`), deployed by its own script as a stack of its
//! own beside the product's, reading the events through LocalStack's mapping on the stream it
//! imports from the product's exports: reservations made and cancelled through the product's
//! REST API reach the ledger at their latest status and version, in order (a version ahead of a
//! missing one would wait in the ledger's dead-letter queue, which stays empty).

use e2e::{DeployedStack, eventually};
use reqwest::Method;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

/// The ledger stack's outputs (`examples/booking-ledger/deploy.sh`'s OUTPUTS_FILE).
fn ledger_outputs() -> HashMap<String, String> {
    let path = std::env::var("E2E_LEDGER_STACK_OUTPUTS").unwrap_or_else(|_| {
        panic!("E2E_LEDGER_STACK_OUTPUTS is not set: scripts/test.sh deploys the ledger's stack and sets it")
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&text).expect("the ledger stack's outputs");
    listed
        .iter()
        .map(|o| {
            let field = |name: &str| o[name].as_str().expect("an output's key and value").to_owned();
            (field("OutputKey"), field("OutputValue"))
        })
        .collect()
}

#[tokio::test]
async fn reservations_made_and_cancelled_through_the_api_reach_the_ledger_of_another_stack_at_their_latest_version() {
    let stack = DeployedStack::from_env("E2E_STACK_OUTPUTS").await;
    let ledger = ledger_outputs();
    let table = &ledger["LedgerTableName"];
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let slot = format!("ledger-{run}");
    let (status, body) = stack
        .call(Method::PUT, &format!("/slots/{slot}"), Some(json!({ "capacity": 50 })))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut expected: BTreeMap<String, (String, String)> = BTreeMap::new();
    for i in 0..6 {
        let reservation = json!({ "slot_id": slot, "guest_id": format!("ledger-{run}-{i}"), "seats": 2 });
        let (status, body) = stack.call(Method::POST, "/reservations", Some(reservation)).await;
        assert_eq!(status, 201, "{body}");
        let id = body["reservation_id"].as_str().expect("reservation_id").to_owned();
        let mut latest = ("CONFIRMED", "1");
        if i % 2 == 0 {
            let (status, body) = stack
                .call(Method::POST, &format!("/reservations/{id}/cancel"), None)
                .await;
            assert_eq!(status, 200, "{body}");
            latest = ("CANCELLED", "2");
        }
        expected.insert(id, (latest.0.to_owned(), latest.1.to_owned()));
    }

    eventually(
        "every reservation in the ledger at its latest version",
        crate::PIPELINE_WAIT,
        async || {
            let mut seen = BTreeMap::new();
            for id in expected.keys() {
                let item = stack
                    .dynamodb
                    .get_item()
                    .table_name(table)
                    .key("reservation_id", aws_sdk_dynamodb::types::AttributeValue::S(id.clone()))
                    .consistent_read(true)
                    .send()
                    .await
                    .expect("read the ledger")
                    .item;
                if let Some(item) = item {
                    let text = |name: &str| match item.get(name) {
                        Some(
                            aws_sdk_dynamodb::types::AttributeValue::S(s)
                            | aws_sdk_dynamodb::types::AttributeValue::N(s),
                        ) => s.clone(),
                        _ => String::new(),
                    };
                    assert_eq!(text("seats"), "2", "{id}");
                    assert_eq!(text("slot_id"), slot, "{id}");
                    seen.insert(id.clone(), (text("status"), text("version")));
                }
            }
            if seen == expected { Ok(()) } else { Err(seen) }
        },
    )
    .await;

    // Nothing was held back or given up on: no gap, no record the ledger could not apply.
    let dead = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&ledger["LedgerDeadLetterQueueUrl"])
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .expect("the ledger's dead-letter queue");
    let waiting = dead
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .cloned();
    assert_eq!(waiting.as_deref(), Some("0"));
}
