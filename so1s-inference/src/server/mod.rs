//! The predict server: one model version behind `POST /predict`.
//!
//! | route | answer |
//! |---|---|
//! | `POST /predict` | `{"text": ".."}` → `{"result": ..}`; `{"texts": [..]}` → `{"results": [..]}`; a classifier's with `"all_scores": true` also carry `"scores"` (every label's); header `so1s-timeout-ms` bounds the wait (else the server's `request_timeout`; past it `504`) |
//! | `GET /healthz` | 200 while the process is alive |
//! | `GET /readyz` | 200 once the model loaded and a warm-up pass ran, 503 before |
//! | `GET /metrics` | Prometheus (OpenMetrics) text, `so1s_` prefix |
//! | `GET /v1/model` | name, version, task, output shape, labels, forward pass, batching options |
//! | `/v2/...` | the Open Inference Protocol ([`oip`]): health, metadata, infer |

mod oip;

use crate::{ServiceOptions, TransformerService};
use bytes::Bytes;
use prometheus_client::registry::Registry;
use serde_json::json;
use so1s_core::http::error::{body_limited, json_error, recover, ApiError};
use so1s_core::metrics::{render, HttpMetrics};
use so1s_core::model::{Manifest, ModelLayout, Task};
use so1s_core::predict::{ForwardPass, Precision};
use so1s_core::predict::{InputLimits, PredictRequest, RerankRequest};
use so1s_core::{Error, Prediction, Result};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

/// Header naming the model that answered.
pub const MODEL_HEADER: &str = "so1s-model";
/// Header naming the model version that answered.
pub const VERSION_HEADER: &str = "so1s-model-version";
/// Request header: how many milliseconds the caller will wait; past it the request's texts
/// not yet run are dropped and it is answered `504`.
pub const TIMEOUT_HEADER: &str = "so1s-timeout-ms";

/// Everything the predict server needs to know.
#[derive(Debug, Clone)]
pub struct PredictServerConfig {
    /// The model directory.
    pub model_dir: PathBuf,
    /// The model's name in replies and metadata (default: the directory's name).
    pub model_name: Option<String>,
    /// The version's name in replies and metadata.
    pub model_version: String,
    /// Most texts per forward pass (default: the manifest's, else 32).
    pub max_batch_size: Option<usize>,
    /// Longest wait for a batch to fill (default: the manifest's, else 2 ms).
    pub max_batch_wait: Option<Duration>,
    /// Most tokens per forward pass (default: the manifest's, else 4096).
    pub max_batch_tokens: Option<usize>,
    /// Most requests waiting for the model before `429`.
    pub queue_capacity: usize,
    /// How long a request may wait for the model unless it says (`so1s-timeout-ms`).
    pub request_timeout: Duration,
    /// libtorch intra-op threads (default: one per core).
    pub threads: Option<usize>,
    /// Who runs the forward pass (default: the manifest's, else auto).
    pub forward_pass: Option<ForwardPass>,
    /// The precision of so1s's own forward pass (default: the manifest's, else auto).
    pub precision: Option<Precision>,
    /// Bounds on one request's texts.
    pub limits: InputLimits,
    /// Largest request body in bytes.
    pub body_limit: usize,
}

impl PredictServerConfig {
    /// A configuration with defaults for everything but the model directory.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        Self {
            model_dir: model_dir.into(),
            model_name: None,
            model_version: "0".into(),
            max_batch_size: None,
            max_batch_wait: None,
            max_batch_tokens: None,
            queue_capacity: ServiceOptions::default().queue_capacity,
            request_timeout: ServiceOptions::default().request_timeout,
            threads: None,
            forward_pass: None,
            precision: None,
            limits: InputLimits::default(),
            body_limit: 2 << 20,
        }
    }

    /// The service options: explicit settings first, then the manifest's, then defaults.
    pub fn service_options(&self, manifest: &Manifest) -> ServiceOptions {
        let defaults = ServiceOptions::default();
        ServiceOptions {
            max_batch_size: self
                .max_batch_size
                .or(manifest.serving.max_batch_size)
                .unwrap_or(defaults.max_batch_size)
                .max(1),
            max_batch_wait: self
                .max_batch_wait
                .or(manifest
                    .serving
                    .max_batch_wait_ms
                    .map(Duration::from_millis))
                .unwrap_or(defaults.max_batch_wait),
            max_batch_gap: defaults.max_batch_gap,
            max_batch_tokens: self
                .max_batch_tokens
                .or(manifest.serving.max_batch_tokens)
                .unwrap_or(defaults.max_batch_tokens)
                .max(1),
            queue_capacity: self.queue_capacity,
            request_timeout: self.request_timeout,
            threads: self.threads,
            forward_pass: self
                .forward_pass
                .or(manifest.serving.forward_pass)
                .unwrap_or(defaults.forward_pass),
            precision: self
                .precision
                .or(manifest.serving.precision)
                .unwrap_or(defaults.precision),
        }
    }

    fn name(&self) -> String {
        self.model_name.clone().unwrap_or_else(|| {
            self.model_dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        })
    }
}

/// What the predict server says about itself, apart from the model.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The model's name in replies and metadata.
    pub name: String,
    /// The version's name in replies and metadata.
    pub version: String,
    /// Bounds on one request's texts.
    pub limits: InputLimits,
    /// Largest request body in bytes.
    pub body_limit: usize,
}

/// The server's shared state.
pub(super) struct State {
    pub(super) settings: ServerSettings,
    pub(super) name_header: HeaderValue,
    pub(super) version_header: HeaderValue,
    pub(super) service: OnceLock<TransformerService>,
    http_metrics: HttpMetrics,
    registry: Mutex<Registry>,
}

/// Serves the model of `config` on `listener` until `shutdown` resolves, then lets requests
/// in flight finish. The server answers `/healthz` at once and `/readyz` once the model has
/// loaded and run a warm-up pass; a model that fails to load ends the server with that error.
pub async fn run(
    listener: TcpListener,
    config: PredictServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let settings = ServerSettings {
        name: config.name(),
        version: config.model_version.clone(),
        limits: config.limits,
        body_limit: config.body_limit,
    };
    let load = async move {
        let dir = config.model_dir.clone();
        let layout = tokio::task::spawn_blocking(move || ModelLayout::inspect(&dir))
            .await
            .map_err(|e| Error::Load(format!("inspecting the model: {e}")))??;
        let options = config.service_options(&layout.manifest);
        tracing::info!(
            dir = %layout.dir.display(), task = %layout.task,
            max_batch_size = options.max_batch_size,
            max_batch_wait_ms = options.max_batch_wait.as_millis() as u64,
            "loading the model"
        );
        TransformerService::load(layout, options).await
    };
    serve(listener, settings, load, shutdown).await
}

/// Serves whatever service `load` yields: the building block of [`run`] for embedders that
/// bring their own [`TransformerService`]. Until `load` resolves, `/readyz` and `/predict`
/// answer 503; if it fails, the server stops with its error.
pub async fn serve(
    listener: TcpListener,
    settings: ServerSettings,
    load: impl Future<Output = Result<TransformerService>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let header = |value: &str, what: &str| {
        HeaderValue::from_str(value).map_err(|_| {
            Error::InvalidInput(format!(
                "the model {what} `{value}` is not a valid header value"
            ))
        })
    };
    let http_metrics = HttpMetrics::default();
    // Every series carries the model and version, so the versions of a split compare.
    let labels = [
        ("model", settings.name.clone()),
        ("version", settings.version.clone()),
    ];
    let mut registry = Registry::with_labels(
        labels
            .into_iter()
            .map(|(name, value)| (name.into(), value.into())),
    );
    http_metrics.register(&mut registry);
    let state = Arc::new(State {
        name_header: header(&settings.name, "name")?,
        version_header: header(&settings.version, "version")?,
        settings,
        service: OnceLock::new(),
        http_metrics,
        registry: Mutex::new(registry),
    });
    let load = {
        let state = state.clone();
        async move {
            let service = load.await?;
            if let Ok(mut registry) = state.registry.lock() {
                service.metrics().register(&mut registry);
            }
            let _ = state.service.set(service);
            tracing::info!(model = %state.settings.name, version = %state.settings.version, "ready");
            Ok::<_, Error>(())
        }
    };
    let body_limit = state.settings.body_limit;
    let server = warp::serve(routes(state, body_limit))
        .incoming(listener)
        .graceful(shutdown)
        .run();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        () = &mut server => return Ok(()),
        loaded = load => loaded?,
    }
    server.await;
    Ok(())
}

/// All routes of the predict server, with error recovery and request metrics.
fn routes(
    state: Arc<State>,
    body_limit: usize,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let predict = warp::path!("predict")
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::optional::<u64>(TIMEOUT_HEADER))
        .and(body_limited(body_limit))
        .then(predict);
    let rerank = warp::path!("rerank")
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::optional::<u64>(TIMEOUT_HEADER))
        .and(body_limited(body_limit))
        .then(rerank);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_response(StatusCode::OK, &json!({"status": "alive"})));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<State>| match state.service.get() {
            Some(_) => json_response(StatusCode::OK, &json!({"status": "ready"})),
            None => ApiError::from(Error::NotReady).into_response(),
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<State>| {
            let text = state
                .registry
                .lock()
                .map(|r| render(&r))
                .unwrap_or_default();
            let mut response = Response::new(text.into());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        });
    let model = warp::path!("v1" / "model")
        .and(warp::get())
        .and(with_state)
        .map(|state: Arc<State>| model_info(&state));
    let v2 = oip::routes(state.clone(), body_limit);

    let observe = state.http_metrics.clone();
    predict
        .or(rerank)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(model)
        .unify()
        .or(v2)
        .unify()
        .recover(recover)
        .unify()
        .with(warp::log::custom(move |info| {
            observe.observe(
                route_name(info.path()),
                info.status().as_u16(),
                info.elapsed().as_secs_f64(),
            )
        }))
}

fn route_name(path: &str) -> &'static str {
    match path {
        "/predict" => "/predict",
        "/rerank" => "/rerank",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/v1/model" => "/v1/model",
        _ => oip::route_name(path),
    }
}

async fn predict(state: Arc<State>, timeout_ms: Option<u64>, body: Bytes) -> Response {
    match answer(&state, timeout_ms, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &State, timeout_ms: Option<u64>, body: &[u8]) -> Result<Response, ApiError> {
    let service = state.service.get().ok_or(Error::NotReady)?;
    let request: PredictRequest = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    let all_scores = request.all_scores;
    if all_scores && service.info().task != Task::SequenceClassification {
        return Err(Error::InvalidInput(
            "`all_scores` is for classifiers; this model answers embeddings".into(),
        )
        .into());
    }
    let (texts, single) = request.into_texts(&state.settings.limits)?;
    let timeout = timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(service.options().request_timeout);
    let mut predictions = service.predict_within(texts, timeout).await?;
    if !all_scores {
        predictions = predictions.into_iter().map(Prediction::top_only).collect();
    }
    let body = if single {
        let prediction = predictions
            .pop()
            .ok_or_else(|| Error::Inference("the model returned no prediction".into()))?;
        serde_json::to_vec(&prediction)
    } else {
        serde_json::to_vec(&json!({ "results": predictions }))
    }
    .map_err(|e| Error::Inference(format!("encoding the reply: {e}")))?;
    Ok(state.answer(body, "application/json"))
}

async fn rerank(state: Arc<State>, timeout_ms: Option<u64>, body: Bytes) -> Response {
    match answer_rerank(&state, timeout_ms, &body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

/// `POST /rerank {"query", "texts", "raw_scores"?, "return_text"?}` →
/// `[{"index", "score"}, ..]`, most relevant first: text-embeddings-inference's route.
async fn answer_rerank(
    state: &State,
    timeout_ms: Option<u64>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let service = state.service.get().ok_or(Error::NotReady)?;
    let request: RerankRequest = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    if service.info().task != Task::Rerank {
        return Err(Error::InvalidInput(format!(
            "this model answers {}, not rerank: POST /predict",
            service.info().task
        ))
        .into());
    }
    request.check(&state.settings.limits)?;
    let timeout = timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(service.options().request_timeout);
    let relevance = service
        .rerank_within(request.query.clone(), request.texts.clone(), timeout)
        .await?;
    let body = serde_json::to_vec(&request.rank(relevance)?)
        .map_err(|e| Error::Inference(format!("encoding the reply: {e}")))?;
    Ok(state.answer(body, "application/json"))
}

impl State {
    /// A `200` of `body`, with its content type and the model's name and version.
    pub(super) fn answer(&self, body: Vec<u8>, content_type: &'static str) -> Response {
        let mut response = Response::new(body.into());
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(MODEL_HEADER, self.name_header.clone());
        headers.insert(VERSION_HEADER, self.version_header.clone());
        response
    }
}

fn model_info(state: &State) -> Response {
    let Some(service) = state.service.get() else {
        return ApiError::from(Error::NotReady).into_response();
    };
    let options = service.options();
    json_response(
        StatusCode::OK,
        &json!({
            "name": state.settings.name,
            "version": state.settings.version,
            "model": service.info(),
            "serving": {
                "max_batch_size": options.max_batch_size,
                "max_batch_wait_ms": options.max_batch_wait.as_millis() as u64,
                "max_batch_tokens": options.max_batch_tokens,
                "queue_capacity": options.queue_capacity,
                "request_timeout_ms": options.request_timeout.as_millis() as u64,
                "max_texts_per_request": state.settings.limits.max_texts,
                "max_input_chars": state.settings.limits.max_input_chars,
            },
        }),
    )
}

pub(super) fn json_response(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = Response::new(value.to_string().into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_options_win_over_the_manifest_which_wins_over_defaults() {
        let mut manifest = Manifest::default();
        manifest.serving.max_batch_size = Some(8);
        manifest.serving.max_batch_wait_ms = Some(9);
        let mut config = PredictServerConfig::new("/models/minilm");
        let options = config.service_options(&manifest);
        assert_eq!(options.max_batch_size, 8);
        assert_eq!(options.max_batch_wait, Duration::from_millis(9));

        config.max_batch_size = Some(64);
        let options = config.service_options(&manifest);
        assert_eq!(options.max_batch_size, 64);

        let options = config.service_options(&Manifest::default());
        assert_eq!(
            options.max_batch_wait,
            ServiceOptions::default().max_batch_wait
        );
        assert_eq!(config.name(), "minilm");
    }
}
