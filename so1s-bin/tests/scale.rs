//! Scale to zero on the embedded default, against the real binaries: a model with an idle
//! policy has its predict server stopped after that long without a request; the requests
//! that wake it are held by the gateway and all answered; the policy and the idle state
//! outlive a restart of `so1s serve`; a wake that cannot start the model fails cleanly.

mod common;

use common::api::{minilm_archive, Api};
use common::{hello_world_cosine_of, live_pid};
use serde_json::{json, Value};
use std::time::Duration;

/// Whether process `pid` runs (a zombie does not: its memory has been returned).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The `so1s` CLI against `api`.
fn so1s(api: &Api, data: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_so1s"))
        .args(args)
        .env("SO1S_SERVER", &api.base)
        .env("SO1S_DATA_DIR", data)
        .output()
        .unwrap()
}

async fn patch(api: &Api, name: &str, body: Value) -> reqwest::Response {
    api.client
        .patch(format!("{}/v1/models/{name}", api.base))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_idle_model_scales_to_zero_and_every_request_that_wakes_it_is_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let api = Api::start(&data);
    api.upload("minilm", minilm_archive()).await;
    assert_eq!(api.settle("minilm", "v1").await["state"], "live");
    let model = api.model("minilm").await;
    assert_eq!(
        model["scale"],
        json!({"idle_after_s": 0, "running": true, "wakeups": 0, "waking": false,
               "last_request_at": model["scale"]["last_request_at"]})
    );
    let pid = live_pid(&model).expect("a live predict server");

    // The policy is checked, then set.
    let refused = patch(&api, "minilm", json!({"idle_after_s": -1})).await;
    assert_eq!(refused.status(), 422);
    let refused = patch(&api, "minilm", json!({"idle_after": 1})).await;
    assert_eq!(refused.status(), 422, "an unknown field is refused");
    let unknown = patch(&api, "nobody", json!({"idle_after_s": 1})).await;
    assert_eq!(unknown.status(), 404);
    let set = patch(&api, "minilm", json!({"idle_after_s": 3600})).await;
    assert_eq!(set.status(), 200);
    let set: Value = set.json().await.unwrap();
    assert_eq!(set["idle_after_s"], 3600, "{set}");
    // The CLI sets it too: `so1s scale NAME --idle-after 1s`.
    let cli = so1s(&api, &data, &["scale", "minilm", "--idle-after", "1s"]);
    assert!(cli.status.success(), "{cli:?}");
    let printed: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(printed["idle_after_s"], 1, "{printed}");

    // A second without a request: the predict server is gone, the version still live.
    let idle = api.scaled_to_zero("minilm", "v1", 1).await;
    assert_eq!(idle["live_version"], "v1", "{idle}");
    assert_eq!(idle["scale"]["idle_after_s"], 1);
    assert!(idle["scale"].get("last_request_at").is_none(), "{idle}");
    // Parked first, then drained and stopped (SIGTERM): gone within moments.
    let stopping = std::time::Instant::now();
    while runs(pid) {
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "predict server {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = api.events("minilm", "v1").await;
    assert!(
        events.contains("scaled minilm to zero after 1 s without a request"),
        "{events}"
    );

    // Eight requests at once wake it: every one is answered, with MiniLM's embedding.
    for (status, body) in api.predict_at_once("/inference/minilm/predict", 8).await {
        assert_eq!(status, 200, "{body}");
        assert!(hello_world_cosine_of(&body) > 0.9999, "{body}");
    }
    let awake = api.model("minilm").await;
    assert_eq!(awake["scale"]["running"], true, "{awake}");
    assert_eq!(awake["scale"]["wakeups"], 1, "{awake}");
    let events = api.events("minilm", "v1").await;
    assert!(events.contains("woke minilm in"), "{events}");
    // The api server's metrics count the wake and the scale-down.
    for series in [
        r#"so1s_wakeups_total{model="minilm"}"#,
        r#"so1s_scale_downs_total{model="minilm"}"#,
        r#"so1s_wake_duration_seconds_count{model="minilm"}"#,
        "so1s_running_models",
    ] {
        assert_eq!(api.metric(series).await, Some(1.0), "{series}");
    }

    // Asleep again, then a restart of so1s serve: the policy and the idle state are kept
    // (nothing starts), and the next request wakes it.
    api.scaled_to_zero("minilm", "v1", 2).await;
    api.stop();
    let api = Api::start(&data);
    let restarted = api.model("minilm").await;
    assert_eq!(restarted["scale"]["running"], false, "{restarted}");
    assert_eq!(restarted["scale"]["idle_after_s"], 1, "{restarted}");
    assert_eq!(restarted["live_version"], "v1", "{restarted}");
    // This time the Open Inference Protocol's readiness call wakes it, through the gateway.
    let ready = api
        .client
        .get(format!("{}/v2/models/minilm/ready", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(api.model("minilm").await["scale"]["running"], true);
    for (status, body) in api.predict_at_once("/inference/minilm/predict", 4).await {
        assert_eq!(status, 200, "{body}");
        assert!(hello_world_cosine_of(&body) > 0.9999, "{body}");
    }
    assert_eq!(api.model("minilm").await["scale"]["wakeups"], 2);

    // A wake that cannot start the model (its bundle was removed while it slept): a clear
    // 503 with Retry-After, an event, and no hang.
    let record = api.version("minilm", "v1").await;
    api.scaled_to_zero("minilm", "v1", 3).await;
    let bundle = record["artifact"]["dir"].as_str().unwrap();
    std::fs::remove_dir_all(bundle).unwrap();
    let response = api
        .predict("/inference/minilm/predict", "Hello world")
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_type"], "wake_failed", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("scaled to zero and not awake"),
        "{body}"
    );
    let events = api.events("minilm", "v1").await;
    assert!(events.contains("could not wake minilm"), "{events}");
    assert_eq!(api.model("minilm").await["scale"]["running"], false);

    // Always on again: nothing to wake, nothing scaled down.
    let set = patch(&api, "minilm", json!({"idle_after_s": 0})).await;
    assert_eq!(set.status(), 200);
    api.stop();
}
