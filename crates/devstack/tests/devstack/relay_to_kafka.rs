//! The pipeline API → DynamoDB → Streams → relay → Kafka on the real engines (DynamoDB Local, the
//! Tansu broker), driven deterministically. The Kafka bus keeps what the Kinesis bus keeps:
//! invariants 3 (nothing lost), 4 (per-reservation order) and the event contract, with the
//! record key the reservation id, the value the same envelope bytes, and the event's type, id and
//! trace id as headers.

use domain::ports::UnpublishedEvents;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::time::Duration;
use test_support::kafka::{OwnBroker, TestTopic};
use test_support::stack::{TestStack, expected_versions as expected, versions_by_reservation};
use tokio::time::Instant;

const TWO: NonZeroU32 = NonZeroU32::new(2).unwrap();
const FOUR: NonZeroU32 = NonZeroU32::new(4).unwrap();

#[tokio::test]
async fn reservations_and_cancels_reach_the_kafka_topic_once_each_in_order_keyed_and_with_headers() {
    let stack = TestStack::start().await;
    let topic = TestTopic::create(4).await;
    let api = stack.spawn_api().await;
    let (created, cancelled) = api
        .reserve_and_cancel_every_third(&reqwest::Client::new(), "s1", 30)
        .await;

    let mut relay = stack.relay_mapping_to_kafka(&topic).await;
    let report = relay.drain().await.unwrap();
    assert_eq!(report.records_read, 40, "{report:?}");
    assert_eq!((report.function_errors, report.batches_to_on_failure), (0, 0));

    let events = topic.events().await;
    assert_eq!(events.len(), 40, "nothing lost, nothing doubled when nothing failed");
    assert_eq!(versions_by_reservation(&events), expected(&created, &cancelled));

    let records = topic.records().await;
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() > 1,
        "the keys spread over the partitions: {partitions:?}"
    );
    for record in &records {
        let key = record.key.as_deref().expect("every record has a key");
        assert_eq!(
            record.partition as usize,
            kafka_bus::partition_for(key, 4),
            "a reservation's events are where Kafka's partitioner puts its key"
        );
        let envelope: domain::EventEnvelope = serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
        assert_eq!(key, envelope.aggregate_id.as_str().as_bytes());
        let header = |name: &str| String::from_utf8(record.headers[name].clone()).unwrap();
        assert_eq!(header("event_type"), envelope.event_type.as_str());
        assert_eq!(header("event_id"), envelope.event_id.as_str());
        assert_eq!(header("trace_id"), envelope.trace_id.to_string());
    }

    // Draining again publishes nothing new.
    assert_eq!(relay.drain().await.unwrap().records_read, 0);
    assert_eq!(topic.records().await.len(), 40);
}

#[tokio::test]
async fn the_polling_publisher_puts_every_event_on_the_kafka_topic_once_in_order() {
    let stack = TestStack::start().await.polling();
    let topic = TestTopic::create(3).await;
    let api = stack.spawn_api().await;
    let (created, cancelled) = api
        .reserve_and_cancel_every_third(&reqwest::Client::new(), "s1", 30)
        .await;

    let poller = stack.poller_to_kafka(&topic, Duration::from_millis(20)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = poller.run(deadline, true, std::future::pending()).await;
    assert_eq!((stats.published, stats.dead_lettered, stats.failed_polls), (40, 0, 0));

    let events = topic.events().await;
    assert_eq!(events.len(), 40, "nothing lost, nothing doubled when nothing failed");
    assert_eq!(versions_by_reservation(&events), expected(&created, &cancelled));
    assert!(
        stack.outbox().pending(100).await.unwrap().is_empty(),
        "every mark was cleared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_answering_for_30_s_under_traffic_loses_no_event_and_reorders_none() {
    let stack = TestStack::start().await;
    let broker = OwnBroker::start().await;
    let topic = TestTopic::create_on(&broker.bootstrap, 4).await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    let (mut created, mut cancelled) = api.reserve_and_cancel_every_third(&http, "s1", 15).await;
    // Produces give up after 5 s here (30 s deployed), so that the pause also runs the path of a
    // produce that timed out and is sent again.
    let sink = relay::KafkaSink::connect(&topic.config, None)
        .await
        .unwrap()
        .with_produce_timeout(Duration::from_secs(5));
    let arn = devstack::pipeline::outbox_stream_arn(&stack.dynamodb, &stack.name("OUTBOX_TABLE"))
        .await
        .unwrap();
    let mut relay =
        devstack::pipeline::relay_mapping_to(&stack.sdk, &arn, sink, &stack.dead_letter_dir(), &stack.regions);
    relay.drain().await.unwrap();

    // The broker's process stops (SIGSTOP): connections stay open, nothing is answered. The API
    // goes on committing; the relay's produce times out, it retries, and its batch goes back to
    // the mapping, which re-delivers it: the stream keeps every event until Kafka takes it.
    broker.pause();
    let draining = tokio::spawn(async move {
        let report = relay.drain().await;
        (relay, report)
    });
    for i in 15..30 {
        created.push(api.reserve(&http, "s1", &format!("g{i}")).await);
    }
    for id in created[15..].iter().step_by(3) {
        api.cancel(&http, id).await;
        cancelled.insert(id.clone());
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    broker.resume();
    let (mut relay, report) = tokio::time::timeout(Duration::from_secs(120), draining)
        .await
        .expect("the relay catches up once the broker answers again")
        .unwrap();
    report.unwrap();
    relay.drain().await.unwrap();

    let events = topic.events().await;
    let expected = expected(&created, &cancelled);
    let mut first_seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for event in &events {
        let envelope = event.envelope.as_ref().unwrap();
        let seen = first_seen.entry(envelope.aggregate_id.as_str().to_owned()).or_default();
        if !seen.contains(&envelope.version.get()) {
            seen.push(envelope.version.get());
        }
    }
    let wanted: BTreeMap<String, Vec<u64>> = expected
        .iter()
        .map(|(id, versions)| (id.clone(), versions.iter().map(|(v, _)| *v).collect()))
        .collect();
    assert_eq!(
        first_seen, wanted,
        "every committed event is on the topic, each reservation's first in version order"
    );
    println!(
        "broker paused 30 s: {} events committed, {} records on the topic",
        wanted.values().map(Vec::len).sum::<usize>(),
        events.len()
    );
}

#[tokio::test]
async fn a_missing_topic_is_refused_at_start_with_the_broker_and_the_topic_named() {
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP_SERVERS").expect("scripts/test.sh starts the test broker");
    let config = kafka_bus::KafkaConfig::plaintext(bootstrap.clone(), "no-such-topic").with_partitions(FOUR);
    let err = relay::KafkaSink::connect(&config, None).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!("the Kafka topic \"no-such-topic\" does not exist on {bootstrap}: create it (see docs/deploy.md)")
    );

    // Nothing listens on a port just taken from the system and given back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere =
        kafka_bus::KafkaConfig::plaintext(format!("127.0.0.1:{port}"), "reservation-events").with_partitions(FOUR);
    let err = relay::KafkaSink::connect(&nowhere, None).await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("cannot reach the Kafka brokers 127.0.0.1:{port}: ")),
        "{err}"
    );
}

/// The value of metric `name` in each EMF line that has it.
fn metric_values(lines: &[String], name: &str) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()[name].as_f64())
        .collect()
}

/// A Lambda batch of the outbox stream's inserts of `events` (reservation, version), from
/// sequence number `first`.
fn outbox_inserts(first: u64, events: &[(&str, u64)]) -> String {
    use test_support::events::{envelope, outbox_image, outbox_stream_record};
    let records: Vec<serde_json::Value> = events
        .iter()
        .zip(first..)
        .map(|(&(id, version), sequence)| {
            outbox_stream_record("INSERT", sequence, (id, version), outbox_image(&envelope(id, version)))
        })
        .collect();
    serde_json::json!({ "Records": records }).to_string()
}

/// Partitions added to a topic move keys: a publisher mapping by one count and another mapping by
/// another put one reservation's events in two partitions, which consumers read independently.
/// So a relay starting on a topic that does not have the count the stack was set up with
/// (KAFKA_PARTITIONS) refuses, with one line saying what is wrong and what to do, and counts it
/// in the metric the template alarms on.
#[tokio::test]
async fn a_relay_refuses_at_start_a_topic_without_the_configured_partition_count_naming_both_counts() {
    let topic = TestTopic::create_with(&TestTopic::bootstrap(), 4, TWO).await;
    let err = relay::KafkaSink::connect(&topic.config, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            kafka_bus::KafkaError::PartitionMismatch {
                expected: 2,
                found: 4,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    for part in [
        format!(
            "the Kafka topic {:?} on {} has 4 partitions",
            topic.config.topic,
            TestTopic::bootstrap()
        ),
        "KAFKA_PARTITIONS says it was created with 2".to_owned(),
        "Growing the topic".to_owned(),
    ] {
        assert!(message.contains(&part), "{part:?} not in {message}");
    }
    let metrics = relay::BusSink::start_metrics(&err, "relay").to_line(time::OffsetDateTime::UNIX_EPOCH);
    assert_eq!(metric_values(&[metrics], relay::handler::PUBLISH_REFUSED), [1.0]);
    assert!(topic.records().await.is_empty());
}

/// A relay that is already running when the topic's partition count changes refuses from its
/// next look at the topic's metadata on: the batch is reported failed from its first record, so
/// Lambda delivers it again and the events stay in the stream until the topic is fixed; nothing
/// reaches the topic. (Tansu cannot add partitions; the topic is made again with 4 under its
/// name, which a publisher that read the count at start would never notice.)
#[tokio::test]
async fn a_running_relay_refuses_once_its_topic_has_another_partition_count_and_keeps_the_batch_in_the_stream() {
    let topic = TestTopic::create(2).await;
    let (metrics, lines) = telemetry::Emitter::memory();
    let sink = relay::KafkaSink::connect(&topic.config, None)
        .await
        .unwrap()
        .with_partition_check_interval(Duration::ZERO);
    let relay = relay::Relay::new(
        sink,
        dead_letters::MemoryDeadLetters::default(),
        relay::PublishPolicy::default(),
    )
    .with_metrics(metrics);
    let deadline = Instant::now() + Duration::from_secs(60);

    let first = relay
        .handle(&outbox_inserts(1, &[("r1", 1), ("r2", 1)]), deadline)
        .await
        .unwrap();
    assert!(first.response.batch_item_failures.is_empty());
    assert_eq!(first.stats.published, 2);

    topic.recreate_with(4).await;
    let refused = relay
        .handle(&outbox_inserts(3, &[("r1", 2), ("r3", 1)]), deadline)
        .await
        .unwrap();
    let resume: Vec<_> = refused
        .response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap_or_default())
        .collect();
    assert_eq!(resume, [format!("{:030}", 3)], "the whole batch goes back to Lambda");
    assert_eq!(refused.stats.published, 0);
    assert!(refused.stats.publish.refused);
    assert_eq!(
        refused.stats.publish.calls, 1,
        "a refusal is not retried within the invocation"
    );
    assert!(
        refused
            .stats
            .publish
            .last_error
            .as_deref()
            .unwrap()
            .contains("has 4 partitions"),
        "{:?}",
        refused.stats.publish.last_error
    );
    assert!(relay.dead_letters().letters().is_empty());
    assert!(topic.records().await.is_empty(), "nothing reached the topic");
    assert_eq!(
        metric_values(&lines.lock().unwrap(), relay::handler::PUBLISH_REFUSED),
        [0.0, 1.0]
    );

    // A relay starting now (a cold start) refuses too.
    let err = relay::KafkaSink::connect(&topic.config, None).await.unwrap_err();
    assert!(err.is_refusal(), "{err}");
}

/// The poller likewise: a poll on a topic whose partition count changed publishes nothing and
/// leaves every event marked unpublished, for the poll after the fix.
#[tokio::test]
async fn a_running_poller_refuses_once_its_topic_has_another_partition_count_and_leaves_the_events_marked() {
    let stack = TestStack::start().await.polling();
    let topic = TestTopic::create(2).await;
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s1", 10).await;
    for guest in ["g1", "g2", "g3"] {
        api.reserve(&http, "s1", guest).await;
    }
    let (metrics, lines) = telemetry::Emitter::memory();
    let sink = relay::KafkaSink::connect(&topic.config, None)
        .await
        .unwrap()
        .with_partition_check_interval(Duration::ZERO);
    let poller = devstack::pipeline::poller_to(
        stack.dynamodb.clone(),
        &stack.name("OUTBOX_TABLE"),
        sink,
        &stack.dead_letter_dir(),
        relay::PollerSettings::default(),
        &stack.regions,
    )
    .with_metrics(metrics);
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_eq!(poller.poll_once(deadline).await.unwrap().published, 3);

    topic.recreate_with(4).await;
    for guest in ["g4", "g5"] {
        api.reserve(&http, "s1", guest).await;
    }
    let refused = poller.poll_once(deadline).await.unwrap();
    assert_eq!((refused.pending, refused.published, refused.marked), (2, 0, 0));
    assert!(refused.publish.refused);
    assert_eq!(stack.outbox().pending(100).await.unwrap().len(), 2, "both stay marked");
    assert!(topic.records().await.is_empty(), "nothing reached the topic");
    assert_eq!(
        metric_values(&lines.lock().unwrap(), relay::handler::PUBLISH_REFUSED),
        [0.0, 1.0]
    );
}
