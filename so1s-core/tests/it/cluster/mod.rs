//! The Kubernetes backends driven through a real `kube::Client` against the API double, the
//! test playing the Deployment and Job controllers. Each scenario checks the requests made,
//! not only the outcome.

mod build;
mod double;
mod rollout;
mod split;

use double::Cluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use so1s_core::build::{Artifact, ImageBuilder, KubeBuildConfig, KubeImageBuilder};
use so1s_core::events::{EventLog, Events, Stage};
use so1s_core::kubernetes::manifests::Autoscale;
use so1s_core::kubernetes::manifests::{BuildMode, BuildSettings, ClusterSettings};
use so1s_core::rollout::{
    Arm, KubeRollout, KubeRolloutConfig, Pick, Rollout, Routes, Split, Target,
};
use so1s_core::store::{ArchiveFormat, StoredVersion};
use so1s_core::{ModelName, VersionId};
use std::time::Duration;

const NS: &str = "so1s";

/// The writes so1s made to the double, as `METHOD path` lines.
fn lines(cluster: &Cluster) -> Vec<String> {
    cluster
        .writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn minilm() -> ModelName {
    ModelName::parse("minilm").unwrap()
}

fn v(n: u32) -> VersionId {
    VersionId::parse(&format!("v{n}")).unwrap()
}

fn target(n: u32) -> Target {
    Target {
        model: minilm(),
        version: v(n),
        artifact: Artifact::Image {
            reference: format!("registry.test/so1s/minilm:v{n}"),
            id: None,
            precision: None,
        },
    }
}

fn settings() -> ClusterSettings {
    ClusterSettings {
        default_model: Some(minilm()),
        progress_deadline: Duration::from_secs(2),
        ..ClusterSettings::default()
    }
}

fn rollout(cluster: &Cluster, routes: &Routes) -> KubeRollout {
    let mut config = KubeRolloutConfig::new(settings());
    config.poll_interval = Duration::from_millis(10);
    KubeRollout::new(cluster.client.clone(), config, routes.clone())
}

/// How the pretend Deployment controller treats a new generation.
#[derive(Clone, Copy, PartialEq)]
enum Pods {
    /// Ready at once.
    Ready,
    /// The image cannot be pulled.
    ImagePullFails,
    /// Running, never ready; the controller reports the deadline.
    NeverReady,
}

/// Plays the Deployment controller for the model's Deployments (main and canary): each new
/// generation gets a pod of its version and a status according to `behaviour(image)`.
fn deployment_controller(
    cluster: &Cluster,
    behaviour: impl Fn(&str) -> Pods + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let deployments: Api<Deployment> = Api::namespaced(cluster.fake.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(cluster.fake.clone(), NS);
    tokio::spawn(async move {
        let mut handled = std::collections::HashMap::new();
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            for name in ["so1s-minilm", "so1s-minilm-canary"] {
                let Ok(Some(deployment)) = deployments.get_opt(name).await else {
                    continue;
                };
                let generation = deployment.metadata.generation.unwrap_or(0);
                if handled.get(name) == Some(&generation) {
                    continue;
                }
                handled.insert(name, generation);
                let template = deployment.spec.as_ref().unwrap().template.clone();
                let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
                let image = template.spec.as_ref().unwrap().containers[0]
                    .image
                    .clone()
                    .unwrap();
                let version = labels["io.so1s.version"].clone();
                let behaviour = behaviour(&image);
                let pod_name = format!("{name}-{version}-{generation}");
                let (container_state, ready) = match behaviour {
                    Pods::Ready => (json!({"running": {}}), "True"),
                    Pods::ImagePullFails => (
                        json!({"waiting": {"reason": "ImagePullBackOff",
                        "message": format!("Back-off pulling image \"{image}\"")}}),
                        "False",
                    ),
                    Pods::NeverReady => (json!({"running": {}}), "False"),
                };
                let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": NS, "labels": labels},
                "spec": {"containers": [{"name": "predict", "image": image}]},
                "status": {
                    "phase": if behaviour == Pods::ImagePullFails { "Pending" } else { "Running" },
                    "conditions": [{"type": "Ready", "status": ready,
                        "message": if ready == "False" { "containers with unready status: [predict]" } else { "" }}],
                    "containerStatuses": [{"name": "predict", "image": image, "imageID": "",
                        "ready": ready == "True", "restartCount": 0, "state": container_state}]
                }
            }))
            .unwrap();
                let _ = pods.create(&PostParams::default(), &pod).await;
                let status = match behaviour {
                    Pods::Ready => json!({"observedGeneration": generation, "replicas": 1,
                    "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                    "conditions": [
                        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                         "message": "ReplicaSet has successfully progressed."}]}),
                    Pods::ImagePullFails => json!({"observedGeneration": generation, "replicas": 2,
                    "updatedReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1,
                    "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}),
                    Pods::NeverReady => json!({"observedGeneration": generation, "replicas": 2,
                    "updatedReplicas": 1, "availableReplicas": 1, "unavailableReplicas": 1,
                    "conditions": [{"type": "Progressing", "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": "ReplicaSet \"so1s-minilm-abc\" has timed out progressing."}]}),
                };
                deployments
                    .patch_status(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": status})),
                    )
                    .await
                    .unwrap();
            }
        }
    })
}

fn deployment_applies(cluster: &Cluster) -> Vec<double::Request> {
    cluster
        .writes()
        .into_iter()
        .filter(|r| {
            r.method == "PATCH" && r.path == "/apis/apps/v1/namespaces/so1s/deployments/so1s-minilm"
        })
        .collect()
}

fn image_of(apply: &double::Request) -> &str {
    apply.body["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}
