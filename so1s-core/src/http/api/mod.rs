//! The api server: management API and the inference gateway.
//!
//! | route | role | what |
//! |---|---|---|
//! | `POST /v1/models/{name}/versions` | deployer | upload an archive (raw body, or multipart field `model`) → 202 |
//! | `GET /v1/models` | viewer | models with their live version |
//! | `GET /v1/models/{name}` | viewer | one model and all its versions |
//! | `GET /v1/models/{name}/versions/{version}` | viewer | one version: state, sha256, error, timestamps |
//! | `GET /v1/models/{name}/versions/{version}/events` | viewer | build and rollout progress (server-sent events) |
//! | `POST /v1/models/{name}/rollback` | deployer | back to the previous good version |
//! | `POST /v1/models/{name}/versions/{version}/promote` | deployer | roll out a built or retired version |
//! | `GET /v1/models/{name}/traffic` | viewer | each live version's share of requests: `{"v1": 70, "v2": 30}` |
//! | `PUT /v1/models/{name}/traffic` | deployer | split requests between built versions by weight (percent); one version: promote it |
//! | `DELETE /v1/models/{name}/versions/{version}` | deployer | delete a version that is not serving |
//! | `GET /v1/tokens`, `POST /v1/tokens`, `DELETE /v1/tokens/{name}` | admin | list, create, revoke api tokens |
//! | `GET /v1/whoami` | viewer | the caller's token name and role |
//! | `POST /inference/{name}/predict` | open (or any token) | the model's live version (gateway; while split, one by weight, the same for the same `x-so1s-session`) |
//! | `POST /inference/predict` | open (or any token) | the default model (the seed's path) |
//! | `GET /v2`, `GET /v2/health/live`, `GET /v2/health/ready` | open | Open Inference Protocol: the gateway's metadata, alive, a model is live |
//! | `/v2/models/{name}[/versions/{version}]`, `.../ready`, `POST .../infer` | open (or any token) | Open Inference Protocol, forwarded to the model's live version (the one named must be it) |
//! | `GET /healthz` | open | alive |
//! | `GET /`, `GET /ui/...` | open (the page signs in with a token) | the dashboard (`ApiConfig::dashboard`) |
//!
//! Every `/v1` route wants `Authorization: Bearer <token>`: `401` without one or with an
//! unknown or revoked one, `403` when its role is too small, checked before a body is read.

pub mod dashboard;
mod events;
mod gateway;
mod guard;
mod upload;

pub use events::Subscribers;
pub use gateway::{Forward, GatewayTimeouts};
pub use upload::MultipartLimits;

use super::error::{body_limited, recover, ApiError};
use super::serve::{serve, ConnectionLimits};
use crate::auth::{Identity, Role, Tokens};
use crate::model::{ModelName, VersionId};
use crate::platform::Platform;
use crate::predict::oip;
use crate::registry::{VersionRecord, VersionState};
use crate::resources::{
    CreatedToken, LatestVersion, ModelList, ModelSummary, ModelView, TokenList, VersionView,
};
use crate::rollout::Split;
use crate::Result;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

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
pub fn routes(
    platform: Arc<Platform>,
    config: ApiConfig,
) -> Result<impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone> {
    let client = gateway::client(config.limits.gateway)?;
    let limits = config.limits;
    let tokens = config.tokens;
    let with = {
        let platform = platform.clone();
        warp::any().map(move || platform.clone())
    };
    let viewer = guard::require(tokens.clone(), Role::Viewer);
    let deployer = guard::require(tokens.clone(), Role::Deployer);
    let admin = guard::require(tokens.clone(), Role::Admin);
    let model_name = warp::path::param::<String>().and_then(|name: String| async move {
        ModelName::parse(&name).map_err(|e| warp::reject::custom(ApiError::from(e)))
    });
    let version_id = warp::path::param::<String>().and_then(|v: String| async move {
        VersionId::parse(&v).map_err(|e| warp::reject::custom(ApiError::from(e)))
    });
    let idle = limits.body_idle_timeout;
    let body = warp::body::stream().map(move |body| upload::idle_limited(body, idle));

    // /v1/models/{name} and /v1/models/{name}/versions/{version}, extended per route.
    let model_path = warp::path("v1").and(warp::path("models")).and(model_name);
    let version_path = model_path.and(warp::path("versions")).and(version_id);

    let upload =
        model_path
            .and(warp::path("versions"))
            .and(warp::path::end())
            .and(warp::post())
            .and(deployer.clone())
            .and(with.clone())
            .and(warp::header::optional::<String>("content-type"))
            .and(body)
            .then(
                move |name: ModelName,
                      platform: Arc<Platform>,
                      content_type: Option<String>,
                      body| async move {
                    let received =
                        upload::archive_bytes(content_type.as_deref(), body, limits.multipart)
                            .await;
                    match received {
                        Ok(bytes) => accepted(platform.upload(&name, bytes).await),
                        Err(e) => ApiError::from(e).into_response(),
                    }
                },
            );
    let list = warp::path!("v1" / "models")
        .and(warp::get())
        .and(viewer.clone())
        .and(with.clone())
        .map(|platform: Arc<Platform>| list_models(&platform));
    let model = model_path
        .and(warp::path::end())
        .and(warp::get())
        .and(viewer.clone())
        .and(with.clone())
        .then(|name: ModelName, platform: Arc<Platform>| async move {
            reply(model_view(&platform, &name).await)
        });
    let version = version_path
        .and(warp::path::end())
        .and(warp::get())
        .and(viewer.clone())
        .and(with.clone())
        .map(
            |name: ModelName, version: VersionId, platform: Arc<Platform>| {
                reply(
                    platform
                        .registry()
                        .version(&name, version)
                        .map(VersionView::new),
                )
            },
        );
    let subscribers = Subscribers::new(limits.max_event_subscribers);
    let events = version_path
        .and(warp::path("events"))
        .and(warp::path::end())
        .and(warp::get())
        .and(viewer.clone())
        .and(with.clone())
        .map(
            move |name: ModelName, version: VersionId, platform: Arc<Platform>| {
                events::stream(name, version, platform, subscribers.clone())
                    .unwrap_or_else(|e| ApiError::from(e).into_response())
            },
        );
    let rollback = model_path
        .and(warp::path("rollback"))
        .and(warp::path::end())
        .and(warp::post())
        .and(deployer.clone())
        .and(with.clone())
        .then(|name: ModelName, platform: Arc<Platform>| {
            to_the_end("rollback", async move {
                platform.rollback(&name).await.map(VersionView::new)
            })
        });
    let promote = version_path
        .and(warp::path("promote"))
        .and(warp::path::end())
        .and(warp::post())
        .and(deployer.clone())
        .and(with.clone())
        .then(
            |name: ModelName, version: VersionId, platform: Arc<Platform>| {
                to_the_end("promote", async move {
                    platform.promote(&name, version).await.map(VersionView::new)
                })
            },
        );
    let traffic_path = model_path.and(warp::path("traffic")).and(warp::path::end());
    let get_traffic = traffic_path
        .and(warp::get())
        .and(viewer.clone())
        .and(with.clone())
        .map(|name: ModelName, platform: Arc<Platform>| {
            reply(platform.traffic(&name).map(traffic_body))
        });
    let put_traffic = traffic_path
        .and(warp::put())
        .and(deployer.clone())
        .and(with.clone())
        .and(body_limited(MAX_JSON_BODY))
        .then(
            |name: ModelName, platform: Arc<Platform>, body: Bytes| async move {
                let split: Split = match serde_json::from_slice(&body) {
                    Ok(split) => split,
                    Err(e) => return super::error::json_error(&e).into_response(),
                };
                to_the_end("traffic split", async move {
                    platform.set_traffic(&name, &split).await?;
                    platform.traffic(&name).map(traffic_body)
                })
                .await
            },
        );
    // Boxed, as the /v2 routes are: each `or` adds to the compiler's work.
    let traffic = get_traffic.or(put_traffic).unify().boxed();
    let delete = version_path
        .and(warp::path::end())
        .and(warp::delete())
        .and(deployer.clone())
        .and(with.clone())
        .then(
            |name: ModelName, version: VersionId, platform: Arc<Platform>| async move {
                match platform.delete(&name, version).await {
                    Ok(()) => StatusCode::NO_CONTENT.into_response(),
                    Err(e) => ApiError::from(e).into_response(),
                }
            },
        );
    let tokens_api = token_routes(tokens.clone(), admin);
    let whoami = warp::path!("v1" / "whoami")
        .and(warp::get())
        .and(guard::identity(tokens.clone(), Role::Viewer))
        .map(|who: Identity| warp::reply::json(&who).into_response());

    let client = warp::any().map(move || client.clone());
    let inference_guard = guard::inference(tokens.clone(), config.inference_auth);
    let predict_named = warp::path("inference")
        .and(model_name)
        .and(warp::path("predict"))
        .and(warp::path::end())
        .and(warp::post())
        .map(Some);
    let predict_default = warp::path!("inference" / "predict")
        .and(warp::post())
        .map(|| None);
    let gateway = predict_named
        .or(predict_default)
        .unify()
        .and(warp::any().map(Forward::predict))
        .and(inference_guard.clone())
        .and(with.clone())
        .and(client.clone())
        .and(warp::header::headers_cloned())
        .and(body)
        .then(gateway::proxy);
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
        .and(with.clone())
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
        .and(version_id)
        .map(Some)
        .or(warp::any().map(|| None))
        .unify();
    let v2_model = warp::path("v2")
        .and(warp::path("models"))
        .and(model_name)
        .and(v2_version)
        .and(warp::path::tail())
        .and(warp::method())
        .and_then(
            |name: ModelName, version, tail: warp::path::Tail, method| async move {
                let forward = gateway::Forward::v2(&name, version, tail.as_str())
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
        .and(with)
        .and(client)
        .and(warp::header::headers_cloned())
        .and(body)
        .then(gateway::proxy);
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
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "alive"})).into_response());
    let dashboard = dashboard::routes(config.dashboard).boxed();

    // The management routes as one boxed filter: the whole chain in one type is past the
    // compiler's recursion limit in the crates that name it.
    let management = upload
        .or(list)
        .unify()
        .or(model)
        .unify()
        .or(version)
        .unify()
        .or(events)
        .unify()
        .or(rollback)
        .unify()
        .or(promote)
        .unify()
        .or(traffic)
        .unify()
        .or(delete)
        .unify()
        .or(tokens_api)
        .unify()
        .or(whoami)
        .unify()
        .boxed();
    Ok(management
        .or(gateway)
        .unify()
        .or(v2)
        .unify()
        .or(healthz)
        .unify()
        .or(dashboard)
        .unify()
        .recover(recover)
        .unify()
        .with(warp::log("so1s::api")))
}

/// What `POST /v1/tokens` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
}

/// `GET`, `POST /v1/tokens` and `DELETE /v1/tokens/{name}` (admin).
fn token_routes(
    tokens: Arc<Tokens>,
    admin: impl Filter<Extract = (), Error = warp::Rejection> + Clone + Send + Sync + 'static,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let with = warp::any().map(move || tokens.clone());
    let list = warp::path!("v1" / "tokens")
        .and(warp::get())
        .and(admin.clone())
        .and(with.clone())
        .map(|tokens: Arc<Tokens>| reply(tokens.list().map(|tokens| TokenList { tokens })));
    let create = warp::path!("v1" / "tokens")
        .and(warp::post())
        .and(admin.clone())
        .and(with.clone())
        .and(body_limited(MAX_JSON_BODY))
        .map(|tokens: Arc<Tokens>, body: Bytes| {
            let request: NewToken = match serde_json::from_slice(&body) {
                Ok(request) => request,
                Err(e) => return super::error::json_error(&e).into_response(),
            };
            match tokens.create(&request.name, request.role) {
                Ok((info, token)) => {
                    let body = CreatedToken {
                        info,
                        token: token.expose().to_owned(),
                    };
                    let mut response = warp::reply::json(&body).into_response();
                    *response.status_mut() = StatusCode::CREATED;
                    response
                }
                Err(e) => ApiError::from(e).into_response(),
            }
        });
    let revoke = warp::path!("v1" / "tokens" / String)
        .and(warp::delete())
        .and(admin)
        .and(with)
        .map(|name: String, tokens: Arc<Tokens>| reply(tokens.revoke(&name)));
    list.or(create).unify().or(revoke).unify()
}

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

/// What `GET /v1/models/{name}/traffic` answers: each live version's weight (`{}` when none
/// is live).
fn traffic_body(split: Option<Split>) -> serde_json::Value {
    split
        .and_then(|split| serde_json::to_value(split).ok())
        .unwrap_or_else(|| json!({}))
}

fn internal(message: String) -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message).into_response()
}

/// `202` with the stored version, its `Location` and links.
fn accepted(result: Result<VersionRecord>) -> Response {
    match result {
        Ok(record) => {
            let view = VersionView::new(record);
            let mut response = warp::reply::json(&view).into_response();
            *response.status_mut() = StatusCode::ACCEPTED;
            if let Ok(location) = HeaderValue::from_str(&view.links.this) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The live version among a model's versions (read once, not looked up again).
fn live_version(versions: &[VersionRecord]) -> Option<VersionId> {
    versions
        .iter()
        .find(|r| r.state == VersionState::Live)
        .map(|r| r.stored.version)
}

async fn model_view(platform: &Platform, name: &ModelName) -> Result<ModelView> {
    let versions = platform.registry().versions(name)?;
    let health = platform.health(name).await;
    Ok(ModelView {
        name: name.clone(),
        live_version: live_version(&versions),
        health,
        default: platform.routes().default_model().as_ref() == Some(name),
        traffic: platform.registry().split(name).filter(Split::is_split),
        predict: format!("/inference/{name}/predict"),
        versions: versions.into_iter().map(VersionView::new).collect(),
    })
}

fn list_models(platform: &Platform) -> Response {
    let models = platform
        .registry()
        .models()
        .into_iter()
        .map(|name| {
            let versions = platform.registry().versions(&name).unwrap_or_default();
            ModelSummary {
                live_version: live_version(&versions),
                versions: versions.len(),
                latest: versions.last().map(|r| LatestVersion {
                    version: r.stored.version,
                    state: r.state,
                }),
                name,
            }
        })
        .collect();
    warp::reply::json(&ModelList { models }).into_response()
}
