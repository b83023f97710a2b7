//! `so1s serve` as a library: [`ServeConfig`] says where the data lives, which backend
//! builds and runs versions and the api server's bounds; [`ServeConfig::start`] opens the
//! data directory and wires store, registry, builder, rollout and tokens into a
//! [`Platform`]; [`Server::run`] serves the api and gateway until shutdown.
//!
//! ```no_run
//! # async fn example() -> so1s_core::Result<()> {
//! use so1s_core::server::{Backend, ServeConfig};
//! let server = ServeConfig::new("so1s-data", Backend::Local).start().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await.unwrap();
//! server.run(listener, std::future::pending()).await
//! # }
//! ```

#[cfg(feature = "docker")]
mod docker;
pub mod instance;
#[cfg(feature = "kubernetes")]
mod kubernetes;

#[cfg(feature = "docker")]
pub use docker::DockerBackend;
#[cfg(feature = "kubernetes")]
pub use kubernetes::KubeBackend;

use crate::auth::{Token, TokenStore, Tokens};
use crate::build::{BundleBuilder, ImageBuilder, SmokeProcess, SmokeTest};
use crate::http::api::{ApiConfig, ApiLimits};
use crate::lock::DataDirLock;
use crate::model::ModelName;
use crate::platform::{Platform, PlatformOptions};
use crate::registry::Registry;
use crate::rollout::{ProcessRollout, ProcessRolloutConfig, Rollout, Routes};
use crate::store::FsModelStore;
use crate::{Error, Result};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Where versions are built and run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// The embedded default: a bundle folder per version, a `so1s-predict` child per live
    /// version.
    Local,
    /// An image per version, a container per live version (feature `docker`).
    #[cfg(feature = "docker")]
    Docker(DockerBackend),
    /// A build Job per version, a Deployment + Service + Ingress per model (feature
    /// `kubernetes`).
    #[cfg(feature = "kubernetes")]
    Kubernetes(Box<KubeBackend>),
}

/// Everything `so1s serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where models, builds, the registry and the tokens live.
    pub data_dir: PathBuf,
    /// The installation's instance id: Docker images and containers are named with it, so
    /// installations sharing an engine keep apart. Default: the one kept in the data
    /// directory, made on its first start ([`instance::resolve`]).
    pub instance: Option<ModelName>,
    /// Where versions are built and run.
    pub backend: Backend,
    /// The `so1s-predict` executable: the local backend's children, the Docker runtime
    /// image and every build's smoke test (default: next to the running executable).
    pub predict_bin: Option<PathBuf>,
    /// libtorch threads of each predict server.
    pub predict_threads: Option<usize>,
    /// The model `/inference/predict` serves (default: the first to go live).
    pub default_model: Option<ModelName>,
    /// Largest upload in bytes.
    pub max_upload_bytes: u64,
    /// Builds that run at once; later uploads wait their turn.
    pub max_concurrent_builds: usize,
    /// Uploads that may wait for a build slot (more: `429`).
    pub max_queued_builds: usize,
    /// The most the stored archives may take together (more: `507`); none by default.
    pub store_quota_bytes: Option<u64>,
    /// What is kept of versions that no longer serve.
    pub retention: crate::platform::Retention,
    /// How idle models are scaled to zero and woken.
    pub scale: crate::platform::ScaleOptions,
    /// Address-space limit (MiB) of each build's smoke-test process.
    pub build_memory_mib: u64,
    /// Whether `/inference/...` needs a token too.
    pub inference_auth: bool,
    /// An admin token from the environment (`SO1S_ADMIN_TOKEN`), beside the stored ones.
    pub admin_token: Option<Token>,
    /// The api server's bounds.
    pub limits: ApiLimits,
    /// Whether `/` serves the dashboard.
    pub dashboard: bool,
}

impl ServeConfig {
    /// The defaults of `so1s serve` for `data_dir` and `backend`.
    pub fn new(data_dir: impl Into<PathBuf>, backend: Backend) -> Self {
        Self {
            data_dir: data_dir.into(),
            instance: None,
            backend,
            predict_bin: None,
            predict_threads: None,
            default_model: None,
            max_upload_bytes: 4 << 30,
            max_concurrent_builds: crate::platform::default_concurrent_builds(),
            max_queued_builds: PlatformOptions::default().max_queued_builds,
            store_quota_bytes: None,
            retention: Default::default(),
            scale: Default::default(),
            build_memory_mib: 4096,
            inference_auth: false,
            admin_token: None,
            limits: ApiLimits::default(),
            dashboard: true,
        }
    }

    /// Opens the data directory (taking its lock: one server per directory), the store,
    /// the registry and the tokens, and connects the backend. Nothing is served yet.
    pub async fn start(self) -> Result<Server> {
        let data = &self.data_dir;
        let lock = DataDirLock::acquire(data)?;
        let instance = instance::resolve(data, self.instance.clone())?;
        let mut store = FsModelStore::open(data.join("store"), self.max_upload_bytes).await?;
        if let Some(quota) = self.store_quota_bytes {
            store = store.with_quota(quota);
        }
        let registry = Registry::open(data.join("so1s.db"))?;
        let routes = Routes::default();
        let (builder, rollout) = self.backend_parts(&routes, &instance).await?;
        let platform = Platform::new(
            Arc::new(store),
            builder,
            rollout,
            registry,
            routes,
            PlatformOptions {
                default_model: self.default_model.clone(),
                max_concurrent_builds: self.max_concurrent_builds,
                max_queued_builds: self.max_queued_builds,
                scale: self.scale,
                retention: self.retention,
            },
        );
        let tokens = self.tokens()?;
        Ok(Server {
            platform,
            api: ApiConfig {
                tokens,
                inference_auth: self.inference_auth,
                limits: self.limits,
                dashboard: self.dashboard,
            },
            _lock: lock,
        })
    }

    /// The builder and rollout of the configured backend.
    async fn backend_parts(
        &self,
        routes: &Routes,
        instance: &ModelName,
    ) -> Result<(Arc<dyn ImageBuilder>, Arc<dyn Rollout>)> {
        match &self.backend {
            Backend::Local => {
                let predict_bin = self.predict_bin()?;
                let mut rollout = ProcessRolloutConfig::new(predict_bin.clone());
                rollout.threads = self.predict_threads;
                let bundles = BundleBuilder::new(
                    self.data_dir.join("bundles"),
                    self.smoke_test(&predict_bin),
                );
                Ok((
                    Arc::new(bundles),
                    Arc::new(ProcessRollout::new(rollout, routes.clone())),
                ))
            }
            #[cfg(feature = "docker")]
            Backend::Docker(docker) => docker.parts(self, routes, instance).await,
            #[cfg(feature = "kubernetes")]
            Backend::Kubernetes(kube) => kube.parts(self, routes).await,
        }
    }

    /// The `so1s-predict` executable, which must exist.
    fn predict_bin(&self) -> Result<PathBuf> {
        let path = match &self.predict_bin {
            Some(path) => path.clone(),
            None => next_to_this_executable("so1s-predict")?,
        };
        if !path.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} not found: build it (it needs the `inference` feature) or pass --predict-bin",
                path.display()
            )));
        }
        Ok(path)
    }

    /// Each build's smoke test: a child `so1s-predict` under the memory limit.
    fn smoke_test(&self, predict_bin: &Path) -> SmokeTest {
        let mut smoke = SmokeProcess::new(predict_bin);
        smoke.memory_limit_mib = self.build_memory_mib;
        SmokeTest::Child(smoke)
    }

    /// The stored tokens and the environment's admin token. With neither, the first start
    /// writes an admin token to `<data-dir>/admin.token`.
    fn tokens(&self) -> Result<Arc<Tokens>> {
        let store = TokenStore::open(&self.data_dir.join("so1s.db"))?;
        let tokens = Tokens::new(store, self.admin_token.clone());
        if let Some(path) = tokens.bootstrap(&self.data_dir)? {
            tracing::info!(
                "no api token existed: an admin token was written to {} (readable by this \
                 user only); `so1s token create` makes more",
                path.display()
            );
        }
        Ok(Arc::new(tokens))
    }
}

/// A file next to the running executable (`so1s-predict` next to `so1s`).
pub fn next_to_this_executable(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|source| Error::Io {
        context: "locating the running executable".into(),
        source,
    })?;
    Ok(exe.parent().unwrap_or(Path::new("/")).join(name))
}

/// A started api server: the platform and the api's configuration, holding the data
/// directory's lock until dropped.
pub struct Server {
    platform: Arc<Platform>,
    api: ApiConfig,
    _lock: DataDirLock,
}

impl Server {
    /// The platform (uploads, rollouts, the registry).
    pub fn platform(&self) -> &Arc<Platform> {
        &self.platform
    }

    /// Recovers what a previous run left (see [`Platform::recover`]), then serves the api
    /// and gateway on `listener` until `shutdown` resolves, and stops the platform.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        self.platform.recover().await;
        crate::http::api::run(listener, self.platform.clone(), self.api, shutdown).await?;
        self.platform.shutdown().await;
        Ok(())
    }
}
