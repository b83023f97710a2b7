//! The flags of `so1s serve`, turned into a [`ServeConfig`].

use anyhow::Context;
use so1s_core::auth::Token;
use so1s_core::http::api::{ApiLimits, GatewayTimeouts, MultipartLimits};
use so1s_core::http::serve::ConnectionLimits;
use so1s_core::rollout::AnswerTimeout;
use so1s_core::server::{Backend, ServeConfig};
use so1s_core::ModelName;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// `so1s serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SO1S_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port, printed on stdout).
    #[arg(long, env = "SO1S_PORT", default_value_t = 8000)]
    pub port: u16,
    /// Where models, builds and the registry live.
    #[arg(long, env = "SO1S_DATA_DIR", default_value = "so1s-data")]
    pub data_dir: PathBuf,
    /// This installation's instance id: Docker images (`so1s/<instance>/<model>:<version>`)
    /// and containers are named and labelled with it, so installations sharing an engine keep
    /// apart (default: the one kept in the data dir, made from its name on the first start).
    #[arg(long, env = "SO1S_INSTANCE")]
    pub instance: Option<String>,
    /// Where versions run: `local` (a so1s-predict process per version), `docker` (an
    /// image per version, a container per live version) or `kubernetes` (a build Job per
    /// version, a Deployment + Service + Ingress per model).
    #[arg(long, env = "SO1S_BACKEND", value_enum, default_value_t = BackendArg::Local)]
    pub backend: BackendArg,
    /// The so1s-predict executable (default: next to this one).
    #[arg(long, env = "SO1S_PREDICT_BIN")]
    pub predict_bin: Option<PathBuf>,
    /// The docker backend's settings.
    #[cfg(feature = "docker")]
    #[command(flatten)]
    pub docker: DockerArgs,
    /// Where models run in a cluster.
    #[cfg(feature = "kubernetes")]
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
    /// How the cluster builds images.
    #[cfg(feature = "kubernetes")]
    #[command(flatten)]
    pub build: crate::cluster::BuildArgs,
    /// Push model images under this repository prefix (e.g. `registry.example.com/team`);
    /// required on Kubernetes.
    #[arg(long, env = "SO1S_PUSH_TO")]
    pub push_to: Option<String>,
    /// libtorch threads of each predict server.
    #[arg(long, env = "SO1S_PREDICT_THREADS")]
    pub predict_threads: Option<usize>,
    /// The model `/inference/predict` serves (default: the first to go live).
    #[arg(long, env = "SO1S_DEFAULT_MODEL")]
    pub default_model: Option<String>,
    /// Largest upload in bytes.
    #[arg(long, env = "SO1S_MAX_UPLOAD_BYTES", default_value_t = 4 << 30)]
    pub max_upload_bytes: u64,
    /// Require a token (any role) on `/inference/...` too; by default predictions are open
    /// and only the management api (`/v1`) needs one. The admin token can also come from
    /// `SO1S_ADMIN_TOKEN` (environment only).
    #[arg(long, env = "SO1S_INFERENCE_AUTH")]
    pub inference_auth: bool,
    /// Do not serve the dashboard at `/` (it is on by default: a page over the same `/v1`
    /// api and tokens).
    #[arg(long, env = "SO1S_NO_DASHBOARD")]
    pub no_dashboard: bool,
    /// The api server's bounds.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Where versions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// A so1s-predict process per version.
    Local,
    /// An image per version, a container per live version.
    #[cfg(feature = "docker")]
    Docker,
    /// A build Job per version, a Deployment + Service + Ingress per model.
    #[cfg(feature = "kubernetes")]
    Kubernetes,
}

impl ServeArgs {
    /// The address to listen on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// The library's configuration; the admin token of the environment
    /// (`SO1S_ADMIN_TOKEN`) and registry credentials are read here.
    pub fn config(&self) -> anyhow::Result<ServeConfig> {
        let default_model = self
            .default_model
            .as_deref()
            .map(ModelName::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--default-model: {}", e.chain()))?;
        let backend = match self.backend {
            BackendArg::Local => Backend::Local,
            #[cfg(feature = "docker")]
            BackendArg::Docker => Backend::Docker(self.docker.backend(self.push_to.clone())?),
            #[cfg(feature = "kubernetes")]
            BackendArg::Kubernetes => Backend::Kubernetes(Box::new(
                self.build.backend(&self.cluster, self.push_to.as_deref())?,
            )),
        };
        let mut config = ServeConfig::new(&self.data_dir, backend);
        config.instance = self
            .instance
            .as_deref()
            .map(ModelName::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--instance: {}", e.chain()))?;
        config.predict_bin = self.predict_bin.clone();
        config.predict_threads = self.predict_threads;
        config.default_model = default_model;
        config.max_upload_bytes = self.max_upload_bytes;
        config.max_concurrent_builds = self.limits.max_concurrent_builds;
        config.max_queued_builds = self.limits.max_queued_builds;
        config.store_quota_bytes = self.limits.store_quota_bytes;
        config.retention = so1s_core::platform::Retention {
            keep: self.limits.keep_versions,
            prune_archives: self.limits.prune_archives,
        };
        config.scale.wake_queue = self.limits.wake_queue;
        config.scale.wake_timeout = Duration::from_secs(self.limits.wake_timeout_secs);
        config.build_memory_mib = self.limits.build_memory_mib;
        config.inference_auth = self.inference_auth;
        config.dashboard = !self.no_dashboard;
        config.admin_token = std::env::var("SO1S_ADMIN_TOKEN").ok().map(Token::new);
        config.limits = self.limits.api_limits();
        Ok(config)
    }
}

/// The api server's bounds.
#[derive(Debug, clap::Args)]
pub struct LimitArgs {
    /// Builds that run at once; later uploads wait their turn (default: one per 4 cores,
    /// at least one).
    #[arg(long, env = "SO1S_MAX_CONCURRENT_BUILDS", default_value_t = so1s_core::platform::default_concurrent_builds())]
    pub max_concurrent_builds: usize,
    /// Uploads that may wait for a build slot; past them an upload gets 429 with
    /// Retry-After, before anything is stored.
    #[arg(long, env = "SO1S_MAX_QUEUED_BUILDS", default_value_t = 16)]
    pub max_queued_builds: usize,
    /// The most the stored archives may take together, in bytes; an upload past it gets
    /// 507 (default: no quota).
    #[arg(long, env = "SO1S_STORE_QUOTA_BYTES")]
    pub store_quota_bytes: Option<u64>,
    /// Versions of each model that no longer serve (retired, superseded) that keep their
    /// unpacked bundle or image, newest first; older ones lose it.
    #[arg(long, env = "SO1S_KEEP_VERSIONS", default_value_t = 5)]
    pub keep_versions: usize,
    /// The versions past --keep-versions lose their uploaded archive too.
    #[arg(long, env = "SO1S_PRUNE_ARCHIVES")]
    pub prune_archives: bool,
    /// Address-space limit (MiB) of each build's smoke test, which runs in its own
    /// process: a model that needs more fails its build, not the api server.
    #[arg(long, env = "SO1S_BUILD_MEMORY_MIB", default_value_t = 4096)]
    pub build_memory_mib: u64,
    /// Seconds a client may take to send a request's head; then the connection closes.
    #[arg(long, env = "SO1S_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,
    /// Largest request head in bytes (larger: 431).
    #[arg(long, env = "SO1S_MAX_HEADER_BYTES", default_value_t = 64 << 10)]
    pub max_header_bytes: usize,
    /// Seconds a request body (an upload, a prediction) may pause before it is dropped.
    #[arg(long, env = "SO1S_BODY_IDLE_TIMEOUT_SECS", default_value_t = 30)]
    pub body_idle_timeout_secs: u64,
    /// Bytes a multipart upload may spend before its `model` part (preamble, part
    /// headers, other fields).
    #[arg(long, env = "SO1S_MAX_MULTIPART_HEAD_BYTES", default_value_t = 1 << 20)]
    pub max_multipart_head_bytes: u64,
    /// Parts a multipart upload may have up to its `model` part.
    #[arg(long, env = "SO1S_MAX_MULTIPART_PARTS", default_value_t = 8)]
    pub max_multipart_parts: usize,
    /// Milliseconds the gateway waits to connect to a predict server.
    #[arg(long, env = "SO1S_GATEWAY_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    pub gateway_connect_timeout_ms: u64,
    /// Longest wait (seconds) of the gateway for a predict server's answer; then 504. Once a
    /// model's p99 is known, its requests wait that plus --gateway-timeout-slack-ms, if less.
    #[arg(long, env = "SO1S_GATEWAY_TIMEOUT_SECS", default_value_t = 30)]
    pub gateway_timeout_secs: u64,
    /// Milliseconds above a model's recent p99 its answers may take before they time out.
    #[arg(long, env = "SO1S_GATEWAY_TIMEOUT_SLACK_MS", default_value_t = 5000)]
    pub gateway_timeout_slack_ms: u64,
    /// Timeouts or server errors in a row after which the gateway has a predict server
    /// started again (its requests wait for it meanwhile).
    #[arg(long, env = "SO1S_GATEWAY_MAX_FAILURES", default_value_t = 3)]
    pub gateway_max_failures: u32,
    /// Event streams open at once per version (more: 429).
    #[arg(long, env = "SO1S_MAX_EVENT_SUBSCRIBERS", default_value_t = 16)]
    pub max_event_subscribers: usize,
    /// Requests the gateway holds per model while it wakes from zero or its predict server
    /// is started again (more: 503 with Retry-After).
    #[arg(long, env = "SO1S_WAKE_QUEUE", default_value_t = 1024)]
    pub wake_queue: usize,
    /// Seconds the gateway holds a request while its model wakes from zero or its predict
    /// server is started again; then 503 with Retry-After.
    #[arg(long, env = "SO1S_WAKE_TIMEOUT_SECS", default_value_t = 60)]
    pub wake_timeout_secs: u64,
}

impl LimitArgs {
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
                answer: AnswerTimeout {
                    slack: Duration::from_millis(self.gateway_timeout_slack_ms),
                    ceiling: Duration::from_secs(self.gateway_timeout_secs),
                },
                max_failures: self.gateway_max_failures.max(1),
            },
            max_event_subscribers: self.max_event_subscribers,
        }
    }
}

/// Settings of the docker backend. The engine is the one `DOCKER_HOST` names (default: the
/// local socket). Registry credentials come from `SO1S_REGISTRY_USERNAME` and
/// `SO1S_REGISTRY_PASSWORD` only, never from flags.
#[cfg(feature = "docker")]
#[derive(Debug, clap::Args)]
pub struct DockerArgs {
    /// Memory limit of each version's container, in MiB.
    #[arg(long, env = "SO1S_MEMORY_MIB", default_value_t = 4096)]
    pub memory_mib: i64,
    /// CPU limit of each version's container, in cores (default: none).
    #[arg(long, env = "SO1S_CPUS")]
    pub cpus: Option<f64>,
    /// Base of the runtime image: `scratch` (nothing to pull) or an image of your own.
    #[arg(long, env = "SO1S_BASE_IMAGE", default_value = "scratch")]
    pub base_image: String,
    /// Run containers on this Docker network and reach them by name (when so1s itself runs
    /// in a container on it); default: publish each on a free loopback port.
    #[arg(long, env = "SO1S_DOCKER_NETWORK")]
    pub docker_network: Option<String>,
}

#[cfg(feature = "docker")]
impl DockerArgs {
    fn backend(&self, push_to: Option<String>) -> anyhow::Result<so1s_core::server::DockerBackend> {
        let mut backend = so1s_core::server::DockerBackend::new();
        backend.memory_mib = self.memory_mib;
        backend.cpus = self.cpus;
        backend.base_image = self.base_image.clone();
        backend.push_to = push_to;
        backend.network = self.docker_network.clone();
        backend.registry_auth = registry_auth();
        Ok(backend)
    }
}

/// Registry credentials from the environment only.
#[cfg(feature = "docker")]
pub fn registry_auth() -> Option<so1s_core::build::RegistryAuth> {
    match (
        std::env::var("SO1S_REGISTRY_USERNAME"),
        std::env::var("SO1S_REGISTRY_PASSWORD"),
    ) {
        (Ok(username), Ok(password)) => Some(so1s_core::build::RegistryAuth { username, password }),
        _ => None,
    }
}

/// Runs `so1s serve` until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing::info!(?args, "starting so1s");
    let server = args
        .config()?
        .start()
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))?;
    let addr = args.addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    server
        .run(listener, crate::shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))
}
