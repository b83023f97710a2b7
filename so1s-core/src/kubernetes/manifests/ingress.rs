//! A model's Ingresses: predict (rewritten to the predict server's `/predict`), the Open
//! Inference Protocol's `/v2`, a split's nginx canary Ingress, and, while the model is scaled
//! to zero, the same paths to the so1s api server's gateway ([`gateway_ingresses`]), which
//! holds the requests while the model wakes.

use super::common::{meta, model_object_name, object_name, ClusterSettings, Track, API_SERVER};
use crate::model::ModelName;
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::BTreeMap;

/// The nginx ingress controller's rewrite annotation.
pub const NGINX_REWRITE: &str = "nginx.ingress.kubernetes.io/rewrite-target";
/// The nginx ingress controller's annotation that makes an Ingress a canary of another.
pub const NGINX_CANARY: &str = "nginx.ingress.kubernetes.io/canary";
/// The percent of requests nginx sends to a canary Ingress.
pub const NGINX_CANARY_WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";

/// A model's Ingress: `POST /inference/{model}/predict` (and the seed's
/// `/inference/predict` for the default model) rewritten to the predict server's `/predict`.
pub fn ingress(
    settings: &ClusterSettings,
    model: &ModelName,
    owner: Option<&OwnerReference>,
) -> Ingress {
    let paths = predict_paths(settings, model)
        .into_iter()
        .map(|path| (path, "Exact"));
    let annotations = [(NGINX_REWRITE, "/predict".to_owned())];
    ingress_of(
        model_object_name(model),
        settings,
        model,
        Track::Main,
        paths,
        annotations,
        owner,
    )
}

/// The name of a model's Open Inference Protocol Ingress.
pub fn oip_ingress_name(model: &ModelName) -> String {
    object_name(&["so1s", model.as_str(), "v2"])
}

/// A model's Open Inference Protocol Ingress: `/v2/models/{model}` and below, to the same
/// paths on its predict servers (no rewrite: the protocol's paths are the server's).
pub fn oip_ingress(
    settings: &ClusterSettings,
    model: &ModelName,
    owner: Option<&OwnerReference>,
) -> Ingress {
    let paths = [(oip_path(model), "Prefix")];
    ingress_of(
        oip_ingress_name(model),
        settings,
        model,
        Track::Main,
        paths,
        [],
        owner,
    )
}

/// The nginx canary Ingress of a split: the main Ingresses' paths (predict and the Open
/// Inference Protocol) to the canary's Service for `weight` percent of the requests. nginx
/// takes one canary Ingress per path, and takes the rewrite from the main Ingress.
pub fn canary_ingress(
    settings: &ClusterSettings,
    model: &ModelName,
    weight: u32,
    owner: Option<&OwnerReference>,
) -> Ingress {
    let paths = predict_paths(settings, model)
        .into_iter()
        .map(|path| (path, "Exact"))
        .chain([(oip_path(model), "Prefix")]);
    let annotations = [
        (NGINX_CANARY, "true".to_owned()),
        (NGINX_CANARY_WEIGHT, weight.to_string()),
    ];
    ingress_of(
        Track::Canary.object_name(model),
        settings,
        model,
        Track::Canary,
        paths,
        annotations,
        owner,
    )
}

fn predict_paths(settings: &ClusterSettings, model: &ModelName) -> Vec<String> {
    let mut paths = vec![format!("/inference/{model}/predict")];
    if settings.default_model.as_ref() == Some(model) {
        paths.push("/inference/predict".into());
    }
    paths
}

fn oip_path(model: &ModelName) -> String {
    format!("/v2/models/{model}")
}

/// An Ingress named `name` sending `paths` (path, path type) to `track`'s Service.
fn ingress_of<P: Into<String>>(
    name: String,
    settings: &ClusterSettings,
    model: &ModelName,
    track: Track,
    paths: impl IntoIterator<Item = (P, &'static str)>,
    annotations: impl IntoIterator<Item = (&'static str, String)>,
    owner: Option<&OwnerReference>,
) -> Ingress {
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: track.object_name(model),
            port: Some(ServiceBackendPort {
                name: Some("http".into()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let mut metadata = meta(name, settings, track.labels(model), owner);
    let annotations: BTreeMap<String, String> = annotations
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
    metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: Some(settings.ingress_class.clone()),
            rules: Some(vec![IngressRule {
                host: settings.ingress_host.clone(),
                http: Some(HTTPIngressRuleValue {
                    paths: paths
                        .into_iter()
                        .map(|(path, path_type)| HTTPIngressPath {
                            path: Some(path.into()),
                            path_type: path_type.into(),
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

/// A model's predict and Open Inference Protocol Ingresses while it is scaled to zero: the
/// same paths, to the so1s api server's Service ([`API_SERVER`]) and without the rewrite,
/// since its gateway serves `/inference/{model}/predict` and `/v2/models/{model}` itself and
/// holds each request until the model is awake.
pub fn gateway_ingresses(
    settings: &ClusterSettings,
    model: &ModelName,
    owner: Option<&OwnerReference>,
) -> [Ingress; 2] {
    let mut predict = ingress(settings, model, owner);
    predict.metadata.annotations = None;
    let mut oip = oip_ingress(settings, model, owner);
    for ingress in [&mut predict, &mut oip] {
        let rules = ingress
            .spec
            .iter_mut()
            .flat_map(|s| s.rules.iter_mut().flatten());
        for path in rules.flat_map(|r| r.http.iter_mut().flat_map(|h| h.paths.iter_mut())) {
            if let Some(service) = path.backend.service.as_mut() {
                service.name = API_SERVER.to_owned();
            }
        }
    }
    [predict, oip]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::manifests::test_support::{minilm, paths_of};

    /// An Ingress's paths with their backend Service.
    fn backends(ingress: &Ingress) -> Vec<(String, String)> {
        paths_of(ingress)
            .into_iter()
            .map(|(path, _, backend)| (path, backend))
            .collect()
    }

    #[test]
    fn scaled_to_zero_the_same_paths_go_to_the_gateway_without_the_rewrite() {
        let settings = ClusterSettings {
            default_model: Some(minilm()),
            ..ClusterSettings::default()
        };
        let [predict, oip] = gateway_ingresses(&settings, &minilm(), None);
        let served = ingress(&settings, &minilm(), None);
        assert_eq!(predict.metadata.name, served.metadata.name);
        assert!(served
            .metadata
            .annotations
            .unwrap()
            .contains_key(NGINX_REWRITE));
        assert_eq!(predict.metadata.annotations, None);
        assert_eq!(
            backends(&predict),
            [
                (
                    "/inference/minilm/predict".to_owned(),
                    "so1s-api".to_owned()
                ),
                ("/inference/predict".to_owned(), "so1s-api".to_owned()),
            ]
        );
        assert_eq!(oip.metadata.name, Some(oip_ingress_name(&minilm())));
        assert_eq!(
            backends(&oip),
            [("/v2/models/minilm".to_owned(), "so1s-api".to_owned())]
        );
    }
}
