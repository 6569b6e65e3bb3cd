//! `reservations-replay`: feed a Kinesis stream's reservation events to a consumer, or print them.
//!
//!   reservations-replay projector                      rebuild / catch up the guest read model
//!   reservations-replay notifier --dry-run             what would be notified, nothing sent
//!   reservations-replay print --from 2026-11-24T10:00:00Z --to 2026-11-24T11:00:00Z
//!   reservations-replay audit --from 2026-11-24T10:00:00Z   committed vs stream vs consumers
//!   reservations-replay redrive --dead-letters FILE         dead letters back to their function
//!   reservations-replay redrive --queue URL                 the same from an SQS dead-letter queue
//!
//! Endpoints, region and credentials come from the SDK's usual configuration (AWS_PROFILE,
//! AWS_REGION, AWS_ENDPOINT_URL_KINESIS, ...), so it works against AWS, LocalStack and
//! kinesis-mock alike. Exit status: 0 when everything read was applied or a duplicate, 1 when
//! there were gaps, malformed records or failures, 2 for bad arguments or an unreadable stream.
//! `audit` exits 1 when a committed event is missing from the stream or from a consumer;
//! `redrive` exits 1 when some letters still fail (they stay in the file or queue).

use adapters::{DynamoNotifications, DynamoReadModel};
use clap::{Parser, ValueEnum};
use consumers::{ConsumerConfig, Notifier, Projector};
use dead_letters::MemoryDeadLetters;
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
    #[arg(long, conflicts_with = "queue")]
    dead_letters: Option<std::path::PathBuf>,
    /// redrive: an SQS dead-letter queue's URL; what went through is deleted, what still fails is
    /// sent back to it with its new reason, anything else is left in it.
    #[arg(long)]
    queue: Option<String>,
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
    /// Give the records in a dead-letter file or SQS queue back to the function named in each
    /// (projector, notifier, relay), once their cause is fixed; those that go through leave it.
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

/// What a re-drive hands dead letters to: the three stream functions' handlers, on the SDK's
/// configuration.
struct Redriver {
    projector: consumers::ConsumerHandler<Projector<DynamoReadModel>, MemoryDeadLetters>,
    notifier: consumers::ConsumerHandler<Notifier<DynamoNotifications>, MemoryDeadLetters>,
    relay: relay::Relay<relay::KinesisSink, MemoryDeadLetters>,
}

/// What became of one entry of a dead-letter file or queue.
enum Entry {
    Done,
    /// Still refused: the letter to keep, with its new reason.
    Failing(Box<dead_letters::DeadLetter>),
    /// Not a letter of ours (an on-failure record, something newer): kept as it was.
    Kept,
}

impl Redriver {
    fn new(sdk: &aws_config::SdkConfig, stream: &str) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        Self {
            projector: consumers::ConsumerHandler::new(
                Projector::new(DynamoReadModel::new(
                    dynamodb.clone(),
                    env_or("READ_MODEL_TABLE", ConsumerConfig::DEFAULT_READ_MODEL_TABLE),
                )),
                MemoryDeadLetters::default(),
            ),
            notifier: consumers::ConsumerHandler::new(
                Notifier::new(DynamoNotifications::new(
                    dynamodb,
                    env_or("NOTIFICATIONS_TABLE", ConsumerConfig::DEFAULT_NOTIFICATIONS_TABLE),
                    time::Duration::days(30),
                )),
                MemoryDeadLetters::default(),
            ),
            relay: relay::Relay::new(
                relay::KinesisSink::new(aws_sdk_kinesis::Client::new(sdk), stream),
                MemoryDeadLetters::default(),
                relay::PublishPolicy::default(),
            ),
        }
    }

    /// Re-drives one entry, saying on stdout what a person has to know about it.
    async fn entry(&self, line: replay::redrive::Line) -> Entry {
        use replay::redrive::{Functions, Line, Redriven, on_failure_command, redrive};
        let functions = Functions {
            projector: &self.projector,
            notifier: &self.notifier,
            relay: &self.relay,
        };
        match line {
            Line::Letter(letter) => match redrive(&functions, &letter).await {
                Redriven::Done => Entry::Done,
                Redriven::StillFailing(again) => {
                    println!("still failing ({}): {}", again.function, again.reason);
                    Entry::Failing(again)
                }
                Redriven::NotMine => Entry::Kept,
            },
            Line::Other(value) => {
                if let Some(command) = on_failure_command(&value) {
                    println!("a Lambda on-failure record, re-drive its range with: {command}");
                }
                Entry::Kept
            }
        }
    }
}

/// How long a re-drive from a queue keeps the messages it took out of sight: those it has not
/// dealt with by then (it was stopped) come back by themselves.
const QUEUE_HOLD: std::time::Duration = std::time::Duration::from_secs(900);

/// Re-drives a dead-letter file or queue. Returns (done, still failing).
async fn run_redrive(cli: &Cli) -> anyhow::Result<(usize, usize)> {
    use anyhow::Context;
    let sdk = aws_config::load_from_env().await;
    match (&cli.dead_letters, &cli.queue) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            redrive_file(&Redriver::new(&sdk, &cli.stream), path, &text).await
        }
        (None, Some(queue_url)) => {
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            let queue = dead_letters::SqsDeadLetterQueue::new(sqs.clone(), queue_url);
            let resend = dead_letters::SqsDeadLetters::new(sqs, queue_url);
            redrive_queue(&Redriver::new(&sdk, &cli.stream), &queue, &resend).await
        }
        _ => anyhow::bail!("redrive needs either --dead-letters <file> or --queue <SQS queue URL>"),
    }
}

/// Re-drives every line and rewrites the file with what is left.
async fn redrive_file(redriver: &Redriver, path: &std::path::Path, text: &str) -> anyhow::Result<(usize, usize)> {
    use anyhow::Context;
    let (mut done, mut failing) = (0, 0);
    let mut kept = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match redriver.entry(replay::redrive::parse_line(line)).await {
            Entry::Done => done += 1,
            Entry::Failing(again) => {
                failing += 1;
                kept.push(serde_json::to_string(again.as_ref())?);
            }
            Entry::Kept => kept.push(line.to_owned()),
        }
    }
    // Written aside, then renamed: an interrupted re-drive never loses the file.
    let rest: String = kept.iter().map(|l| format!("{l}\n")).collect();
    let temporary = path.with_extension("redrive-tmp");
    std::fs::write(&temporary, rest).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok((done, failing))
}

/// Re-drives every message of an SQS dead-letter queue: what went through is deleted, what still
/// fails is replaced by its letter with the new reason, the rest is given back untouched.
async fn redrive_queue(
    redriver: &Redriver,
    queue: &dead_letters::SqsDeadLetterQueue,
    resend: &dead_letters::SqsDeadLetters,
) -> anyhow::Result<(usize, usize)> {
    use dead_letters::DeadLetters;
    let messages = queue.take_all(QUEUE_HOLD).await?;
    let (mut done, mut failing) = (0, 0);
    for (i, message) in messages.iter().enumerate() {
        let settled = match redriver.entry(replay::redrive::parse_line(&message.body)).await {
            Entry::Done => {
                done += 1;
                queue.delete(message).await
            }
            Entry::Failing(again) => {
                failing += 1;
                // The new letter first: a failure between the two leaves a duplicate letter, never none.
                match resend.send(&again).await {
                    Ok(()) => queue.delete(message).await,
                    Err(e) => Err(dead_letters::QueueError {
                        operation: "SendMessage",
                        queue_url: queue.queue_url().to_owned(),
                        source: Box::new(e),
                    }),
                }
            }
            Entry::Kept => queue.give_back(message).await,
        };
        if let Err(error) = settled {
            // What is left goes back now rather than after the hold.
            for rest in &messages[i..] {
                let _ = queue.give_back(rest).await;
            }
            return Err(error.into());
        }
    }
    Ok((done, failing))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Each command reports on stderr and says whether it is clean (exit 0) or found something (1).
    let clean = match cli.target {
        TargetKind::Redrive => run_redrive(&cli).await.map(|(done, failing)| {
            eprintln!("redrive done: {done} re-driven, {failing} still failing");
            failing == 0
        }),
        TargetKind::Audit => run_audit(&cli).await.map(|report| {
            for line in report.lines() {
                println!("{line}");
            }
            eprintln!("audit done: {report}");
            report.nothing_missing()
        }),
        TargetKind::Projector | TargetKind::Notifier | TargetKind::Print => {
            let dry_run = cli.dry_run;
            run(cli).await.map(|summary| {
                let mode = if dry_run { " (dry run: nothing written)" } else { "" };
                eprintln!("replay done{mode}: {summary}");
                summary.clean()
            })
        }
    };
    match clean {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("reservations-replay: {e:#}");
            ExitCode::from(2)
        }
    }
}
