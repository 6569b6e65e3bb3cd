//! `reservations-replay`: feed a Kinesis stream's reservation events to a consumer, or print them.
//!
//!   reservations-replay projector                      rebuild / catch up the guest read model
//!   reservations-replay notifier --dry-run             what would be notified, nothing sent
//!   reservations-replay print --from 2026-11-24T10:00:00Z --to 2026-11-24T11:00:00Z
//!   reservations-replay audit --from 2026-11-24T10:00:00Z   committed vs stream vs consumers
//!   reservations-replay redrive --dead-letters FILE         dead letters back to their function
//!
//! Endpoints, region and credentials come from the SDK's usual configuration (AWS_PROFILE,
//! AWS_REGION, AWS_ENDPOINT_URL_KINESIS, ...), so it works against AWS, LocalStack and
//! kinesis-mock alike. Exit status: 0 when everything read was applied or a duplicate, 1 when
//! there were gaps, malformed records or failures, 2 for bad arguments or an unreadable stream.
//! `audit` exits 1 when a committed event is missing from the stream or from a consumer;
//! `redrive` exits 1 when some letters still fail (they stay in the file).

use adapters::{DynamoNotifications, DynamoReadModel};
use clap::{Parser, ValueEnum};
use consumers::{ConsumerConfig, Notifier, Projector};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use replay::{From, NoProgress, Progress, ReplayOptions, Summary, Target, To};
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Replay reservation events from Kinesis into a consumer, or print them"
)]
struct Cli {
    /// What the events go to.
    target: TargetKind,
    /// The Kinesis stream.
    #[arg(long, env = "EVENTS_STREAM", default_value = "reservation-events")]
    stream: String,
    /// trim-horizon, latest, an RFC 3339 time, or a sequence number (with --shard).
    #[arg(long, default_value = "trim-horizon")]
    from: From,
    /// Stop after this RFC 3339 time or sequence number (inclusive); default: the end of the stream now.
    #[arg(long)]
    to: Option<To>,
    /// Only this shard (repeatable); default: every shard, parents before children.
    #[arg(long = "shard")]
    shards: Vec<String>,
    /// The table the consumer writes: READ_MODEL_TABLE (projector) or NOTIFICATIONS_TABLE (notifier).
    #[arg(long)]
    table: Option<String>,
    /// Count what would be applied, duplicate or a gap; write nothing (print: count only).
    #[arg(long)]
    dry_run: bool,
    /// redrive: the dead-letter file (JSON lines) to re-drive; what still fails stays in it.
    #[arg(long)]
    dead_letters: Option<std::path::PathBuf>,
    /// No progress bar even on a terminal.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum TargetKind {
    /// The guest read model (GET /guests/{guest_id}/reservations).
    Projector,
    /// Notifications, once per event.
    Notifier,
    /// The envelopes as JSON lines on stdout.
    Print,
    /// Compare the events committed in --from..--to (outbox items within TTL) with the stream and
    /// with the projector's and notifier's state: missing, duplicated, misordered per reservation.
    Audit,
    /// Give the records in a dead-letter file back to the function named in each (projector,
    /// notifier, relay), once their cause is fixed; those that go through leave the file.
    Redrive,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn shard(&self, shard_id: &str) {
        self.0.set_prefix(shard_id.to_owned());
    }

    fn records(&self, count: u64, summary: &Summary) {
        self.0.inc(count);
        self.0.set_message(format!(
            "applied {} · duplicates {} · gaps {} · malformed {}",
            summary.applied, summary.duplicates, summary.gaps, summary.malformed
        ));
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

async fn run(cli: Cli) -> anyhow::Result<Summary> {
    let sdk = aws_config::load_from_env().await;
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let options = ReplayOptions {
        stream: cli.stream.clone(),
        from: cli.from.clone(),
        to: cli.to.clone(),
        shards: cli.shards.clone(),
        dry_run: cli.dry_run,
    };
    let show_bar = !cli.quiet && std::io::stderr().is_terminal();
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:.bold} {pos} records ({rate}) {msg}")
            .map(|style| {
                style.with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", state.per_sec());
                })
            })
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let bar = Bar(bar);
    let quiet = NoProgress;
    let progress: &dyn Progress = if show_bar {
        bar.0.enable_steady_tick(std::time::Duration::from_millis(120));
        &bar
    } else {
        &quiet
    };
    let summary = match cli.target {
        TargetKind::Projector => {
            let table = cli
                .table
                .unwrap_or_else(|| env_or("READ_MODEL_TABLE", ConsumerConfig::DEFAULT_READ_MODEL_TABLE));
            let mut target = Target::Consumer(Projector::new(DynamoReadModel::new(dynamodb, table)));
            replay::replay(&kinesis, &options, &mut target, progress).await?
        }
        TargetKind::Notifier => {
            let table = cli
                .table
                .unwrap_or_else(|| env_or("NOTIFICATIONS_TABLE", ConsumerConfig::DEFAULT_NOTIFICATIONS_TABLE));
            let sender = DynamoNotifications::new(dynamodb, table, time::Duration::days(30));
            let mut target = Target::Consumer(Notifier::new(sender));
            replay::replay(&kinesis, &options, &mut target, progress).await?
        }
        TargetKind::Audit | TargetKind::Redrive => unreachable!("run by run_audit and run_redrive"),
        TargetKind::Print => {
            let mut target: Target<Projector<DynamoReadModel>> = Target::Print(Box::new(std::io::stdout()));
            replay::replay(&kinesis, &options, &mut target, progress).await?
        }
    };
    bar.0.finish_and_clear();
    Ok(summary)
}

/// An audit's time range: `--from` a time (default: everything in the outbox), `--to` a time
/// (default: now).
fn audit_range(cli: &Cli) -> anyhow::Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let from = match &cli.from {
        From::At(time) => *time,
        From::TrimHorizon => time::OffsetDateTime::UNIX_EPOCH,
        other => anyhow::bail!("audit --from takes an RFC 3339 time, not {other:?}"),
    };
    let to = match &cli.to {
        None => time::OffsetDateTime::now_utc(),
        Some(To::At(time)) => *time,
        Some(other) => anyhow::bail!("audit --to takes an RFC 3339 time, not {other:?}"),
    };
    Ok((from, to))
}

async fn run_audit(cli: &Cli) -> anyhow::Result<replay::audit::AuditReport> {
    let (from, to) = audit_range(cli)?;
    let sdk = aws_config::load_from_env().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let projector = Projector::new(DynamoReadModel::new(
        dynamodb.clone(),
        env_or("READ_MODEL_TABLE", ConsumerConfig::DEFAULT_READ_MODEL_TABLE),
    ));
    let notifier = Notifier::new(DynamoNotifications::new(
        dynamodb.clone(),
        env_or("NOTIFICATIONS_TABLE", ConsumerConfig::DEFAULT_NOTIFICATIONS_TABLE),
        time::Duration::days(30),
    ));
    Ok(replay::audit::audit(
        &dynamodb,
        &aws_sdk_kinesis::Client::new(&sdk),
        &env_or("OUTBOX_TABLE", "reservation-outbox"),
        &cli.stream,
        from,
        to,
        &[&projector, &notifier],
    )
    .await?)
}

/// Re-drives a dead-letter file and rewrites it with what is left. Returns (done, still failing).
async fn run_redrive(cli: &Cli) -> anyhow::Result<(usize, usize)> {
    use anyhow::Context;
    use replay::redrive::{Functions, Line, Redriven, on_failure_command, parse_lines, redrive};
    let path = cli
        .dead_letters
        .as_ref()
        .context("redrive needs --dead-letters <file>")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let sdk = aws_config::load_from_env().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let projector = consumers::ConsumerHandler::new(
        Projector::new(DynamoReadModel::new(
            dynamodb.clone(),
            env_or("READ_MODEL_TABLE", ConsumerConfig::DEFAULT_READ_MODEL_TABLE),
        )),
        dead_letters::MemoryDeadLetters::default(),
    );
    let notifier = consumers::ConsumerHandler::new(
        Notifier::new(DynamoNotifications::new(
            dynamodb,
            env_or("NOTIFICATIONS_TABLE", ConsumerConfig::DEFAULT_NOTIFICATIONS_TABLE),
            time::Duration::days(30),
        )),
        dead_letters::MemoryDeadLetters::default(),
    );
    let relay = relay::Relay::new(
        relay::KinesisSink::new(aws_sdk_kinesis::Client::new(&sdk), &cli.stream),
        dead_letters::MemoryDeadLetters::default(),
        relay::PublishPolicy::default(),
    );
    let functions = Functions {
        projector: &projector,
        notifier: &notifier,
        relay: &relay,
    };
    let (mut done, mut failing) = (0, 0);
    let mut kept = Vec::new();
    for line in parse_lines(&text) {
        match line {
            Line::Letter(letter) => match redrive(&functions, &letter).await {
                Redriven::Done => done += 1,
                Redriven::StillFailing(again) => {
                    failing += 1;
                    println!("still failing ({}): {}", again.function, again.reason);
                    kept.push(serde_json::to_string(again.as_ref())?);
                }
                Redriven::NotMine => kept.push(serde_json::to_string(&letter)?),
            },
            Line::Other(value) => {
                if let Some(command) = on_failure_command(&value) {
                    println!("a Lambda on-failure record, re-drive its range with: {command}");
                }
                kept.push(value.to_string());
            }
        }
    }
    // Written aside, then renamed: an interrupted re-drive never loses the file.
    let rest: String = kept.iter().map(|l| format!("{l}\n")).collect();
    let temporary = path.with_extension("redrive-tmp");
    std::fs::write(&temporary, rest).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok((done, failing))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if matches!(cli.target, TargetKind::Redrive) {
        return match run_redrive(&cli).await {
            Ok((done, failing)) => {
                eprintln!("redrive done: {done} re-driven, {failing} still failing");
                if failing == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("reservations-replay: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if matches!(cli.target, TargetKind::Audit) {
        return match run_audit(&cli).await {
            Ok(report) => {
                for line in report.lines() {
                    println!("{line}");
                }
                eprintln!("audit done: {report}");
                if report.nothing_missing() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("reservations-replay: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let dry_run = cli.dry_run;
    match run(cli).await {
        Ok(summary) => {
            let mode = if dry_run { " (dry run: nothing written)" } else { "" };
            eprintln!("replay done{mode}: {summary}");
            if summary.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("reservations-replay: {e:#}");
            ExitCode::from(2)
        }
    }
}
