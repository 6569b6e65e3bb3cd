//! The replay on the real engines (DynamoDB Local, kinesis-mock): a rebuild into an empty table
//! equals the live read model, a second replay changes nothing, resharding changes nothing, ranges
//! and shards select what they say, and a dry run writes nothing.

use adapters::{DynamoNotifications, DynamoReadModel};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use consumers::{Notifier, Projector};
use replay::{End, NoProgress, ReplayError, ReplayOptions, Start, Summary, Target};
use std::collections::{BTreeMap, HashMap};
use test_support::stack::TestStack;

type Item = HashMap<String, AttributeValue>;

/// A table's items keyed by guest and reservation, every attribute compared.
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

fn options(stack: &TestStack) -> ReplayOptions {
    ReplayOptions {
        stream: stack.name("EVENTS_STREAM"),
        from: Start::TrimHorizon,
        to: None,
        shards: Vec::new(),
        dry_run: false,
    }
}

async fn project_into(stack: &TestStack, table: &str, options: &ReplayOptions) -> Summary {
    let mut target = Target::Consumer(Projector::new(DynamoReadModel::new(stack.dynamodb.clone(), table)));
    replay::replay(&stack.kinesis, options, &mut target, &NoProgress)
        .await
        .unwrap()
}

/// 16 reservations of 4 guests, half cancelled, with the stream resharded half way; everything
/// relayed and the live projector drained. Returns the reservation ids in creation order.
async fn live_pipeline(stack: &TestStack) -> Vec<String> {
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "s", 1000).await;
    let mut relay = stack.relay_mapping().await;
    let mut ids = Vec::new();
    for i in 0..16 {
        ids.push(api.reserve(&http, "s", &format!("guest-{}", i % 4)).await);
        if i == 8 {
            relay.drain().await.unwrap();
            stack.reshard(4).await;
        }
    }
    for id in ids.iter().step_by(2) {
        api.cancel(&http, id).await;
    }
    relay.drain().await.unwrap();
    stack.projector_mapping().await.drain().await.unwrap();
    // What the replays below read keeps the published contract.
    assert!(stack.events_on_kinesis().await.len() >= 24);
    ids
}

#[tokio::test]
async fn a_rebuild_into_an_empty_table_equals_the_live_read_model_and_a_second_replay_changes_nothing() {
    let stack = TestStack::start().await;
    live_pipeline(&stack).await;
    let live = read_model(stack.scan_all(&stack.name("READ_MODEL_TABLE")).await);
    assert_eq!(live.len(), 16);

    let fresh = stack.create_table_like("READ_MODEL_TABLE", "rebuild").await;
    let first = project_into(&stack, &fresh, &options(&stack)).await;
    assert_eq!(
        first,
        Summary {
            shards: 6,
            read: 24,
            applied: 24,
            ..Default::default()
        }
    );
    // Everything but the last event id and update time, which the rebuild takes from the same
    // events: so the whole items match.
    assert_eq!(read_model(stack.scan_all(&fresh).await), live);

    let second = project_into(&stack, &fresh, &options(&stack)).await;
    assert_eq!((second.applied, second.duplicates, second.read), (0, 24, 24));
    assert!(second.clean());
    assert_eq!(read_model(stack.scan_all(&fresh).await), live);
}

#[tokio::test]
async fn a_dry_run_counts_what_would_happen_and_writes_nothing() {
    let stack = TestStack::start().await;
    live_pipeline(&stack).await;
    let fresh = stack.create_table_like("NOTIFICATIONS_TABLE", "dry").await;
    let dry = ReplayOptions {
        dry_run: true,
        ..options(&stack)
    };
    let mut target = Target::Consumer(Notifier::new(DynamoNotifications::new(
        stack.dynamodb.clone(),
        &fresh,
        time::Duration::days(1),
        stack.notifications().await.channel().clone(),
    )));
    let summary = replay::replay(&stack.kinesis, &dry, &mut target, &NoProgress)
        .await
        .unwrap();
    assert_eq!((summary.applied, summary.duplicates), (24, 0));
    assert!(stack.scan_all(&fresh).await.is_empty());

    // Against the live read model, which has everything: all duplicates.
    let summary = project_into(&stack, &stack.name("READ_MODEL_TABLE"), &dry).await;
    assert_eq!((summary.applied, summary.duplicates), (0, 24));
}

#[tokio::test]
async fn ranges_and_shards_select_what_they_say_and_gaps_are_reported_not_applied() {
    let stack = TestStack::start().await;
    let ids = live_pipeline(&stack).await;

    // --from a time after everything: nothing to read; --from the future: refused.
    let after_everything = time::OffsetDateTime::now_utc();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let later = ReplayOptions {
        from: Start::At(after_everything),
        ..options(&stack)
    };
    let fresh = stack.create_table_like("READ_MODEL_TABLE", "range").await;
    assert_eq!(project_into(&stack, &fresh, &later).await.read, 0);
    let future = ReplayOptions {
        from: Start::At(after_everything + time::Duration::hours(1)),
        ..options(&stack)
    };
    let mut target = Target::Consumer(Projector::new(DynamoReadModel::new(stack.dynamodb.clone(), &fresh)));
    let err = replay::replay(&stack.kinesis, &future, &mut target, &NoProgress)
        .await
        .unwrap_err();
    assert!(matches!(err, ReplayError::FromInTheFuture(_)), "{err}");

    // --to a time before anything: nothing applied either.
    let earlier = ReplayOptions {
        to: Some(End::At(time::OffsetDateTime::now_utc() - time::Duration::hours(1))),
        ..options(&stack)
    };
    assert_eq!(project_into(&stack, &fresh, &earlier).await.read, 0);

    // One shard from a sequence number on: a cancel without its creation is a gap, not applied.
    // The first five reservations were created before the reshard and cancelled after it, so
    // their cancels sit in child shards, away from their creations.
    let shards = replay::shards_in_lineage_order(&stack.kinesis, &stack.name("EVENTS_STREAM"))
        .await
        .unwrap();
    let mut found = None;
    for child in shards.iter().filter(|s| !s.parent_shard_ids.is_empty()) {
        let iterator = stack
            .kinesis
            .get_shard_iterator()
            .stream_name(stack.name("EVENTS_STREAM"))
            .shard_id(&child.shard_id)
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        let records = stack
            .kinesis
            .get_records()
            .shard_iterator(iterator)
            .send()
            .await
            .unwrap();
        let early_cancel = records.records().iter().find(|r| {
            let data: serde_json::Value = serde_json::from_slice(r.data().as_ref()).unwrap();
            data["version"] == 2 && ids[..9].contains(&data["aggregate_id"].as_str().unwrap().to_owned())
        });
        if let Some(record) = early_cancel {
            found = Some((child.shard_id.clone(), record.sequence_number().to_owned()));
            break;
        }
    }
    let (child, sequence) = found.expect("a child shard holds a cancel of a reservation created before the reshard");
    let from_cancel = ReplayOptions {
        from: Start::Sequence(sequence),
        shards: vec![child],
        ..options(&stack)
    };
    let summary = project_into(&stack, &fresh, &from_cancel).await;
    assert!(summary.gaps >= 1, "{summary:?}");
    assert!(!summary.clean());
    assert!(
        stack
            .scan_all(&fresh)
            .await
            .iter()
            .all(|i| i["version"].as_n().unwrap() == "1"),
        "a version 2 was applied over a missing version 1"
    );

    // A sequence number without --shard, and an unknown shard, are refused with a clear error.
    let err = replay::replay(
        &stack.kinesis,
        &ReplayOptions {
            from: Start::Sequence("1".into()),
            ..options(&stack)
        },
        &mut Target::<Projector<DynamoReadModel>>::Print(Box::new(std::io::sink())),
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReplayError::SequenceNeedsOneShard(_)));
    let err = replay::replay(
        &stack.kinesis,
        &ReplayOptions {
            shards: vec!["shardId-999".into()],
            ..options(&stack)
        },
        &mut Target::<Projector<DynamoReadModel>>::Print(Box::new(std::io::sink())),
        &NoProgress,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("no shard shardId-999 in stream {}", stack.name("EVENTS_STREAM"))
    );
}

#[tokio::test]
async fn print_writes_each_envelope_once_and_counts_malformed_records() {
    let stack = TestStack::start().await;
    let ids = live_pipeline(&stack).await;
    stack
        .kinesis
        .put_record()
        .stream_name(stack.name("EVENTS_STREAM"))
        .partition_key(&ids[0])
        .data(Blob::new(b"garbage".to_vec()))
        .send()
        .await
        .unwrap();
    let (writer, lines) = SharedBuffer::new();
    let mut target = Target::<Projector<DynamoReadModel>>::Print(Box::new(writer));
    let summary = replay::replay(&stack.kinesis, &options(&stack), &mut target, &NoProgress)
        .await
        .unwrap();
    assert_eq!((summary.read, summary.applied, summary.malformed), (25, 24, 1));
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    let envelopes: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(envelopes.len(), 24);
    // Per reservation, in version order.
    let mut seen: HashMap<String, u64> = HashMap::new();
    for envelope in &envelopes {
        let last = seen
            .entry(envelope["aggregate_id"].as_str().unwrap().to_owned())
            .or_default();
        assert_eq!(envelope["version"].as_u64().unwrap(), *last + 1);
        *last += 1;
    }
}

#[derive(Clone)]
struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn new() -> (Self, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let inner = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        (Self(inner.clone()), inner)
    }
}

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
