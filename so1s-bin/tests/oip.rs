//! The Open Inference Protocol with the client users bring: Triton's Python client
//! (`tritonclient[http]`, `oip_client.py`) against the real `so1s-predict` — MiniLM, and the
//! shared ELECTRA classifier fixture — and through the gateway of `so1s serve`, with binary
//! and with JSON tensors.
//!
//! The client's venv comes from scripts/setup.sh; the test runs when `SO1S_OIP_CLIENT` names
//! its python at build time (scripts/test.sh sets it; see so1s-bin/build.rs).

mod common;

use common::api::{minilm_archive, Api};
use common::{cosine, minilm_dir, reference, spawn_listening, wait_ready};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// The python of the client's venv (so1s-bin/build.rs).
#[cfg(so1s_oip_client)]
const PYTHON: &str = env!("SO1S_OIP_PYTHON");
#[cfg(not(so1s_oip_client))]
const PYTHON: &str = "built without SO1S_OIP_CLIENT: no client";

/// Runs `oip_client.py` against `base` (`http://host:port`) and returns its report.
fn client_session(base: &str, model: &str, version: &str, texts: &[&str], outputs: &str) -> Value {
    let python = PYTHON;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oip_client.py");
    let output = Command::new(python)
        .arg(script)
        .arg(base.trim_start_matches("http://"))
        .args([model, version, &json!(texts).to_string(), outputs])
        .output()
        .expect("the OIP client's python runs");
    assert!(
        output.status.success(),
        "oip_client.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints one JSON report")
}

/// Checks what every session reports: server and model alive, ready, described, and an
/// unknown model answered 404 with the protocol's error.
fn check_health_and_metadata(report: &Value, model: &str, version: &str) {
    assert_eq!(report["server_live"], true, "{report}");
    assert_eq!(report["server_ready"], true, "{report}");
    assert_eq!(
        report["server_metadata"]["extensions"],
        json!(["binary_tensor_data"])
    );
    assert_eq!(report["model_ready"], true);
    assert_eq!(report["model_ready_version"], true);
    let metadata = &report["model_metadata"];
    assert_eq!(metadata["name"], model);
    assert_eq!(metadata["versions"], json!([version]));
    assert_eq!(
        metadata["inputs"],
        json!([{"name": "text", "datatype": "BYTES", "shape": [-1]}])
    );
    assert_eq!(report["unknown_model"]["status"], "404", "{report}");
    assert!(
        report["unknown_model"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown model"),
        "{report}"
    );
    for form in ["binary", "json"] {
        assert_eq!(report[form]["id"], "so1s-test");
        assert_eq!(report[form]["model_version"], version);
    }
}

/// The embeddings of a session, in both forms, against sentence-transformers'.
fn check_embeddings(report: &Value) {
    let reference = reference();
    for form in ["binary", "json"] {
        let embedding = &report[form]["embedding"];
        assert_eq!(embedding["shape"], json!([reference.len(), 384]), "{form}");
        let rows: Vec<Vec<f64>> = serde_json::from_value(embedding["data"].clone()).unwrap();
        for ((text, expected), row) in reference.iter().zip(&rows) {
            let cosine = cosine(row, expected);
            assert!(cosine >= 0.9999, "{form} `{text}`: cosine {cosine}");
        }
    }
    assert_eq!(
        report["binary"]["embedding"], report["json"]["embedding"],
        "binary and JSON tensors carry the same values"
    );
}

fn predict_server(model_dir: &Path, name: &str, version: &str, extra: &[&str]) -> (Child, String) {
    spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_so1s-predict"))
            .args(["--port", "0", "--threads", "1"])
            .args(["--model-name", name, "--model-version", version])
            .args(extra)
            .arg("--model-dir")
            .arg(model_dir),
    )
}

fn texts(reference: &[(String, Vec<f32>)]) -> Vec<&str> {
    reference.iter().map(|(t, _)| t.as_str()).collect()
}

#[cfg_attr(
    not(so1s_oip_client),
    ignore = "needs Triton's Python client: build with SO1S_OIP_CLIENT set (scripts/test.sh does)"
)]
#[tokio::test]
async fn tritons_client_talks_to_so1s_predict_and_the_gateway() {
    let reference = reference();
    let texts = texts(&reference);

    // so1s-predict serving MiniLM.
    let (mut minilm, base) = predict_server(&minilm_dir(), "minilm", "v3", &[]);
    wait_ready(&base).await;
    let report = client_session(&base, "minilm", "v3", &texts, "embedding");
    check_health_and_metadata(&report, "minilm", "v3");
    assert_eq!(
        report["model_metadata"]["outputs"],
        json!([{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}])
    );
    check_embeddings(&report);
    // The protocol's requests are counted by route, beside /predict's.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "so1s_requests_total{model=\"minilm\",version=\"v3\",route=\"v2_infer\",status=\"200\"} 2"
        ),
        "{metrics}"
    );
    minilm.kill().unwrap();
    minilm.wait().unwrap();

    // The ELECTRA classifier fixture in f32: labels and scores as transformers computed them.
    let fixture = fixture_dir("electra-nsmc-tiny");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();
    let sentences = expected["sentences"].as_array().unwrap();
    let korean: Vec<&str> = sentences
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let (mut electra, base) = predict_server(
        &fixture.join("model"),
        "nsmc",
        "v1",
        &["--precision", "f32"],
    );
    wait_ready(&base).await;
    let report = client_session(&base, "nsmc", "v1", &korean, "label,score,scores");
    check_health_and_metadata(&report, "nsmc", "v1");
    let labels = expected["labels"].as_array().unwrap().len();
    for form in ["binary", "json"] {
        let answer = &report[form];
        assert_eq!(answer["label"]["shape"], json!([korean.len()]), "{form}");
        assert_eq!(answer["scores"]["shape"], json!([korean.len(), labels]));
        for (i, sentence) in sentences.iter().enumerate() {
            assert_eq!(answer["label"]["data"][i], sentence["label"], "{form} {i}");
            let score = answer["score"]["data"][i].as_f64().unwrap();
            let want = sentence["score"].as_f64().unwrap();
            assert!((score - want).abs() < 1e-3, "{form} {i}: {score} vs {want}");
            for (j, want) in sentence["scores"].as_array().unwrap().iter().enumerate() {
                let got = answer["scores"]["data"][i][j].as_f64().unwrap();
                assert!(
                    (got - want.as_f64().unwrap()).abs() < 1e-3,
                    "{form} {i} {j}"
                );
            }
        }
    }
    electra.kill().unwrap();
    electra.wait().unwrap();

    // Through the gateway of `so1s serve`: the model's live version answers, under its name
    // and under the version named.
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(&tmp.path().join("data"));
    api.upload("minilm", minilm_archive()).await;
    let record = api.settle("minilm", "v1").await;
    assert_eq!(record["state"], "live", "{record}");
    let report = client_session(&api.base, "minilm", "v1", &texts, "embedding");
    check_health_and_metadata(&report, "minilm", "v1");
    check_embeddings(&report);
    // A version that is not serving is refused by name.
    let response = api
        .client
        .post(format!("{}/v2/models/minilm/versions/v2/infer", api.base))
        .json(&json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("v2 is not serving"),
        "{body}"
    );
    api.stop();
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../so1s-inference/tests/fixtures")
        .join(name)
}
