//! `pipeline-bench`: the benchmarks that compare the two relay modes and the functions, for
//! `scripts/bench.sh` (never tests). Each prints one JSON line; the script writes
//! docs/benchmarks.md from them.
//!
//!   pipeline-bench latency --mode stream|polling [--bus kinesis|kafka] [--interval-ms N] --rate R --seconds S
//!       API 201 → projector applied, at a fixed offered rate, through the local pipeline
//!   pipeline-bench idle --mode stream|polling [--interval-ms N] --seconds S
//!       what the relay asks of DynamoDB while nothing happens, by operation
//!   pipeline-bench transactions --clients C --seconds S
//!       raw TransactWriteItems of the API's three items, no HTTP and no handler
//!   pipeline-bench init --binary PATH --kind api|relay|poller|<consumer> --runs N
//!       a function's start under a Lambda Runtime API: process start → first
//!       `GET /runtime/invocation/next`, the first invocation, and peak RSS
//!   pipeline-bench consumers
//!       the registered consumers' names (`consumers::ALL`), one a line
//!   pipeline-bench capacity --reservations N --cancels M
//!       DynamoDB capacity units per reservation, cancel and relayed event in each relay mode,
//!       and Kinesis PUT payload units per event

use bench::function_start::FunctionKind;
use bench::{Bus, Mode};
use clap::{Parser, Subcommand};
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Relay modes, API and function benchmarks on the embedded stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Latency {
        #[arg(long, value_enum)]
        mode: Mode,
        /// The bus: Kafka on a fresh topic at KAFKA_BOOTSTRAP_SERVERS.
        #[arg(long, value_enum, default_value = "kinesis")]
        bus: Bus,
        /// The poller's interval (polling mode).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Reservations per second, offered on a fixed schedule (not closed-loop).
        #[arg(long, default_value_t = 20)]
        rate: u32,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Writes every sample (milliseconds, one per line) here, for the plot.
        #[arg(long)]
        samples_out: Option<std::path::PathBuf>,
    },
    Idle {
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    Transactions {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    Capacity {
        #[arg(long, default_value_t = 1000)]
        reservations: usize,
        /// How many of those are then cancelled.
        #[arg(long, default_value_t = 250)]
        cancels: usize,
    },
    /// The registered consumers' names, one a line (`scripts/bench.sh functions` starts each).
    Consumers,
    Init {
        #[arg(long)]
        binary: std::path::PathBuf,
        /// api, relay, poller, or a registered consumer's name.
        #[arg(long)]
        kind: FunctionKind,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Latency {
            mode,
            bus,
            interval_ms,
            rate,
            seconds,
            samples_out,
        } => {
            bench::latency::run(
                mode,
                bus,
                Duration::from_millis(interval_ms),
                rate,
                seconds,
                samples_out,
            )
            .await
        }
        Command::Idle {
            mode,
            interval_ms,
            seconds,
        } => bench::idle::run(mode, Duration::from_millis(interval_ms), seconds).await,
        Command::Transactions { clients, seconds } => bench::transactions::run(clients, seconds).await,
        Command::Init { binary, kind, runs } => bench::function_start::run(binary, kind, runs).await,
        Command::Consumers => {
            consumers::ALL
                .iter()
                .for_each(|registration| println!("{}", registration.name));
            Ok(())
        }
        Command::Capacity { reservations, cancels } => bench::capacity::run(reservations, cancels)
            .await
            .map(|result| println!("{result}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
