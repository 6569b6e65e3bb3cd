//! The polling publisher: the second relay mode, and the recovery sweep after an outage of the
//! stream relay longer than the stream's retention (docs/adr/0004-polling-publisher.md).
//!
//! Each poll reads the unpublished events from the outbox's sparse index, publishes them with the
//! stream relay's publish core ([`publish_in_order`]: same envelope, same per-reservation order
//! rule, same failure handling), then clears each published event's mark with a conditional write.
//! Only the holder of the publisher lease polls, so two pollers never interleave their puts of one
//! reservation; a crashed holder's lease expires and another takes over.

use crate::publish::{PublishPolicy, PublishReport, publish_in_order};
use crate::sink::{EventSink, SinkRecord};
use dead_letters::{DeadLetter, DeadLetters};
use domain::ports::{OutboxKey, PendingEvent, PublisherLease, StoreError, UndecodableItem, UnpublishedEvents};
use futures::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::Instant;

/// Reservations checked or marked at once.
const CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollerSettings {
    /// Pause after a poll that did not fill a batch.
    pub interval: Duration,
    /// Events read per poll.
    pub batch_limit: usize,
    /// How long a taken lease lasts; it is renewed once half of it has passed.
    pub lease_duration: Duration,
    /// Publishing stops this long before the lease ends, so that a put still in flight (bounded by
    /// the Kinesis client's operation timeout) lands before anyone else can hold the lease.
    pub lease_margin: Duration,
    /// A run that stops once drained (the sweep) stops only after the index has stayed empty this
    /// long: a global secondary index may show newly marked items a moment late.
    pub drain_settle: Duration,
}

impl Default for PollerSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            batch_limit: 500,
            lease_duration: Duration::from_secs(15),
            lease_margin: Duration::from_secs(5),
            drain_settle: Duration::from_secs(2),
        }
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone)]
pub struct PollStats {
    /// Events the index returned.
    pub pending: usize,
    pub published: usize,
    /// Events left for a later poll because an earlier version of their reservation is still
    /// unpublished but not yet visible in the index.
    pub deferred: usize,
    pub dead_lettered: usize,
    pub marked: usize,
    /// Marks that failed; those events are published again by a later poll (a duplicate).
    pub mark_failures: usize,
    pub publish: PublishReport,
    /// How long the oldest event the index returned has waited since it was committed: polling
    /// mode's iterator age.
    pub oldest_pending_age: Option<Duration>,
}

impl PollStats {
    /// A poll's stats before it publishes anything: what the index returned, and how long the
    /// oldest of it has waited (the index is in event id (ULID) order, so the oldest waiting
    /// event is in this page).
    fn of_pending(pending: &[PendingEvent], now: OffsetDateTime) -> Self {
        let oldest = pending
            .iter()
            .filter_map(|p| p.event.as_ref().ok())
            .map(|e| e.occurred_at)
            .min();
        Self {
            pending: pending.len(),
            oldest_pending_age: oldest.map(|at| Duration::try_from(now - at).unwrap_or_default()),
            ..Default::default()
        }
    }

    pub fn metrics(&self) -> telemetry::MetricSet {
        let mut metrics = telemetry::metrics("poller");
        metrics
            .count("EventsRelayed", self.published as f64)
            .count("PendingEvents", self.pending as f64)
            .count("DeferredEvents", self.deferred as f64)
            .count("PutRecordsFailures", self.publish.failed_records as f64)
            .count("PutRecordsRetries", f64::from(self.publish.retries))
            .count("DeadLettered", self.dead_lettered as f64)
            .count("MarkFailures", self.mark_failures as f64)
            .count(
                crate::handler::PUBLISH_REFUSED,
                f64::from(u8::from(self.publish.refused)),
            );
        if let Some(age) = self.oldest_pending_age {
            metrics.milliseconds("OldestPendingAge", age.as_secs_f64() * 1000.0);
        }
        metrics
    }
}

/// What a run (many polls) did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunStats {
    pub polls: u64,
    pub published: u64,
    pub dead_lettered: u64,
    /// Polls skipped because another poller held the lease.
    pub lease_busy: u64,
    /// Polls that failed on the outbox table (logged; the next poll tries again).
    pub failed_polls: u64,
    /// For a sweep: events marked unpublished again.
    pub swept: u64,
    /// Whether the last poll found nothing left to publish.
    pub drained: bool,
}

impl RunStats {
    /// The run's metrics. A scheduled invocation can end without error while polls fail (each is
    /// logged and tried again), so `FailedPolls` is what the template's poller alarm watches.
    pub fn metrics(&self) -> telemetry::MetricSet {
        let mut metrics = telemetry::metrics("poller");
        metrics
            .count("Polls", self.polls as f64)
            .count("FailedPolls", self.failed_polls as f64)
            .count("LeaseBusy", self.lease_busy as f64)
            .count("SweptEvents", self.swept as f64);
        metrics
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("reading the unpublished events failed")]
    Outbox(#[source] StoreError),
    #[error("every poll of this run failed ({failed} tries, each logged); nothing was published")]
    EveryPollFailed { failed: u64 },
    #[error("sweep_since must be an RFC 3339 time, e.g. 2026-11-20T00:00:00Z, got {0:?}")]
    BadSweepTime(String),
}

/// What the poller Lambda is asked to do: the schedule's event (any JSON without `sweep_since`)
/// polls until the invocation's deadline; `{"sweep_since": "<RFC 3339>"}` runs the recovery sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollerRequest {
    Poll,
    Sweep { since: OffsetDateTime },
}

impl PollerRequest {
    pub fn from_payload(payload: &serde_json::Value) -> Result<Self, PollError> {
        match payload.get("sweep_since") {
            None => Ok(Self::Poll),
            Some(value) => {
                let text = value.as_str().unwrap_or_default();
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map(|since| Self::Sweep { since })
                    .map_err(|_| PollError::BadSweepTime(value.to_string()))
            }
        }
    }
}

pub struct Poller<Q, L, S, D> {
    outbox: Q,
    lease: L,
    sink: S,
    dead_letters: D,
    policy: PublishPolicy,
    settings: PollerSettings,
    holder: String,
    metrics: telemetry::Emitter,
}

/// One reservation's events of a poll, in version order.
struct ReservationBatch {
    events: Vec<BatchEvent>,
}

/// An event of a poll: publishable or poison, and whether this poll has settled it (published
/// it, or stored its dead letter), which is what allows clearing its mark.
struct BatchEvent {
    key: OutboxKey,
    record: Result<SinkRecord, UndecodableItem>,
    settled: bool,
}

fn batch_event(event: PendingEvent) -> BatchEvent {
    let key = event.key;
    let record = event.event.and_then(|envelope| {
        let record = SinkRecord::of_envelope(&envelope).map_err(|reason| UndecodableItem {
            reason,
            item: serde_json::to_value(&envelope).unwrap_or_default(),
        })?;
        if record.partition_key != key.aggregate_id {
            return Err(UndecodableItem {
                reason: format!(
                    "envelope aggregate_id {} is not the item's key {}",
                    record.partition_key, key.aggregate_id
                ),
                item: serde_json::to_value(&envelope).unwrap_or_default(),
            });
        }
        Ok(record)
    });
    BatchEvent {
        key,
        record,
        settled: false,
    }
}

/// Groups a poll's events by reservation (first appearance first), each in version order, cut at
/// the first missing version: the index may not show that one yet, and nothing after it may go
/// before it.
fn by_reservation(events: Vec<PendingEvent>) -> (Vec<ReservationBatch>, usize) {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<PendingEvent>> = HashMap::new();
    for event in events {
        let id = event.key.aggregate_id.clone();
        if !groups.contains_key(&id) {
            order.push(id.clone());
        }
        groups.entry(id).or_default().push(event);
    }
    let mut cut = 0;
    let batches = order
        .into_iter()
        .map(|id| {
            let mut events = groups.remove(&id).unwrap_or_default();
            events.sort_by_key(|e| e.key.version);
            events.dedup_by_key(|e| e.key.version);
            let consecutive = events
                .windows(2)
                .position(|w| w[1].key.version != w[0].key.version + 1)
                .map_or(events.len(), |i| i + 1);
            cut += events.len() - consecutive;
            events.truncate(consecutive);
            ReservationBatch {
                events: events.into_iter().map(batch_event).collect(),
            }
        })
        .collect();
    (batches, cut)
}

impl<Q, L, S, D> Poller<Q, L, S, D>
where
    Q: UnpublishedEvents,
    L: PublisherLease,
    S: EventSink,
    D: DeadLetters,
{
    pub fn new(outbox: Q, lease: L, sink: S, dead_letters: D, policy: PublishPolicy, settings: PollerSettings) -> Self {
        Self {
            outbox,
            lease,
            sink,
            dead_letters,
            policy,
            settings,
            holder: format!("poller-{}", ulid::Ulid::new()),
            metrics: telemetry::Emitter::Off,
        }
    }

    /// Emits each poll's metrics (EMF) here; off unless set.
    pub fn with_metrics(mut self, emitter: telemetry::Emitter) -> Self {
        self.metrics = emitter;
        self
    }

    /// Names this poller in the lease (default: a fresh ULID), e.g. the Lambda request id.
    pub fn with_holder(mut self, holder: impl Into<String>) -> Self {
        self.holder = holder.into();
        self
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn dead_letters(&self) -> &D {
        &self.dead_letters
    }

    /// One poll, for the lease holder: read, publish in order, mark. Puts stop before `deadline`.
    pub async fn poll_once(&self, deadline: Instant) -> Result<PollStats, PollError> {
        let pending = self
            .outbox
            .pending(self.settings.batch_limit)
            .await
            .map_err(PollError::Outbox)?;
        let mut stats = PollStats::of_pending(&pending, OffsetDateTime::now_utc());
        if pending.is_empty() {
            return Ok(stats);
        }
        let (batches, cut) = by_reservation(pending);
        stats.deferred = cut;
        let mut batches = self.without_unpublished_predecessors(batches, &mut stats).await?;
        self.dead_letter_poison(&mut batches, &mut stats).await;
        self.publish(&mut batches, deadline, &mut stats).await;
        self.clear_marks(&batches, &mut stats).await;
        tracing::info!(
            pending = stats.pending,
            published = stats.published,
            deferred = stats.deferred,
            dead_lettered = stats.dead_lettered,
            calls = stats.publish.calls,
            retries = stats.publish.retries,
            "poll done"
        );
        self.metrics.emit(&stats.metrics());
        Ok(stats)
    }

    /// Sends the poison events to the dead letters, before anything is published. A reservation
    /// whose dead letter cannot be stored stops there: nothing after it is published or marked
    /// this time.
    async fn dead_letter_poison(&self, batches: &mut [ReservationBatch], stats: &mut PollStats) {
        for batch in batches {
            for e in 0..batch.events.len() {
                let event = &mut batch.events[e];
                let Err(undecodable) = &event.record else {
                    continue;
                };
                let key = &event.key;
                match self.dead_letters.send(&dead_letter(key, undecodable)).await {
                    Ok(()) => {
                        stats.dead_lettered += 1;
                        event.settled = true;
                        tracing::error!(%key, reason = %undecodable.reason, "outbox item cannot be published; dead-lettered");
                    }
                    Err(error) => {
                        tracing::error!(%key, reason = %undecodable.reason, %error, "outbox item cannot be published and its dead letter could not be stored; will retry");
                        stats.deferred += batch.events.len() - e;
                        batch.events.truncate(e);
                        break;
                    }
                }
            }
        }
    }

    /// Publishes every publishable event with the relay's ordering rule and settles what Kinesis
    /// accepted; the rest stays marked for the next poll.
    async fn publish(&self, batches: &mut [ReservationBatch], deadline: Instant, stats: &mut PollStats) {
        let records: Vec<SinkRecord> = batches
            .iter()
            .flat_map(|batch| &batch.events)
            .filter_map(|event| event.record.as_ref().ok().cloned())
            .collect();
        let report = publish_in_order(&self.sink, &records, &self.policy, deadline).await;
        let publishable = batches
            .iter_mut()
            .flat_map(|batch| batch.events.iter_mut())
            .filter(|event| event.record.is_ok());
        for (event, published) in publishable.zip(&report.published) {
            event.settled = *published;
        }
        stats.published = report.published.iter().filter(|p| **p).count();
        if report.gave_up {
            tracing::warn!(
                unpublished = records.len() - stats.published,
                retries = report.retries,
                last_error = report.last_error.as_deref().unwrap_or(""),
                "publishing stopped; the rest stays marked for the next poll"
            );
        }
        stats.publish = report;
    }

    /// Clears the marks of the settled events. Marks go in version order per reservation and stop
    /// at its first unsettled event, so what stays marked is always a reservation's latest
    /// versions. (Futures built in a loop, not a closure, keep this future `Send` for callers
    /// that spawn it.)
    async fn clear_marks(&self, batches: &[ReservationBatch], stats: &mut PollStats) {
        let mut marks = Vec::with_capacity(batches.len());
        for batch in batches {
            marks.push(self.mark_settled(batch));
        }
        let outcomes: Vec<(usize, usize)> = futures::stream::iter(marks)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        stats.marked = outcomes.iter().map(|o| o.0).sum();
        stats.mark_failures = outcomes.iter().map(|o| o.1).sum();
    }

    /// Drops the reservations whose first event here is not version 1 while an earlier version
    /// is still unpublished (a consistent read of the table: the index may lag).
    async fn without_unpublished_predecessors(
        &self,
        batches: Vec<ReservationBatch>,
        stats: &mut PollStats,
    ) -> Result<Vec<ReservationBatch>, PollError> {
        let mut checks = Vec::with_capacity(batches.len());
        for batch in batches {
            checks.push(self.unless_predecessor_unpublished(batch));
        }
        let checked: Vec<Result<Result<ReservationBatch, usize>, StoreError>> =
            futures::stream::iter(checks).buffered(CONCURRENCY).collect().await;
        let mut kept = Vec::new();
        for result in checked {
            match result.map_err(PollError::Outbox)? {
                Ok(batch) => kept.push(batch),
                Err(held_back) => stats.deferred += held_back,
            }
        }
        Ok(kept)
    }

    /// Serves one Lambda invocation until `deadline`.
    ///
    /// A run in which no poll succeeded and at least one failed is an error, so that Lambda's
    /// `Errors` metric shows a poller that cannot reach its table (a run that found the lease
    /// held by another poller is not).
    pub async fn invoke(&self, payload: &serde_json::Value, deadline: Instant) -> Result<RunStats, PollError> {
        let stats = match PollerRequest::from_payload(payload)? {
            PollerRequest::Poll => self.run(deadline, false, std::future::pending()).await,
            PollerRequest::Sweep { since } => self.sweep(since, deadline).await?,
        };
        self.metrics.emit(&stats.metrics());
        if stats.polls == 0 && stats.failed_polls > 0 {
            return Err(PollError::EveryPollFailed {
                failed: stats.failed_polls,
            });
        }
        Ok(stats)
    }

    /// `Ok(Err(n))` when the batch (of n events) has to wait for an earlier version.
    async fn unless_predecessor_unpublished(
        &self,
        batch: ReservationBatch,
    ) -> Result<Result<ReservationBatch, usize>, StoreError> {
        match batch.events.first() {
            Some(BatchEvent { key, .. }) if key.version > 1 && self.outbox.earlier_unpublished(key).await? => {
                tracing::debug!(%key, "an earlier version is still unpublished; deferred");
                Ok(Err(batch.events.len()))
            }
            _ => Ok(Ok(batch)),
        }
    }

    /// Clears the marks of a reservation's settled events, lowest version first, up to the first
    /// unsettled one. Returns (marked, failed).
    async fn mark_settled(&self, batch: &ReservationBatch) -> (usize, usize) {
        let mut marked = 0;
        for BatchEvent { key, .. } in batch.events.iter().take_while(|event| event.settled) {
            if let Err(error) = self.outbox.mark_published(key).await {
                tracing::warn!(%key, %error, "could not mark an event published; it will be published again");
                return (marked, 1);
            }
            marked += 1;
        }
        (marked, 0)
    }

    /// Polls while holding the lease until `until` or `stop`, whichever comes first; with
    /// `until_drained`, also stops once polls have found nothing to publish for
    /// `settings.drain_settle`.
    pub async fn run<F: Future<Output = ()>>(&self, until: Instant, until_drained: bool, stop: F) -> RunStats {
        let mut stats = RunStats::default();
        let mut stop = std::pin::pin!(stop);
        // When the lease was last taken or renewed, while this poller holds it.
        let mut lease_taken: Option<Instant> = None;
        // Since when every poll found the index empty.
        let mut empty_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let mut busy = false;
            let renew_after = self.settings.lease_duration / 2;
            let must_renew = lease_taken.is_none_or(|taken| now.duration_since(taken) >= renew_after);
            if must_renew {
                let wall = OffsetDateTime::now_utc();
                let expiry = wall + self.settings.lease_duration;
                match self.lease.acquire(&self.holder, wall, expiry).await {
                    Ok(true) => lease_taken = Some(now),
                    Ok(false) => {
                        lease_taken = None;
                        stats.lease_busy += 1;
                        busy = true;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not take the publisher lease; trying again");
                        lease_taken = None;
                        stats.failed_polls += 1;
                        busy = true;
                    }
                }
            }
            let mut full = false;
            if let (false, Some(taken)) = (busy, lease_taken) {
                let lease_end = taken + self.settings.lease_duration.saturating_sub(self.settings.lease_margin);
                match self.poll_once(lease_end.min(until)).await {
                    Ok(poll) => {
                        stats.polls += 1;
                        stats.published += poll.published as u64;
                        stats.dead_lettered += poll.dead_lettered as u64;
                        stats.drained = poll.pending == 0;
                        if !stats.drained {
                            empty_since = None;
                        }
                        full = poll.pending >= self.settings.batch_limit && !poll.publish.gave_up;
                    }
                    Err(error) => {
                        stats.failed_polls += 1;
                        tracing::warn!(error = %telemetry::error_chain(&error), "poll failed; trying again");
                    }
                }
                if until_drained && stats.drained {
                    let since = *empty_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.settings.drain_settle {
                        break;
                    }
                }
            }
            if full {
                continue;
            }
            let wake = (Instant::now() + self.settings.interval).min(until);
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = &mut stop => break,
            }
        }
        if lease_taken.is_some()
            && let Err(error) = self.lease.release(&self.holder).await
        {
            tracing::warn!(%error, "could not release the publisher lease; it expires by itself");
        }
        stats
    }

    /// The recovery sweep: marks every event committed since `since` unpublished again, then
    /// polls until none is left (or `until`). Consumers take the re-published events that they
    /// already applied as duplicates.
    pub async fn sweep(&self, since: OffsetDateTime, until: Instant) -> Result<RunStats, PollError> {
        let swept = self
            .outbox
            .mark_unpublished_since(since)
            .await
            .map_err(PollError::Outbox)?;
        tracing::info!(swept, %since, "marked events unpublished again; publishing them");
        let mut stats = self.run(until, true, std::future::pending()).await;
        stats.swept = swept;
        if !stats.drained {
            // Sweeping again would mark everything once more and might never catch up.
            tracing::warn!(
                swept,
                published = stats.published,
                "the sweep ran out of time with events still marked: invoke the poller with {{}} \
                 (not the sweep again) until it answers \"drained\": true"
            );
        }
        Ok(stats)
    }
}

fn dead_letter(key: &OutboxKey, item: &UndecodableItem) -> DeadLetter {
    DeadLetter {
        function: "poller".into(),
        reason: item.reason.clone(),
        event_source_arn: None,
        event_id: item.item.get("event_id").and_then(|v| v.as_str()).map(str::to_owned),
        sequence_number: None,
        record: serde_json::json!({
            "aggregate_id": key.aggregate_id,
            "version": key.version,
            "item": item.item,
        }),
        dead_lettered_at: OffsetDateTime::now_utc(),
    }
}
