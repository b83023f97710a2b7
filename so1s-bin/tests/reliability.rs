//! so1s keeps serving through the failures a real deployment sees, and keeps its own state
//! straight: live servers that die are started again, a crash loop hands traffic back, and
//! one data directory has one api server.

mod common;

use common::api::{minilm_archive, Api};
use common::live_pid;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

fn kill_9(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
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

    // kill -9: the gateway serves again, from a new process, and the status says why.
    kill_9(pid);
    let back = api.time_to_serve(path).await;
    eprintln!("served again {} ms after kill -9", back.as_millis());
    assert!(back < Duration::from_secs(10), "back after {back:?}");
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
    let model = api
        .model_until("minilm", Duration::from_secs(10), |m| {
            m["health"]["status"] == "healthy" && live_pid(m).is_some_and(|p| p != pid)
        })
        .await;
    assert_eq!(model["health"]["restarts"], 1, "{model}");
    let cause = model["health"]["last_exit"].as_str().unwrap();
    assert!(cause.contains("signal 9"), "{cause}");
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
        kill_9(pid);
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
    let refused = promote("v2").await.unwrap();
    assert_eq!(refused.status(), 409);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("only built or retired"),
        "{body}"
    );
    let live = promote("v1").await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.json::<Value>().await.unwrap()["state"], "live");
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
