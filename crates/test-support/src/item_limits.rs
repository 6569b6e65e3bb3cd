//! A model of DynamoDB's per-item write limits, as an HTTP proxy in front of DynamoDB Local
//! (which serialises everything and never throttles), for the benchmarks and the tests that need
//! DynamoDB's behaviour under contention. Point a client at it with `AWS_ENDPOINT_URL_DYNAMODB`.
//!
//! What it models, from the DynamoDB developer guide (docs/benchmarks.md, "A flash sale on one
//! slot", cites the pages):
//! - **Write units per item.** Each item (a partition key value, here each item its own partition)
//!   takes at most `write_units_per_second` write units a second (1,000 on DynamoDB: a
//!   partition's limit), with one second of burst. A write costs one unit per started KB of the
//!   item, a transactional write twice that (DynamoDB prepares and commits each item). Over the
//!   budget, a `TransactWriteItems` is cancelled with `ThrottlingError` for that item, and a
//!   single write answers `ProvisionedThroughputExceededException`.
//! - **Transaction conflicts.** For `hold` from the moment a `TransactWriteItems` is admitted
//!   (the transaction's duration on DynamoDB, two phases across partitions), its items are held:
//!   another `TransactWriteItems` with one of them is cancelled (`TransactionCanceledException`,
//!   `TransactionConflict` for the held items and `None` for the others, in request order), and a
//!   `PutItem`, `UpdateItem` or `DeleteItem` of one fails with `TransactionConflictException`.
//!   The time DynamoDB Local takes is not counted: it is mostly queueing behind every other
//!   request on this machine (it serialises them), which on DynamoDB holds no item. DynamoDB Local
//!   still applies each transaction's conditions, in the order it receives them. Reads are never
//!   refused: a `GetItem` or a `BatchGetItem` reads the last committed value.
//!
//! Not modelled: `TransactGetItems` and `BatchWriteItem` (passed through), table- and
//! account-level limits, adaptive capacity and split for heat, reads' units.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;

/// The limits the proxy enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Write units per second per item (DynamoDB: 1,000 per partition).
    pub write_units_per_second: f64,
    /// How long a transaction holds its items from the moment it is admitted.
    pub hold: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            write_units_per_second: 1_000.0,
            hold: Duration::from_millis(10),
        }
    }
}

/// What the proxy saw and refused, by operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Requests by operation (`TransactWriteItems`, `GetItem`, ...).
    pub requests: BTreeMap<String, u64>,
    /// Transactions cancelled because an item was held by another (each counted once).
    pub transaction_conflicts: u64,
    /// Single writes refused because the item was held.
    pub write_conflicts: u64,
    /// Transactions cancelled because an item was over its write units.
    pub transactions_throttled: u64,
    /// Single writes refused because the item was over its write units.
    pub writes_throttled: u64,
}

/// One item: its table and its key as canonical JSON.
type ItemKey = (String, String);

struct Bucket {
    units: f64,
    at: Instant,
}

#[derive(Default)]
struct State {
    /// Items held by a transaction: until when. An expiry, not a timer: a timer's task runs late
    /// on a busy machine, and the hold would grow with the load.
    held: HashMap<ItemKey, Instant>,
    buckets: HashMap<ItemKey, Bucket>,
    /// Each item's size as last put, in bytes (updates are charged at least that).
    sizes: HashMap<ItemKey, u64>,
    counts: Counts,
}

/// The running proxy. Dropping it stops it.
pub struct ItemLimitsProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: String,
    limits: Limits,
    http: reqwest::Client,
    state: Mutex<State>,
    /// Each table's key attributes, asked of the upstream once.
    key_schemas: tokio::sync::Mutex<HashMap<String, Vec<String>>>,
}

impl Drop for ItemLimitsProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ItemLimitsProxy {
    /// Listens on `listen` (port 0: any) and forwards to `upstream` (DynamoDB Local's URL).
    pub async fn start(listen: SocketAddr, upstream: &str, limits: Limits) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            limits,
            http: reqwest::Client::new(),
            state: Mutex::default(),
            key_schemas: tokio::sync::Mutex::default(),
        });
        let serving = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(shared.handle(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self { addr, shared, server })
    }

    /// The URL to give a client as its DynamoDB endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> Counts {
        self.shared.lock().counts.clone()
    }
}

/// A write of one item in a request: its key and its cost in write units.
struct Write {
    key: ItemKey,
    units: f64,
}

/// What the model decides for a request, before it reaches DynamoDB Local.
enum Verdict {
    Forward,
    Refuse(hyper::Response<Full<Bytes>>),
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn handle(self: &Arc<Self>, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        if parts.method == hyper::Method::GET && parts.uri.path() == "/item-limits/counts" {
            return response(
                200,
                &serde_json::to_value(self.lock().counts.clone()).unwrap_or_default(),
            );
        }
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return response(400, &json!({"message": "unreadable body"})),
        };
        let operation = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.split('.').nth(1))
            .unwrap_or("")
            .to_owned();
        *self.lock().counts.requests.entry(operation.clone()).or_default() += 1;
        let verdict = match serde_json::from_slice::<Value>(&body) {
            Ok(request) => self.judge(&operation, &request, &parts.headers).await,
            Err(_) => Verdict::Forward,
        };
        match verdict {
            Verdict::Refuse(answer) => answer,
            Verdict::Forward => self.forward(&parts, body).await,
        }
    }

    async fn judge(&self, operation: &str, request: &Value, headers: &hyper::HeaderMap) -> Verdict {
        let transactional = operation == "TransactWriteItems";
        let mut writes = Vec::new();
        match operation {
            "TransactWriteItems" => {
                for action in request["TransactItems"].as_array().into_iter().flatten() {
                    let Some((kind, body)) = action.as_object().and_then(|o| o.iter().next()) else {
                        return Verdict::Forward;
                    };
                    match self.write_of(kind, body, headers, true).await {
                        Some(write) => writes.push(write),
                        None => return Verdict::Forward,
                    }
                }
            }
            "PutItem" | "UpdateItem" | "DeleteItem" => {
                let kind = &operation[..operation.len() - 4];
                match self.write_of(kind, request, headers, false).await {
                    Some(write) => writes.push(write),
                    None => return Verdict::Forward,
                }
            }
            _ => return Verdict::Forward,
        }

        let mut guard = self.lock();
        let state = &mut *guard;
        let now = Instant::now();
        state.held.retain(|_, until| *until > now);
        let rate = self.limits.write_units_per_second;
        let mut reasons = Vec::new();
        for write in &writes {
            let bucket = state
                .buckets
                .entry(write.key.clone())
                .or_insert(Bucket { units: rate, at: now });
            bucket.units = (bucket.units + rate * now.duration_since(bucket.at).as_secs_f64()).min(rate);
            bucket.at = now;
            let reason = if state.held.contains_key(&write.key) {
                "TransactionConflict"
            } else if bucket.units < write.units {
                "ThrottlingError"
            } else {
                "None"
            };
            reasons.push(reason);
        }
        let conflict = reasons.contains(&"TransactionConflict");
        let throttled = reasons.contains(&"ThrottlingError");
        if conflict || throttled {
            return Verdict::Refuse(if transactional {
                if conflict {
                    state.counts.transaction_conflicts += 1;
                } else {
                    state.counts.transactions_throttled += 1;
                }
                transaction_cancelled(&reasons)
            } else if conflict {
                state.counts.write_conflicts += 1;
                error("TransactionConflictException", "Transaction is ongoing for the item")
            } else {
                state.counts.writes_throttled += 1;
                error(
                    "ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.",
                )
            });
        }
        for write in &writes {
            if let Some(bucket) = state.buckets.get_mut(&write.key) {
                bucket.units -= write.units;
            }
        }
        if transactional {
            let until = now + self.limits.hold;
            for write in writes {
                state.held.insert(write.key, until);
            }
        }
        Verdict::Forward
    }

    /// The item one action writes, and its cost: a `Put` names the whole item (its key read with
    /// the table's key schema), the others its key; units per started KB, doubled in a
    /// transaction.
    async fn write_of(
        &self,
        kind: &str,
        body: &Value,
        headers: &hyper::HeaderMap,
        transactional: bool,
    ) -> Option<Write> {
        let table = body["TableName"].as_str()?.to_owned();
        let (key, size) = if kind == "Put" {
            let item = body["Item"].as_object()?;
            let names = self.key_schema(&table, headers).await?;
            let key: serde_json::Map<String, Value> = names
                .iter()
                .map(|n| Some((n.clone(), item.get(n)?.clone())))
                .collect::<Option<_>>()?;
            (Value::Object(key), Some(item_size(item)))
        } else {
            (body["Key"].clone(), None)
        };
        let key: ItemKey = (table, canonical(&key));
        let bytes = {
            let mut state = self.lock();
            match size {
                Some(size) => {
                    state.sizes.insert(key.clone(), size);
                    size
                }
                None => state.sizes.get(&key).copied().unwrap_or(0),
            }
        };
        let units = (bytes.max(1) as f64 / 1024.0).ceil();
        Some(Write {
            key,
            units: if transactional { 2.0 * units } else { units },
        })
    }

    async fn key_schema(&self, table: &str, headers: &hyper::HeaderMap) -> Option<Vec<String>> {
        let mut schemas = self.key_schemas.lock().await;
        if let Some(names) = schemas.get(table) {
            return Some(names.clone());
        }
        // Asked with the request's own credentials: DynamoDB Local keeps a database per key.
        let mut ask = self
            .http
            .post(&self.upstream)
            .header("x-amz-target", "DynamoDB_20120810.DescribeTable")
            .header("content-type", "application/x-amz-json-1.0");
        for name in ["authorization", "x-amz-date"] {
            if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                ask = ask.header(name, value);
            }
        }
        let described: Value = ask
            .json(&json!({ "TableName": table }))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let names: Vec<String> = described["Table"]["KeySchema"]
            .as_array()?
            .iter()
            .filter_map(|k| k["AttributeName"].as_str().map(str::to_owned))
            .collect();
        schemas.insert(table.to_owned(), names.clone());
        Some(names)
    }

    async fn forward(&self, parts: &http::request::Parts, body: Bytes) -> hyper::Response<Full<Bytes>> {
        let mut request = self.http.post(format!("{}{}", self.upstream, parts.uri.path()));
        for (name, value) in &parts.headers {
            if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
                request = request.header(name, value);
            }
        }
        let Ok(answer) = request.body(body).send().await else {
            return response(502, &json!({"message": "DynamoDB Local did not answer"}));
        };
        let mut builder = hyper::Response::builder().status(answer.status().as_u16());
        for (name, value) in answer.headers() {
            if name != hyper::header::CONTENT_LENGTH && name != hyper::header::TRANSFER_ENCODING {
                builder = builder.header(name, value);
            }
        }
        let bytes = answer.bytes().await.unwrap_or_default();
        builder.body(Full::new(bytes)).unwrap_or_default()
    }
}

/// DynamoDB's item size: attribute names and values, as its documentation counts them
/// (strings and binaries by their bytes, numbers about one byte per two digits, 3 bytes of
/// overhead per list or map).
fn item_size(item: &serde_json::Map<String, Value>) -> u64 {
    item.iter()
        .map(|(name, value)| name.len() as u64 + value_size(value))
        .sum()
}

fn value_size(value: &Value) -> u64 {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 1;
    };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, |s| s.len() as u64),
        "N" => inner.as_str().map_or(1, |n| n.len().div_ceil(2) as u64 + 1),
        "B" => inner.as_str().map_or(0, |b| (b.len() * 3 / 4) as u64),
        "L" => {
            3 + inner
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| 1 + value_size(v))
                .sum::<u64>()
        }
        "M" => 3 + inner.as_object().map_or(0, item_size),
        "SS" | "NS" | "BS" => inner
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().map_or(0, str::len) as u64)
            .sum(),
        _ => 1,
    }
}

/// A key as JSON with its attributes in name order, so the same key is the same string.
fn canonical(key: &Value) -> String {
    let sorted: BTreeMap<&String, &Value> = key.as_object().map(|o| o.iter().collect()).unwrap_or_default();
    serde_json::to_string(&sorted).unwrap_or_default()
}

fn response(status: u16, body: &Value) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-requestid", ulid::Ulid::new().to_string())
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

/// An error as DynamoDB answers one: HTTP 400, the type in `__type`.
fn error(kind: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    response(
        400,
        &json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"), "message": message }),
    )
}

/// `TransactionCanceledException` with one reason per action, in request order.
fn transaction_cancelled(reasons: &[&str]) -> hyper::Response<Full<Bytes>> {
    let listed: Vec<Value> = reasons
        .iter()
        .map(|code| match *code {
            "TransactionConflict" => json!({"Code": code, "Message": "Transaction is ongoing for the item"}),
            "ThrottlingError" => json!({"Code": code, "Message": "Throughput exceeds the current capacity for one or more global secondary indexes or the table. DynamoDB is automatically scaling your table or index so please try again shortly."}),
            _ => json!({"Code": code}),
        })
        .collect();
    response(
        400,
        &json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", reasons.join(", ")),
            "CancellationReasons": listed,
        }),
    )
}
