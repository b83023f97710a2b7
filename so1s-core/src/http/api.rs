//! The api server: management API and the inference gateway.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/models/{name}/versions` | upload an archive (raw body, or multipart field `model`) → 202 |
//! | `GET /v1/models` | models with their live version |
//! | `GET /v1/models/{name}` | one model and all its versions |
//! | `GET /v1/models/{name}/versions/{version}` | one version: state, sha256, error, timestamps |
//! | `GET /v1/models/{name}/versions/{version}/events` | build and rollout progress (server-sent events) |
//! | `POST /v1/models/{name}/rollback` | back to the previous good version |
//! | `DELETE /v1/models/{name}/versions/{version}` | delete a version that is not serving |
//! | `POST /inference/{name}/predict` | the model's live version (gateway) |
//! | `POST /inference/predict` | the default model (the seed's path) |
//! | `GET /healthz` | alive |

use super::error::{recover, ApiError};
use crate::model::{ModelName, VersionId};
use crate::platform::Platform;
use crate::registry::{VersionRecord, VersionState};
use crate::store::ByteStream;
use crate::{Error, Result};
use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

/// Headers copied from a predict server's reply to the client.
const FORWARDED_HEADERS: [&str; 3] = ["content-type", "so1s-model", "so1s-model-version"];

/// Serves the api and gateway on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    platform: Arc<Platform>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| Error::Io {
            context: "creating the gateway's HTTP client".into(),
            source: std::io::Error::other(e),
        })?;
    warp::serve(routes(platform, client))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
    Ok(())
}

fn routes(
    platform: Arc<Platform>,
    client: reqwest::Client,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let with = {
        let platform = platform.clone();
        warp::any().map(move || platform.clone())
    };
    let model_name = warp::path::param::<String>().and_then(|name: String| async move {
        ModelName::parse(&name).map_err(|e| warp::reject::custom(ApiError::from(e)))
    });
    let version_id = warp::path::param::<String>().and_then(|v: String| async move {
        VersionId::parse(&v).map_err(|e| warp::reject::custom(ApiError::from(e)))
    });

    // /v1/models/{name} and /v1/models/{name}/versions/{version}, extended per route.
    let model_path = warp::path("v1").and(warp::path("models")).and(model_name);
    let version_path = model_path.and(warp::path("versions")).and(version_id);

    let upload = model_path
        .and(warp::path("versions"))
        .and(warp::path::end())
        .and(warp::post())
        .and(with.clone())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::body::stream())
        .then(upload);
    let list = warp::path!("v1" / "models")
        .and(warp::get())
        .and(with.clone())
        .map(|platform: Arc<Platform>| list_models(&platform));
    let model = model_path
        .and(warp::path::end())
        .and(warp::get())
        .and(with.clone())
        .map(|name: ModelName, platform: Arc<Platform>| reply(model_json(&platform, &name)));
    let version = version_path
        .and(warp::path::end())
        .and(warp::get())
        .and(with.clone())
        .map(
            |name: ModelName, version: VersionId, platform: Arc<Platform>| {
                reply(
                    platform
                        .registry()
                        .version(&name, version)
                        .map(|r| record_json(&r)),
                )
            },
        );
    let events = version_path
        .and(warp::path("events"))
        .and(warp::path::end())
        .and(warp::get())
        .and(with.clone())
        .map(events);
    let rollback = model_path
        .and(warp::path("rollback"))
        .and(warp::path::end())
        .and(warp::post())
        .and(with.clone())
        .then(|name: ModelName, platform: Arc<Platform>| async move {
            reply(platform.rollback(&name).await.map(|r| record_json(&r)))
        });
    let delete = version_path
        .and(warp::path::end())
        .and(warp::delete())
        .and(with.clone())
        .then(
            |name: ModelName, version: VersionId, platform: Arc<Platform>| async move {
                match platform.delete(&name, version).await {
                    Ok(()) => StatusCode::NO_CONTENT.into_response(),
                    Err(e) => ApiError::from(e).into_response(),
                }
            },
        );
    let client = warp::any().map(move || client.clone());
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
        .and(with)
        .and(client)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(proxy);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "alive"})).into_response());

    upload
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
        .or(delete)
        .unify()
        .or(gateway)
        .unify()
        .or(healthz)
        .unify()
        .recover(recover)
        .unify()
        .with(warp::log("so1s::api"))
}

fn reply(result: Result<serde_json::Value>) -> Response {
    match result {
        Ok(value) => warp::reply::json(&value).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn state_name(state: VersionState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn record_json(record: &VersionRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    let base = format!(
        "/v1/models/{}/versions/{}",
        record.stored.model, record.stored.version
    );
    value["links"] = json!({ "self": base, "events": format!("{base}/events") });
    value
}

/// The live version among a model's versions (read once, not looked up again).
fn live_version(versions: &[VersionRecord]) -> Option<String> {
    versions
        .iter()
        .find(|r| r.state == VersionState::Live)
        .map(|r| r.stored.version.to_string())
}

fn model_json(platform: &Platform, name: &ModelName) -> Result<serde_json::Value> {
    let versions = platform.registry().versions(name)?;
    Ok(json!({
        "name": name,
        "live_version": live_version(&versions),
        "default": platform.routes().default_model().as_ref() == Some(name),
        "predict": format!("/inference/{name}/predict"),
        "versions": versions.iter().map(record_json).collect::<Vec<_>>(),
    }))
}

fn list_models(platform: &Platform) -> Response {
    let models: Vec<_> = platform
        .registry()
        .models()
        .into_iter()
        .map(|name| {
            let versions = platform.registry().versions(&name).unwrap_or_default();
            json!({
                "name": name,
                "live_version": live_version(&versions),
                "versions": versions.len(),
                "latest": versions.last().map(|r| json!({
                    "version": r.stored.version,
                    "state": state_name(r.state),
                })),
            })
        })
        .collect();
    warp::reply::json(&json!({ "models": models })).into_response()
}

/// The upload: multipart field `model`, or the raw body.
async fn upload(
    name: ModelName,
    platform: Arc<Platform>,
    content_type: Option<String>,
    body: impl Stream<Item = Result<impl Buf + Send + 'static, warp::Error>> + Send + 'static,
) -> Response {
    let bytes: ByteStream = Box::pin(
        body.map_ok(|mut buf| buf.copy_to_bytes(buf.remaining()))
            .map_err(std::io::Error::other),
    );
    let bytes = match content_type.as_deref().and_then(multipart_boundary) {
        Some(boundary) => match multipart_field(bytes, boundary, "model").await {
            Ok(field) => field,
            Err(e) => return ApiError::from(e).into_response(),
        },
        None => bytes,
    };
    match platform.upload(&name, bytes).await {
        Ok(record) => {
            let body = record_json(&record);
            let location = body["links"]["self"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut response = warp::reply::json(&body).into_response();
            *response.status_mut() = StatusCode::ACCEPTED;
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn multipart_boundary(content_type: &str) -> Option<String> {
    let mime = content_type.split(';').next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    content_type.split(';').skip(1).find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        key.eq_ignore_ascii_case("boundary")
            .then(|| value.trim_matches('"').to_owned())
    })
}

/// Streams the multipart field `field` out of the body.
async fn multipart_field(body: ByteStream, boundary: String, field: &str) -> Result<ByteStream> {
    let mut multipart = multer::Multipart::new(body, boundary);
    while let Some(part) = multipart
        .next_field()
        .await
        .map_err(|e| Error::Upload(format!("reading the multipart body: {e}")))?
    {
        if part.name() == Some(field) {
            // The rest of the body is consumed as this field streams.
            let stream =
                futures::stream::unfold((part, multipart), |(mut part, multipart)| async move {
                    match part.chunk().await {
                        Ok(Some(chunk)) => Some((Ok(chunk), (part, multipart))),
                        Ok(None) => None,
                        Err(e) => Some((Err(std::io::Error::other(e)), (part, multipart))),
                    }
                });
            return Ok(Box::pin(stream));
        }
    }
    Err(Error::Upload(format!(
        "the multipart body has no field named `{field}`"
    )))
}

/// Server-sent events of one version: its history, then what follows until it settles.
fn events(name: ModelName, version: VersionId, platform: Arc<Platform>) -> Response {
    let registry = platform.registry().clone();
    if let Err(e) = registry.version(&name, version) {
        return ApiError::from(e).into_response();
    }
    let (history, live) = registry.subscribe(&name, version);
    let settled_now = registry
        .version(&name, version)
        .map(|r| r.state.ends_pipeline())
        .unwrap_or(true);
    let history = futures::stream::iter(history);
    // A state change arrives as an event carrying that state: the stream ends with the one
    // that settles the version.
    let live = futures::stream::unfold((live, settled_now), |(mut live, done)| async move {
        if done {
            return None;
        }
        loop {
            match live.recv().await {
                Ok(event) => {
                    let done = event.state.is_some_and(|state| state.ends_pipeline());
                    return Some((event, (live, done)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = history.chain(live).map(|event| {
        warp::sse::Event::default()
            .event(match event.kind {
                crate::events::EventKind::Progress => "progress",
                crate::events::EventKind::Log => "log",
                crate::events::EventKind::Error => "error",
            })
            .json_data(&event)
            .map_err(std::io::Error::other)
    });
    warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response()
}

/// The gateway: forwards a predict request to the model's live version, streaming both ways.
async fn proxy(
    name: Option<ModelName>,
    platform: Arc<Platform>,
    client: reqwest::Client,
    headers: HeaderMap,
    body: impl Stream<Item = Result<impl Buf + Send + 'static, warp::Error>> + Send + Sync + 'static,
) -> Response {
    let routes = platform.routes();
    let Some(name) = name.or_else(|| routes.default_model()) else {
        return not_live("no model is deployed yet: upload one to /v1/models/{name}/versions");
    };
    let Some(in_flight) = routes.acquire(&name) else {
        return not_live(&format!("model {name} has no live version"));
    };
    let url = format!("{}/predict", in_flight.upstream().url);
    let body = body.map_ok(|mut buf| buf.copy_to_bytes(buf.remaining()));
    let mut request = client.post(url).body(reqwest::Body::wrap_stream(body));
    for name in ["content-type", "content-length"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    let upstream = match request.send().await {
        Ok(upstream) => upstream,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                format!("the predict server of {name} did not answer: {e}"),
            )
            .into_response()
        }
    };
    let status = upstream.status();
    let mut forwarded = HeaderMap::new();
    for header in FORWARDED_HEADERS {
        if let Some(value) = upstream.headers().get(header) {
            forwarded.insert(header, value.clone());
        }
    }
    // Relay the body through a channel so the reply stream is Sync, as warp wants; the
    // in-flight guard lives until the last byte has gone.
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

fn not_live(message: &str) -> Response {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_live", message).into_response()
}
