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

/// Wall and process CPU time of one pass over a workload, and the calls it made. Run the pass on
/// one thread: process CPU time is then the measured code's own.
#[derive(Debug, Clone, Copy)]
pub struct Pass {
    pub wall: std::time::Duration,
    pub cpu: std::time::Duration,
    pub calls: u32,
}

/// Started by [`Pass::start`]; [`PassClock::stop`] gives the pass.
pub struct PassClock {
    wall: std::time::Instant,
    cpu: cpu_time::ProcessTime,
}

impl PassClock {
    pub fn stop(self, calls: u32) -> Pass {
        Pass {
            wall: self.wall.elapsed(),
            cpu: self.cpu.elapsed(),
            calls,
        }
    }
}

impl Pass {
    pub fn start() -> PassClock {
        PassClock {
            wall: std::time::Instant::now(),
            cpu: cpu_time::ProcessTime::now(),
        }
    }

    pub fn events_per_second(&self, events: usize) -> f64 {
        events as f64 / self.wall.as_secs_f64()
    }

    pub fn cpu_ms_per_event(&self, events: usize) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / events as f64
    }

    /// The mean of each figure over `passes`.
    pub fn mean(passes: &[Pass]) -> Pass {
        let n = passes.len() as u32;
        Pass {
            wall: passes.iter().map(|p| p.wall).sum::<std::time::Duration>() / n,
            cpu: passes.iter().map(|p| p.cpu).sum::<std::time::Duration>() / n,
            calls: passes.iter().map(|p| p.calls).sum::<u32>() / n,
        }
    }

    /// The pass of median CPU time.
    pub fn median_cpu(passes: &[Pass]) -> Pass {
        let mut sorted = passes.to_vec();
        sorted.sort_by_key(|p| p.cpu);
        sorted[sorted.len() / 2]
    }
}
