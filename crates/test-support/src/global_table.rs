//! A stand-in for DynamoDB global tables between test stacks that each stand for a Region. No
//! engine here replicates between Regions (LocalStack serves a replica as the same table, with no
//! stream in the replica's Region), so the multi-Region tests join two or three [`TestStack`]s
//! with this: test code, never something to run in place of AWS.
//!
//! It behaves as the AWS documentation describes version 2019.11.21 in multi-Region eventual
//! consistency mode, as far as the product can tell:
//! - replication is asynchronous and item by item: each write arrives in each other Region after
//!   the lag the test sets, plus, if it asks, a jitter of its own and extra delays for chosen
//!   items, so the items one transaction wrote arrive apart and in another order;
//! - a replicated write lands on the receiving Region's table like any write, so it is on that
//!   Region's stream too;
//! - conflicts resolve per item, last writer wins, by the time of the write: every write made
//!   through a Region's client ([`region_client`]) is stamped with its time and Region (hidden
//!   attributes, as version 2017.11.29 kept `aws:rep:updatetime`), and a replicated write is
//!   applied only if it is newer than what the receiving replica holds, in one conditional write;
//! - reads that do not ask for consistency can be served from a copy of the Region's table that
//!   lags behind it ([`Options::stale_reads`]): such a read may miss the writes of the last moments;
//! - any number of Regions; a link can be cut in one direction or both (writes wait until it is
//!   restored).
//!
//! [`StandInReplication::settle`] writes a marker item (a key no product item has, no
//! `item_type`) into every replicated table of every Region and waits for each everywhere else,
//! then for everything read before it: the tables keep those markers.
//!
//! What it does not model: throttling, the replication of a write a Region received (each write
//! replicates from the Region it was made in only, as on AWS), and writes made by clients other
//! than [`region_client`]s (the poller's own client, say), which it stamps when it reads them.

use crate::stack::TestStack;
use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextMut;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents, SharedHttpClient};
use aws_sdk_dynamodb::operation::delete_item::DeleteItemInput;
use aws_sdk_dynamodb::operation::get_item::GetItemInput;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::operation::query::QueryInput;
use aws_sdk_dynamodb::operation::scan::ScanInput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
use aws_sdk_dynamodb::operation::update_item::UpdateItemInput;
use aws_sdk_dynamodb::types::{
    AttributeValue, BillingMode, GlobalSecondaryIndex, ReturnValue, ScalarAttributeType, StreamSpecification,
    StreamViewType,
};
use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, ShardIteratorType};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio::time::Instant;

type Item = HashMap<String, AttributeValue>;
/// A table's key attributes: name and type.
type Key = Vec<(String, ScalarAttributeType)>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// On every item a Region writes: when (microseconds since the epoch) and where. Last writer
/// wins compares these.
pub const WRITTEN_AT: &str = "standin:written_at";
pub const WRITTEN_IN: &str = "standin:written_in";

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

/// The time of a write: microseconds since the epoch, one clock for every Region of the test
/// process, strictly increasing so that no two writes tie.
fn write_time() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let mut last = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// What a Region's DynamoDB client does for the stand-in: stamps every write with its time and
/// Region, remembers when it deleted what, serves eventually consistent reads of replicated
/// tables from their lagging copies once the stand-in made them, and holds chosen writes back.
#[derive(Debug)]
pub struct RegionHooks {
    region: String,
    /// Table name to the name of its lagging copy.
    stale: RwLock<HashMap<String, String>>,
    /// (table, item key) to the time this Region deleted it.
    deletes: Mutex<HashMap<(String, String), u64>>,
    pauses: Mutex<Vec<Pause>>,
}

#[derive(Debug, Clone)]
struct Pause {
    table: String,
    key_value: String,
    delay: Duration,
    until: std::time::Instant,
}

impl RegionHooks {
    pub fn new(region: &str) -> Arc<Self> {
        Arc::new(Self {
            region: region.to_owned(),
            stale: Default::default(),
            deletes: Default::default(),
            pauses: Default::default(),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// For the next `window`, holds every write through this Region's client of an item of
    /// `table` whose key names `key_value` (e.g. `SLOT#s1`) for `delay` before it is sent: a
    /// process that stalls between deciding and writing.
    pub fn pause_writes(&self, table: &str, key_value: &str, delay: Duration, window: Duration) {
        self.pauses.lock().unwrap().push(Pause {
            table: table.to_owned(),
            key_value: key_value.to_owned(),
            delay,
            until: std::time::Instant::now() + window,
        });
    }

    /// How long to hold a request that writes, whose body names `table` and `key_value`.
    fn pause_for(&self, body: &[u8]) -> Option<Duration> {
        let text = std::str::from_utf8(body).ok()?;
        self.pauses
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.until > std::time::Instant::now())
            .filter(|p| text.contains(&format!("\"{}\"", p.table)) && text.contains(&format!("\"{}\"", p.key_value)))
            .map(|p| p.delay)
            .max()
    }

    fn stamp(&self, item: &mut Item, at: u64) {
        item.insert(WRITTEN_AT.into(), AttributeValue::N(at.to_string()));
        item.insert(WRITTEN_IN.into(), AttributeValue::S(self.region.clone()));
    }

    fn stamp_update(
        &self,
        expression: &mut Option<String>,
        names: &mut Option<HashMap<String, String>>,
        values: &mut Option<HashMap<String, AttributeValue>>,
        at: u64,
    ) {
        *expression = Some(with_stamp_clause(expression.as_deref().unwrap_or_default()));
        names.get_or_insert_default().extend([
            ("#standin_written_at".to_owned(), WRITTEN_AT.to_owned()),
            ("#standin_written_in".to_owned(), WRITTEN_IN.to_owned()),
        ]);
        values.get_or_insert_default().extend([
            (":standin_written_at".to_owned(), AttributeValue::N(at.to_string())),
            (":standin_written_in".to_owned(), AttributeValue::S(self.region.clone())),
        ]);
    }

    fn deleted(&self, table: &str, key: &Item, at: u64) {
        self.deletes
            .lock()
            .unwrap()
            .insert((table.to_owned(), canonical(key)), at);
    }

    fn take_delete_time(&self, table: &str, key: &str) -> Option<u64> {
        self.deletes.lock().unwrap().remove(&(table.to_owned(), key.to_owned()))
    }

    /// Points an eventually consistent read of a table that has a lagging copy at that copy.
    fn stale_read(&self, table: &mut Option<String>, consistent: Option<bool>) {
        if consistent == Some(true) {
            return;
        }
        if let Some(name) = table.as_mut()
            && let Some(copy) = self.stale.read().unwrap().get(name.as_str())
        {
            *name = copy.clone();
        }
    }

    /// Stamps the writes and redirects the reads of one request.
    fn rewrite(&self, input: &mut aws_smithy_runtime_api::client::interceptors::context::Input) {
        if let Some(put) = input.downcast_mut::<PutItemInput>() {
            if let Some(item) = put.item.as_mut() {
                self.stamp(item, write_time());
            }
        } else if let Some(update) = input.downcast_mut::<UpdateItemInput>() {
            self.stamp_update(
                &mut update.update_expression,
                &mut update.expression_attribute_names,
                &mut update.expression_attribute_values,
                write_time(),
            );
        } else if let Some(delete) = input.downcast_mut::<DeleteItemInput>() {
            if let (Some(table), Some(key)) = (&delete.table_name, &delete.key) {
                self.deleted(table, key, write_time());
            }
        } else if let Some(transaction) = input.downcast_mut::<TransactWriteItemsInput>() {
            // One time for the whole transaction, as DynamoDB gives its writes.
            let at = write_time();
            for item in transaction.transact_items.iter_mut().flatten() {
                if let Some(put) = item.put.as_mut() {
                    self.stamp(&mut put.item, at);
                }
                if let Some(update) = item.update.as_mut() {
                    let mut expression = Some(std::mem::take(&mut update.update_expression));
                    self.stamp_update(
                        &mut expression,
                        &mut update.expression_attribute_names,
                        &mut update.expression_attribute_values,
                        at,
                    );
                    update.update_expression = expression.unwrap_or_default();
                }
                if let Some(delete) = item.delete.as_ref() {
                    self.deleted(&delete.table_name, &delete.key, at);
                }
            }
        } else if let Some(get) = input.downcast_mut::<GetItemInput>() {
            self.stale_read(&mut get.table_name, get.consistent_read);
        } else if let Some(query) = input.downcast_mut::<QueryInput>() {
            self.stale_read(&mut query.table_name, query.consistent_read);
        } else if let Some(scan) = input.downcast_mut::<ScanInput>() {
            self.stale_read(&mut scan.table_name, scan.consistent_read);
        }
    }
}

/// `expression` with the stamp's assignments added to its SET clause (or a SET clause added).
fn with_stamp_clause(expression: &str) -> String {
    const STAMP: &str = "#standin_written_at = :standin_written_at, #standin_written_in = :standin_written_in";
    let set = expression.char_indices().find(|&(i, _)| {
        expression[i..].len() >= 3
            && expression[i..i + 3].eq_ignore_ascii_case("SET")
            && expression[..i].chars().last().is_none_or(char::is_whitespace)
            && expression[i + 3..].chars().next().is_some_and(char::is_whitespace)
    });
    match set {
        Some((i, _)) => format!("{}SET {STAMP},{}", &expression[..i], &expression[i + 3..]),
        None => format!("SET {STAMP} {expression}"),
    }
}

#[derive(Debug)]
struct RegionInterceptor(Arc<RegionHooks>);

impl Intercept for RegionInterceptor {
    fn name(&self) -> &'static str {
        "global-table stand-in"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.rewrite(context.input_mut());
        Ok(())
    }
}

/// A DynamoDB client for the Region `hooks` stands for: what the product's code in that Region
/// uses, so that the stand-in knows when and where each write was made.
pub fn region_client(sdk: &aws_config::SdkConfig, hooks: Arc<RegionHooks>) -> aws_sdk_dynamodb::Client {
    // The engines listen on plain HTTP on loopback.
    let inner = sdk
        .http_client()
        .unwrap_or_else(|| aws_smithy_http_client::Builder::new().build_http());
    let config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .interceptor(RegionInterceptor(hooks.clone()))
        .http_client(PausingHttpClient { inner, hooks })
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// The Region's HTTP client, holding back the requests [`RegionHooks::pause_writes`] names
/// (asynchronously: nothing else waits).
#[derive(Debug)]
struct PausingHttpClient {
    inner: SharedHttpClient,
    hooks: Arc<RegionHooks>,
}

impl HttpClient for PausingHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(PausingConnector {
            inner: self.inner.http_connector(settings, components),
            hooks: self.hooks.clone(),
        })
    }
}

#[derive(Debug)]
struct PausingConnector {
    inner: SharedHttpConnector,
    hooks: Arc<RegionHooks>,
}

impl HttpConnector for PausingConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let writes = request.headers().get("x-amz-target").is_some_and(|target| {
            ["PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"]
                .iter()
                .any(|op| target.ends_with(op))
        });
        let pause = writes
            .then(|| request.body().bytes().and_then(|body| self.hooks.pause_for(body)))
            .flatten();
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
            inner.call(request).await
        })
    }
}

/// How the stand-in replicates.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long after it was read from its Region's stream a write arrives elsewhere.
    pub lag: Duration,
    /// Up to this much more for each write, its own: the items of one transaction arrive apart,
    /// in another order than they were written.
    pub jitter: Duration,
    /// Eventually consistent reads see each Region's tables as they were this long ago.
    pub stale_reads: Option<Duration>,
    /// The replicated tables, by the variables that name them.
    pub tables: &'static [&'static str],
}

impl Options {
    pub fn lag(lag: Duration) -> Self {
        Self {
            lag,
            jitter: Duration::ZERO,
            stale_reads: None,
            tables: REPLICATED_TABLES,
        }
    }

    pub fn jitter(self, jitter: Duration) -> Self {
        Self { jitter, ..self }
    }

    pub fn stale_reads(self, behind: Duration) -> Self {
        Self {
            stale_reads: Some(behind),
            ..self
        }
    }

    pub fn tables(self, tables: &'static [&'static str]) -> Self {
        Self { tables, ..self }
    }
}

/// What replication did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReplicationFigures {
    /// Records read from the Regions' streams.
    pub read: u64,
    /// Writes applied in another Region.
    pub applied: u64,
    /// Replicated writes dropped because the receiving replica held a newer write of the item.
    pub dropped_as_older: u64,
    /// Writes applied before a write read earlier on the same link: arrived out of order.
    pub reordered: u64,
}

/// The replication between the Regions' tables; stops when dropped.
pub struct StandInReplication {
    link: Arc<Link>,
    task: Option<JoinHandle<()>>,
    regions: Vec<ReplicaView>,
    /// The replicated tables' variables, in the order of each [`ReplicaView::tables`].
    tables: &'static [&'static str],
    markers: AtomicU64,
}

/// One Region's replica as the stand-in writes it: its name, a client of its own (its writes
/// are not stamped again), its replicated tables in [`Options::tables`] order.
#[derive(Clone)]
struct ReplicaView {
    name: String,
    client: aws_sdk_dynamodb::Client,
    hooks: Arc<RegionHooks>,
    tables: Vec<ReplicaTable>,
}

#[derive(Clone)]
struct ReplicaTable {
    name: String,
    key: Key,
}

/// What a test controls while replication runs.
struct Link {
    /// (from, to) Region indexes whose writes wait.
    cut: Mutex<HashSet<(usize, usize)>>,
    delays: Mutex<Vec<DelayRule>>,
    stop: AtomicBool,
    state: Mutex<Progress>,
}

impl Link {
    fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut.lock().unwrap().contains(&(from, to))
    }
}

struct DelayRule {
    table: usize,
    matches: Box<dyn Fn(&Item) -> bool + Send + Sync>,
    extra: Duration,
}

#[derive(Default, Clone)]
struct Progress {
    figures: ReplicationFigures,
    pending: usize,
    /// The sequence number of the last record read.
    read_seq: u64,
    /// Per link (from, to), the lowest sequence number of a write still on its way on it.
    pending_links: Vec<(usize, usize, u64)>,
}

/// Where a write goes: another Region's replica, or its own Region's lagging copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Replica(usize),
    Copy(usize),
}

/// One write on its way.
struct Delivery {
    seq: u64,
    from: usize,
    to: Target,
    table: usize,
    key: String,
    item_key: Item,
    image: Option<Item>,
    written_at: u64,
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
    /// Region, made with [`TestStack::in_region`]), each write arriving `lag` after it was read
    /// from its Region's stream.
    pub async fn start(regions: &[&TestStack], lag: Duration) -> Self {
        Self::start_with(regions, Options::lag(lag)).await
    }

    /// Replicates the tables named by `replicated` (variables, as [`REPLICATED_TABLES`]).
    pub async fn start_tables(regions: &[&TestStack], lag: Duration, replicated: &'static [&'static str]) -> Self {
        Self::start_with(regions, Options::lag(lag).tables(replicated)).await
    }

    /// Replicates as `options` say. Turns on a stream on tables that have none, as DynamoDB
    /// does for a global table's replicas, and makes the lagging copies stale reads need.
    pub async fn start_with(regions: &[&TestStack], options: Options) -> Self {
        let mut sources: Vec<Vec<Source>> = Vec::new();
        let mut replicas = Vec::new();
        let mut copies: Vec<Vec<String>> = Vec::new();
        for stack in regions {
            let hooks = stack
                .region_hooks
                .clone()
                .expect("a stack of a Region: make it with TestStack::in_region");
            let mut region_sources = Vec::new();
            let mut tables = Vec::new();
            let mut region_copies = Vec::new();
            for var in options.tables {
                let name = stack.name(var);
                let (key, arn) = key_and_stream(&stack.raw_dynamodb(), &name).await;
                region_sources.push(Source {
                    streams: aws_sdk_dynamodbstreams::Client::new(&stack.sdk),
                    arn,
                    iterators: BTreeMap::new(),
                    read_up_to: HashMap::new(),
                });
                if options.stale_reads.is_some() {
                    let copy = lagging_copy(&stack.raw_dynamodb(), &name).await;
                    hooks.stale.write().unwrap().insert(name.clone(), copy.clone());
                    region_copies.push(copy);
                }
                tables.push(ReplicaTable { name, key });
            }
            sources.push(region_sources);
            copies.push(region_copies);
            replicas.push(ReplicaView {
                name: hooks.region().to_owned(),
                client: stack.raw_dynamodb(),
                hooks,
                tables,
            });
        }
        let tables = options.tables;
        let link = Arc::new(Link {
            cut: Default::default(),
            delays: Default::default(),
            stop: AtomicBool::new(false),
            state: Mutex::new(Progress::default()),
        });
        let replicator = Replicator {
            link: link.clone(),
            options,
            sources,
            replicas: replicas.clone(),
            copies,
            seq: 0,
            queue: BTreeMap::new(),
            echoes: HashSet::new(),
            deleted_at: HashMap::new(),
            highest_applied: HashMap::new(),
            last_seen: HashMap::new(),
        };
        let task = tokio::spawn(replicator.run());
        Self {
            link,
            task: Some(task),
            regions: replicas,
            tables,
            markers: Default::default(),
        }
    }

    fn index(&self, region: &str) -> usize {
        self.regions
            .iter()
            .position(|r| r.name == region)
            .unwrap_or_else(|| panic!("no Region {region} in this replication"))
    }

    /// Holds every write between every two Regions until [`Self::restore`].
    pub fn cut(&self) {
        let n = self.regions.len();
        let mut cut = self.link.cut.lock().unwrap();
        for from in 0..n {
            for to in (0..n).filter(|to| *to != from) {
                cut.insert((from, to));
            }
        }
    }

    /// Restores every link.
    pub fn restore(&self) {
        self.link.cut.lock().unwrap().clear();
    }

    /// Holds the writes made in `from` on their way to `to` (and only those) until restored.
    pub fn cut_one_way(&self, from: &str, to: &str) {
        let link = (self.index(from), self.index(to));
        self.link.cut.lock().unwrap().insert(link);
    }

    pub fn restore_one_way(&self, from: &str, to: &str) {
        let link = (self.index(from), self.index(to));
        self.link.cut.lock().unwrap().remove(&link);
    }

    /// Cuts `region` off from every other Region, both ways: it is lost, as far as the others
    /// can tell.
    pub fn isolate(&self, region: &str) {
        let lost = self.index(region);
        let mut cut = self.link.cut.lock().unwrap();
        for other in (0..self.regions.len()).filter(|other| *other != lost) {
            cut.insert((lost, other));
            cut.insert((other, lost));
        }
    }

    /// Writes to the table named by `table_var` whose new image `matches` arrive `extra` later
    /// than the others (a removal has no image and is never delayed).
    pub fn delay_items(
        &self,
        table_var: &str,
        matches: impl Fn(&Item) -> bool + Send + Sync + 'static,
        extra: Duration,
    ) {
        let table = self
            .tables
            .iter()
            .position(|var| *var == table_var)
            .unwrap_or_else(|| panic!("{table_var} is not replicated"));
        self.link.delays.lock().unwrap().push(DelayRule {
            table,
            matches: Box::new(matches),
            extra,
        });
    }

    /// Waits until every write made so far in any Region has arrived in every other (the links
    /// restored). A marker item is written into every replicated table of every Region; once
    /// each has arrived everywhere, everything read before them has been read too, and the wait
    /// goes on until each of those writes was applied or dropped. Panics when replication reads
    /// and applies nothing for `stall` (a slow machine only makes it take longer).
    pub async fn settle(&self, stall: Duration) {
        let all: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        self.settle_among(&all, stall).await;
    }

    /// [`Self::settle`] among `regions` only (the links between them restored), leaving out a
    /// Region that is cut off: what each of them wrote has arrived in the others.
    pub async fn settle_among(&self, regions: &[&str], stall: Duration) {
        let among: Vec<usize> = regions.iter().map(|region| self.index(region)).collect();
        let n = self.markers.fetch_add(1, Ordering::SeqCst);
        let mut markers = Vec::new();
        for (from, replica) in self.regions.iter().enumerate().filter(|(i, _)| among.contains(i)) {
            for (table, replicated) in replica.tables.iter().enumerate() {
                let marker = marker_key(&replica.tables[table].key, from, n);
                let mut item = marker.clone();
                replica.hooks.stamp(&mut item, write_time());
                replica
                    .client
                    .put_item()
                    .table_name(&replicated.name)
                    .set_item(Some(item))
                    .send()
                    .await
                    .expect("write a replication marker");
                for &to in among.iter().filter(|to| **to != from) {
                    markers.push((to, table, marker.clone()));
                }
            }
        }
        let mut watch = StallWatch::new(stall);
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
                break;
            }
            watch.check(&self.link);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let read_before = self.link.state.lock().unwrap().read_seq;
        loop {
            let pending = self.link.state.lock().unwrap().pending_links.clone();
            let waiting = pending
                .iter()
                .any(|(from, to, seq)| among.contains(from) && among.contains(to) && *seq <= read_before);
            if !waiting {
                return;
            }
            watch.check(&self.link);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes applied in another Region, and replicated writes dropped because the receiving
    /// replica held a newer write of the item (last writer wins).
    pub fn counts(&self) -> (u64, u64) {
        let figures = self.figures();
        (figures.applied, figures.dropped_as_older)
    }

    pub fn figures(&self) -> ReplicationFigures {
        self.link.state.lock().unwrap().figures
    }

    /// The Regions this replication joins, in the order it was given them.
    pub fn regions(&self) -> Vec<String> {
        self.regions.iter().map(|r| r.name.clone()).collect()
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

/// Fails a wait once replication has read and applied nothing for a while.
struct StallWatch {
    stall: Duration,
    seen: (u64, u64),
    since: Instant,
}

impl StallWatch {
    fn new(stall: Duration) -> Self {
        Self {
            stall,
            seen: (u64::MAX, u64::MAX),
            since: Instant::now(),
        }
    }

    fn check(&mut self, link: &Link) {
        let progress = link.state.lock().unwrap().clone();
        let now = (
            progress.figures.read,
            progress.figures.applied + progress.figures.dropped_as_older,
        );
        if now != self.seen {
            self.seen = now;
            self.since = Instant::now();
        }
        assert!(
            self.since.elapsed() < self.stall,
            "replication stalled for {:?} ({} writes pending; is a link cut?)",
            self.stall,
            progress.pending
        );
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

/// A table shaped like `table` (key, attribute definitions, global indexes), empty, for reads
/// that may miss the last moments' writes: its name.
async fn lagging_copy(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> String {
    let described = dynamodb
        .describe_table()
        .table_name(table)
        .send()
        .await
        .expect("describe table");
    let description = described.table().expect("a table description");
    let name = format!("{table}-lagging");
    let indexes: Vec<GlobalSecondaryIndex> = description
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            GlobalSecondaryIndex::builder()
                .index_name(index.index_name().unwrap_or_default())
                .set_key_schema(Some(index.key_schema().to_vec()))
                .set_projection(index.projection().cloned())
                .build()
                .expect("an index")
        })
        .collect();
    dynamodb
        .create_table()
        .table_name(&name)
        .set_key_schema(Some(description.key_schema().to_vec()))
        .set_attribute_definitions(Some(description.attribute_definitions().to_vec()))
        .set_global_secondary_indexes((!indexes.is_empty()).then_some(indexes))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create a lagging copy");
    name
}

/// (Region, table, item key): one item of one replica.
type ItemId = (usize, usize, String);

/// The replication task's state.
struct Replicator {
    link: Arc<Link>,
    options: Options,
    /// Per Region, per replicated table.
    sources: Vec<Vec<Source>>,
    replicas: Vec<ReplicaView>,
    /// Per Region, per replicated table, its lagging copy (none without stale reads).
    copies: Vec<Vec<String>>,
    seq: u64,
    /// Writes on their way, in the order they are due.
    queue: BTreeMap<(Instant, u64), Delivery>,
    /// Removals this replicator made, not yet seen on the receiving Region's stream.
    echoes: HashSet<ItemId>,
    /// When each replica last had each removed item removed: a replicated write older than that
    /// is dropped.
    deleted_at: HashMap<ItemId, u64>,
    /// (from, to) to the highest sequence number applied on that link.
    highest_applied: HashMap<(usize, usize), u64>,
    /// The time of the latest write of each item each Region's stream showed.
    last_seen: HashMap<ItemId, u64>,
}

impl Replicator {
    async fn run(mut self) {
        while !self.link.stop.load(Ordering::SeqCst) {
            let read = self.read_streams().await;
            let delivered = self.deliver_due().await;
            {
                let mut state = self.link.state.lock().unwrap();
                state.pending = self.queue.len();
                state.read_seq = self.seq;
                let mut lowest: BTreeMap<(usize, usize), u64> = BTreeMap::new();
                for delivery in self.queue.values() {
                    if let Target::Replica(to) = delivery.to {
                        let seq = lowest.entry((delivery.from, to)).or_insert(delivery.seq);
                        *seq = (*seq).min(delivery.seq);
                    }
                }
                state.pending_links = lowest.into_iter().map(|((from, to), seq)| (from, to, seq)).collect();
                state.figures.read += read;
                state.figures.applied += delivered.applied;
                state.figures.dropped_as_older += delivered.dropped_as_older;
                state.figures.reordered += delivered.reordered;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// This write's own extra lag: the jitter (spread by its sequence number) and the delays
    /// the test asked for.
    fn extra_lag(&self, seq: u64, table: usize, image: Option<&Item>) -> Duration {
        let mut extra = Duration::ZERO;
        if !self.options.jitter.is_zero() {
            let spread = splitmix(seq) % 1_000;
            extra += self.options.jitter.mul_f64(spread as f64 / 1_000.0);
        }
        if let Some(image) = image {
            for rule in self.link.delays.lock().unwrap().iter() {
                if rule.table == table && (rule.matches)(image) {
                    extra += rule.extra;
                }
            }
        }
        extra
    }

    /// Reads what every Region's streams hold since the last pass: each local write is queued
    /// for every other Region (and for its own Region's lagging copy), each replicated one for
    /// the lagging copy only. Returns how many records it read.
    async fn read_streams(&mut self) -> u64 {
        let mut read = 0;
        for region in 0..self.sources.len() {
            for table in 0..self.sources[region].len() {
                let records = self.sources[region][table].read().await;
                for (item_key, image) in records {
                    read += 1;
                    self.queue_record(region, table, item_key, image);
                }
            }
        }
        read
    }

    fn queue_record(&mut self, region: usize, table: usize, item_key: Item, mut image: Option<Item>) {
        let key = canonical(&item_key);
        let replica = &self.replicas[region];
        let local = match &image {
            Some(image) => image
                .get(WRITTEN_IN)
                .and_then(|r| r.as_s().ok())
                .is_none_or(|r| *r == replica.name),
            None => !self.echoes.remove(&(region, table, key.clone())),
        };
        let written_at = match &mut image {
            Some(image) => match image.get(WRITTEN_AT).and_then(|t| t.as_n().ok()) {
                Some(at) => at.parse().expect("a write time"),
                None => {
                    // A write through another client: stamped now, as it is read.
                    let at = write_time();
                    replica.hooks.stamp(image, at);
                    at
                }
            },
            None => replica
                .hooks
                .take_delete_time(&replica.tables[table].name, &key)
                .unwrap_or_else(write_time),
        };
        // A Region's writes of one item take effect in the order its stream shows, whatever
        // times their clients stamped (two concurrent writes can commit in either order), as
        // DynamoDB, which stamps a write when it commits, would have them.
        let id = (region, table, key.clone());
        let written_at = if local {
            let effective = self
                .last_seen
                .get(&id)
                .map_or(written_at, |last| written_at.max(last + 1));
            if let Some(image) = image.as_mut() {
                image.insert(WRITTEN_AT.into(), AttributeValue::N(effective.to_string()));
            }
            effective
        } else {
            written_at
        };
        let last = self.last_seen.entry(id).or_insert(written_at);
        *last = (*last).max(written_at);
        let now = Instant::now();
        if let Some(behind) = self.options.stale_reads {
            self.seq += 1;
            let seq = self.seq;
            self.queue.insert(
                (now + behind, seq),
                Delivery {
                    seq,
                    from: region,
                    to: Target::Copy(region),
                    table,
                    key: key.clone(),
                    item_key: item_key.clone(),
                    image: image.clone(),
                    written_at,
                },
            );
        }
        if !local {
            return;
        }
        if image.is_none() {
            self.deleted_at.insert((region, table, key.clone()), written_at);
        }
        for to in (0..self.replicas.len()).filter(|to| *to != region) {
            self.seq += 1;
            let seq = self.seq;
            let due = now + self.options.lag + self.extra_lag(seq, table, image.as_ref());
            self.queue.insert(
                (due, seq),
                Delivery {
                    seq,
                    from: region,
                    to: Target::Replica(to),
                    table,
                    key: key.clone(),
                    item_key: item_key.clone(),
                    image: image.clone(),
                    written_at,
                },
            );
        }
    }

    /// Applies the writes that are due, in the order they are due, except those on a cut link
    /// (they wait); in another Region, only if newer than what it holds (last writer wins).
    async fn deliver_due(&mut self) -> Delivered {
        let mut delivered = Delivered::default();
        let now = Instant::now();
        let due: Vec<(Instant, u64)> = self.queue.range(..=(now, u64::MAX)).map(|(k, _)| *k).collect();
        for slot in due {
            let delivery = &self.queue[&slot];
            if let Target::Replica(to) = delivery.to
                && self.link.is_cut(delivery.from, to)
            {
                continue;
            }
            let delivery = self.queue.remove(&slot).expect("a due delivery");
            match delivery.to {
                Target::Copy(region) => self.apply_to_copy(region, &delivery).await,
                Target::Replica(to) => {
                    if self.apply_to_replica(to, &delivery).await {
                        delivered.applied += 1;
                    } else {
                        delivered.dropped_as_older += 1;
                    }
                    let highest = self.highest_applied.entry((delivery.from, to)).or_insert(0);
                    if delivery.seq < *highest {
                        delivered.reordered += 1;
                    }
                    *highest = (*highest).max(delivery.seq);
                }
            }
        }
        delivered
    }

    async fn apply_to_copy(&self, region: usize, delivery: &Delivery) {
        let replica = &self.replicas[region];
        let copy = &self.copies[region][delivery.table];
        match &delivery.image {
            Some(image) => {
                replica
                    .client
                    .put_item()
                    .table_name(copy)
                    .set_item(Some(image.clone()))
                    .send()
                    .await
                    .expect("a write to a lagging copy");
            }
            None => {
                replica
                    .client
                    .delete_item()
                    .table_name(copy)
                    .set_key(Some(delivery.item_key.clone()))
                    .send()
                    .await
                    .expect("a removal from a lagging copy");
            }
        }
    }

    /// Applies a write in Region `to` if it is newer than what `to` holds: whether it did.
    async fn apply_to_replica(&mut self, to: usize, delivery: &Delivery) -> bool {
        let id = (to, delivery.table, delivery.key.clone());
        if self.deleted_at.get(&id).is_some_and(|at| *at > delivery.written_at) {
            return false;
        }
        let replica = &self.replicas[to];
        let table = &replica.tables[delivery.table].name;
        let at = AttributeValue::N(delivery.written_at.to_string());
        match &delivery.image {
            Some(image) => {
                let from = AttributeValue::S(self.replicas[delivery.from].name.clone());
                let put = replica
                    .client
                    .put_item()
                    .table_name(table)
                    .set_item(Some(image.clone()))
                    .condition_expression("attribute_not_exists(#at) OR #at < :at OR (#at = :at AND #in < :in)")
                    .expression_attribute_names("#at", WRITTEN_AT)
                    .expression_attribute_names("#in", WRITTEN_IN)
                    .expression_attribute_values(":at", at)
                    .expression_attribute_values(":in", from)
                    .send()
                    .await;
                match put {
                    Ok(_) => true,
                    Err(e) if e.code() == Some("ConditionalCheckFailedException") => false,
                    Err(e) => panic!("replicated put: {e:?}"),
                }
            }
            None => {
                let removed = replica
                    .client
                    .delete_item()
                    .table_name(table)
                    .set_key(Some(delivery.item_key.clone()))
                    .condition_expression("attribute_not_exists(#at) OR #at < :at")
                    .expression_attribute_names("#at", WRITTEN_AT)
                    .expression_attribute_values(":at", at)
                    .return_values(ReturnValue::AllOld)
                    .send()
                    .await;
                match removed {
                    Ok(out) => {
                        if out.attributes.is_some_and(|a| !a.is_empty()) {
                            self.echoes.insert(id.clone());
                        }
                        self.deleted_at.insert(id, delivery.written_at);
                        true
                    }
                    Err(e) if e.code() == Some("ConditionalCheckFailedException") => false,
                    Err(e) => panic!("replicated delete: {e:?}"),
                }
            }
        }
    }
}

#[derive(Default)]
struct Delivered {
    applied: u64,
    dropped_as_older: u64,
    reordered: u64,
}

/// A well-spread number from a sequence number: each write's jitter, the same on every run.
fn splitmix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_joins_an_update_expressions_set_clause_or_makes_one() {
        const STAMP: &str = "#standin_written_at = :standin_written_at, #standin_written_in = :standin_written_in";
        assert_eq!(
            with_stamp_clause("SET #a = :a REMOVE #b"),
            format!("SET {STAMP}, #a = :a REMOVE #b")
        );
        assert_eq!(
            with_stamp_clause("REMOVE #moving_to"),
            format!("SET {STAMP} REMOVE #moving_to")
        );
        assert_eq!(
            with_stamp_clause("ADD n :one set #a = :a"),
            format!("ADD n :one SET {STAMP}, #a = :a")
        );
        // A word that merely starts with SET is no clause.
        assert_eq!(
            with_stamp_clause("REMOVE settled"),
            format!("SET {STAMP} REMOVE settled")
        );
    }

    #[test]
    fn writes_are_stamped_with_strictly_increasing_times() {
        let times: Vec<u64> = (0..1_000).map(|_| write_time()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]));
    }
}
