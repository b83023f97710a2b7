//! Weighted traffic between versions on the embedded default: `so1s serve` with two real
//! `so1s-predict` children behind the gateway, split by `so1s traffic`, collapsed by
//! `so1s promote`, with clients predicting through every change.

mod common;

use common::api::{minilm_archive, Api, ClientLoop};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::Command;

/// `so1s ARGS` against `api` with its admin token; its stdout as JSON.
fn so1s(api: &Api, args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_so1s"))
        .args(args)
        .args(["--server", &api.base])
        .env("SO1S_TOKEN", &api.admin_token)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "so1s {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("so1s {args:?}: {e}: {stdout}"))
}

/// The `so1s-predict` children of the process `parent`.
fn predict_children(parent: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // pid (comm) state ppid ...
            let Some((comm, rest)) = stat.split_once(") ") else {
                return false;
            };
            let ppid = rest.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok());
            comm.ends_with("(so1s-predict") && ppid == Some(parent)
        })
        .count()
}

/// Which versions answer `n` requests through the gateway (with `headers`).
async fn versions_answering(
    api: &Api,
    n: usize,
    headers: &[(&str, &str)],
) -> HashMap<String, usize> {
    let client = reqwest::Client::new();
    let mut seen = HashMap::new();
    for i in 0..n {
        let mut request = client
            .post(format!("{}/inference/minilm/predict", api.base))
            .json(&json!({"text": format!("request {i}")}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let version = response.headers()["so1s-model-version"]
            .to_str()
            .unwrap()
            .to_owned();
        *seen.entry(version).or_default() += 1;
    }
    seen
}

/// The status of `GET /v2/models/minilm/versions/{version}/ready` through the gateway.
async fn ready(api: &Api, version: &str) -> u16 {
    let url = format!("{}/v2/models/minilm/versions/{version}/ready", api.base);
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_split_shares_requests_by_weight_and_promote_collapses_it_without_a_failed_request() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let api = Api::start(&data);
    let parent = api.child.id();
    for version in ["v1", "v2"] {
        api.upload("minilm", minilm_archive()).await;
        assert_eq!(api.settle("minilm", version).await["state"], "live");
    }
    assert_eq!(api.version("minilm", "v1").await["state"], "retired");
    assert_eq!(predict_children(parent), 1);
    let clients = ClientLoop::start(&api, "minilm", 2);

    // v1 comes back for 70% beside v2's 30%: both run, both are live with their weights.
    let split = so1s(&api, &["traffic", "minilm", "v1=70", "v2=30"]);
    assert_eq!(split, json!({"v1": 70, "v2": 30}));
    assert_eq!(so1s(&api, &["traffic", "minilm"]), split);
    assert_eq!(predict_children(parent), 2);
    let model = api.model("minilm").await;
    assert_eq!(model["traffic"], split, "{model}");
    assert_eq!(model["live_version"], "v1", "the heaviest: {model}");
    for (version, weight) in [("v1", 70), ("v2", 30)] {
        let record = api.version("minilm", version).await;
        assert_eq!(
            (&record["state"], &record["weight"]),
            (&json!("live"), &json!(weight))
        );
    }

    // 400 requests: each version's share is within 8 points of its weight.
    let seen = versions_answering(&api, 400, &[]).await;
    let share = |version: &str| 100.0 * seen.get(version).copied().unwrap_or(0) as f64 / 400.0;
    assert!((share("v1") - 70.0).abs() <= 8.0, "{seen:?}");
    assert!((share("v2") - 30.0).abs() <= 8.0, "{seen:?}");
    // A session stays on one version; sessions spread over both.
    let mut sessions = HashMap::new();
    for session in 0..20 {
        let key = format!("user-{session}");
        let seen = versions_answering(&api, 5, &[("x-so1s-session", &key)]).await;
        assert_eq!(seen.len(), 1, "session {key} moved: {seen:?}");
        *sessions
            .entry(seen.into_keys().next().unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    // A version named through the Open Inference Protocol is reached while it is in the split.
    assert_eq!(
        (ready(&api, "v1").await, ready(&api, "v2").await),
        (200, 200)
    );

    // A new upload stays built while the split stands; its event stream ends there.
    api.upload("minilm", minilm_archive()).await;
    let events = api.events("minilm", "v3").await;
    assert_eq!(api.version("minilm", "v3").await["state"], "built");
    assert!(
        events.contains("traffic is split (v1 70%, v2 30%)"),
        "{events}"
    );
    assert_eq!(ready(&api, "v3").await, 404);

    // Bad splits are refused with the reason, and change nothing.
    for (body, status, says) in [
        (json!({"v1": 70, "v2": 40}), 422, "add up to 110"),
        (json!({"v1": 70, "v9": 30}), 404, "minilm v9"),
        (json!({"v1": "most"}), 422, "invalid type"),
    ] {
        let response = api
            .client
            .put(format!("{}/v1/models/minilm/traffic", api.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{body}: {error}"
        );
    }
    assert_eq!(so1s(&api, &["traffic", "minilm"]), split);
    let (failed, sent, answered) = clients.stop().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed while the split was set"
    );
    assert!(answered.iter().any(|v| v == "v1") && answered.iter().any(|v| v == "v2"));

    // A restart of the api server brings the whole split back.
    api.stop();
    let api = Api::start(&data);
    let parent = api.child.id();
    assert_eq!(so1s(&api, &["traffic", "minilm"]), split);
    assert_eq!(
        (ready(&api, "v1").await, ready(&api, "v2").await),
        (200, 200)
    );
    assert_eq!(predict_children(parent), 2);
    let clients = ClientLoop::start(&api, "minilm", 2);

    // Promote v2: it takes everything, v1 is stopped and retired.
    let promoted = so1s(&api, &["promote", "minilm", "v2"]);
    assert_eq!(promoted["state"], "live", "{promoted}");
    assert_eq!(so1s(&api, &["traffic", "minilm"]), json!({"v2": 100}));
    assert_eq!(predict_children(parent), 1);
    assert_eq!(api.version("minilm", "v1").await["state"], "retired");
    assert_eq!(
        versions_answering(&api, 50, &[]).await,
        HashMap::from([("v2".to_owned(), 50)])
    );
    assert_eq!(ready(&api, "v1").await, 404);

    let (failed, sent, answered) = clients.stop().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the promotion"
    );
    assert_eq!(answered.last().map(String::as_str), Some("v2"));
}
