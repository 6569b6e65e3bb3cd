//! `devstack`: provision the local resources and serve the API locally.
//!
//!   devstack provision            create tables and stream from infra/resources.json
//!   devstack serve --addr ADDR    serve the API with the Lambda's handler
//!   devstack up --addr ADDR       both
//!
//! Endpoints, region and credentials come from the SDK's usual configuration
//! (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL_KINESIS, AWS_PROFILE, ...).

use adapters::DynamoReservationStore;
use anyhow::{Context, Result};
use api::{ApiConfig, App, ReservationService, RetryPolicy};
use clap::{Parser, Subcommand};
use devstack::resources::{self, ResourceNames, Resources};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Provision, then serve.
    Up {
        #[command(flatten)]
        provision: ProvisionArgs,
        #[command(flatten)]
        serve: ServeArgs,
    },
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
    Ok(())
}

async fn serve(sdk: &aws_config::SdkConfig, args: &ServeArgs) -> Result<()> {
    let config = ApiConfig::from_env()?;
    let store = DynamoReservationStore::new(aws_sdk_dynamodb::Client::new(sdk), config.store_tables());
    let app = Arc::new(App::new(ReservationService::new(store, RetryPolicy::default())));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    println!("serving the reservations API on http://{}", listener.local_addr()?);
    devstack::server::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let sdk = aws_config::load_from_env().await;
    match cli.command {
        Command::Provision(args) => provision(&sdk, &args).await,
        Command::Serve(args) => serve(&sdk, &args).await,
        Command::Up { provision: p, serve: s } => {
            provision(&sdk, &p).await?;
            serve(&sdk, &s).await
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,aws_config=warn".into()),
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
