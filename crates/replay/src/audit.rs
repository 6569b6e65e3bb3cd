//! The audit: for the events committed in a time range (the outbox items still within TTL), what
//! is on the bus (the Kinesis stream or the Kafka topic) and what each consumer applied. It reports, per reservation, versions
//! missing from the stream, versions delivered more than once, versions that first appeared before
//! the one they follow, and consumers behind the latest committed version.
//!
//! [`compare`] is the whole judgement, on plain values; [`audit`] gathers them.

use crate::kafka::{TopicReplayOptions, replay_topic};
use crate::{Bus, NoProgress, ReplayError, ReplayOptions, Target};
use consumers::Consumer;
use domain::{EventEnvelope, EventId};
use reservation_events_consumer::{ApplyOutcome, ConsumerError, ReservationEvent, Version};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use time::OffsetDateTime;

/// A reservation's version: the unit everything is compared in.
pub type EventKey = (String, u64);

/// What the audit found. Missing events (on the stream or in a consumer) make it fail; duplicates
/// and late first appearances are reported, since consumers absorb them.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditReport {
    /// What was read: the stream or the topic (the lines below say "stream" for either).
    pub bus: BusKind,
    pub committed: usize,
    pub reservations: usize,
    /// Stream records of the audited reservations (duplicates included).
    pub on_stream: usize,
    pub missing_on_stream: Vec<EventKey>,
    /// (reservation, version, times on the stream) for versions seen more than once.
    pub duplicated: Vec<(String, u64, usize)>,
    /// (reservation, version, the lower version it first appeared before).
    pub misordered: Vec<(String, u64, u64)>,
    pub consumers_behind: Vec<ConsumerBehind>,
    /// Events on the bus whose place in the outbox (reservation, version) holds another event:
    /// another Region wrote the same version and last writer wins kept that one everywhere, so
    /// the change this event announced is lost (docs/multi-region.md, "When a Region is lost").
    pub replaced: Vec<Replaced>,
    /// Outbox items in the range that are not valid envelopes (their dead letters tell why).
    pub undecodable_in_outbox: usize,
}

/// An event on the bus that the outbox no longer holds: its version was written again elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Replaced {
    pub reservation_id: String,
    pub version: u64,
    /// The event on the bus.
    pub on_bus: String,
    /// The event the outbox holds at that version, and where it was born.
    pub in_outbox: String,
    pub in_outbox_born_in: Option<String>,
}

/// The kind of bus an audit read, to name it in what it says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    #[default]
    Stream,
    Topic,
}

impl std::fmt::Display for BusKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Stream => "stream",
            Self::Topic => "topic",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerBehind {
    pub consumer: String,
    pub reservation_id: String,
    pub applied: Option<u64>,
    pub committed: u64,
}

impl AuditReport {
    pub fn nothing_missing(&self) -> bool {
        self.missing_on_stream.is_empty() && self.consumers_behind.is_empty() && self.replaced.is_empty()
    }

    /// One line per finding, for people.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (id, v) in &self.missing_on_stream {
            lines.push(format!("{id} v{v}: committed, not on the {}", self.bus));
        }
        for replaced in &self.replaced {
            lines.push(format!(
                "{} v{}: event {} on the {} was replaced in the outbox by event {} born in {}: the change it announced is lost",
                replaced.reservation_id,
                replaced.version,
                replaced.on_bus,
                self.bus,
                replaced.in_outbox,
                replaced.in_outbox_born_in.as_deref().unwrap_or("the primary")
            ));
        }
        for behind in &self.consumers_behind {
            let applied = behind.applied.map_or("nothing".to_owned(), |v| format!("v{v}"));
            lines.push(format!(
                "{} v{}: {} applied {applied}",
                behind.reservation_id, behind.committed, behind.consumer
            ));
        }
        for (id, v, before) in &self.misordered {
            lines.push(format!("{id} v{v}: first on the {} before v{before}", self.bus));
        }
        for (id, v, times) in &self.duplicated {
            lines.push(format!("{id} v{v}: on the {} {times} times", self.bus));
        }
        lines
    }
}

impl std::fmt::Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events of {} reservations committed, {} records on the {bus}; missing on the {bus} {}, replaced {}, consumers behind {}, misordered {}, duplicated {}, undecodable outbox items {}",
            self.committed,
            self.reservations,
            self.on_stream,
            self.missing_on_stream.len(),
            self.replaced.len(),
            self.consumers_behind.len(),
            self.misordered.len(),
            self.duplicated.len(),
            self.undecodable_in_outbox,
            bus = self.bus
        )
    }
}

/// Compares the committed events with the stream (in stream order, parents before children) and
/// with what each consumer reports applied per reservation. Stream records of reservations with
/// nothing committed in the range are ignored.
pub fn compare(
    committed: &[EventKey],
    on_stream: &[EventKey],
    consumers: &[(String, HashMap<String, Option<u64>>)],
) -> AuditReport {
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, v) in committed {
        let entry = latest.entry(id.as_str()).or_insert(*v);
        *entry = (*entry).max(*v);
    }
    let mut times: HashMap<(&str, u64), usize> = HashMap::new();
    let mut highest_seen: HashMap<&str, u64> = HashMap::new();
    let mut report = AuditReport {
        committed: committed.len(),
        reservations: latest.len(),
        ..Default::default()
    };
    for (id, v) in on_stream {
        if !latest.contains_key(id.as_str()) {
            continue;
        }
        report.on_stream += 1;
        let seen = times.entry((id.as_str(), *v)).or_insert(0);
        *seen += 1;
        let highest = highest_seen.entry(id.as_str()).or_insert(0);
        // A version's first appearance must come after every lower version's.
        if *seen == 1 && *v > 1 && *highest < *v - 1 {
            report.misordered.push((id.clone(), *v, *highest + 1));
        }
        *highest = (*highest).max(*v);
    }
    for (id, v) in committed {
        match times.get(&(id.as_str(), *v)) {
            None => report.missing_on_stream.push((id.clone(), *v)),
            Some(&n) if n > 1 => report.duplicated.push((id.clone(), *v, n)),
            Some(_) => {}
        }
    }
    for (consumer, applied) in consumers {
        for (id, committed_version) in &latest {
            let applied_version = applied.get(*id).copied().flatten();
            if applied_version.is_none_or(|a| a < *committed_version) {
                report.consumers_behind.push(ConsumerBehind {
                    consumer: consumer.clone(),
                    reservation_id: (*id).to_owned(),
                    applied: applied_version,
                    committed: *committed_version,
                });
            }
        }
    }
    report.missing_on_stream.sort();
    report.duplicated.sort();
    report
}

/// The events on the bus whose (reservation, version) the outbox holds with another event id:
/// `on_bus` in bus order, `in_outbox` every outbox event of the range wherever it was born.
pub fn replaced(
    on_bus: &[(EventKey, String)],
    in_outbox: &[EventEnvelope],
    born_in: &HashMap<String, String>,
) -> Vec<Replaced> {
    let held: HashMap<(&str, u64), &EventEnvelope> = in_outbox
        .iter()
        .map(|e| ((e.aggregate_id.as_str(), e.version.get()), e))
        .collect();
    let mut found: Vec<Replaced> = on_bus
        .iter()
        .filter_map(|((id, v), event_id)| {
            let envelope = held.get(&(id.as_str(), *v))?;
            (envelope.event_id.as_str() != event_id).then(|| Replaced {
                reservation_id: id.clone(),
                version: *v,
                on_bus: event_id.clone(),
                in_outbox: envelope.event_id.to_string(),
                in_outbox_born_in: born_in.get(envelope.event_id.as_str()).cloned(),
            })
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Records what is on the stream instead of applying it.
#[derive(Default)]
struct StreamRecorder {
    seen: Mutex<Vec<(EventKey, String)>>,
}

impl Consumer for StreamRecorder {
    fn name(&self) -> &str {
        "audit"
    }

    async fn apply(&self, event: &ReservationEvent) -> Result<ApplyOutcome, ConsumerError> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).push((
            (event.reservation_id().to_owned(), event.version.get()),
            event.event_id.clone(),
        ));
        Ok(ApplyOutcome::Applied)
    }

    async fn applied_version(&self, _: &ReservationEvent) -> Result<Option<Version>, ConsumerError> {
        Ok(None)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading the outbox table {table} failed")]
    Outbox {
        table: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Stream(#[from] ReplayError),
    #[error("asking the {consumer} what it applied failed")]
    Consumer {
        consumer: String,
        #[source]
        source: ConsumerError,
    },
}

/// Which Regions' events an audit covers. On a global table every Region's replica holds every
/// Region's events and each Region's bus carries those born in it (docs/multi-region.md), so an
/// audit of one Region's bus covers the events born there, and after a takeover those of the
/// Region it took over from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BornIn {
    /// Every event in the replica: one Region.
    #[default]
    Anywhere,
    /// The events born in `regions`; those from before outbox items recorded their Region count
    /// as born in `primary`.
    Regions { regions: Vec<String>, primary: String },
}

impl BornIn {
    pub fn covers(&self, born_in: Option<&str>) -> bool {
        match self {
            Self::Anywhere => true,
            Self::Regions { regions, primary } => {
                let born = born_in.unwrap_or(primary);
                regions.iter().any(|region| region == born)
            }
        }
    }
}

/// The outbox events committed in `[from, to]` (by their ULID event id) and born where `born`
/// covers, and how many items there were not valid envelopes.
pub async fn committed_events(
    dynamodb: &aws_sdk_dynamodb::Client,
    outbox_table: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    born: &BornIn,
) -> Result<(Vec<EventEnvelope>, usize), AuditError> {
    let (events, undecodable) = outbox_events(dynamodb, outbox_table, from, to).await?;
    let covered = events
        .into_iter()
        .filter(|(_, born_in)| born.covers(born_in.as_deref()))
        .map(|(envelope, _)| envelope)
        .collect();
    Ok((covered, undecodable))
}

/// Every outbox event committed in `[from, to]`, with the Region it was born in, read
/// consistently, and how many items there were not valid envelopes.
async fn outbox_events(
    dynamodb: &aws_sdk_dynamodb::Client,
    outbox_table: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<(Vec<(EventEnvelope, Option<String>)>, usize), AuditError> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let low = EventId::lower_bound_at(from);
    let high = EventId::lower_bound_at(to + time::Duration::milliseconds(1));
    let mut envelopes = Vec::new();
    let mut undecodable = 0;
    let mut start = None;
    loop {
        let page = dynamodb
            .scan()
            .table_name(outbox_table)
            .consistent_read(true)
            .filter_expression("item_type = :outbox AND event_id >= :low AND event_id < :high")
            .expression_attribute_values(":outbox", AttributeValue::S(domain::OUTBOX_ITEM_TYPE.into()))
            .expression_attribute_values(":low", AttributeValue::S(low.to_string()))
            .expression_attribute_values(":high", AttributeValue::S(high.to_string()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| AuditError::Outbox {
                table: outbox_table.to_owned(),
                source: Box::new(aws_sdk_dynamodb::Error::from(e)),
            })?;
        for item in page.items() {
            let born_in = item
                .get(adapters::dynamodb::items::BORN_IN)
                .and_then(|r| r.as_s().ok())
                .cloned();
            match serde_dynamo::aws_sdk_dynamodb_1::from_item::<EventEnvelope>(item.clone()) {
                Ok(envelope) => envelopes.push((envelope, born_in)),
                Err(_) => undecodable += 1,
            }
        }
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok((envelopes, undecodable));
        }
    }
}

/// Audits `[from, to]`, the events born where `born` covers: the outbox against the whole bus (the stream from its trim horizon, or
/// every partition of the topic from its earliest record) and against each of `consumers`.
pub async fn audit(
    dynamodb: &aws_sdk_dynamodb::Client,
    bus: &Bus<'_>,
    outbox_table: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    consumers: &[&dyn AppliedVersions],
    born: &BornIn,
) -> Result<AuditReport, AuditError> {
    let (everywhere, undecodable) = outbox_events(dynamodb, outbox_table, from, to).await?;
    let born_in: HashMap<String, String> = everywhere
        .iter()
        .filter_map(|(e, region)| region.clone().map(|r| (e.event_id.to_string(), r)))
        .collect();
    let all: Vec<EventEnvelope> = everywhere.iter().map(|(e, _)| e.clone()).collect();
    let envelopes: Vec<EventEnvelope> = everywhere
        .into_iter()
        .filter(|(_, region)| born.covers(region.as_deref()))
        .map(|(e, _)| e)
        .collect();
    let committed: Vec<EventKey> = envelopes
        .iter()
        .map(|e| (e.aggregate_id.to_string(), e.version.get()))
        .collect();

    let mut target = Target::Consumer(StreamRecorder::default());
    let kind = match bus {
        Bus::Kinesis { client, stream } => {
            let options = ReplayOptions {
                stream: (*stream).to_owned(),
                from: crate::Start::TrimHorizon,
                to: None,
                shards: Vec::new(),
                dry_run: false,
            };
            crate::replay(client, &options, &mut target, &NoProgress).await?;
            BusKind::Stream
        }
        Bus::Kafka { client, config } => {
            let options = TopicReplayOptions {
                from: crate::Start::TrimHorizon,
                to: None,
                partitions: Vec::new(),
                dry_run: false,
            };
            replay_topic(client, config, &options, &mut target, &NoProgress).await?;
            BusKind::Topic
        }
    };
    let Target::Consumer(recorder) = target else {
        unreachable!("the target is the recorder")
    };
    let on_bus = recorder.seen.into_inner().unwrap_or_else(|p| p.into_inner());
    let on_stream: Vec<EventKey> = on_bus.iter().map(|(key, _)| key.clone()).collect();

    // Each consumer is asked once per reservation, with its latest committed event.
    let mut latest: HashMap<String, &EventEnvelope> = HashMap::new();
    for envelope in &envelopes {
        let entry = latest.entry(envelope.aggregate_id.to_string()).or_insert(envelope);
        if envelope.version > entry.version {
            *entry = envelope;
        }
    }
    let mut states = Vec::new();
    for consumer in consumers {
        let mut applied = HashMap::new();
        for (id, envelope) in &latest {
            let Some(event) = reservation_event(envelope) else {
                continue;
            };
            let version = consumer.applied(&event).await.map_err(|source| AuditError::Consumer {
                consumer: consumer.name().to_owned(),
                source,
            })?;
            applied.insert(id.clone(), version.map(Version::get));
        }
        states.push((consumer.name().to_owned(), applied));
    }
    let mut report = compare(&committed, &on_stream, &states);
    report.replaced = replaced(&on_bus, &all, &born_in);
    report.undecodable_in_outbox = undecodable;
    report.bus = kind;
    Ok(report)
}

pub(crate) fn reservation_event(envelope: &EventEnvelope) -> Option<ReservationEvent> {
    let data = serde_json::to_vec(envelope).ok()?;
    reservation_events_consumer::decode(envelope.aggregate_id.as_str(), &data).ok()
}

/// A consumer's state, read only: object-safe so the audit can take any number of them.
pub trait AppliedVersions: Send + Sync {
    fn name(&self) -> &str;
    fn applied<'a>(
        &'a self,
        event: &'a ReservationEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<Version>, ConsumerError>> + Send + 'a>>;
}

impl<C: Consumer> AppliedVersions for C {
    fn name(&self) -> &str {
        Consumer::name(self)
    }

    fn applied<'a>(
        &'a self,
        event: &'a ReservationEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<Version>, ConsumerError>> + Send + 'a>> {
        Box::pin(self.applied_version(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(pairs: &[(&str, u64)]) -> Vec<EventKey> {
        pairs.iter().map(|(id, v)| (id.to_string(), *v)).collect()
    }

    #[test]
    fn an_event_on_the_bus_whose_version_the_outbox_holds_with_another_event_is_named_replaced() {
        let ours = test_support::events::envelope("01RESERVATIONREPLACED00001", 2);
        let mut written_elsewhere = test_support::events::envelope_json("01RESERVATIONREPLACED00001", 2);
        written_elsewhere["event_id"] = "E-written-again-elsewhere".into();
        let theirs: EventEnvelope = serde_json::from_value(written_elsewhere).unwrap();
        let kept = test_support::events::envelope("01RESERVATIONKEPT000000001", 1);
        let key = |e: &EventEnvelope| (e.aggregate_id.to_string(), e.version.get());
        let on_bus = [
            (key(&kept), kept.event_id.to_string()),
            (key(&ours), ours.event_id.to_string()),
        ];
        let born_in = HashMap::from([(theirs.event_id.to_string(), "eu-west-1".to_owned())]);
        let found = replaced(&on_bus, &[kept.clone(), theirs.clone()], &born_in);
        assert_eq!(
            found,
            [Replaced {
                reservation_id: "01RESERVATIONREPLACED00001".into(),
                version: 2,
                on_bus: ours.event_id.to_string(),
                in_outbox: theirs.event_id.to_string(),
                in_outbox_born_in: Some("eu-west-1".into()),
            }]
        );
        // The same event twice on the bus, or an event the outbox holds as it is: nothing.
        assert!(replaced(&on_bus, &[kept, ours], &born_in).is_empty());
        let report = AuditReport {
            replaced: found,
            ..Default::default()
        };
        assert!(!report.nothing_missing());
        assert!(
            report.lines()[0].contains("was replaced in the outbox by event"),
            "{:?}",
            report.lines()
        );
    }

    #[test]
    fn a_complete_ordered_stream_and_caught_up_consumers_pass() {
        let committed = keys(&[("a", 1), ("a", 2), ("b", 1)]);
        let stream = keys(&[("b", 1), ("a", 1), ("x", 7), ("a", 2)]);
        let projector = HashMap::from([("a".to_string(), Some(2)), ("b".to_string(), Some(1))]);
        let report = compare(&committed, &stream, &[("projector".into(), projector)]);
        assert!(report.nothing_missing());
        assert_eq!((report.committed, report.reservations, report.on_stream), (3, 2, 3));
        assert!(report.lines().is_empty(), "{:?}", report.lines());
    }

    #[test]
    fn missing_duplicated_misordered_and_behind_are_each_named() {
        let committed = keys(&[("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1)]);
        let stream = keys(&[("a", 1), ("a", 3), ("a", 2), ("a", 3), ("b", 1), ("b", 1)]);
        let projector = HashMap::from([("a".to_string(), Some(3)), ("b".to_string(), Some(1))]);
        let report = compare(&committed, &stream, &[("projector".into(), projector)]);
        assert!(!report.nothing_missing());
        assert_eq!(report.missing_on_stream, keys(&[("c", 1)]));
        assert_eq!(report.misordered, [("a".to_string(), 3, 2)]);
        assert_eq!(report.duplicated, [("a".to_string(), 3, 2), ("b".to_string(), 1, 2)]);
        assert_eq!(
            report.consumers_behind,
            [ConsumerBehind {
                consumer: "projector".into(),
                reservation_id: "c".into(),
                applied: None,
                committed: 1,
            }]
        );
        assert_eq!(
            report.lines(),
            [
                "c v1: committed, not on the stream",
                "c v1: projector applied nothing",
                "a v3: first on the stream before v2",
                "a v3: on the stream 2 times",
                "b v1: on the stream 2 times",
            ]
        );
    }

    #[test]
    fn a_repeated_run_after_a_crash_is_duplicates_not_disorder() {
        // 1, 2, 3 then the tail 2, 3 again: every version first appears after its predecessor.
        let committed = keys(&[("a", 1), ("a", 2), ("a", 3)]);
        let stream = keys(&[("a", 1), ("a", 2), ("a", 3), ("a", 2), ("a", 3)]);
        let report = compare(&committed, &stream, &[]);
        assert!(report.misordered.is_empty());
        assert_eq!(report.duplicated.len(), 2);
        assert!(report.nothing_missing());
    }
}
