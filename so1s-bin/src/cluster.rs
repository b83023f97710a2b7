//! The Kubernetes side of the `so1s` command: its flags, `so1s manifests`, `so1s context`
//! (the build Job's first step) and the flags of `so1s serve --backend kubernetes`.

use anyhow::Context;
use so1s_core::auth::Token;
use so1s_core::build::{JobContext, SmokeTest};
use so1s_core::events::{Events, Stage};
use so1s_core::kubernetes::manifests::{
    self, AdminTokenSecret, Autoscale, BuildMode, BuildSettings, ClusterSettings, InstallSettings,
    Resources, ADMIN_TOKEN_SECRET,
};
use so1s_core::server::KubeBackend;
use so1s_core::{ModelName, VersionId};
use std::path::PathBuf;
use std::time::Duration;

use crate::DEFAULT_SO1S_IMAGE;

/// Where models run in the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Namespace of everything so1s creates.
    #[arg(long, env = "SO1S_NAMESPACE", default_value = "so1s")]
    pub namespace: String,
    /// Ingress class of the models' Ingresses.
    #[arg(long, env = "SO1S_INGRESS_CLASS", default_value = "nginx")]
    pub ingress_class: String,
    /// Host the Ingresses answer for (any when unset).
    #[arg(long, env = "SO1S_INGRESS_HOST")]
    pub ingress_host: Option<String>,
    /// Predict server replicas per model.
    #[arg(long, env = "SO1S_REPLICAS", default_value_t = 1)]
    pub replicas: i32,
    /// CPU request of each predict server.
    #[arg(long, env = "SO1S_CPU_REQUEST", default_value = "1")]
    pub cpu_request: String,
    /// Memory request of each predict server.
    #[arg(long, env = "SO1S_MEMORY_REQUEST", default_value = "1Gi")]
    pub memory_request: String,
    /// Memory limit of each predict server.
    #[arg(long, env = "SO1S_MEMORY_LIMIT", default_value = "2Gi")]
    pub memory_limit: String,
    /// CPU limit of each predict server (none by default).
    #[arg(long, env = "SO1S_CPU_LIMIT")]
    pub cpu_limit: Option<String>,
    /// Seconds a rollout may take before Kubernetes reports it failed.
    #[arg(long, env = "SO1S_PROGRESS_DEADLINE", default_value_t = 180)]
    pub progress_deadline_secs: u64,
    /// Scale each model's Deployment with a HorizontalPodAutoscaler: `MIN:MAX[:CPU%]`
    /// replicas, aiming at CPU% (default 70) of the CPU request; replaces `--replicas`.
    #[arg(long, env = "SO1S_AUTOSCALE", value_parser = parse_autoscale)]
    pub autoscale: Option<Autoscale>,
}

fn parse_autoscale(text: &str) -> Result<Autoscale, String> {
    Autoscale::parse(text).map_err(|e| e.to_string())
}

impl ClusterArgs {
    /// The settings the manifest builders take.
    pub fn settings(
        &self,
        default_model: Option<ModelName>,
        threads: Option<usize>,
    ) -> ClusterSettings {
        ClusterSettings {
            namespace: self.namespace.clone(),
            ingress_class: self.ingress_class.clone(),
            ingress_host: self.ingress_host.clone(),
            default_model,
            replicas: self.replicas,
            resources: Resources {
                cpu_request: self.cpu_request.clone(),
                memory_request: self.memory_request.clone(),
                cpu_limit: self.cpu_limit.clone(),
                memory_limit: self.memory_limit.clone(),
            },
            threads,
            progress_deadline: Duration::from_secs(self.progress_deadline_secs),
            image_pull_secret: None,
            autoscale: self.autoscale,
        }
    }
}

/// How images are built in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuildModeArg {
    /// Kaniko in the Job: no daemon, no privileged socket.
    Kaniko,
    /// The seed's way: the node's Docker socket mounted into the Job.
    DockerSocket,
}

impl From<BuildModeArg> for BuildMode {
    fn from(mode: BuildModeArg) -> Self {
        match mode {
            BuildModeArg::Kaniko => BuildMode::Kaniko,
            BuildModeArg::DockerSocket => BuildMode::DockerSocket,
        }
    }
}

/// How the Kubernetes backend builds images.
#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// The so1s image: the api server, the build Job's first step, the model images' base.
    #[arg(long, env = "SO1S_IMAGE", default_value = DEFAULT_SO1S_IMAGE)]
    pub so1s_image: String,
    /// How build Jobs build images.
    #[arg(long, env = "SO1S_BUILD_MODE", value_enum, default_value_t = BuildModeArg::Kaniko)]
    pub build_mode: BuildModeArg,
    /// The PersistentVolumeClaim holding the model store.
    #[arg(long, env = "SO1S_STORE_CLAIM", default_value = "so1s-store")]
    pub store_claim: String,
    /// Secret (type kubernetes.io/dockerconfigjson) the build Job pushes with.
    #[arg(long, env = "SO1S_PUSH_SECRET")]
    pub push_secret: Option<String>,
}

/// `so1s manifests ...`
#[derive(Debug, clap::Subcommand)]
pub enum ManifestsCommand {
    /// Print the objects that install so1s into a cluster (apply with `kubectl apply -f -`).
    Install {
        /// Where models run.
        #[command(flatten)]
        cluster: ClusterArgs,
        /// The so1s image.
        #[arg(long, default_value = DEFAULT_SO1S_IMAGE)]
        image: String,
        /// Run the api server from this image instead (the api-server-only image, `so1s
        /// image --api-server-only`); build Jobs keep `--image`.
        #[arg(long)]
        api_server_image: Option<String>,
        /// Size of the model store's volume.
        #[arg(long, default_value = "20Gi")]
        store_size: String,
        /// Storage class of the store (the cluster's default when unset).
        #[arg(long)]
        storage_class: Option<String>,
        /// Access mode of the store (build Jobs mount it too: ReadWriteMany lets them run on
        /// any node).
        #[arg(long, default_value = "ReadWriteOnce")]
        access_mode: String,
        /// The registry prefix model images are pushed under.
        #[arg(long, default_value = "registry.example.com/so1s")]
        push_to: String,
        /// How build Jobs build images.
        #[arg(long, value_enum, default_value_t = BuildModeArg::Kaniko)]
        build_mode: BuildModeArg,
        /// Use this existing Secret (key `token`) as the admin token; by default a Secret
        /// `so1s-admin-token` with a new random token is printed with the objects.
        #[arg(long)]
        admin_token_secret: Option<String>,
        /// The ingress controller's namespace: with so1s's own, the only one the
        /// NetworkPolicy lets reach the api server.
        #[arg(long, default_value = "ingress-nginx")]
        ingress_namespace: String,
    },
    /// Print exactly what a rollout applies for a model: Deployment, Service, Ingress.
    Model {
        /// The model's name.
        name: String,
        /// The model image.
        #[arg(long)]
        image: String,
        /// The version the image holds.
        #[arg(long, default_value = "v1")]
        model_version: String,
        /// Also route the seed's `/inference/predict` to this model.
        #[arg(long)]
        default: bool,
        /// A split: the image of a second version, run as the canary beside the first.
        #[arg(long, requires = "canary_version")]
        canary_image: Option<String>,
        /// The version the canary image holds.
        #[arg(long, requires = "canary_image")]
        canary_version: Option<String>,
        /// The canary's percent of the requests.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
        canary_weight: u32,
        /// Where the model runs.
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Prints the objects `command` asks for as multi-document YAML.
pub fn print_manifests(command: &ManifestsCommand) -> anyhow::Result<String> {
    let objects = match command {
        ManifestsCommand::Install {
            cluster,
            image,
            api_server_image,
            store_size,
            storage_class,
            access_mode,
            push_to,
            build_mode,
            admin_token_secret,
            ingress_namespace,
        } => {
            let mut install = InstallSettings::new(image);
            install.api_server_image = api_server_image.clone();
            install.admin_token = match admin_token_secret {
                Some(name) => AdminTokenSecret::Existing(name.clone()),
                None => {
                    let token = Token::generate().map_err(|e| anyhow::anyhow!(e.chain()))?;
                    eprintln!(
                        "a new admin token is in the Secret {ADMIN_TOKEN_SECRET}: read it back with \
                         kubectl -n {} get secret {ADMIN_TOKEN_SECRET} -o jsonpath='{{.data.token}}' | base64 -d",
                        cluster.namespace
                    );
                    AdminTokenSecret::Generated(token.expose().to_owned())
                }
            };
            install.ingress_namespace = ingress_namespace.clone();
            install.build_mode = match build_mode {
                BuildModeArg::Kaniko => BuildMode::Kaniko,
                BuildModeArg::DockerSocket => {
                    eprintln!(
                        "warning: the docker-socket build mode mounts the node's Docker socket \
                         into build pods; the namespace {} enforces the `privileged` Pod \
                         Security level for it (Kaniko needs only `baseline`)",
                        cluster.namespace
                    );
                    BuildMode::DockerSocket
                }
            };
            install.store_size = store_size.clone();
            install.storage_class = storage_class.clone();
            install.store_access_mode = access_mode.clone();
            install.serve_args = vec![
                "--push-to".into(),
                push_to.clone(),
                "--build-mode".into(),
                match build_mode {
                    BuildModeArg::Kaniko => "kaniko".into(),
                    BuildModeArg::DockerSocket => "docker-socket".into(),
                },
                "--ingress-class".into(),
                cluster.ingress_class.clone(),
            ];
            manifests::install(&cluster.settings(None, None), &install)
                .to_values()
                .map_err(|e| anyhow::anyhow!(e.chain()))?
        }
        ManifestsCommand::Model {
            name,
            image,
            model_version,
            default,
            canary_image,
            canary_version,
            canary_weight,
            cluster,
        } => {
            let chain = |e: so1s_core::Error| anyhow::anyhow!(e.chain());
            let model = ModelName::parse(name).map_err(chain)?;
            let version = VersionId::parse(model_version).map_err(chain)?;
            let default_model = default.then(|| model.clone());
            let settings = cluster.settings(default_model, None);
            let mut objects =
                manifests::model_objects(&settings, &model, version, image).map_err(chain)?;
            if let (Some(canary_image), Some(canary_version)) = (canary_image, canary_version) {
                let canary_version = VersionId::parse(canary_version).map_err(chain)?;
                if canary_version == version {
                    anyhow::bail!("the canary runs another version than {version}");
                }
                objects.extend(
                    manifests::canary_objects(
                        &settings,
                        &model,
                        canary_version,
                        canary_image,
                        *canary_weight,
                    )
                    .map_err(chain)?,
                );
            }
            objects
        }
    };
    manifests::to_yaml(&objects).map_err(|e| anyhow::anyhow!(e.chain()))
}

/// `so1s context`: the build Job's first step.
#[derive(Debug, clap::Args)]
pub struct ContextArgs {
    /// The uploaded archive (.tar.gz or .zip).
    #[arg(long)]
    pub archive: PathBuf,
    /// The model's name.
    #[arg(long)]
    pub model: String,
    /// The version.
    #[arg(long)]
    pub version: String,
    /// sha256 of the archive (checked, and the image's label).
    #[arg(long)]
    pub sha256: String,
    /// The image the model image is built on (the so1s image).
    #[arg(long)]
    pub base_image: String,
    /// Where to write the Dockerfile and the model directory.
    #[arg(long)]
    pub out: PathBuf,
}

impl ContextArgs {
    /// `so1s context`: the build Job's first step, with the smoke test in this process, or
    /// (a so1s built without `inference`) in the so1s-predict next to it.
    pub async fn run(&self) -> anyhow::Result<()> {
        let context = JobContext {
            archive: self.archive.clone(),
            model: ModelName::parse(&self.model).map_err(|e| anyhow::anyhow!(e.chain()))?,
            version: VersionId::parse(&self.version).map_err(|e| anyhow::anyhow!(e.chain()))?,
            sha256: self.sha256.clone(),
            base_image: self.base_image.clone(),
            out: self.out.clone(),
        };
        #[cfg(feature = "inference")]
        let smoke = SmokeTest::in_process(so1s_inference::InProcessSmokeTest);
        #[cfg(not(feature = "inference"))]
        let smoke = {
            let predict = so1s_core::server::next_to_this_executable("so1s-predict")
                .map_err(|e| anyhow::anyhow!(e.chain()))?;
            SmokeTest::Child(so1s_core::build::SmokeProcess::new(predict))
        };
        let events = Events::new(Stage::Build, |event| println!("{}", event.message));
        context
            .write(smoke, &events)
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()))
    }
}

impl BuildArgs {
    /// The Kubernetes backend of `so1s serve`: `--push-to` is required, since the cluster
    /// pulls model images from a registry.
    pub fn backend(
        &self,
        cluster: &ClusterArgs,
        push_to: Option<&str>,
    ) -> anyhow::Result<KubeBackend> {
        let push_to = push_to.context(
            "--push-to is required with --backend kubernetes: the cluster pulls model images from a registry",
        )?;
        let mut build = BuildSettings::new(&self.so1s_image, push_to, self.build_mode.into());
        build.store_claim = self.store_claim.clone();
        build.push_secret = self.push_secret.clone();
        Ok(KubeBackend {
            cluster: cluster.settings(None, None),
            build,
        })
    }
}
