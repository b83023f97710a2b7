//! A model's traffic split between its versions.

use super::{guard, model_path, reply, to_the_end, with_platform, MAX_JSON_BODY};
use crate::auth::{Role, Tokens};
use crate::http::error::{body_limited, json_error};
use crate::model::ModelName;
use crate::platform::Platform;
use crate::rollout::Split;
use bytes::Bytes;
use serde_json::json;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

/// `GET /v1/models/{name}/traffic` (viewer) and `PUT /v1/models/{name}/traffic` (deployer).
pub fn routes(platform: &Arc<Platform>, tokens: &Arc<Tokens>) -> BoxedFilter<(Response,)> {
    let with = with_platform(platform);
    let traffic_path = model_path()
        .and(warp::path("traffic"))
        .and(warp::path::end());
    let get_traffic = traffic_path
        .clone()
        .and(warp::get())
        .and(guard::require(tokens.clone(), Role::Viewer))
        .and(with.clone())
        .map(|name: ModelName, platform: Arc<Platform>| {
            reply(platform.traffic(&name).map(traffic_body))
        });
    let put_traffic = traffic_path
        .and(warp::put())
        .and(guard::require(tokens.clone(), Role::Deployer))
        .and(with)
        .and(body_limited(MAX_JSON_BODY))
        .then(
            |name: ModelName, platform: Arc<Platform>, body: Bytes| async move {
                let split: Split = match serde_json::from_slice(&body) {
                    Ok(split) => split,
                    Err(e) => return json_error(&e).into_response(),
                };
                to_the_end("traffic split", async move {
                    platform.set_traffic(&name, &split).await?;
                    platform.traffic(&name).map(traffic_body)
                })
                .await
            },
        );
    get_traffic.or(put_traffic).unify().boxed()
}

/// What `GET /v1/models/{name}/traffic` answers: each live version's weight (`{}` when none
/// is live).
fn traffic_body(split: Option<Split>) -> serde_json::Value {
    split
        .and_then(|split| serde_json::to_value(split).ok())
        .unwrap_or_else(|| json!({}))
}
