//! What the workspace's integration tests and benchmarks share, so each piece is written once:
//!
//! - [`events`]: real event shapes (DynamoDB stream records of outbox items, Kinesis records of
//!   envelopes, the committed AWS sample fixtures), built from the product's own types so they
//!   cannot drift from what the store writes and the relay publishes.
//! - [`stack`]: [`stack::TestStack`], fresh uniquely named tables and a stream on the real engines
//!   (DynamoDB Local and kinesis-mock, started by `scripts/test.sh`), with the local API and the
//!   functions behind their event source mappings.
//! - [`global_table`]: a stand-in for DynamoDB global tables between two test stacks, each
//!   standing for a Region (no engine here replicates between Regions).
//! - [`item_limits`]: a model of DynamoDB's per-item write limits (write units, transaction
//!   conflicts), a proxy in front of DynamoDB Local, for the benchmarks and contention tests.
//! - [`kafka`]: fresh topics on the test Kafka broker, and what the relay put on them.
//! - [`contract`]: the published event schemas (`schemas/events`), every event a suite reads held
//!   to them, and the compatibility gate against the released ones.
//! - [`delivery`]: what a subscriber of the notifications topic received, repeats set apart.
//! - [`template`]: template.yaml as CloudFormation resolves it for a set of parameters.
//! - [`cases`]: how many generated inputs a property test runs.
//!
//! Only tests and benchmarks depend on this crate; no Lambda does.

pub mod contract;
pub mod delivery;
pub mod events;
pub mod global_table;
pub mod item_limits;
pub mod kafka;
pub mod stack;
pub mod template;

/// Generated inputs per property: `quick`, times `FUZZ_SCALE` (`scripts/test.sh --long` sets 10).
pub fn cases(quick: u32) -> u32 {
    quick * fuzz_scale()
}

/// `FUZZ_SCALE`, 1 when unset: how much longer the generated-input suites run.
pub fn fuzz_scale() -> u32 {
    std::env::var("FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// A binary of the workspace (`reservations-replay`, `booking-ledger`), as the workspace's build
/// left it beside the running test's own (`target/<profile>/`): a test of another package than
/// the binary's cannot name it with `CARGO_BIN_EXE_*`. `scripts/test.sh` builds every binary first.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let built = std::env::current_exe()
        .expect("the test binary's path")
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps")
        .join(name);
    assert!(
        built.is_file(),
        "{} is not built: cargo build -p <its package> (scripts/test.sh builds the workspace)",
        built.display()
    );
    built
}

/// Figures a suite measured (counts of events, faults, generated cases), kept where the run's
/// report can gather them: `scripts/test.sh` prints them at the end and `scripts/figures.sh`
/// writes them into docs/guarantees.md. Each call also prints the figures with the test's output.
pub mod figures {
    /// Records `figures` under `name` in `RESERVATION_FIGURES_DIR` (set by `scripts/test.sh`),
    /// replacing an earlier record of the same name.
    pub fn record(name: &str, figures: serde_json::Value) {
        println!("figures {name}: {figures}");
        let Some(dir) = std::env::var_os("RESERVATION_FIGURES_DIR") else {
            return;
        };
        let dir = std::path::PathBuf::from(dir);
        let written = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(dir.join(format!("{name}.json")), figures.to_string() + "\n"));
        if let Err(e) = written {
            // The figures are a report, not a check: a failed write must not fail the test.
            eprintln!("could not record the figures of {name} in {}: {e}", dir.display());
        }
    }
}
