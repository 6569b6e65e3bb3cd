//! `reservations-replay`: feed the reservation events of a Kinesis stream or a Kafka topic to a
//! consumer, or print them.
//!
//!   reservations-replay projector                      rebuild / catch up the guest read model
//!   reservations-replay notifier --dry-run             what would be notified, nothing sent
//!                                                      (one such command per consumer, consumers::ALL)
//!   reservations-replay print --from 2026-11-24T10:00:00Z --to 2026-11-24T11:00:00Z
//!   reservations-replay audit --from 2026-11-24T10:00:00Z   committed vs stream vs consumers
//!   reservations-replay redrive --dead-letters FILE         dead letters back to their function
//!   reservations-replay redrive --queue URL                 the same from an SQS dead-letter queue
//!   reservations-replay projector --bus kafka --from 0:120,1:95   from where a consumer group stands
//!   reservations-replay move-home --slot dinner --from us-east-1 --to eu-west-1   a slot's home, planned
//!   reservations-replay take-over --lost us-east-1        the slots of a lost Region, here
//!
//! The bus is the functions' own setting: `--bus` or EVENT_BUS (kinesis, the default, or kafka),
//! with EVENTS_STREAM, or KAFKA_TOPIC, KAFKA_BOOTSTRAP_SERVERS and KAFKA_AUTH (IAM on MSK).
//! `--stack NAME` reads those and the tables' names from a deployed stack's outputs; a name set
//! by flag or variable wins over the stack's.
//! Endpoints, region and credentials come from the SDK's usual configuration (AWS_PROFILE,
//! AWS_REGION, AWS_ENDPOINT_URL_KINESIS, ...), so it works against AWS, LocalStack and
//! kinesis-mock alike.
//!
//! Exit status, for every command:
//! - 0: done, and nothing is wrong;
//! - 1: it ran and found something, or failed while running: gaps, malformed records or failures
//!   in a replay, a committed event missing from the bus or a consumer (`audit`), letters that
//!   still fail (`redrive`; they stay), a `move-home` or `take-over` stopped half-way (run it
//!   again to go on), or an error from AWS, the broker or the file system while it ran;
//! - 2: refused before it did anything: a bad argument or setting, a file or stack that is not
//!   there, a stack that is not a reservations stack, a move or takeover the slots' state forbids.
//!
//! Every error is one line on stderr.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use consumers::{BoxConsumer, Publishes, Registration};
use dead_letters::MemoryDeadLetters;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use replay::kafka::{TopicReplayOptions, replay_topic};
use replay::{End, NoProgress, Progress, ReplayOptions, Start, Summary, Target};
use settings::names;
use std::io::IsTerminal;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Replay reservation events from Kinesis or Kafka into a consumer, or print them; audit and re-drive"
)]
struct Cli {
    /// A deployed stack (CloudFormation) whose outputs name the stream or topic, the tables and
    /// the notifications topic; a flag or a variable that is set wins over its output.
    #[arg(long, global = true, value_name = "NAME")]
    stack: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// The variables every command reads its names from: the environment, over the stack's outputs
/// when `--stack` names one.
type Vars = std::collections::HashMap<String, String>;

async fn resolve_vars(sdk: &aws_config::SdkConfig, stack: Option<&str>) -> anyhow::Result<Vars> {
    let explicit: Vars = std::env::vars().collect();
    let Some(stack) = stack else {
        return Ok(explicit);
    };
    let client = aws_sdk_cloudformation::Client::new(sdk);
    let outputs = replay::stack::outputs(&client, stack).await?;
    let from_stack = replay::stack::vars_from_outputs(stack, &outputs)?;
    Ok(replay::stack::overlay(from_stack, explicit))
}

/// A command refused before it did anything: a bad argument or setting (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

fn refused(message: impl Into<String>) -> anyhow::Error {
    Refused(message.into()).into()
}

/// The commands besides one per consumer (`reservations-replay <consumer>`, from
/// `consumers::ALL`, added to the parser in [`parse`]).
#[derive(Subcommand)]
enum Command {
    /// The envelopes as JSON lines on stdout.
    Print(ReadArgs),
    /// Compare the events committed in --from..--to (outbox items within TTL) with the stream and
    /// with every consumer's state: missing, duplicated, misordered per reservation.
    Audit(AuditArgs),
    /// Give the records in a dead-letter file or SQS queue back to the function named in each
    /// (a consumer, the relay), once their cause is fixed; those that go through leave it.
    Redrive(RedriveArgs),
    /// Several Regions: move a slot's home from one running Region to another. No Region takes
    /// the slot's writes (503 home_moving) until the new home holds all the old one wrote for it.
    MoveHome(MoveHomeArgs),
    /// Several Regions: this Region (AWS_REGION) takes the slots of a lost Region, after putting
    /// on its own bus the lost Region's events its replica holds.
    TakeOver(TakeOverArgs),
}

/// Which Region is a deployment's primary (the tables have the same names in every Region).
#[derive(Args)]
struct RegionsArgs {
    /// The deployment's primary Region, home of the slots from before slots had one [env:
    /// PRIMARY_REGION].
    #[arg(long)]
    primary: Option<String>,
}

#[derive(Args)]
struct MoveHomeArgs {
    #[arg(long)]
    slot: String,
    /// The Region the slot is at home in.
    #[arg(long)]
    from: String,
    /// The Region to move it to.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    regions: RegionsArgs,
    /// How long to wait for replication before stopping (the slot stays moving: run the move
    /// again to go on, or --abort), in seconds.
    #[arg(long, default_value_t = 300)]
    wait: u64,
    /// End a move that has not finished, keeping the slot in --from.
    #[arg(long)]
    abort: bool,
}

#[derive(Args)]
struct TakeOverArgs {
    /// The lost Region.
    #[arg(long)]
    lost: String,
    /// Another Region of the deployment that runs, besides this one (repeat for each): the
    /// takeover aborts there the moves of its slots to the lost Region, takes the lost Region's
    /// slots that only it holds, and, if it is the Region that decides takeovers (the primary,
    /// or when the primary is lost the first other Region in alphabetical order), claims the
    /// takeover there.
    #[arg(long = "region")]
    others: Vec<String>,
    /// Release this Region's claim on the lost Region's takeover, once that Region is back and
    /// takes writes again (a later loss of it can then be taken over anew).
    #[arg(long)]
    release: bool,
    #[command(flatten)]
    regions: RegionsArgs,
    /// This Region's bus, where the lost Region's events are put again.
    #[command(flatten)]
    bus: BusArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BusChoice {
    Kinesis,
    Kafka,
}

/// The bus the events are on, named as the functions name it.
#[derive(Args)]
struct BusArgs {
    /// Where the stack publishes its events: the Kinesis stream or the Kafka topic [env: EVENT_BUS;
    /// default: kinesis, or what --stack publishes to].
    #[arg(long, value_enum)]
    bus: Option<BusChoice>,
    /// The Kinesis stream [env: EVENTS_STREAM; default: the stack's, else reservation-events].
    #[arg(long)]
    stream: Option<String>,
    /// The Kafka topic [env: KAFKA_TOPIC; default: the stack's, else reservation-events].
    #[arg(long)]
    topic: Option<String>,
    /// The Kafka brokers, host:port separated by commas (with KAFKA_AUTH=IAM, MSK's IAM brokers)
    /// [env: KAFKA_BOOTSTRAP_SERVERS; default: the stack's, else 127.0.0.1:9092].
    #[arg(long)]
    brokers: Option<String>,
}

/// A connected bus, for reading and for the relay's re-drive.
enum Connected {
    Kinesis {
        client: aws_sdk_kinesis::Client,
        stream: String,
    },
    Kafka {
        client: rskafka::client::Client,
        config: kafka_bus::KafkaConfig,
    },
}

impl Connected {
    fn bus(&self) -> replay::Bus<'_> {
        match self {
            Self::Kinesis { client, stream } => replay::Bus::Kinesis { client, stream },
            Self::Kafka { client, config } => replay::Bus::Kafka { client, config },
        }
    }
}

impl BusArgs {
    /// The bus as the relay reads it from its environment: the flags over `vars`, over the
    /// defaults (KAFKA_AUTH from `vars`).
    fn config(&self, vars: &Vars) -> anyhow::Result<relay::BusConfig> {
        let mut vars = vars.clone();
        let bus = self.bus.map(|bus| match bus {
            BusChoice::Kinesis => "kinesis",
            BusChoice::Kafka => "kafka",
        });
        for (var, flag, default) in [
            ("EVENT_BUS", bus.map(str::to_owned), "kinesis"),
            (
                names::EVENTS_STREAM.var,
                self.stream.clone(),
                names::EVENTS_STREAM.default,
            ),
            (kafka_bus::TOPIC.var, self.topic.clone(), kafka_bus::TOPIC.default),
            (
                kafka_bus::BOOTSTRAP_SERVERS.var,
                self.brokers.clone(),
                kafka_bus::BOOTSTRAP_SERVERS.default,
            ),
        ] {
            match flag {
                Some(value) => {
                    vars.insert(var.to_owned(), value);
                }
                None => {
                    vars.entry(var.to_owned()).or_insert_with(|| default.to_owned());
                }
            }
        }
        Ok(relay::BusConfig::from_vars(&vars)?)
    }

    async fn connect(&self, sdk: &aws_config::SdkConfig, vars: &Vars) -> anyhow::Result<Connected> {
        Ok(match self.config(vars)? {
            relay::BusConfig::Kinesis { stream } => Connected::Kinesis {
                client: aws_sdk_kinesis::Client::new(sdk),
                stream,
            },
            relay::BusConfig::Kafka(config) => Connected::Kafka {
                client: kafka_bus::connect(&config, kafka_bus::iam::AwsIdentity::from_sdk_config(sdk)).await?,
                config,
            },
        })
    }
}

#[derive(Args)]
struct ReadArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// trim-horizon, latest, an RFC 3339 time, a sequence number (Kinesis, with --shard) or
    /// partition:offset pairs (Kafka: 0:120,1:95 reads those partitions from there).
    #[arg(long, default_value = "trim-horizon")]
    from: Start,
    /// Stop after this RFC 3339 time or sequence number (inclusive); default: the end of the
    /// stream or topic now.
    #[arg(long)]
    to: Option<End>,
    /// Only this shard (Kinesis; repeatable); default: every shard, parents before children.
    #[arg(long = "shard")]
    shards: Vec<String>,
    /// Only this partition (Kafka; repeatable); default: every partition.
    #[arg(long = "partition")]
    partitions: Vec<i32>,
    /// Count what would be applied, duplicate or a gap; write nothing (print: count only).
    #[arg(long)]
    dry_run: bool,
    /// No progress bar even on a terminal.
    #[arg(long, short)]
    quiet: bool,
}

impl ReadArgs {
    /// Replays what this reads from `bus` into `target`.
    async fn replay<C: consumers::Consumer>(
        &self,
        bus: &Connected,
        target: &mut Target<C>,
        progress: &dyn Progress,
    ) -> anyhow::Result<Summary> {
        Ok(match bus {
            Connected::Kinesis { client, stream } => {
                if !self.partitions.is_empty() {
                    return Err(refused(
                        "--partition is for a Kafka topic; on a Kinesis stream choose shards with --shard",
                    ));
                }
                let options = ReplayOptions {
                    stream: stream.clone(),
                    from: self.from.clone(),
                    to: self.to.clone(),
                    shards: self.shards.clone(),
                    dry_run: self.dry_run,
                };
                replay::replay(client, &options, target, progress).await?
            }
            Connected::Kafka { client, config } => {
                if !self.shards.is_empty() {
                    return Err(refused(
                        "--shard is for a Kinesis stream; on a Kafka topic choose partitions with --partition",
                    ));
                }
                let options = TopicReplayOptions {
                    from: self.from.clone(),
                    to: self.to.clone(),
                    partitions: self.partitions.clone(),
                    dry_run: self.dry_run,
                };
                replay_topic(client, config, &options, target, progress).await?
            }
        })
    }
}

#[derive(Args)]
struct ConsumerArgs {
    #[command(flatten)]
    read: ReadArgs,
    /// The table the consumer writes; default its own (READ_MODEL_TABLE for the projector,
    /// NOTIFICATIONS_TABLE for the notifier, ...).
    #[arg(long)]
    table: Option<String>,
}

#[derive(Args)]
struct AuditArgs {
    #[command(flatten)]
    bus: BusArgs,
    /// An RFC 3339 time; default: everything the outbox holds.
    #[arg(long, default_value = "trim-horizon")]
    from: Start,
    /// An RFC 3339 time; default: now.
    #[arg(long)]
    to: Option<End>,
    /// Several Regions: only the events born in this Region (repeatable; a Region whose slots
    /// this one took over, say); those from before events recorded their Region count as the
    /// primary's (PRIMARY_REGION). Default: every event in the replica.
    #[arg(long = "born-in")]
    born_in: Vec<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct RedriveSource {
    /// The dead-letter file (JSON lines) to re-drive; what still fails stays in it.
    #[arg(long)]
    dead_letters: Option<std::path::PathBuf>,
    /// An SQS dead-letter queue's URL; what went through is deleted, what still fails is sent
    /// back to it with its new reason, anything else is left in it.
    #[arg(long)]
    queue: Option<String>,
}

#[derive(Args)]
struct RedriveArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    source: RedriveSource,
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

/// The registered consumer, named as its Lambda names its resources: from `vars` (a blank one
/// is unset: a tool takes its names from whatever environment it runs in), `table` over its own.
fn consumer(
    sdk: &aws_config::SdkConfig,
    vars: &Vars,
    registration: &Registration,
    table: Option<String>,
    publishes: Publishes,
) -> anyhow::Result<BoxConsumer> {
    let mut vars: Vars = vars
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(table) = table {
        vars.insert(registration.table.var.to_owned(), table);
    }
    let wiring = consumers::Wiring::new(
        sdk,
        &vars,
        publishes,
        reservation_events_consumer::metrics::Emitter::Off,
    );
    Ok(registration.build(&wiring)?)
}

/// Every registered consumer, reading its progress only.
fn every_consumer(sdk: &aws_config::SdkConfig, vars: &Vars) -> anyhow::Result<Vec<BoxConsumer>> {
    consumers::ALL
        .iter()
        .map(|registration| consumer(sdk, vars, registration, None, Publishes::No))
        .collect()
}

/// A progress bar on a terminal (unless --quiet), nothing in a pipe.
fn progress_bar(quiet: bool) -> Option<Bar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
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
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(Bar(bar))
}

/// Where a replay sends what it reads.
enum ReplayInto {
    /// A consumer, writing this table (default its own).
    Consumer(&'static Registration, Option<String>),
    Print,
}

/// Replays into a consumer, or prints, and says how it went on stderr.
async fn run_replay(
    sdk: &aws_config::SdkConfig,
    vars: &Vars,
    read: &ReadArgs,
    into: ReplayInto,
) -> anyhow::Result<bool> {
    let bus = read.bus.connect(sdk, vars).await?;
    let bar = progress_bar(read.quiet);
    let progress: &dyn Progress = match &bar {
        Some(bar) => bar,
        None => &NoProgress,
    };
    let summary = match into {
        ReplayInto::Consumer(registration, table) => {
            let publishes = if read.dry_run { Publishes::No } else { Publishes::Yes };
            let consumer = consumer(sdk, vars, registration, table, publishes)?;
            read.replay(&bus, &mut Target::Consumer(consumer), progress).await?
        }
        ReplayInto::Print => {
            let mut target: Target<BoxConsumer> = Target::Print(Box::new(std::io::stdout()));
            read.replay(&bus, &mut target, progress).await?
        }
    };
    if let Some(bar) = bar {
        bar.0.finish_and_clear();
    }
    let mode = if read.dry_run {
        " (dry run: nothing written)"
    } else {
        ""
    };
    eprintln!("replay done{mode}: {summary}");
    Ok(summary.clean())
}

/// An audit's time range: `--from` a time (default: everything in the outbox), `--to` a time
/// (default: now).
fn audit_range(args: &AuditArgs) -> anyhow::Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let from = match &args.from {
        Start::At(time) => *time,
        Start::TrimHorizon => time::OffsetDateTime::UNIX_EPOCH,
        other => return Err(refused(format!("audit --from takes an RFC 3339 time, not {other:?}"))),
    };
    let to = match &args.to {
        None => time::OffsetDateTime::now_utc(),
        Some(End::At(time)) => *time,
        Some(other) => return Err(refused(format!("audit --to takes an RFC 3339 time, not {other:?}"))),
    };
    Ok((from, to))
}

async fn run_audit(
    sdk: &aws_config::SdkConfig,
    vars: &Vars,
    args: &AuditArgs,
) -> anyhow::Result<replay::audit::AuditReport> {
    let (from, to) = audit_range(args)?;
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let consumers = every_consumer(sdk, vars)?;
    let consumers: Vec<&dyn replay::audit::AppliedVersions> = consumers.iter().map(|c| c as _).collect();
    let bus = args.bus.connect(sdk, vars).await?;
    Ok(replay::audit::audit(
        &dynamodb,
        &bus.bus(),
        &settings::Vars(vars).name_or_default(names::OUTBOX_TABLE),
        from,
        to,
        &consumers,
        &born_in(vars, &args.born_in),
    )
    .await?)
}

fn born_in(vars: &Vars, regions: &[String]) -> replay::audit::BornIn {
    if regions.is_empty() {
        return replay::audit::BornIn::Anywhere;
    }
    let primary = vars
        .get("PRIMARY_REGION")
        .filter(|r| !r.is_empty())
        .or_else(|| vars.get("AWS_REGION"))
        .cloned()
        .unwrap_or_else(|| settings::DEFAULT_REGION.to_owned());
    replay::audit::BornIn::Regions {
        regions: regions.to_vec(),
        primary,
    }
}

impl RegionsArgs {
    fn primary(&self, vars: &Vars) -> anyhow::Result<String> {
        self.primary
            .clone()
            .or_else(|| vars.get("PRIMARY_REGION").filter(|r| !r.is_empty()).cloned())
            .ok_or_else(|| {
                refused(
                    "the primary Region is not known: set --primary or PRIMARY_REGION (the Region whose stack created the global tables)",
                )
            })
    }
}

/// One Region's replica and consumers' state, through the SDK configured for that Region.
async fn replica(
    sdk: &aws_config::SdkConfig,
    vars: &Vars,
    region: &str,
    primary: &str,
) -> anyhow::Result<replay::home::Replica> {
    let sdk = sdk
        .to_builder()
        .region(aws_config::Region::new(region.to_owned()))
        .build();
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let env = settings::Vars(vars);
    Ok(replay::home::Replica {
        homes: adapters::SlotHomes::new(
            dynamodb,
            env.name_or_default(names::RESERVATIONS_TABLE),
            env.name_or_default(names::OUTBOX_TABLE),
            settings::Regions {
                here: region.to_owned(),
                primary: primary.to_owned(),
            },
        ),
        consumers: every_consumer(&sdk, vars)?
            .into_iter()
            .map(|c| Box::new(c) as Box<dyn replay::audit::AppliedVersions>)
            .collect(),
    })
}

/// Every Region of the deployment: the global table's replicas as DynamoDB describes the
/// reservations table (the same list in every Region, so every Region names the same arbiter of
/// a takeover), every Region named on the command line being one of them; where the engine keeps
/// no replicas (the local stack), `REGIONS` and the Regions named.
async fn deployment_regions(
    replica: &replay::home::Replica,
    vars: &Vars,
    named: &[&str],
) -> anyhow::Result<Vec<String>> {
    let mut regions = replica.homes.replica_regions().await?;
    if regions.is_empty() {
        regions.extend(named.iter().map(|r| (*r).to_owned()));
        if let Some(listed) = vars.get("REGIONS") {
            regions.extend(
                listed
                    .split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned),
            );
        }
    } else if let Some(stranger) = named.iter().find(|r| !regions.iter().any(|known| known == *r)) {
        return Err(refused(format!(
            "{stranger} is not a Region of the global table (its replicas: {})",
            regions.join(", ")
        )));
    }
    regions.sort();
    regions.dedup();
    Ok(regions)
}

async fn run_move_home(sdk: &aws_config::SdkConfig, vars: &Vars, args: &MoveHomeArgs) -> anyhow::Result<String> {
    let slot = domain::SlotId::parse(&args.slot).map_err(|e| refused(format!("--slot: {e}")))?;
    let primary = args.regions.primary(vars)?;
    let from = replica(sdk, vars, &args.from, &primary).await?;
    let to = replica(sdk, vars, &args.to, &primary).await?;
    if args.abort {
        replay::home::abort_move(&from, &to, &slot).await?;
        return Ok(format!(
            "the move of slot {slot} to {} is aborted: it stays at home in {}",
            args.to, args.from
        ));
    }
    let patience = replay::home::Patience {
        wait: std::time::Duration::from_secs(args.wait),
        ..Default::default()
    };
    Ok(replay::home::move_home(&from, &to, &slot, patience).await?.to_string())
}

async fn run_take_over(sdk: &aws_config::SdkConfig, vars: &Vars, args: &TakeOverArgs) -> anyhow::Result<String> {
    let primary = args.regions.primary(vars)?;
    let here = sdk
        .region()
        .map(|r| r.to_string())
        .ok_or_else(|| refused("this Region is not known: set AWS_REGION to the Region that takes over"))?;
    let this = replica(sdk, vars, &here, &primary).await?;
    let mut others = Vec::new();
    for region in &args.others {
        others.push(replica(sdk, vars, region, &primary).await?);
    }
    let others: Vec<&replay::home::Replica> = others.iter().collect();
    let mut named: Vec<&str> = vec![&here, &args.lost, &primary];
    named.extend(args.others.iter().map(String::as_str));
    let deployment = deployment_regions(&this, vars, &named).await?;
    if args.release {
        let regions = replay::home::TakeoverRegions {
            here: &this,
            others: &others,
            deployment: &deployment,
        };
        return Ok(if replay::home::release_takeover(&args.lost, regions).await? {
            format!("{here} released its takeover of {}", args.lost)
        } else {
            format!("nobody holds the takeover of {}: nothing to release", args.lost)
        });
    }
    let sink = relay::BusSink::open(
        &args.bus.config(vars)?,
        || aws_sdk_kinesis::Client::new(sdk),
        kafka_bus::iam::AwsIdentity::from_sdk_config(sdk),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
    let regions = replay::home::TakeoverRegions {
        here: &this,
        others: &others,
        deployment: &deployment,
    };
    Ok(replay::home::take_over(&args.lost, regions, &sink, deadline)
        .await?
        .to_string())
}

/// What a re-drive hands dead letters to: every consumer's handler and the relay's, on the SDK's
/// configuration.
struct Redriver {
    consumers: Vec<consumers::ConsumerHandler<BoxConsumer, MemoryDeadLetters>>,
    /// The consumers that cannot be built here to act (the notifier without its topic), and why.
    unavailable: Vec<(&'static str, String)>,
    relay: relay::Relay<relay::BusSink, MemoryDeadLetters>,
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
    async fn new(sdk: &aws_config::SdkConfig, vars: &Vars, bus: &BusArgs) -> anyhow::Result<Self> {
        let (mut handlers, mut unavailable) = (Vec::new(), Vec::new());
        for registration in consumers::ALL {
            match consumer(sdk, vars, registration, None, Publishes::Yes) {
                Ok(consumer) => handlers.push(consumers::ConsumerHandler::new(consumer, MemoryDeadLetters::default())),
                Err(why) => unavailable.push((registration.name, format!("{why:#}"))),
            }
        }
        Ok(Self {
            consumers: handlers,
            unavailable,
            relay: relay::Relay::new(
                relay::BusSink::open(
                    &bus.config(vars)?,
                    || aws_sdk_kinesis::Client::new(sdk),
                    kafka_bus::iam::AwsIdentity::from_sdk_config(sdk),
                )
                .await?,
                MemoryDeadLetters::default(),
                relay::PublishPolicy::default(),
            ),
        })
    }

    /// Re-drives one entry, saying on stdout what a person has to know about it.
    async fn entry(&self, line: replay::redrive::Line) -> Entry {
        use replay::redrive::{Functions, Line, Redriven, on_failure_command, redrive};
        let functions = Functions {
            consumers: &self.consumers,
            relay: &self.relay,
        };
        let unavailable = |letter: &dead_letters::DeadLetter| {
            self.unavailable
                .iter()
                .find(|(name, _)| *name == letter.function)
                .map(|(_, why)| why.clone())
        };
        match line {
            // Still failing, with the reason: it stays, and the run says so in its exit status.
            Line::Letter(mut letter) if unavailable(&letter).is_some() => {
                letter.reason = unavailable(&letter).unwrap_or_default();
                println!("still failing ({}): {}", letter.function, letter.reason);
                Entry::Failing(Box::new(letter))
            }
            Line::Letter(letter) => match redrive(&functions, &letter).await {
                Redriven::Done => Entry::Done,
                Redriven::StillFailing(again) => {
                    println!("still failing ({}): {}", again.function, again.reason);
                    Entry::Failing(again)
                }
                Redriven::NotMine => {
                    println!(
                        "kept ({}): only the consumers' ({}) and the relay's letters are re-driven here; this one stays",
                        letter.function,
                        consumers::ALL.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
                    );
                    Entry::Kept
                }
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
async fn run_redrive(sdk: &aws_config::SdkConfig, vars: &Vars, args: &RedriveArgs) -> anyhow::Result<(usize, usize)> {
    match (&args.source.dead_letters, &args.source.queue) {
        (Some(path), _) => {
            // A file that is not there is a bad argument; one that cannot be written back, a failure.
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::Error::new(e).context(Refused(format!("cannot read {}", path.display()))))?;
            redrive_file(&Redriver::new(sdk, vars, &args.bus).await?, path, &text).await
        }
        (None, Some(queue_url)) => {
            let sqs = aws_sdk_sqs::Client::new(sdk);
            let queue = dead_letters::SqsDeadLetterQueue::new(sqs.clone(), queue_url);
            let resend = dead_letters::SqsDeadLetters::new(sqs, queue_url);
            redrive_queue(&Redriver::new(sdk, vars, &args.bus).await?, &queue, &resend).await
        }
        // clap's group makes one of the two required.
        (None, None) => Err(refused(
            "redrive needs either --dead-letters <file> or --queue <SQS queue URL>",
        )),
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

/// The exit status of a command that stopped with `error`: 2 when it was refused before it did
/// anything (see the crate's doc), 1 when it failed while running.
fn exit_status(error: &anyhow::Error) -> u8 {
    // A refusal may be the error itself, a context put on it, or a cause deeper in its chain.
    if error.downcast_ref::<Refused>().is_some() || error.chain().any(is_refusal) {
        2
    } else {
        1
    }
}

/// Whether `cause` refuses the command (a bad argument or setting, a state that forbids it)
/// rather than reporting a failure of AWS, the broker or the file system.
fn is_refusal(cause: &(dyn std::error::Error + 'static)) -> bool {
    use replay::{ReplayError, audit::AuditError, home::MoveError, stack::StackError};
    if let Some(error) = cause.downcast_ref::<ReplayError>() {
        return replay_refusal(error);
    }
    if let Some(AuditError::Stream(error)) = cause.downcast_ref::<AuditError>() {
        return replay_refusal(error);
    }
    if let Some(error) = cause.downcast_ref::<kafka_bus::KafkaError>() {
        return kafka_refusal(error);
    }
    if let Some(error) = cause.downcast_ref::<MoveError>() {
        // Stopped half-way, or the store failed: run it again. Anything else is the slots' state
        // forbidding it.
        return !matches!(
            error,
            MoveError::StillReplicating { .. }
                | MoveError::Republish { .. }
                | MoveError::Store { .. }
                | MoveError::Raced { .. }
        );
    }
    if let Some(error) = cause.downcast_ref::<StackError>() {
        // CloudFormation could not be asked; every other stack error names a stack that is not
        // there or not a reservations stack.
        return !matches!(error, StackError::Describe { .. });
    }
    cause.is::<Refused>()
        || cause.is::<settings::SettingError>()
        || cause.is::<relay::config::RelayConfigError>()
        || cause.is::<kafka_bus::KafkaConfigError>()
}

/// A position, shard or partition that does not fit the bus is a bad argument; a read that
/// failed is not.
fn replay_refusal(error: &replay::ReplayError) -> bool {
    use replay::ReplayError;
    match error {
        ReplayError::Kafka(error) => kafka_refusal(error),
        ReplayError::KafkaPartition { .. } | ReplayError::Kinesis { .. } => false,
        _ => true,
    }
}

/// A topic that does not exist, or IAM without credentials, is a setting to fix; a broker that
/// does not answer is a failure.
fn kafka_refusal(error: &kafka_bus::KafkaError) -> bool {
    matches!(
        error,
        kafka_bus::KafkaError::NoTopic { .. }
            | kafka_bus::KafkaError::NoAwsIdentity
            | kafka_bus::KafkaError::NoPartitionCount { .. }
            | kafka_bus::KafkaError::PartitionMismatch { .. }
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("reservations-replay: {e:#}");
            ExitCode::from(exit_status(&e))
        }
    }
}

/// Says on stderr what a command that finished did.
fn done(outcome: String) -> bool {
    eprintln!("{outcome}");
    true
}

/// A parsed command line: one of [`Command`], or a replay into a registered consumer.
struct Parsed {
    stack: Option<String>,
    run: Run,
}

enum Run {
    Command(Command),
    Consumer(&'static Registration, ConsumerArgs),
}

/// The command line, with a subcommand per registered consumer.
fn parse() -> Result<Parsed, clap::Error> {
    let mut command = Cli::command();
    for registration in consumers::ALL {
        // The consumer's own line, over the one its arguments' flattened groups would give.
        command = command
            .subcommand(ConsumerArgs::augment_args(clap::Command::new(registration.name)).about(registration.about));
    }
    let matches = command.get_matches();
    if let Some((name, arguments)) = matches.subcommand()
        && let Some(registration) = consumers::named(name)
    {
        return Ok(Parsed {
            stack: matches.get_one::<String>("stack").cloned(),
            run: Run::Consumer(registration, ConsumerArgs::from_arg_matches(arguments)?),
        });
    }
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Parsed {
        stack: cli.stack,
        run: Run::Command(cli.command),
    })
}

/// Runs the command; each reports on stderr and says whether it is clean (exit 0) or found
/// something (1). An error is a refusal (2) or a failure while running (1): [`exit_status`].
async fn run(cli: Parsed) -> anyhow::Result<bool> {
    let sdk = settings::sdk_config().await;
    let vars = resolve_vars(&sdk, cli.stack.as_deref()).await?;
    let command = match cli.run {
        Run::Consumer(registration, args) => {
            return run_replay(&sdk, &vars, &args.read, ReplayInto::Consumer(registration, args.table)).await;
        }
        Run::Command(command) => command,
    };
    match command {
        Command::Redrive(args) => run_redrive(&sdk, &vars, &args).await.map(|(done, failing)| {
            eprintln!("redrive done: {done} re-driven, {failing} still failing");
            failing == 0
        }),
        Command::Audit(args) => run_audit(&sdk, &vars, &args).await.map(|report| {
            for line in report.lines() {
                println!("{line}");
            }
            eprintln!("audit done: {report}");
            report.nothing_missing()
        }),
        Command::MoveHome(args) => run_move_home(&sdk, &vars, &args).await.map(done),
        Command::TakeOver(args) => run_take_over(&sdk, &vars, &args).await.map(done),
        Command::Print(args) => run_replay(&sdk, &vars, &args, ReplayInto::Print).await,
    }
}
