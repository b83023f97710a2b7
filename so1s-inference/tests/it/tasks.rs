//! Token classifiers and cross-encoders made by transformers (`make_family_fixture.py --task
//! token-classification | rerank`) answer through a real predict server on port 0 as
//! transformers did: the same token ids (pairs too); the entities of its token-classification
//! pipeline with `aggregation_strategy="simple"` (groups, words, character offsets; scores
//! within 1e-4 in f32); the cross-encoders' order, sigmoid scores and raw logits on
//! `/rerank`, and both through the Open Inference Protocol. And `auto` precision keeps bf16
//! only where a model keeps the accuracy contract in it.

use crate::support::TestServer;
use crate::transformers_fixtures::all_fixtures;
use serde::Deserialize;
use serde_json::{json, Value};
use so1s_core::model::{ModelLayout, Task};
use so1s_core::predict::Precision;
use so1s_core::Entity;
use so1s_inference::server::PredictServerConfig;
use so1s_inference::{JsonTokenizer, Tokenize};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Tagged {
    labels: Vec<String>,
    sentences: Vec<TaggedSentence>,
}

#[derive(Deserialize)]
struct TaggedSentence {
    text: String,
    input_ids: Vec<i64>,
    entities: Vec<Entity>,
}

#[derive(Deserialize)]
struct Ranked {
    max_length: usize,
    queries: Vec<Query>,
}

#[derive(Deserialize)]
struct Query {
    query: String,
    texts: Vec<String>,
    input_ids: Vec<Vec<i64>>,
    logits: Vec<f64>,
    scores: Vec<f64>,
    order: Vec<usize>,
}

/// The fixtures of `task`: name, model directory and expected.json's text.
fn of_task(task: &str) -> Vec<(String, PathBuf, Vec<u8>)> {
    let fixtures: Vec<_> = all_fixtures()
        .into_iter()
        .filter(|f| f.expected.task.as_deref() == Some(task))
        .map(|f| {
            let expected = std::fs::read(f.dir.join("expected.json")).unwrap();
            (f.name.clone(), f.dir.join("model"), expected)
        })
        .collect();
    assert!(fixtures.len() >= 2, "{task}: too few fixtures");
    fixtures
}

/// A predict server of `model` in f32 on port 0.
async fn serve(model: &Path) -> TestServer {
    let mut config = PredictServerConfig::new(model);
    config.threads = Some(1);
    config.model_version = "v1".into();
    config.precision = Some(Precision::F32);
    TestServer::start(config).await.unwrap()
}

async fn json_of(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let response = server.post(path, body).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn token_classifiers_find_transformers_entities_on_the_predict_server() {
    for (name, model, expected) in of_task("token-classification") {
        let expected: Tagged = serde_json::from_slice(&expected).unwrap();
        let layout = ModelLayout::inspect(&model).unwrap();
        assert_eq!(layout.task, Task::TokenClassification, "{name}");
        let server = serve(&model).await;
        let texts: Vec<&str> = expected.sentences.iter().map(|s| s.text.as_str()).collect();
        let (status, reply) = json_of(&server, "/predict", json!({ "texts": texts })).await;
        assert_eq!(status, 200, "{name}: {reply}");
        let mut found = 0;
        for (sentence, result) in expected
            .sentences
            .iter()
            .zip(reply["results"].as_array().unwrap())
        {
            let got: Vec<Entity> = serde_json::from_value(result["result"].clone()).unwrap();
            let summary = |entities: &[Entity]| -> Vec<(String, String, usize, usize)> {
                entities
                    .iter()
                    .map(|e| (e.entity_group.clone(), e.word.clone(), e.start, e.end))
                    .collect()
            };
            assert_eq!(
                summary(&got),
                summary(&sentence.entities),
                "{name}: {:?}",
                sentence.text
            );
            for (a, b) in got.iter().zip(&sentence.entities) {
                assert!((a.score - b.score).abs() < 1e-4, "{name}: {a:?} vs {b:?}");
                // The offsets are characters of the text sent.
                let chars: String = sentence
                    .text
                    .chars()
                    .skip(a.start)
                    .take(a.end - a.start)
                    .collect();
                assert!(!chars.is_empty(), "{name}: {a:?}");
            }
            found += got.len();
        }
        assert!(found > 0, "{name}: no entity at all");
        let labels = &expected.labels;
        assert!(
            labels.iter().any(|l| l.starts_with("B-")),
            "{name}: {labels:?}"
        );

        // The Open Inference Protocol: a text's entities as one JSON string.
        let first = &expected.sentences[0];
        let infer = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [first.text]}]});
        let (status, reply) = json_of(&server, "/v2/models/model/infer", infer).await;
        assert_eq!(status, 200, "{name}: {reply}");
        let output = &reply["outputs"][0];
        assert_eq!(output["name"], "entities");
        let entities: Vec<Entity> =
            serde_json::from_str(output["data"][0].as_str().unwrap()).unwrap();
        assert_eq!(entities.len(), first.entities.len(), "{name}");
        // A token classifier ranks nothing.
        let (status, reply) =
            json_of(&server, "/rerank", json!({"query": "q", "texts": ["a"]})).await;
        assert_eq!(status, 422, "{name}: {reply}");
        assert!(reply.to_string().contains("/predict"), "{reply}");
        server.stop().await.unwrap().unwrap();

        // transformers' token ids, and the spans the tokenizer keeps.
        let tokenizer = JsonTokenizer::from_file(
            layout.tokenizer.json.as_ref().unwrap(),
            &model,
            layout.max_sequence_length.unwrap(),
        )
        .unwrap();
        for sentence in &expected.sentences {
            let ids = tokenizer
                .token_ids(std::slice::from_ref(&sentence.text))
                .unwrap();
            assert_eq!(ids[0], sentence.input_ids, "{name}: {:?}", sentence.text);
        }
    }
}

#[tokio::test]
async fn cross_encoders_rank_as_transformers_on_the_rerank_route() {
    for (name, model, expected) in of_task("rerank") {
        let expected: Ranked = serde_json::from_slice(&expected).unwrap();
        let layout = ModelLayout::inspect(&model).unwrap();
        assert_eq!(layout.task, Task::Rerank, "{name}");
        let tokenizer = JsonTokenizer::from_file(
            layout.tokenizer.json.as_ref().unwrap(),
            &model,
            expected.max_length,
        )
        .unwrap();
        let server = serve(&model).await;
        for query in &expected.queries {
            let pairs = tokenizer.encode_pairs(&query.query, &query.texts).unwrap();
            let ids: Vec<&Vec<i64>> = pairs.iter().map(|p| &p.ids).collect();
            assert_eq!(ids, query.input_ids.iter().collect::<Vec<_>>(), "{name}");
            let body = json!({"query": query.query, "texts": query.texts});
            let (status, reply) = json_of(&server, "/rerank", body.clone()).await;
            assert_eq!(status, 200, "{name}: {reply}");
            let ranked = reply.as_array().unwrap();
            let order: Vec<usize> = ranked
                .iter()
                .map(|r| r["index"].as_u64().unwrap() as usize)
                .collect();
            assert_eq!(order, query.order, "{name}: {:?}", query.query);
            for r in ranked {
                let (i, score) = (
                    r["index"].as_u64().unwrap() as usize,
                    r["score"].as_f64().unwrap(),
                );
                assert!(
                    (score - query.scores[i]).abs() < 1e-4,
                    "{name}: {r} vs {}",
                    query.scores[i]
                );
            }
            let mut raw = body.clone();
            raw["raw_scores"] = json!(true);
            raw["return_text"] = json!(true);
            let (_, reply) = json_of(&server, "/rerank", raw).await;
            let top = &reply[0];
            let i = top["index"].as_u64().unwrap() as usize;
            assert!(
                (top["score"].as_f64().unwrap() - query.logits[i]).abs() < 1e-4,
                "{name}: {top}"
            );
            assert_eq!(top["text"].as_str(), Some(query.texts[i].as_str()));
        }
        // The Open Inference Protocol: the texts' scores in their order, against `query`.
        let query = &expected.queries[0];
        let infer = json!({
            "parameters": {"query": query.query},
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [query.texts.len()], "data": query.texts}],
            "outputs": [{"name": "score"}],
        });
        let (status, reply) = json_of(&server, "/v2/models/model/infer", infer.clone()).await;
        assert_eq!(status, 200, "{name}: {reply}");
        let scores = reply["outputs"][0]["data"].as_array().unwrap();
        for (got, want) in scores.iter().zip(&query.scores) {
            assert!(
                (got.as_f64().unwrap() - want).abs() < 1e-4,
                "{name}: {got} vs {want}"
            );
        }
        let mut no_query = infer;
        no_query["parameters"] = json!({});
        let (status, reply) = json_of(&server, "/v2/models/model/infer", no_query).await;
        assert_eq!(status, 400, "{name}: {reply}");
        let (status, reply) = json_of(&server, "/rerank", json!({"query": "q", "texts": []})).await;
        assert_eq!(status, 422, "{name}: {reply}");
        server.stop().await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn auto_precision_keeps_bf16_only_where_the_model_keeps_the_accuracy_contract() {
    use crate::support::{load, test_options};
    use so1s_core::predict::{CpuFeatures, Precision};
    let native = CpuFeatures::detect().native_bf16();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for name in ["electra-nsmc-tiny", "bert-bge-tiny", "bert-reranker-tiny"] {
        let service = load(&root.join(name).join("model"), test_options())
            .await
            .unwrap();
        let info = service.info();
        match (&info.accuracy, native) {
            // No native bf16: f32, nothing to measure.
            (None, false) => assert_eq!(info.forward_pass, "so1s-f32", "{name}"),
            (Some(accuracy), true) => {
                assert_eq!(accuracy.measured, Precision::Bf16);
                assert_eq!(
                    accuracy.chosen == Precision::Bf16,
                    accuracy.drift.within(),
                    "{name}: {accuracy}"
                );
                assert_eq!(
                    info.forward_pass,
                    format!("so1s-{}", accuracy.chosen.as_str())
                );
                assert!(info.reason.contains("calibration texts"), "{}", info.reason);
                println!("{name}: {accuracy}");
            }
            other => panic!("{name}: native bf16 {native}, accuracy {other:?}"),
        }
    }
    // The seed-shaped ELECTRA classifier under the default precision answers transformers'
    // scores within the contract (bf16 moved them by up to 0.08, so auto keeps it in f32 on
    // a bf16 CPU).
    let fixture = root.join("electra-nsmc-tiny");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();
    let service = load(&fixture.join("model"), test_options()).await.unwrap();
    for sentence in expected["sentences"].as_array().unwrap() {
        let prediction = service
            .predict_one(sentence["text"].as_str().unwrap())
            .await
            .unwrap();
        let so1s_core::Prediction::Label { label, score, .. } = prediction else {
            panic!("a label");
        };
        assert_eq!(label, sentence["label"].as_str().unwrap());
        let want = sentence["score"].as_f64().unwrap();
        assert!((score - want).abs() <= 0.0051, "{label}: {score} vs {want}");
    }
}
