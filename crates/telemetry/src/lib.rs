//! What the functions tell operators: CloudWatch Embedded Metric Format (EMF) metrics in the
//! product's namespace, and [`error_chain`], an error with its causes as one log field.
//!
//! EMF: a function prints one JSON document per invocation to stdout; CloudWatch Logs turns its
//! `_aws` section into metrics. No agent, no PutMetricData call, no latency added to the
//! invocation. The writer is the consumer kit's (`reservation-events-consumer`), which the
//! product's consumers and outside ones share, so there is one format.
//!
//! ```
//! let mut metrics = telemetry::metrics("relay");
//! metrics.count("EventsRelayed", 3.0);
//! metrics.milliseconds("RelayLag", 120.0);
//! let line = metrics.to_line(time::OffsetDateTime::UNIX_EPOCH);
//! assert!(line.contains("\"EventsRelayed\":3.0"));
//! ```

pub use reservation_events_consumer::error_chain;
pub use reservation_events_consumer::metrics::{Emitter, MetricSet, Unit};

/// The namespace every metric of the product is published under.
pub const NAMESPACE: &str = "ReservationOutbox";

/// The metrics of one invocation of `function`, in the product's namespace.
pub fn metrics(function: impl Into<String>) -> MetricSet {
    MetricSet::new(NAMESPACE, function)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_products_metrics_are_in_its_namespace_by_function() {
        let line = metrics("projector")
            .count("EventsApplied", 1.0)
            .to_line(time::OffsetDateTime::UNIX_EPOCH);
        let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(doc["Function"], "projector");
    }
}
