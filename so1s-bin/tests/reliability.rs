//! so1s keeps serving through the failures a real deployment sees, and keeps its own state
//! straight: live servers that die are started again, a crash loop hands traffic back, and
//! one data directory has one api server.

mod common;

use common::api::{kill_under_load, minilm_archive, Api};
use common::{live_pid, signal};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

/// Asserts `response` is a 409 whose error says `why`.
async fn refused(response: reqwest::Response, why: &str) {
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(why), "{body}");
}

/// Waits (at most `within`) until `model`'s live version is healthy again on a process
/// other than `pid`, started again once, for a cause that says `cause`; returns its view.
async fn restarted(api: &Api, pid: u32, within: Duration, cause: &str) -> Value {
    let model = api
        .model_until("minilm", within, |m| {
            m["health"]["status"] == "healthy" && live_pid(m).is_some_and(|p| p != pid)
        })
        .await;
    assert_eq!(model["health"]["restarts"], 1, "{model}");
    let last_exit = model["health"]["last_exit"].as_str().unwrap();
    assert!(last_exit.contains(cause), "{last_exit}");
    model
}

#[tokio::test]
async fn a_killed_live_server_comes_back_and_a_crash_loop_hands_traffic_back() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(&tmp.path().join("data"));
    for version in ["v1", "v2"] {
        assert_eq!(
            api.upload("minilm", minilm_archive()).await["version"],
            version
        );
        assert_eq!(api.settle("minilm", version).await["state"], "live");
    }
    let path = "/inference/minilm/predict";
    let model = api.model("minilm").await;
    assert_eq!(model["health"]["status"], "healthy", "{model}");
    assert_eq!(model["health"]["version"], "v2");
    let pid = live_pid(&model).unwrap();

    // kill -9 under 8 clients: the gateway holds their requests while the server is started
    // again (and tries once more those it was sending), so none fails.
    kill_under_load(&api, "minilm", &pid.to_string(), "v2", "embedded", |m| {
        m["health"]["ready"] == true && live_pid(m).is_some_and(|p| p != pid)
    })
    .await;
    let held = api
        .metric(r#"so1s_gateway_held_total{model="minilm"}"#)
        .await;
    assert!(held.is_some_and(|n| n >= 1.0), "{held:?} requests held");
    let mut failed = 0;
    for i in 0..50 {
        let response = api.predict(path, &format!("after {i}")).await.unwrap();
        if response.status() != 200 {
            failed += 1;
        } else {
            assert_eq!(response.headers()["so1s-model-version"], "v2");
        }
    }
    assert_eq!(failed, 0, "requests failed after the restart");
    let model = restarted(&api, pid, Duration::from_secs(10), "signal 9").await;
    let v2 = api.version("minilm", "v2").await;
    assert_eq!(
        (v2["state"].as_str(), v2["restarts"].as_u64()),
        (Some("live"), Some(1))
    );
    let events = api.events("minilm", "v2").await;
    assert!(events.contains("was killed by signal 9"), "{events}");
    assert!(events.contains("serves again at"), "{events}");

    // Four more deaths within two minutes make a crash loop: traffic goes back to v1.
    let mut pid = live_pid(&model).unwrap();
    for exit in 2..=5 {
        signal(pid, "KILL");
        if exit == 5 {
            break;
        }
        let model = api
            .model_until("minilm", Duration::from_secs(30), |m| {
                m["health"]["ready"] == true && live_pid(m).is_some_and(|p| p != pid)
            })
            .await;
        pid = live_pid(&model).unwrap();
    }
    let model = api
        .model_until("minilm", Duration::from_secs(30), |m| {
            m["live_version"] == "v1"
        })
        .await;
    assert_eq!(model["health"]["version"], "v1", "{model}");
    let v2 = api.version("minilm", "v2").await;
    assert_eq!(v2["state"], "failed", "{v2}");
    let error = v2["error"].as_str().unwrap();
    assert!(
        error.contains("unhealthy: exited 5 times") && error.contains("rolled back to v1"),
        "{error}"
    );
    let events = api.events("minilm", "v2").await;
    assert!(events.contains("rolling back to v1"), "{events}");
    let response = api.predict(path, "who answers?").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["so1s-model-version"], "v1");

    // A failed version cannot be promoted; the live one is already where promote leads.
    let promote = |v: &str| {
        api.client
            .post(format!(
                "{}/v1/models/minilm/versions/{v}/promote",
                api.base
            ))
            .send()
    };
    refused(
        promote("v2").await.unwrap(),
        "only built, retired or superseded",
    )
    .await;
    let live = promote("v1").await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.unwrap()["state"], "live");
    api.stop();
}

#[tokio::test]
async fn retention_frees_the_bundles_and_archives_of_old_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let api = Api::start_with(&data, &["--keep-versions", "1", "--prune-archives"]);
    for version in ["v1", "v2", "v3"] {
        assert_eq!(
            api.upload("minilm", minilm_archive()).await["version"],
            version
        );
        assert_eq!(api.settle("minilm", version).await["state"], "live");
    }
    // Retention follows the rollout that retired v2: its last event, on v1, is awaited.
    let events = api
        .events_until("minilm", "v1", Duration::from_secs(30), |e| {
            e.contains("retention: removed the archive of v1")
        })
        .await;
    assert!(events.contains("retention: removed"), "{events}");
    let bundle = |v: &str| data.join("bundles/minilm").join(v);
    let archive = |v: &str| data.join("store/models/minilm").join(v).join("archive");
    // v3 serves, v2 is the one version kept whole for a rollback; v1's files are gone.
    assert!(!bundle("v1").exists() && !archive("v1").exists());
    assert!(bundle("v2").exists() && archive("v2").exists());
    assert!(bundle("v3").exists() && archive("v3").exists());
    let v1 = api.version("minilm", "v1").await;
    assert_eq!(v1["state"], "retired", "{v1}");
    assert!(v1["artifact"].is_null(), "{v1}");

    // A rollback goes to v2, which kept its bundle; v1 says why it cannot be promoted.
    let post = |path: String| api.client.post(format!("{}{path}", api.base)).send();
    let back = post("/v1/models/minilm/rollback".into()).await.unwrap();
    assert_eq!(back.status(), 200);
    let answer = api
        .predict("/inference/minilm/predict", "v2?")
        .await
        .unwrap();
    assert_eq!(answer.headers()["so1s-model-version"], "v2");
    let promote = post("/v1/models/minilm/versions/v1/promote".into());
    refused(promote.await.unwrap(), "pruned by retention").await;
    api.stop();
}

#[tokio::test]
async fn a_frozen_live_server_costs_its_clients_the_answer_timeout_then_is_started_again() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start_with(
        &tmp.path().join("data"),
        &["--gateway-timeout-slack-ms", "1500"],
    );
    assert_eq!(
        api.upload("minilm", minilm_archive()).await["version"],
        "v1"
    );
    assert_eq!(api.settle("minilm", "v1").await["state"], "live");
    let path = "/inference/minilm/predict";
    // The gateway learns the model's p99 from its answers: its timeout is that plus 1.5 s.
    for i in 0..64 {
        let response = api.predict(path, &format!("warm {i}")).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let pid = live_pid(&api.model("minilm").await).unwrap();

    // SIGSTOP: the server still accepts connections but answers nothing. 8 clients send 3
    // requests each, one after the other.
    signal(pid, "STOP");
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let url = format!("{}{path}", api.base);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut answers = Vec::new();
                for j in 0..3 {
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .json(&serde_json::json!({"text": format!("frozen {i} {j}")}))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap();
                    answers.push((status, sent.elapsed(), body));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    let timed_out: Vec<_> = answers
        .iter()
        .filter(|(status, ..)| *status == 504)
        .collect();
    let served = answers.iter().filter(|(status, ..)| *status == 200).count();
    eprintln!(
        "FIGURES frozen server: {} answers 504 (slowest {:?}), {served} served after its restart",
        timed_out.len(),
        timed_out.iter().map(|(_, took, _)| *took).max()
    );
    assert!(
        answers
            .iter()
            .all(|(status, ..)| matches!(status, 200 | 504)),
        "{answers:?}"
    );
    // The requests sent to the frozen server end with a clear 504 at the model's timeout,
    // well before the 30 s ceiling; the others wait for its restart and are served.
    assert!(timed_out.len() >= 3, "{answers:?}");
    for (_, took, body) in &timed_out {
        assert!(body.contains("did not answer within"), "{body}");
        assert!(*took < Duration::from_secs(15), "{took:?}");
    }
    assert!(served >= 8, "{answers:?}");

    // Condemned by the gateway, it was killed and started again.
    restarted(
        &api,
        pid,
        Duration::from_secs(30),
        "stopped answering requests",
    )
    .await;
    let series = |name: &str| format!("so1s_gateway_{name}_total{{model=\"minilm\"}}");
    let timeouts = api.metric(&series("timeouts")).await;
    assert_eq!(timeouts, Some(timed_out.len() as f64));
    assert_eq!(api.metric(&series("condemned")).await, Some(1.0));
    let response = api.predict(path, "back").await.unwrap();
    assert_eq!(response.status(), 200);
    api.stop();
}

#[tokio::test]
async fn a_second_api_server_on_the_same_data_dir_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let api = Api::start(&data);
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_so1s"))
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(&data)
        .arg("--predict-bin")
        .arg(env!("CARGO_BIN_EXE_so1s-predict"))
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by process {}", api.child.id())),
        "{stderr}"
    );
    eprintln!("refused in {} ms: {}", took.as_millis(), stderr.trim());
    // The first one is untouched.
    let health = api
        .client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    api.stop();
}
