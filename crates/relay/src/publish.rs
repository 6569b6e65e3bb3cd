//! Ordered publishing under partial failure.
//!
//! The rule (docs/adr/0002-relay-ordering.md): records are sent in rounds. A round holds, in batch
//! order, the earliest unpublished record of every partition key that has no published record
//! after the earliest unpublished record of the whole batch (`p0`). Hence
//!
//! - within a call a key appears at most once, so a later event can never be accepted while an
//!   earlier one of its reservation failed in the same call;
//! - a key's next record is sent only after its previous one was accepted;
//! - at any moment each key has at most one accepted record at or after `p0`. When the relay gives
//!   up and Lambda re-delivers from `p0`, that record is sent again right after itself: a
//!   duplicate, never a step back in version.

use crate::sink::{EventSink, MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, PutOutcome, SinkErrorKind, SinkRecord};
use domain::Backoff;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct PublishPolicy {
    /// Rounds in a row with a failure before giving the rest back to Lambda.
    pub max_failed_rounds: u32,
    /// The wait after a failed round: throttled relays spread out instead of hammering the shard
    /// in step.
    pub backoff: Backoff,
}

impl Default for PublishPolicy {
    fn default() -> Self {
        Self {
            max_failed_rounds: 12,
            backoff: Backoff::new(Duration::from_millis(20), Duration::from_secs(2)),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct PublishReport {
    pub published: Vec<bool>,
    pub calls: u32,
    /// Record-level failures, counted every time (a record failing twice counts twice).
    pub failed_records: u64,
    pub throttled_records: u64,
    pub failed_calls: u32,
    pub retries: u32,
    pub gave_up: bool,
    /// The sink refused to publish ([`SinkErrorKind::Refused`]): the publish stopped at once, and
    /// stays stopped until an operator fixes the bus.
    pub refused: bool,
    pub last_error: Option<String>,
}

impl PublishReport {
    pub fn first_unpublished(&self) -> Option<usize> {
        self.published.iter().position(|p| !p)
    }
}

/// Splits a round into calls within Kinesis' limits, keeping batch order.
fn calls_of(round: &[usize], records: &[SinkRecord]) -> Vec<Vec<usize>> {
    let mut calls = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for &i in round {
        let size = records[i].size();
        if !current.is_empty() && (current.len() == MAX_RECORDS_PER_CALL || bytes + size > MAX_BYTES_PER_CALL) {
            calls.push(std::mem::take(&mut current));
            bytes = 0;
        }
        current.push(i);
        bytes += size;
    }
    if !current.is_empty() {
        calls.push(current);
    }
    calls
}

fn next_round(records: &[SinkRecord], published: &[bool], p0: usize) -> Vec<usize> {
    // Keys are hashed once per record per round: a fast hash, sized for the batch.
    let mut blocked = foldhash::HashSet::with_capacity_and_hasher(records.len() - p0, Default::default());
    blocked.extend(
        (p0 + 1..records.len())
            .filter(|&i| published[i])
            .map(|i| records[i].partition_key.as_str()),
    );
    (p0..records.len())
        .filter(|&i| !published[i] && blocked.insert(records[i].partition_key.as_str()))
        .collect()
}

/// Publishes `records` (in stream order) until all are accepted, the failure budget is spent, or
/// the next backoff would cross `deadline`.
pub async fn publish_in_order<S: EventSink>(
    sink: &S,
    records: &[SinkRecord],
    policy: &PublishPolicy,
    deadline: Instant,
) -> PublishReport {
    let mut report = PublishReport {
        published: vec![false; records.len()],
        ..Default::default()
    };
    let mut failed_rounds = 0;
    while let Some(p0) = report.first_unpublished() {
        let round = next_round(records, &report.published, p0);
        let mut round_failed = false;
        for call in calls_of(&round, records) {
            let batch: Vec<&SinkRecord> = call.iter().map(|&i| &records[i]).collect();
            report.calls += 1;
            match sink.put_records(&batch).await {
                Ok(outcomes) => {
                    for (position, &i) in call.iter().enumerate() {
                        match outcomes.get(position) {
                            Some(PutOutcome::Accepted) => report.published[i] = true,
                            Some(failed @ PutOutcome::Failed { code, message }) => {
                                round_failed = true;
                                report.failed_records += 1;
                                report.throttled_records += u64::from(failed.is_throttle());
                                report.last_error = Some(format!("{code}: {message}"));
                            }
                            None => {
                                round_failed = true;
                                report.failed_records += 1;
                                report.last_error = Some("sink returned fewer outcomes than records".into());
                            }
                        }
                    }
                }
                Err(e) => {
                    round_failed = true;
                    report.failed_calls += 1;
                    report.failed_records += call.len() as u64;
                    if e.kind == SinkErrorKind::Throttled {
                        report.throttled_records += call.len() as u64;
                    }
                    report.refused |= e.kind == SinkErrorKind::Refused;
                    report.last_error = Some(telemetry::error_chain(&e));
                }
            }
            if report.refused {
                break;
            }
        }
        if report.refused {
            report.gave_up = true;
            break;
        }
        if !round_failed {
            failed_rounds = 0;
            continue;
        }
        failed_rounds += 1;
        if failed_rounds > policy.max_failed_rounds {
            report.gave_up = true;
            break;
        }
        let delay = policy.backoff.delay(failed_rounds);
        if Instant::now() + delay >= deadline {
            report.gave_up = true;
            break;
        }
        report.retries += 1;
        tokio::time::sleep(delay).await;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, size: usize) -> SinkRecord {
        SinkRecord {
            partition_key: key.into(),
            data: vec![b'x'; size],
            ..SinkRecord::default()
        }
    }

    #[test]
    fn a_round_holds_one_record_per_key_in_batch_order() {
        let records = [rec("a", 1), rec("a", 1), rec("b", 1), rec("c", 1), rec("b", 1)];
        assert_eq!(next_round(&records, &[false; 5], 0), [0, 2, 3]);
    }

    #[test]
    fn a_key_with_an_accepted_record_after_the_first_gap_waits() {
        // a1 failed, b1 was accepted: b2 must wait until a1 is accepted, or a re-delivery from a1
        // would send b1 again after b2.
        let records = [rec("a", 1), rec("b", 1), rec("b", 1), rec("c", 1)];
        let published = [false, true, false, false];
        assert_eq!(next_round(&records, &published, 0), [0, 3]);
    }

    #[test]
    fn calls_respect_the_record_and_byte_limits() {
        let many: Vec<_> = (0..1_201).map(|i| rec(&format!("k{i}"), 10)).collect();
        let round: Vec<_> = (0..many.len()).collect();
        let sizes: Vec<_> = calls_of(&round, &many).iter().map(Vec::len).collect();
        assert_eq!(sizes, [500, 500, 201]);

        let big: Vec<_> = (0..12).map(|i| rec(&format!("k{i}"), 1_000_000)).collect();
        let round: Vec<_> = (0..big.len()).collect();
        let calls = calls_of(&round, &big);
        assert!(
            calls
                .iter()
                .all(|c| c.iter().map(|&i| big[i].size()).sum::<usize>() <= MAX_BYTES_PER_CALL)
        );
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 2]);
    }

    /// Throttles every call, counting them.
    struct AlwaysThrottled(std::sync::atomic::AtomicU32);

    impl EventSink for AlwaysThrottled {
        async fn put_records(&self, records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, crate::SinkError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(records
                .iter()
                .map(|_| PutOutcome::Failed {
                    code: "ProvisionedThroughputExceededException".into(),
                    message: "Rate exceeded for shard".into(),
                })
                .collect())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_with_backoff_until_the_deadline_then_given_back() {
        let sink = AlwaysThrottled(Default::default());
        let records = [rec("a", 1), rec("b", 1)];
        let policy = PublishPolicy {
            max_failed_rounds: u32::MAX,
            ..PublishPolicy::default()
        };
        let started = Instant::now();
        let deadline = started + Duration::from_secs(3);
        let report = publish_in_order(&sink, &records, &policy, deadline).await;

        assert!(report.gave_up);
        assert!(Instant::now() < deadline, "a backoff crossed the deadline");
        // Retried within the invocation, not given up after the first throttle.
        let calls = sink.0.load(std::sync::atomic::Ordering::Relaxed);
        assert!(calls > 3, "only {calls} calls in 3 s of backoff");
        assert_eq!(report.calls, calls);
        assert_eq!(report.retries, calls - 1);
        assert_eq!(report.throttled_records, u64::from(calls) * 2);
        assert_eq!(report.first_unpublished(), Some(0));
        assert!(
            report
                .last_error
                .unwrap()
                .starts_with("ProvisionedThroughputExceededException")
        );
    }

    /// Refuses every call, as a Kafka sink whose topic has another partition count does.
    struct Refusing(std::sync::atomic::AtomicU32);

    impl EventSink for Refusing {
        async fn put_records(&self, _records: &[&SinkRecord]) -> Result<Vec<PutOutcome>, crate::SinkError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(crate::SinkError {
                kind: SinkErrorKind::Refused,
                source: "the topic has 8 partitions, but KAFKA_PARTITIONS says 4".into(),
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusing_sink_stops_the_publish_at_once_with_nothing_published() {
        let sink = Refusing(Default::default());
        // More records than one call takes: the refusal of the first call ends it.
        let records: Vec<_> = (0..MAX_RECORDS_PER_CALL + 1)
            .map(|i| rec(&format!("k{i}"), 1))
            .collect();
        let report = publish_in_order(
            &sink,
            &records,
            &PublishPolicy::default(),
            Instant::now() + Duration::from_secs(900),
        )
        .await;
        assert!(report.refused && report.gave_up);
        assert_eq!((report.calls, report.retries), (1, 0));
        assert_eq!(sink.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(report.first_unpublished(), Some(0));
        assert!(report.last_error.unwrap().contains("KAFKA_PARTITIONS"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_failure_budget_ends_retries_before_a_distant_deadline() {
        let sink = AlwaysThrottled(Default::default());
        let policy = PublishPolicy {
            max_failed_rounds: 4,
            ..PublishPolicy::default()
        };
        let report = publish_in_order(
            &sink,
            &[rec("a", 1)],
            &policy,
            Instant::now() + Duration::from_secs(900),
        )
        .await;
        assert!(report.gave_up);
        assert_eq!((report.calls, report.retries), (5, 4));
    }
}
