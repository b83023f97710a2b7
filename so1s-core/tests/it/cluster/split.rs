//! Traffic splits on the API double: a canary beside the main Deployment, promoted or
//! removed when it cannot start, and autoscaling.

use super::*;

fn arm(n: u32, weight: u32) -> Arm {
    Arm {
        target: target(n),
        weight,
    }
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
