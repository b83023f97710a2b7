//! The real `so1s-predict` binary: flags, port 0, a prediction, SIGTERM.

mod common;

use common::{
    hello_world_cosine, hello_world_cosine_of, metric_value, minilm_dir, predict_hello_world,
    signal, spawn_listening, wait_ready,
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
    let cosine = hello_world_cosine_of(&body);
    assert!(cosine >= 0.9999, "{cosine}");

    signal(child.id(), "TERM");
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
    let cosine = hello_world_cosine(&base).await;
    assert!((0.99..0.99999).contains(&cosine), "{cosine}");
    child.kill().unwrap();
    child.wait().unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_so1s-predict"))
        .args(["--port", "0", "--precision", "fp8", "--model-dir"])
        .arg(minilm_dir())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("use auto, f32, bf16 or int8"), "{stderr}");
}

/// Starts so1s-predict on MiniLM with `args`; returns it, once ready, and its URL.
async fn predict_server(args: &[&str]) -> (std::process::Child, String) {
    let (child, base) = spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_so1s-predict"))
            .args(["--port", "0"])
            .args(args)
            .arg("--model-dir")
            .arg(minilm_dir()),
    );
    wait_ready(&base).await;
    (child, base)
}

#[tokio::test]
async fn every_forward_pass_exits_0_on_sigterm_under_load() {
    // rust-bert's pass, the defaults (bf16 or f32 by the CPU), f32 and int8 on so1s's own.
    for flags in [
        &["--forward-pass", "rust-bert"][..],
        &[],
        &["--precision", "f32"],
        &["--precision", "int8"],
    ] {
        for run in 0..8 {
            let mut args = vec!["--threads", "2"];
            args.extend(flags);
            let (mut child, base) = predict_server(&args).await;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let clients: Vec<_> = (0..16)
                .map(|i| {
                    let (stop, url) = (stop.clone(), format!("{base}/predict"));
                    tokio::spawn(async move {
                        let client = reqwest::Client::new();
                        let mut answered = 0;
                        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                            let body = serde_json::json!({"text": format!("client {i} asks")});
                            if let Ok(r) = client.post(&url).json(&body).send().await {
                                answered += usize::from(r.status() == 200);
                            }
                        }
                        answered
                    })
                })
                .collect();
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            signal(child.id(), "TERM");
            let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
                .await
                .unwrap();
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let mut answered = 0;
            for client in clients {
                answered += client.await.unwrap();
            }
            assert!(answered > 0, "the load never got answers");
            assert!(
                exit.success(),
                "{flags:?}, run {run}: so1s-predict exited with {exit} on SIGTERM after \
                 {answered} answers"
            );
        }
    }
}

/// A value of the predict server's metrics: every series carries the model and version
/// labels (`name{model="..",version=".."} 1`), so `name` is bare.
async fn metric(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_value(&text, name).unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn a_one_text_request_is_answered_between_the_passes_of_a_large_one() {
    let (mut child, base) = predict_server(&[
        "--threads",
        "2",
        "--precision",
        "int8",
        "--max-batch-tokens",
        "2048",
    ])
    .await;
    let passes_before = metric(&base, "so1s_batch_size_count").await;
    // 256 texts of ~1000 words (1.4 MB): 256 tokens each once truncated.
    let words = "the quick brown fox jumps over a lazy dog ";
    let long = words.repeat(112);
    let texts = vec![long; 256];
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let large = {
        let (order, url) = (order.clone(), format!("{base}/predict"));
        tokio::spawn(async move {
            // A deadline far past the default 30 s: the other tests of this binary load the
            // same two cores, and this test is about order, not speed.
            let response = reqwest::Client::new()
                .post(url)
                .header("so1s-timeout-ms", "300000")
                .json(&serde_json::json!({ "texts": texts }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            order.lock().unwrap().push("large");
            body["results"].as_array().unwrap().len()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let cosine = hello_world_cosine(&base).await;
    order.lock().unwrap().push("one");
    let waited = started.elapsed();
    assert!(cosine >= 0.99, "{cosine}");
    assert_eq!(large.await.unwrap(), 256);
    assert_eq!(*order.lock().unwrap(), ["one", "large"]);
    let largest = metric(&base, "so1s_batch_tokens_max").await;
    let passes = metric(&base, "so1s_batch_size_count").await - passes_before;
    eprintln!(
        "one text answered after {} ms; {passes} passes, the largest {largest} tokens",
        waited.as_millis()
    );
    assert!(largest <= 2048.0, "a pass held {largest} tokens");
    assert!(passes >= 32.0, "256 × 256 tokens in {passes} passes");
    child.kill().unwrap();
    child.wait().unwrap();
}
