//! The re-drive command on the real engines: dead letters whose cause is gone go back to their
//! function (a consumer applies its record, the relay publishes its stream record) and leave the
//! file; one still malformed stays with its reason; Lambda's on-failure records stay, with the
//! replay command that re-drives their range. The same from an SQS dead-letter queue (moto).

use serde_json::{Value, json};
use test_support::events::{envelope_json, fixtures, kinesis_record};
use test_support::stack::TestStack;

fn letter(function: &str, reason: &str, record: Value) -> String {
    json!({
        "function": function, "reason": reason, "event_source_arn": null, "event_id": null,
        "sequence_number": null, "record": record, "dead_lettered_at": "2026-11-24T10:00:00Z"
    })
    .to_string()
}

/// Runs `reservations-replay redrive` with `source` (the file or queue) against the test stack,
/// its notifier publishing to `topic_arn`.
fn redrive(stack: &TestStack, topic_arn: &str, source: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_reservations-replay"))
        .arg("redrive")
        .args(source)
        .args(["--stream", &stack.name("EVENTS_STREAM")])
        .env("READ_MODEL_TABLE", stack.name("READ_MODEL_TABLE"))
        .env("NOTIFICATIONS_TABLE", stack.name("NOTIFICATIONS_TABLE"))
        .env("NOTIFICATIONS_TOPIC_ARN", topic_arn)
        .output()
        .unwrap()
}

#[tokio::test]
async fn fixed_letters_go_back_to_their_function_and_leave_the_file_the_rest_stays() {
    let stack = TestStack::start().await;
    let envelope = envelope_json("R-fixed", 1);
    let stream_record: Value = serde_json::from_str::<Value>(fixtures::OUTBOX_INSERT).unwrap()["Records"][0].clone();
    let published_id = stream_record["dynamodb"]["NewImage"]["aggregate_id"]["S"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_failure = json!({
        "requestContext": { "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11 },
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000001", "startSequenceNumber": "100", "endSequenceNumber": "200",
            "batchSize": 3, "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/reservation-events"
        }
    });
    let file = stack.dead_letter_dir().join("to-redrive.jsonl");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let lines = [
        letter(
            "projector",
            "an older projector did not know this event",
            kinesis_record(1, "R-fixed", &serde_json::to_vec(&envelope).unwrap()),
        ),
        letter(
            "projector",
            "data is not an event envelope",
            kinesis_record(1, "R-bad", b"garbage"),
        ),
        letter("relay", "the stream's view type was wrong", stream_record),
        on_failure.to_string(),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let topic_arn = stack.channel().await.topic_arn.clone();
    let run = || redrive(&stack, &topic_arn, &["--dead-letters", file.to_str().unwrap()]);
    let output = run();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("redrive done: 2 re-driven, 1 still failing"),
        "{stderr}"
    );
    assert!(
        stdout.contains("still failing (projector): data is not an event envelope"),
        "{stdout}"
    );
    assert!(
        stdout.contains("--stream reservation-events --shard shardId-000000000001 --from 100 --to 200"),
        "{stdout}"
    );

    // The fixed letters took effect.
    let read_model = stack.scan_all(&stack.name("READ_MODEL_TABLE")).await;
    assert_eq!(read_model.len(), 1);
    assert_eq!(read_model[0]["reservation_id"].as_s().unwrap(), "R-fixed");
    let events = stack.events_on_kinesis().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].partition_key, published_id);

    // Only the still-failing letter and the on-failure record are left; a second run re-drives
    // nothing twice.
    let left = std::fs::read_to_string(&file).unwrap();
    assert_eq!(left.lines().count(), 2, "{left}");
    assert!(left.contains("R-bad") && left.contains("KinesisBatchInfo"));
    let again = run();
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8(again.stderr)
            .unwrap()
            .contains("0 re-driven, 1 still failing")
    );
    assert_eq!(stack.events_on_kinesis().await.len(), 1);
}

#[tokio::test]
async fn a_notifier_letter_without_the_topic_stays_with_what_to_set_and_the_run_fails() {
    let stack = TestStack::start().await;
    let file = stack.dead_letter_dir().join("notifier-letters.jsonl");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let envelope = envelope_json("R-notify", 1);
    let record = kinesis_record(1, "R-notify", &serde_json::to_vec(&envelope).unwrap());
    std::fs::write(&file, letter("notifier", "the topic was gone", record) + "\n").unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reservations-replay"))
        .args(["redrive", "--dead-letters", file.to_str().unwrap()])
        .args(["--stream", &stack.name("EVENTS_STREAM")])
        .env("NOTIFICATIONS_TABLE", stack.name("NOTIFICATIONS_TABLE"))
        .env_remove("NOTIFICATIONS_TOPIC_ARN")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("still failing (notifier): NOTIFICATIONS_TOPIC_ARN is not set"),
        "{stdout}"
    );
    // The letter stays, whole, with what to set as its reason; nothing was notified.
    let left: Value = serde_json::from_str(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
    assert_eq!(left["record"]["kinesis"]["partitionKey"], "R-notify");
    assert!(
        left["reason"].as_str().unwrap().contains("NotificationsTopicArn"),
        "{left}"
    );
    assert!(stack.scan_all(&stack.name("NOTIFICATIONS_TABLE")).await.is_empty());
}

/// Every message body left in a queue (received with a short visibility, so nothing is changed).
async fn bodies_in(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    loop {
        let answer = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let messages = answer.messages.unwrap_or_default();
        if messages.is_empty() {
            return bodies;
        }
        bodies.extend(messages.into_iter().map(|m| m.body.unwrap()));
    }
}

#[tokio::test]
async fn letters_in_an_sqs_queue_are_redriven_the_fixed_deleted_the_failing_replaced_the_rest_left() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_SQS").is_ok_and(|v| !v.is_empty()),
        "AWS_ENDPOINT_URL_SQS is not set: run scripts/test.sh, which starts moto for SQS"
    );
    let stack = TestStack::start().await;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{}-dead-letters", stack.name("EVENTS_STREAM")))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let envelope = envelope_json("R-queued", 1);
    let on_failure = json!({
        "requestContext": { "condition": "RetryAttemptsExhausted" },
        "KinesisBatchInfo": {
            "shardId": "shardId-000000000002", "startSequenceNumber": "7", "endSequenceNumber": "9",
            "streamArn": "arn:aws:kinesis:us-east-1:123456789012:stream/reservation-events"
        }
    })
    .to_string();
    let bodies = [
        letter(
            "projector",
            "an older projector did not know this event",
            kinesis_record(1, "R-queued", &serde_json::to_vec(&envelope).unwrap()),
        ),
        letter(
            "notifier",
            "was garbage then",
            kinesis_record(1, "R-bad", b"still garbage"),
        ),
        on_failure.clone(),
        "not json at all".to_owned(),
    ];
    for body in &bodies {
        sqs.send_message()
            .queue_url(&queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    let output = redrive(&stack, &stack.channel().await.topic_arn, &["--queue", &queue_url]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("redrive done: 1 re-driven, 1 still failing"),
        "{stderr}"
    );
    assert!(
        stdout.contains("--shard shardId-000000000002 --from 7 --to 9"),
        "{stdout}"
    );

    let read_model = stack.scan_all(&stack.name("READ_MODEL_TABLE")).await;
    assert_eq!(read_model.len(), 1);
    assert_eq!(read_model[0]["reservation_id"].as_s().unwrap(), "R-queued");

    // Left at once (not after the hold): the replaced letter with its new reason, and the two
    // entries that are not letters, exactly as they were.
    let mut left = bodies_in(&sqs, &queue_url).await;
    left.sort();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(
        left.contains(&on_failure) && left.contains(&"not json at all".to_owned()),
        "{left:?}"
    );
    let replaced: Value = left
        .iter()
        .find_map(|b| {
            serde_json::from_str::<Value>(b)
                .ok()
                .filter(|v| v["function"] == "notifier")
        })
        .unwrap();
    assert_ne!(replaced["reason"], "was garbage then");
    assert_eq!(replaced["record"]["kinesis"]["partitionKey"], "R-bad");
}

#[tokio::test]
async fn a_missing_file_is_one_readable_line_and_exit_2() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reservations-replay"))
        .args(["redrive", "--dead-letters", "/nonexistent/letters.jsonl"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot read /nonexistent/letters.jsonl"), "{stderr}");
}
