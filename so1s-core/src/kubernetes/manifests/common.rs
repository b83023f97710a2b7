//! What every object shares: names and labels, the common metadata, probes and security
//! contexts, and the cluster-wide settings ([`ClusterSettings`], [`Resources`]).

use crate::build::image::LABEL_MODEL;
use crate::model::ModelName;
use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, EnvVar, HTTPGetAction, PodSecurityContext, Probe,
    SeccompProfile, SecurityContext, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "so1s";
/// The api server's name.
pub const API_SERVER: &str = "so1s-api";
/// Annotation: the model version a Deployment runs.
pub const ANNOTATION_VERSION: &str = "so1s.io/version";
/// Annotation: the image a Deployment runs.
pub const ANNOTATION_IMAGE: &str = "so1s.io/image";
/// Annotation: sha256 of the applied Deployment spec, to tell a repeated apply.
pub const ANNOTATION_SPEC_HASH: &str = "so1s.io/spec-hash";

pub(super) const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub(super) const APP_NAME: &str = "app.kubernetes.io/name";
pub(super) const APP_INSTANCE: &str = "app.kubernetes.io/instance";
pub(super) const APP_COMPONENT: &str = "app.kubernetes.io/component";

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
    /// Scale each model's Deployment with a HorizontalPodAutoscaler (instead of `replicas`).
    pub autoscale: Option<Autoscale>,
}

/// How a model's Deployment scales: `MIN:MAX[:CPU%]` replicas, aiming at a CPU utilization
/// (of the pods' CPU request; 70% unless given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoscale {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// The average CPU utilization aimed at, in percent of the request.
    pub cpu_percent: u32,
}

impl Autoscale {
    /// The CPU utilization aimed at when none is given.
    pub const DEFAULT_CPU_PERCENT: u32 = 70;

    /// Parses `MIN:MAX` or `MIN:MAX:CPU%` (`2:10`, `1:4:60`, `1:4:60%`).
    pub fn parse(text: &str) -> crate::Result<Self> {
        let invalid = |why: &str| {
            crate::Error::InvalidInput(format!(
                "autoscale `{text}`: {why} (give MIN:MAX or MIN:MAX:CPU%, as in 1:4:70)"
            ))
        };
        let parts: Vec<&str> = text.split(':').collect();
        let number = |part: &str| part.trim().trim_end_matches('%').parse::<u32>().ok();
        let (min, max, cpu) = match parts.as_slice() {
            [min, max] => (number(min), number(max), Some(Self::DEFAULT_CPU_PERCENT)),
            [min, max, cpu] => (number(min), number(max), number(cpu)),
            _ => return Err(invalid("two or three numbers")),
        };
        let (Some(min), Some(max), Some(cpu_percent)) = (min, max, cpu) else {
            return Err(invalid("not whole numbers"));
        };
        if min == 0 || min > max {
            return Err(invalid("replicas go from at least 1 up to MAX ≥ MIN"));
        }
        if !(1..=100).contains(&cpu_percent) {
            return Err(invalid("the CPU target is a percent from 1 to 100"));
        }
        Ok(Self {
            min,
            max,
            cpu_percent,
        })
    }
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
            autoscale: None,
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

pub(super) fn meta(
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

pub(super) fn quantities(pairs: &[(&str, Option<&String>)]) -> Option<BTreeMap<String, Quantity>> {
    let map: BTreeMap<String, Quantity> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), Quantity(v.clone()))))
        .collect();
    (!map.is_empty()).then_some(map)
}

pub(super) fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
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

pub(super) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// A container that runs as a non-root user on a read-only root filesystem with no
/// capabilities.
pub(super) fn restricted() -> SecurityContext {
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

pub(super) fn pod_security() -> PodSecurityContext {
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

pub(super) fn tmp_volume() -> (Volume, VolumeMount) {
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

/// A ClusterIP Service spec: port 80 to the selected pods' port named `http`.
pub(super) fn http_service_spec(selector: BTreeMap<String, String>) -> ServiceSpec {
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

/// Which of a model's Deployments: the main one, or the canary beside it while its traffic is
/// split between two versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// `so1s-{model}`: the Deployment, Service and Ingresses of the model.
    Main,
    /// `so1s-{model}-canary`: the second version of a split, with its own Service and the
    /// nginx canary Ingress that sends it its weight of the requests.
    Canary,
}

impl Track {
    /// The name of the track's Deployment and Service (and the canary's Ingress).
    pub fn object_name(self, model: &ModelName) -> String {
        match self {
            Track::Main => model_object_name(model),
            Track::Canary => object_name(&["so1s", model.as_str(), "canary"]),
        }
    }

    /// The labels that select the track's pods: the main Service never selects the canary's
    /// pods, nor the other way round.
    pub fn selector(self, model: &ModelName) -> BTreeMap<String, String> {
        let mut selector = model_selector(model);
        if self == Track::Canary {
            selector.insert(APP_INSTANCE.to_owned(), self.object_name(model));
        }
        selector
    }

    pub(super) fn labels(self, model: &ModelName) -> BTreeMap<String, String> {
        let mut labels = model_labels(model);
        labels.extend(self.selector(model));
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::manifests::test_support::{is_dns_label, minilm};

    #[test]
    fn names_are_dns_labels_even_for_long_models() {
        assert_eq!(model_object_name(&minilm()), "so1s-minilm");
        let long = ModelName::parse(&"m".repeat(63)).unwrap();
        let other = ModelName::parse(&format!("{}x", "m".repeat(62))).unwrap();
        for name in [model_object_name(&long), model_object_name(&other)] {
            assert!(is_dns_label(&name), "{name}");
        }
        assert_ne!(model_object_name(&long), model_object_name(&other));
        let cut = object_name(&["so1s", &"m".repeat(63), "v1"]);
        assert!(is_dns_label(&cut), "{cut}");
        assert_ne!(cut, object_name(&["so1s", &"m".repeat(63), "v2"]));
    }
}
