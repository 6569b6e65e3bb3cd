//! `item-limits-proxy`: the model of DynamoDB's per-item write limits in front of DynamoDB Local,
//! for `scripts/bench.sh hot-slot` (see `test_support::item_limits`). Runs until stopped; what it
//! refused is at `GET /item-limits/counts`.
//!
//!   item-limits-proxy --listen 127.0.0.1:18200 --upstream http://127.0.0.1:18100 --write-units 200 --hold-ms 10

use anyhow::{Result, bail};
use clap::Parser;
use std::time::Duration;
use test_support::item_limits::{ItemLimitsProxy, Limits};

#[derive(Parser)]
#[command(about = "A model of DynamoDB's per-item write limits, in front of DynamoDB Local")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:18200")]
    listen: std::net::SocketAddr,
    #[arg(long)]
    upstream: String,
    /// Write units per second per item (1,000 on DynamoDB; lower for runs this machine's
    /// engines can keep up with).
    #[arg(long, default_value_t = 1_000.0)]
    write_units: f64,
    /// How long a transaction holds its items from the moment it is admitted (its duration).
    #[arg(long, default_value_t = 10)]
    hold_ms: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if !cli.listen.ip().is_loopback()
        || !(cli.upstream.starts_with("http://127.") || cli.upstream.starts_with("http://localhost"))
    {
        bail!(
            "the proxy stays on loopback: listen {} upstream {}",
            cli.listen,
            cli.upstream
        );
    }
    let limits = Limits {
        write_units_per_second: cli.write_units,
        hold: Duration::from_millis(cli.hold_ms),
    };
    let proxy = ItemLimitsProxy::start(cli.listen, &cli.upstream, limits).await?;
    println!(
        "item-limits-proxy listening on {} in front of {}",
        proxy.url(),
        cli.upstream
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
