//! The predict server's Open Inference Protocol (KServe V2 REST) routes, over the same
//! [`TransformerService`] and batching as `/predict`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v2` | server metadata (`extensions`: `binary_tensor_data`) |
//! | `GET /v2/health/live`, `GET /v2/health/ready` | 200 alive / 200 once the model answers (503 before) |
//! | `GET /v2/models/{name}[/versions/{version}]` | model metadata: the `text` input, the outputs |
//! | `GET /v2/models/{name}[/versions/{version}]/ready` | 200 once the model answers |
//! | `POST /v2/models/{name}[/versions/{version}]/infer` | infer, JSON or binary tensors ([`oip`]) |
//!
//! Errors are `{"error": "..."}` with 400 (a bad request), 404 (another model or version),
//! 503 (loading) and the statuses `/predict` has for overload and timeouts.

use super::TIMEOUT_HEADER;
use super::{json_response as json_reply, State};
use crate::TransformerService;
use bytes::Bytes;
use serde_json::json;
use so1s_core::http::error::{body_limited, ApiError};
use so1s_core::model::Task;
use so1s_core::predict::oip::{self, Infer};
use so1s_core::Error;
use std::sync::Arc;
use std::time::Duration;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

/// The `/v2` routes.
pub(super) fn routes(state: Arc<State>, body_limit: usize) -> BoxedFilter<(Response,)> {
    let with_state = warp::any().map(move || state.clone());
    let server = warp::path!("v2")
        .and(warp::get())
        .map(|| json_reply(StatusCode::OK, &oip::server_metadata("so1s-predict")));
    let live = warp::path!("v2" / "health" / "live")
        .and(warp::get())
        .map(|| json_reply(StatusCode::OK, &json!({"live": true})));
    let ready = warp::path!("v2" / "health" / "ready")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<State>| match state.service.get() {
            Some(_) => json_reply(StatusCode::OK, &json!({"ready": true})),
            None => error_reply(Error::NotReady.into()),
        });
    let model = warp::path!("v2" / "models" / String / ..)
        .and(version())
        .and(with_state);
    let metadata = model.clone().and(warp::path::end()).and(warp::get()).map(
        |name: String, version: Option<String>, state: Arc<State>| match serving(
            &state,
            &name,
            version.as_deref(),
        ) {
            Ok(service) => {
                let info = service.info();
                let dims = info.output_shape.first().copied().unwrap_or(0);
                let settings = &state.settings;
                let metadata =
                    oip::model_metadata(&settings.name, &settings.version, info.task, dims);
                json_reply(StatusCode::OK, &metadata)
            }
            Err(e) => error_reply(e),
        },
    );
    let model_ready = model
        .clone()
        .and(warp::path!("ready"))
        .and(warp::get())
        .map(|name: String, version: Option<String>, state: Arc<State>| {
            match serving(&state, &name, version.as_deref()) {
                Ok(_) => json_reply(StatusCode::OK, &json!({"name": name, "ready": true})),
                Err(e) => error_reply(e),
            }
        });
    let infer = model
        .and(warp::path!("infer"))
        .and(warp::post())
        .and(warp::header::optional::<usize>(oip::HEADER_LENGTH))
        .and(warp::header::optional::<u64>(TIMEOUT_HEADER))
        .and(body_limited(body_limit))
        .then(infer);
    server
        .or(live)
        .unify()
        .or(ready)
        .unify()
        .or(metadata)
        .unify()
        .or(model_ready)
        .unify()
        .or(infer)
        .unify()
        .boxed()
}

/// The metrics label of a `/v2` path: `v2_infer`, `v2_model` (metadata, ready), `v2_health`
/// and `v2` (server metadata); `other` for the rest.
pub(super) fn route_name(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["v2"] => "v2",
        ["v2", "health", "live" | "ready"] => "v2_health",
        ["v2", "models", _, rest @ ..] => {
            let rest = match rest {
                ["versions", _, rest @ ..] => rest,
                rest => rest,
            };
            match rest {
                ["infer"] => "v2_infer",
                [] | ["ready"] => "v2_model",
                _ => "other",
            }
        }
        _ => "other",
    }
}

/// `/versions/{version}` if the path names one.
fn version() -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::path("versions")
        .and(warp::path::param::<String>())
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
}

/// The service, if `name` (and `version`, when given) is what this server serves.
fn serving<'a>(
    state: &'a State,
    name: &str,
    version: Option<&str>,
) -> Result<&'a TransformerService, ApiError> {
    let settings = &state.settings;
    if name != settings.name {
        return Err(Error::NotFound(format!(
            "unknown model `{name}`: this server serves `{}`",
            settings.name
        ))
        .into());
    }
    if let Some(version) = version.filter(|v| *v != settings.version) {
        return Err(Error::NotFound(format!(
            "model `{name}` has no version `{version}` here: this server serves `{}`",
            settings.version
        ))
        .into());
    }
    state.service.get().ok_or_else(|| Error::NotReady.into())
}

async fn infer(
    name: String,
    version: Option<String>,
    state: Arc<State>,
    json_length: Option<usize>,
    timeout_ms: Option<u64>,
    body: Bytes,
) -> Response {
    match answer(
        &state,
        &name,
        version.as_deref(),
        json_length,
        timeout_ms,
        &body,
    )
    .await
    {
        Ok(response) => response,
        Err(e) => error_reply(e),
    }
}

async fn answer(
    state: &State,
    name: &str,
    version: Option<&str>,
    json_length: Option<usize>,
    timeout_ms: Option<u64>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let service = serving(state, name, version)?;
    let mut request = Infer::parse(body, json_length, &state.settings.limits)?;
    let timeout = timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(service.options().request_timeout);
    let texts = std::mem::take(&mut request.texts);
    let predictions = match (request.query.take(), service.info().task) {
        (Some(query), Task::Rerank) => service.rerank_within(query, texts, timeout).await?,
        (None, Task::Rerank) => {
            return Err(Error::InvalidInput(
                "a reranker scores texts against the request's parameter `query`: give one".into(),
            )
            .into())
        }
        (Some(_), task) => {
            return Err(Error::InvalidInput(format!(
                "parameter `query` is a reranker's; this model answers {task}"
            ))
            .into())
        }
        (None, _) => service.predict_within(texts, timeout).await?,
    };
    let tensors = oip::tensors(predictions)?;
    let settings = &state.settings;
    let reply = oip::reply(&settings.name, &settings.version, &request, tensors)?;
    Ok(match reply.json_length {
        Some(length) => {
            let mut response = state.answer(reply.body, "application/octet-stream");
            let headers = response.headers_mut();
            headers.insert(oip::HEADER_LENGTH, HeaderValue::from(length));
            response
        }
        None => state.answer(reply.body, "application/json"),
    })
}

/// An error as the protocol has it: `{"error": "..."}` (so1s's `error_type` beside it), and
/// 400 where so1s says 422 (a request the protocol calls bad).
pub(super) fn error_reply(mut error: ApiError) -> Response {
    if error.status == StatusCode::UNPROCESSABLE_ENTITY {
        error.status = StatusCode::BAD_REQUEST;
    }
    error.into_response()
}
