//! The predict server over real HTTP on port 0, with the real MiniLM model.

use crate::support::{cosine, metric, minilm_config, minilm_dir, reference, settings, TestServer};
use serde_json::{json, Value};
use so1s_inference::server::{MODEL_HEADER, VERSION_HEADER};
use std::time::Duration;

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error bodies are JSON");
    assert!(body["error"].is_string(), "{body}");
    assert!(body["error_type"].is_string(), "{body}");
    (status, body)
}

#[tokio::test]
async fn predict_health_ready_metadata_and_metrics_answer() {
    let server = TestServer::start(minilm_config()).await.unwrap();

    let response = server
        .post("/predict", json!({"text": "Hello world"}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[MODEL_HEADER], "all-MiniLM-L6-v2");
    assert_eq!(response.headers()[VERSION_HEADER], "v1");
    let body: Value = response.json().await.unwrap();
    let vector: Vec<f32> = serde_json::from_value(body["result"].clone()).unwrap();
    assert!(cosine(&vector, &reference()[0].1) >= 0.9999);

    let reference = reference();
    let texts: Vec<&str> = reference.iter().take(3).map(|(t, _)| t.as_str()).collect();
    let body: Value = server
        .post("/predict", json!({"texts": texts}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for (result, (text, expected)) in results.iter().zip(&reference) {
        let vector: Vec<f32> = serde_json::from_value(result["result"].clone()).unwrap();
        assert!(cosine(&vector, expected) >= 0.9999, "{text}");
    }

    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let model: Value = server
        .client
        .get(server.url("/v1/model"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["name"], "all-MiniLM-L6-v2");
    assert_eq!(model["version"], "v1");
    assert_eq!(model["model"]["task"], "sentence-embeddings");
    assert_eq!(model["model"]["output_shape"], json!([384]));
    assert_eq!(model["model"]["max_sequence_length"], 256);
    // The defaults: so1s's own encoder, bf16 where the CPU has it natively, saying why.
    let native = so1s_core::predict::CpuFeatures::detect().native_bf16();
    assert_eq!(
        model["model"]["forward_pass"],
        if native { "so1s-bf16" } else { "so1s-f32" }
    );
    let reason = model["model"]["reason"].as_str().unwrap();
    assert!(reason.contains("forward pass auto"), "{reason}");
    assert!(reason.contains("precision auto"), "{reason}");
    assert_eq!(model["serving"]["max_batch_size"], 32);

    let metrics = server.metrics().await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "so1s_requests_total{route=\"/predict\",status=\"200\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "so1s_batch_size_sum"),
        Some(4.0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "so1s_queue_depth"), Some(0.0), "{metrics}");
    assert!(
        metrics.contains("so1s_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("so1s_forward_pass_seconds_count"),
        "{metrics}"
    );

    server.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn each_failure_has_its_status_and_the_json_error_shape() {
    let mut config = minilm_config();
    config.body_limit = 4096;
    config.limits.max_input_chars = 1000;
    config.limits.max_texts = 4;
    let server = TestServer::start(config).await.unwrap();
    let raw = |body: &'static str| {
        server
            .client
            .post(server.url("/predict"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let (status, body) = error_of(raw("{\"text\": ").await.unwrap()).await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );

    let (status, body) = error_of(raw("{\"text\": 5}").await.unwrap()).await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (422, Some("validation")),
        "{body}"
    );

    let huge = json!({"text": "a ".repeat(4000)});
    let (status, body) = error_of(server.post("/predict", huge).await.unwrap()).await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );

    // A chunked body (no Content-Length) over the limit is refused too.
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let response = server
        .client
        .post(server.url("/predict"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 413);

    for (request, expected) in [
        (json!({"text": ""}), "`text` is empty"),
        (json!({"text": "x".repeat(1001)}), "1001 characters"),
        (json!({"texts": ["a", "b", "c", "d", "e"]}), "5 texts"),
        (json!({"texts": []}), "`texts` is empty"),
    ] {
        let (status, body) = error_of(server.post("/predict", request).await.unwrap()).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["error"].as_str().unwrap().contains(expected), "{body}");
    }

    let (status, _) = error_of(
        server
            .client
            .get(server.url("/nowhere"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = error_of(
        server
            .client
            .get(server.url("/predict"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 405);

    let metrics = server.metrics().await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "so1s_requests_total{route=\"/predict\",status=\"422\"}"
        ),
        Some(5.0),
        "{metrics}"
    );
    server.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn not_ready_until_the_model_is_loaded() {
    let (server, open) = TestServer::gated(settings("minilm"), minilm_dir())
        .await
        .unwrap();
    let health = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "alive before the model is loaded");
    let (status, body) = error_of(
        server
            .client
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error_type"].as_str()),
        (503, Some("not_ready"))
    );
    let (status, _) = error_of(
        server
            .post("/predict", json!({"text": "hi"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 503);

    open.send(()).unwrap();
    server.wait_ready().await.unwrap();
    let response = server
        .post("/predict", json!({"text": "hi"}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn a_full_queue_answers_429_at_once() {
    let mut config = minilm_config();
    config.queue_capacity = 1;
    config.max_batch_size = Some(1);
    config.max_batch_wait = Some(Duration::ZERO);
    let server = TestServer::start(config).await.unwrap();
    // Long texts keep each forward pass busy for a while.
    let long = "model serving should never drop a request ".repeat(20);
    let calls = (0..12).map(|_| server.post("/predict", json!({"text": long})));
    let responses = futures::future::join_all(calls).await;
    let mut overloaded = 0;
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => {}
            429 => {
                let (_, body) = error_of(response).await;
                assert_eq!(body["error_type"], "overloaded");
                overloaded += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        overloaded >= 1,
        "twelve requests against a queue of one: none was refused"
    );
    server.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn concurrent_requests_share_forward_passes() {
    let mut config = minilm_config();
    config.max_batch_wait = Some(Duration::from_millis(200));
    let server = TestServer::start(config).await.unwrap();
    let n = 16;
    let calls = (0..n).map(|i| server.post("/predict", json!({"text": format!("request {i}")})));
    for response in futures::future::join_all(calls).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    let metrics = server.metrics().await.unwrap();
    let passes = metric(&metrics, "so1s_batch_size_count").unwrap();
    let texts = metric(&metrics, "so1s_batch_size_sum").unwrap();
    assert_eq!(texts, n as f64, "{metrics}");
    assert!(
        passes < n as f64,
        "{n} requests took {passes} forward passes"
    );
    server.stop().await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_then_refuses_new_ones() {
    let mut config = minilm_config();
    // The request waits in its batch long enough for the shutdown to start meanwhile.
    config.max_batch_wait = Some(Duration::from_millis(500));
    let mut server = TestServer::start(config).await.unwrap();
    let in_flight = {
        let request = server
            .client
            .post(server.url("/predict"))
            .json(&json!({"text": "finish me"}));
        tokio::spawn(request.send())
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.trigger_shutdown();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the request in flight was cut off");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"].as_array().unwrap().len(), 384);

    let addr = server.addr;
    server.stop().await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is still open after shutdown"
    );
}

#[tokio::test]
async fn a_model_that_fails_to_load_stops_the_server_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let config = so1s_inference::server::PredictServerConfig::new(dir.path());
    let server = TestServer::spawn(move |listener, shutdown| {
        so1s_inference::server::run(listener, config, shutdown)
    })
    .await
    .unwrap();
    let err = server.join().await.unwrap().unwrap_err();
    assert!(err.to_string().contains("so1s.toml"), "{err}");
}
