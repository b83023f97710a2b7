//! The whole loop on the embedded default, against the real binaries: `so1s serve` with the
//! process backend running real `so1s-predict` children, each test with its own data
//! directory and ports.

mod common;

use common::{minilm_dir, spawn_listening};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `so1s serve` on a free port over `data`.
struct Api {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn start(data: &Path) -> Api {
        let (child, base) = spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_so1s"))
                .args(["serve", "--port", "0", "--predict-threads", "1"])
                .arg("--data-dir")
                .arg(data)
                .arg("--predict-bin")
                .arg(env!("CARGO_BIN_EXE_so1s-predict")),
        );
        Api {
            child,
            base,
            client: reqwest::Client::new(),
        }
    }

    async fn upload(&self, name: &str, archive: Vec<u8>) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/models/{name}/versions", self.base))
            .body(archive)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        response.json().await.unwrap()
    }

    async fn version(&self, name: &str, version: &str) -> Value {
        self.client
            .get(format!("{}/v1/models/{name}/versions/{version}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Waits until the version is live or failed; returns its record.
    async fn settle(&self, name: &str, version: &str) -> Value {
        let started = Instant::now();
        loop {
            let record = self.version(name, version).await;
            if matches!(record["state"].as_str(), Some("live" | "failed")) {
                return record;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{record}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn predict(&self, path: &str, text: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(format!("{}{path}", self.base))
            .json(&json!({ "text": text }))
            .send()
            .await
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "so1s serve exited with {status}");
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

fn minilm_archive() -> Vec<u8> {
    so1s_core::build::archive::pack_dir(&minilm_dir()).unwrap()
}

/// A tar.gz with a raw entry name, so a hostile path can be written.
fn tar_with_entry(name: &str, data: &[u8]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(encoder);
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, data).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

/// MiniLM's files with weights that cannot load.
fn broken_model_archive() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let source = minilm_dir();
    for name in [
        "config.json",
        "vocab.txt",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
    ] {
        std::fs::copy(source.join(name), dir.path().join(name)).unwrap();
    }
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::copy(
        source.join("1_Pooling/config.json"),
        dir.path().join("1_Pooling/config.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"these are not weights",
    )
    .unwrap();
    so1s_core::build::archive::pack_dir(dir.path()).unwrap()
}

fn first_values(body: &Value) -> Vec<f64> {
    body["result"]
        .as_array()
        .unwrap()
        .iter()
        .take(8)
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn upload_swap_refuse_rollback_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let api = Api::start(&data);

    // Nothing is live yet: the gateway says so clearly.
    let response = api.predict("/inference/predict", "anyone?").await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error_type"], "not_live", "{body}");

    // v1 goes live and answers through the seed's path and the named path.
    let accepted = api.upload("minilm", minilm_archive()).await;
    assert_eq!(accepted["version"], "v1");
    assert_eq!(
        accepted["links"]["events"],
        "/v1/models/minilm/versions/v1/events"
    );
    let record = api.settle("minilm", "v1").await;
    assert_eq!(record["state"], "live", "{record}");
    assert_eq!(record["sha256"].as_str().unwrap().len(), 64);
    let seed: Value = api
        .predict("/inference/predict", "Hello world")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let named = api
        .predict("/inference/minilm/predict", "Hello world")
        .await
        .unwrap();
    assert_eq!(named.headers()["so1s-model-version"], "v1");
    let named: Value = named.json().await.unwrap();
    assert_eq!(seed, named);
    let first = first_values(&seed)[0];
    assert!(
        (first - -0.034_477_27).abs() < 1e-5,
        "not MiniLM's embedding: {first}"
    );

    // v2 swaps in while clients keep predicting: no request fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            let url = format!("{}/inference/minilm/predict", api.base);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut versions = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let response = client
                        .post(&url)
                        .json(&json!({"text": format!("client {i}")}))
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::SeqCst);
                    match response {
                        Ok(r) if r.status() == 200 => {
                            versions.push(
                                r.headers()["so1s-model-version"]
                                    .to_str()
                                    .unwrap()
                                    .to_owned(),
                            );
                            r.bytes().await.unwrap();
                        }
                        other => {
                            eprintln!("failed request: {other:?}");
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                versions
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = api.upload("minilm", minilm_archive()).await;
    assert_eq!(accepted["version"], "v2");
    assert_eq!(api.settle("minilm", "v2").await["state"], "live");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut seen = Vec::new();
    for client in clients {
        seen.extend(client.await.unwrap());
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "{} of {} requests failed during the swap",
        failed.load(Ordering::SeqCst),
        sent.load(Ordering::SeqCst)
    );
    assert!(
        seen.iter().any(|v| v == "v1") && seen.last().map(String::as_str) == Some("v2"),
        "{seen:?}"
    );
    assert_eq!(api.version("minilm", "v1").await["state"], "retired");

    // Three bad uploads: each fails with its cause named, v2 keeps serving, nothing escapes.
    let mut corrupt = vec![0x1f, 0x8b, 8, 0];
    corrupt.extend(std::iter::repeat_n(0xAB, 4096));
    for (archive, version, cause) in [
        (corrupt, "v3", "corrupt"),
        (
            tar_with_entry("../../../escaped-by-so1s", b"x"),
            "v4",
            "contains `..`",
        ),
        (broken_model_archive(), "v5", "loading the model failed"),
    ] {
        let accepted = api.upload("minilm", archive).await;
        assert_eq!(accepted["version"], version);
        let record = api.settle("minilm", version).await;
        assert_eq!(record["state"], "failed", "{record}");
        let error = record["error"].as_str().unwrap();
        assert!(
            error.contains(cause),
            "{version}: expected `{cause}` in {error}"
        );
        let response = api
            .predict("/inference/minilm/predict", "still there?")
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["so1s-model-version"], "v2");
    }
    for dir in [
        tmp.path(),
        data.as_path(),
        &data.join("bundles"),
        &data.join("bundles/minilm"),
    ] {
        assert!(
            !dir.join("escaped-by-so1s").exists(),
            "a file escaped into {}",
            dir.display()
        );
    }
    let events = api
        .client
        .get(format!("{}/v1/models/minilm/versions/v5/events", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        events.contains("event:error") || events.contains("event: error"),
        "{events}"
    );

    // A raw upload that is not an archive is refused at once.
    let response = api
        .client
        .post(format!("{}/v1/models/minilm/versions", api.base))
        .body("not an archive")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Rollback returns traffic to v1; a serving version cannot be deleted, a failed one can.
    let response = api
        .client
        .post(format!("{}/v1/models/minilm/rollback", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = api
        .predict("/inference/minilm/predict", "after rollback")
        .await
        .unwrap();
    assert_eq!(response.headers()["so1s-model-version"], "v1");
    let delete = |v: &str| {
        api.client
            .delete(format!("{}/v1/models/minilm/versions/{v}", api.base))
            .send()
    };
    assert_eq!(delete("v1").await.unwrap().status(), 409);
    assert_eq!(delete("v3").await.unwrap().status(), 204);
    assert_eq!(api.version("minilm", "v3").await["error_type"], "not_found");

    // Restart: the registry and the live version come back.
    api.stop();
    let api = Api::start(&data);
    let started = Instant::now();
    let response = loop {
        let response = api
            .predict("/inference/predict", "Hello world")
            .await
            .unwrap();
        if response.status() == 200 || started.elapsed() > Duration::from_secs(60) {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["so1s-model-version"], "v1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_values(&body), first_values(&seed));
    let model: Value = api
        .client
        .get(format!("{}/v1/models/minilm", api.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["live_version"], "v1");
    assert_eq!(model["versions"].as_array().unwrap().len(), 4, "{model}");
    api.stop();
}

#[tokio::test]
async fn cli_deploys_a_directory_and_fails_loudly_on_a_bad_build() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(&tmp.path().join("data"));
    let so1s = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_so1s"))
            .args(args)
            .env("SO1S_SERVER", &api.base)
            .output()
            .unwrap()
    };
    let model = minilm_dir();
    let output = so1s(&["deploy", model.to_str().unwrap(), "--name", "minilm"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("minilm v1 is live"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[build] smoke prediction"), "{stderr}");

    let output = so1s(&["predict", "minilm", "Hello world"]);
    assert!(output.status.success());
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["result"].as_array().unwrap().len(), 384);

    let broken = tmp.path().join("broken.tar.gz");
    std::fs::write(&broken, broken_model_archive()).unwrap();
    let output = so1s(&["deploy", broken.to_str().unwrap(), "--name", "minilm"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("minilm v2 is failed"));

    let output = so1s(&["status", "minilm"]);
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["live_version"], "v1");

    // Uploads also come as a multipart form with the archive in the field `model`.
    let boundary = "so1s-test-boundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"model\"; filename=\"minilm.tar.gz\"\r\n\
         Content-Type: application/gzip\r\n\r\n"
    )
    .into_bytes();
    form.extend(minilm_archive());
    form.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let response = api
        .client
        .post(format!("{}/v1/models/minilm/versions", api.base))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["version"], "v3");
    assert_eq!(api.settle("minilm", "v3").await["state"], "live");

    let output = Command::new(env!("CARGO_BIN_EXE_so1s"))
        .args(["status", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(3),
        "an unreachable server has its own exit code"
    );
    api.stop();
}
