//! The deployed shape of the product, end to end, on LocalStack: template.yaml as
//! `scripts/deploy-localstack.sh` deployed it (the REST API, no auth), with LocalStack's own event
//! source mappings running the deployed relay, projector and notifier; and the same in polling
//! mode, where LocalStack's EventBridge schedule runs the deployed poller.

mod dashboard;
mod ledger;
mod mappings;

use e2e::{DeployedStack, eventually};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long LocalStack's mappings may take to carry an event through (they poll every second or
/// so, and a function's first invocation starts its process).
pub(crate) const PIPELINE_WAIT: Duration = Duration::from_secs(120);

/// Each reservation's versions in the order they first appear on the stream, checking that every
/// record is an envelope keyed by its reservation.
fn first_appearances(events: &[devstack::events::ReadEvent]) -> BTreeMap<String, Vec<u64>> {
    test_support::stack::versions_by_reservation(events)
        .into_iter()
        .map(|(id, versions)| {
            let mut first = Vec::new();
            for (version, _) in versions {
                if !first.contains(&version) {
                    first.push(version);
                }
            }
            (id, first)
        })
        .collect()
}

/// The stack with the stream relay (RelayMode stream, the default).
const STREAM_STACK: &str = "E2E_STACK_OUTPUTS";
/// The stack with the polling publisher (RelayMode polling).
const POLLING_STACK: &str = "E2E_POLLING_STACK_OUTPUTS";

#[tokio::test]
async fn with_the_stream_relay_reservations_and_cancels_reach_kinesis_in_order_and_both_consumers_apply_each_once() {
    carries_every_event_in_order_to_both_consumers(&DeployedStack::from_env(STREAM_STACK).await).await;
}

#[tokio::test]
async fn with_the_polling_publisher_reservations_and_cancels_reach_kinesis_in_order_and_both_consumers_apply_each_once()
{
    carries_every_event_in_order_to_both_consumers(&DeployedStack::from_env(POLLING_STACK).await).await;
}

async fn carries_every_event_in_order_to_both_consumers(stack: &DeployedStack) {
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let guests: Vec<String> = (0..4).map(|g| format!("e2e-{run}-guest-{g}")).collect();
    for slot in 0..2 {
        let (status, body) = stack
            .call(
                Method::PUT,
                &format!("/slots/e2e-{run}-{slot}"),
                Some(json!({ "capacity": 100 })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // 24 reservations over 4 guests and 2 slots; every third cancelled.
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut by_guest: BTreeMap<String, BTreeMap<String, (String, u64)>> = BTreeMap::new();
    for i in 0..24 {
        let guest = &guests[i % guests.len()];
        let reservation = json!({ "slot_id": format!("e2e-{run}-{}", i % 2), "guest_id": guest, "seats": 1 });
        let (status, body) = stack.call(Method::POST, "/reservations", Some(reservation)).await;
        assert_eq!(status, 201, "{body}");
        let id = body["reservation_id"].as_str().expect("reservation_id").to_owned();
        let mut latest = ("CONFIRMED".to_owned(), 1);
        if i % 3 == 0 {
            let (status, body) = stack
                .call(Method::POST, &format!("/reservations/{id}/cancel"), None)
                .await;
            assert_eq!((status, body["version"].as_u64()), (200, Some(2)), "{body}");
            latest = ("CANCELLED".to_owned(), 2);
        }
        expected.insert(id.clone(), (1..=latest.1).collect());
        by_guest.entry(guest.clone()).or_default().insert(id, latest);
    }

    // The deployed relay (through LocalStack's DynamoDB Streams mapping) or poller (through its
    // schedule) put every event on Kinesis under its reservation id, each reservation's versions
    // in order.
    eventually(
        "every event on Kinesis, in order per reservation",
        PIPELINE_WAIT,
        async || {
            let on_stream = first_appearances(&stack.events_on_kinesis().await);
            let ours: BTreeMap<String, Vec<u64>> = on_stream
                .into_iter()
                .filter(|(id, _)| expected.contains_key(id))
                .collect();
            if ours == expected { Ok(()) } else { Err(ours) }
        },
    )
    .await;

    // Every record the deployed relay or poller wrote keeps the published event contract.
    let records = stack.events_on_kinesis().await;
    test_support::contract::assert_events_keep_the_contract(records.iter().map(|e| e.data.as_slice()));

    // The deployed projector, through LocalStack's Kinesis mapping, built each guest's read model.
    for (guest, reservations) in &by_guest {
        eventually(&format!("{guest}'s read model"), PIPELINE_WAIT, async || {
            let (status, body) = stack
                .call(Method::GET, &format!("/guests/{guest}/reservations?limit=100"), None)
                .await;
            let listed: BTreeMap<String, (String, u64)> = body["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| {
                    let id = item["reservation_id"].as_str().unwrap_or_default().to_owned();
                    let status = item["status"].as_str().unwrap_or_default().to_owned();
                    (id, (status, item["version"].as_u64().unwrap_or_default()))
                })
                .collect();
            if status == 200 && &listed == reservations {
                Ok(())
            } else {
                Err((status, listed))
            }
        })
        .await;
    }

    // The deployed notifier recorded exactly one notification per event, and its progress per
    // reservation is at the reservation's latest version.
    let events: usize = expected.values().map(Vec::len).sum();
    let table = stack.output("NotificationsTableName").to_owned();
    eventually("one notification per event", PIPELINE_WAIT, async || {
        let mut sent: BTreeMap<(String, u64), usize> = BTreeMap::new();
        let mut progress: BTreeMap<String, u64> = BTreeMap::new();
        let mut start = None;
        loop {
            let page = stack
                .dynamodb
                .scan()
                .table_name(&table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan the notifications");
            for item in page.items() {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                let number = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok());
                match text("item_type").as_str() {
                    "Notification" if expected.contains_key(&text("reservation_id")) => {
                        *sent
                            .entry((text("reservation_id"), number("version").unwrap_or(0)))
                            .or_default() += 1;
                    }
                    _ => {
                        let id = text("pk").trim_start_matches("PROGRESS#").to_owned();
                        if expected.contains_key(&id) {
                            progress.insert(id, number("version").unwrap_or(0));
                        }
                    }
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        let latest: BTreeMap<String, u64> = expected
            .iter()
            .map(|(id, v)| (id.clone(), *v.last().unwrap()))
            .collect();
        let complete = sent.len() == events && sent.values().all(|n| *n == 1) && progress == latest;
        if complete {
            Ok(())
        } else {
            Err((sent.len(), sent.values().filter(|n| **n > 1).count(), progress.len()))
        }
    })
    .await;

    // And published: the subscribed queue received one message per event from the deployed
    // topic, each reservation's in version order, each carrying its filterable attributes.
    let queue_url = stack.output("NotificationsSubscriberQueueUrl").to_owned();
    let received = std::sync::Mutex::new(BTreeMap::<String, Vec<u64>>::new());
    eventually(
        "one message per event on the subscribed queue",
        PIPELINE_WAIT,
        async || {
            let batch = devstack::channel::receive_batch(&stack.sqs, &queue_url)
                .await
                .expect("receive from the subscriber queue");
            let mut received = received.lock().unwrap();
            for message in batch {
                assert_eq!(
                    message.message_group_id.as_deref(),
                    Some(message.message.reservation_id.as_str())
                );
                assert_eq!(message.kind_attribute.as_deref(), Some(message.message.kind.as_str()));
                if expected.contains_key(&message.message.reservation_id) {
                    received
                        .entry(message.message.reservation_id)
                        .or_default()
                        .push(message.message.version);
                }
            }
            if *received == expected {
                Ok(())
            } else {
                Err(received.values().map(Vec::len).sum::<usize>())
            }
        },
    )
    .await;

    // The audit, against LocalStack: every committed event is on the stream and applied by both
    // consumers.
    let replay = e2e::replay_cli();
    let audit = eventually("an audit with nothing missing", PIPELINE_WAIT, async || {
        let output = std::process::Command::new(&replay)
            .args(["audit", "--stream", stack.output("EventsStreamName")])
            .env("OUTBOX_TABLE", stack.output("OutboxTableName"))
            .env("READ_MODEL_TABLE", stack.output("ReadModelTableName"))
            .env("NOTIFICATIONS_TABLE", stack.output("NotificationsTableName"))
            .output()
            .expect("reservations-replay runs");
        let report = String::from_utf8_lossy(&output.stderr).into_owned();
        if output.status.code() == Some(0) {
            Ok(report)
        } else {
            Err(report)
        }
    })
    .await;
    // The audit's summary names more counts between these two since it names replaced versions.
    assert!(
        audit.contains("missing on the stream 0,") && audit.contains("consumers behind 0,"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_poison_outbox_item_reaches_the_relay_dead_letter_queue_whole_with_its_reason() {
    let stack = DeployedStack::from_env(STREAM_STACK).await;
    let (id, letter) = poison_letter(&stack, adapters::RelayMode::Stream).await;
    assert_eq!(letter.function, "relay");
    assert!(
        letter.reason.contains("not a valid event envelope"),
        "{}",
        letter.reason
    );
    // Whole: the stream record as the relay received it, with the item's every attribute.
    let image = &letter.record["dynamodb"]["NewImage"];
    assert_eq!(image["event_type"]["S"], "ReservationTeleported");
    assert_eq!(image["item_type"]["S"], "OutboxEvent");
    assert!(
        image["payload"]["M"].is_object() && image["expires_at"]["N"].is_string(),
        "{image}"
    );
    assert_eq!(letter.record["eventName"], "INSERT");
    assert!(letter.sequence_number.is_some() && letter.event_source_arn.is_some());
    assert!(stack.events_on_kinesis().await.iter().all(|e| e.partition_key != id));
}

#[tokio::test]
async fn a_poison_outbox_item_reaches_the_dead_letter_queue_from_the_poller_whole_with_its_reason() {
    let stack = DeployedStack::from_env(POLLING_STACK).await;
    let (id, letter) = poison_letter(&stack, adapters::RelayMode::Polling).await;
    assert_eq!(letter.function, "poller");
    assert!(
        letter.reason.contains("not a valid event envelope"),
        "{}",
        letter.reason
    );
    // Whole: the item as the poller read it from the table.
    assert_eq!(letter.record["aggregate_id"], id.as_str());
    assert_eq!(letter.record["item"]["event_type"], "ReservationTeleported");
    assert!(letter.record["item"]["payload"].is_object(), "{}", letter.record);
    assert!(stack.events_on_kinesis().await.iter().all(|e| e.partition_key != id));
}

/// Puts an outbox item that is not a valid envelope (marked for the poller in polling mode) and
/// waits for its dead letter in the queue the template gives the relay and the poller.
async fn poison_letter(stack: &DeployedStack, mode: adapters::RelayMode) -> (String, dead_letters::DeadLetter) {
    let id = format!("poison-{}", ulid::Ulid::new());
    let mut item = test_support::events::outbox_item(&test_support::events::envelope(&id, 1), mode);
    let s = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.into());
    item.insert("event_type".into(), s("ReservationTeleported"));
    // The poller reads its index in event id order: a fresh ULID, as the API would write.
    item.insert("event_id".into(), s(&ulid::Ulid::new().to_string()));
    stack
        .dynamodb
        .put_item()
        .table_name(stack.output("OutboxTableName"))
        .set_item(Some(item))
        .send()
        .await
        .expect("put the poison outbox item");

    let queue = stack.output("RelayDeadLetterQueueUrl").to_owned();
    let key_of = |letter: &dead_letters::DeadLetter| {
        let from_stream = letter.record["dynamodb"]["Keys"]["aggregate_id"]["S"].as_str();
        from_stream
            .or(letter.record["aggregate_id"].as_str())
            .map(str::to_owned)
    };
    let letter = eventually("the poison item in the dead-letter queue", PIPELINE_WAIT, async || {
        let answer = stack
            .sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            // Looked at, not taken: what is not ours is visible again at once.
            .visibility_timeout(0)
            .send()
            .await
            .expect("receive from the dead-letter queue");
        let letters: Vec<dead_letters::DeadLetter> = answer
            .messages()
            .iter()
            .filter_map(|m| serde_json::from_str(m.body().unwrap_or_default()).ok())
            .collect();
        let ours = letters
            .iter()
            .find(|l| key_of(l).as_deref() == Some(id.as_str()))
            .cloned();
        ours.ok_or(letters.len())
    })
    .await;
    (id, letter)
}

/// The front door LocalStack community serves, API Gateway's REST API: what the function refuses
/// comes back through the gateway as problem+json, as openapi.yaml documents it. (LocalStack
/// community passes no signer and checks no signature, so the stack runs AuthMode NONE there; an
/// unsigned request under AuthMode IAM is `api::rest_api_events`' case.)
#[tokio::test]
async fn the_rest_api_answers_unknown_wrong_method_and_oversized_requests_with_problem_json() {
    let stack = DeployedStack::from_env(STREAM_STACK).await;
    assert!(stack.api_url.contains("/_aws/execute-api/"), "{}", stack.api_url);
    let oversized = json!({ "slot_id": "s".repeat(20_000), "guest_id": "g", "seats": 1 }).to_string();
    let refused = [
        (Method::GET, "/nope", None, 404, "not_found"),
        (Method::DELETE, "/slots/anything", None, 405, "method_not_allowed"),
        (Method::POST, "/reservations", Some(oversized), 413, "payload_too_large"),
    ];
    for (method, path, body, status, code) in refused {
        let answer = stack.send(method.clone(), path, body).await;
        assert_eq!(
            (
                answer.status,
                answer.content_type.as_str(),
                answer.body["code"].as_str()
            ),
            (status, "application/problem+json", Some(code)),
            "{method} {path}: {answer:?}"
        );
    }
}
