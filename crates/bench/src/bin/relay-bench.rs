//! `relay-bench`: the relay's cost per event and its throughput next to raw `PutRecords`, for
//! benchmarks (never tests). Run by `scripts/bench.sh relay`, which starts the engines. Prints one
//! JSON line per workload; see `bench::relay_cost`.

use anyhow::{Result, ensure};
use bench::relay_cost::{Args, Workload, run};
use clap::Parser;

// The relay Lambda's allocator (functions/relay), so that the figures are the Lambda's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Relay overhead and throughput against kinesis-mock")]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn main() -> Result<()> {
    let args = Cli::parse().args;
    ensure!(
        args.batch_size > 0 && args.events >= 4,
        "--batch-size and --events must be positive"
    );
    // One thread: process CPU time is then the relay's own, not a worker pool's idle spinning.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        for workload in [Workload::CreatesThenCancels, Workload::CreateCancelPairs] {
            println!("{}", run(&args, workload).await?);
        }
        Ok(())
    })
}
