//! The models and their versions: list, read, set the idle policy, roll back, promote,
//! delete.

use super::{guard, model_path, reply, to_the_end, version_path, with_platform, MAX_JSON_BODY};
use crate::auth::{Role, Tokens};
use crate::http::error::{body_limited, json_error};
use crate::http::ApiError;
use crate::model::{ModelName, VersionId};
use crate::platform::Platform;
use crate::registry::{VersionRecord, VersionState};
use crate::resources::{
    LatestVersion, ModelList, ModelPatch, ModelSummary, ModelView, VersionView,
};
use crate::rollout::Split;
use crate::Result;
use bytes::Bytes;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

/// `GET /v1/models`, `GET /v1/models/{name}`, `GET /v1/models/{name}/versions/{version}`
/// (viewer); `PATCH /v1/models/{name}` (its idle policy), `POST /v1/models/{name}/rollback`,
/// `POST .../versions/{version}/promote` and `DELETE /v1/models/{name}/versions/{version}`
/// (deployer).
pub fn routes(platform: &Arc<Platform>, tokens: &Arc<Tokens>) -> BoxedFilter<(Response,)> {
    let with = with_platform(platform);
    let viewer = guard::require(tokens.clone(), Role::Viewer);
    let deployer = guard::require(tokens.clone(), Role::Deployer);
    let list = warp::path!("v1" / "models")
        .and(warp::get())
        .and(viewer.clone())
        .and(with.clone())
        .map(|platform: Arc<Platform>| list_models(&platform));
    let model = model_path()
        .and(warp::path::end())
        .and(warp::get())
        .and(viewer.clone())
        .and(with.clone())
        .then(|name: ModelName, platform: Arc<Platform>| async move {
            reply(model_view(&platform, &name).await)
        });
    let patch = model_path()
        .and(warp::path::end())
        .and(warp::patch())
        .and(deployer.clone())
        .and(with.clone())
        .and(body_limited(MAX_JSON_BODY))
        .then(
            |name: ModelName, platform: Arc<Platform>, body: Bytes| async move {
                let patch: ModelPatch = match serde_json::from_slice(&body) {
                    Ok(patch) => patch,
                    Err(e) => return json_error(&e).into_response(),
                };
                let result = match patch.idle_after_s {
                    Some(idle_after_s) => platform.set_idle_after(&name, idle_after_s),
                    None => platform
                        .registry()
                        .versions(&name)
                        .map(|_| platform.scale(&name)),
                };
                reply(result)
            },
        );
    let version = version_path()
        .and(warp::path::end())
        .and(warp::get())
        .and(viewer)
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
    let rollback = model_path()
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
    let promote = version_path()
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
    let delete = version_path()
        .and(warp::path::end())
        .and(warp::delete())
        .and(deployer)
        .and(with)
        .then(
            |name: ModelName, version: VersionId, platform: Arc<Platform>| async move {
                match platform.delete(&name, version).await {
                    Ok(()) => StatusCode::NO_CONTENT.into_response(),
                    Err(e) => ApiError::from(e).into_response(),
                }
            },
        );
    list.or(model)
        .unify()
        .or(patch)
        .unify()
        .or(version)
        .unify()
        .or(rollback)
        .unify()
        .or(promote)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}

/// The live version among a model's versions (read once, not looked up again).
fn live_version(versions: &[VersionRecord]) -> Option<VersionId> {
    versions
        .iter()
        .find(|r| r.state == VersionState::Live)
        .map(|r| r.stored.version)
}

/// What `GET /v1/models/{name}` answers.
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
        scale: platform.scale(name),
    })
}

/// What `GET /v1/models` answers.
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
