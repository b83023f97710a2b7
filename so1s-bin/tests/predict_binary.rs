//! The real `so1s-predict` binary: flags, port 0, a prediction, SIGTERM.

mod common;

use common::{minilm_dir, spawn_listening};
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test]
async fn serves_on_port_zero_and_stops_cleanly_on_sigterm() {
    let (mut child, base) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_so1s-predict"))
            .args(["--port", "0", "--threads", "1", "--model-version", "v7"])
            .arg("--model-dir")
            .arg(minilm_dir()),
    );

    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let ready = client.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = client
        .post(format!("{base}/predict"))
        .json(&serde_json::json!({"text": "Hello world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["so1s-model-version"], "v7");
    let body: serde_json::Value = response.json().await.unwrap();
    let first = body["result"][0].as_f64().unwrap();
    assert!((first - -0.034_477_27).abs() < 1e-5, "{first}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "so1s-predict exited with {exit} on SIGTERM");
}

#[test]
fn a_missing_model_dir_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_so1s-predict"))
        .args(["--port", "0", "--model-dir", "/nonexistent/model"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/model is not a directory"),
        "{stderr}"
    );
}
