//! A model's objects: its Deployment (with the spec hash that tells a repeated apply), the
//! Service and Ingresses owned by it (predict, and the Open Inference Protocol's `/v2`, built
//! in `ingress`), its
//! HorizontalPodAutoscaler when it autoscales, and while its traffic is split the canary's
//! Deployment, Service and nginx canary Ingress ([`Track::Canary`]).

use super::common::{
    env, http_probe, http_service_spec, meta, model_labels, model_object_name, pod_security,
    quantities, restricted, tmp_volume, Autoscale, ClusterSettings, Track, ANNOTATION_IMAGE,
    ANNOTATION_SPEC_HASH, ANNOTATION_VERSION,
};
use super::ingress::{canary_ingress, ingress, oip_ingress};
use super::yaml::{serialize_error, to_value};
use crate::build::image::{LABEL_VERSION, PREDICT_PORT};
use crate::model::{ModelName, VersionId};
use crate::Result;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, LocalObjectReference, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A model's Deployment running `image` (version `version`): rolling updates that never go
/// below the wanted replicas, readiness on `/readyz`, liveness on `/healthz`.
pub fn deployment(
    settings: &ClusterSettings,
    model: &ModelName,
    version: VersionId,
    image: &str,
) -> Result<Deployment> {
    deployment_on(Track::Main, settings, model, version, image)
}

/// [`deployment`] on a track. With autoscaling the main Deployment leaves its replicas to the
/// HorizontalPodAutoscaler (an apply would reset them otherwise).
pub fn deployment_on(
    track: Track,
    settings: &ClusterSettings,
    model: &ModelName,
    version: VersionId,
    image: &str,
) -> Result<Deployment> {
    let mut pod_labels = track.labels(model);
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
    let replicas = match (track, &settings.autoscale) {
        (Track::Main, Some(_)) => None,
        _ => Some(settings.replicas),
    };
    let mut deployment = Deployment {
        metadata: meta(
            track.object_name(model),
            settings,
            track.labels(model),
            None,
        ),
        spec: Some(DeploymentSpec {
            replicas,
            selector: LabelSelector {
                match_labels: Some(track.selector(model)),
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
    service_on(Track::Main, settings, model, owner)
}

/// [`service`] on a track: it selects that track's pods only.
pub fn service_on(
    track: Track,
    settings: &ClusterSettings,
    model: &ModelName,
    owner: Option<&OwnerReference>,
) -> Service {
    Service {
        metadata: meta(
            track.object_name(model),
            settings,
            track.labels(model),
            owner,
        ),
        spec: Some(http_service_spec(track.selector(model))),
        ..Default::default()
    }
}

/// The URL of a model's Service inside the cluster.
pub fn service_url(settings: &ClusterSettings, model: &ModelName) -> String {
    service_url_on(Track::Main, settings, model)
}

/// The URL of a track's Service inside the cluster.
pub fn service_url_on(track: Track, settings: &ClusterSettings, model: &ModelName) -> String {
    format!(
        "http://{}.{}.svc:80",
        track.object_name(model),
        settings.namespace
    )
}

/// The HorizontalPodAutoscaler of a model's main Deployment: between `min` and `max`
/// replicas, aiming at `cpu_percent` of the pods' CPU request (which the Deployment sets).
pub fn autoscaler(
    settings: &ClusterSettings,
    model: &ModelName,
    autoscale: &Autoscale,
    owner: Option<&OwnerReference>,
) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: meta(
            model_object_name(model),
            settings,
            model_labels(model),
            owner,
        ),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: model_object_name(model),
            },
            min_replicas: Some(autoscale.min as i32),
            max_replicas: autoscale.max as i32,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(autoscale.cpu_percent as i32),
                        ..Default::default()
                    },
                }),
                ..Default::default()
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
    let mut objects = vec![
        to_value(&deployment(settings, model, version, image)?)?,
        to_value(&service(settings, model, None))?,
        to_value(&ingress(settings, model, None))?,
        to_value(&oip_ingress(settings, model, None))?,
    ];
    if let Some(autoscale) = &settings.autoscale {
        objects.push(to_value(&autoscaler(settings, model, autoscale, None))?);
    }
    Ok(objects)
}

/// The canary's objects of a split, beside [`model_objects`]: its Deployment of `version`
/// running `image`, its Service, and the canary Ingress with its `weight`.
pub fn canary_objects(
    settings: &ClusterSettings,
    model: &ModelName,
    version: VersionId,
    image: &str,
    weight: u32,
) -> Result<Vec<serde_json::Value>> {
    Ok(vec![
        to_value(&deployment_on(
            Track::Canary,
            settings,
            model,
            version,
            image,
        )?)?,
        to_value(&service_on(Track::Canary, settings, model, None))?,
        to_value(&canary_ingress(settings, model, weight, None))?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::image::LABEL_MODEL;
    use crate::kubernetes::manifests::common::model_selector;
    use crate::kubernetes::manifests::ingress::{NGINX_CANARY, NGINX_CANARY_WEIGHT, NGINX_REWRITE};
    use crate::kubernetes::manifests::test_support::paths_of;
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

    #[test]
    fn the_open_inference_protocol_has_an_ingress_without_the_rewrite() {
        let settings = ClusterSettings::default();
        let i = oip_ingress(&settings, &minilm(), None);
        assert_eq!(i.metadata.name.as_deref(), Some("so1s-minilm-v2"));
        assert!(i.metadata.annotations.is_none(), "no rewrite");
        assert_eq!(
            paths_of(&i),
            [(
                "/v2/models/minilm".to_owned(),
                "Prefix".to_owned(),
                "so1s-minilm".to_owned()
            )]
        );
    }

    #[test]
    fn a_split_runs_the_canary_beside_the_main_deployment_and_weighs_it_on_its_ingress() {
        let settings = ClusterSettings {
            default_model: Some(minilm()),
            ..ClusterSettings::default()
        };
        let main = deployment(&settings, &minilm(), v(1), "img:1").unwrap();
        let canary = deployment_on(Track::Canary, &settings, &minilm(), v(2), "img:2").unwrap();
        assert_eq!(canary.metadata.name.as_deref(), Some("so1s-minilm-canary"));
        // Neither Service selects the other's pods, and each Deployment owns its own.
        let pods = |d: &Deployment| {
            d.spec
                .clone()
                .unwrap()
                .template
                .metadata
                .unwrap()
                .labels
                .unwrap()
        };
        let selects = |selector: &BTreeMap<String, String>, pods: &BTreeMap<String, String>| {
            selector.iter().all(|(k, v)| pods.get(k) == Some(v))
        };
        let main_service = service(&settings, &minilm(), None)
            .spec
            .unwrap()
            .selector
            .unwrap();
        let canary_service = service_on(Track::Canary, &settings, &minilm(), None)
            .spec
            .unwrap()
            .selector
            .unwrap();
        assert!(selects(&main_service, &pods(&main)));
        assert!(!selects(&main_service, &pods(&canary)));
        assert!(selects(&canary_service, &pods(&canary)));
        assert!(!selects(&canary_service, &pods(&main)));
        let canary_selector = canary.spec.clone().unwrap().selector.match_labels.unwrap();
        assert!(
            selects(&canary_selector, &pods(&canary)) && !selects(&canary_selector, &pods(&main))
        );
        assert_eq!(pods(&canary)[LABEL_VERSION], "v2");
        assert_eq!(
            service_url_on(Track::Canary, &settings, &minilm()),
            "http://so1s-minilm-canary.so1s.svc:80"
        );

        let i = canary_ingress(&settings, &minilm(), 30, None);
        let annotations = i.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[NGINX_CANARY], "true");
        assert_eq!(annotations[NGINX_CANARY_WEIGHT], "30");
        let canary_paths: Vec<String> = paths_of(&i)
            .into_iter()
            .map(|(path, _, backend)| {
                assert_eq!(backend, "so1s-minilm-canary");
                path
            })
            .collect();
        // The same paths as the main Ingresses, which nginx pairs it with.
        let mut main_paths: Vec<String> = paths_of(&ingress(&settings, &minilm(), None))
            .into_iter()
            .chain(paths_of(&oip_ingress(&settings, &minilm(), None)))
            .map(|(path, _, _)| path)
            .collect();
        main_paths.sort();
        let mut sorted = canary_paths.clone();
        sorted.sort();
        assert_eq!(sorted, main_paths);
        assert_eq!(
            canary_objects(&settings, &minilm(), v(2), "img:2", 30)
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn autoscaling_adds_the_hpa_and_leaves_the_replicas_to_it() {
        let autoscale = Autoscale::parse("2:6:60").unwrap();
        let settings = ClusterSettings {
            autoscale: Some(autoscale),
            ..ClusterSettings::default()
        };
        let d = deployment(&settings, &minilm(), v(1), "img").unwrap();
        assert_eq!(d.spec.unwrap().replicas, None);
        let canary = deployment_on(Track::Canary, &settings, &minilm(), v(2), "img").unwrap();
        assert_eq!(canary.spec.unwrap().replicas, Some(1));
        let hpa = autoscaler(&settings, &minilm(), &autoscale, None);
        let spec = hpa.spec.unwrap();
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 6));
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "so1s-minilm");
        let metric = spec.metrics.unwrap()[0].resource.clone().unwrap();
        assert_eq!(metric.name, "cpu");
        assert_eq!(metric.target.average_utilization, Some(60));
        let kinds: Vec<String> = model_objects(&settings, &minilm(), v(1), "img")
            .unwrap()
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds,
            [
                "Deployment",
                "Service",
                "Ingress",
                "Ingress",
                "HorizontalPodAutoscaler"
            ]
        );
        // The CPU request the utilization is measured against is set.
        let d = deployment(&settings, &minilm(), v(1), "img").unwrap();
        let resources = d.spec.unwrap().template.spec.unwrap().containers[0]
            .resources
            .clone();
        assert!(resources.unwrap().requests.unwrap().contains_key("cpu"));
    }

    #[test]
    fn autoscale_reads_min_max_and_a_cpu_target() {
        assert_eq!(
            Autoscale::parse("1:4").unwrap(),
            Autoscale {
                min: 1,
                max: 4,
                cpu_percent: 70
            }
        );
        assert_eq!(Autoscale::parse("2:10:55%").unwrap().cpu_percent, 55);
        for (text, says) in [
            ("4", "two or three numbers"),
            ("a:4", "not whole numbers"),
            ("0:4", "at least 1"),
            ("5:4", "MAX ≥ MIN"),
            ("1:4:150", "from 1 to 100"),
        ] {
            let err = Autoscale::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
