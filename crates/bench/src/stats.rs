//! Percentiles of samples, as every benchmark reports them.

use serde_json::json;

/// The nearest-rank percentile `p` (0 to 100) of sorted samples; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Count, p50, p95, p99 and max of the samples.
pub fn summary(mut samples: Vec<f64>) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "samples": samples.len(),
        "p50": percentile(&samples, 50.0),
        "p95": percentile(&samples, 95.0),
        "p99": percentile(&samples, 99.0),
        "max": samples.last().copied().unwrap_or(f64::NAN),
    })
}
