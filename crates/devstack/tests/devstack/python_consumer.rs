//! The published contract is enough: `examples/python-consumer`, written from docs/events.md and
//! `schemas/` alone (boto3, confluent-kafka, jsonschema), reads the Kinesis stream across a
//! reshard, or the Kafka topic in a consumer group, and ends with the same state as the
//! projector's read model. `scripts/test.sh` installs its venv and sets PYTHON_CONSUMER.

use serde_json::Value;
use std::collections::BTreeMap;
use test_support::kafka::TestTopic;
use test_support::stack::TestStack;

type States = BTreeMap<String, (String, String, u64)>;

/// Runs the example consumer with `args`; its summary, after checking it exited 0.
fn run_python_consumer(args: &[&str]) -> Value {
    let python = std::env::var("PYTHON_CONSUMER").expect(
        "PYTHON_CONSUMER is not set: run scripts/test.sh, which installs the example consumer's venv and points to it",
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Nothing else needs this runtime meanwhile: the relay and projector are drained.
    let output = std::process::Command::new(python)
        .arg(root.join("examples/python-consumer/consumer.py"))
        .args(args)
        .output()
        .expect("the python consumer runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// reservation id → (guest, status, version) as the consumer's summary has them.
fn consumer_states(summary: &Value) -> States {
    summary["reservations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, r)| {
            let text = |f: &str| r[f].as_str().unwrap().to_owned();
            (
                id.clone(),
                (text("guest_id"), text("status"), r["version"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// The same, from the projector's read model.
async fn read_model_states(stack: &TestStack) -> States {
    stack
        .scan_all(&stack.name("READ_MODEL_TABLE"))
        .await
        .into_iter()
        .map(|item| {
            let text = |f: &str| item[f].as_s().unwrap().clone();
            let version = item["version"].as_n().unwrap().parse().unwrap();
            (text("reservation_id"), (text("guest_id"), text("status"), version))
        })
        .collect()
}

#[tokio::test]
async fn the_python_consumer_built_from_the_contract_ends_where_the_read_model_is() {
    let stack = TestStack::start().await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s", 1000).await;
    let mut relay = stack.relay_mapping().await;
    let mut ids = Vec::new();
    for i in 0..24 {
        ids.push(api.reserve(&http, "s", &format!("guest-{}", i % 5)).await);
        if i == 11 {
            // Half the creations in the parent shards, the rest and the cancels in the children.
            relay.drain().await.unwrap();
            stack.reshard(4).await;
        }
    }
    for id in ids.iter().step_by(3) {
        api.cancel(&http, id).await;
    }
    relay.drain().await.unwrap();
    stack.projector_mapping().await.drain().await.unwrap();

    let summary = run_python_consumer(&["--stream", &stack.name("EVENTS_STREAM")]);
    assert_eq!(summary["invalid"], serde_json::json!([]));
    assert_eq!(summary["gaps"], 0);
    assert_eq!(summary["applied"], 32, "24 creations and 8 cancels");
    assert!(
        summary["shards"].as_u64().unwrap() > 2,
        "read across the reshard: {summary}"
    );
    let consumer = consumer_states(&summary);
    assert_eq!(consumer.len(), 24);
    assert_eq!(consumer, read_model_states(&stack).await);
}

#[tokio::test]
async fn the_python_consumer_reads_the_kafka_topic_in_a_group_and_ends_where_the_read_model_is() {
    let stack = TestStack::start().await;
    let topic = TestTopic::create(3).await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    let (created, cancelled) = api.reserve_and_cancel_every_third(&http, "s", 24).await;
    stack.relay_mapping_to_kafka(&topic).await.drain().await.unwrap();
    stack
        .consumer_mapping_on_kafka(&topic, consumers::Projector::new(stack.read_model()))
        .await
        .drain()
        .await
        .unwrap();

    let bootstrap = topic.config.bootstrap_servers.join(",");
    // A group of its own, as the topic is: a group's members outlive one test run on the broker.
    let group = format!("{}-python-consumer", topic.config.topic);
    let args = [
        "--kafka",
        &bootstrap,
        "--topic",
        &topic.config.topic,
        "--group",
        &group,
        "--idle-seconds",
        "3",
    ];
    let summary = run_python_consumer(&args);
    assert_eq!(summary["invalid"], serde_json::json!([]));
    assert_eq!(summary["gaps"], 0);
    assert_eq!(summary["records"], 32);
    assert_eq!(summary["applied"], created.len() + cancelled.len());
    assert_eq!(consumer_states(&summary).len(), created.len());
    assert_eq!(consumer_states(&summary), read_model_states(&stack).await);

    // The group committed what it applied: the same group, run again, has nothing left to read.
    let again = run_python_consumer(&args);
    assert_eq!(again["records"], 0, "{again}");
}
