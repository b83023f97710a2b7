//! `so1s`: run the platform (`serve`) and talk to it (`deploy`, `status`, `predict`,
//! `rollback`, `promote`, `token`).
//!
//! Exit codes: 0 success; 1 the operation failed (a build or rollout failed, the server
//! answered an error); 2 bad usage; 3 the server could not be reached.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use so1s_bin::cluster::{
    kubernetes_backend, print_manifests, write_context, BuildArgs, ClusterArgs, ContextArgs,
    ManifestsCommand, DEFAULT_SO1S_IMAGE,
};
use so1s_core::auth::{Role, Token, TokenStore, Tokens};
use so1s_core::build::{
    BundleBuilder, DockerBuildConfig, DockerImageBuilder, ImageBuilder, RegistryAuth, SmokeProcess,
    SmokeTest,
};
use so1s_core::client::ApiClient;
use so1s_core::events::{Events, Stage};
use so1s_core::http::api::{ApiConfig, ApiLimits, GatewayTimeouts, MultipartLimits};
use so1s_core::http::serve::ConnectionLimits;
use so1s_core::platform::{Platform, PlatformOptions};
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
use std::time::Duration;

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
    /// overtook, or an older version).
    Promote {
        /// The model's name.
        name: String,
        /// The version (`v3`).
        version: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print Kubernetes manifests: `install` (so1s itself) or `model` (what a rollout applies).
    Manifests {
        #[command(subcommand)]
        command: Box<ManifestsCommand>,
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
    /// Manage api tokens (admin): `create`, `list`, `revoke`.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Prepare a model image's build context from an archive (the first step of a
    /// Kubernetes build Job): unpack, check, smoke-test, write the Dockerfile.
    Context(ContextArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token; it is printed once, alone on the last line.
    Create {
        /// What it may do: viewer, deployer or admin.
        #[arg(long)]
        role: Role,
        /// Its name (default: the role and the time).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the tokens that are not revoked.
    List,
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// How client commands reach the api server.
#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The api server.
    #[arg(
        long,
        global = true,
        env = "SO1S_SERVER",
        default_value = "http://127.0.0.1:8000"
    )]
    server: String,
    /// The api token (default: `<data-dir>/admin.token`, when that file exists).
    #[arg(long, global = true, env = "SO1S_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The data directory of a local `so1s serve`, to find its admin token.
    #[arg(
        long,
        global = true,
        env = "SO1S_DATA_DIR",
        default_value = "so1s-data"
    )]
    data_dir: PathBuf,
}

impl ClientArgs {
    fn client(&self) -> anyhow::Result<ApiClient> {
        let token = match &self.token {
            Some(token) => Some(Token::new(token.clone())),
            None => {
                let path = so1s_core::auth::admin_token_path(&self.data_dir);
                match std::fs::read_to_string(&path) {
                    Ok(secret) => Some(Token::new(secret)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
        };
        Ok(ApiClient::new(&self.server, token))
    }
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
    /// Require a token (any role) on `/inference/...` too; by default predictions are open
    /// and only the management api (`/v1`) needs one. The admin token can also come from
    /// `SO1S_ADMIN_TOKEN` (environment only).
    #[arg(long, env = "SO1S_INFERENCE_AUTH")]
    inference_auth: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

/// The api server's bounds.
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Builds that run at once; later uploads wait their turn (default: one per 4 cores,
    /// at least one).
    #[arg(long, env = "SO1S_MAX_CONCURRENT_BUILDS", default_value_t = so1s_core::platform::default_concurrent_builds())]
    max_concurrent_builds: usize,
    /// Address-space limit (MiB) of each build's smoke test, which runs in its own
    /// process: a model that needs more fails its build, not the api server.
    #[arg(long, env = "SO1S_BUILD_MEMORY_MIB", default_value_t = 4096)]
    build_memory_mib: u64,
    /// Seconds a client may take to send a request's head; then the connection closes.
    #[arg(long, env = "SO1S_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    header_read_timeout_secs: u64,
    /// Largest request head in bytes (larger: 431).
    #[arg(long, env = "SO1S_MAX_HEADER_BYTES", default_value_t = 64 << 10)]
    max_header_bytes: usize,
    /// Seconds a request body (an upload, a prediction) may pause before it is dropped.
    #[arg(long, env = "SO1S_BODY_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    body_idle_timeout_secs: u64,
    /// Bytes a multipart upload may spend before its `model` part (preamble, part
    /// headers, other fields).
    #[arg(long, env = "SO1S_MAX_MULTIPART_HEAD_BYTES", default_value_t = 1 << 20)]
    max_multipart_head_bytes: u64,
    /// Parts a multipart upload may have up to its `model` part.
    #[arg(long, env = "SO1S_MAX_MULTIPART_PARTS", default_value_t = 8)]
    max_multipart_parts: usize,
    /// Milliseconds the gateway waits to connect to a predict server.
    #[arg(long, env = "SO1S_GATEWAY_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    gateway_connect_timeout_ms: u64,
    /// Seconds the gateway waits for a predict server's answer; then 504.
    #[arg(long, env = "SO1S_GATEWAY_TIMEOUT_SECS", default_value_t = 30)]
    gateway_timeout_secs: u64,
    /// Event streams open at once per version (more: 429).
    #[arg(long, env = "SO1S_MAX_EVENT_SUBSCRIBERS", default_value_t = 16)]
    max_event_subscribers: usize,
}

impl LimitArgs {
    /// Each build's smoke test: a child `so1s-predict` under the memory limit.
    fn smoke_test(&self, predict_bin: &std::path::Path) -> SmokeTest {
        let mut smoke = SmokeProcess::new(predict_bin);
        smoke.memory_limit_mib = self.build_memory_mib;
        SmokeTest::Child(smoke)
    }

    fn api_limits(&self) -> ApiLimits {
        ApiLimits {
            connection: ConnectionLimits {
                header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
                max_head_bytes: self.max_header_bytes,
            },
            multipart: MultipartLimits {
                max_head_bytes: self.max_multipart_head_bytes,
                max_parts: self.max_multipart_parts,
            },
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_secs),
            gateway: GatewayTimeouts {
                connect: Duration::from_millis(self.gateway_connect_timeout_ms),
                response: Duration::from_secs(self.gateway_timeout_secs),
            },
            max_event_subscribers: self.max_event_subscribers,
        }
    }
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
    let result = run(Cli::parse().command).await;
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(|cause| {
                matches!(
                    cause.downcast_ref::<so1s_core::Error>(),
                    Some(so1s_core::Error::Unreachable(_))
                )
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
    // Held until the process ends: a second `so1s serve` on this data dir is refused.
    let _lock =
        so1s_core::lock::DataDirLock::acquire(data).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let store = FsModelStore::open(data.join("store"), args.max_upload_bytes)
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    let registry = Registry::open(data.join("so1s.db")).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let routes = Routes::default();
    let (builder, rollout): (Arc<dyn ImageBuilder>, Arc<dyn Rollout>) = match args.backend {
        Backend::Local => {
            let mut rollout = ProcessRolloutConfig::new(predict_bin.clone());
            rollout.threads = args.predict_threads;
            let smoke = args.limits.smoke_test(&predict_bin);
            (
                Arc::new(BundleBuilder::new(data.join("bundles")).with_smoke_test(smoke)),
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
        PlatformOptions {
            default_model,
            max_concurrent_builds: args.limits.max_concurrent_builds,
        },
    );
    let tokens = api_tokens(data)?;
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    platform.recover().await;
    let config = ApiConfig {
        tokens,
        inference_auth: args.inference_auth,
        limits: args.limits.api_limits(),
    };
    so1s_core::http::api::run(
        listener,
        platform.clone(),
        config,
        so1s_bin::shutdown_signal(),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.chain()))?;
    platform.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The api tokens: those stored in `<data-dir>/so1s.db`, and `SO1S_ADMIN_TOKEN`. With
/// neither, the first start writes an admin token to `<data-dir>/admin.token`.
fn api_tokens(data: &std::path::Path) -> anyhow::Result<Arc<Tokens>> {
    let store = TokenStore::open(&data.join("so1s.db")).map_err(|e| anyhow::anyhow!(e.chain()))?;
    let env_admin = std::env::var("SO1S_ADMIN_TOKEN").ok().map(Token::new);
    let tokens = Tokens::new(store, env_admin);
    if let Some(path) = tokens
        .bootstrap(data)
        .map_err(|e| anyhow::anyhow!(e.chain()))?
    {
        tracing::info!(
            "no api token existed: an admin token was written to {} (readable by this user \
             only); `so1s token create` makes more",
            path.display()
        );
    }
    Ok(Arc::new(tokens))
}

/// Runs one command; an error is reported by `main` with its exit code.
async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(args) => {
            so1s_bin::init_tracing();
            serve(*args).await
        }
        Command::Deploy { path, name, client } => deploy(&client.client()?, &path, &name).await,
        Command::Status { name, client } => {
            let client = client.client()?;
            match name {
                Some(name) => print_answer(client.model(&name).await),
                None => print_answer(client.models().await),
            }
        }
        Command::Predict { name, text, client } => {
            print_answer(client.client()?.predict(&name, &text).await)
        }
        Command::Rollback { name, client } => print_answer(client.client()?.rollback(&name).await),
        Command::Promote {
            name,
            version,
            client,
        } => print_answer(client.client()?.promote(&name, &version).await),
        Command::Token { command, client } => token(&client.client()?, command).await,
        Command::Manifests { command } => print_manifests(&command).map(|yaml| {
            print!("{yaml}");
            ExitCode::SUCCESS
        }),
        Command::Context(args) => write_context(&args).await.map(|()| ExitCode::SUCCESS),
        Command::Image { tag, push } => build_so1s_image(&tag, push).await,
    }
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
    build.smoke = args.limits.smoke_test(&predict_bin);
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

/// Prints an answer's JSON; an error answer is a failure (exit 1, or 3 when unreachable).
fn print_answer(answer: so1s_core::Result<serde_json::Value>) -> anyhow::Result<ExitCode> {
    let value = answer?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

async fn token(client: &ApiClient, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { role, name } => {
            let name =
                name.unwrap_or_else(|| format!("{role}-{}", so1s_core::clock::now_ms() / 1000));
            let created = client.create_token(&name, role).await?;
            eprintln!("created the {role} token `{name}`; it is shown this once:");
            println!("{}", created["token"].as_str().unwrap_or_default());
        }
        TokenCommand::List => {
            let listed = client.tokens().await?;
            println!("{:<32} {:<9} {:<24} LAST USED", "NAME", "ROLE", "CREATED");
            for token in listed["tokens"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<9} {:<24} {}",
                    token["name"].as_str().unwrap_or("?"),
                    token["role"].as_str().unwrap_or("?"),
                    time_text(&token["created_at_ms"]),
                    time_text(&token["last_used_at_ms"]),
                );
            }
        }
        TokenCommand::Revoke { name } => {
            client.revoke_token(&name).await?;
            println!("revoked `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`, or `never`.
fn time_text(ms: &serde_json::Value) -> String {
    ms.as_i64()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

async fn deploy(
    client: &ApiClient,
    path: &std::path::Path,
    name: &str,
) -> anyhow::Result<ExitCode> {
    let body = if path.is_dir() {
        eprintln!("packing {}", path.display());
        so1s_core::build::archive::pack_dir(path).map_err(|e| anyhow::anyhow!(e.chain()))?
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    eprintln!("uploading {} bytes as {name}", body.len());
    let answer = match client.upload(name, body).await {
        Ok(answer) => answer,
        Err(so1s_core::Error::Remote {
            status, message, ..
        }) => {
            eprintln!("upload refused ({status}): {message}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let version = answer["version"].as_str().unwrap_or("?").to_owned();
    eprintln!("stored {name} {version}; following its build and rollout");
    client
        .follow_events(name, &version, |event| {
            let stage = serde_json::to_value(event.stage).unwrap_or_default();
            eprintln!("[{}] {}", stage.as_str().unwrap_or(""), event.message);
        })
        .await?;
    let record = client.version(name, &version).await?;
    let state = record["state"].as_str().unwrap_or("unknown");
    let server = client.base();
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
