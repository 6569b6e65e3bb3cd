//! A stand-in for DynamoDB global tables between test stacks that each stand for a Region. No
//! engine here replicates between Regions (LocalStack serves a replica as the same table, with no
//! stream in the replica's Region), so the multi-Region tests join two [`TestStack`]s with this:
//! test code, never something to run in place of AWS.
//!
//! It behaves as the AWS documentation describes version 2019.11.21 in multi-Region eventual
//! consistency mode, as far as the product can tell:
//! - replication is asynchronous, item by item (the items of one transaction travel on their
//!   own), after a lag the test sets;
//! - a replicated write lands on the receiving Region's table like any write, so it is on that
//!   Region's stream too;
//! - conflicts resolve per item, last writer wins: a replicated write older than the receiving
//!   replica's latest write of that item is dropped;
//! - the link can be cut (writes wait, in order, until it is restored).
//!
//! [`StandInReplication::settle`] writes a marker item (a key no product item has, no
//! `item_type`) into every replicated table of both Regions and waits for each in the other: the
//! tables keep those markers.
//!
//! What it does not model: it orders writes by when it read them from their Region's stream,
//! not by DynamoDB's internal timestamps, and a local write it has not read yet can be overwritten
//! by a replicated one that was older (DynamoDB compares the two atomically). The tests that use
//! it never write one item in two Regions at once except where they say so.

use crate::stack::TestStack;
use aws_sdk_dynamodb::types::{AttributeValue, ScalarAttributeType, StreamSpecification, StreamViewType};
use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, ShardIteratorType};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

type Item = HashMap<String, AttributeValue>;
/// A table's key attributes: name and type.
type Key = Vec<(String, ScalarAttributeType)>;

/// The tables the writes and the events live in, by the variable that names them: enough for the
/// tests of publishing and booking across Regions.
pub const REPLICATED_TABLES: &[&str] = &["RESERVATIONS_TABLE", "OUTBOX_TABLE"];
/// The same and the consumers' state (read model, notifications): the four tables the template's
/// `GlobalTables` replicates, which moving a slot's home needs (docs/multi-region.md).
pub const WITH_CONSUMER_TABLES: &[&str] = &[
    "RESERVATIONS_TABLE",
    "OUTBOX_TABLE",
    "READ_MODEL_TABLE",
    "NOTIFICATIONS_TABLE",
];

/// The replication between two Regions' tables; stops when dropped.
pub struct StandInReplication {
    link: Arc<Link>,
    task: Option<JoinHandle<()>>,
    regions: Vec<Replica>,
    markers: std::sync::atomic::AtomicU64,
}

/// One Region's replica: its client and its replicated tables, in [`REPLICATED_TABLES`] order.
#[derive(Clone)]
struct Replica {
    client: aws_sdk_dynamodb::Client,
    tables: Vec<ReplicaTable>,
}

#[derive(Clone)]
struct ReplicaTable {
    name: String,
    key: Key,
}

/// What a test controls while replication runs.
struct Link {
    lag: Duration,
    cut: AtomicBool,
    stop: AtomicBool,
    state: Mutex<Progress>,
}

#[derive(Default, Clone, Copy)]
struct Progress {
    pending: usize,
    /// Records read from the Regions' streams so far.
    read: u64,
    applied: u64,
    dropped_as_older: u64,
}

/// One write on its way to the other Region.
struct Delivery {
    due: Instant,
    from: usize,
    table: usize,
    key: String,
    item_key: Item,
    image: Option<Item>,
    stamp: u64,
}

/// One table of one Region as the replicator reads it.
struct Source {
    streams: aws_sdk_dynamodbstreams::Client,
    arn: String,
    /// Shard id to its next iterator; `None` once the shard is closed and read to its end.
    iterators: BTreeMap<String, Option<String>>,
    /// Shard id to the last sequence number read from it, to re-open the shard after it.
    read_up_to: HashMap<String, String>,
}

impl StandInReplication {
    /// Replicates [`REPLICATED_TABLES`] between `regions` (their stacks, each standing for one
    /// Region), each write arriving `lag` after it was read from its Region's stream. Turns on a
    /// stream on tables that have none, as DynamoDB does for a global table's replicas.
    pub async fn start(regions: [&TestStack; 2], lag: Duration) -> Self {
        Self::start_tables(regions, lag, REPLICATED_TABLES).await
    }

    /// Replicates the tables named by `replicated` (variables, as [`REPLICATED_TABLES`]).
    pub async fn start_tables(regions: [&TestStack; 2], lag: Duration, replicated: &[&str]) -> Self {
        let mut sources: Vec<Vec<Source>> = Vec::new();
        let mut replicas = Vec::new();
        for stack in regions {
            let mut region_sources = Vec::new();
            let mut tables = Vec::new();
            for var in replicated {
                let name = stack.name(var);
                let (key, arn) = key_and_stream(&stack.dynamodb, &name).await;
                region_sources.push(Source {
                    streams: aws_sdk_dynamodbstreams::Client::new(&stack.sdk),
                    arn,
                    iterators: BTreeMap::new(),
                    read_up_to: HashMap::new(),
                });
                tables.push(ReplicaTable { name, key });
            }
            sources.push(region_sources);
            replicas.push(Replica {
                client: stack.dynamodb.clone(),
                tables,
            });
        }
        let link = Arc::new(Link {
            lag,
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            state: Mutex::new(Progress::default()),
        });
        let replicator = Replicator {
            link: link.clone(),
            sources,
            replicas: replicas.clone(),
            clock: 0,
            stamps: HashMap::new(),
            echoes: HashMap::new(),
            queue: VecDeque::new(),
        };
        let task = tokio::spawn(replicator.run());
        Self {
            link,
            task: Some(task),
            regions: replicas,
            markers: Default::default(),
        }
    }

    /// Holds every write until [`Self::restore`]: the Regions cannot reach each other.
    pub fn cut(&self) {
        self.link.cut.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.link.cut.store(false, Ordering::SeqCst);
    }

    /// Waits until every write made so far in either Region has arrived in the other (the link
    /// restored): both Regions hold the same items. A marker item is written into every
    /// replicated table of both Regions; replication is in order per table, so once each marker
    /// is in the other Region, so is everything written before it. Panics when replication reads
    /// and applies nothing for `stall` (a slow machine only makes it take longer).
    pub async fn settle(&self, stall: Duration) {
        let n = self.markers.fetch_add(1, Ordering::SeqCst);
        let mut markers = Vec::new();
        for (from, replica) in self.regions.iter().enumerate() {
            for (table, replicated) in replica.tables.iter().enumerate() {
                let marker = marker_key(&replicated.key, from, n);
                replica
                    .client
                    .put_item()
                    .table_name(&replicated.name)
                    .set_item(Some(marker.clone()))
                    .send()
                    .await
                    .expect("write a replication marker");
                markers.push((1 - from, table, marker));
            }
        }
        let mut seen = (u64::MAX, u64::MAX);
        let mut since = Instant::now();
        loop {
            let mut arrived = true;
            for (to, table, marker) in &markers {
                let replica = &self.regions[*to];
                let found = replica
                    .client
                    .get_item()
                    .table_name(&replica.tables[*table].name)
                    .set_key(Some(marker.clone()))
                    .consistent_read(true)
                    .send()
                    .await
                    .expect("read a replication marker");
                arrived &= found.item.is_some();
            }
            if arrived {
                return;
            }
            let progress = *self.link.state.lock().unwrap();
            if (progress.read, progress.applied) != seen {
                seen = (progress.read, progress.applied);
                since = Instant::now();
            }
            assert!(
                since.elapsed() < stall,
                "replication stalled for {stall:?} ({} writes pending)",
                progress.pending
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes applied to the other Region, and replicated writes dropped because the receiving
    /// replica held a newer write of the item (last writer wins).
    pub fn counts(&self) -> (u64, u64) {
        let progress = *self.link.state.lock().unwrap();
        (progress.applied, progress.dropped_as_older)
    }
}

impl Drop for StandInReplication {
    fn drop(&mut self) {
        self.link.stop.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The key of settle's `n`th marker written in Region `from`: no item of the product has it.
fn marker_key(key: &Key, from: usize, n: u64) -> Item {
    key.iter()
        .map(|(name, kind)| {
            let value = match kind {
                ScalarAttributeType::N => AttributeValue::N(n.to_string()),
                _ => AttributeValue::S(format!("#replication-marker#{from}#{n}")),
            };
            (name.clone(), value)
        })
        .collect()
}

/// The table's key attributes with their types, and its stream, turned on (NEW_AND_OLD_IMAGES,
/// as a global table's replicas have) when it has none.
async fn key_and_stream(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> (Key, String) {
    let described = dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe table");
    let description = described.table().expect("a table description");
    let key = description
        .key_schema()
        .iter()
        .map(|key| {
            let name = key.attribute_name().to_owned();
            let kind = description
                .attribute_definitions()
                .iter()
                .find(|d| d.attribute_name() == name)
                .map(|d| d.attribute_type().clone())
                .expect("a key attribute is defined");
            (name, kind)
        })
        .collect();
    if let Some(arn) = description.latest_stream_arn()
        && description.stream_specification().is_some_and(|s| s.stream_enabled())
    {
        return (key, arn.to_owned());
    }
    let spec = StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewAndOldImages)
        .build()
        .expect("a stream specification");
    let updated = dynamodb
        .update_table()
        .table_name(table)
        .stream_specification(spec)
        .send()
        .await
        .expect("turn on the table's stream");
    let arn = updated
        .table_description()
        .and_then(|t| t.latest_stream_arn())
        .expect("a stream once turned on")
        .to_owned();
    (key, arn)
}

/// (Region, table, item key): one item of one replica.
type ItemId = (usize, usize, String);

/// The replication task's state.
struct Replicator {
    link: Arc<Link>,
    /// Per Region, per replicated table.
    sources: Vec<Vec<Source>>,
    replicas: Vec<Replica>,
    clock: u64,
    /// The stamp of the latest write of each item a Region holds.
    stamps: HashMap<ItemId, u64>,
    /// Writes this replicator made, not yet seen again on the receiving Region's stream.
    echoes: HashMap<ItemId, VecDeque<Option<String>>>,
    queue: VecDeque<Delivery>,
}

impl Replicator {
    async fn run(mut self) {
        while !self.link.stop.load(Ordering::SeqCst) {
            let read = self.read_streams().await;
            let (applied, dropped) = self.deliver_due().await;
            {
                let mut state = self.link.state.lock().unwrap();
                state.pending = self.queue.len();
                state.applied += applied;
                state.dropped_as_older += dropped;
                state.read += read;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads what both Regions' streams hold since the last pass: each local write is stamped
    /// and queued for the other Region, each echo of a replicated write is passed over. Returns
    /// how many records it read.
    async fn read_streams(&mut self) -> u64 {
        let mut read = 0;
        for (region, region_sources) in self.sources.iter_mut().enumerate() {
            for (table, source) in region_sources.iter_mut().enumerate() {
                for (item_key, image) in source.read().await {
                    read += 1;
                    let key = canonical(&item_key);
                    let id = (region, table, key.clone());
                    let seen = image.as_ref().map(canonical);
                    if let Some(waiting) = self.echoes.get_mut(&id)
                        && waiting.front() == Some(&seen)
                    {
                        waiting.pop_front();
                        continue;
                    }
                    self.clock += 1;
                    self.stamps.insert(id, self.clock);
                    self.queue.push_back(Delivery {
                        due: Instant::now() + self.link.lag,
                        from: region,
                        table,
                        key,
                        item_key,
                        image,
                        stamp: self.clock,
                    });
                }
            }
        }
        read
    }

    /// Applies the queued writes whose lag has passed, in order, unless the link is cut; a write
    /// older than the receiving replica's latest of that item is dropped (last writer wins).
    /// Returns (applied, dropped).
    async fn deliver_due(&mut self) -> (u64, u64) {
        let (mut applied, mut dropped) = (0, 0);
        while !self.link.cut.load(Ordering::SeqCst)
            && let Some(delivery) = self.queue.front()
            && delivery.due <= Instant::now()
        {
            let delivery = self.queue.pop_front().expect("the front delivery");
            let to = 1 - delivery.from;
            let id = (to, delivery.table, delivery.key.clone());
            if self.stamps.get(&id).is_some_and(|held| *held > delivery.stamp) {
                dropped += 1;
                continue;
            }
            let replica = &self.replicas[to];
            let table = &replica.tables[delivery.table].name;
            match &delivery.image {
                Some(image) => {
                    replica
                        .client
                        .put_item()
                        .table_name(table)
                        .set_item(Some(image.clone()))
                        .send()
                        .await
                        .expect("replicated put");
                }
                None => {
                    replica
                        .client
                        .delete_item()
                        .table_name(table)
                        .set_key(Some(delivery.item_key.clone()))
                        .send()
                        .await
                        .expect("replicated delete");
                }
            }
            self.echoes
                .entry(id.clone())
                .or_default()
                .push_back(delivery.image.as_ref().map(canonical));
            self.stamps.insert(id, delivery.stamp);
            applied += 1;
        }
        (applied, dropped)
    }
}

impl Source {
    /// Every record written since the last read, as (item key, new image; `None` for a removal),
    /// shard by shard.
    async fn read(&mut self) -> Vec<(Item, Option<Item>)> {
        let described = self
            .streams
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await
            .expect("describe stream");
        for shard in described.stream_description().map(|d| d.shards()).unwrap_or_default() {
            let Some(id) = shard.shard_id() else { continue };
            if !self.iterators.contains_key(id) {
                let iterator = self.open(id).await;
                self.iterators.insert(id.to_owned(), Some(iterator));
            }
        }
        let mut records = Vec::new();
        let shards: Vec<String> = self.iterators.keys().cloned().collect();
        for shard in shards {
            while let Some(iterator) = self.iterators[&shard].clone() {
                let page = match self.streams.get_records().shard_iterator(iterator).send().await {
                    Ok(page) => page,
                    // DynamoDB Local sometimes refuses an iterator it handed out (as AWS does
                    // once one expires): the shard is opened again after what was read.
                    Err(e)
                        if matches!(
                            e.code(),
                            Some("ExpiredIteratorException" | "TrimmedDataAccessException")
                        ) =>
                    {
                        let iterator = self.open(&shard).await;
                        self.iterators.insert(shard.clone(), Some(iterator));
                        break;
                    }
                    Err(e) => panic!("get records: {e:?}"),
                };
                self.iterators
                    .insert(shard.clone(), page.next_shard_iterator().map(str::to_owned));
                if page.records().is_empty() {
                    break;
                }
                for record in page.records() {
                    let Some(change) = record.dynamodb() else { continue };
                    if let Some(sequence) = change.sequence_number() {
                        self.read_up_to.insert(shard.clone(), sequence.to_owned());
                    }
                    let key = change.keys().map(converted).unwrap_or_default();
                    let image = match record.event_name().map(|n| n.as_str()) {
                        Some("REMOVE") => None,
                        _ => change.new_image().map(converted),
                    };
                    records.push((key, image));
                }
            }
        }
        records
    }
}

impl Source {
    /// An iterator on `shard` after the last record read from it, else from its start.
    async fn open(&self, shard: &str) -> String {
        let request = self.streams.get_shard_iterator().stream_arn(&self.arn).shard_id(shard);
        let request = match self.read_up_to.get(shard) {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        request
            .send()
            .await
            .expect("shard iterator")
            .shard_iterator
            .expect("an iterator")
    }
}

/// An item read from a stream, as the DynamoDB client writes it.
fn converted(item: &HashMap<String, StreamValue>) -> Item {
    item.iter()
        .map(|(name, value)| (name.clone(), value_of(value)))
        .collect()
}

fn value_of(value: &StreamValue) -> AttributeValue {
    match value {
        StreamValue::S(s) => AttributeValue::S(s.clone()),
        StreamValue::N(n) => AttributeValue::N(n.clone()),
        StreamValue::B(b) => AttributeValue::B(b.clone()),
        StreamValue::Bool(b) => AttributeValue::Bool(*b),
        StreamValue::Null(n) => AttributeValue::Null(*n),
        StreamValue::Ss(v) => AttributeValue::Ss(v.clone()),
        StreamValue::Ns(v) => AttributeValue::Ns(v.clone()),
        StreamValue::Bs(v) => AttributeValue::Bs(v.clone()),
        StreamValue::L(v) => AttributeValue::L(v.iter().map(value_of).collect()),
        StreamValue::M(m) => AttributeValue::M(converted(m)),
        other => panic!("an attribute type the stand-in does not know: {other:?}"),
    }
}

/// An item as text that does not depend on the order of its attributes, at any depth.
fn canonical(item: &Item) -> String {
    let sorted: BTreeMap<&String, String> = item
        .iter()
        .map(|(name, value)| (name, canonical_value(value)))
        .collect();
    format!("{sorted:?}")
}

fn canonical_value(value: &AttributeValue) -> String {
    match value {
        AttributeValue::M(map) => format!("M{}", canonical(map)),
        AttributeValue::L(list) => format!("L{:?}", list.iter().map(canonical_value).collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}
