//! The whole loop on the embedded default, against the real binaries: `so1s serve` with the
//! process backend running real `so1s-predict` children, each test with its own data
//! directory and ports.

mod common;

use common::api::{
    broken_model_archive, first_values, minilm_archive, swap_under_load, tar_with_entry, Api,
};
use common::{hello_world_cosine_of, minilm_dir};
use serde_json::{json, Value};
use std::process::Command;

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
    let seed = api.predict_json("/inference/predict", "Hello world").await;
    let named = api
        .predict("/inference/minilm/predict", "Hello world")
        .await
        .unwrap();
    assert_eq!(named.headers()["so1s-model-version"], "v1");
    let named: Value = named.json().await.unwrap();
    assert_eq!(seed, named);
    let cosine = hello_world_cosine_of(&seed);
    assert!(cosine >= 0.9999, "not MiniLM's embedding: {cosine}");

    // v2 swaps in while clients keep predicting: no request fails.
    let (failed, sent, seen) = swap_under_load(&api, "minilm", minilm_archive(), "v2").await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the swap"
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
        (
            broken_model_archive(),
            "v5",
            "the weights have no embeddings",
        ),
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
    let events = api.events("minilm", "v5").await;
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
    let response = api
        .predict_when_live("/inference/predict", "Hello world")
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["so1s-model-version"], "v1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(first_values(&body), first_values(&seed));
    let model = api.model("minilm").await;
    assert_eq!(model["live_version"], "v1");
    assert_eq!(model["versions"].as_array().unwrap().len(), 4, "{model}");
    api.stop();
}

#[tokio::test]
async fn cli_deploys_a_directory_and_fails_loudly_on_a_bad_build() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let api = Api::start(&data);
    // The client commands find the admin token in the server's data directory.
    let so1s = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_so1s"))
            .args(args)
            .env("SO1S_SERVER", &api.base)
            .env("SO1S_DATA_DIR", &data)
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

/// The shared ELECTRA fixture shaped like the seed's model (KoELECTRA-NSMC).
fn seed_fixture() -> std::path::PathBuf {
    fixture("electra-nsmc-tiny")
}

/// The exact forward pass: transformers' scores are f32 ones (the default, precision auto,
/// may run bf16).
const F32_MANIFEST: &[u8] = b"[serving]\nprecision = \"f32\"\n";

/// A model fixture of so1s-inference's, by name.
fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../so1s-inference/tests/fixtures")
        .join(name)
}

/// Copies the directory tree `from` into `to`.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_tree(&entry.path(), &target),
            false => drop(std::fs::copy(entry.path(), target).unwrap()),
        }
    }
}

/// `dir`'s files with `replaced` files written over them, packed.
fn packed_with(dir: &std::path::Path, replaced: &[(&str, &[u8])]) -> Vec<u8> {
    let copy = tempfile::tempdir().unwrap();
    copy_tree(dir, copy.path());
    for (name, bytes) in replaced {
        std::fs::write(copy.path().join(name), bytes).unwrap();
    }
    so1s_core::build::pack_dir(copy.path()).unwrap()
}

/// Every sentence of `expected.json` through the seed's path: transformers' label, its
/// score and every label's score within 1e-4; the version that answered.
async fn answers_as_transformers(api: &Api, expected: &Value, version: &str) {
    answers_at(api, "/inference/predict", expected, version).await
}

/// [`answers_as_transformers`] through `path`.
async fn answers_at(api: &Api, path: &str, expected: &Value, version: &str) {
    answers_within(api, path, expected, version, 1e-4).await
}

/// [`answers_at`] with scores within `tolerance` of transformers'.
async fn answers_within(api: &Api, path: &str, expected: &Value, version: &str, tolerance: f64) {
    for sentence in expected["sentences"].as_array().unwrap() {
        let text = sentence["text"].as_str().unwrap();
        let response = api
            .client
            .post(format!("{}{path}", api.base))
            .json(&serde_json::json!({"text": text, "all_scores": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{text}");
        assert_eq!(response.headers()["so1s-model-version"], version);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["result"], sentence["label"], "{text}: {body}");
        let score = body["score"].as_f64().unwrap();
        assert!(
            (score - sentence["score"].as_f64().unwrap()).abs() <= tolerance,
            "{text}: {body}"
        );
        let scores = body["scores"].as_array().unwrap();
        let labels = expected["labels"].as_array().unwrap();
        assert_eq!(scores.len(), labels.len());
        for ((entry, label), want) in scores
            .iter()
            .zip(labels)
            .zip(sentence["scores"].as_array().unwrap())
        {
            assert_eq!(&entry["label"], label);
            assert!((entry["score"].as_f64().unwrap() - want.as_f64().unwrap()).abs() <= tolerance);
        }
    }
}

#[tokio::test]
async fn the_seeds_electra_classifier_serves_from_safetensors_and_from_a_checked_bin() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(&tmp.path().join("data"));
    let fixture = seed_fixture();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();

    // v1: safetensors. The first live model is the default: the seed's path reaches it.
    let manifest = [("so1s.toml", F32_MANIFEST)];
    api.upload("sentiment", packed_with(&fixture.join("model"), &manifest))
        .await;
    let record = api.settle("sentiment", "v1").await;
    assert_eq!(record["state"], "live", "{record}");
    answers_as_transformers(&api, &expected, "v1").await;
    // Without `all_scores`, the seed's reply shape: the label and its score only.
    let plain = api
        .predict_json("/inference/predict", "이 영화 정말 재밌어요")
        .await;
    assert_eq!(plain.as_object().unwrap().len(), 2, "{plain}");
    assert!(
        plain["result"].is_string() && plain["score"].is_f64(),
        "{plain}"
    );
    let info = api.get_json("/v1/models/sentiment").await;
    assert_eq!(info["live_version"], "v1", "{info}");

    // v2: the same model as pytorch_model.bin only, converted during the build.
    api.upload(
        "sentiment",
        packed_with(&fixture.join("model-bin"), &manifest),
    )
    .await;
    let record = api.settle("sentiment", "v2").await;
    assert_eq!(record["state"], "live", "{record}");
    let events = api.events("sentiment", "v2").await;
    assert!(
        events.contains("pytorch_model.bin read without running its pickle"),
        "{events}"
    );
    answers_as_transformers(&api, &expected, "v2").await;

    // v3: a .bin whose pickle calls os.system (`touch MARKER`): refused by name, nothing ran.
    let marker = tmp.path().join("the-pickle-ran");
    let command = format!("touch {}", marker.display());
    let mut pickle = b"\x80\x02cos\nsystem\nq\x00X".to_vec();
    pickle.extend_from_slice(&(command.len() as u32).to_le_bytes());
    pickle.extend_from_slice(command.as_bytes());
    pickle.extend_from_slice(b"\x85R.");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("archive/data.pkl", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut zip, &pickle).unwrap();
    let hostile = zip.finish().unwrap().into_inner();
    // v4: the fixture's .bin cut in half.
    let real = std::fs::read(fixture.join("model-bin/pytorch_model.bin")).unwrap();
    let truncated = real[..real.len() / 2].to_vec();
    for (checkpoint, version, cause) in [
        (hostile, "v3", "`os.system`"),
        (truncated, "v4", "not a whole PyTorch zip checkpoint"),
    ] {
        api.upload(
            "sentiment",
            packed_with(
                &fixture.join("model-bin"),
                &[("pytorch_model.bin", &checkpoint[..]), manifest[0]],
            ),
        )
        .await;
        let record = api.settle("sentiment", version).await;
        assert_eq!(record["state"], "failed", "{record}");
        let error = record["error"].as_str().unwrap();
        assert!(error.contains(cause), "{version}: {error}");
    }
    assert!(!marker.exists(), "the hostile pickle ran");
    // v2 kept serving through both.
    answers_as_transformers(&api, &expected, "v2").await;

    // v5: no so1s.toml, so precision `auto`, and a forged build record in the archive
    // (claiming bf16 kept every answer): the build removes it and measures for itself. The
    // answers keep the accuracy contract (scores within 0.005, the same labels) and the
    // version's record says what was measured and chosen.
    let forged = br#"{"precision": {"measured": "bf16", "chosen": "bf16", "drift":
        {"measure": "largest_score_change", "value": 0.0, "tolerance": 1.0,
         "same_answers": true, "texts": 1}}}"#;
    api.upload(
        "sentiment",
        packed_with(&fixture.join("model"), &[("so1s-build.json", forged)]),
    )
    .await;
    let record = api.settle("sentiment", "v5").await;
    assert_eq!(record["state"], "live", "{record}");
    let events = api.events("sentiment", "v5").await;
    assert!(
        events.contains("so1s-build.json removed: the build writes its own"),
        "{events}"
    );
    answers_within(&api, "/inference/predict", &expected, "v5", 0.005).await;
    let native_bf16 = so1s_core::predict::CpuFeatures::detect().native_bf16();
    let precision = &record["artifact"]["precision"];
    let bundle = std::path::PathBuf::from(record["artifact"]["dir"].as_str().unwrap());
    match native_bf16 {
        true => {
            assert_eq!(precision["measured"], "bf16", "{record}");
            assert_eq!(precision["drift"]["tolerance"], 0.005, "{record}");
            let within = precision["drift"]["value"].as_f64().unwrap() <= 0.005
                && precision["drift"]["same_answers"] == true;
            let chosen = if within { "bf16" } else { "f32" };
            assert_eq!(precision["chosen"], chosen, "{record}");
            assert!(events.contains("calibration texts"), "{events}");
            let kept: Value =
                serde_json::from_slice(&std::fs::read(bundle.join("so1s-build.json")).unwrap())
                    .unwrap();
            assert_eq!(&kept["precision"], precision);
        }
        // Nothing to measure: f32, and no record in the bundle.
        false => {
            assert!(precision.is_null(), "{record}");
            assert!(!bundle.join("so1s-build.json").exists());
        }
    }
    api.stop();
}

/// Models shaped as the hub ships them — `tokenizer.json` as their only tokenizer file,
/// sharded weights — go live through `so1s serve` and answer as transformers and
/// sentence-transformers did: a DistilBERT classifier from a sharded `pytorch_model.bin`,
/// an XLM-R multi-label classifier (a sigmoid per label), an XLM-R E5-style embedder from
/// sharded safetensors.
#[tokio::test]
async fn hub_shaped_models_of_other_families_go_live_and_answer_as_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let api = Api::start(&tmp.path().join("data"));
    let manifest = [("so1s.toml", F32_MANIFEST)];
    let read = |name: &str| -> Value {
        serde_json::from_slice(&std::fs::read(fixture(name).join("expected.json")).unwrap())
            .unwrap()
    };

    let sst2 = fixture("distilbert-sst2-tiny").join("model-bin-sharded");
    api.upload("sst2", packed_with(&sst2, &manifest)).await;
    let record = api.settle("sst2", "v1").await;
    assert_eq!(record["state"], "live", "{record}");
    let events = api.events("sst2", "v1").await;
    assert!(events.contains("architecture distilbert"), "{events}");
    answers_at(
        &api,
        "/inference/sst2/predict",
        &read("distilbert-sst2-tiny"),
        "v1",
    )
    .await;

    let emotions = fixture("xlm-roberta-multilabel-tiny").join("model");
    api.upload("emotions", packed_with(&emotions, &manifest))
        .await;
    assert_eq!(api.settle("emotions", "v1").await["state"], "live");
    answers_at(
        &api,
        "/inference/emotions/predict",
        &read("xlm-roberta-multilabel-tiny"),
        "v1",
    )
    .await;

    let e5 = fixture("xlm-roberta-e5-tiny");
    api.upload("e5", packed_with(&e5.join("model"), &manifest))
        .await;
    assert_eq!(api.settle("e5", "v1").await["state"], "live");
    for sentence in read("xlm-roberta-e5-tiny")["sentences"].as_array().unwrap() {
        let text = sentence["text"].as_str().unwrap();
        let body = api.predict_json("/inference/e5/predict", text).await;
        let got: Vec<f64> = body["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let want: Vec<f64> = sentence["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let dot: f64 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        let norms: f64 = [&got, &want]
            .iter()
            .map(|v| v.iter().map(|x| x * x).sum::<f64>().sqrt())
            .product();
        assert!(dot / norms >= 0.99999, "{text}: cosine {}", dot / norms);
    }

    // A token classifier (DeBERTa-v3) and a cross-encoder (BERT), as the hub ships them:
    // their tasks told from config.json, served on their routes through the gateway.
    let ner = fixture("deberta-v3-ner-tiny");
    api.upload("ner", packed_with(&ner.join("model"), &manifest))
        .await;
    assert_eq!(api.settle("ner", "v1").await["state"], "live");
    let expected = read("deberta-v3-ner-tiny");
    let sentence = &expected["sentences"][4];
    let text = sentence["text"].as_str().unwrap();
    let body = api.predict_json("/inference/ner/predict", text).await;
    let got = body["result"].as_array().unwrap();
    let want = sentence["entities"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{body}");
    for (got, want) in got.iter().zip(want) {
        for key in ["entity_group", "word", "start", "end"] {
            assert_eq!(got[key], want[key], "{key}: {got} vs {want}");
        }
    }

    let reranker = fixture("bert-reranker-tiny");
    api.upload("reranker", packed_with(&reranker.join("model"), &manifest))
        .await;
    assert_eq!(api.settle("reranker", "v1").await["state"], "live");
    let expected = read("bert-reranker-tiny");
    let query = &expected["queries"][1];
    let response = api
        .client
        .post(format!("{}/inference/reranker/rerank", api.base))
        .json(&json!({"query": query["query"], "texts": query["texts"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let ranked: Value = response.json().await.unwrap();
    let order: Vec<&Value> = ranked
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["index"])
        .collect();
    let want: Vec<&Value> = query["order"].as_array().unwrap().iter().collect();
    assert_eq!(order, want, "{ranked}");
    api.stop();
}
