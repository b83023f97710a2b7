//! `so1s`: run the platform (`serve`) and talk to it (`deploy`, `status`, `predict`,
//! `rollback`, `promote`, `token`). Command-line definitions only: each command is a call
//! into so1s-bin's modules, which call so1s-core.
//!
//! Exit codes: 0 success; 1 the operation failed (a build or rollout failed, the server
//! answered an error); 2 bad usage; 3 the server could not be reached.

use clap::{Parser, Subcommand};
use so1s_bin::client::{self, print_json, ClientArgs, TokenCommand};
use so1s_bin::serve::{self, ServeArgs};
use std::path::PathBuf;
use std::process::ExitCode;

/// so1s: turn an uploaded model into a live inference endpoint.
#[derive(Debug, Parser)]
#[command(name = "so1s", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the api server and gateway.
    Serve(Box<ServeArgs>),
    /// Upload a model (a directory, .tar.gz or .zip) and follow it until live or failed.
    Deploy {
        /// Model directory or archive.
        path: PathBuf,
        /// The model's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show models, or one model's versions.
    Status {
        /// A model's name.
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask a model for a prediction through the gateway.
    Predict {
        /// The model's name.
        name: String,
        /// The text.
        text: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Return a model's traffic to its previous good version.
    Rollback {
        /// The model's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Roll out a built or retired version, whatever is live (an upload a newer one
    /// overtook, or an older version); or give one version of a split all requests and stop
    /// the others.
    Promote {
        /// The model's name.
        name: String,
        /// The version (`v3`).
        version: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show how a model's requests are shared among its live versions, or split them:
    /// `so1s traffic NAME v1=70 v2=30` (weights in percent; one version at 100 promotes it).
    Traffic {
        /// The model's name.
        name: String,
        /// `VERSION=WEIGHT` for each version that takes requests; none: show the split.
        weights: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show or set a model's idle policy: `so1s scale NAME --idle-after 5m` stops its
    /// predict servers after five minutes without a request, until the next one wakes it;
    /// `--idle-after 0` keeps it always on.
    Scale {
        /// The model's name.
        name: String,
        /// How long without a request before its instances stop: `30s`, `5m`, `1h`, or
        /// seconds; `0`: always on. None: show the model's scale.
        #[arg(long, value_parser = so1s_bin::client::parse_idle_after)]
        idle_after: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Manage api tokens (admin): `create`, `list`, `revoke`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print Kubernetes manifests: `install` (so1s itself) or `model` (what a rollout applies).
    #[cfg(feature = "kubernetes")]
    Manifests {
        #[command(subcommand)]
        command: Box<so1s_bin::cluster::ManifestsCommand>,
    },
    /// Prepare a model image's build context from an archive (the first step of a
    /// Kubernetes build Job): unpack, check, smoke-test, write the Dockerfile.
    #[cfg(feature = "kubernetes")]
    Context(so1s_bin::cluster::ContextArgs),
    /// Build the so1s image (the runtime plus so1s itself: the api server and build step in a
    /// cluster, and the base of the model images built there) with the Docker engine.
    #[cfg(feature = "docker")]
    Image(so1s_bin::image::ImageArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            let unreachable = e.chain().any(|cause| {
                matches!(
                    cause.downcast_ref::<so1s_core::Error>(),
                    Some(so1s_core::Error::Client(
                        so1s_core::ClientError::Unreachable(_)
                    ))
                )
            });
            ExitCode::from(if unreachable { 3 } else { 1 })
        }
    }
}

/// Runs one command; an error is reported by `main` with its exit code.
async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            so1s_bin::init_tracing();
            serve::serve(*args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Deploy { path, name, client } => {
            client::deploy(&client.client()?, &path, &name).await
        }
        Command::Status {
            name: Some(name),
            client,
        } => print_json(client.client()?.model(&name).await),
        Command::Status { name: None, client } => print_json(client.client()?.models().await),
        Command::Predict { name, text, client } => {
            print_json(client.client()?.predict(&name, &text).await)
        }
        Command::Rollback { name, client } => print_json(client.client()?.rollback(&name).await),
        Command::Promote {
            name,
            version,
            client,
        } => print_json(client.client()?.promote(&name, &version).await),
        Command::Traffic {
            name,
            weights,
            client,
        } => client::traffic(&client.client()?, &name, &weights).await,
        Command::Scale {
            name,
            idle_after,
            client,
        } => client::scale(&client.client()?, &name, idle_after).await,
        Command::Token { command, client } => client::token(&client.client()?, command).await,
        #[cfg(feature = "kubernetes")]
        Command::Manifests { command } => {
            print!("{}", so1s_bin::cluster::print_manifests(&command)?);
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "kubernetes")]
        Command::Context(args) => args.run().await.map(|()| ExitCode::SUCCESS),
        #[cfg(feature = "docker")]
        Command::Image(args) => so1s_bin::image::build(&args).await,
    }
}
