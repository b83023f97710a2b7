//! Build Jobs on the API double: created, followed with their logs streamed, failed with
//! the reason and retried, refused before any request when the archive is outside the claim.

use super::*;

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
            reference: "registry.test/so1s/so1s/minilm:v3".into(),
            id: None,
            precision: None,
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
        .contains(&json!("--destination=registry.test/so1s/so1s/minilm:v3")));
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
