//! A model's objects: its Deployment (with the spec hash that tells a repeated apply), and
//! the Service and Ingress owned by it.

use super::common::{
    env, http_probe, http_service_spec, meta, model_labels, model_object_name, model_selector,
    pod_security, quantities, restricted, tmp_volume, ClusterSettings, ANNOTATION_IMAGE,
    ANNOTATION_SPEC_HASH, ANNOTATION_VERSION,
};
use super::yaml::{serialize_error, to_value};
use crate::build::image::{LABEL_VERSION, PREDICT_PORT};
use crate::model::{ModelName, VersionId};
use crate::Result;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, LocalObjectReference, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The nginx ingress controller's rewrite annotation.
pub const NGINX_REWRITE: &str = "nginx.ingress.kubernetes.io/rewrite-target";

/// A model's Deployment running `image` (version `version`): rolling updates that never go
/// below the wanted replicas, readiness on `/readyz`, liveness on `/healthz`.
pub fn deployment(
    settings: &ClusterSettings,
    model: &ModelName,
    version: VersionId,
    image: &str,
) -> Result<Deployment> {
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
    let hash = spec_hash(&deployment)?;
    deployment.metadata.annotations = Some(BTreeMap::from([
        (ANNOTATION_VERSION.to_owned(), version.to_string()),
        (ANNOTATION_IMAGE.to_owned(), image.to_owned()),
        (ANNOTATION_SPEC_HASH.to_owned(), hash),
    ]));
    Ok(deployment)
}

/// sha256 of a Deployment's spec: equal hashes, equal applies.
pub fn spec_hash(deployment: &Deployment) -> Result<String> {
    let name = deployment.metadata.name.as_deref().unwrap_or("(unnamed)");
    let spec = serde_json::to_vec(&deployment.spec)
        .map_err(|e| serialize_error(&format!("the spec of the Deployment {name}"), e))?;
    Ok(format!("{:x}", Sha256::digest(&spec))[..16].to_owned())
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

/// A model's objects as `so1s manifests model` prints them and a rollout applies them (the
/// rollout adds the Service's and Ingress's owner reference to the live Deployment).
pub fn model_objects(
    settings: &ClusterSettings,
    model: &ModelName,
    version: VersionId,
    image: &str,
) -> Result<Vec<serde_json::Value>> {
    Ok(vec![
        to_value(&deployment(settings, model, version, image)?)?,
        to_value(&service(settings, model, None))?,
        to_value(&ingress(settings, model, None))?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::image::LABEL_MODEL;
    use crate::kubernetes::manifests::test_support::{minilm, v};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn the_deployment_rolls_without_losing_capacity_and_probes_the_server() {
        let settings = ClusterSettings {
            threads: Some(2),
            ..ClusterSettings::default()
        };
        let d = deployment(&settings, &minilm(), v(3), "reg/so1s/minilm:v3").unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("so1s-minilm"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("so1s"));
        let annotations = d.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[ANNOTATION_VERSION], "v3");
        assert_eq!(annotations[ANNOTATION_IMAGE], "reg/so1s/minilm:v3");
        assert_eq!(annotations[ANNOTATION_SPEC_HASH], spec_hash(&d).unwrap());
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
        let a = deployment(&settings, &minilm(), v(1), "img:1").unwrap();
        assert_eq!(
            spec_hash(&a).unwrap(),
            spec_hash(&deployment(&settings, &minilm(), v(1), "img:1").unwrap()).unwrap()
        );
        assert_ne!(
            spec_hash(&a).unwrap(),
            spec_hash(&deployment(&settings, &minilm(), v(1), "img:2").unwrap()).unwrap()
        );
        assert_ne!(
            spec_hash(&a).unwrap(),
            spec_hash(&deployment(&settings, &minilm(), v(2), "img:1").unwrap()).unwrap()
        );
    }

    #[test]
    fn service_and_ingress_reach_the_models_pods() {
        let mut settings = ClusterSettings::default();
        let mut live = deployment(&settings, &minilm(), v(1), "img").unwrap();
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
}
