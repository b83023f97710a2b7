//! The api server: management API and the inference gateway.
//!
//! | route | role | what |
//! |---|---|---|
//! | `POST /v1/models/{name}/versions` | deployer | upload an archive (raw body, or multipart field `model`) → 202 |
//! | `GET /v1/models` | viewer | models with their live version |
//! | `GET /v1/models/{name}` | viewer | one model, all its versions and its `scale` |
//! | `PATCH /v1/models/{name}` | deployer | its idle policy: `{"idle_after_s": N}` (0: always on) |
//! | `GET /v1/models/{name}/versions/{version}` | viewer | one version: state, sha256, error, timestamps |
//! | `GET /v1/models/{name}/versions/{version}/events` | viewer | build and rollout progress (server-sent events) |
//! | `POST /v1/models/{name}/rollback` | deployer | back to the previous good version |
//! | `POST /v1/models/{name}/versions/{version}/promote` | deployer | roll out a built or retired version |
//! | `GET /v1/models/{name}/traffic` | viewer | each live version's share of requests: `{"v1": 70, "v2": 30}` |
//! | `PUT /v1/models/{name}/traffic` | deployer | split requests between built versions by weight (percent); one version: promote it |
//! | `DELETE /v1/models/{name}/versions/{version}` | deployer | delete a version that is not serving |
//! | `GET /v1/tokens`, `POST /v1/tokens`, `DELETE /v1/tokens/{name}` | admin | list, create, revoke api tokens |
//! | `GET /v1/whoami` | viewer | the caller's token name and role |
//! | `POST /inference/{name}/predict` | open (or any token) | the model's live version (gateway; while split, one by weight, the same for the same `x-so1s-session`; held while a model scaled to zero wakes) |
//! | `POST /inference/predict` | open (or any token) | the default model (the seed's path) |
//! | `GET /v2`, `GET /v2/health/live`, `GET /v2/health/ready` | open | Open Inference Protocol: the gateway's metadata, alive, a model is live |
//! | `/v2/models/{name}[/versions/{version}]`, `.../ready`, `POST .../infer` | open (or any token) | Open Inference Protocol, forwarded to the model's live version (the one named must be it) |
//! | `GET /healthz` | open | alive |
//! | `GET /metrics` | open | Prometheus text: wakes, wake durations, scale-downs, running models |
//! | `GET /`, `GET /ui/...` | open (the page signs in with a token) | the dashboard (`ApiConfig::dashboard`) |
//!
//! Every `/v1` route wants `Authorization: Bearer <token>`: `401` without one or with an
//! unknown or revoked one, `403` when its role is too small, checked before a body is read.

pub mod dashboard;
mod events;
mod gateway;
mod guard;
mod models;
mod tokens;
mod traffic;
mod upload;

pub use events::Subscribers;
pub use gateway::{Forward, GatewayTimeouts};
pub use upload::MultipartLimits;

use super::error::{recover, ApiError};
use super::serve::{serve, ConnectionLimits};
use crate::auth::Tokens;
use crate::model::{ModelName, VersionId};
use crate::platform::Platform;
use crate::Result;
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// Bounds of the api server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Request heads: time to arrive and size.
    pub connection: ConnectionLimits,
    /// Multipart uploads before the archive part.
    pub multipart: MultipartLimits,
    /// Longest gap in a request body (uploads, predict bodies) before it is dropped.
    pub body_idle_timeout: Duration,
    /// The gateway's waits for predict servers.
    pub gateway: GatewayTimeouts,
    /// Event streams open at once per version.
    pub max_event_subscribers: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            connection: ConnectionLimits::default(),
            multipart: MultipartLimits::default(),
            body_idle_timeout: Duration::from_secs(30),
            gateway: GatewayTimeouts::default(),
            max_event_subscribers: 16,
        }
    }
}

/// Who may call the api server, and its bounds.
pub struct ApiConfig {
    /// The accepted tokens.
    pub tokens: Arc<Tokens>,
    /// Whether `/inference/...` needs a token too (any role).
    pub inference_auth: bool,
    /// The bounds.
    pub limits: ApiLimits,
    /// Whether `/` serves the dashboard.
    pub dashboard: bool,
}

/// Largest JSON body of a management call (`POST /v1/tokens`).
const MAX_JSON_BODY: usize = 64 << 10;

/// Serves the api and gateway on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    platform: Arc<Platform>,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let connection = config.limits.connection;
    serve(listener, routes(platform, config)?, connection, shutdown).await;
    Ok(())
}

/// Every route of the api server as one warp filter: what [`run`] serves, for tests
/// (`warp::test`) and for embedding in another server. The bounds on request heads
/// ([`ApiLimits::connection`]) belong to [`run`]'s connection loop, not to the filter; the
/// others (body idle timeout, multipart, gateway, event subscribers) are in it. Fails only if
/// the gateway's HTTP client cannot be made.
///
/// Each resource's routes come boxed from its module; the order here is the order warp tries
/// them in.
pub fn routes(
    platform: Arc<Platform>,
    config: ApiConfig,
) -> Result<impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone> {
    let (limits, tokens) = (config.limits, config.tokens);
    let gateway = gateway::routes(&platform, &tokens, config.inference_auth, limits)?;
    // The management routes as one boxed filter: the whole chain in one type is past the
    // compiler's recursion limit in the crates that name it.
    let management = upload::routes(&platform, &tokens, limits)
        .or(models::routes(&platform, &tokens))
        .unify()
        .or(events::routes(
            &platform,
            &tokens,
            limits.max_event_subscribers,
        ))
        .unify()
        .or(traffic::routes(&platform, &tokens))
        .unify()
        .or(tokens::routes(&tokens))
        .unify()
        .boxed();
    Ok(management
        .or(gateway)
        .unify()
        .or(health_routes())
        .unify()
        .or(metrics_route(&platform))
        .unify()
        .or(dashboard::routes(config.dashboard).boxed())
        .unify()
        .recover(recover)
        .unify()
        .with(warp::log("so1s::api")))
}

/// `GET /healthz`: the api server is alive.
fn health_routes() -> BoxedFilter<(Response,)> {
    warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "alive"})).into_response())
        .boxed()
}

/// `GET /metrics`: the api server's figures (scale to zero), for Prometheus.
fn metrics_route(platform: &Arc<Platform>) -> BoxedFilter<(Response,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_platform(platform))
        .map(|platform: Arc<Platform>| {
            warp::reply::with_header(
                platform.metrics_text(),
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .into_response()
        })
        .boxed()
}

/// The platform, handed to a route's handler.
fn with_platform(
    platform: &Arc<Platform>,
) -> impl Filter<Extract = (Arc<Platform>,), Error = Infallible> + Clone {
    let platform = platform.clone();
    warp::any().map(move || platform.clone())
}

/// A path segment naming a model; an invalid name is refused with why.
fn model_name() -> impl Filter<Extract = (ModelName,), Error = Rejection> + Clone {
    warp::path::param::<String>().and_then(|name: String| async move {
        ModelName::parse(&name).map_err(|e| warp::reject::custom(ApiError::from(e)))
    })
}

/// A path segment naming a version; an invalid one is refused with why.
fn version_id() -> impl Filter<Extract = (VersionId,), Error = Rejection> + Clone {
    warp::path::param::<String>().and_then(|v: String| async move {
        VersionId::parse(&v).map_err(|e| warp::reject::custom(ApiError::from(e)))
    })
}

/// `/v1/models/{name}`, extended per route.
fn model_path() -> impl Filter<Extract = (ModelName,), Error = Rejection> + Clone {
    warp::path("v1").and(warp::path("models")).and(model_name())
}

/// `/v1/models/{name}/versions/{version}`, extended per route.
fn version_path() -> impl Filter<Extract = (ModelName, VersionId), Error = Rejection> + Clone {
    model_path().and(warp::path("versions")).and(version_id())
}

/// A JSON answer: the value, or the error with its status.
fn reply(result: Result<impl serde::Serialize>) -> Response {
    match result {
        Ok(value) => warp::reply::json(&value).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Runs a rollout (rollback, promote, a traffic split) to its end in a task of its own, even
/// if the client goes away, and answers with what it leaves live.
async fn to_the_end<T: serde::Serialize + Send + 'static>(
    what: &str,
    rollout: impl Future<Output = Result<T>> + Send + 'static,
) -> Response {
    match tokio::spawn(rollout).await {
        Ok(result) => reply(result),
        Err(e) => internal(format!("the {what} task failed: {e}")),
    }
}

/// `500` with `message`.
fn internal(message: String) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message).into_response()
}
