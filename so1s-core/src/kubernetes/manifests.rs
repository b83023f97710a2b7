//! Every Kubernetes object so1s applies or prints, built by pure functions: a model's
//! Deployment, Service and Ingress, a version's build Job, and the objects that install the
//! api server itself. Nothing here talks to a cluster; the rollout, the builder and
//! `so1s manifests` all use these, so what is printed for review is what is applied.

use crate::build::image::{self, LABEL_MODEL, LABEL_VERSION, PREDICT_PORT};
use crate::model::{ModelName, VersionId};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, LocalObjectReference, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "so1s";
/// Annotation: the model version a Deployment runs.
pub const ANNOTATION_VERSION: &str = "so1s.io/version";
/// Annotation: the image a Deployment runs.
pub const ANNOTATION_IMAGE: &str = "so1s.io/image";
/// Annotation: sha256 of the applied Deployment spec, to tell a repeated apply.
pub const ANNOTATION_SPEC_HASH: &str = "so1s.io/spec-hash";
/// The nginx ingress controller's rewrite annotation.
pub const NGINX_REWRITE: &str = "nginx.ingress.kubernetes.io/rewrite-target";

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const APP_NAME: &str = "app.kubernetes.io/name";
const APP_INSTANCE: &str = "app.kubernetes.io/instance";
const APP_COMPONENT: &str = "app.kubernetes.io/component";

/// A DNS-1123 label (≤ 63 characters) made of `parts` joined by `-`. Names that would be
/// longer are cut and end in 8 hex characters of their sha256, so they stay distinct.
pub fn object_name(parts: &[&str]) -> String {
    let full = parts.join("-");
    if full.len() <= 63 {
        return full;
    }
    let hash = format!("{:x}", Sha256::digest(full.as_bytes()));
    let head = full[..54].trim_end_matches('-');
    format!("{head}-{}", &hash[..8])
}

/// CPU and memory of the predict servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// CPU request (`500m`).
    pub cpu_request: String,
    /// Memory request (`1Gi`).
    pub memory_request: String,
    /// CPU limit, if any.
    pub cpu_limit: Option<String>,
    /// Memory limit.
    pub memory_limit: String,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu_request: "1".into(),
            memory_request: "1Gi".into(),
            cpu_limit: None,
            memory_limit: "2Gi".into(),
        }
    }
}

/// How models run in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The namespace of everything so1s creates.
    pub namespace: String,
    /// The ingress class (`nginx`).
    pub ingress_class: String,
    /// The host the Ingress answers for (any when unset).
    pub ingress_host: Option<String>,
    /// The model the seed's path `/inference/predict` serves.
    pub default_model: Option<ModelName>,
    /// Replicas per model.
    pub replicas: i32,
    /// Resources of each predict server.
    pub resources: Resources,
    /// libtorch intra-op threads per predict server.
    pub threads: Option<usize>,
    /// How long a rollout may take before Kubernetes reports it failed.
    pub progress_deadline: Duration,
    /// Secret to pull images with.
    pub image_pull_secret: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            namespace: "so1s".into(),
            ingress_class: "nginx".into(),
            ingress_host: None,
            default_model: None,
            replicas: 1,
            resources: Resources::default(),
            threads: None,
            progress_deadline: Duration::from_secs(180),
            image_pull_secret: None,
        }
    }
}

/// The name of a model's Deployment, Service and Ingress.
pub fn model_object_name(model: &ModelName) -> String {
    object_name(&["so1s", model.as_str()])
}

/// The labels that select a model's pods.
pub fn model_selector(model: &ModelName) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_NAME.to_owned(), "so1s-predict".to_owned()),
        (APP_INSTANCE.to_owned(), model_object_name(model)),
    ])
}

/// The labels of a model's objects.
pub fn model_labels(model: &ModelName) -> BTreeMap<String, String> {
    let mut labels = model_selector(model);
    labels.insert(MANAGED_BY.to_owned(), "so1s".to_owned());
    labels.insert(LABEL_MODEL.to_owned(), model.to_string());
    labels
}

fn meta(
    name: String,
    settings: &ClusterSettings,
    labels: BTreeMap<String, String>,
    owner: Option<&OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(settings.namespace.clone()),
        labels: Some(labels),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..Default::default()
    }
}

fn quantities(pairs: &[(&str, Option<&String>)]) -> Option<BTreeMap<String, Quantity>> {
    let map: BTreeMap<String, Quantity> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), Quantity(v.clone()))))
        .collect();
    (!map.is_empty()).then_some(map)
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// A container that runs as a non-root user on a read-only root filesystem with no
/// capabilities.
fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(65534),
        run_as_group: Some(65534),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tmp_volume() -> (Volume, VolumeMount) {
    (
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity("64Mi".into())),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    )
}

/// A model's Deployment running `image` (version `version`): rolling updates that never go
/// below the wanted replicas, readiness on `/readyz`, liveness on `/healthz`.
pub fn deployment(
    settings: &ClusterSettings,
    model: &ModelName,
    version: VersionId,
    image: &str,
) -> Deployment {
    let mut pod_labels = model_labels(model);
    pod_labels.insert(LABEL_VERSION.to_owned(), version.to_string());
    let mut env_vars = vec![
        env("SO1S_MODEL_NAME", model.as_str()),
        env("SO1S_MODEL_VERSION", version.to_string()),
    ];
    if let Some(threads) = settings.threads {
        env_vars.push(env("SO1S_THREADS", threads.to_string()));
    }
    let (tmp, tmp_mount) = tmp_volume();
    let resources = &settings.resources;
    let container = Container {
        name: "predict".into(),
        image: Some(image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: PREDICT_PORT.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(env_vars),
        readiness_probe: Some(http_probe("/readyz", 2, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe("/healthz", 10, 3)
        }),
        startup_probe: Some(http_probe("/healthz", 2, 60)),
        resources: Some(ResourceRequirements {
            requests: quantities(&[
                ("cpu", Some(&resources.cpu_request)),
                ("memory", Some(&resources.memory_request)),
            ]),
            limits: quantities(&[
                ("cpu", resources.cpu_limit.as_ref()),
                ("memory", Some(&resources.memory_limit)),
            ]),
            ..Default::default()
        }),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![tmp_mount]),
        ..Default::default()
    };
    let mut deployment = Deployment {
        metadata: meta(
            model_object_name(model),
            settings,
            model_labels(model),
            None,
        ),
        spec: Some(DeploymentSpec {
            replicas: Some(settings.replicas),
            selector: LabelSelector {
                match_labels: Some(model_selector(model)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            progress_deadline_seconds: Some(settings.progress_deadline.as_secs() as i32),
            revision_history_limit: Some(5),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        ANNOTATION_VERSION.to_owned(),
                        version.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security()),
                    automount_service_account_token: Some(false),
                    termination_grace_period_seconds: Some(30),
                    image_pull_secrets: settings
                        .image_pull_secret
                        .as_ref()
                        .map(|name| vec![LocalObjectReference { name: name.clone() }]),
                    volumes: Some(vec![tmp]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let hash = spec_hash(&deployment);
    deployment.metadata.annotations = Some(BTreeMap::from([
        (ANNOTATION_VERSION.to_owned(), version.to_string()),
        (ANNOTATION_IMAGE.to_owned(), image.to_owned()),
        (ANNOTATION_SPEC_HASH.to_owned(), hash),
    ]));
    deployment
}

/// sha256 of a Deployment's spec: equal hashes, equal applies.
pub fn spec_hash(deployment: &Deployment) -> String {
    let spec = serde_json::to_vec(&deployment.spec).unwrap_or_default();
    format!("{:x}", Sha256::digest(&spec))[..16].to_owned()
}

/// An owner reference to a model's Deployment, so its Service and Ingress go with it.
pub fn owned_by(deployment: &Deployment) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: deployment.metadata.name.clone()?,
        uid: deployment.metadata.uid.clone()?,
        controller: Some(false),
        block_owner_deletion: Some(false),
    })
}

/// A model's Service: port 80 to the predict servers' `http` port.
pub fn service(
    settings: &ClusterSettings,
    model: &ModelName,
    owner: Option<&OwnerReference>,
) -> Service {
    Service {
        metadata: meta(
            model_object_name(model),
            settings,
            model_labels(model),
            owner,
        ),
        spec: Some(http_service_spec(model_selector(model))),
        ..Default::default()
    }
}

/// A ClusterIP Service spec: port 80 to the selected pods' port named `http`.
fn http_service_spec(selector: BTreeMap<String, String>) -> ServiceSpec {
    ServiceSpec {
        type_: Some("ClusterIP".into()),
        selector: Some(selector),
        ports: Some(vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            target_port: Some(IntOrString::String("http".into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// The URL of a model's Service inside the cluster.
pub fn service_url(settings: &ClusterSettings, model: &ModelName) -> String {
    format!(
        "http://{}.{}.svc:80",
        model_object_name(model),
        settings.namespace
    )
}

/// A model's Ingress: `POST /inference/{model}/predict` (and the seed's
/// `/inference/predict` for the default model) rewritten to the predict server's `/predict`.
pub fn ingress(
    settings: &ClusterSettings,
    model: &ModelName,
    owner: Option<&OwnerReference>,
) -> Ingress {
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: model_object_name(model),
            port: Some(ServiceBackendPort {
                name: Some("http".into()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let mut paths = vec![format!("/inference/{model}/predict")];
    if settings.default_model.as_ref() == Some(model) {
        paths.push("/inference/predict".into());
    }
    let mut metadata = meta(
        model_object_name(model),
        settings,
        model_labels(model),
        owner,
    );
    metadata.annotations = Some(BTreeMap::from([(
        NGINX_REWRITE.to_owned(),
        "/predict".to_owned(),
    )]));
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: Some(settings.ingress_class.clone()),
            rules: Some(vec![IngressRule {
                host: settings.ingress_host.clone(),
                http: Some(HTTPIngressRuleValue {
                    paths: paths
                        .into_iter()
                        .map(|path| HTTPIngressPath {
                            path: Some(path),
                            path_type: "Exact".into(),
                            backend: backend.clone(),
                        })
                        .collect(),
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// How build Jobs make images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMode {
    /// The seed's way: `docker build` + `docker push` through the node's Docker socket
    /// (host path). Needs Docker on the nodes and hands the Job root on the node.
    DockerSocket,
    /// Kaniko: builds and pushes from inside the pod, no daemon, no privileged socket.
    Kaniko,
}

/// What a build Job needs to know.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// The so1s image: it unpacks, checks and smoke-tests the archive (init container), and
    /// it is the model images' base (its layers are on the nodes already).
    pub so1s_image: String,
    /// Push model images under this repository prefix (`registry.example.com/team`).
    pub push_to: String,
    /// How the image is built.
    pub mode: BuildMode,
    /// The image of the build step: a Docker CLI for [`BuildMode::DockerSocket`], the Kaniko
    /// executor for [`BuildMode::Kaniko`].
    pub builder_image: String,
    /// The PersistentVolumeClaim holding the model store.
    pub store_claim: String,
    /// Secret with a Docker `config.json` for the push (mounted for the builder).
    pub push_secret: Option<String>,
    /// Longest a build may run.
    pub deadline: Duration,
    /// How long a finished Job stays for its logs.
    pub ttl_after_finished: Duration,
}

impl BuildSettings {
    /// Defaults for the given so1s image and registry prefix.
    pub fn new(so1s_image: impl Into<String>, push_to: impl Into<String>, mode: BuildMode) -> Self {
        Self {
            so1s_image: so1s_image.into(),
            push_to: push_to.into(),
            builder_image: match mode {
                BuildMode::DockerSocket => "docker:27-cli".into(),
                BuildMode::Kaniko => "gcr.io/kaniko-project/executor:v1.23.2".into(),
            },
            mode,
            store_claim: "so1s-store".into(),
            push_secret: None,
            deadline: Duration::from_secs(1800),
            ttl_after_finished: Duration::from_secs(3600),
        }
    }
}

/// The build Job's name: one per model version, so a retry never builds a version twice.
pub fn build_job_name(model: &ModelName, version: VersionId) -> String {
    object_name(&["so1s-build", model.as_str(), &version.to_string()])
}

/// The Job that builds and pushes `reference` from the archive at `archive` (a path inside
/// the store claim). The init container (the so1s image) unpacks the archive into a
/// workspace, checks and smoke-tests the model and writes the Dockerfile; the build container
/// builds and pushes.
pub fn build_job(
    settings: &ClusterSettings,
    build: &BuildSettings,
    model: &ModelName,
    version: VersionId,
    sha256: &str,
    archive: &str,
    reference: &str,
) -> Job {
    let mut labels = model_labels(model);
    labels.insert(APP_COMPONENT.to_owned(), "build".to_owned());
    labels.insert(LABEL_VERSION.to_owned(), version.to_string());
    let workspace = VolumeMount {
        name: "workspace".into(),
        mount_path: "/workspace".into(),
        ..Default::default()
    };
    let (tmp, tmp_mount) = tmp_volume();
    let prepare = Container {
        name: "prepare".into(),
        image: Some(build.so1s_image.clone()),
        command: Some(vec!["so1s".into()]),
        args: Some(vec![
            "context".into(),
            "--archive".into(),
            format!("/store/{archive}"),
            "--model".into(),
            model.to_string(),
            "--version".into(),
            version.to_string(),
            "--sha256".into(),
            sha256.into(),
            "--base-image".into(),
            build.so1s_image.clone(),
            "--out".into(),
            "/workspace".into(),
        ]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "store".into(),
                mount_path: "/store".into(),
                read_only: Some(true),
                ..Default::default()
            },
            workspace.clone(),
            tmp_mount,
        ]),
        security_context: Some(restricted()),
        ..Default::default()
    };
    let mut volumes = vec![
        Volume {
            name: "store".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: build.store_claim.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        },
        Volume {
            name: "workspace".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
        tmp,
    ];
    let mut mounts = vec![workspace];
    let (command, args, env_vars) = match build.mode {
        BuildMode::DockerSocket => {
            volumes.push(Volume {
                name: "docker-socket".into(),
                host_path: Some(HostPathVolumeSource {
                    path: "/var/run/docker.sock".into(),
                    type_: Some("Socket".into()),
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "docker-socket".into(),
                mount_path: "/var/run/docker.sock".into(),
                ..Default::default()
            });
            (
                Some(vec!["sh".into(), "-ec".into()]),
                Some(vec![format!(
                    "docker build --pull=false -t {reference} /workspace && docker push {reference}"
                )]),
                Some(vec![env("DOCKER_CONFIG", "/docker-config")]),
            )
        }
        BuildMode::Kaniko => (
            None,
            Some(vec![
                "--context=dir:///workspace".into(),
                "--dockerfile=/workspace/Dockerfile".into(),
                format!("--destination={reference}"),
                "--snapshot-mode=redo".into(),
            ]),
            Some(vec![env("DOCKER_CONFIG", "/docker-config")]),
        ),
    };
    if let Some(secret) = &build.push_secret {
        volumes.push(Volume {
            name: "docker-config".into(),
            secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![k8s_openapi::api::core::v1::KeyToPath {
                    key: ".dockerconfigjson".into(),
                    path: "config.json".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "docker-config".into(),
            mount_path: "/docker-config".into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let builder = Container {
        name: "build".into(),
        image: Some(build.builder_image.clone()),
        command,
        args,
        env: env_vars,
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([
                (ANNOTATION_VERSION.to_owned(), version.to_string()),
                (ANNOTATION_IMAGE.to_owned(), reference.to_owned()),
            ])),
            ..meta(
                build_job_name(model, version),
                settings,
                labels.clone(),
                None,
            )
        },
        spec: Some(JobSpec {
            backoff_limit: Some(1),
            active_deadline_seconds: Some(build.deadline.as_secs() as i64),
            ttl_seconds_after_finished: Some(build.ttl_after_finished.as_secs() as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    init_containers: Some(vec![prepare]),
                    containers: vec![builder],
                    volumes: Some(volumes),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// How `so1s manifests install` sets up the api server.
#[derive(Debug, Clone)]
pub struct InstallSettings {
    /// The so1s image (api server, build init container, model image base).
    pub image: String,
    /// Size of the model store's volume.
    pub store_size: String,
    /// Storage class of the store (the cluster's default when unset). Build Jobs mount the
    /// claim too: use a ReadWriteMany class, or keep builds on the api server's node.
    pub storage_class: Option<String>,
    /// Access mode of the store claim.
    pub store_access_mode: String,
    /// Extra arguments of `so1s serve` (registry, build mode...).
    pub serve_args: Vec<String>,
    /// Where the api server's admin token (`SO1S_ADMIN_TOKEN`) comes from.
    pub admin_token: AdminTokenSecret,
    /// The namespace of the ingress controller: with this namespace itself, the only one
    /// the NetworkPolicy lets reach the api server.
    pub ingress_namespace: String,
    /// How build Jobs build images; decides the namespace's Pod Security level.
    pub build_mode: BuildMode,
}

/// The Secret holding the admin token, key `token`.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminTokenSecret {
    /// A new Secret `so1s-admin-token`, printed with this token.
    Generated(String),
    /// A Secret of that name that exists already (`kubectl create secret generic NAME
    /// --from-literal=token=...`).
    Existing(String),
}

impl std::fmt::Debug for AdminTokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminTokenSecret::Generated(_) => f.write_str("Generated(<redacted>)"),
            AdminTokenSecret::Existing(name) => write!(f, "Existing({name:?})"),
        }
    }
}

impl AdminTokenSecret {
    /// The Secret's name.
    pub fn name(&self) -> &str {
        match self {
            AdminTokenSecret::Generated(_) => ADMIN_TOKEN_SECRET,
            AdminTokenSecret::Existing(name) => name,
        }
    }
}

/// The name of a generated admin token Secret.
pub const ADMIN_TOKEN_SECRET: &str = "so1s-admin-token";

/// The Pod Security Admission level the namespace enforces for a build mode: Kaniko's
/// executor runs as root, which `baseline` allows and `restricted` does not; the docker
/// socket is a hostPath, which only `privileged` allows. The api server and model pods meet
/// `restricted` either way (it is the `warn` and `audit` level).
pub fn pod_security_level(mode: BuildMode) -> &'static str {
    match mode {
        BuildMode::Kaniko => "baseline",
        BuildMode::DockerSocket => "privileged",
    }
}

impl InstallSettings {
    /// Defaults around `image`.
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            store_size: "20Gi".into(),
            storage_class: None,
            store_access_mode: "ReadWriteOnce".into(),
            serve_args: Vec::new(),
            admin_token: AdminTokenSecret::Existing(ADMIN_TOKEN_SECRET.into()),
            ingress_namespace: "ingress-nginx".into(),
            build_mode: BuildMode::Kaniko,
        }
    }
}

/// Every object of an install, in the order to apply them.
#[derive(Debug, Clone)]
pub struct InstallObjects {
    /// The namespace, with its Pod Security Admission labels.
    pub namespace: Namespace,
    /// The admin token, when generated.
    pub admin_secret: Option<Secret>,
    /// The api server's identity.
    pub service_account: ServiceAccount,
    /// What it may touch: only the kinds so1s creates, in its namespace.
    pub role: Role,
    /// The role granted to the account.
    pub role_binding: RoleBinding,
    /// The model store.
    pub store: PersistentVolumeClaim,
    /// The api server.
    pub deployment: Deployment,
    /// Its Service.
    pub service: Service,
    /// Who may reach it: the ingress controller's namespace and this namespace only.
    pub network_policy: NetworkPolicy,
}

/// The api server's name.
pub const API_SERVER: &str = "so1s-api";

/// The objects that install so1s into `settings.namespace`.
pub fn install(settings: &ClusterSettings, install: &InstallSettings) -> InstallObjects {
    let labels = BTreeMap::from([
        (APP_NAME.to_owned(), "so1s".to_owned()),
        (APP_INSTANCE.to_owned(), API_SERVER.to_owned()),
        (APP_COMPONENT.to_owned(), "api".to_owned()),
        (MANAGED_BY.to_owned(), "so1s".to_owned()),
    ]);
    let selector = BTreeMap::from([
        (APP_NAME.to_owned(), "so1s".to_owned()),
        (APP_INSTANCE.to_owned(), API_SERVER.to_owned()),
    ]);
    let named = |name: &str| meta(name.to_owned(), settings, labels.clone(), None);
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(groups.iter().map(|s| (*s).to_owned()).collect()),
        resources: Some(resources.iter().map(|s| (*s).to_owned()).collect()),
        verbs: verbs.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    const WRITE: &[&str] = &[
        "get", "list", "watch", "create", "patch", "update", "delete",
    ];
    let mut args = vec![
        "serve".to_owned(),
        "--backend".to_owned(),
        "kubernetes".to_owned(),
        "--host".to_owned(),
        "0.0.0.0".to_owned(),
        "--port".to_owned(),
        "8000".to_owned(),
        "--data-dir".to_owned(),
        "/data".to_owned(),
        "--namespace".to_owned(),
        settings.namespace.clone(),
        "--so1s-image".to_owned(),
        install.image.clone(),
    ];
    args.extend(install.serve_args.iter().cloned());
    let (tmp, tmp_mount) = tmp_volume();
    let container = Container {
        name: "api".into(),
        image: Some(install.image.clone()),
        command: Some(vec!["so1s".into()]),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8000,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(http_probe("/healthz", 5, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        resources: Some(ResourceRequirements {
            requests: quantities(&[
                ("cpu", Some(&"500m".to_owned())),
                ("memory", Some(&"1Gi".to_owned())),
            ]),
            limits: quantities(&[("memory", Some(&"4Gi".to_owned()))]),
            ..Default::default()
        }),
        security_context: Some(restricted()),
        env: Some(vec![EnvVar {
            name: "SO1S_ADMIN_TOKEN".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: install.admin_token.name().to_owned(),
                    key: "token".into(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                ..Default::default()
            },
            tmp_mount,
        ]),
        ..Default::default()
    };
    let enforce = pod_security_level(install.build_mode);
    InstallObjects {
        namespace: Namespace {
            metadata: ObjectMeta {
                name: Some(settings.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.to_owned(), "so1s".to_owned()),
                    (
                        "pod-security.kubernetes.io/enforce".to_owned(),
                        enforce.to_owned(),
                    ),
                    (
                        "pod-security.kubernetes.io/warn".to_owned(),
                        "restricted".to_owned(),
                    ),
                    (
                        "pod-security.kubernetes.io/audit".to_owned(),
                        "restricted".to_owned(),
                    ),
                ])),
                ..Default::default()
            },
            ..Default::default()
        },
        admin_secret: match &install.admin_token {
            AdminTokenSecret::Generated(token) => Some(Secret {
                metadata: named(ADMIN_TOKEN_SECRET),
                type_: Some("Opaque".into()),
                string_data: Some(BTreeMap::from([("token".to_owned(), token.clone())])),
                ..Default::default()
            }),
            AdminTokenSecret::Existing(_) => None,
        },
        service_account: ServiceAccount {
            metadata: named(API_SERVER),
            ..Default::default()
        },
        role: Role {
            metadata: named(API_SERVER),
            rules: Some(vec![
                rule(&["batch"], &["jobs"], WRITE),
                rule(&["apps"], &["deployments"], WRITE),
                rule(&[""], &["services"], WRITE),
                rule(&["networking.k8s.io"], &["ingresses"], WRITE),
                rule(&[""], &["pods"], &["get", "list", "watch"]),
                rule(&[""], &["pods/log"], &["get"]),
            ]),
        },
        role_binding: RoleBinding {
            metadata: named(API_SERVER),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: API_SERVER.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: API_SERVER.into(),
                namespace: Some(settings.namespace.clone()),
                ..Default::default()
            }]),
        },
        store: PersistentVolumeClaim {
            metadata: named("so1s-store"),
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec![install.store_access_mode.clone()]),
                storage_class_name: install.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: quantities(&[("storage", Some(&install.store_size))]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        deployment: Deployment {
            metadata: named(API_SERVER),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector {
                    match_labels: Some(selector.clone()),
                    ..Default::default()
                },
                // One writer of the store and registry at a time.
                strategy: Some(DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..Default::default()
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels.clone()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(API_SERVER.into()),
                        containers: vec![container],
                        security_context: Some(PodSecurityContext {
                            fs_group: Some(65534),
                            ..pod_security()
                        }),
                        volumes: Some(vec![
                            Volume {
                                name: "data".into(),
                                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                                    claim_name: "so1s-store".into(),
                                    read_only: Some(false),
                                }),
                                ..Default::default()
                            },
                            tmp,
                        ]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        },
        service: Service {
            metadata: named(API_SERVER),
            spec: Some(http_service_spec(selector.clone())),
            ..Default::default()
        },
        network_policy: NetworkPolicy {
            metadata: named(API_SERVER),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(selector),
                    ..Default::default()
                }),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![
                        namespace_peer(&install.ingress_namespace),
                        namespace_peer(&settings.namespace),
                    ]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        },
    }
}

/// Every pod of the namespace `name` (by the label Kubernetes sets on each namespace).
fn namespace_peer(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_owned(),
                name.to_owned(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Dockerfile of a model image built in the cluster: the so1s image as the base.
pub fn cluster_model_dockerfile(
    so1s_image: &str,
    model: &ModelName,
    version: VersionId,
    sha256: &str,
) -> String {
    image::model_dockerfile(
        so1s_image,
        model,
        version,
        &image::model_image_labels(model, version, sha256),
    )
}

/// A model's objects as `so1s manifests model` prints them and a rollout applies them (the
/// rollout adds the Service's and Ingress's owner reference to the live Deployment).
pub fn model_objects(
    settings: &ClusterSettings,
    model: &ModelName,
    version: VersionId,
    image: &str,
) -> Vec<serde_json::Value> {
    vec![
        to_value(&deployment(settings, model, version, image)),
        to_value(&service(settings, model, None)),
        to_value(&ingress(settings, model, None)),
    ]
}

impl InstallObjects {
    /// The objects in the order to apply them.
    pub fn to_values(&self) -> Vec<serde_json::Value> {
        let mut values = vec![to_value(&self.namespace)];
        values.extend(self.admin_secret.iter().map(to_value));
        values.extend([
            to_value(&self.service_account),
            to_value(&self.role),
            to_value(&self.role_binding),
            to_value(&self.store),
            to_value(&self.deployment),
            to_value(&self.service),
            to_value(&self.network_policy),
        ]);
        values
    }
}

fn to_value(object: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(object).unwrap_or(serde_json::Value::Null)
}

/// Objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[serde_json::Value]) -> String {
    objects
        .iter()
        .map(|object| {
            let yaml = serde_yaml::to_string(object).unwrap_or_default();
            format!("---\n{yaml}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> ModelName {
        ModelName::parse("minilm").unwrap()
    }

    fn v(n: u32) -> VersionId {
        VersionId::parse(&format!("v{n}")).unwrap()
    }

    fn is_dns_label(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }

    #[test]
    fn names_are_dns_labels_even_for_long_models() {
        assert_eq!(model_object_name(&minilm()), "so1s-minilm");
        assert_eq!(build_job_name(&minilm(), v(12)), "so1s-build-minilm-v12");
        let long = ModelName::parse(&"m".repeat(63)).unwrap();
        let other = ModelName::parse(&format!("{}x", "m".repeat(62))).unwrap();
        for name in [
            model_object_name(&long),
            build_job_name(&long, v(1)),
            build_job_name(&other, v(1)),
        ] {
            assert!(is_dns_label(&name), "{name}");
        }
        assert_ne!(build_job_name(&long, v(1)), build_job_name(&other, v(1)));
        assert_ne!(build_job_name(&long, v(1)), build_job_name(&long, v(2)));
    }

    #[test]
    fn the_deployment_rolls_without_losing_capacity_and_probes_the_server() {
        let settings = ClusterSettings {
            threads: Some(2),
            ..ClusterSettings::default()
        };
        let d = deployment(&settings, &minilm(), v(3), "reg/so1s/minilm:v3");
        assert_eq!(d.metadata.name.as_deref(), Some("so1s-minilm"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("so1s"));
        let annotations = d.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[ANNOTATION_VERSION], "v3");
        assert_eq!(annotations[ANNOTATION_IMAGE], "reg/so1s/minilm:v3");
        assert_eq!(annotations[ANNOTATION_SPEC_HASH], spec_hash(&d));
        let spec = d.spec.clone().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.progress_deadline_seconds, Some(180));
        let strategy = spec.strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let rolling = strategy.rolling_update.unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        // The selector picks the model's pods whatever their version.
        let selector = spec.selector.match_labels.unwrap();
        let template_meta = spec.template.metadata.unwrap();
        let pod_labels = template_meta.labels.unwrap();
        for (key, value) in &selector {
            assert_eq!(pod_labels.get(key), Some(value), "{key}");
        }
        assert!(!selector.contains_key(LABEL_VERSION));
        assert_eq!(pod_labels[LABEL_VERSION], "v3");
        assert_eq!(pod_labels[LABEL_MODEL], "minilm");
        assert_eq!(template_meta.annotations.unwrap()[ANNOTATION_VERSION], "v3");
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("reg/so1s/minilm:v3"));
        let ports = container.ports.clone().unwrap();
        assert_eq!(ports[0].container_port, 8080);
        assert_eq!(ports[0].name.as_deref(), Some("http"));
        let readiness = container.readiness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        assert_eq!(readiness.port, IntOrString::String("http".into()));
        let liveness = container.liveness_probe.clone().unwrap();
        assert_eq!(liveness.http_get.unwrap().path.as_deref(), Some("/healthz"));
        assert_eq!(liveness.initial_delay_seconds, Some(10));
        let resources = container.resources.clone().unwrap();
        assert_eq!(resources.requests.unwrap()["cpu"], Quantity("1".into()));
        assert_eq!(resources.limits.unwrap()["memory"], Quantity("2Gi".into()));
        let security = container.security_context.clone().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        let env: Vec<(String, String)> = container
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap()))
            .collect();
        assert!(env.contains(&("SO1S_MODEL_VERSION".into(), "v3".into())));
        assert!(env.contains(&("SO1S_THREADS".into(), "2".into())));
    }

    #[test]
    fn the_spec_hash_follows_the_spec() {
        let settings = ClusterSettings::default();
        let a = deployment(&settings, &minilm(), v(1), "img:1");
        assert_eq!(
            spec_hash(&a),
            spec_hash(&deployment(&settings, &minilm(), v(1), "img:1"))
        );
        assert_ne!(
            spec_hash(&a),
            spec_hash(&deployment(&settings, &minilm(), v(1), "img:2"))
        );
        assert_ne!(
            spec_hash(&a),
            spec_hash(&deployment(&settings, &minilm(), v(2), "img:1"))
        );
    }

    #[test]
    fn service_and_ingress_reach_the_models_pods() {
        let mut settings = ClusterSettings::default();
        let mut live = deployment(&settings, &minilm(), v(1), "img");
        assert!(
            owned_by(&live).is_none(),
            "no owner before the API gave a uid"
        );
        live.metadata.uid = Some("1234".into());
        let owner = owned_by(&live).unwrap();
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Deployment", "1234")
        );

        let s = service(&settings, &minilm(), Some(&owner));
        assert_eq!(s.metadata.owner_references.clone().unwrap()[0].uid, "1234");
        let spec = s.spec.unwrap();
        assert_eq!(spec.selector.unwrap(), model_selector(&minilm()));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.port, 80);
        assert_eq!(port.target_port, Some(IntOrString::String("http".into())));
        assert_eq!(
            service_url(&settings, &minilm()),
            "http://so1s-minilm.so1s.svc:80"
        );

        let i = ingress(&settings, &minilm(), Some(&owner));
        assert_eq!(
            i.metadata.annotations.clone().unwrap()[NGINX_REWRITE],
            "/predict"
        );
        let spec = i.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let paths = spec.rules.unwrap()[0].http.clone().unwrap().paths;
        assert_eq!(paths.len(), 1, "not the default model");
        assert_eq!(paths[0].path.as_deref(), Some("/inference/minilm/predict"));
        assert_eq!(paths[0].path_type, "Exact");
        let backend = paths[0].backend.service.clone().unwrap();
        assert_eq!(backend.name, "so1s-minilm");

        settings.default_model = Some(minilm());
        settings.ingress_class = "traefik".into();
        let spec = ingress(&settings, &minilm(), None).spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("traefik"));
        let paths: Vec<_> = spec.rules.unwrap()[0]
            .http
            .clone()
            .unwrap()
            .paths
            .into_iter()
            .map(|p| p.path.unwrap())
            .collect();
        assert_eq!(paths, ["/inference/minilm/predict", "/inference/predict"]);
    }

    #[test]
    fn build_jobs_are_bounded_and_read_the_store_read_only() {
        let build = BuildSettings::new("so1s/so1s:1", "reg.example/team", BuildMode::Kaniko);
        let job = build_job(
            &ClusterSettings::default(),
            &build,
            &minilm(),
            v(2),
            "cafe",
            "store/minilm/v2.tar.gz",
            "reg.example/team/so1s/minilm:v2",
        );
        assert_eq!(job.metadata.name.as_deref(), Some("so1s-build-minilm-v2"));
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(1));
        assert_eq!(spec.ttl_seconds_after_finished, Some(3600));
        assert_eq!(spec.active_deadline_seconds, Some(1800));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let prepare = &pod.init_containers.unwrap()[0];
        let args = prepare.args.clone().unwrap();
        assert_eq!(args[0], "context");
        assert!(args.contains(&"/store/store/minilm/v2.tar.gz".to_owned()));
        let store = pod
            .volumes
            .clone()
            .unwrap()
            .into_iter()
            .find(|v| v.name == "store")
            .unwrap();
        let claim = store.persistent_volume_claim.unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("so1s-store", Some(true))
        );
        let builder = &pod.containers[0];
        assert!(builder.image.as_deref().unwrap().contains("kaniko"));
        assert!(builder
            .args
            .clone()
            .unwrap()
            .contains(&"--destination=reg.example/team/so1s/minilm:v2".to_owned()));
        assert!(
            pod.volumes.unwrap().iter().all(|v| v.host_path.is_none()),
            "kaniko needs no host socket"
        );

        let mut socket = BuildSettings::new("so1s/so1s:1", "reg", BuildMode::DockerSocket);
        socket.push_secret = Some("regcred".into());
        let job = build_job(
            &ClusterSettings::default(),
            &socket,
            &minilm(),
            v(2),
            "c",
            "a",
            "reg/so1s/minilm:v2",
        );
        let pod = job.spec.unwrap().template.spec.unwrap();
        let volumes = pod.volumes.unwrap();
        let host = volumes.iter().find_map(|v| v.host_path.clone()).unwrap();
        assert_eq!(host.path, "/var/run/docker.sock");
        let secret = volumes.iter().find_map(|v| v.secret.clone()).unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("regcred"));
        let script = pod.containers[0].args.clone().unwrap()[0].clone();
        assert!(
            script.contains("docker push reg/so1s/minilm:v2"),
            "{script}"
        );
    }

    #[test]
    fn the_install_role_names_only_what_so1s_touches() {
        let objects = install(
            &ClusterSettings::default(),
            &InstallSettings::new("so1s/so1s:1"),
        );
        let rules = objects.role.rules.clone().unwrap();
        let mut granted: Vec<String> = rules
            .iter()
            .flat_map(|r| {
                let groups = r.api_groups.clone().unwrap();
                r.resources
                    .clone()
                    .unwrap()
                    .into_iter()
                    .map(move |res| format!("{}/{res}", groups[0]))
            })
            .collect();
        granted.sort();
        assert_eq!(
            granted,
            [
                "/pods",
                "/pods/log",
                "/services",
                "apps/deployments",
                "batch/jobs",
                "networking.k8s.io/ingresses"
            ]
        );
        for rule in &rules {
            let all: Vec<&String> = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten())
                .collect();
            assert!(all.iter().all(|s| !s.contains('*')), "{rule:?}");
        }
        let logs = rules
            .iter()
            .find(|r| r.resources.as_ref().unwrap()[0] == "pods/log")
            .unwrap();
        assert_eq!(logs.verbs, ["get"]);
        assert_eq!(
            objects.role_binding.subjects.clone().unwrap()[0].name,
            API_SERVER
        );
        assert_eq!(objects.role_binding.role_ref.name, API_SERVER);
        let pod = objects
            .deployment
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some(API_SERVER));
        let args = pod.containers[0].args.clone().unwrap();
        assert!(
            args.windows(2).any(|w| w == ["--backend", "kubernetes"]),
            "{args:?}"
        );
        let claim = objects.store.spec.clone().unwrap();
        assert_eq!(claim.access_modes.unwrap(), ["ReadWriteOnce"]);
        let values = objects.to_values();
        let kinds: Vec<&str> = values.iter().map(|v| v["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "PersistentVolumeClaim",
                "Deployment",
                "Service",
                "NetworkPolicy"
            ]
        );
        assert!(values.iter().all(|v| v["apiVersion"].is_string()));
    }

    #[test]
    fn the_install_guards_the_api_server() {
        let settings = ClusterSettings::default();
        let mut install_settings = InstallSettings::new("so1s/so1s:1");
        install_settings.admin_token = AdminTokenSecret::Generated("so1s_secret".into());
        let objects = install(&settings, &install_settings);
        // The generated token sits in a Secret the Deployment reads it from.
        let secret = objects.admin_secret.clone().unwrap();
        assert_eq!(secret.metadata.name.as_deref(), Some(ADMIN_TOKEN_SECRET));
        assert_eq!(secret.string_data.unwrap()["token"], "so1s_secret");
        let kinds: Vec<String> = objects
            .to_values()
            .iter()
            .map(|v| v["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds[..2], ["Namespace", "Secret"]);
        let container = objects
            .deployment
            .spec
            .clone()
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .clone();
        let env = &container.env.unwrap()[0];
        assert_eq!(env.name, "SO1S_ADMIN_TOKEN");
        let reference = env.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            (ADMIN_TOKEN_SECRET, "token")
        );
        assert!(!format!("{install_settings:?}").contains("so1s_secret"));

        // Only the ingress controller's namespace and so1s's own reach the api server.
        let policy = objects.network_policy.spec.unwrap();
        assert_eq!(policy.policy_types.unwrap(), ["Ingress"]);
        let peers: Vec<String> = policy.ingress.unwrap()[0]
            .from
            .clone()
            .unwrap()
            .iter()
            .map(|p| {
                p.namespace_selector.clone().unwrap().match_labels.unwrap()
                    ["kubernetes.io/metadata.name"]
                    .clone()
            })
            .collect();
        assert_eq!(peers, ["ingress-nginx", settings.namespace.as_str()]);
        let selector = policy.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selector[APP_INSTANCE], API_SERVER);

        // Pod Security: baseline for Kaniko (root), privileged for the docker socket.
        let labels = objects.namespace.metadata.labels.unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
        install_settings.build_mode = BuildMode::DockerSocket;
        install_settings.admin_token = AdminTokenSecret::Existing("mine".into());
        let objects = install(&settings, &install_settings);
        assert!(objects.admin_secret.is_none());
        let labels = objects.namespace.metadata.labels.unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
        let container = objects
            .deployment
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .containers[0]
            .clone();
        let reference = container.env.unwrap()[0]
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(reference.name, "mine");
    }

    #[test]
    fn yaml_has_one_document_per_object() {
        let objects = model_objects(&ClusterSettings::default(), &minilm(), v(1), "img");
        let yaml = to_yaml(&objects);
        assert_eq!(yaml.matches("---\n").count(), 3);
        let back: Vec<serde_json::Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        assert_eq!(back, objects);
    }
}
