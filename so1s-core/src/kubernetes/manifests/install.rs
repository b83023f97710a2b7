//! The objects that install the api server itself: its namespace (with the Pod Security
//! level the build mode needs), identity and role, store claim, Deployment, Service and
//! NetworkPolicy, and the admin token's Secret.

use super::access::{api_network_policy, api_role, api_role_binding};
use super::build_job::BuildMode;
use super::common::{
    http_probe, http_service_spec, meta, pod_security, quantities, restricted, tmp_volume,
    ClusterSettings, API_SERVER, APP_COMPONENT, APP_INSTANCE, APP_NAME, MANAGED_BY,
};
use super::yaml::to_value;
use crate::Result;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, Secret, SecretKeySelector, Service, ServiceAccount,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

/// How `so1s manifests install` sets up the api server.
#[derive(Debug, Clone)]
pub struct InstallSettings {
    /// The so1s image (api server, build init container, model image base).
    pub image: String,
    /// The api server's own image when it is not `image`: the api-server-only image
    /// (`so1s image --api-server-only`, no libtorch); builds still use `image`.
    pub api_server_image: Option<String>,
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
            api_server_image: None,
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
        image: Some(
            install
                .api_server_image
                .clone()
                .unwrap_or_else(|| install.image.clone()),
        ),
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
        role: api_role(named(API_SERVER)),
        role_binding: api_role_binding(named(API_SERVER), &settings.namespace),
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
        network_policy: api_network_policy(
            named(API_SERVER),
            selector,
            &[&install.ingress_namespace, &settings.namespace],
        ),
    }
}

impl InstallObjects {
    /// The objects in the order to apply them.
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>> {
        let mut values = vec![to_value(&self.namespace)?];
        if let Some(secret) = &self.admin_secret {
            values.push(to_value(secret)?);
        }
        values.extend([
            to_value(&self.service_account)?,
            to_value(&self.role)?,
            to_value(&self.role_binding)?,
            to_value(&self.store)?,
            to_value(&self.deployment)?,
            to_value(&self.service)?,
            to_value(&self.network_policy)?,
        ]);
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Container;

    /// The api server's container of an install.
    fn api_container(objects: &InstallObjects) -> Container {
        let pod = objects.deployment.spec.clone().unwrap().template.spec;
        pod.unwrap().containers[0].clone()
    }

    #[test]
    fn the_install_runs_the_api_server_under_its_account() {
        let objects = install(
            &ClusterSettings::default(),
            &InstallSettings::new("so1s/so1s:1"),
        );
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
        let values = objects.to_values().unwrap();
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
    fn an_api_server_only_image_runs_the_api_server_and_builds_keep_the_so1s_image() {
        let mut settings = InstallSettings::new("registry.example.com/so1s/so1s:1");
        settings.api_server_image = Some("registry.example.com/so1s/api:1".into());
        let objects = install(&ClusterSettings::default(), &settings);
        let container = api_container(&objects);
        assert_eq!(
            container.image.as_deref(),
            Some("registry.example.com/so1s/api:1")
        );
        let args = container.args.unwrap();
        assert!(
            args.windows(2)
                .any(|w| w == ["--so1s-image", "registry.example.com/so1s/so1s:1"]),
            "{args:?}"
        );
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
            .unwrap()
            .iter()
            .map(|v| v["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds[..2], ["Namespace", "Secret"]);
        let container = api_container(&objects);
        let env = &container.env.unwrap()[0];
        assert_eq!(env.name, "SO1S_ADMIN_TOKEN");
        let reference = env.value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!(
            (reference.name.as_str(), reference.key.as_str()),
            (ADMIN_TOKEN_SECRET, "token")
        );
        assert!(!format!("{install_settings:?}").contains("so1s_secret"));

        // Pod Security: baseline for Kaniko (root), privileged for the docker socket.
        let labels = objects.namespace.metadata.labels.unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
        assert_eq!(labels["pod-security.kubernetes.io/warn"], "restricted");
        install_settings.build_mode = BuildMode::DockerSocket;
        install_settings.admin_token = AdminTokenSecret::Existing("mine".into());
        let objects = install(&settings, &install_settings);
        assert!(objects.admin_secret.is_none());
        let labels = objects.namespace.metadata.labels.clone().unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "privileged");
        let container = api_container(&objects);
        let reference = container.env.unwrap()[0]
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(reference.name, "mine");
    }
}
