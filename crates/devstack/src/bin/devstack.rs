//! `devstack`: provision the local resources and serve the API locally.
//!
//!   devstack provision            create tables and stream from infra/resources.json
//!   devstack serve --addr ADDR    serve the API with the Lambda's handler
//!   devstack relay                run the relay on the outbox stream (local event source mapping),
//!                                 or with --relay-mode polling the polling publisher
//!   devstack sweep --since TIME   publish again every event committed since TIME (recovery sweep)
//!   devstack consumers            run every consumer (the projector, the notifier) on the Kinesis stream
//!                                 (with EVENT_BUS=kafka: on the Kafka topic, and the relay and
//!                                 the events command likewise)
//!   devstack consumer --template T --binary B
//!                                 run a consumer that lives in a stack of its own (its SAM
//!                                 template T, its Lambda binary B) on the bus, its tables made
//!   devstack up --addr ADDR       provision, then serve the API and run the relay and consumers
//!   devstack events [--follow]    print the events on the Kinesis stream, one JSON line each
//!   devstack notifications [--follow]
//!                                 print (and consume) what the example subscriber queue received
//!
//! Endpoints, region and credentials come from the SDK's usual configuration
//! (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL_KINESIS, AWS_ENDPOINT_URL_SNS,
//! AWS_ENDPOINT_URL_SQS, AWS_PROFILE, ...).

use adapters::RelayMode;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use consumers::Consumer;
use devstack::pipeline;
use devstack::resources::{self, ResourceNames, Resources};
use reservations_api::ApiConfig;
use settings::names;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// The local topic's partitions (with EVENT_BUS=kafka) unless `KAFKA_PARTITIONS` says otherwise,
/// as many as the local stream's shards: the count the topic is created with and the relay maps
/// keys by.
const KAFKA_PARTITIONS: std::num::NonZeroU32 = std::num::NonZeroU32::new(4).unwrap();

#[derive(Parser)]
#[command(version, about = "The reservation service's embedded local stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the tables and the Kinesis stream that do not exist yet.
    Provision(ProvisionArgs),
    /// Serve the HTTP API locally with the same handler code the Lambda runs.
    Serve(ServeArgs),
    /// Run the relay Lambda's handler on the outbox table's stream, as its event source mapping
    /// would; with --relay-mode polling, run the poller Lambda's code as its schedule would.
    Relay(RelayArgs),
    /// The recovery sweep: mark every event committed since --since unpublished again and publish
    /// them in order (after a stream relay outage longer than the stream's retention).
    Sweep {
        /// RFC 3339 time, e.g. 2026-11-20T00:00:00Z.
        #[arg(long, value_parser = parse_time)]
        since: time::OffsetDateTime,
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// Run every consumer's Lambda handler (the projector, the notifier) on the Kinesis stream, as
    /// their event source mappings would.
    Consumers(RelayArgs),
    /// Run a consumer that lives in a stack of its own, as its event source mapping would: its
    /// tables made from its SAM template, its Lambda binary fed through the Runtime API.
    Consumer(OutsideArgs),
    /// Provision, then serve the API and run the relay and the consumers.
    Up {
        #[command(flatten)]
        provision: ProvisionArgs,
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// Print the events on the Kinesis stream (every shard, parents before children) as JSON lines.
    Events {
        /// Keep waiting for new events instead of stopping at the end of the stream.
        #[arg(long)]
        follow: bool,
    },
    /// Print the notifications the example subscriber queue received, one JSON line each, and
    /// delete them from the queue (this is the subscriber).
    Notifications {
        /// Keep waiting for new notifications instead of stopping when the queue is empty.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(clap::Args)]
struct RelayArgs {
    /// Where records that cannot be published, and batches given up on, are written (JSON lines).
    #[arg(long, env = "DEVSTACK_DEAD_LETTER_DIR", default_value = ".devstack/dead-letters")]
    dead_letter_dir: PathBuf,
    /// stream: the CDC relay on the outbox stream; polling: the polling publisher (and the API
    /// marks new events for it).
    #[arg(long, env = "RELAY_MODE", default_value = "stream")]
    relay_mode: RelayMode,
    /// The polling publisher's pause between polls.
    #[arg(long, env = "POLL_INTERVAL_MS", default_value_t = 1000)]
    poll_interval_ms: u64,
}

#[derive(clap::Args)]
struct OutsideArgs {
    /// The consumer's SAM template: its function's environment and its DynamoDB tables.
    #[arg(long)]
    template: PathBuf,
    /// The function's binary, built for this machine.
    #[arg(long)]
    binary: PathBuf,
    /// Where its output (logs, metrics), dead letters and on-failure records go.
    #[arg(long, env = "DEVSTACK_DEAD_LETTER_DIR", default_value = ".devstack/dead-letters")]
    dir: PathBuf,
}

fn parse_time(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("expected an RFC 3339 time such as 2026-11-20T00:00:00Z, got {text:?}"))
}

impl RelayArgs {
    fn poller(&self, sdk: &aws_config::SdkConfig, sink: relay::BusSink) -> Result<pipeline::BusPoller> {
        let config = ApiConfig::from_env()?;
        let settings = relay::PollerSettings {
            interval: std::time::Duration::from_millis(self.poll_interval_ms.max(10)),
            ..Default::default()
        };
        Ok(pipeline::poller_to(
            aws_sdk_dynamodb::Client::new(sdk),
            &config.store.outbox_table,
            sink,
            &self.dead_letter_dir,
            settings,
            &config.store.regions,
        ))
    }
}

#[derive(clap::Args)]
struct ProvisionArgs {
    /// Resource definition to use instead of the built-in copy of infra/resources.json.
    #[arg(long, env = "DEVSTACK_RESOURCES")]
    resources: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on. Loopback by default: this is a development server.
    #[arg(long, env = "DEVSTACK_ADDR", default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// With AUTH_MODE=JWT: verify bearer tokens signed (HS256) with the secret in this file, as
    /// API Gateway's JWT authorizer would, and pass their claims to the API.
    #[arg(long, env = "DEVSTACK_JWT_SECRET_FILE", requires_all = ["jwt_issuer", "jwt_audience"])]
    jwt_secret_file: Option<PathBuf>,
    /// The issuer the tokens must name (with --jwt-secret-file).
    #[arg(long, env = "DEVSTACK_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// The audience the tokens must name (with --jwt-secret-file).
    #[arg(long, env = "DEVSTACK_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
}

async fn provision(sdk: &aws_config::SdkConfig, args: &ProvisionArgs) -> Result<()> {
    let resources = match &args.resources {
        Some(path) => Resources::from_file(path)?,
        None => Resources::embedded()?,
    };
    let names = ResourceNames::resolve(&resources, &std::env::vars().collect(), "");
    resources::provision(
        &aws_sdk_dynamodb::Client::new(sdk),
        &aws_sdk_kinesis::Client::new(sdk),
        &resources,
        &names,
    )
    .await?;
    for (var, name) in names.as_env() {
        println!("ready: {var}={name}");
    }
    if let relay::BusConfig::Kafka(kafka) = bus()? {
        let client = kafka_bus::connect(&kafka, None).await?;
        let partitions = kafka.partitions.unwrap_or(KAFKA_PARTITIONS);
        kafka_bus::ensure_topic(&client, &kafka, partitions.get() as i32).await?;
        println!(
            "ready: KAFKA_TOPIC={} on {} (KAFKA_PARTITIONS={partitions})",
            kafka.topic,
            kafka.bootstrap_servers.join(",")
        );
    }
    let channel = notification_channel(sdk).await?;
    println!("ready: {}={}", names::NOTIFICATIONS_TOPIC_ARN, channel.topic_arn);
    println!("ready: NOTIFICATIONS_QUEUE_URL={}", channel.queue_url);
    Ok(())
}

/// The notifications topic and its example subscriber, created unless they exist.
async fn notification_channel(sdk: &aws_config::SdkConfig) -> Result<devstack::channel::ChannelResources> {
    devstack::channel::provision(
        &aws_sdk_sns::Client::new(sdk),
        &aws_sdk_sqs::Client::new(sdk),
        &env_name(names::NOTIFICATIONS_TOPIC),
        &env_name(names::NOTIFICATIONS_QUEUE),
    )
    .await
}

async fn print_notifications(sdk: &aws_config::SdkConfig, follow: bool) -> Result<()> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let queue_url = notification_channel(sdk).await?.queue_url;
    loop {
        let batch = devstack::channel::receive_batch(&sqs, &queue_url).await?;
        for received in &batch {
            println!("{}", serde_json::to_string(&received.message)?);
        }
        if batch.is_empty() {
            if !follow {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                _ = ctrl_c() => return Ok(()),
            }
        }
    }
}

/// A resource's name from the environment, else its default.
fn env_name(resource: settings::ResourceName) -> String {
    settings::Vars(&std::env::vars().collect()).name_or_default(resource)
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

async fn relay(sdk: &aws_config::SdkConfig, args: &RelayArgs) -> Result<()> {
    let bus = bus()?;
    let sink = relay::BusSink::open(&bus, || aws_sdk_kinesis::Client::new(sdk), None).await?;
    if args.relay_mode == RelayMode::Polling {
        let poller = args.poller(sdk, sink)?;
        println!(
            "polling publisher: {} every {} ms → {} (dead letters in {})",
            ApiConfig::from_env()?.store.outbox_table,
            args.poll_interval_ms,
            bus.destination(),
            args.dead_letter_dir.display()
        );
        let forever = tokio::time::Instant::now() + std::time::Duration::from_secs(100 * 365 * 24 * 3600);
        poller.run(forever, false, ctrl_c()).await;
        return Ok(());
    }
    let store = ApiConfig::from_env()?.store;
    let outbox_table = store.outbox_table;
    let stream_arn = devstack::pipeline::outbox_stream_arn(&aws_sdk_dynamodb::Client::new(sdk), &outbox_table).await?;
    println!(
        "relaying {outbox_table} → {} (dead letters in {})",
        bus.destination(),
        args.dead_letter_dir.display()
    );
    let mapping = devstack::pipeline::relay_mapping_to(sdk, &stream_arn, sink, &args.dead_letter_dir, &store.regions);
    mapping.run(std::time::Duration::from_millis(100), ctrl_c()).await;
    Ok(())
}

/// The bus the events travel on: `EVENT_BUS` and its settings; a local topic's partition count
/// is [`KAFKA_PARTITIONS`] unless set.
fn bus() -> Result<relay::BusConfig> {
    Ok(match relay::BusConfig::from_vars(&std::env::vars().collect())? {
        relay::BusConfig::Kafka(kafka) if kafka.partitions.is_none() => {
            relay::BusConfig::Kafka(kafka.with_partitions(KAFKA_PARTITIONS))
        }
        bus => bus,
    })
}

async fn sweep(sdk: &aws_config::SdkConfig, since: time::OffsetDateTime, args: &RelayArgs) -> Result<()> {
    let sink = relay::BusSink::open(&bus()?, || aws_sdk_kinesis::Client::new(sdk), None).await?;
    let poller = args.poller(sdk, sink)?;
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(24 * 3600);
    let stats = tokio::select! {
        stats = poller.sweep(since, until) => stats?,
        _ = ctrl_c() => anyhow::bail!("interrupted; run the sweep again to finish (events already re-published are duplicates to consumers)"),
    };
    println!(
        "sweep done: marked {} events since {since}, published {}, dead-lettered {}",
        stats.swept, stats.published, stats.dead_lettered
    );
    Ok(())
}

/// Every registered consumer (`consumers::ALL`) behind its mapping on the bus, as their Lambdas
/// run deployed.
async fn consumers(sdk: &aws_config::SdkConfig, args: &RelayArgs) -> Result<()> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    if vars
        .get(names::NOTIFICATIONS_TOPIC_ARN)
        .is_none_or(|arn| arn.is_empty())
    {
        let topic_arn = notification_channel(sdk).await?.topic_arn;
        vars.insert(names::NOTIFICATIONS_TOPIC_ARN.to_owned(), topic_arn);
    }
    let wiring = consumers::Wiring::new(sdk, &vars, consumers::Publishes::Yes, Default::default());
    let built = consumers::ALL
        .iter()
        .map(|registration| registration.build(&wiring))
        .collect::<Result<Vec<_>, _>>()?;
    let dir = &args.dead_letter_dir;
    let bus = bus()?;
    let tables: Vec<String> = consumers::ALL
        .iter()
        .map(|r| format!("{} → {}", r.name, settings::Vars(&vars).name_or_default(r.table)))
        .collect();
    println!("consuming {}: {}", bus.destination(), tables.join(", "));
    let idle = std::time::Duration::from_millis(100);
    match bus {
        relay::BusConfig::Kinesis { stream } => {
            let mut mappings = Vec::new();
            for consumer in built {
                mappings.push(pipeline::consumer_mapping(sdk, &stream, consumer, dir).await?);
            }
            futures::future::join_all(mappings.into_iter().map(|m| m.run(idle, ctrl_c()))).await;
        }
        relay::BusConfig::Kafka(kafka) => {
            let mut mappings = Vec::new();
            for consumer in built {
                let config = pipeline::consumer_mapping_config(&format!("reservations-{}", consumer.name()));
                mappings.push(pipeline::consumer_mapping_on_kafka(&kafka, consumer, dir, config).await?);
            }
            futures::future::join_all(mappings.into_iter().map(|m| m.run(idle, ctrl_c()))).await;
        }
    }
    Ok(())
}

/// A consumer of a stack of its own on the local bus: its tables are named after the folder of
/// its template (`examples/booking-ledger` → `booking-ledger-ledgertable`).
async fn outside_consumer(sdk: &aws_config::SdkConfig, args: &OutsideArgs) -> Result<()> {
    use devstack::outside::{self, OutsideConsumer};
    let consumer = OutsideConsumer::from_template(&args.template)?;
    let folder = args
        .template
        .canonicalize()?
        .parent()
        .and_then(|dir| dir.file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!("{folder}-");
    let bus = bus()?;
    let kind = match bus {
        relay::BusConfig::Kinesis { .. } => settings::EventBus::Kinesis,
        relay::BusConfig::Kafka(_) => settings::EventBus::Kafka,
    };
    let name = format!("{prefix}{}", consumer.name);
    let (log, dead_letters, _) = outside::files(&args.dir, &name);
    let environment = consumer
        .provision(&aws_sdk_dynamodb::Client::new(sdk), &prefix, kind, &dead_letters)
        .await?;
    let tables: Vec<String> = consumer
        .tables
        .keys()
        .map(|id| consumer.table_name(&prefix, id))
        .collect();
    println!(
        "consuming {} with {} ({name}): tables {}; its output in {}, dead letters in {}",
        bus.destination(),
        args.binary.display(),
        tables.join(", "),
        log.display(),
        dead_letters.display()
    );
    let idle = std::time::Duration::from_millis(100);
    match bus {
        relay::BusConfig::Kinesis { stream } => {
            let mapping = outside::on_kinesis(sdk, &stream, &name, &args.binary, &environment, &args.dir).await?;
            mapping.run(idle, ctrl_c()).await;
        }
        relay::BusConfig::Kafka(kafka) => {
            let mapping = outside::on_kafka(&kafka, &name, &args.binary, &environment, &args.dir).await?;
            mapping.run(idle, ctrl_c()).await;
        }
    }
    Ok(())
}

async fn print_events(sdk: &aws_config::SdkConfig, follow: bool) -> Result<()> {
    if let relay::BusConfig::Kafka(kafka) = bus()? {
        return devstack::events::print_kafka(&kafka, follow, ctrl_c()).await;
    }
    let events_stream = env_name(names::EVENTS_STREAM);
    let mut mapping = devstack::events::printer(sdk, &events_stream).await?;
    if follow {
        mapping.run(std::time::Duration::from_millis(200), ctrl_c()).await;
    } else {
        mapping.drain().await?;
    }
    Ok(())
}

async fn serve(sdk: &aws_config::SdkConfig, args: &ServeArgs, relay_mode: Option<RelayMode>) -> Result<()> {
    let mut config = ApiConfig::from_env()?;
    if let Some(mode) = relay_mode {
        config.store.relay_mode = mode;
    }
    let app = Arc::new(reservations_api::app(aws_sdk_dynamodb::Client::new(sdk), &config));
    let authorizer = match (&args.jwt_secret_file, &args.jwt_issuer, &args.jwt_audience) {
        (Some(file), Some(issuer), Some(audience)) => {
            let secret = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            Some(Arc::new(devstack::server::LocalJwtAuthorizer::hs256(
                secret.trim_ascii(),
                issuer,
                audience,
            )))
        }
        _ => None,
    };
    if config.auth != api::AuthPolicy::Open && authorizer.is_none() {
        tracing::warn!(
            "AUTH_MODE asks for verified callers, and nothing here verifies them: every request is 401 (use --jwt-secret-file with AUTH_MODE=JWT)"
        );
    }
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    println!(
        "serving the reservations API on http://{} (relay mode: {})",
        listener.local_addr()?,
        config.store.relay_mode
    );
    devstack::server::serve_with(listener, app, authorizer, ctrl_c()).await?;
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let sdk = settings::sdk_config().await;
    match cli.command {
        Command::Provision(args) => provision(&sdk, &args).await,
        Command::Serve(args) => serve(&sdk, &args, None).await,
        Command::Relay(args) => relay(&sdk, &args).await,
        Command::Sweep { since, relay: args } => sweep(&sdk, since, &args).await,
        Command::Consumers(args) => consumers(&sdk, &args).await,
        Command::Consumer(args) => outside_consumer(&sdk, &args).await,
        Command::Events { follow } => print_events(&sdk, follow).await,
        Command::Notifications { follow } => print_notifications(&sdk, follow).await,
        Command::Up {
            provision: p,
            serve: s,
            relay: r,
        } => {
            provision(&sdk, &p).await?;
            tokio::try_join!(
                serve(&sdk, &s, Some(r.relay_mode)),
                relay(&sdk, &r),
                consumers(&sdk, &r)
            )?;
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,rskafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line: the error and its causes.
            eprintln!("devstack: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
