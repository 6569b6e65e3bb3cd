//! `consumer-bench`: the cost per event of every consumer in `consumers::ALL`, for benchmarks
//! (never tests). Run by `scripts/bench.sh consumers`, which starts the engines. Prints one JSON line;
//! see `bench::consumer_cost`.

use anyhow::{Result, ensure};
use bench::consumer_cost::{Args, run};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Each registered consumer's cost per event")]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn main() -> Result<()> {
    let args = Cli::parse().args;
    ensure!(
        args.batch_size > 0 && args.events >= 4 && args.memory_passes > 0 && args.dynamodb_passes > 0,
        "--events (at least 4), --batch-size and the pass counts must be positive"
    );
    // One thread: process CPU time is then the handler's own, not a worker pool's idle spinning.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    println!("{}", runtime.block_on(run(&args))?);
    Ok(())
}
