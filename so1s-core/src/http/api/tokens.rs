//! The api tokens (admin) and the caller's own (`whoami`).

use super::{guard, reply, MAX_JSON_BODY};
use crate::auth::{Identity, Role, Tokens};
use crate::http::error::{body_limited, json_error};
use crate::http::ApiError;
use crate::resources::{CreatedToken, TokenList};
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

/// What `POST /v1/tokens` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
}

/// `GET`, `POST /v1/tokens` and `DELETE /v1/tokens/{name}` (admin), then `GET /v1/whoami`
/// (viewer).
pub fn routes(tokens: &Arc<Tokens>) -> BoxedFilter<(Response,)> {
    let whoami = warp::path!("v1" / "whoami")
        .and(warp::get())
        .and(guard::identity(tokens.clone(), Role::Viewer))
        .map(|who: Identity| warp::reply::json(&who).into_response());
    token_routes(tokens.clone(), guard::require(tokens.clone(), Role::Admin))
        .or(whoami)
        .unify()
        .boxed()
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
                Err(e) => return json_error(&e).into_response(),
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
