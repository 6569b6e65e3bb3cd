//! The polling publisher against an in-memory outbox (index, marks and lease with the DynamoDB
//! adapter's semantics) and a fault-injecting sink: order, no loss, index lag, poison items, the
//! lease between two pollers, a crash mid-batch, and the recovery sweep.

use crate::common::{FlakySink, assert_all_accepted_first_in_version_order, assert_all_accepted_in_version_order};
use adapters::InMemoryOutbox;
use dead_letters::MemoryDeadLetters;
use domain::EventEnvelope;
use domain::ports::{OutboxKey, PublisherLease};
use relay::{EventSink, Poller, PollerSettings, PublishPolicy, PutOutcome, SinkError, SinkRecord};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

fn envelope(reservation: &str, version: u64) -> EventEnvelope {
    serde_json::from_value(serde_json::json!({
        "event_id": ulid::Ulid::new().to_string(),
        "event_type": if version == 1 { "ReservationCreated" } else { "ReservationCancelled" },
        "aggregate_type": "Reservation",
        "aggregate_id": reservation,
        "version": version,
        "occurred_at": "2026-11-24T10:00:00Z",
        "payload": {},
        "trace_id": "t",
    }))
    .unwrap()
}

fn envelope_now(reservation: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        occurred_at: time::OffsetDateTime::now_utc(),
        ..envelope(reservation, version)
    }
}

fn key(reservation: &str, version: u64) -> OutboxKey {
    OutboxKey {
        aggregate_id: reservation.into(),
        version,
    }
}

/// One sink shared by several pollers, with a network's worth of latency per call so that their
/// polls overlap.
struct Shared(Arc<FlakySink>);

impl EventSink for Shared {
    async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, SinkError> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.0.put_records(records).await
    }
}

type TestPoller = Poller<Arc<InMemoryOutbox>, Arc<InMemoryOutbox>, Shared, MemoryDeadLetters>;

fn fast_settings() -> PollerSettings {
    PollerSettings {
        interval: Duration::from_millis(2),
        batch_limit: 100,
        lease_duration: Duration::from_millis(300),
        lease_margin: Duration::from_millis(100),
        drain_settle: Duration::from_millis(20),
    }
}

fn fast_policy() -> PublishPolicy {
    PublishPolicy {
        max_failed_rounds: 3,
        backoff: domain::Backoff::new(Duration::from_millis(1), Duration::from_millis(20)),
    }
}

fn poller(outbox: &Arc<InMemoryOutbox>, sink: &Arc<FlakySink>, holder: &str) -> TestPoller {
    Poller::new(
        outbox.clone(),
        outbox.clone(),
        Shared(sink.clone()),
        MemoryDeadLetters::default(),
        fast_policy(),
        fast_settings(),
    )
    .with_holder(holder)
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[tokio::test]
async fn a_poll_publishes_pending_events_in_version_order_and_clears_their_marks() {
    let outbox = Arc::new(InMemoryOutbox::default());
    for r in ["A", "B", "C"] {
        outbox.commit(envelope(r, 1));
    }
    outbox.commit(envelope("A", 2));
    outbox.commit(envelope("B", 2));
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let stats = poller(&outbox, &sink, "p").poll_once(soon()).await.unwrap();

    assert_eq!((stats.pending, stats.published, stats.marked), (5, 5, 5));
    assert!(outbox.unpublished().is_empty());
    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 5);
    assert_all_accepted_in_version_order(&accepted, [("A".into(), 2), ("B".into(), 2), ("C".into(), 1)]);
    // Marks follow version order within each reservation.
    let marks = outbox.marks();
    let position = |k: OutboxKey| marks.iter().position(|m| *m == k).unwrap();
    assert!(position(key("A", 1)) < position(key("A", 2)));
    assert!(position(key("B", 1)) < position(key("B", 2)));
}

#[tokio::test]
async fn an_event_waits_while_the_index_does_not_show_its_unpublished_predecessor() {
    let outbox = Arc::new(InMemoryOutbox::default());
    outbox.commit(envelope("A", 1));
    outbox.commit(envelope("A", 2));
    outbox.hide_from_index(&key("A", 1));
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let poller = poller(&outbox, &sink, "p");

    let stats = poller.poll_once(soon()).await.unwrap();
    assert_eq!((stats.pending, stats.deferred, stats.published), (1, 1, 0));
    assert!(sink.accepted().is_empty(), "v2 must not go before v1");

    outbox.show_in_index(&key("A", 1));
    let stats = poller.poll_once(soon()).await.unwrap();
    assert_eq!(stats.published, 2);
    assert_eq!(sink.accepted(), [("A".to_string(), 1), ("A".to_string(), 2)]);
}

#[tokio::test]
async fn a_version_missing_from_the_index_between_two_others_stops_its_reservation_there() {
    let outbox = Arc::new(InMemoryOutbox::default());
    for v in 1..=3 {
        outbox.commit(envelope("A", v));
    }
    outbox.hide_from_index(&key("A", 2));
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let stats = poller(&outbox, &sink, "p").poll_once(soon()).await.unwrap();
    assert_eq!((stats.published, stats.deferred), (1, 1));
    assert_eq!(outbox.unpublished(), [key("A", 2), key("A", 3)]);
}

/// Accepts nothing of one reservation.
struct RejectsReservation(&'static str, Arc<FlakySink>);

impl EventSink for RejectsReservation {
    async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, SinkError> {
        let mut outcomes = Vec::new();
        for record in records {
            if record.partition_key == self.0 {
                outcomes.push(PutOutcome::Failed {
                    code: "InternalFailure".into(),
                    message: "injected".into(),
                });
            } else {
                outcomes.extend(self.1.put_records(&[record]).await?);
            }
        }
        Ok(outcomes)
    }
}

#[tokio::test]
async fn what_could_not_be_put_stays_marked_and_its_later_versions_are_not_sent() {
    let outbox = Arc::new(InMemoryOutbox::default());
    outbox.commit(envelope("A", 1));
    outbox.commit(envelope("A", 2));
    outbox.commit(envelope("B", 1));
    let accepted = Arc::new(FlakySink::new(1, 0.0));
    let poller = Poller::new(
        outbox.clone(),
        outbox.clone(),
        RejectsReservation("A", accepted.clone()),
        MemoryDeadLetters::default(),
        fast_policy(),
        fast_settings(),
    );
    let stats = poller.poll_once(soon()).await.unwrap();
    assert!(stats.publish.gave_up);
    assert_eq!(accepted.accepted(), [("B".to_string(), 1)]);
    assert_eq!(outbox.unpublished(), [key("A", 1), key("A", 2)]);
}

#[tokio::test]
async fn an_undecodable_item_is_dead_lettered_with_its_key_and_does_not_block_the_rest() {
    let outbox = Arc::new(InMemoryOutbox::default());
    outbox.commit_undecodable(key("A", 1), "missing field `event_type`");
    outbox.commit(envelope("A", 2));
    outbox.commit(envelope("B", 1));
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let poller = poller(&outbox, &sink, "p");
    let stats = poller.poll_once(soon()).await.unwrap();

    assert_eq!((stats.dead_lettered, stats.published), (1, 2));
    assert!(outbox.unpublished().is_empty());
    let letters = poller_dead_letters(&poller);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].function, "poller");
    assert_eq!(letters[0].reason, "missing field `event_type`");
    assert_eq!(letters[0].record["aggregate_id"], "A");
    assert_eq!(letters[0].record["version"], 1);
}

fn poller_dead_letters(poller: &TestPoller) -> Vec<dead_letters::DeadLetter> {
    poller.dead_letters().letters()
}

#[tokio::test]
async fn only_the_lease_holder_polls_and_an_expired_lease_is_taken_over() {
    let outbox = Arc::new(InMemoryOutbox::default());
    outbox.commit(envelope("A", 1));
    let sink = Arc::new(FlakySink::new(1, 0.0));
    // Another poller holds the lease and then stops answering (a crash).
    let now = time::OffsetDateTime::now_utc();
    assert!(
        outbox
            .acquire("crashed", now, now + time::Duration::milliseconds(200))
            .await
            .unwrap()
    );

    let started = Instant::now();
    let stats = poller(&outbox, &sink, "p")
        .run(Instant::now() + Duration::from_secs(5), true, std::future::pending())
        .await;
    assert!(stats.lease_busy > 0, "it waited for the lease: {stats:?}");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(stats.published, 1);
    assert!(stats.drained);
    assert_eq!(outbox.lease_holder(), None, "a run gives the lease back when it ends");
}

/// 3,000 events of 1,500 reservations (up to 3 versions each), a reservation's versions committed
/// one after another while the pollers run, through a sink that fails 20% of records and
/// throttles in bursts.
fn workload() -> Vec<(String, u64)> {
    (0..1_500)
        .flat_map(|r| (1..=(r % 3 + 1) as u64).map(move |v| (format!("R{r:05}"), v)))
        .collect()
}

/// Commits `events` in chunks while the pollers run; resolves once they are all published.
fn produce(outbox: &Arc<InMemoryOutbox>, events: Vec<(String, u64)>) -> futures::future::Shared<BoxFuture> {
    let producing = Arc::new(AtomicBool::new(true));
    {
        let outbox = outbox.clone();
        let producing = producing.clone();
        tokio::spawn(async move {
            for chunk in events.chunks(60) {
                for (id, v) in chunk {
                    outbox.commit(envelope(id, *v));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            producing.store(false, Ordering::SeqCst);
        });
    }
    let outbox = outbox.clone();
    let done: BoxFuture = Box::pin(async move {
        while producing.load(Ordering::SeqCst) || !outbox.unpublished().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    futures::FutureExt::shared(done)
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Two pollers at once: the lease lets one publish at a time, so nothing is published twice
/// concurrently and no reservation's accepted versions ever go back. (Without the lease this
/// test fails: both publish the same runs, interleaved.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pollers_at_once_lose_nothing_and_never_step_back() {
    let outbox = Arc::new(InMemoryOutbox::default());
    let sink = Arc::new(FlakySink::new(42, 0.2));
    let done = produce(&outbox, workload());
    let far = Instant::now() + Duration::from_secs(60);
    let (a, b) = (poller(&outbox, &sink, "a"), poller(&outbox, &sink, "b"));
    let (a_stats, b_stats) = tokio::join!(a.run(far, false, done.clone()), b.run(far, false, done));

    assert!(Instant::now() < far, "the pollers drained the outbox");
    let state = sink.state.lock().unwrap();
    assert!(
        state.failed_records > 100 && state.throttled_calls > 0,
        "faults were injected"
    );
    assert!(
        a_stats.lease_busy + b_stats.lease_busy > 0,
        "the pollers contended for the lease"
    );
    assert_all_accepted_in_version_order(&state.accepted, workload());
    println!(
        "accepted {} puts for 3000 events; a: {a_stats:?}; b: {b_stats:?}",
        state.accepted.len()
    );
}

/// A poller killed mid-run (its future dropped: no lease release, puts and marks cut short) is
/// replaced once its lease expires. What it published but had not marked is published again: a
/// run of duplicates, which consumers skip; nothing is lost and no version is seen before the one
/// it follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_killed_mid_batch_is_replaced_without_loss_or_gaps() {
    let outbox = Arc::new(InMemoryOutbox::default());
    let sink = Arc::new(FlakySink::new(42, 0.2));
    let done = produce(&outbox, workload());
    let far = Instant::now() + Duration::from_secs(60);
    // A lease far longer than the time to kill one poller and start the other, however slow the
    // machine: the replacement always finds it held.
    let patient = || PollerSettings {
        lease_duration: Duration::from_millis(1_500),
        lease_margin: Duration::from_millis(500),
        ..fast_settings()
    };
    let with = |holder: &str| {
        Poller::new(
            outbox.clone(),
            outbox.clone(),
            Shared(sink.clone()),
            MemoryDeadLetters::default(),
            fast_policy(),
            patient(),
        )
        .with_holder(holder)
    };
    let (a, b) = (with("a"), with("b"));
    let killed = tokio::time::timeout(Duration::from_millis(250), a.run(far, false, std::future::pending())).await;
    assert!(killed.is_err(), "a was still running when it was killed");
    assert_eq!(
        outbox.lease_holder().as_deref(),
        Some("a"),
        "the killed poller kept its lease"
    );
    let b_stats = b.run(far, false, done).await;

    assert!(Instant::now() < far, "the replacement drained the outbox");
    assert!(b_stats.lease_busy > 0, "the replacement waited for the lease to expire");
    let state = sink.state.lock().unwrap();
    assert_all_accepted_first_in_version_order(&state.accepted, workload());
    println!("accepted {} puts for 3000 events; b: {b_stats:?}", state.accepted.len());
}

#[tokio::test]
async fn the_sweep_publishes_again_everything_committed_since_a_time() {
    let outbox = Arc::new(InMemoryOutbox::default());
    outbox.commit(envelope("OLD", 1));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = time::OffsetDateTime::now_utc();
    outbox.commit(envelope("A", 1));
    outbox.commit(envelope("A", 2));
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let poller = poller(&outbox, &sink, "p");
    // Everything was published once already (by the stream relay, say).
    poller.poll_once(soon()).await.unwrap();
    let first = sink.accepted().len();

    let stats = poller.sweep(since, soon()).await.unwrap();
    assert_eq!(stats.swept, 2);
    assert!(stats.drained);
    let again = &sink.accepted()[first..];
    assert_eq!(again, [("A".to_string(), 1), ("A".to_string(), 2)]);
    assert!(outbox.unpublished().is_empty());
}

#[tokio::test]
async fn the_sweep_waits_for_an_index_that_shows_its_marks_late() {
    let outbox = Arc::new(InMemoryOutbox::default());
    let since = time::OffsetDateTime::now_utc();
    outbox.commit(envelope("A", 1));
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let poller = poller(&outbox, &sink, "p");
    poller.poll_once(soon()).await.unwrap();
    // The sweep's marks reach the index 10 ms late (its settle time is 20 ms).
    outbox.hide_from_index(&key("A", 1));
    let shown = {
        let outbox = outbox.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            outbox.show_in_index(&key("A", 1));
        })
    };
    let stats = poller.sweep(since, soon()).await.unwrap();
    shown.await.unwrap();
    assert_eq!((stats.swept, stats.published), (1, 1));
    assert_eq!(
        sink.accepted().len(),
        2,
        "published once by the poll, once by the sweep"
    );
}

/// A sweep larger than one invocation: what it marked but had no time to publish is published by
/// plain runs after it (which is what the README tells operators to invoke), each event once.
#[tokio::test]
async fn a_sweep_cut_short_by_its_deadline_is_finished_by_plain_runs() {
    let outbox = Arc::new(InMemoryOutbox::default());
    let since = time::OffsetDateTime::now_utc();
    for r in 0..30 {
        outbox.commit(envelope_now(&format!("R{r:02}"), 1));
        outbox.commit(envelope_now(&format!("R{r:02}"), 2));
    }
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let poller = poller(&outbox, &sink, "p");
    poller.poll_once(soon()).await.unwrap();
    let first = sink.accepted().len();
    assert_eq!(first, 60);

    // Out of time at once: everything is marked again, nothing published.
    let cut = poller.sweep(since, Instant::now()).await.unwrap();
    assert_eq!((cut.swept, cut.published, cut.drained), (60, 0, false));
    assert_eq!(outbox.unpublished().len(), 60);

    let rest = poller
        .invoke(&serde_json::json!({}), Instant::now() + Duration::from_millis(100))
        .await
        .unwrap();
    assert!(rest.drained);
    assert!(outbox.unpublished().is_empty());
    let again = &sink.accepted()[first..];
    let distinct: std::collections::HashSet<_> = again.iter().collect();
    assert_eq!(
        (again.len(), distinct.len()),
        (60, 60),
        "each swept event published once more"
    );
    assert_all_accepted_in_version_order(
        again,
        (0..30).flat_map(|r| [(format!("R{r:02}"), 1), (format!("R{r:02}"), 2)]),
    );
}

/// The values of one metric across EMF lines.
fn metric_values(lines: &[String], name: &str) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()[name].as_f64())
        .collect()
}

#[tokio::test]
async fn an_invocation_whose_every_poll_fails_is_an_error_and_counts_its_failed_polls() {
    let outbox = Arc::new(InMemoryOutbox::default());
    outbox.commit(envelope("A", 1));
    // More failures than the run has time for: the table stays unreachable throughout.
    for _ in 0..10_000 {
        outbox.fail_next_call(domain::ports::StoreErrorKind::Other);
    }
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let (emitter, lines) = telemetry::Emitter::memory();
    let poller = poller(&outbox, &sink, "p").with_metrics(emitter);
    let deadline = Instant::now() + Duration::from_millis(50);

    let error = poller.invoke(&serde_json::json!({}), deadline).await.unwrap_err();
    let relay::PollError::EveryPollFailed { failed } = error else {
        panic!("expected EveryPollFailed, got {error:?}");
    };
    assert!(failed > 0);
    let lines = lines.lock().unwrap();
    assert_eq!(metric_values(&lines, "FailedPolls"), [failed as f64]);
    assert_eq!(metric_values(&lines, "Polls"), [0.0]);
    assert!(sink.accepted().is_empty());
    assert_eq!(outbox.unpublished(), [key("A", 1)]);
}

#[tokio::test]
async fn a_poll_reports_how_long_the_oldest_unpublished_event_has_waited() {
    let outbox = Arc::new(InMemoryOutbox::default());
    let mut waiting = envelope("A", 1);
    waiting.occurred_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
    outbox.commit(waiting);
    outbox.commit(envelope_now("B", 1));
    // Kinesis refuses everything: the events stay, and so does their age.
    let sink = Arc::new(FlakySink::new(1, 1.0));
    let (emitter, lines) = telemetry::Emitter::memory();
    let poller = poller(&outbox, &sink, "p").with_metrics(emitter);

    let stats = poller.poll_once(soon()).await.unwrap();
    assert_eq!(stats.published, 0);
    let age = stats.oldest_pending_age.expect("an age when events are pending");
    assert!(
        (Duration::from_secs(300)..Duration::from_secs(360)).contains(&age),
        "{age:?}"
    );
    let emitted = metric_values(&lines.lock().unwrap(), "OldestPendingAge");
    assert_eq!(emitted, [age.as_secs_f64() * 1000.0]);
}

#[tokio::test]
async fn an_invocation_that_found_the_lease_taken_is_no_error() {
    let outbox = Arc::new(InMemoryOutbox::default());
    outbox.commit(envelope("A", 1));
    let now = time::OffsetDateTime::now_utc();
    assert!(
        outbox
            .acquire("other", now, now + time::Duration::minutes(1))
            .await
            .unwrap()
    );
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let (emitter, lines) = telemetry::Emitter::memory();
    let poller = poller(&outbox, &sink, "p").with_metrics(emitter);

    let stats = poller
        .invoke(&serde_json::json!({}), Instant::now() + Duration::from_millis(30))
        .await
        .unwrap();
    assert_eq!((stats.polls, stats.failed_polls), (0, 0));
    assert!(stats.lease_busy > 0);
    let lines = lines.lock().unwrap();
    assert_eq!(metric_values(&lines, "LeaseBusy"), [stats.lease_busy as f64]);
    assert_eq!(metric_values(&lines, "FailedPolls"), [0.0]);
}

/// The poller's futures can be spawned (the local stack and benchmarks run it on its own task).
#[test]
fn a_poll_and_a_run_are_send() {
    fn spawnable<F: std::future::Future + Send>(_: F) {}
    let outbox = Arc::new(InMemoryOutbox::default());
    let sink = Arc::new(FlakySink::new(1, 0.0));
    let poller = poller(&outbox, &sink, "p");
    spawnable(poller.poll_once(soon()));
    spawnable(poller.run(soon(), true, std::future::pending::<()>()));
    spawnable(poller.sweep(time::OffsetDateTime::now_utc(), soon()));
}
