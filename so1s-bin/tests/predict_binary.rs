//! The real `so1s-predict` binary: flags, port 0, a prediction, SIGTERM.

mod common;

use common::{
    hello_world_first_value, minilm_dir, predict_hello_world, spawn_listening, wait_ready,
    HELLO_WORLD_FIRST,
};
use std::process::Command;

#[tokio::test]
async fn serves_on_port_zero_and_stops_cleanly_on_sigterm() {
    let (mut child, base) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_so1s-predict"))
            .args(["--port", "0", "--threads", "1", "--model-version", "v7"])
            .arg("--model-dir")
            .arg(minilm_dir()),
    );

    wait_ready(&base).await;
    let response = predict_hello_world(&base).await;
    assert_eq!(response.headers()["so1s-model-version"], "v7");
    let body: serde_json::Value = response.json().await.unwrap();
    let first = body["result"][0].as_f64().unwrap();
    assert!((first - HELLO_WORLD_FIRST).abs() < 1e-5, "{first}");

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

#[tokio::test]
async fn the_precision_flag_selects_the_forward_pass() {
    let (mut child, base) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_so1s-predict"))
            .args(["--port", "0", "--threads", "1", "--precision", "int8"])
            .arg("--model-dir")
            .arg(minilm_dir()),
    );
    wait_ready(&base).await;
    let model: serde_json::Value = reqwest::get(format!("{base}/v1/model"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["model"]["forward_pass"], "so1s-int8");
    // Close to MiniLM's reference, not equal: int8.
    let first = hello_world_first_value(&base).await;
    assert!((first - HELLO_WORLD_FIRST).abs() < 0.01, "{first}");
    child.kill().unwrap();
    child.wait().unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_so1s-predict"))
        .args(["--port", "0", "--precision", "fp8", "--model-dir"])
        .arg(minilm_dir())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("use f32 or int8"), "{stderr}");
}
