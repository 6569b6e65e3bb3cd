//! The notifier's real side effect: each event becomes one message on the SNS FIFO topic, which
//! the subscribed SQS FIFO queue receives (SNS and SQS on moto, DynamoDB Local, kinesis-mock).
//! A notifier killed between publishing and recording publishes again, and the topic's
//! deduplication absorbs it; a repeat after the deduplication window is counted and reported; a
//! publish refused for good is dead-lettered whole with its reason.

use adapters::{DynamoNotifications, SnsTopic};
use consumers::Notifier;
use dead_letters::JsonLinesDeadLetters;
use devstack::channel::ReceivedNotification;
use devstack::pipeline::{consumer_mapping_config, consumer_mapping_with};
use domain::Notification;
use domain::ports::{Delivery, NotificationChannel, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use test_support::stack::TestStack;

/// The topic, except that the notifier is killed right after its first `kills` publishes were
/// accepted (before it could record them), and the deduplication window it is told is `window`.
struct KilledAfterPublish {
    inner: SnsTopic,
    kills_left: AtomicUsize,
    window: time::Duration,
}

impl NotificationChannel for KilledAfterPublish {
    async fn publish(&self, notification: &Notification) -> Result<Delivery, StoreError> {
        let delivery = self.inner.publish(notification).await?;
        if self
            .kills_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            std::future::pending::<()>().await;
        }
        Ok(delivery)
    }

    fn dedup_window(&self) -> time::Duration {
        self.window
    }
}

/// Five events: three reservations, two of them cancelled; relayed to Kinesis.
async fn five_events(stack: &TestStack) -> Vec<String> {
    let api = stack.spawn_api().await;
    let http = reqwest::Client::new();
    api.put_slot(&http, "dinner", 10).await;
    let mut ids = Vec::new();
    for guest in ["ada", "bob", "cy"] {
        ids.push(api.reserve(&http, "dinner", guest).await);
    }
    api.cancel(&http, &ids[0]).await;
    api.cancel(&http, &ids[2]).await;
    stack.relay_mapping().await.drain().await.unwrap();
    ids
}

/// The notifier behind its mapping (a short function timeout ends a kill quickly), drained.
async fn notify<C: NotificationChannel + 'static>(stack: &TestStack, notifications: &Arc<DynamoNotifications<C>>) {
    let mut config = consumer_mapping_config("reservations-notifier");
    // The kill is an invocation that never returns: only the timeout ends it. Long enough that a
    // live invocation on a loaded machine never meets it (at 2 s one did, and was counted as a
    // second republish).
    config.function_timeout = Duration::from_secs(5);
    config.retry_backoff = Duration::from_millis(20);
    let mut mapping = consumer_mapping_with(
        &stack.sdk,
        &stack.name("EVENTS_STREAM"),
        Notifier::new(notifications.clone()),
        &stack.dead_letter_dir(),
        config,
    )
    .await
    .unwrap();
    mapping.drain().await.unwrap();
}

/// reservation id → the versions its messages carried, in the order received.
fn by_reservation(received: &[ReceivedNotification]) -> BTreeMap<String, Vec<u64>> {
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in received {
        versions
            .entry(r.message.reservation_id.clone())
            .or_default()
            .push(r.message.version);
    }
    versions
}

#[tokio::test]
async fn each_event_is_one_message_in_order_after_redeliveries_and_a_kill_between_publish_and_record() {
    let stack = TestStack::start().await;
    let ids = five_events(&stack).await;
    let notifications = Arc::new(stack.notifications_through(KilledAfterPublish {
        inner: stack.notifications().await.channel().clone(),
        kills_left: AtomicUsize::new(2),
        window: adapters::sns::SNS_FIFO_DEDUP_WINDOW,
    }));
    notify(&stack, &notifications).await;
    // The whole stream again, twice (fresh mappings start at the trim horizon).
    notify(&stack, &notifications).await;
    notify(&stack, &notifications).await;

    let received = stack.received_notifications().await;
    let expected: BTreeMap<String, Vec<u64>> = [
        (ids[0].clone(), vec![1, 2]),
        (ids[1].clone(), vec![1]),
        (ids[2].clone(), vec![1, 2]),
    ]
    .into();
    assert_eq!(
        by_reservation(&received),
        expected,
        "one message per event, in version order"
    );
    // Each kill left a claim; the retry published again within the window, and the topic
    // absorbed it.
    assert_eq!(notifications.republished().within_window(), 2);
    assert_eq!(notifications.republished().after_window(), 0);

    // What a subscriber can rely on: the group is the reservation, the attributes filter.
    let cancel = received
        .iter()
        .find(|r| r.message.reservation_id == ids[2] && r.message.version == 2)
        .unwrap();
    assert_eq!(cancel.message_group_id.as_deref(), Some(ids[2].as_str()));
    assert_eq!(cancel.kind_attribute.as_deref(), Some("ReservationCancelled"));
    assert_eq!(cancel.guest_attribute.as_deref(), Some("cy"));
    assert_eq!(cancel.message.kind, "ReservationCancelled");
    assert_eq!(cancel.message.subject, "Your reservation is cancelled");
    assert!(cancel.message.body.contains(&ids[2]), "{}", cancel.message.body);

    // Each was recorded once, with the topic's receipt, and no claim is left open.
    let items = stack.scan_all(&stack.name("NOTIFICATIONS_TABLE")).await;
    let sent: Vec<_> = items
        .iter()
        .filter(|i| i["item_type"].as_s().is_ok_and(|t| t == "Notification"))
        .collect();
    assert_eq!(sent.len(), 5);
    assert!(sent.iter().all(|i| i["message_id"].as_s().is_ok_and(|m| !m.is_empty())));
    assert!(items.iter().all(|i| !i.contains_key("pending_event_id")), "{items:?}");
}

#[tokio::test]
async fn a_repeat_after_the_dedup_window_is_counted_and_reported() {
    let stack = TestStack::start().await;
    five_events(&stack).await;
    // A window of zero: the retry after the kill comes "too late" for the topic.
    let (emitter, lines) = telemetry::Emitter::memory();
    let notifications = Arc::new(
        stack
            .notifications_through(KilledAfterPublish {
                inner: stack.notifications().await.channel().clone(),
                kills_left: AtomicUsize::new(1),
                window: time::Duration::ZERO,
            })
            .with_metrics(emitter),
    );
    notify(&stack, &notifications).await;
    assert_eq!(notifications.republished().after_window(), 1);
    assert_eq!(notifications.republished().within_window(), 0);
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let metric: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(metric["NotificationsRepublishedAfterDedupWindow"], 1.0);
    assert_eq!(metric["Function"], "notifier");
}

#[tokio::test]
async fn a_publish_refused_for_good_is_dead_lettered_whole_with_the_reason() {
    let stack = TestStack::start().await;
    five_events(&stack).await;
    let notifications = Arc::new(stack.notifications().await);
    // The topic is gone: SNS answers NotFound, and will for every retry.
    aws_sdk_sns::Client::new(&stack.sdk)
        .delete_topic()
        .topic_arn(notifications.channel().topic_arn())
        .send()
        .await
        .unwrap();
    notify(&stack, &notifications).await;

    let letters = JsonLinesDeadLetters::new(stack.dead_letter_dir().join("notifier-dead-letters.jsonl"))
        .read_all()
        .unwrap();
    // The three reservations' first events are refused; each one's cancel then waits for it (a
    // gap, dead-lettered with the version it waits for).
    assert_eq!(letters.len(), 5, "{letters:?}");
    let refused: Vec<_> = letters
        .iter()
        .filter(|l| l.reason.contains("Publish(notification)"))
        .collect();
    assert_eq!(refused.len(), 3, "{letters:?}");
    for letter in &refused {
        assert!(letter.reason.contains("NotFound"), "{}", letter.reason);
        // Whole: the Kinesis record as the function received it, its event inside.
        use base64::Engine;
        let data = letter.record["kinesis"]["data"].as_str().unwrap();
        let data = base64::engine::general_purpose::STANDARD.decode(data).unwrap();
        let envelope: serde_json::Value = serde_json::from_slice(&data).unwrap();
        assert_eq!(envelope["event_type"], "ReservationCreated");
    }
    // Nothing was recorded as sent, and no claim is left: nothing was published.
    let items = stack.scan_all(&stack.name("NOTIFICATIONS_TABLE")).await;
    assert!(
        items
            .iter()
            .all(|i| i["item_type"].as_s().is_ok_and(|t| t != "Notification") && !i.contains_key("pending_event_id")),
        "{items:?}"
    );

    // Once the topic is back, re-driving the letters publishes each event once, in order, and
    // counts no repeat. (Counted from here: above, on a slow machine, an invocation the mapping
    // timed out between its claim and SNS's refusal is retried, and that retry counts a repeat
    // of a publish that never happened.)
    let repeats_before = notifications.republished().within_window() + notifications.republished().after_window();
    let topic = devstack::channel::provision(
        &aws_sdk_sns::Client::new(&stack.sdk),
        &aws_sdk_sqs::Client::new(&stack.sdk),
        notifications.channel().topic_arn().rsplit(':').next().unwrap(),
        stack.channel().await.queue_url.rsplit('/').next().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(topic.topic_arn, notifications.channel().topic_arn());
    let handler = consumers::ConsumerHandler::new(
        Notifier::new(notifications.clone()),
        dead_letters::MemoryDeadLetters::default(),
    );
    for letter in &letters {
        let record: aws_lambda_events::event::kinesis::KinesisEventRecord =
            serde_json::from_value(letter.record.clone()).unwrap();
        let mut event = aws_lambda_events::event::kinesis::KinesisEvent::default();
        event.records.push(record);
        // Letters in the order they were written: each reservation's v1 before its cancel.
        let (_, stats) = handler.handle(&event).await;
        assert_eq!(stats.applied, 1, "{}", letter.reason);
    }
    assert_eq!(
        by_reservation(&stack.received_notifications().await)
            .values()
            .map(Vec::len)
            .sum::<usize>(),
        5
    );
    assert_eq!(
        notifications.republished().within_window() + notifications.republished().after_window(),
        repeats_before
    );
}
