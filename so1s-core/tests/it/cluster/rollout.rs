//! Rollouts of one version on the API double: applied, completed, a no-op again, rolled
//! back when the image cannot be pulled or readiness never comes, scaled to zero and woken.

use super::*;

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
    assert_eq!(
        lines(&cluster),
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

#[tokio::test]
async fn scaled_to_zero_the_ingresses_go_to_the_gateway_and_a_wake_brings_the_model_back() {
    let cluster = Cluster::new().await;
    let controller = deployment_controller(&cluster, |_| Pods::Ready);
    let routes = Routes::default();
    let rollout = rollout(&cluster, &routes);
    let recorded = EventLog::default();
    let events = recorded.events(Stage::Rollout);
    rollout.deploy(&target(1), &events).await.unwrap();
    assert!(rollout.scales_to_zero());
    cluster.clear();

    assert!(rollout.scale_to_zero(&minilm(), &events).await.unwrap());
    assert!(routes.is_parked(&minilm()));
    assert!(rollout.status(&minilm()).await.is_none());
    let writes = cluster.writes();
    assert_eq!(
        lines(&cluster),
        [
            "PATCH /apis/networking.k8s.io/v1/namespaces/so1s/ingresses/so1s-minilm",
            "PATCH /apis/networking.k8s.io/v1/namespaces/so1s/ingresses/so1s-minilm-v2",
            "PATCH /apis/apps/v1/namespaces/so1s/deployments/so1s-minilm",
        ]
    );
    // Both Ingresses to the api server's Service, the predict one without the rewrite.
    for ingress in &writes[..2] {
        for path in ingress.body["spec"]["rules"][0]["http"]["paths"]
            .as_array()
            .unwrap()
        {
            assert_eq!(path["backend"]["service"]["name"], "so1s-api", "{path}");
        }
        assert!(ingress.body["metadata"]["annotations"].is_null());
    }
    assert_eq!(writes[2].content_type, "application/merge-patch+json");
    assert_eq!(writes[2].body, json!({"spec": {"replicas": 0}}));
    assert!(!rollout.scale_to_zero(&minilm(), &events).await.unwrap());

    // The wake: back to one replica, followed until complete, then routed and the
    // Ingresses pointed at the model's Service again.
    cluster.clear();
    assert!(rollout.wake(&minilm(), &events).await.unwrap());
    controller.abort();
    assert!(!routes.is_parked(&minilm()));
    assert_eq!(
        routes.url(&minilm(), v(1)).as_deref(),
        Some("http://so1s-minilm.so1s.svc:80")
    );
    let writes = cluster.writes();
    assert_eq!(writes[0].body, json!({"spec": {"replicas": 1}}));
    let last = &writes[writes.len() - 2];
    assert_eq!(
        last.body["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "so1s-minilm"
    );
    assert_eq!(
        last.body["metadata"]["annotations"]["nginx.ingress.kubernetes.io/rewrite-target"],
        "/predict"
    );
    assert!(
        !rollout.wake(&minilm(), &events).await.unwrap(),
        "awake already"
    );
    assert!(
        recorded.text().contains("scaled to 0"),
        "{}",
        recorded.text()
    );
}
