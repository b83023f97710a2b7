//! `so1s serve` driven over HTTP, and the archives the end-to-end tests upload.

use super::{minilm_dir, spawn_listening};
use serde_json::{json, Value};
use so1s_core::auth::Token;
use so1s_core::client::ApiClient;
use so1s_core::registry::VersionState;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `so1s serve` on a free port over `data`.
pub struct Api {
    pub child: Child,
    pub base: String,
    /// Sends the admin token (`<data>/admin.token`) with every request.
    pub client: reqwest::Client,
    /// The admin token the first start wrote.
    pub admin_token: String,
    /// so1s-core's typed client with the admin token: the tests' uploads, version and
    /// model reads go through it, so every answer they see must also parse as its types.
    pub typed: ApiClient,
}

impl Api {
    /// `so1s serve` on the embedded default.
    pub fn start(data: &Path) -> Api {
        Api::start_with(data, &[])
    }

    /// `so1s serve` with extra arguments (another backend...).
    pub fn start_with(data: &Path, args: &[&str]) -> Api {
        Api::spawn(&mut Api::command(data, args))
    }

    /// `so1s serve` with extra environment.
    pub fn start_env(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Api {
        let mut command = Api::command(data, args);
        command.envs(env.iter().copied());
        Api::spawn(&mut command)
    }

    /// `so1s serve` logging at debug level into `log`.
    pub fn start_logged(data: &Path, args: &[&str], log: &Path) -> Api {
        let log = std::fs::File::create(log).unwrap();
        Api::spawn(
            Api::command(data, args)
                .env("RUST_LOG", "debug")
                .stderr(log),
        )
    }

    fn command(data: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_so1s"));
        command
            .args(["serve", "--port", "0", "--predict-threads", "1"])
            .arg("--data-dir")
            .arg(data)
            .arg("--predict-bin")
            .arg(env!("CARGO_BIN_EXE_so1s-predict"))
            .args(args);
        command
    }

    fn spawn(command: &mut Command) -> Api {
        let data = command
            .get_args()
            .skip_while(|a| *a != "--data-dir")
            .nth(1)
            .map(std::path::PathBuf::from)
            .unwrap();
        let (child, base) = spawn_listening(command);
        let admin_token = std::fs::read_to_string(data.join("admin.token"))
            .expect("the first start writes admin.token")
            .trim()
            .to_owned();
        Api {
            typed: ApiClient::new(&base, Some(Token::new(admin_token.clone()))),
            child,
            base,
            client: client_with_token(&admin_token),
            admin_token,
        }
    }

    /// Uploads through the typed client (which wants the 202); the stored version as JSON.
    pub async fn upload(&self, name: &str, archive: Vec<u8>) -> Value {
        let stored = self.typed.upload(name, archive).await.unwrap();
        assert_eq!(stored.state(), VersionState::Stored);
        serde_json::to_value(stored).unwrap()
    }

    /// The JSON answer of `GET path` (with the admin token).
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A version's record, read by the typed client (an error answer as the server wrote
    /// it).
    pub async fn version(&self, name: &str, version: &str) -> Value {
        let path = format!("/v1/models/{name}/versions/{version}");
        self.typed_or_error(self.typed.version(name, version).await, &path)
            .await
    }

    /// A model's view (live version, health, versions), read by the typed client.
    pub async fn model(&self, name: &str) -> Value {
        let path = format!("/v1/models/{name}");
        self.typed_or_error(self.typed.model(name).await, &path)
            .await
    }

    /// A typed answer as JSON; for an error answer, the server's own error body.
    async fn typed_or_error(
        &self,
        answer: so1s_core::Result<impl serde::Serialize>,
        path: &str,
    ) -> Value {
        match answer {
            Ok(typed) => serde_json::to_value(typed).unwrap(),
            Err(so1s_core::Error::Client(so1s_core::ClientError::Remote { status, .. }))
                if status >= 400 =>
            {
                self.get_json(path).await
            }
            Err(e) => panic!("GET {path}: {}", e.chain()),
        }
    }

    /// Waits (at most `limit`) until `check` holds for the model's view; returns the view.
    pub async fn model_until(
        &self,
        name: &str,
        limit: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let model = self.model(name).await;
            if check(&model) {
                return model;
            }
            assert!(started.elapsed() < limit, "gave up waiting: {model}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the version is live or failed; returns its record.
    pub async fn settle(&self, name: &str, version: &str) -> Value {
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

    pub async fn predict(&self, path: &str, text: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .post(format!("{}{path}", self.base))
            .json(&json!({ "text": text }))
            .send()
            .await
    }

    /// The JSON body of a prediction that must succeed.
    pub async fn predict_json(&self, path: &str, text: &str) -> Value {
        let response = self.predict(path, text).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }

    /// The text answer of `GET path` (with the admin token).
    async fn get_text(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A version's events (server-sent events text) up to now.
    pub async fn events(&self, name: &str, version: &str) -> String {
        self.get_text(&format!("/v1/models/{name}/versions/{version}/events"))
            .await
    }

    /// The value of `series` (name and labels, as `/metrics` writes them), if it is there.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        super::metric_value(&self.get_text("/metrics").await, series)
    }

    /// Predicts through `path` until it answers 200 (after a restart), at most a minute;
    /// returns the last answer.
    pub async fn predict_when_live(&self, path: &str, text: &str) -> reqwest::Response {
        let started = Instant::now();
        loop {
            let response = self.predict(path, text).await.unwrap();
            if response.status() == 200 || started.elapsed() > Duration::from_secs(60) {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (at most `within`) until the events of `name` `version` satisfy `done`;
    /// returns them.
    pub async fn events_until(
        &self,
        name: &str,
        version: &str,
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let started = Instant::now();
        loop {
            let events = self.events(name, version).await;
            if done(&events) {
                return events;
            }
            assert!(started.elapsed() < within, "{events}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `name` has been scaled to zero for the `times`-th time (its live
    /// version `version`'s events say so: its instances are stopped and the registry
    /// knows); returns its view.
    pub async fn scaled_to_zero(&self, name: &str, version: &str, times: usize) -> Value {
        let scaled = format!("scaled {name} to zero after");
        let within = Duration::from_secs(60);
        self.events_until(name, version, within, |events: &str| {
            events.matches(&scaled).count() >= times
        })
        .await;
        let model = self.model(name).await;
        assert_eq!(model["scale"]["running"], false, "{model}");
        model
    }

    /// `n` predictions of "Hello world" at once through `path`: each one's status and body.
    pub async fn predict_at_once(&self, path: &str, n: usize) -> Vec<(u16, Value)> {
        let requests = (0..n).map(|_| async {
            let response = self.predict(path, "Hello world").await.unwrap();
            let status = response.status().as_u16();
            let body = response.json::<Value>().await.unwrap_or(Value::Null);
            (status, body)
        });
        futures::future::join_all(requests).await
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "so1s serve exited with {status}");
    }
}

/// A client that sends `Authorization: Bearer <token>` with every request.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    // Idle connections dropped before the server's 10 s header timeout closes them.
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_idle_timeout(std::time::Duration::from_secs(4))
        .build()
        .unwrap()
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn minilm_archive() -> Vec<u8> {
    so1s_core::build::pack_dir(&minilm_dir()).unwrap()
}

/// A tar.gz with a raw entry name, so a hostile path can be written.
pub fn tar_with_entry(name: &str, data: &[u8]) -> Vec<u8> {
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
pub fn broken_model_archive() -> Vec<u8> {
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
    // A well-formed file with as many parameters as MiniLM has (so the checks before
    // loading pass), but none of the tensors MiniLM needs: its smoke test fails.
    let header = r#"{"x": {"dtype": "U8", "shape": [6000000, 4], "data_offsets": [0, 24000000]}}"#;
    let mut weights = (header.len() as u64).to_le_bytes().to_vec();
    weights.extend(header.as_bytes());
    weights.resize(weights.len() + 24_000_000, 0);
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    so1s_core::build::pack_dir(dir.path()).unwrap()
}

/// MiniLM's files plus symbolic links (`name -> target`), packed as they are (links kept).
pub fn minilm_archive_with_links(links: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    builder.follow_symlinks(false);
    builder.append_dir_all("minilm", minilm_dir()).unwrap();
    for (name, target) in links {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        builder
            .append_link(&mut header, format!("minilm/{name}"), target)
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

pub fn first_values(body: &Value) -> Vec<f64> {
    body["result"]
        .as_array()
        .unwrap()
        .iter()
        .take(8)
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Clients predicting through the gateway in a loop until stopped, each request counted.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    clients: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl ClientLoop {
    /// `clients` clients asking `model` through `/inference/{model}/predict`.
    pub fn start(api: &Api, model: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let clients = (0..clients)
            .map(|i| {
                let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
                let url = format!("{}/inference/{model}/predict", api.base);
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
        Self {
            stop,
            sent,
            failed,
            clients,
        }
    }

    /// Stops the clients; how many requests failed, how many were sent, and the versions
    /// that answered, client by client in order.
    pub async fn stop(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut seen = Vec::new();
        for client in self.clients {
            seen.extend(client.await.unwrap());
        }
        (
            self.failed.load(Ordering::SeqCst),
            self.sent.load(Ordering::SeqCst),
            seen,
        )
    }
}

/// Uploads a new version of `model` while 4 clients keep predicting through the gateway,
/// until it is live and a little after. Returns how many requests failed, how many were
/// sent, and the versions that answered, in order.
pub async fn swap_under_load(
    api: &Api,
    model: &str,
    archive: Vec<u8>,
    version: &str,
) -> (usize, usize, Vec<String>) {
    let clients = ClientLoop::start(api, model, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let accepted = api.upload(model, archive).await;
    assert_eq!(accepted["version"], version);
    let record = api.settle(model, version).await;
    assert_eq!(record["state"], "live", "{record}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    clients.stop().await
}

/// `kill -9` of `pid` (a live server of `model`) while 8 clients predict in a loop, until
/// `back` holds of the model's view and half a second more: asserts that no request failed
/// and that `version` answered them all; prints how long until `back` (as `label`).
pub async fn kill_under_load(
    api: &Api,
    model: &str,
    pid: &str,
    version: &str,
    label: &str,
    back: impl Fn(&Value) -> bool,
) {
    let clients = ClientLoop::start(api, model, 8);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    super::signal(pid, "KILL");
    api.model_until(model, Duration::from_secs(30), back).await;
    eprintln!(
        "FIGURES {label}: serves again {} ms after kill -9",
        killed.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (failed, sent, versions) = clients.stop().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across kill -9"
    );
    assert!(
        versions.len() > 8 && versions.iter().all(|v| v == version),
        "{versions:?}"
    );
}
