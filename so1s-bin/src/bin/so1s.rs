//! `so1s`: run the platform (`serve`) and talk to it (`deploy`, `status`, `predict`,
//! `rollback`).
//!
//! Exit codes: 0 success; 1 the operation failed (a build or rollout failed, the server
//! answered an error); 2 bad usage; 3 the server could not be reached.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use so1s_bin::cluster::{
    kubernetes_backend, print_manifests, write_context, BuildArgs, ClusterArgs, ContextArgs,
    ManifestsCommand, DEFAULT_SO1S_IMAGE,
};
use so1s_core::build::{
    BundleBuilder, DockerBuildConfig, DockerImageBuilder, ImageBuilder, RegistryAuth,
};
use so1s_core::events::{Events, Stage};
use so1s_core::platform::Platform;
use so1s_core::registry::Registry;
use so1s_core::rollout::{
    DockerRollout, DockerRolloutConfig, ProcessRollout, ProcessRolloutConfig, Rollout, Routes,
};
use so1s_core::store::FsModelStore;
use so1s_core::ModelName;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    Serve(ServeArgs),
    /// Upload a model (a directory, .tar.gz or .zip) and follow it until live or failed.
    Deploy {
        /// Model directory or archive.
        path: PathBuf,
        /// The model's name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Show models, or one model's versions.
    Status {
        /// A model's name.
        name: Option<String>,
        #[command(flatten)]
        server: Server,
    },
    /// Ask a model for a prediction through the gateway.
    Predict {
        /// The model's name.
        name: String,
        /// The text.
        text: String,
        #[command(flatten)]
        server: Server,
    },
    /// Return a model's traffic to its previous good version.
    Rollback {
        /// The model's name.
        name: String,
        #[command(flatten)]
        server: Server,
    },
    /// Print Kubernetes manifests: `install` (so1s itself) or `model` (what a rollout applies).
    Manifests {
        #[command(subcommand)]
        command: ManifestsCommand,
    },
    /// Build the so1s image (the runtime plus so1s itself: the api server and build step in a
    /// cluster, and the base of the model images built there) with the Docker engine.
    Image {
        /// The image's tag (with the registry, to push it).
        #[arg(long, default_value = DEFAULT_SO1S_IMAGE)]
        tag: String,
        /// Push it (credentials from SO1S_REGISTRY_USERNAME / SO1S_REGISTRY_PASSWORD).
        #[arg(long)]
        push: bool,
    },
    /// Prepare a model image's build context from an archive (the first step of a
    /// Kubernetes build Job): unpack, check, smoke-test, write the Dockerfile.
    Context(ContextArgs),
}

#[derive(Debug, clap::Args)]
struct Server {
    /// The api server.
    #[arg(long, env = "SO1S_SERVER", default_value = "http://127.0.0.1:8000")]
    server: String,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SO1S_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port, printed on stdout).
    #[arg(long, env = "SO1S_PORT", default_value_t = 8000)]
    port: u16,
    /// Where models, builds and the registry live.
    #[arg(long, env = "SO1S_DATA_DIR", default_value = "so1s-data")]
    data_dir: PathBuf,
    /// Where versions run: `local` (a so1s-predict process per version), `docker` (an
    /// image per version, a container per live version) or `kubernetes` (a build Job per
    /// version, a Deployment + Service + Ingress per model).
    #[arg(long, env = "SO1S_BACKEND", value_enum, default_value_t = Backend::Local)]
    backend: Backend,
    /// The so1s-predict executable (default: next to this one).
    #[arg(long, env = "SO1S_PREDICT_BIN")]
    predict_bin: Option<PathBuf>,
    #[command(flatten)]
    docker: DockerArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    build: BuildArgs,
    /// libtorch threads of each predict server.
    #[arg(long, env = "SO1S_PREDICT_THREADS")]
    predict_threads: Option<usize>,
    /// The model `/inference/predict` serves (default: the first to go live).
    #[arg(long, env = "SO1S_DEFAULT_MODEL")]
    default_model: Option<String>,
    /// Largest upload in bytes.
    #[arg(long, env = "SO1S_MAX_UPLOAD_BYTES", default_value_t = 4 << 30)]
    max_upload_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    Local,
    Docker,
    Kubernetes,
}

/// Settings of the docker backend. The engine is the one `DOCKER_HOST` names (default: the
/// local socket). Registry credentials come from `SO1S_REGISTRY_USERNAME` and
/// `SO1S_REGISTRY_PASSWORD` only, never from flags.
#[derive(Debug, clap::Args)]
struct DockerArgs {
    /// Name of this installation on the engine: containers are labelled and named with it.
    #[arg(long, env = "SO1S_INSTANCE", default_value = "default")]
    instance: String,
    /// Memory limit of each version's container, in MiB.
    #[arg(long, env = "SO1S_MEMORY_MIB", default_value_t = 4096)]
    memory_mib: i64,
    /// CPU limit of each version's container, in cores (default: none).
    #[arg(long, env = "SO1S_CPUS")]
    cpus: Option<f64>,
    /// Base of the runtime image: `scratch` (nothing to pull) or an image of your own.
    #[arg(long, env = "SO1S_BASE_IMAGE", default_value = "scratch")]
    base_image: String,
    /// Push model images under this repository prefix (e.g. `registry.example.com/team`);
    /// required on Kubernetes.
    #[arg(long, env = "SO1S_PUSH_TO")]
    push_to: Option<String>,
    /// Run containers on this Docker network and reach them by name (when so1s itself runs
    /// in a container on it); default: publish each on a free loopback port.
    #[arg(long, env = "SO1S_DOCKER_NETWORK")]
    docker_network: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            so1s_bin::init_tracing();
            serve(args).await
        }
        Command::Deploy { path, name, server } => deploy(&server.server, &path, &name).await,
        Command::Status { name, server } => status(&server.server, name.as_deref()).await,
        Command::Predict { name, text, server } => {
            let url = format!("{}/inference/{name}/predict", server.server);
            let body = serde_json::json!({ "text": text });
            call(reqwest::Client::new().post(url).json(&body)).await
        }
        Command::Rollback { name, server } => {
            let url = format!("{}/v1/models/{name}/rollback", server.server);
            call(reqwest::Client::new().post(url)).await
        }
        Command::Manifests { command } => print_manifests(&command).map(|yaml| {
            print!("{yaml}");
            ExitCode::SUCCESS
        }),
        Command::Context(args) => write_context(&args).await.map(|()| ExitCode::SUCCESS),
        Command::Image { tag, push } => build_so1s_image(&tag, push).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(|cause| {
                cause
                    .downcast_ref::<reqwest::Error>()
                    .is_some_and(|e| e.is_connect())
            }) {
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    tracing::info!(?args, "starting so1s");
    let default_model = args
        .default_model
        .as_deref()
        .map(ModelName::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    let predict_bin = match args.predict_bin.clone() {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("locating so1s's directory")?
            .join("so1s-predict"),
    };
    if !predict_bin.is_file() {
        bail!(
            "{} not found: build it or pass --predict-bin",
            predict_bin.display()
        );
    }
    let data = &args.data_dir;
    let store = FsModelStore::open(data.join("store"), args.max_upload_bytes)
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    let registry =
        Registry::open(data.join("registry.json")).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let routes = Routes::default();
    let (builder, rollout): (Arc<dyn ImageBuilder>, Arc<dyn Rollout>) = match args.backend {
        Backend::Local => {
            let mut rollout = ProcessRolloutConfig::new(predict_bin);
            rollout.threads = args.predict_threads;
            (
                Arc::new(BundleBuilder::new(data.join("bundles"))),
                Arc::new(ProcessRollout::new(rollout, routes.clone())),
            )
        }
        Backend::Docker => docker_backend(&args, predict_bin, &routes).await?,
        Backend::Kubernetes => {
            let cluster = args
                .cluster
                .settings(default_model.clone(), args.predict_threads);
            kubernetes_backend(
                cluster,
                &args.build,
                args.docker.push_to.as_deref(),
                &args.data_dir,
                &routes,
            )
            .await?
        }
    };
    let platform = Platform::new(
        Arc::new(store),
        builder,
        rollout,
        registry,
        routes,
        default_model,
    );
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    platform.restore().await;
    so1s_core::http::api::run(listener, platform.clone(), so1s_bin::shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    platform.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The Docker image builder and rollout, on the engine `DOCKER_HOST` names.
async fn docker_backend(
    args: &ServeArgs,
    predict_bin: PathBuf,
    routes: &Routes,
) -> anyhow::Result<(Arc<dyn ImageBuilder>, Arc<dyn Rollout>)> {
    let docker_args = &args.docker;
    let instance = ModelName::parse(&docker_args.instance)
        .map_err(|e| anyhow::anyhow!("--instance: {}", e.chain()))?;
    let docker = so1s_core::docker::connect()
        .await
        .map_err(|e| anyhow::anyhow!("{} (is a Docker engine running? DOCKER_HOST?)", e.chain()))?;
    let bin_dir = predict_bin
        .parent()
        .context("locating so1s-predict's directory")?;
    let mut build = DockerBuildConfig::new(bin_dir, args.data_dir.join("docker-builds"));
    build.predict_bin = predict_bin.clone();
    build.base_image = docker_args.base_image.clone();
    build.push_to = docker_args.push_to.clone();
    build.registry_auth = registry_auth();
    if !build.probe_bin.is_file() {
        bail!("{} not found: build so1s-probe", build.probe_bin.display());
    }
    let mut rollout = DockerRolloutConfig::new(instance);
    rollout.memory_bytes = Some(docker_args.memory_mib << 20);
    rollout.cpus = docker_args.cpus;
    rollout.threads = args.predict_threads;
    rollout.network = docker_args.docker_network.clone();
    let builder = Arc::new(DockerImageBuilder::new(docker.clone(), build));
    // The runtime image is built once per so1s build: do it now rather than in the first
    // upload's build.
    let warm = builder.clone();
    tokio::spawn(async move {
        let events = Events::new(Stage::Build, |e| {
            tracing::info!("runtime image: {}", e.message)
        });
        if let Err(e) = warm.runtime_image(&events).await {
            tracing::error!("the runtime image cannot be built: {}", e.chain());
        }
    });
    Ok((
        builder,
        Arc::new(DockerRollout::new(docker, rollout, routes.clone())),
    ))
}

/// `so1s image`: the so1s image from the binaries next to this one.
async fn build_so1s_image(tag: &str, push: bool) -> anyhow::Result<ExitCode> {
    let so1s = std::env::current_exe()?;
    let bin_dir = so1s.parent().context("locating so1s's directory")?;
    let docker = so1s_core::docker::connect()
        .await
        .map_err(|e| anyhow::anyhow!("{} (is a Docker engine running? DOCKER_HOST?)", e.chain()))?;
    let mut config = DockerBuildConfig::new(bin_dir, std::env::temp_dir());
    config.registry_auth = registry_auth();
    let events = Events::new(Stage::Build, |e| eprintln!("{}", e.message));
    let id = DockerImageBuilder::new(docker, config)
        .so1s_image(&so1s, tag, push, &events)
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    println!("{tag} {id}");
    Ok(ExitCode::SUCCESS)
}

/// Registry credentials from the environment only.
fn registry_auth() -> Option<RegistryAuth> {
    match (
        std::env::var("SO1S_REGISTRY_USERNAME"),
        std::env::var("SO1S_REGISTRY_PASSWORD"),
    ) {
        (Ok(username), Ok(password)) => Some(RegistryAuth { username, password }),
        _ => None,
    }
}

/// Sends a request and prints the JSON answer; an error status is a failure.
async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<ExitCode> {
    let response = request.send().await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn status(server: &str, name: Option<&str>) -> anyhow::Result<ExitCode> {
    let url = match name {
        Some(name) => format!("{server}/v1/models/{name}"),
        None => format!("{server}/v1/models"),
    };
    call(reqwest::Client::new().get(url)).await
}

async fn deploy(server: &str, path: &std::path::Path, name: &str) -> anyhow::Result<ExitCode> {
    let body = if path.is_dir() {
        eprintln!("packing {}", path.display());
        so1s_core::build::archive::pack_dir(path).map_err(|e| anyhow::anyhow!(e.chain()))?
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    eprintln!("uploading {} bytes as {name}", body.len());
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{server}/v1/models/{name}/versions"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        eprintln!(
            "upload refused ({status}): {}",
            answer["error"].as_str().unwrap_or("?")
        );
        return Ok(ExitCode::from(1));
    }
    let version = answer["version"].as_str().unwrap_or("?").to_owned();
    let events = answer["links"]["events"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    eprintln!("stored {name} {version}; following its build and rollout");
    let mut stream = client
        .get(format!("{server}{events}"))
        .send()
        .await?
        .bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let message: String = buffer.drain(..end + 2).collect();
            if let Some(data) = message.lines().find_map(|l| l.strip_prefix("data:")) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(data.trim()) {
                    eprintln!(
                        "[{}] {}",
                        event["stage"].as_str().unwrap_or(""),
                        event["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    let record: serde_json::Value = client
        .get(format!("{server}/v1/models/{name}/versions/{version}"))
        .send()
        .await?
        .json()
        .await?;
    let state = record["state"].as_str().unwrap_or("unknown");
    match state {
        "live" => {
            println!("{name} {version} is live: POST {server}/inference/{name}/predict");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            println!(
                "{name} {version} is {state}: {}",
                record["error"].as_str().unwrap_or("see the events above")
            );
            Ok(ExitCode::from(1))
        }
    }
}
