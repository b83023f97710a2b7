//! The Kubernetes backends driven through a real `kube::Client` against the API double, the
//! test playing the Deployment and Job controllers. Each scenario checks the requests made,
//! not only the outcome.

mod double;

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

#[tokio::test]
async fn a_rollout_applies_deployment_service_and_ingress_and_completes() {
    let cluster = Cluster::new().await;
    let controller = deployment_controller(&cluster, |_| Pods::Ready);
    let routes = Routes::default();
    let recorded = EventLog::default();
    let deployed = rollout(&cluster, &routes)
        .deploy(&target(1), &recorded.events(Stage::Rollout))
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), recorded.text()));
    controller.abort();
    assert_eq!(deployed.endpoint, "http://so1s-minilm.so1s.svc:80");
    assert_eq!(routes.version(&minilm()), Some(v(1)));

    let writes = cluster.writes();
    let lines: Vec<String> = writes
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        lines,
        [
            "PATCH /apis/apps/v1/namespaces/so1s/deployments/so1s-minilm",
            "PATCH /api/v1/namespaces/so1s/services/so1s-minilm",
            "PATCH /apis/networking.k8s.io/v1/namespaces/so1s/ingresses/so1s-minilm",
            "PATCH /apis/networking.k8s.io/v1/namespaces/so1s/ingresses/so1s-minilm-v2",
        ]
    );
    for write in &writes {
        assert_eq!(
            write.content_type,
            "application/apply-patch+yaml",
            "{}",
            write.line()
        );
        assert!(
            write.query.contains("fieldManager=so1s"),
            "{}",
            write.line()
        );
        assert!(write.query.contains("force=true"), "{}", write.line());
    }
    let deployment = &writes[0].body;
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(image_of(&writes[0]), "registry.test/so1s/minilm:v1");
    assert_eq!(
        deployment["metadata"]["annotations"]["so1s.io/version"],
        "v1"
    );
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    assert_eq!(deployment["spec"]["progressDeadlineSeconds"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    // The Service and Ingress are owned by the applied Deployment (its uid from the answer).
    let uid = Api::<Deployment>::namespaced(cluster.fake.clone(), NS)
        .get("so1s-minilm")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    for owned in &writes[1..] {
        assert_eq!(
            owned.body["metadata"]["ownerReferences"][0]["uid"],
            uid.as_str()
        );
        assert_eq!(
            owned.body["metadata"]["ownerReferences"][0]["kind"],
            "Deployment"
        );
    }
    let paths: Vec<&str> = writes[2].body["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/inference/minilm/predict", "/inference/predict"]);
    assert_eq!(writes[2].body["spec"]["ingressClassName"], "nginx");
    assert!(
        recorded.text().contains("rollout of minilm v1 complete"),
        "{}",
        recorded.text()
    );
}

#[tokio::test]
async fn applying_the_live_version_again_sends_nothing() {
    let cluster = Cluster::new().await;
    let controller = deployment_controller(&cluster, |_| Pods::Ready);
    let routes = Routes::default();
    let first = rollout(&cluster, &routes);
    first
        .deploy(&target(1), &Events::discard(Stage::Rollout))
        .await
        .unwrap();
    cluster.clear();
    // Another api server process (a restart) and the same version: reads only.
    let recorded = EventLog::default();
    let again = rollout(&cluster, &Routes::default())
        .resume(&target(1), &recorded.events(Stage::Rollout))
        .await
        .unwrap();
    controller.abort();
    assert_eq!(again.target, target(1));
    assert!(cluster.writes().is_empty(), "{:?}", cluster.writes());
    assert_eq!(
        cluster
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect::<Vec<_>>(),
        ["GET /apis/apps/v1/namespaces/so1s/deployments/so1s-minilm"]
    );
    assert!(
        recorded.text().contains("nothing to apply"),
        "{}",
        recorded.text()
    );
}

/// Deploys v1 (its pods get ready), then v2, whose pods do what `v2_pods` says, and which
/// must fail. Returns the gateway's routes, the events of v2's rollout and its error; the
/// double's record then holds v2's requests only.
async fn v2_fails_after_v1(cluster: &Cluster, v2_pods: Pods) -> (Routes, EventLog, String) {
    let controller = deployment_controller(cluster, move |image| {
        if image.ends_with(":v2") {
            v2_pods
        } else {
            Pods::Ready
        }
    });
    let routes = Routes::default();
    let so1s = rollout(cluster, &routes);
    so1s.deploy(&target(1), &Events::discard(Stage::Rollout))
        .await
        .unwrap();
    cluster.clear();
    let recorded = EventLog::default();
    let error = so1s
        .deploy(&target(2), &recorded.events(Stage::Rollout))
        .await
        .unwrap_err()
        .chain();
    controller.abort();
    (routes, recorded, error)
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_rolled_back_with_the_reason() {
    let cluster = Cluster::new().await;
    let (routes, recorded, error) = v2_fails_after_v1(&cluster, Pods::ImagePullFails).await;
    assert!(error.contains("ImagePullBackOff"), "{error}");
    assert!(error.contains("registry.test/so1s/minilm:v2"), "{error}");
    let applies = deployment_applies(&cluster);
    assert_eq!(applies.len(), 2, "v2, then back to v1");
    assert_eq!(image_of(&applies[0]), "registry.test/so1s/minilm:v2");
    assert_eq!(image_of(&applies[1]), "registry.test/so1s/minilm:v1");
    assert_eq!(
        applies[1].body["metadata"]["annotations"]["so1s.io/version"],
        "v1"
    );
    // The pods of v2 were read to find the reason.
    assert!(cluster.requests().iter().any(|r| r.method == "GET"
        && r.path == "/api/v1/namespaces/so1s/pods"
        && r.query.contains("io.so1s.version%3Dv2")));
    assert!(
        recorded.text().contains("rolling so1s-minilm back to v1"),
        "{}",
        recorded.text()
    );
    assert_eq!(
        routes.version(&minilm()),
        Some(v(1)),
        "the gateway stays on v1"
    );
}

#[tokio::test]
async fn readiness_that_never_comes_hits_the_deadline_and_rolls_back() {
    let cluster = Cluster::new().await;
    let (routes, _, error) = v2_fails_after_v1(&cluster, Pods::NeverReady).await;
    assert!(error.contains("did not complete within 2 s"), "{error}");
    assert!(error.contains("timed out progressing"), "{error}");
    assert!(error.contains("not ready"), "{error}");
    let applies = deployment_applies(&cluster);
    assert_eq!(
        image_of(applies.last().unwrap()),
        "registry.test/so1s/minilm:v1"
    );
    assert_eq!(routes.version(&minilm()), Some(v(1)));
}

#[tokio::test]
async fn a_first_version_that_fails_leaves_nothing_behind() {
    let cluster = Cluster::new().await;
    let controller = deployment_controller(&cluster, |_| Pods::ImagePullFails);
    let routes = Routes::default();
    let error = rollout(&cluster, &routes)
        .deploy(&target(1), &Events::discard(Stage::Rollout))
        .await
        .unwrap_err();
    controller.abort();
    assert!(error.to_string().contains("ImagePullBackOff"));
    let last = cluster.writes().pop().unwrap();
    assert_eq!(last.method, "DELETE");
    assert_eq!(
        last.path,
        "/apis/apps/v1/namespaces/so1s/deployments/so1s-minilm"
    );
    assert!(routes.version(&minilm()).is_none());
}

// ---------------------------------------------------------------------------------------
// Build Jobs

fn stored(n: u32) -> StoredVersion {
    StoredVersion {
        model: minilm(),
        version: v(n),
        sha256: "ab".repeat(32),
        size: 1000,
        format: ArchiveFormat::TarGz,
        stored_at: 0,
    }
}

fn builder(cluster: &Cluster) -> KubeImageBuilder {
    KubeImageBuilder::new(
        cluster.client.clone(),
        KubeBuildConfig {
            cluster: settings(),
            build: BuildSettings::new("so1s/so1s:test", "registry.test", BuildMode::Kaniko),
            store_root: "/data".into(),
            poll_interval: Duration::from_millis(10),
        },
    )
}

/// Plays the Job controller and kubelet for the build Job `job` (a new one, if `previous`
/// names the uid of an earlier Job of that name): a pod owned by it with log lines, then the
/// Job's final status. Returns the Job's uid.
fn job_controller(
    cluster: &Cluster,
    job: &'static str,
    previous: Option<String>,
    pod_status: Value,
    job_status: Value,
) -> tokio::task::JoinHandle<String> {
    let jobs: Api<Job> = Api::namespaced(cluster.fake.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(cluster.fake.clone(), NS);
    let cluster = cluster.clone();
    tokio::spawn(async move {
        let uid = loop {
            if let Ok(Some(found)) = jobs.get_opt(job).await {
                let uid = found.metadata.uid.unwrap();
                if Some(&uid) != previous.as_ref() {
                    break uid;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let pod_name = format!("{job}-{}", &uid[..5]);
        cluster.append_log(
            &pod_name,
            "prepare",
            "unpacking the tar.gz archive\nsmoke prediction: a 384-value embedding\n",
        );
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": NS, "labels": {"job-name": job},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job,
                    "uid": uid, "controller": true}]},
            "spec": {"containers": [{"name": "build", "image": "kaniko"}]},
            "status": pod_status,
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // More lines while the build runs, polls in between: each must reach the events once.
        cluster.append_log(&pod_name, "prepare", "context ready in /workspace\n");
        cluster.append_log(
            &pod_name,
            "build",
            "INFO[0001] Pushing image to registry.test/so1s/minilm\n",
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        jobs.patch_status(
            job,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": job_status })),
        )
        .await
        .unwrap();
        uid
    })
}

#[tokio::test]
async fn a_build_job_is_created_followed_and_its_logs_streamed() {
    let cluster = Cluster::new().await;
    let controller = job_controller(
        &cluster,
        "so1s-build-minilm-v3",
        None,
        json!({"phase": "Succeeded"}),
        json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
    );
    let recorded = EventLog::default();
    let artifact = builder(&cluster)
        .build(
            &stored(3),
            "/data/store/minilm/v3.tar.gz".as_ref(),
            &recorded.events(Stage::Build),
        )
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), recorded.text()));
    controller.await.unwrap();
    assert_eq!(
        artifact,
        Artifact::Image {
            reference: "registry.test/so1s/minilm:v3".into(),
            id: None
        }
    );
    let log = recorded.text();
    assert!(
        log.contains("[prepare] smoke prediction: a 384-value embedding"),
        "{log}"
    );
    assert!(log.contains("[build] INFO[0001] Pushing image"), "{log}");
    for line in [
        "[prepare] unpacking",
        "[prepare] context ready",
        "[build] INFO[0001] Pushing",
    ] {
        assert_eq!(log.matches(line).count(), 1, "each line once: {log}");
    }

    let writes = cluster.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].method, "POST");
    assert_eq!(writes[0].path, "/apis/batch/v1/namespaces/so1s/jobs");
    let job = &writes[0].body;
    assert_eq!(job["metadata"]["name"], "so1s-build-minilm-v3");
    assert_eq!(job["spec"]["backoffLimit"], 1);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 3600);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let prepare = &pod["initContainers"][0];
    assert_eq!(prepare["image"], "so1s/so1s:test");
    let args: Vec<&str> = prepare["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--archive", "/store/store/minilm/v3.tar.gz"]),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--sha256" && w[1] == "ab".repeat(32)),
        "{args:?}"
    );
    let build = &pod["containers"][0];
    assert!(build["args"]
        .as_array()
        .unwrap()
        .contains(&json!("--destination=registry.test/so1s/minilm:v3")));
    let claim = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "store")
        .unwrap();
    assert_eq!(claim["persistentVolumeClaim"]["claimName"], "so1s-store");
    assert_eq!(claim["persistentVolumeClaim"]["readOnly"], true);
    // Logs were read from the Job's pods, by container, with timestamps, and once a line
    // was read, only from its second on.
    let log_reads: Vec<_> = cluster
        .requests()
        .into_iter()
        .filter(|r| {
            r.path
                .starts_with("/api/v1/namespaces/so1s/pods/so1s-build-minilm-v3-")
                && r.path.ends_with("/log")
        })
        .collect();
    assert!(log_reads
        .iter()
        .any(|r| r.query.contains("container=build")));
    assert!(log_reads
        .iter()
        .all(|r| r.query.contains("timestamps=true")));
    assert!(
        log_reads
            .iter()
            .any(|r| r.query.contains("container=prepare") && r.query.contains("sinceTime=")),
        "{log_reads:?}"
    );
}

#[tokio::test]
async fn a_failed_build_job_reports_why_and_a_retry_replaces_it() {
    let cluster = Cluster::new().await;
    let controller = job_controller(
        &cluster,
        "so1s-build-minilm-v4",
        None,
        json!({"phase": "Failed", "containerStatuses": [{"name": "build", "image": "kaniko",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        json!({"failed": 2, "conditions": [{"type": "Failed", "status": "True",
            "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}),
    );
    let recorded = EventLog::default();
    let so1s = builder(&cluster);
    let error = so1s
        .build(
            &stored(4),
            "/data/store/minilm/v4.tar.gz".as_ref(),
            &recorded.events(Stage::Build),
        )
        .await
        .unwrap_err()
        .chain();
    let failed_uid = controller.await.unwrap();
    assert!(
        error.contains("build Job so1s-build-minilm-v4 failed"),
        "{error}"
    );
    assert!(error.contains("BackoffLimitExceeded"), "{error}");
    assert!(error.contains("OOMKilled, exit code 137"), "{error}");
    assert!(
        recorded.text().contains("[prepare] smoke prediction"),
        "{}",
        recorded.text()
    );

    // A retry does not start a second build next to the failed one: it replaces it.
    cluster.clear();
    let controller = job_controller(
        &cluster,
        "so1s-build-minilm-v4",
        Some(failed_uid),
        json!({"phase": "Succeeded"}),
        json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
    );
    let recorded = EventLog::default();
    let built = so1s
        .build(
            &stored(4),
            "/data/store/minilm/v4.tar.gz".as_ref(),
            &recorded.events(Stage::Build),
        )
        .await;
    controller.await.unwrap();
    built.unwrap_or_else(|e| panic!("{}\n{}", e.chain(), recorded.text()));
    let writes: Vec<String> = cluster
        .writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        writes,
        [
            "DELETE /apis/batch/v1/namespaces/so1s/jobs/so1s-build-minilm-v4",
            "POST /apis/batch/v1/namespaces/so1s/jobs",
        ]
    );
    assert!(
        recorded.text().contains("replacing the failed build Job"),
        "{}",
        recorded.text()
    );
}

#[tokio::test]
async fn an_archive_outside_the_store_claim_is_refused_before_any_request() {
    let cluster = Cluster::new().await;
    let error = builder(&cluster)
        .build(
            &stored(1),
            "/elsewhere/v1.tar.gz".as_ref(),
            &Events::discard(Stage::Build),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("not in the store claim"), "{error}");
    assert!(cluster.requests().is_empty());
}

fn arm(n: u32, weight: u32) -> Arm {
    Arm {
        target: target(n),
        weight,
    }
}

/// The writes' `METHOD path` lines.
fn lines(cluster: &Cluster) -> Vec<String> {
    cluster
        .writes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn a_split_runs_a_canary_beside_the_main_deployment_and_promote_removes_it() {
    let cluster = Cluster::new().await;
    let controller = deployment_controller(&cluster, |_| Pods::Ready);
    let routes = Routes::default();
    let rollout = rollout(&cluster, &routes);
    let recorded = EventLog::default();
    let events = recorded.events(Stage::Rollout);
    rollout.deploy(&target(1), &events).await.unwrap();
    cluster.clear();

    // v2 joins as the canary with 30%: v1 stays on the main Deployment, untouched.
    let deployed = rollout
        .split(&minilm(), &[arm(1, 70), arm(2, 30)], &events)
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), recorded.text()));
    let endpoints: Vec<&str> = deployed.iter().map(|d| d.endpoint.as_str()).collect();
    assert_eq!(
        endpoints,
        [
            "http://so1s-minilm.so1s.svc:80",
            "http://so1s-minilm-canary.so1s.svc:80"
        ]
    );
    assert_eq!(
        lines(&cluster),
        [
            "PATCH /apis/apps/v1/namespaces/so1s/deployments/so1s-minilm-canary",
            "PATCH /api/v1/namespaces/so1s/services/so1s-minilm-canary",
            "PATCH /apis/networking.k8s.io/v1/namespaces/so1s/ingresses/so1s-minilm-canary",
        ]
    );
    let writes = cluster.writes();
    assert_eq!(image_of(&writes[0]), "registry.test/so1s/minilm:v2");
    let ingress = &writes[2].body;
    let annotations = &ingress["metadata"]["annotations"];
    assert_eq!(annotations["nginx.ingress.kubernetes.io/canary"], "true");
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/canary-weight"],
        "30"
    );
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], "so1s-minilm-canary");
    let canary_uid = Api::<Deployment>::namespaced(cluster.fake.clone(), NS)
        .get("so1s-minilm-canary")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    assert_eq!(
        ingress["metadata"]["ownerReferences"][0]["uid"],
        canary_uid.as_str()
    );
    // The gateway splits by the same weights, to the two Services.
    assert_eq!(
        routes.split(&minilm()),
        Some(Split::new([(v(1), 70), (v(2), 30)]).unwrap())
    );
    let canary = routes.acquire(&minilm(), Pick::Version(v(2))).unwrap();
    assert_eq!(
        canary.upstream().url,
        "http://so1s-minilm-canary.so1s.svc:80"
    );
    drop(canary);

    // New weights, even with v2 the heavier: only the canary Ingress changes.
    cluster.clear();
    rollout
        .split(&minilm(), &[arm(1, 40), arm(2, 60)], &events)
        .await
        .unwrap();
    let changed: Vec<String> = lines(&cluster);
    assert_eq!(
        changed,
        [
            "PATCH /api/v1/namespaces/so1s/services/so1s-minilm-canary",
            "PATCH /apis/networking.k8s.io/v1/namespaces/so1s/ingresses/so1s-minilm-canary",
        ]
    );
    assert_eq!(
        cluster.writes()[1].body["metadata"]["annotations"]
            ["nginx.ingress.kubernetes.io/canary-weight"],
        "60"
    );
    // Three versions do not fit nginx's one canary.
    let err = rollout
        .split(&minilm(), &[arm(1, 40), arm(2, 30), arm(3, 30)], &events)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("holds two versions"), "{err}");

    // Promote v2: the main Deployment rolls to it, then the canary goes, Ingress first.
    cluster.clear();
    rollout.deploy(&target(2), &events).await.unwrap();
    controller.abort();
    assert_eq!(
        lines(&cluster),
        [
            "PATCH /apis/apps/v1/namespaces/so1s/deployments/so1s-minilm",
            "PATCH /api/v1/namespaces/so1s/services/so1s-minilm",
            "PATCH /apis/networking.k8s.io/v1/namespaces/so1s/ingresses/so1s-minilm",
            "PATCH /apis/networking.k8s.io/v1/namespaces/so1s/ingresses/so1s-minilm-v2",
            "DELETE /apis/networking.k8s.io/v1/namespaces/so1s/ingresses/so1s-minilm-canary",
            "DELETE /api/v1/namespaces/so1s/services/so1s-minilm-canary",
            "DELETE /apis/apps/v1/namespaces/so1s/deployments/so1s-minilm-canary",
        ]
    );
    assert_eq!(
        image_of(&cluster.writes()[0]),
        "registry.test/so1s/minilm:v2"
    );
    assert_eq!(routes.split(&minilm()), Some(Split::single(v(2))));
}

#[tokio::test]
async fn a_canary_that_cannot_start_is_removed_and_the_main_version_keeps_all_traffic() {
    let cluster = Cluster::new().await;
    let controller = deployment_controller(&cluster, |image| match image.ends_with(":v2") {
        true => Pods::ImagePullFails,
        false => Pods::Ready,
    });
    let routes = Routes::default();
    let rollout = rollout(&cluster, &routes);
    let recorded = EventLog::default();
    let events = recorded.events(Stage::Rollout);
    rollout.deploy(&target(1), &events).await.unwrap();
    let err = rollout
        .split(&minilm(), &[arm(1, 90), arm(2, 10)], &events)
        .await
        .unwrap_err();
    controller.abort();
    assert!(err.to_string().contains("ImagePullBackOff"), "{err}");
    assert!(
        recorded
            .text()
            .contains("removing the canary Deployment so1s-minilm-canary"),
        "{}",
        recorded.text()
    );
    let canary = Api::<Deployment>::namespaced(cluster.fake.clone(), NS)
        .get_opt("so1s-minilm-canary")
        .await
        .unwrap();
    assert!(canary.is_none());
    assert_eq!(routes.split(&minilm()), Some(Split::single(v(1))));
}

#[tokio::test]
async fn autoscaling_applies_a_horizontal_pod_autoscaler_for_the_deployment() {
    let cluster = Cluster::new().await;
    let controller = deployment_controller(&cluster, |_| Pods::Ready);
    let mut config = KubeRolloutConfig::new(ClusterSettings {
        autoscale: Some(Autoscale::parse("2:5:60").unwrap()),
        ..settings()
    });
    config.poll_interval = Duration::from_millis(10);
    let rollout = KubeRollout::new(cluster.client.clone(), config, Routes::default());
    let recorded = EventLog::default();
    rollout
        .deploy(&target(1), &recorded.events(Stage::Rollout))
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), recorded.text()));
    controller.abort();
    let writes = cluster.writes();
    let hpa = writes
        .iter()
        .find(|w| w.path.ends_with("/horizontalpodautoscalers/so1s-minilm"))
        .unwrap_or_else(|| panic!("{:?}", lines(&cluster)));
    assert_eq!(
        hpa.path,
        "/apis/autoscaling/v2/namespaces/so1s/horizontalpodautoscalers/so1s-minilm"
    );
    assert_eq!(hpa.body["spec"]["minReplicas"], 2);
    assert_eq!(hpa.body["spec"]["maxReplicas"], 5);
    assert_eq!(hpa.body["spec"]["scaleTargetRef"]["name"], "so1s-minilm");
    assert_eq!(
        hpa.body["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    // The Deployment leaves its replicas to the autoscaler.
    assert!(
        writes[0].body["spec"].get("replicas").is_none(),
        "{}",
        writes[0].body
    );
}
