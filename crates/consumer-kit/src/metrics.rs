//! CloudWatch Embedded Metric Format (EMF): a function prints one JSON document per invocation to
//! stdout, and CloudWatch Logs turns its `_aws` section into metrics. No agent, no PutMetricData
//! call, no latency added to the invocation.
//!
//! ```
//! use reservation_events_consumer::metrics::MetricSet;
//!
//! let mut metrics = MetricSet::new("BookingLedger", "ledger");
//! metrics.count("EventsApplied", 3.0).milliseconds("ConsumerLag", 120.0);
//! let line = metrics.to_line(time::OffsetDateTime::UNIX_EPOCH);
//! assert!(line.contains("\"EventsApplied\":3.0"));
//! ```

use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// The metrics of one invocation in a namespace, with the `Function` dimension and optional
/// properties (searchable in Logs Insights, not metrics: ids, trace ids).
#[derive(Debug, Clone)]
pub struct MetricSet {
    namespace: String,
    function: String,
    metrics: Vec<(String, f64, Unit)>,
    properties: Map<String, Value>,
}

impl MetricSet {
    pub fn new(namespace: impl Into<String>, function: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            function: function.into(),
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    pub fn count(&mut self, name: &str, value: f64) -> &mut Self {
        self.metrics.push((name.to_owned(), value, Unit::Count));
        self
    }

    pub fn milliseconds(&mut self, name: &str, value: f64) -> &mut Self {
        self.metrics.push((name.to_owned(), value, Unit::Milliseconds));
        self
    }

    pub fn property(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// The EMF document, one line.
    pub fn to_line(&self, timestamp: OffsetDateTime) -> String {
        let definitions: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, _, unit)| json!({ "Name": name, "Unit": unit.as_str() }))
            .collect();
        let mut document = self.properties.clone();
        document.insert(
            "_aws".into(),
            json!({
                "Timestamp": (timestamp.unix_timestamp_nanos() / 1_000_000) as i64,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [["Function"]],
                    "Metrics": definitions,
                }],
            }),
        );
        document.insert("Function".into(), Value::String(self.function.clone()));
        for (name, value, _) in &self.metrics {
            document.insert(name.clone(), json!(value));
        }
        Value::Object(document).to_string()
    }
}

/// Where EMF lines go: stdout in Lambda, memory in tests, nowhere when disabled (the default:
/// a function turns metrics on where it is wired, never by accident in a test or a tool).
#[derive(Debug, Clone, Default)]
pub enum Emitter {
    Stdout,
    Memory(Arc<Mutex<Vec<String>>>),
    #[default]
    Off,
}

impl Emitter {
    pub fn memory() -> (Self, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (Self::Memory(lines.clone()), lines)
    }

    /// Writes the set as one line, if it has any metric. Never fails the caller: metrics are
    /// not worth an error answer.
    pub fn emit(&self, metrics: &MetricSet) {
        if metrics.is_empty() {
            return;
        }
        let line = metrics.to_line(OffsetDateTime::now_utc());
        match self {
            Self::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            Self::Memory(lines) => lines.lock().unwrap_or_else(|p| p.into_inner()).push(line),
            Self::Off => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_line_is_a_valid_emf_document_with_every_metric_declared_and_valued() {
        let mut metrics = MetricSet::new("ReservationOutbox", "projector");
        metrics
            .count("EventsApplied", 7.0)
            .count("DuplicatesSkipped", 2.0)
            .milliseconds("ConsumerLag", 850.0)
            .property("trace_ids", json!(["t-1"]));
        let line = metrics.to_line(datetime!(2026-11-24 10:00:00 UTC));
        assert!(!line.contains('\n'));
        let doc: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["_aws"]["Timestamp"], 1_795_514_400_000i64);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "ReservationOutbox");
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        assert_eq!(doc["Function"], "projector");
        let declared: Vec<(&str, &str)> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["Name"].as_str().unwrap(), m["Unit"].as_str().unwrap()))
            .collect();
        assert_eq!(
            declared,
            [
                ("EventsApplied", "Count"),
                ("DuplicatesSkipped", "Count"),
                ("ConsumerLag", "Milliseconds")
            ]
        );
        // Every declared metric has its value at the top level, as EMF requires.
        for (name, _) in declared {
            assert!(doc[name].is_number(), "{name}");
        }
        assert_eq!(doc["EventsApplied"], 7.0);
        assert_eq!(doc["trace_ids"], json!(["t-1"]));
    }

    #[test]
    fn an_empty_set_emits_nothing_and_memory_keeps_lines() {
        let (emitter, lines) = Emitter::memory();
        emitter.emit(&MetricSet::new("ReservationOutbox", "api"));
        assert!(lines.lock().unwrap().is_empty());
        emitter.emit(MetricSet::new("ReservationOutbox", "api").count("ReservationsCreated", 1.0));
        assert_eq!(lines.lock().unwrap().len(), 1);
    }
}
