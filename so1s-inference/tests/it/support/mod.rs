//! Shared helpers of the model tests: the MiniLM model and transformers' reference numbers,
//! loading a model through the servers' path, a predict server on port 0, tiny classifiers.

#![allow(dead_code)]

#[path = "../../common/minilm.rs"]
mod minilm;

pub use minilm::{cosine, minilm_dir, norm, reference};

use anyhow::{Context, Result};
use so1s_core::predict::InputLimits;
use so1s_core::ModelLayout;
use so1s_inference::server::{self as predict, PredictServerConfig, ServerSettings};
use so1s_inference::{ServiceOptions, TransformerService};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Service options for tests: one libtorch thread per test keeps parallel tests from
/// oversubscribing the cores.
pub fn test_options() -> ServiceOptions {
    ServiceOptions {
        threads: Some(1),
        ..ServiceOptions::default()
    }
}

/// Loads a model directory through the same path the servers use.
pub async fn load(dir: &Path, options: ServiceOptions) -> Result<TransformerService> {
    let layout = ModelLayout::inspect(dir)?;
    Ok(TransformerService::load(layout, options).await?)
}

/// A predict server running in this process on a port of its own.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<so1s_core::Result<()>>,
}

impl TestServer {
    /// Starts `so1s_inference::server::run` on 127.0.0.1:0 and waits until it is ready.
    pub async fn start(config: PredictServerConfig) -> Result<Self> {
        Self::start_with(|listener, shutdown| predict::run(listener, config, shutdown)).await
    }

    /// Starts any predict server future and waits until it is ready.
    pub async fn start_with<F, Fut>(serve: F) -> Result<Self>
    where
        F: FnOnce(tokio::net::TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = so1s_core::Result<()>> + Send + 'static,
    {
        let server = Self::spawn(serve).await?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// Starts a server without waiting for readiness.
    pub async fn spawn<F, Fut>(serve: F) -> Result<Self>
    where
        F: FnOnce(tokio::net::TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = so1s_core::Result<()>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (shutdown, signal) = oneshot::channel::<()>();
        let signal: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            let _ = signal.await;
        });
        let task = tokio::spawn(serve(listener, signal));
        Ok(Self {
            addr,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            task,
        })
    }

    /// A server whose model arrives only when `gate` is fired: until then it is not ready.
    pub async fn gated(
        settings: ServerSettings,
        dir: PathBuf,
    ) -> Result<(Self, oneshot::Sender<()>)> {
        let (open, gate) = oneshot::channel::<()>();
        let load = async move {
            let _ = gate.await;
            let layout = ModelLayout::inspect(&dir)?;
            TransformerService::load(layout, test_options()).await
        };
        let server = Self::spawn(move |listener, shutdown| {
            predict::serve(listener, settings, load, shutdown)
        })
        .await?;
        Ok((server, open))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn wait_ready(&self) -> Result<()> {
        for _ in 0..600 {
            if let Ok(response) = self.client.get(self.url("/readyz")).send().await {
                if response.status() == 200 {
                    return Ok(());
                }
            }
            if self.task.is_finished() {
                anyhow::bail!("the server stopped before it was ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the server was not ready after 60 s")
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> Result<reqwest::Response> {
        Ok(self.client.post(self.url(path)).json(&body).send().await?)
    }

    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .client
            .get(self.url("/metrics"))
            .send()
            .await?
            .text()
            .await?)
    }

    /// Asks the server to stop and waits for it.
    pub async fn stop(mut self) -> Result<so1s_core::Result<()>> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .context("the server did not stop within 30 s")?
            .context("the server task panicked")
    }

    /// Waits for the server to stop by itself (the shutdown signal stays unfired).
    pub async fn join(mut self) -> Result<so1s_core::Result<()>> {
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .context("the server did not stop within 60 s")?
            .context("the server task panicked")
    }

    /// Fires the shutdown signal without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// A predict server config for the MiniLM model with test-friendly options.
pub fn minilm_config() -> PredictServerConfig {
    let mut config = PredictServerConfig::new(minilm_dir());
    config.threads = Some(1);
    config.model_version = "v1".into();
    config
}

/// Default server settings for `serve`.
pub fn settings(name: &str) -> ServerSettings {
    ServerSettings {
        name: name.into(),
        version: "v1".into(),
        limits: InputLimits::default(),
        body_limit: 1 << 20,
    }
}

/// A value from Prometheus text, by its series: a name and the labels it must carry
/// (`so1s_requests_total{route="/predict",status="200"}`); the server adds the model's and
/// version's labels to every series, which the series need not name. Each series of a server
/// must be `model` and `version` labelled.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let (name, labels) = split_series(series);
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (line_series, value) = line.rsplit_once(' ')?;
            let (line_name, line_labels) = split_series(line_series);
            assert!(
                line_labels.iter().any(|l| l.starts_with("model="))
                    && line_labels.iter().any(|l| l.starts_with("version=")),
                "{line}: not labelled with the model and version"
            );
            let wanted = line_name == name && labels.iter().all(|l| line_labels.contains(l));
            wanted.then(|| value.trim().parse().ok()).flatten()
        })
}

/// `name{a="1",b="2"}` → (`name`, [`a="1"`, `b="2"`]).
fn split_series(series: &str) -> (&str, Vec<&str>) {
    match series.split_once('{') {
        Some((name, labels)) => (
            name,
            labels
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.is_empty())
                .collect(),
        ),
        None => (series, Vec::new()),
    }
}

/// Writes a small BERT sequence classifier with random weights (from `seed`) to `dir`, the
/// way a user's upload would look: `config.json` with `id2label`, `vocab.txt`, and weights
/// in `weights_file` (`model.safetensors` or `rust_model.ot`).
pub fn tiny_classifier(dir: &Path, labels: &[&str], seed: i64, weights_file: &str) -> Result<()> {
    use rust_bert::bert::{BertConfig, BertForSequenceClassification};
    use rust_bert::Config;

    std::fs::create_dir_all(dir)?;
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for word in [
        "the", "movie", "was", "great", "terrible", "model", "serving", "fast",
    ] {
        vocab.push(word.into());
    }
    for c in 'a'..='z' {
        vocab.push(c.to_string());
        vocab.push(format!("##{c}"));
    }
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n")?;
    let id2label: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| (i.to_string(), serde_json::Value::from(*label)))
        .collect();
    let label2id: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(i, label)| (label.to_string(), serde_json::Value::from(i)))
        .collect();
    let config = serde_json::json!({
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "vocab_size": vocab.len(),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "id2label": id2label,
        "label2id": label2id,
    });
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"do_lower_case": true}"#,
    )?;

    tch::manual_seed(seed);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let bert_config = BertConfig::from_file(&config_path);
    let _model = BertForSequenceClassification::new(vs.root(), &bert_config)?;
    vs.save(dir.join(weights_file))?;
    Ok(())
}
