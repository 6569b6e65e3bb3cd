//! Replay: read a Kinesis stream's reservation events, shard lineage parents before children (or
//! a Kafka topic's, partition by partition: [`kafka`]), and feed them to a consumer in-process (or
//! print them). Consumers apply each reservation's versions
//! once and in order, so a replay over what was already applied changes nothing, and a replay from
//! the trim horizon into empty tables rebuilds them.

pub mod audit;
pub mod home;
pub mod kafka;
pub mod redrive;
pub mod stack;

use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use consumers::Consumer;
use event_source_mapping::ShardInfo;
use reservation_events_consumer::{
    ApplyOutcome, ConsumerError, ReservationEvent, Version, decide, decode, error_chain,
};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Where reading starts in each shard or partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    TrimHorizon,
    Latest,
    At(OffsetDateTime),
    /// A sequence number belongs to one shard: needs `--shard` (Kinesis).
    Sequence(String),
    /// An offset in each of these partitions, and only these (Kafka): `0:120,1:95`, where a
    /// consumer group stands, say.
    Offsets(BTreeMap<i32, i64>),
}

/// Where reading stops (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    At(OffsetDateTime),
    Sequence(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not trim-horizon, latest, an RFC 3339 time (2026-11-24T10:00:00Z), a sequence number (Kinesis) or partition:offset pairs (Kafka, 0:120,1:95)"
)]
pub struct BadPosition(String);

fn is_sequence_number(text: &str) -> bool {
    !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_digit())
}

/// `0:120,1:95`: an offset per partition, each partition once.
fn partition_offsets(text: &str) -> Option<BTreeMap<i32, i64>> {
    let mut offsets = BTreeMap::new();
    for pair in text.split(',') {
        let (partition, offset) = pair.split_once(':')?;
        let (partition, offset) = (partition.parse::<i32>().ok()?, offset.parse::<i64>().ok()?);
        if partition < 0 || offset < 0 || offsets.insert(partition, offset).is_some() {
            return None;
        }
    }
    Some(offsets)
}

impl FromStr for Start {
    type Err = BadPosition;

    fn from_str(text: &str) -> Result<Self, BadPosition> {
        match text {
            "trim-horizon" => Ok(Self::TrimHorizon),
            "latest" => Ok(Self::Latest),
            _ if is_sequence_number(text) => Ok(Self::Sequence(text.to_owned())),
            _ if text.contains(':') && !text.contains('T') => partition_offsets(text)
                .map(Self::Offsets)
                .ok_or_else(|| BadPosition(text.to_owned())),
            _ => OffsetDateTime::parse(text, &Rfc3339)
                .map(Self::At)
                .map_err(|_| BadPosition(text.to_owned())),
        }
    }
}

impl FromStr for End {
    type Err = BadPosition;

    fn from_str(text: &str) -> Result<Self, BadPosition> {
        if is_sequence_number(text) {
            return Ok(Self::Sequence(text.to_owned()));
        }
        OffsetDateTime::parse(text, &Rfc3339)
            .map(Self::At)
            .map_err(|_| BadPosition(text.to_owned()))
    }
}

/// Sequence numbers are decimal strings of up to 128 digits: compare them as numbers.
fn sequence_after(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    (a.len(), a) > (b.len(), b)
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub stream: String,
    pub from: Start,
    pub to: Option<End>,
    /// Only these shards (no lineage expansion); empty = every shard.
    pub shards: Vec<String>,
    /// Count what would be applied; write nothing.
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("a sequence number belongs to one shard: add --shard <shard id> with --from {0}")]
    SequenceNeedsOneShard(String),
    #[error("--from {0} is in the future; nothing can be read from there yet")]
    FromInTheFuture(String),
    #[error("no shard {0} in stream {1}")]
    UnknownShard(String, String),
    #[error("{0} is a Kafka position; on a Kinesis stream start from a time, or a sequence number with --shard")]
    KafkaPositionOnKinesis(String),
    #[error("{0} is a Kinesis sequence number; on a Kafka topic use partition:offset pairs (0:120,1:95) or a time")]
    KinesisPositionOnKafka(String),
    #[error("--from {0} names the partitions to read; leave out --partition")]
    PartitionsNamedTwice(String),
    #[error("no partition {0} in the Kafka topic {1:?}")]
    UnknownPartition(i32, String),
    #[error(transparent)]
    Kafka(Box<kafka_bus::KafkaError>),
    #[error("{operation} on partition {partition} of the Kafka topic {topic:?} failed: {source}")]
    KafkaPartition {
        operation: &'static str,
        topic: String,
        partition: i32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{operation} on stream {stream} failed: {source}")]
    Kinesis {
        operation: &'static str,
        stream: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Kinesis shards read.
    pub shards: usize,
    /// Kafka partitions read.
    pub partitions: usize,
    pub read: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub gaps: u64,
    /// Records that are not valid events (they stay on the stream; see the consumer's dead letters).
    pub malformed: u64,
    /// Store failures left after the SDK's retries.
    pub failures: u64,
}

impl Summary {
    pub fn clean(&self) -> bool {
        self.gaps == 0 && self.malformed == 0 && self.failures == 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.partitions > 0 {
            write!(f, "partitions {}", self.partitions)?;
        } else {
            write!(f, "shards {}", self.shards)?;
        }
        write!(
            f,
            ", read {}, applied {}, duplicates {}, gaps {}, malformed {}, failures {}",
            self.read, self.applied, self.duplicates, self.gaps, self.malformed, self.failures
        )
    }
}

/// Progress callbacks, so the CLI can draw a bar and tests need not.
pub trait Progress {
    /// Reading moves to this shard or partition.
    fn shard(&self, shard_id: &str);
    fn records(&self, count: u64, summary: &Summary);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn shard(&self, _: &str) {}
    fn records(&self, _: u64, _: &Summary) {}
}

/// The bus a replay or an audit reads.
pub enum Bus<'a> {
    Kinesis {
        client: &'a aws_sdk_kinesis::Client,
        stream: &'a str,
    },
    Kafka {
        client: &'a rskafka::client::Client,
        config: &'a kafka_bus::KafkaConfig,
    },
}

/// What the events go to.
pub enum Target<C> {
    Consumer(C),
    /// Every record's data as one line on stdout (valid envelopes only; others are counted).
    Print(Box<dyn std::io::Write + Send>),
}

fn kinesis_error<E>(operation: &'static str, stream: &str, error: E) -> ReplayError
where
    E: std::error::Error + Send + Sync + 'static,
{
    ReplayError::Kinesis {
        operation,
        stream: stream.to_owned(),
        source: Box::new(error),
    }
}

fn refuse_a_future_start(from: &Start) -> Result<(), ReplayError> {
    match from {
        Start::At(time) if *time > OffsetDateTime::now_utc() => Err(ReplayError::FromInTheFuture(
            time.format(&Rfc3339).unwrap_or_else(|_| time.to_string()),
        )),
        _ => Ok(()),
    }
}

/// `0:120,1:95`, as it was given.
fn offsets_text(offsets: &BTreeMap<i32, i64>) -> String {
    offsets
        .iter()
        .map(|(partition, offset)| format!("{partition}:{offset}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every shard of the stream, each after its parents.
pub async fn shards_in_lineage_order(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<ShardInfo>, ReplayError> {
    let shards = event_source_mapping::kinesis_shards(client, stream)
        .await
        .map_err(|e| kinesis_error("ListShards", stream, aws_sdk_kinesis::Error::from(e)))?;
    Ok(event_source_mapping::lineage_order(shards))
}

/// Reads the stream per `options` and gives every record to `target`.
pub async fn replay<C: Consumer>(
    client: &aws_sdk_kinesis::Client,
    options: &ReplayOptions,
    target: &mut Target<C>,
    progress: &dyn Progress,
) -> Result<Summary, ReplayError> {
    refuse_a_future_start(&options.from)?;
    let mut shards = shards_in_lineage_order(client, &options.stream).await?;
    if !options.shards.is_empty() {
        for wanted in &options.shards {
            if !shards.iter().any(|s| &s.shard_id == wanted) {
                return Err(ReplayError::UnknownShard(wanted.clone(), options.stream.clone()));
            }
        }
        shards.retain(|s| options.shards.contains(&s.shard_id));
    }
    if let Start::Sequence(seq) = &options.from
        && shards.len() != 1
    {
        return Err(ReplayError::SequenceNeedsOneShard(seq.clone()));
    }
    if let Start::Offsets(offsets) = &options.from {
        return Err(ReplayError::KafkaPositionOnKinesis(offsets_text(offsets)));
    }
    let mut summary = Summary::default();
    // Dry run: the versions each reservation would be at, starting from what is stored.
    let mut simulated: HashMap<String, Option<Version>> = HashMap::new();
    for shard in &shards {
        progress.shard(&shard.shard_id);
        summary.shards += 1;
        let mut iterator = Some(shard_iterator(client, &options.stream, &shard.shard_id, &options.from).await?);
        'shard: while let Some(current) = iterator.take() {
            let page = client
                .get_records()
                .shard_iterator(current)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| kinesis_error("GetRecords", &options.stream, aws_sdk_kinesis::Error::from(e)))?;
            let caught_up = page.records().is_empty() && page.millis_behind_latest().is_none_or(|m| m == 0);
            for record in page.records() {
                if past_the_end(record, options.to.as_ref()) {
                    break 'shard;
                }
                summary.read += 1;
                let position = Position::Sequence(record.sequence_number());
                let (key, data) = (record.partition_key().unwrap_or_default(), record.data().as_ref());
                handle_record(
                    key,
                    data,
                    position,
                    target,
                    options.dry_run,
                    &mut simulated,
                    &mut summary,
                )
                .await;
                progress.records(1, &summary);
            }
            // An open shard read to "now" is done; a closed one ends without a next iterator.
            iterator = if caught_up { None } else { page.next_shard_iterator };
        }
    }
    Ok(summary)
}

fn past_the_end(record: &aws_sdk_kinesis::types::Record, to: Option<&End>) -> bool {
    match to {
        None => false,
        Some(End::Sequence(last)) => sequence_after(record.sequence_number(), last),
        Some(End::At(time)) => record
            .approximate_arrival_timestamp()
            .is_some_and(|arrived| arrived.as_nanos() > time.unix_timestamp_nanos()),
    }
}

async fn shard_iterator(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
    shard_id: &str,
    from: &Start,
) -> Result<String, ReplayError> {
    let request = client.get_shard_iterator().stream_name(stream).shard_id(shard_id);
    let request = match from {
        Start::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Start::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
        Start::At(time) => request
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(DateTime::from_nanos(time.unix_timestamp_nanos()).unwrap_or(DateTime::from_secs(0))),
        Start::Sequence(seq) => request
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(seq),
        Start::Offsets(offsets) => return Err(ReplayError::KafkaPositionOnKinesis(offsets_text(offsets))),
    };
    let out = request
        .send()
        .await
        .map_err(|e| kinesis_error("GetShardIterator", stream, aws_sdk_kinesis::Error::from(e)))?;
    out.shard_iterator.ok_or_else(|| {
        kinesis_error(
            "GetShardIterator",
            stream,
            std::io::Error::other(format!("no iterator for shard {shard_id}")),
        )
    })
}

/// Where a record was read, for the log line of one that is not an event.
#[derive(Debug, Clone, Copy)]
enum Position<'a> {
    Sequence(&'a str),
    Offset { partition: i32, offset: i64 },
}

impl std::fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sequence(sequence) => write!(f, "sequence number {sequence}"),
            Self::Offset { partition, offset } => write!(f, "partition {partition} offset {offset}"),
        }
    }
}

async fn handle_record<C: Consumer>(
    partition_key: &str,
    data: &[u8],
    position: Position<'_>,
    target: &mut Target<C>,
    dry_run: bool,
    simulated: &mut HashMap<String, Option<Version>>,
    summary: &mut Summary,
) {
    let event = match decode(partition_key, data) {
        Ok(event) => event,
        Err(reason) => {
            tracing::warn!(%position, partition_key, %reason, "not a valid event; skipped");
            summary.malformed += 1;
            return;
        }
    };
    let outcome = match target {
        Target::Print(out) => {
            if !dry_run && (out.write_all(data).is_err() || out.write_all(b"\n").is_err()) {
                summary.failures += 1;
                return;
            }
            Ok(ApplyOutcome::Applied)
        }
        Target::Consumer(consumer) if dry_run => simulate(consumer, &event, simulated).await,
        Target::Consumer(consumer) => consumer.apply(&event).await,
    };
    match outcome {
        Ok(ApplyOutcome::Applied) => summary.applied += 1,
        Ok(ApplyOutcome::Duplicate) => summary.duplicates += 1,
        Ok(ApplyOutcome::Gap { expected }) => {
            tracing::warn!(reservation_id = %event.reservation_id(), version = %event.version, %expected, "gap: an earlier version was never applied");
            summary.gaps += 1;
        }
        Err(e) => {
            tracing::error!(reservation_id = %event.reservation_id(), error = %error_chain(&e), "store failed");
            summary.failures += 1;
        }
    }
}

async fn simulate<C: Consumer>(
    consumer: &C,
    event: &ReservationEvent,
    simulated: &mut HashMap<String, Option<Version>>,
) -> Result<ApplyOutcome, ConsumerError> {
    let id = event.reservation_id().to_owned();
    let current = match simulated.get(&id) {
        Some(version) => *version,
        None => consumer.applied_version(event).await?,
    };
    let outcome = decide(current, event.version);
    if outcome == ApplyOutcome::Applied {
        simulated.insert(id, Some(event.version));
    } else {
        simulated.entry(id).or_insert(current);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn positions_parse_and_bad_ones_say_what_is_accepted() {
        assert_eq!("trim-horizon".parse(), Ok(Start::TrimHorizon));
        assert_eq!("latest".parse(), Ok(Start::Latest));
        assert_eq!(
            "2026-11-24T10:00:00Z".parse(),
            Ok(Start::At(datetime!(2026-11-24 10:00:00 UTC)))
        );
        assert_eq!(
            "49590338271490256608559692538361571095921575989136588898".parse(),
            Ok(Start::Sequence(
                "49590338271490256608559692538361571095921575989136588898".into()
            ))
        );
        assert_eq!(
            "0:120,3:95".parse(),
            Ok(Start::Offsets(BTreeMap::from([(0, 120), (3, 95)])))
        );
        for bad in ["yesterday", "0:1,0:2", "0:-1", "a:1", "0:"] {
            let err = bad.parse::<Start>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{bad:?} is not trim-horizon, latest, an RFC 3339 time (2026-11-24T10:00:00Z), a sequence number (Kinesis) or partition:offset pairs (Kafka, 0:120,1:95)"
                )
            );
        }
        assert!("latest".parse::<End>().is_err());
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(sequence_after("100", "99"));
        assert!(!sequence_after("99", "100"));
        assert!(!sequence_after("0042", "42"));
        assert!(sequence_after(
            "49590338271490256608559692538361571095921575989136588899",
            "49590338271490256608559692538361571095921575989136588898"
        ));
    }

    #[test]
    fn only_a_dirty_replay_is_not_clean() {
        assert!(Summary::default().clean());
        assert!(
            !Summary {
                gaps: 1,
                ..Default::default()
            }
            .clean()
        );
    }
}
