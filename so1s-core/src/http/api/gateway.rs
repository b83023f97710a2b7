//! The gateway: a predict request forwarded to the model's live version (while a split is set,
//! to one of its versions by weight, the same one for the same `x-so1s-session`), streamed both ways,
//! with bounds on how long the upstream may take. A request to a model scaled to zero is held
//! while it wakes, then forwarded. `/inference/{name}/predict` goes to the
//! predict server's `/predict`, `/inference/{name}/rerank` to its `/rerank`; the Open Inference Protocol's `/v2/models/{name}/...` to the
//! same path there.

use super::upload::idle_body;
use super::{guard, model_name, version_id, with_platform, ApiLimits};
use crate::auth::Tokens;
use crate::http::ApiError;
use crate::metrics::GatewayMetrics;
use crate::model::{ModelName, VersionId};
use crate::platform::Platform;
use crate::predict::oip;
use crate::rollout::traffic::SESSION_HEADER;
use crate::rollout::{AnswerTimeout, InFlight, Pick, Routes, Unavailable};
use crate::store::ByteStream;
use crate::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

/// Headers copied from a predict server's reply to the client.
const FORWARDED_HEADERS: [&str; 4] = [
    "content-type",
    "so1s-model",
    "so1s-model-version",
    oip::HEADER_LENGTH,
];
/// Headers copied from the client's request to the predict server.
const REQUEST_HEADERS: [&str; 3] = ["content-type", "content-length", oip::HEADER_LENGTH];

/// What the gateway asks of a model's predict server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// `POST` with the client's body, or `GET` without one.
    pub post: bool,
    /// The path on the predict server.
    pub path: String,
    /// The version the client named: the request goes only to it.
    pub version: Option<VersionId>,
}

impl Forward {
    /// `POST /predict`.
    pub fn predict() -> Self {
        Self::post("/predict")
    }

    /// `POST /rerank`.
    pub fn rerank() -> Self {
        Self::post("/rerank")
    }

    fn post(path: &str) -> Self {
        Self {
            post: true,
            path: path.into(),
            version: None,
        }
    }

    /// An Open Inference Protocol model route: `/v2/models/{name}[/versions/{version}]`
    /// then `tail` (empty: metadata; `ready`; `infer`, the one `POST`). `None` for any other
    /// tail.
    pub fn v2(name: &ModelName, version: Option<VersionId>, tail: &str) -> Option<Self> {
        let post = match tail {
            "" | "ready" => false,
            "infer" => true,
            _ => return None,
        };
        let mut path = format!("/v2/models/{name}");
        if let Some(version) = version {
            path.push_str(&format!("/versions/{version}"));
        }
        if !tail.is_empty() {
            path.push('/');
            path.push_str(tail);
        }
        Some(Self {
            post,
            path,
            version,
        })
    }
}

/// How long the gateway waits for a predict server, and when it gives up on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayTimeouts {
    /// To connect.
    pub connect: Duration,
    /// For the whole answer: a few seconds above the model's recent p99, at most a ceiling;
    /// past it the client gets `504`. A client's `so1s-timeout-ms` takes its place (at most
    /// the ceiling).
    pub answer: AnswerTimeout,
    /// Timeouts or server errors in a row after which an instance is condemned: its
    /// supervision starts it again, and requests wait for it meanwhile.
    pub max_failures: u32,
}

impl Default for GatewayTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            answer: AnswerTimeout::default(),
            max_failures: 3,
        }
    }
}

/// The gateway's routes, open or (with `inference_auth`) for any token: `POST
/// /inference/{name}/predict` and `POST /inference/predict` (and `.../rerank` beside each),
/// then the Open Inference
/// Protocol's (`/v2...`). Fails only if the HTTP client cannot be made.
pub fn routes(
    platform: &Arc<Platform>,
    tokens: &Arc<Tokens>,
    inference_auth: bool,
    limits: ApiLimits,
) -> Result<BoxedFilter<(Response,)>> {
    let gateway = Gateway {
        platform: platform.clone(),
        client: client(limits.gateway)?,
        timeouts: limits.gateway,
    };
    let gateway = warp::any().map(move || gateway.clone());
    let inference_guard = guard::inference(tokens.clone(), inference_auth);
    let with = with_platform(platform);
    let body = idle_body(limits.body_idle_timeout);
    // `/inference/{name}/{route}` and, for the default model, `/inference/{route}`: `predict`
    // and (for cross-encoders) `rerank`.
    let route = || {
        warp::path::param::<String>().and_then(|route: String| async move {
            match route.as_str() {
                "predict" => Ok(Forward::predict()),
                "rerank" => Ok(Forward::rerank()),
                _ => Err(warp::reject::not_found()),
            }
        })
    };
    let predict_named = warp::path("inference")
        .and(model_name())
        .and(route())
        .and(warp::path::end())
        .and(warp::post())
        .map(|name, forward| (Some(name), forward));
    let predict_default = warp::path("inference")
        .and(route())
        .and(warp::path::end())
        .and(warp::post())
        .map(|forward| (None, forward));
    let predict = predict_named
        .or(predict_default)
        .unify()
        .untuple_one()
        .and(inference_guard.clone())
        .and(gateway.clone())
        .and(warp::header::headers_cloned())
        .and(body.clone())
        .then(proxy);
    // The Open Inference Protocol: the gateway answers for itself at /v2 and its health, and
    // forwards a model's routes to its live version (only to the version named, if one is).
    let v2_server = warp::path!("v2")
        .and(warp::get())
        .map(|| warp::reply::json(&oip::server_metadata("so1s")).into_response());
    let v2_live = warp::path!("v2" / "health" / "live")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"live": true})).into_response());
    let v2_ready = warp::path!("v2" / "health" / "ready")
        .and(warp::get())
        .and(with)
        .map(
            |platform: Arc<Platform>| match platform.routes().default_model() {
                Some(_) => warp::reply::json(&json!({"ready": true})).into_response(),
                None => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_live",
                    "no model is live yet",
                )
                .into_response(),
            },
        );
    let v2_version = warp::path("versions")
        .and(version_id())
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    let v2_model = warp::path("v2")
        .and(warp::path("models"))
        .and(model_name())
        .and(v2_version)
        .and(warp::path::tail())
        .and(warp::method())
        .and_then(
            |name: ModelName, version, tail: warp::path::Tail, method| async move {
                let forward = Forward::v2(&name, version, tail.as_str())
                    .ok_or_else(warp::reject::not_found)?;
                if forward.post != (method == warp::http::Method::POST) {
                    return Err(warp::reject::custom(ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        "this route does not take that method",
                    )));
                }
                Ok((Some(name), forward))
            },
        )
        .untuple_one()
        .and(inference_guard)
        .and(gateway)
        .and(warp::header::headers_cloned())
        .and(body)
        .then(proxy);
    // Boxed: warp's nested filter types grow with every `or`, and the compiler's time with
    // them.
    let v2 = v2_server
        .or(v2_live)
        .unify()
        .or(v2_ready)
        .unify()
        .or(v2_model)
        .unify()
        .boxed();
    Ok(predict.or(v2).unify().boxed())
}

/// The gateway's HTTP client. Answer timeouts are set per request.
pub fn client(timeouts: GatewayTimeouts) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .connect_timeout(timeouts.connect)
        .build()
        .map_err(|e| Error::Io {
            context: "creating the gateway's HTTP client".into(),
            source: std::io::Error::other(e),
        })
}

/// Forwards a request to the live version of `name` (default: the default model).
///
/// A request to a model scaled to zero is held while it wakes; one to an instance being
/// started again is held until it serves (or another version of the split can take it). A
/// connection refused or reset before any byte of the answer is tried once more, on the
/// instance that serves then. The answer may take the model's answer timeout, or what is
/// left of the client's `so1s-timeout-ms` (at most the ceiling). Timeouts of the model's own
/// and server errors count against the instance: after [`GatewayTimeouts::max_failures`]
/// in a row its supervision looks at it, and starts it again if it does not answer.
pub async fn proxy(
    name: Option<ModelName>,
    forward: Forward,
    gateway: Gateway,
    headers: HeaderMap,
    body: ByteStream,
) -> Response {
    let Gateway {
        platform,
        client,
        timeouts,
    } = gateway;
    let routes = platform.routes();
    let metrics = platform.gateway_metrics();
    let Some(name) = name.or_else(|| routes.default_model()) else {
        return not_live("no model is deployed yet: upload one to /v1/models/{name}/versions");
    };
    // The client's own deadline, if it gave one, bounds the hold and the answer together.
    let client_deadline = client_timeout(&headers).map(|t| Instant::now() + t);
    let hold_until = Instant::now() + platform.hold_timeout();
    let hold_deadline = client_deadline.map_or(hold_until, |deadline| deadline.min(hold_until));
    let body = match forward.post {
        true => match collect(body).await {
            Ok(body) => Some(body),
            Err(e) => return e.into_response(),
        },
        false => None,
    };
    let session = headers.get(SESSION_HEADER).map(|value| value.as_bytes());
    let pick = match (forward.version, session) {
        (Some(version), _) => Pick::Version(version),
        (None, Some(key)) => Pick::Session(key),
        (None, None) => Pick::Any,
    };
    let mut retried = false;
    // Each turn acquires an upstream (waking or waiting as needed) and sends to it; a turn
    // ends in an answer, or a retry (once), or a wake (a model can be parked again after).
    for _ in 0..8 {
        let in_flight = match routes.acquire(&name, pick) {
            Ok(in_flight) => in_flight,
            Err(Unavailable::Parked) => {
                // Scaled to zero: held until the model is awake, then forwarded.
                if let Err(e) = platform.wake_for_request(&name).await {
                    return not_awake(&name, &e);
                }
                continue;
            }
            Err(Unavailable::NotReady) => {
                match platform.hold_until_ready(&name, pick, hold_deadline).await {
                    Ok(in_flight) => in_flight,
                    Err(Error::NotReady) => continue,
                    Err(e) => return not_ready(&name, &e),
                }
            }
            Err(Unavailable::NotRouted | Unavailable::NotServing) => {
                return unrouted(&platform, &name, forward.version);
            }
        };
        // The client's deadline (what is left of it, at most the ceiling), else the model's.
        let timeout = match client_deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(timeouts.answer.ceiling)
                .max(Duration::from_millis(1)),
            None => in_flight.answer_timeout(timeouts.answer),
        };
        let sent = std::time::Instant::now();
        let deadline_ms = client_deadline.map(|_| timeout.as_millis());
        let upstream = match send(
            &client,
            &in_flight,
            &forward,
            &headers,
            &body,
            timeout,
            deadline_ms,
        )
        .await
        {
            Ok(upstream) => upstream,
            Err(e) if e.is_timeout() => {
                GatewayMetrics::count(&metrics.timeouts, name.as_str());
                // A deadline the client chose says nothing of the instance.
                if client_deadline.is_none() {
                    failed(metrics, &name, &in_flight, timeouts.max_failures);
                }
                return timed_out(&name, timeout);
            }
            Err(e) if !retried => {
                // Refused or reset before any byte of the answer: its instance is likely
                // gone. Once its supervision has seen that (or soon), tried again.
                tracing::debug!(model = %name, error = %e, "retrying a request");
                GatewayMetrics::count(&metrics.retries, name.as_str());
                retried = true;
                settle(routes, in_flight).await;
                continue;
            }
            Err(e) => return upstream_error(&name, &e),
        };
        match upstream.status().is_server_error() {
            true => failed(metrics, &name, &in_flight, timeouts.max_failures),
            false => in_flight.answered(sent.elapsed()),
        }
        return relay(upstream, in_flight);
    }
    not_ready(
        &name,
        &Error::Busy(format!(
            "{name} kept changing state while the request waited"
        )),
    )
}

/// A timeout or server error of `in_flight`'s upstream, counted if it condemns it.
fn failed(metrics: &GatewayMetrics, name: &ModelName, in_flight: &InFlight, limit: u32) {
    if in_flight.upstream().failed(limit) {
        tracing::warn!(model = %name, version = %in_flight.upstream().version, "condemned: timeouts or server errors in a row");
        GatewayMetrics::count(&metrics.condemned, name.as_str());
    }
}

/// What the gateway's routes share: the platform, the HTTP client, the timeouts.
#[derive(Clone)]
pub struct Gateway {
    platform: Arc<Platform>,
    client: reqwest::Client,
    timeouts: GatewayTimeouts,
}

/// The header in which a client gives its own deadline, in milliseconds (as to a predict
/// server).
pub const TIMEOUT_HEADER: &str = "so1s-timeout-ms";

/// The largest request body the gateway forwards (it keeps it, to send it again after a
/// refused connection); the predict server's own limit is lower by default.
pub const MAX_FORWARDED_BODY: usize = 64 << 20;

fn client_timeout(headers: &HeaderMap) -> Option<Duration> {
    let ms: u64 = headers
        .get(TIMEOUT_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms.max(1)))
}

/// The request body, whole, up to [`MAX_FORWARDED_BODY`].
async fn collect(mut body: ByteStream) -> std::result::Result<Bytes, ApiError> {
    let mut whole = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(format!("the request body could not be read: {e}"))
        })?;
        if whole.len() + chunk.len() > MAX_FORWARDED_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {MAX_FORWARDED_BODY} bytes"),
            ));
        }
        whole.extend_from_slice(&chunk);
    }
    Ok(whole.freeze())
}

/// Sends the request to the upstream; with `deadline_ms` (the client gave a deadline), the
/// predict server is told what is left of it, to drop work it cannot finish in time.
async fn send(
    client: &reqwest::Client,
    in_flight: &InFlight,
    forward: &Forward,
    headers: &HeaderMap,
    body: &Option<Bytes>,
    timeout: Duration,
    deadline_ms: Option<u128>,
) -> reqwest::Result<reqwest::Response> {
    let url = format!("{}{}", in_flight.upstream().url, forward.path);
    let mut request = match body {
        Some(body) => client.post(url).body(body.clone()),
        None => client.get(url),
    };
    for name in REQUEST_HEADERS {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    if let Some(ms) = deadline_ms {
        request = request.header(TIMEOUT_HEADER, ms.to_string());
    }
    request.timeout(timeout).send().await
}

/// After a refused or reset connection: waits (at most half a second) until the upstream's
/// supervision has seen its instance go, so the next try waits for the restart instead of
/// reaching the dead address again.
async fn settle(routes: &Routes, in_flight: InFlight) {
    let mut changes = routes.changes();
    let upstream = in_flight.upstream();
    if !upstream.is_ready() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while upstream.is_ready() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
}

/// Relays the predict server's answer; the in-flight guard lives until its last byte.
fn relay(upstream: reqwest::Response, in_flight: InFlight) -> Response {
    let status = upstream.status();
    let mut forwarded = HeaderMap::new();
    for header in FORWARDED_HEADERS {
        if let Some(value) = upstream.headers().get(header) {
            forwarded.insert(header, value.clone());
        }
    }
    // Relay the body through a channel so the reply stream is Sync, as warp wants.
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, reqwest::Error>>(8);
    tokio::spawn(async move {
        let _in_flight = in_flight;
        let mut stream = upstream.bytes_stream();
        while let Some(chunk) = stream.next().await {
            if sender.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut response = warp::reply::stream(stream).into_response();
    *response.status_mut() =
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    response.headers_mut().extend(forwarded);
    response
}

/// No upstream for the request: the model is unknown, the version named does not serve, or
/// nothing is live.
fn unrouted(platform: &Platform, name: &ModelName, version: Option<VersionId>) -> Response {
    if platform.registry().versions(name).is_err() {
        return ApiError::from(Error::NotFound(format!("unknown model {name}"))).into_response();
    }
    match (version, platform.routes().split(name)) {
        (Some(version), Some(split)) => {
            let serving: Vec<String> = split.versions().map(|v| v.to_string()).collect();
            let verb = if serving.len() == 1 { "is" } else { "are" };
            ApiError::from(Error::NotFound(format!(
                "model {name} version {version} is not serving: {} {verb}",
                serving.join(" and ")
            )))
            .into_response()
        }
        _ => not_live(&format!("model {name} has no live version")),
    }
}

fn timed_out(name: &ModelName, timeout: Duration) -> Response {
    ApiError::from(Error::Timeout(format!(
        "the predict server of {name} did not answer within {} ms",
        timeout.as_millis()
    )))
    .into_response()
}

fn upstream_error(name: &ModelName, error: &reqwest::Error) -> Response {
    ApiError::from(Error::Backend(format!(
        "the predict server of {name} did not answer: {error}"
    )))
    .into_response()
}

/// A request to an instance being started again that could not be held until it served:
/// `503` with `Retry-After`.
fn not_ready(name: &ModelName, error: &Error) -> Response {
    let message = format!(
        "model {name} is being started again and not ready: {}",
        error.chain()
    );
    retry_later(
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "restarting", message).into_response(),
        1,
    )
}

fn retry_later(mut response: Response, seconds: u32) -> Response {
    response.headers_mut().insert(
        warp::http::header::RETRY_AFTER,
        warp::http::HeaderValue::from(seconds),
    );
    response
}

/// A request to a model scaled to zero that could not be held until it woke: `503` with
/// `Retry-After` (soon when only the hold was full or too long, later when the wake failed).
fn not_awake(name: &ModelName, error: &Error) -> Response {
    let (error_type, retry_after) = match error {
        Error::Busy(_) => ("waking", 1),
        Error::Timeout(_) => ("waking", 5),
        _ => ("wake_failed", 30),
    };
    let message = format!(
        "model {name} is scaled to zero and not awake: {}",
        crate::redact::host_paths(&error.chain())
    );
    retry_later(
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error_type, message).into_response(),
        retry_after,
    )
}

fn not_live(message: &str) -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_live", message).into_response()
}
