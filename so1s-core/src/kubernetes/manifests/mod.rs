//! Every Kubernetes object so1s applies or prints, built by pure functions: a model's
//! Deployment, Service and Ingress, a version's build Job, and the objects that install the
//! api server itself. Nothing here talks to a cluster; the rollout, the builder and
//! `so1s manifests` all use these, so what is printed for review is what is applied.
//!
//! By object family: `common` (names, labels, shared metadata and security contexts, the
//! [`ClusterSettings`]), `model` ([`deployment`], [`service`], [`autoscaler`],
//! [`model_objects`], and a split's [`canary_objects`]), `ingress` ([`ingress`],
//! [`oip_ingress`], a split's [`canary_ingress`], and [`gateway_ingresses`] while a model is
//! scaled to zero), `build_job` ([`build_job`], [`cluster_model_dockerfile`]), `install`
//! ([`install`] and its [`InstallObjects`]; `access`: the api server's Role and
//! NetworkPolicy) and `yaml` ([`to_value`], [`to_yaml`]). Every item is
//! re-exported here: the paths are `so1s_core::kubernetes::manifests::*`.

mod access;
mod build_job;
mod common;
mod ingress;
mod install;
mod model;
mod yaml;

pub use build_job::{
    build_job, build_job_name, cluster_model_dockerfile, BuildMode, BuildSettings,
};
pub use common::{
    model_labels, model_object_name, model_selector, object_name, Autoscale, ClusterSettings,
    Resources, Track, ANNOTATION_IMAGE, ANNOTATION_SPEC_HASH, ANNOTATION_VERSION, API_SERVER,
    FIELD_MANAGER,
};
pub use ingress::{
    canary_ingress, gateway_ingresses, ingress, oip_ingress, oip_ingress_name, NGINX_CANARY,
    NGINX_CANARY_WEIGHT, NGINX_REWRITE,
};
pub use install::{
    install, pod_security_level, AdminTokenSecret, InstallObjects, InstallSettings,
    ADMIN_TOKEN_SECRET,
};
pub use model::{
    autoscaler, canary_objects, deployment, deployment_on, model_objects, owned_by, service,
    service_on, service_url, service_url_on, spec_hash,
};
pub use yaml::{to_value, to_yaml};

/// What the tests of every family share.
#[cfg(test)]
mod test_support {
    use crate::model::{ModelName, VersionId};
    use k8s_openapi::api::networking::v1::Ingress;

    pub(super) fn minilm() -> ModelName {
        ModelName::parse("minilm").unwrap()
    }

    pub(super) fn v(n: u32) -> VersionId {
        VersionId::parse(&format!("v{n}")).unwrap()
    }

    /// An Ingress's paths: (path, path type, backend Service).
    pub(super) fn paths_of(ingress: &Ingress) -> Vec<(String, String, String)> {
        let spec = ingress.spec.clone().unwrap();
        spec.rules.unwrap()[0]
            .http
            .clone()
            .unwrap()
            .paths
            .into_iter()
            .map(|p| {
                let backend = p.backend.service.unwrap().name;
                (p.path.unwrap(), p.path_type, backend)
            })
            .collect()
    }

    pub(super) fn is_dns_label(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-')
    }
}
