//! The same cases through LocalStack's event source mapping and through
//! crates/event-source-mapping (the embedded stack's), on the same Kinesis (LocalStack's), with
//! the same probe rule (crates/e2e/probe/bootstrap on LocalStack, [`Probe`] here): which records
//! each invocation got, and what reached the on-failure destination. Where the two differ, the
//! assertions say which one Lambda's documented behaviour agrees with; docs/deploy.md has the table.

use e2e::{DeployedStack, eventually};
use event_source_mapping::function::Function;
use event_source_mapping::{
    EventSourceMapping, FilterCriteria, FunctionError, KinesisSource, MappingConfig, MemoryOnFailure, StartingPosition,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// One comparison: records put before and after the mapping starts, the probe's rule and the
/// mapping's settings.
struct Case {
    name: &'static str,
    before: &'static [&'static str],
    after: &'static [&'static str],
    /// Records whose id contains this fail.
    mark: &'static str,
    /// Failing records are reported as batch item failures, or fail the whole invocation.
    error_mode: bool,
    latest: bool,
    report_batch_item_failures: bool,
    bisect: bool,
    maximum_retry_attempts: i32,
    filter: Option<Value>,
}

const BASE: Case = Case {
    name: "",
    before: &[],
    after: &[],
    mark: "",
    error_mode: false,
    latest: false,
    report_batch_item_failures: false,
    bisect: false,
    maximum_retry_attempts: -1,
    filter: None,
};

/// What a mapping did: the ids of each invocation's records, and the on-failure records.
#[derive(Debug)]
struct Outcome {
    invocations: Vec<Vec<String>>,
    on_failure: Vec<Value>,
    /// Sequence number of each record id, in the stream this run used.
    sequence: std::collections::HashMap<String, String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

async fn put(
    stack: &DeployedStack,
    stream: &str,
    ids: &[&str],
    sequence: &mut std::collections::HashMap<String, String>,
) {
    for id in ids {
        let kind = if id.contains("drop") { "drop" } else { "keep" };
        let data = json!({ "id": id, "kind": kind }).to_string();
        let put = stack
            .kinesis
            .put_record()
            .stream_name(stream)
            .partition_key("p")
            .data(aws_sdk_kinesis::primitives::Blob::new(data))
            .send()
            .await
            .expect("PutRecord");
        sequence.insert(id.to_string(), put.sequence_number().to_owned());
    }
}

async fn fresh_stream(stack: &DeployedStack, name: &str) -> String {
    stack
        .kinesis
        .create_stream()
        .stream_name(name)
        .shard_count(1)
        .send()
        .await
        .expect("CreateStream");
    eventually("an active stream", Duration::from_secs(30), async || {
        let summary = stack.kinesis.describe_stream_summary().stream_name(name).send().await;
        let description = summary.ok().and_then(|s| s.stream_description_summary);
        match description {
            Some(d) if d.stream_status() == &aws_sdk_kinesis::types::StreamStatus::Active => {
                Ok(d.stream_arn().to_owned())
            }
            other => Err(other.map(|d| d.stream_status().clone())),
        }
    })
    .await
}

/// The AWS CLI against LocalStack, for the Lambda calls (the tests need no Lambda SDK).
fn aws(args: &[&str]) -> Value {
    let output = std::process::Command::new(root().join(".venv-aws/bin/aws"))
        .args(args)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .args(["--output", "json"])
        .output()
        .expect("the AWS CLI runs (scripts/test.sh installs it into .venv-aws)");
    assert!(
        output.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or(Value::Null)
}

/// Waits until the probe's trace file has not changed for a while: the mapping is done.
async fn settled_trace(path: &Path) -> Vec<Vec<String>> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Vec<String>>(l).expect("a trace line"))
            .collect::<Vec<_>>()
    };
    let (mut last, mut unchanged) = (read(), 0);
    let deadline = Instant::now() + Duration::from_secs(90);
    while unchanged < 12 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = read();
        unchanged = if now == last && !now.is_empty() {
            unchanged + 1
        } else {
            0
        };
        last = now;
    }
    last
}

async fn on_localstack(stack: &DeployedStack, case: &Case) -> Outcome {
    let name = format!("probe-{}-{}", case.name, ulid::Ulid::new().to_string().to_lowercase());
    let stream_arn = fresh_stream(stack, &name).await;
    let queue = stack
        .sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("CreateQueue");
    let queue_url = queue.queue_url().expect("a queue URL").to_owned();
    let queue_arn = format!("arn:aws:sqs:us-east-1:000000000000:{name}");
    let work = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&work).unwrap();
    let zip = work.join("probe.zip");
    let zipped = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-c"])
        .arg(&zip)
        .arg("bootstrap")
        .current_dir(root().join("crates/e2e/probe"))
        .status()
        .expect("python3 zips the probe");
    assert!(zipped.success());
    let trace = work.join("trace.jsonl");
    let environment = json!({ "Variables": {
        "PROBE_TRACE_FILE": trace.to_string_lossy(),
        "PROBE_FAIL_MARK": case.mark,
        "PROBE_MODE": if case.error_mode { "error" } else { "report" },
    }});
    aws(&[
        "lambda",
        "create-function",
        "--function-name",
        &name,
        "--runtime",
        "provided.al2023",
        "--handler",
        "bootstrap",
        "--role",
        "arn:aws:iam::000000000000:role/probe",
        "--zip-file",
        &format!("fileb://{}", zip.display()),
        "--environment",
        &environment.to_string(),
    ]);
    aws(&["lambda", "wait", "function-active-v2", "--function-name", &name]);
    let mut sequence = std::collections::HashMap::new();
    put(stack, &name, case.before, &mut sequence).await;
    let mut mapping = json!({
        "FunctionName": name, "EventSourceArn": stream_arn, "BatchSize": 10,
        "StartingPosition": if case.latest { "LATEST" } else { "TRIM_HORIZON" },
        "BisectBatchOnFunctionError": case.bisect, "MaximumRetryAttempts": case.maximum_retry_attempts,
        "DestinationConfig": { "OnFailure": { "Destination": queue_arn } },
    });
    if case.report_batch_item_failures {
        mapping["FunctionResponseTypes"] = json!(["ReportBatchItemFailures"]);
    }
    if let Some(pattern) = &case.filter {
        mapping["FilterCriteria"] = json!({ "Filters": [{ "Pattern": pattern.to_string() }] });
    }
    let created = aws(&[
        "lambda",
        "create-event-source-mapping",
        "--cli-input-json",
        &mapping.to_string(),
    ]);
    let uuid = created["UUID"].as_str().expect("the mapping's UUID").to_owned();
    eventually("the mapping enabled", Duration::from_secs(30), async || {
        let state = aws(&["lambda", "get-event-source-mapping", "--uuid", &uuid])["State"].clone();
        if state == "Enabled" { Ok(()) } else { Err(state) }
    })
    .await;
    if !case.after.is_empty() {
        // Past the position LATEST took when the mapping started.
        tokio::time::sleep(Duration::from_secs(2)).await;
        put(stack, &name, case.after, &mut sequence).await;
    }
    let invocations = settled_trace(&trace).await;
    let received = stack
        .sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("ReceiveMessage");
    let on_failure = received
        .messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap_or_default()).expect("an on-failure record"))
        .collect();
    Outcome {
        invocations,
        on_failure,
        sequence,
    }
}

/// The probe's rule in Rust, behind crates/event-source-mapping.
struct Probe {
    mark: &'static str,
    error_mode: bool,
    trace: Mutex<Vec<Vec<String>>>,
}

impl Function for Probe {
    async fn invoke(&self, event: Value, _deadline: Instant) -> Result<Value, FunctionError> {
        use base64::Engine;
        let records = event["Records"].as_array().cloned().unwrap_or_default();
        let mut ids = Vec::new();
        let mut failing = Vec::new();
        for record in &records {
            let data = base64::engine::general_purpose::STANDARD
                .decode(record["kinesis"]["data"].as_str().unwrap_or_default())
                .unwrap_or_default();
            let id = serde_json::from_slice::<Value>(&data).unwrap_or_default()["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if !self.mark.is_empty() && id.contains(self.mark) {
                failing.push(record["kinesis"]["sequenceNumber"].clone());
            }
            ids.push(id);
        }
        self.trace.lock().unwrap().push(ids);
        if !failing.is_empty() && self.error_mode {
            return Err(FunctionError::new("ProbeError", format!("{} failing", failing.len())));
        }
        let failures: Vec<Value> = failing.into_iter().map(|s| json!({ "itemIdentifier": s })).collect();
        Ok(json!({ "batchItemFailures": failures }))
    }
}

async fn on_emulator(stack: &DeployedStack, case: &Case) -> Outcome {
    let name = format!(
        "emulated-{}-{}",
        case.name,
        ulid::Ulid::new().to_string().to_lowercase()
    );
    fresh_stream(stack, &name).await;
    let mut sequence = std::collections::HashMap::new();
    put(stack, &name, case.before, &mut sequence).await;
    let probe = Probe {
        mark: case.mark,
        error_mode: case.error_mode,
        trace: Mutex::new(Vec::new()),
    };
    let config = MappingConfig {
        function_name: name.clone(),
        batch_size: 10,
        starting_position: if case.latest {
            StartingPosition::Latest
        } else {
            StartingPosition::TrimHorizon
        },
        maximum_retry_attempts: u32::try_from(case.maximum_retry_attempts).ok(),
        bisect_batch_on_function_error: case.bisect,
        report_batch_item_failures: case.report_batch_item_failures,
        filter: match &case.filter {
            Some(pattern) => FilterCriteria::from_patterns([pattern.to_string().as_str()]).expect("a valid pattern"),
            None => FilterCriteria::default(),
        },
        retry_backoff: Duration::from_millis(10),
        ..Default::default()
    };
    let source = KinesisSource::new(stack.kinesis.clone(), &name)
        .await
        .expect("the stream");
    let mut mapping = EventSourceMapping::new(source, probe, Some(MemoryOnFailure::default()), config);
    // The first pass opens the shard where the starting position says.
    mapping.poll_once().await.expect("a first poll");
    put(stack, &name, case.after, &mut sequence).await;
    mapping.drain().await.expect("drain");
    Outcome {
        invocations: mapping.function().trace.lock().unwrap().clone(),
        on_failure: mapping.on_failure().map(|d| d.records()).unwrap_or_default(),
        sequence,
    }
}

fn ids(batches: &[&[&str]]) -> Vec<Vec<String>> {
    batches
        .iter()
        .map(|b| b.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// An on-failure record's batch: (first record, last record, size, invocations, function error).
fn given_up(outcome: &Outcome, record: &Value) -> (String, String, u64, u64, Value) {
    let info = &record["KinesisBatchInfo"];
    let id_of = |sequence: &Value| {
        outcome
            .sequence
            .iter()
            .find(|(_, s)| Some(s.as_str()) == sequence.as_str())
            .map(|(id, _)| id.clone())
            .unwrap_or_default()
    };
    (
        id_of(&info["startSequenceNumber"]),
        id_of(&info["endSequenceNumber"]),
        info["batchSize"].as_u64().unwrap_or_default(),
        record["requestContext"]["approximateInvokeCount"]
            .as_u64()
            .unwrap_or_default(),
        record["responseContext"]["functionError"].clone(),
    )
}

/// The keys of a JSON document, at every depth (`a.b`), so two records' shapes compare.
fn shape(value: &Value, prefix: &str, keys: &mut std::collections::BTreeSet<String>) {
    if let Some(object) = value.as_object() {
        for (key, inner) in object {
            let path = format!("{prefix}{key}");
            shape(inner, &format!("{path}."), keys);
            keys.insert(path);
        }
    }
}

async fn both(case: &Case) -> (Outcome, Outcome) {
    let stack = DeployedStack::from_env("E2E_STACK_OUTPUTS").await;
    let localstack = on_localstack(&stack, case).await;
    let emulated = on_emulator(&stack, case).await;
    (localstack, emulated)
}

#[tokio::test]
async fn filter_criteria_on_kinesis_data_agree() {
    let case = Case {
        name: "filter",
        before: &["r1-keep", "r2-drop", "r3-keep"],
        filter: Some(json!({ "data": { "kind": ["keep"] } })),
        ..BASE
    };
    let (localstack, emulated) = both(&case).await;
    let expected = ids(&[&["r1-keep", "r3-keep"]]);
    assert_eq!(localstack.invocations, expected);
    assert_eq!(emulated.invocations, expected);
}

#[tokio::test]
async fn a_reported_item_failure_resumes_from_that_record_and_both_give_the_rest_up_alike() {
    let case = Case {
        name: "report",
        before: &["r1", "r2", "r3-x", "r4", "r5"],
        mark: "-x",
        report_batch_item_failures: true,
        maximum_retry_attempts: 2,
        ..BASE
    };
    let (localstack, emulated) = both(&case).await;
    let expected = ids(&[
        &["r1", "r2", "r3-x", "r4", "r5"],
        &["r3-x", "r4", "r5"],
        &["r3-x", "r4", "r5"],
    ]);
    for outcome in [&localstack, &emulated] {
        assert_eq!(outcome.invocations, expected, "{outcome:?}");
        assert_eq!(outcome.on_failure.len(), 1, "{outcome:?}");
        assert_eq!(
            given_up(outcome, &outcome.on_failure[0]),
            ("r3-x".into(), "r5".into(), 3, 3, Value::Null)
        );
        assert_eq!(
            outcome.on_failure[0]["requestContext"]["condition"],
            "RetryAttemptsExhausted"
        );
    }
    // The on-failure records have the same fields, at every depth.
    let (mut ours, mut theirs) = Default::default();
    shape(&emulated.on_failure[0], "", &mut ours);
    shape(&localstack.on_failure[0], "", &mut theirs);
    assert_eq!(ours, theirs);
}

#[tokio::test]
async fn retries_of_a_failing_batch_then_the_whole_batch_to_the_on_failure_destination_agree() {
    let case = Case {
        name: "retries",
        before: &["r1", "r2-x", "r3"],
        mark: "-x",
        error_mode: true,
        maximum_retry_attempts: 2,
        ..BASE
    };
    let (localstack, emulated) = both(&case).await;
    let expected = ids(&[&["r1", "r2-x", "r3"], &["r1", "r2-x", "r3"], &["r1", "r2-x", "r3"]]);
    for outcome in [&localstack, &emulated] {
        assert_eq!(outcome.invocations, expected, "{outcome:?}");
        assert_eq!(outcome.on_failure.len(), 1, "{outcome:?}");
        assert_eq!(
            given_up(outcome, &outcome.on_failure[0]),
            ("r1".into(), "r3".into(), 3, 3, json!("Unhandled"))
        );
    }
}

#[tokio::test]
async fn latest_starts_after_what_the_stream_held_in_both() {
    let case = Case {
        name: "latest",
        before: &["r1", "r2"],
        after: &["r3", "r4"],
        latest: true,
        ..BASE
    };
    let (localstack, emulated) = both(&case).await;
    assert_eq!(localstack.invocations, ids(&[&["r3", "r4"]]));
    assert_eq!(emulated.invocations, ids(&[&["r3", "r4"]]));
}

#[tokio::test]
async fn bisect_on_error_splits_the_batch_in_lambda_and_the_emulator_but_not_in_localstack() {
    let case = Case {
        name: "bisect",
        before: &["r1", "r2", "r3", "r4", "r5-x", "r6", "r7", "r8"],
        mark: "-x",
        error_mode: true,
        bisect: true,
        maximum_retry_attempts: 1,
        ..BASE
    };
    let (localstack, emulated) = both(&case).await;
    // As Lambda documents it: split in two and retry each half; splitting does not count
    // towards the retries; only the poison record is given up on.
    let all = ["r1", "r2", "r3", "r4", "r5-x", "r6", "r7", "r8"];
    assert_eq!(
        emulated.invocations,
        ids(&[
            &all,
            &all[..4],
            &all[4..],
            &all[4..6],
            &["r5-x"],
            &["r5-x"],
            &["r6"],
            &all[6..]
        ])
    );
    assert_eq!(emulated.on_failure.len(), 1);
    assert_eq!(
        given_up(&emulated, &emulated.on_failure[0]),
        ("r5-x".into(), "r5-x".into(), 1, 2, json!("Unhandled"))
    );
    // LocalStack 2026.3.0 ignores BisectBatchOnFunctionError: it retries the whole batch and
    // gives all of it up, the good records with the poison one.
    assert_eq!(localstack.invocations, ids(&[&all, &all]));
    assert_eq!(localstack.on_failure.len(), 1);
    assert_eq!(
        given_up(&localstack, &localstack.on_failure[0]),
        ("r1".into(), "r8".into(), 8, 2, json!("Unhandled"))
    );
}
