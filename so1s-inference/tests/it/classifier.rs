//! A sequence classifier with random weights, saved and loaded back through the same path
//! users' uploads take.

use crate::support::{load, test_options, tiny_classifier};
use so1s_core::events::{EventLog, Stage};
use so1s_core::{Prediction, Task};

const LABELS: [&str; 3] = ["negative", "neutral", "positive"];
const TEXTS: [&str; 4] = [
    "the movie was great",
    "the movie was terrible",
    "model serving fast",
    "an input with words outside the tiny vocabulary",
];

fn labels(predictions: Vec<Prediction>) -> Vec<(String, f64)> {
    predictions
        .into_iter()
        .map(|p| match p {
            Prediction::Label { label, score, .. } => (label, score),
            other => panic!("expected a label, got {other:?}"),
        })
        .collect()
}

async fn classify(dir: &std::path::Path) -> Vec<(String, f64)> {
    classify_with(dir, test_options()).await
}

async fn classify_with(
    dir: &std::path::Path,
    options: so1s_inference::ServiceOptions,
) -> Vec<(String, f64)> {
    let service = load(dir, options).await.unwrap();
    assert_eq!(service.info().task, Task::SequenceClassification);
    assert_eq!(service.info().labels, LABELS);
    assert_eq!(service.info().output_shape, [3]);
    let texts = TEXTS.iter().map(|t| t.to_string()).collect();
    labels(service.predict(texts).await.unwrap())
}

#[tokio::test]
async fn a_saved_random_classifier_loads_and_answers_with_its_labels() {
    let dir = tempfile::tempdir().unwrap();
    tiny_classifier(dir.path(), &LABELS, 7, "model.safetensors").unwrap();
    let first = classify(dir.path()).await;
    assert_eq!(first.len(), TEXTS.len());
    for (label, score) in &first {
        assert!(LABELS.contains(&label.as_str()), "unknown label {label}");
        // The top class of a softmax over three is at least a third.
        assert!((1.0 / 3.0 - 1e-6..=1.0).contains(score), "score {score}");
    }
    // Loading the same files again gives the very same answers: the weights come from the
    // file, not from a fresh random initialisation.
    let second = classify(dir.path()).await;
    assert_eq!(first, second);
}

#[tokio::test]
async fn different_weights_give_different_scores_and_ot_files_load_too() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    tiny_classifier(a.path(), &LABELS, 1, "model.safetensors").unwrap();
    tiny_classifier(b.path(), &LABELS, 2, "rust_model.ot").unwrap();
    let scores_a: Vec<f64> = classify(a.path())
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let scores_b: Vec<f64> = classify(b.path())
        .await
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_ne!(scores_a, scores_b);
}

#[tokio::test]
async fn a_classifier_without_id2label_is_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    tiny_classifier(dir.path(), &LABELS, 3, "model.safetensors").unwrap();
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config.as_object_mut().unwrap().remove("id2label");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = load(dir.path(), test_options()).await.err().unwrap();
    assert!(err.to_string().contains("id2label"), "{err}");
}

#[tokio::test]
async fn weights_that_do_not_fit_the_config_fail_with_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    tiny_classifier(dir.path(), &LABELS, 4, "model.safetensors").unwrap();
    // Same files, but the config now promises a bigger model than the weights hold.
    let config_path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .unwrap()
        .replace("\"hidden_size\": 32", "\"hidden_size\": 64");
    std::fs::write(&config_path, text).unwrap();
    // On either forward pass the error says the weights do not fit.
    let err = load(dir.path(), test_options()).await.err().unwrap();
    let message = format!("{err:#}");
    assert!(
        message.contains("config.json makes them 64 wide"),
        "{message}"
    );
    let rust_bert = so1s_inference::ServiceOptions {
        forward_pass: so1s_core::predict::ForwardPass::RustBert,
        ..test_options()
    };
    let err = load(dir.path(), rust_bert).await.err().unwrap();
    let message = format!("{err:#}");
    assert!(message.contains("loading the model failed"), "{message}");
}

/// Makes the classifier's feed-forward activation `mish`: rust-bert runs it, so1s's own
/// encoder (every precision) refuses it.
fn use_mish(dir: &std::path::Path) {
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"hidden_act\": \"gelu\""));
    std::fs::write(&config, text.replace("\"gelu\"", "\"mish\"")).unwrap();
}

#[tokio::test]
async fn a_classifier_runs_in_int8_close_to_rust_berts_and_what_it_cannot_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tiny_classifier(dir.path(), &LABELS, 7, "model.safetensors").unwrap();
    let int8 = so1s_inference::ServiceOptions {
        precision: so1s_core::predict::Precision::Int8,
        ..test_options()
    };
    let quantized = load(dir.path(), int8.clone()).await.unwrap();
    assert_eq!(quantized.info().forward_pass, "so1s-int8");
    let texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
    let rust_bert = so1s_inference::ServiceOptions {
        forward_pass: so1s_core::predict::ForwardPass::RustBert,
        ..test_options()
    };
    let reference = classify_with(dir.path(), rust_bert.clone()).await;
    let answers = labels(quantized.predict(texts).await.unwrap());
    for ((label, score), (expected, expected_score)) in answers.iter().zip(&reference) {
        // Random weights give near-even scores: the labels may tie, the scores stay close.
        assert!(
            (score - expected_score).abs() < 0.05,
            "{label} {score} vs {expected} {expected_score}"
        );
    }

    use_mish(dir.path());
    let Err(error) = load(dir.path(), int8).await else {
        panic!("the own pass ran mish");
    };
    let error = error.to_string();
    assert!(error.contains("mish"), "{error}");
    assert!(error.contains("own forward pass"), "{error}");
    // rust-bert still serves it, and auto falls back to it.
    assert_eq!(
        classify_with(dir.path(), rust_bert).await.len(),
        TEXTS.len()
    );
    let service = load(dir.path(), test_options()).await.unwrap();
    assert_eq!(service.info().forward_pass, "rust-bert");
    assert!(
        service.info().reason.contains("mish"),
        "{}",
        service.info().reason
    );
}

/// Packs `model` and builds it with the embedded bundle builder (smoke test in process) as
/// `tiny` v1 under `work`; the result and the build's events.
async fn build_bundle(
    work: &std::path::Path,
    model: &std::path::Path,
) -> (so1s_core::Result<so1s_core::build::Artifact>, EventLog) {
    use so1s_core::build::{pack_dir, BundleBuilder, ImageBuilder, SmokeTest};
    use so1s_core::store::{ArchiveFormat, StoredVersion};

    let archive = work.join("model.tar.gz");
    std::fs::write(&archive, pack_dir(model).unwrap()).unwrap();
    let stored = StoredVersion {
        model: so1s_core::ModelName::parse("tiny").unwrap(),
        version: so1s_core::VersionId::parse("v1").unwrap(),
        sha256: String::new(),
        size: 0,
        format: ArchiveFormat::TarGz,
        stored_at: 0,
    };
    let log = EventLog::default();
    let smoke = SmokeTest::in_process(so1s_inference::InProcessSmokeTest);
    let built = BundleBuilder::new(work.join("bundles"), smoke)
        .build(&stored, &archive, &log.events(Stage::Build))
        .await;
    (built, log)
}

#[tokio::test]
async fn a_build_smoke_tests_the_precision_the_manifest_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    tiny_classifier(&model, &LABELS, 7, "model.safetensors").unwrap();
    // rust-bert would run it; int8 (so1s's own pass) cannot: the build must fail.
    use_mish(&model);
    std::fs::write(
        model.join("so1s.toml"),
        "task = \"sequence-classification\"\n[serving]\nprecision = \"int8\"\n",
    )
    .unwrap();
    let (built, log) = build_bundle(dir.path(), &model).await;
    let error = built.unwrap_err().to_string();
    assert!(error.contains("int8"), "{error}\n{}", log.text());
    assert!(error.contains("mish"), "{error}\n{}", log.text());
    assert!(log.text().contains("smoke test"), "{}", log.text());
}

/// Writes `safetensors`' f32 tensors as `torch.save` does: a zip of `archive/data.pkl` (the
/// state dict's pickle, protocol 2, one storage per tensor) and `archive/data/<key>`.
fn write_torch_checkpoint(safetensors: &std::path::Path, out: &std::path::Path) {
    use std::io::Write;
    let bytes = std::fs::read(safetensors).unwrap();
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + length]).unwrap();
    let data = &bytes[8 + length..];
    let text = |pickle: &mut Vec<u8>, s: &str| {
        pickle.push(b'X');
        pickle.extend_from_slice(&(s.len() as u32).to_le_bytes());
        pickle.extend_from_slice(s.as_bytes());
    };
    let int = |pickle: &mut Vec<u8>, n: usize| {
        pickle.push(b'J');
        pickle.extend_from_slice(&(n as i32).to_le_bytes());
    };
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut pickle = b"\x80\x02}(".to_vec();
    let tensors = header.as_object().unwrap();
    for (key, (name, entry)) in tensors
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .enumerate()
    {
        assert_eq!(entry["dtype"], "F32", "{name}");
        let shape: Vec<usize> = serde_json::from_value(entry["shape"].clone()).unwrap();
        let offsets: Vec<usize> = serde_json::from_value(entry["data_offsets"].clone()).unwrap();
        let numbers = &data[offsets[0]..offsets[1]];
        zip.start_file(format!("archive/data/{key}"), stored)
            .unwrap();
        zip.write_all(numbers).unwrap();
        text(&mut pickle, name);
        pickle.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        text(&mut pickle, "storage");
        pickle.extend_from_slice(b"ctorch\nFloatStorage\n");
        text(&mut pickle, &key.to_string());
        text(&mut pickle, "cpu");
        int(&mut pickle, numbers.len() / 4);
        pickle.extend_from_slice(b"tQ");
        int(&mut pickle, 0);
        pickle.push(b'(');
        for d in &shape {
            int(&mut pickle, *d);
        }
        pickle.extend_from_slice(b"t(");
        let mut stride = vec![1usize; shape.len()];
        for axis in (0..shape.len().saturating_sub(1)).rev() {
            stride[axis] = stride[axis + 1] * shape[axis + 1];
        }
        for s in &stride {
            int(&mut pickle, *s);
        }
        pickle.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    pickle.extend_from_slice(b"u.");
    zip.start_file("archive/data.pkl", stored).unwrap();
    zip.write_all(&pickle).unwrap();
    zip.start_file("archive/byteorder", stored).unwrap();
    zip.write_all(b"little").unwrap();
    std::fs::write(out, zip.finish().unwrap().into_inner()).unwrap();
}

#[tokio::test]
async fn a_classifier_uploaded_as_pytorch_model_bin_is_converted_and_answers_the_same() {
    use so1s_core::build::Artifact;

    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    tiny_classifier(&reference, &LABELS, 11, "model.safetensors").unwrap();
    // The same model with its weights as a torch.save checkpoint only.
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(&reference).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
        }
    }
    write_torch_checkpoint(
        &reference.join("model.safetensors"),
        &model.join("pytorch_model.bin"),
    );
    let (built, log) = build_bundle(dir.path(), &model).await;
    let artifact = built.unwrap_or_else(|e| panic!("{}\n{}", e.chain(), log.text()));
    let Artifact::Bundle { dir: bundle, .. } = artifact else {
        panic!("a bundle");
    };
    assert!(
        log.text()
            .contains("pytorch_model.bin read without running its pickle"),
        "{}",
        log.text()
    );
    assert!(!bundle.join("pytorch_model.bin").exists());
    assert!(bundle.join("model.safetensors").is_file());
    // The converted model answers exactly as the one saved as safetensors.
    let converted = load(&bundle, test_options()).await.unwrap();
    let original = load(&reference, test_options()).await.unwrap();
    for text in TEXTS {
        assert_eq!(
            converted.predict_one(text).await.unwrap(),
            original.predict_one(text).await.unwrap(),
            "{text}"
        );
    }
}
