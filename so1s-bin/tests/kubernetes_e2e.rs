//! The Kubernetes rollout against a real cluster: a model image goes live as a Deployment,
//! answers a prediction through its Service, runs a second version as the canary of a split
//! and back, and a version whose image cannot be pulled is rolled back to it. Runs when
//! `SO1S_E2E_KUBE` names the kubeconfig context to use when building the tests (never the
//! current context by default), ignored otherwise; README "Run on Kubernetes" shows how to
//! run it with kind.
//!
//! `SO1S_E2E_IMAGE` names a model image of MiniLM the cluster can run (with kind: build one
//! with `so1s serve --backend docker` and `kind load docker-image` it); `SO1S_E2E_NAMESPACE`
//! (default `so1s-e2e`) must exist.

use so1s_core::build::Artifact;
use so1s_core::events::{Events, Stage};
use so1s_core::kubernetes::manifests::{self, ClusterSettings, Track};
use so1s_core::rollout::{Arm, KubeRollout, KubeRolloutConfig, Rollout, Routes, Split, Target};
use so1s_core::{ModelName, VersionId};
use std::time::Duration;

/// The kubeconfig context to test against (so1s-bin/build.rs, from `SO1S_E2E_KUBE`).
#[cfg(so1s_e2e_kube)]
const CONTEXT: &str = env!("SO1S_E2E_KUBE_CONTEXT");
#[cfg(not(so1s_e2e_kube))]
const CONTEXT: &str = "built without SO1S_E2E_KUBE: no context";

fn target(version: &str, image: &str) -> Target {
    Target {
        model: ModelName::parse("e2e-minilm").unwrap(),
        version: VersionId::parse(version).unwrap(),
        artifact: Artifact::Image {
            reference: image.to_owned(),
            id: None,
            precision: None,
        },
    }
}

#[tokio::test]
#[cfg_attr(
    not(so1s_e2e_kube),
    ignore = "needs a Kubernetes cluster: set SO1S_E2E_KUBE to its kubeconfig context (and SO1S_E2E_IMAGE) when building the tests"
)]
async fn a_model_goes_live_on_a_real_cluster_and_a_bad_image_is_rolled_back() {
    let image = std::env::var("SO1S_E2E_IMAGE").expect("SO1S_E2E_IMAGE: a MiniLM model image");
    let namespace = std::env::var("SO1S_E2E_NAMESPACE").unwrap_or_else(|_| "so1s-e2e".into());
    let context = CONTEXT;
    let client = so1s_core::kubernetes::connect_to(context)
        .await
        .unwrap_or_else(|e| panic!("the kubeconfig context {context}: {}", e.chain()));
    let settings = ClusterSettings {
        namespace: namespace.clone(),
        progress_deadline: Duration::from_secs(120),
        ..ClusterSettings::default()
    };
    let mut config = KubeRolloutConfig::new(settings);
    config.poll_interval = Duration::from_millis(500);
    let routes = Routes::default();
    let rollout = KubeRollout::new(client.clone(), config, routes.clone());
    let events = Events::new(Stage::Rollout, |e| {
        eprintln!("[{:?}] {}", e.kind, e.message)
    });

    let v1 = target("v1", &image);
    rollout.deploy(&v1, &events).await.expect("v1 goes live");
    let predict = |service: String| {
        let request = http::Request::post(format!(
            "/api/v1/namespaces/{namespace}/services/{service}:http/proxy/predict"
        ))
        .header("content-type", "application/json")
        .body(br#"{"text": "Hello world"}"#.to_vec())
        .unwrap();
        let client = client.clone();
        async move {
            let text = client.request_text(request).await.unwrap();
            serde_json::from_str::<serde_json::Value>(&text).unwrap()
        }
    };
    let answer = predict(manifests::model_object_name(&v1.model)).await;
    assert_eq!(answer["result"].as_array().unwrap().len(), 384, "{answer}");

    // A split: the same image as v2, beside v1 as the canary with 10% of the requests.
    let arms = [
        Arm {
            target: v1.clone(),
            weight: 90,
        },
        Arm {
            target: target("v2", &image),
            weight: 10,
        },
    ];
    rollout
        .split(&v1.model, &arms, &events)
        .await
        .expect("the canary goes live");
    let answer = predict(Track::Canary.object_name(&v1.model)).await;
    assert_eq!(answer["result"].as_array().unwrap().len(), 384, "{answer}");
    rollout
        .deploy(&v1, &events)
        .await
        .expect("back to v1 alone");
    assert_eq!(routes.split(&v1.model), Some(Split::single(v1.version)));

    let broken = target("v2", "so1s.invalid/no-such-image:v2");
    let error = rollout.deploy(&broken, &events).await.unwrap_err().chain();
    assert!(
        error.contains("ErrImagePull") || error.contains("ImagePullBackOff"),
        "{error}"
    );
    assert_eq!(routes.version(&v1.model), Some(v1.version));
    rollout.deploy(&v1, &events).await.expect("v1 still live");
    rollout.undeploy(&v1.model).await.unwrap();
}
