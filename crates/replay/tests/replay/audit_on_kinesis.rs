//! The audit on the real engines (DynamoDB Local, kinesis-mock), library and CLI: a pipeline that
//! ran reports nothing missing, events the relay never published are reported per reservation
//! with exit 1, and a relay that ran twice shows up as duplicates, not as a failure. The CLI's
//! exit status: 2 for a bad argument, 1 for a failure while running, each with one line.

use crate::common::audit_everything;
use std::collections::BTreeSet;
use test_support::stack::TestStack;

/// `count` reservations of 3 guests, every third cancelled, relayed and consumed by both
/// consumers. Returns the reservation ids.
async fn pipeline(stack: &TestStack, api: &test_support::stack::TestApi, count: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    api.put_slot(&http, "s", 1000).await;
    let mut ids = Vec::new();
    for i in 0..count {
        let id = api.reserve(&http, "s", &format!("guest-{}", i % 3)).await;
        if i % 3 == 0 {
            api.cancel(&http, &id).await;
        }
        ids.push(id);
    }
    stack.relay_mapping().await.drain().await.unwrap();
    stack.projector_mapping().await.drain().await.unwrap();
    stack.notifier_mapping().await.drain().await.unwrap();
    ids
}

#[tokio::test]
async fn after_the_pipeline_ran_the_audit_finds_nothing_missing_and_a_second_relay_run_shows_as_duplicates() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    pipeline(&stack, &api, 9).await;

    let report = audit_everything(&stack).await;
    assert!(report.nothing_missing(), "{:?}", report.lines());
    assert_eq!((report.committed, report.reservations, report.on_stream), (12, 9, 12));
    assert!(report.duplicated.is_empty() && report.misordered.is_empty());

    // A relay re-reading the outbox stream from the start publishes everything again.
    stack.relay_mapping().await.drain().await.unwrap();
    let report = audit_everything(&stack).await;
    assert!(report.nothing_missing());
    assert_eq!(report.duplicated.len(), 12);
    assert!(report.misordered.is_empty(), "a repeated run is not disorder");
}

#[tokio::test]
async fn events_never_published_are_reported_per_reservation_and_the_cli_exits_1() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    pipeline(&stack, &api, 3).await;
    // The relay is "down" for these two.
    let http = reqwest::Client::new();
    let late = api.reserve(&http, "s", "guest-late").await;
    api.cancel(&http, &pipeline_first(&stack).await).await;

    let report = audit_everything(&stack).await;
    assert!(!report.nothing_missing());
    let missing: BTreeSet<(String, u64)> = report.missing_on_stream.iter().cloned().collect();
    assert!(missing.contains(&(late.clone(), 1)), "{:?}", report.lines());
    assert_eq!(missing.len(), 2, "{:?}", report.lines());
    // Both consumers are behind on both reservations.
    assert_eq!(report.consumers_behind.len(), 4, "{:?}", report.consumers_behind);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reservations-replay"))
        .arg("audit")
        .args(["--stream", &stack.name("EVENTS_STREAM")])
        .env("OUTBOX_TABLE", stack.name("OUTBOX_TABLE"))
        .env("READ_MODEL_TABLE", stack.name("READ_MODEL_TABLE"))
        .env("NOTIFICATIONS_TABLE", stack.name("NOTIFICATIONS_TABLE"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains(&format!("{late} v1: committed, not on the stream")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{late} v1: projector applied nothing")),
        "{stdout}"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("missing on the stream 2"), "{stderr}");

    // Once relayed and consumed, the same audit passes.
    stack.relay_mapping().await.drain().await.unwrap();
    stack.projector_mapping().await.drain().await.unwrap();
    stack.notifier_mapping().await.drain().await.unwrap();
    let report = audit_everything(&stack).await;
    assert!(report.nothing_missing(), "{:?}", report.lines());
}

#[tokio::test]
async fn the_cli_refuses_a_range_that_is_not_times_with_exit_2() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reservations-replay"))
        .args(["audit", "--from", "latest"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("audit --from takes an RFC 3339 time"), "{stderr}");
}

#[tokio::test]
async fn the_cli_that_fails_while_reading_the_stream_says_why_in_one_line_and_exits_1() {
    let stack = TestStack::start().await;
    let gone = format!("{}-deleted", stack.name("EVENTS_STREAM"));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reservations-replay"))
        .args(["audit", "--stream", &gone])
        .env("OUTBOX_TABLE", stack.name("OUTBOX_TABLE"))
        .env("READ_MODEL_TABLE", stack.name("READ_MODEL_TABLE"))
        .env("NOTIFICATIONS_TABLE", stack.name("NOTIFICATIONS_TABLE"))
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&format!("on stream {gone} failed")), "{stderr}");
}

/// The first reservation the pipeline made that is still confirmed (not every third one).
async fn pipeline_first(stack: &TestStack) -> String {
    let items = stack.scan_all(&stack.name("READ_MODEL_TABLE")).await;
    items
        .iter()
        .find(|item| item["status"].as_s().is_ok_and(|s| s == "CONFIRMED"))
        .map(|item| item["reservation_id"].as_s().unwrap().clone())
        .expect("a confirmed reservation")
}
