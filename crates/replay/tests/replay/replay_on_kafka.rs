//! The replay and the audit on the Kafka bus, on the real engines (DynamoDB Local, the Tansu
//! broker): a rebuild from the topic into an empty table equals the live read model and a second
//! changes nothing; a time or per-partition offsets select what they say; the audit finds nothing
//! missing, then finds the events a topic never got; a dry run writes nothing; and a Kinesis
//! position is refused on a topic with a line that says what to use.

use adapters::DynamoReadModel;
use aws_sdk_dynamodb::types::AttributeValue;
use consumers::Projector;
use replay::kafka::{TopicReplayOptions, replay_topic};
use replay::{Bus, NoProgress, ReplayError, Start, Summary, Target};
use std::collections::{BTreeMap, HashMap};
use test_support::kafka::TestTopic;
use test_support::stack::TestStack;

type Item = HashMap<String, AttributeValue>;

fn read_model(items: Vec<Item>) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    items
        .into_iter()
        .map(|item| {
            let key = (
                item["guest_id"].as_s().unwrap().clone(),
                item["reservation_id"].as_s().unwrap().clone(),
            );
            (key, item.iter().map(|(k, v)| (k.clone(), format!("{v:?}"))).collect())
        })
        .collect()
}

fn from(start: Start) -> TopicReplayOptions {
    TopicReplayOptions {
        from: start,
        to: None,
        partitions: Vec::new(),
        dry_run: false,
    }
}

async fn project_into(stack: &TestStack, topic: &TestTopic, table: &str, options: &TopicReplayOptions) -> Summary {
    let mut target = Target::Consumer(Projector::new(DynamoReadModel::new(stack.dynamodb.clone(), table)));
    replay_topic(&topic.client, &topic.config, options, &mut target, &NoProgress)
        .await
        .unwrap()
}

/// 24 reservations, every third cancelled (32 events), relayed to a 3-partition topic and
/// projected live through the local Kafka mapping.
async fn live_pipeline(stack: &TestStack, topic: &TestTopic) {
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.reserve_and_cancel_every_third(&http, "s", 24).await;
    stack.relay_mapping_to_kafka(topic).await.drain().await.unwrap();
    stack
        .consumer_mapping_on_kafka(topic, Projector::new(stack.read_model()))
        .await
        .drain()
        .await
        .unwrap();
    assert_eq!(topic.events().await.len(), 32, "the topic keeps the published contract");
}

#[tokio::test]
async fn a_rebuild_from_the_kafka_topic_equals_the_live_read_model_and_a_second_changes_nothing() {
    let stack = TestStack::start().await;
    let topic = TestTopic::create(3).await;
    live_pipeline(&stack, &topic).await;
    let live = read_model(stack.scan_all(&stack.name("READ_MODEL_TABLE")).await);
    assert_eq!(live.len(), 24);

    let fresh = stack.create_table_like("READ_MODEL_TABLE", "rebuild").await;
    let first = project_into(&stack, &topic, &fresh, &from(Start::TrimHorizon)).await;
    assert_eq!(
        first,
        Summary {
            partitions: 3,
            read: 32,
            applied: 32,
            ..Default::default()
        }
    );
    assert_eq!(read_model(stack.scan_all(&fresh).await), live);
    let second = project_into(&stack, &topic, &fresh, &from(Start::TrimHorizon)).await;
    assert_eq!((second.applied, second.duplicates, second.read), (0, 32, 32));
    assert!(second.clean());

    // A dry run into an empty table counts everything as to be applied, and writes nothing.
    let empty = stack.create_table_like("READ_MODEL_TABLE", "dry").await;
    let dry = TopicReplayOptions {
        dry_run: true,
        ..from(Start::TrimHorizon)
    };
    let summary = project_into(&stack, &topic, &empty, &dry).await;
    assert_eq!((summary.applied, summary.duplicates), (32, 0));
    assert!(stack.scan_all(&empty).await.is_empty());
}

#[tokio::test]
async fn a_time_or_per_partition_offsets_select_what_they_say_on_kafka() {
    let stack = TestStack::start().await;
    let topic = TestTopic::create(3).await;
    live_pipeline(&stack, &topic).await;
    let records = topic.records().await;

    // Per-partition offsets: partition 1 from its third record, and only partition 1.
    let in_partition_1: Vec<_> = records.iter().filter(|r| r.partition == 1).collect();
    assert!(in_partition_1.len() > 2, "the keys spread over the partitions");
    let third = in_partition_1[2].offset;
    let options = from(Start::Offsets(BTreeMap::from([(1, third)])));
    let mut target = Target::<Projector<DynamoReadModel>>::Print(Box::new(std::io::sink()));
    let summary = replay_topic(&topic.client, &topic.config, &options, &mut target, &NoProgress)
        .await
        .unwrap();
    assert_eq!((summary.partitions, summary.read), (1, in_partition_1.len() as u64 - 2));

    // A time after everything reads nothing; a time before everything reads everything. (Tansu
    // 0.6 answers ListOffsets for a time after the last record with offset 0, where Kafka
    // answers -1: the replay skips what is older than the time, so this holds on both.)
    let after = time::OffsetDateTime::now_utc();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let fresh = stack.create_table_like("READ_MODEL_TABLE", "range").await;
    assert_eq!(
        project_into(&stack, &topic, &fresh, &from(Start::At(after))).await.read,
        0
    );
    let before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    assert_eq!(
        project_into(&stack, &topic, &fresh, &from(Start::At(before)))
            .await
            .read,
        32
    );
    // --to a time before anything: nothing.
    let nothing = TopicReplayOptions {
        to: Some(replay::End::At(before)),
        ..from(Start::TrimHorizon)
    };
    assert_eq!(project_into(&stack, &topic, &fresh, &nothing).await.read, 0);

    // A Kinesis sequence number, an unknown partition: refused, saying what to use.
    let mut sink = Target::<Projector<DynamoReadModel>>::Print(Box::new(std::io::sink()));
    let err = replay_topic(
        &topic.client,
        &topic.config,
        &from(Start::Sequence(
            "49590338271490256608559692538361571095921575989136588898".into(),
        )),
        &mut sink,
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReplayError::KinesisPositionOnKafka(_)), "{err}");
    assert!(err.to_string().contains("partition:offset pairs"), "{err}");
    let err = replay_topic(
        &topic.client,
        &topic.config,
        &TopicReplayOptions {
            partitions: vec![7],
            ..from(Start::TrimHorizon)
        },
        &mut sink,
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no partition 7 in the Kafka topic {:?}", topic.config.topic)
    );
}

/// The audit of everything the stack's outbox holds against `topic` and `consumers`.
async fn audit(
    stack: &TestStack,
    topic: &TestTopic,
    consumers: &[&dyn replay::audit::AppliedVersions],
) -> replay::audit::AuditReport {
    let bus = Bus::Kafka {
        client: &topic.client,
        config: &topic.config,
    };
    replay::audit::audit(
        &stack.dynamodb,
        &bus,
        &stack.name("OUTBOX_TABLE"),
        time::OffsetDateTime::UNIX_EPOCH,
        time::OffsetDateTime::now_utc(),
        consumers,
        &replay::audit::BornIn::Anywhere,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_audit_of_a_kafka_topic_finds_nothing_missing_then_the_events_a_topic_never_got() {
    let stack = TestStack::start().await;
    let topic = TestTopic::create(3).await;
    live_pipeline(&stack, &topic).await;
    let projector = Projector::new(stack.read_model());
    let notifier = consumers::Notifier::new(stack.notifications().await);
    stack
        .consumer_mapping_on_kafka(&topic, consumers::Notifier::new(stack.notifications().await))
        .await
        .drain()
        .await
        .unwrap();
    let report = audit(&stack, &topic, &[&projector, &notifier]).await;
    assert!(report.nothing_missing(), "{report}: {:?}", report.lines());
    assert_eq!((report.committed, report.on_stream), (32, 32));
    assert!(report.to_string().contains("32 records on the topic"), "{report}");

    // The same outbox audited against an empty topic: every event is missing from it, and
    // says so in the topic's words.
    let empty = TestTopic::create(3).await;
    let report = audit(&stack, &empty, &[&projector, &notifier]).await;
    assert_eq!(report.missing_on_stream.len(), 32);
    assert!(!report.nothing_missing());
    assert!(
        report.lines()[0].ends_with("committed, not on the topic"),
        "{:?}",
        report.lines()
    );
}

fn letter(function: &str, reason: &str, record: serde_json::Value) -> String {
    serde_json::json!({
        "function": function, "reason": reason, "event_source_arn": null, "event_id": null,
        "sequence_number": null, "record": record, "dead_lettered_at": "2026-12-03T10:00:00Z"
    })
    .to_string()
}

/// `reservations-replay` with `args` on the Kafka bus of `topic`, against the test stack's tables,
/// with the bus's variables as a stack's outputs give them (the partition count included: a
/// re-drive publishes relay letters).
fn cli(stack: &TestStack, topic: &TestTopic, args: &[&str]) -> (Option<i32>, String, String) {
    let partitions = topic.config.partitions.expect("a test topic knows its count");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_reservations-replay"))
        .args(args)
        .env("EVENT_BUS", "kafka")
        .env("KAFKA_TOPIC", &topic.config.topic)
        .env("KAFKA_BOOTSTRAP_SERVERS", topic.config.bootstrap_servers.join(","))
        .env("KAFKA_PARTITIONS", partitions.to_string())
        .env("READ_MODEL_TABLE", stack.name("READ_MODEL_TABLE"))
        .env("NOTIFICATIONS_TABLE", stack.name("NOTIFICATIONS_TABLE"))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// The CLI as a Kafka user runs it (EVENT_BUS=kafka and the topic's settings, as the functions
/// have them): a re-drive gives a fixed Kafka letter to the projector and a relay letter to the
/// topic, keeps the malformed one, and turns Lambda's Kafka on-failure record into the replay
/// command of its offsets; that command's kind of position (`--from P:O`) replays the topic.
#[tokio::test]
async fn on_kafka_the_cli_redrives_letters_to_their_functions_and_replays_from_partition_offsets() {
    use test_support::events::{envelope_json, fixtures, kafka_record};
    let stack = TestStack::start().await;
    let topic = TestTopic::create(1).await;
    let name = topic.config.topic.clone();
    let envelope = serde_json::to_vec(&envelope_json("R-fixed", 1)).unwrap();
    let stream_record: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(fixtures::OUTBOX_INSERT).unwrap()["Records"][0].clone();
    let published_id = stream_record["dynamodb"]["NewImage"]["aggregate_id"]["S"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_failure = serde_json::json!({
        "requestContext": { "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 11 },
        "KafkaBatchInfo": {
            "batchSize": 2,
            "eventSourceArn": "arn:aws:kafka:eu-west-1:123456789012:cluster/reservations/abc",
            "recordsInfo": { format!("{name}-0"): {
                "firstRecordOffset": "0", "lastRecordOffset": "1",
                "firstRecordTimestamp": "2026-12-03T10:00:00.100Z",
                "lastRecordTimestamp": "2026-12-03T10:00:00.900Z"
            } }
        }
    });
    let file = stack.dead_letter_dir().join("kafka-letters.jsonl");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let lines = [
        letter(
            "projector",
            "an older projector did not know this event",
            kafka_record(&name, 0, 7, Some("R-fixed"), &envelope),
        ),
        letter(
            "projector",
            "data is not an event envelope",
            kafka_record(&name, 0, 8, Some("R-bad"), b"garbage"),
        ),
        letter("relay", "the stream's view type was wrong", stream_record),
        on_failure.to_string(),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let (status, stdout, stderr) = cli(&stack, &topic, &["redrive", "--dead-letters", file.to_str().unwrap()]);
    assert_eq!(status, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("redrive done: 2 re-driven, 1 still failing"),
        "{stderr}"
    );
    assert!(
        stdout.contains("still failing (projector): data is not an event envelope"),
        "{stdout}"
    );
    let command = format!("--bus kafka --topic {name} --from 0:0 --to 2026-12-03T10:00:00.900Z");
    assert!(stdout.contains(&command), "{stdout}");
    let read_model = stack.scan_all(&stack.name("READ_MODEL_TABLE")).await;
    assert_eq!(read_model.len(), 1);
    assert_eq!(read_model[0]["reservation_id"].as_s().unwrap(), "R-fixed");
    let on_topic = topic.events().await;
    assert_eq!(on_topic.len(), 1, "the relay letter was published to the topic");
    assert_eq!(on_topic[0].partition_key, published_id);

    // The relay's event, replayed from where partition 0 starts, into a table of its own.
    let fresh = stack.create_table_like("READ_MODEL_TABLE", "cli").await;
    let (status, stdout, stderr) = cli(
        &stack,
        &topic,
        &["projector", "--from", "0:0", "--table", &fresh, "--quiet"],
    );
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    assert!(
        stderr.contains("replay done: partitions 1, read 1, applied 1, duplicates 0, gaps 0"),
        "{stderr}"
    );
    assert_eq!(stack.scan_all(&fresh).await.len(), 1);
    // A shard on a topic: one line that says what to use instead, exit 2.
    let (status, _, stderr) = cli(&stack, &topic, &["print", "--shard", "shardId-000000000000"]);
    assert_eq!(status, Some(2));
    assert_eq!(
        stderr.trim(),
        "reservations-replay: --shard is for a Kinesis stream; on a Kafka topic choose partitions with --partition"
    );
}

/// What `--stack NAME` reads from a Kafka stack's outputs is what its functions run with: the
/// topic, the brokers and the partition count, each an output of its own.
#[test]
fn a_kafka_stacks_outputs_give_replay_the_functions_topic_brokers_and_partition_count() {
    use test_support::template::{Deploy, KAFKA, STACK_NAME, source};
    let template = source();
    let stack = Deploy::new(&template, &KAFKA).stack();
    let outputs: HashMap<String, String> = stack["Outputs"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter_map(|(name, output)| Some((name.as_str()?.to_owned(), output["Value"].as_str()?.to_owned())))
        .collect();
    let vars = replay::stack::vars_from_outputs(STACK_NAME, &outputs).unwrap();
    let functions = &stack["Globals"]["Function"]["Environment"]["Variables"];
    for var in [
        "KAFKA_TOPIC",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_PARTITIONS",
        "KAFKA_AUTH",
    ] {
        assert_eq!(Some(vars[var].as_str()), functions[var].as_str(), "{var}");
    }
    assert_eq!(vars["EVENT_BUS"], "kafka");
}
