//! `loadgen`: offered load against a running reservations API, for benchmarks (never tests).
//!
//!   loadgen --url http://127.0.0.1:3000 --clients 16 --seconds 10 --slots 64
//!
//! See `bench::load`.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Offered load for POST /reservations")]
struct Cli {
    #[command(flatten)]
    args: bench::load::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    bench::load::run(Cli::parse().args).await
}
