//! A version's events as server-sent events: its history, then what follows until it
//! settles (live, failed, retired, or left `built` by its rollout). Each version has a bounded number of subscribers.

use super::{guard, version_path, with_platform};
use crate::auth::{Role, Tokens};
use crate::events::{Event, EventKind, Stage};
use crate::http::ApiError;
use crate::model::{ModelName, VersionId};
use crate::platform::Platform;
use crate::registry::VersionState;
use crate::{Error, Result};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

/// `GET /v1/models/{name}/versions/{version}/events` (viewer), at most `max_per_version`
/// streams per version at once.
pub fn routes(
    platform: &Arc<Platform>,
    tokens: &Arc<Tokens>,
    max_per_version: usize,
) -> BoxedFilter<(Response,)> {
    let subscribers = Subscribers::new(max_per_version);
    version_path()
        .and(warp::path("events"))
        .and(warp::path::end())
        .and(warp::get())
        .and(guard::require(tokens.clone(), Role::Viewer))
        .and(with_platform(platform))
        .map(
            move |name: ModelName, version: VersionId, platform: Arc<Platform>| {
                stream(name, version, platform, subscribers.clone())
                    .unwrap_or_else(|e| ApiError::from(e).into_response())
            },
        )
        .boxed()
}

/// Counts the subscribers of each version.
#[derive(Debug, Default)]
pub struct Subscribers {
    max_per_version: usize,
    counts: Mutex<HashMap<String, usize>>,
}

impl Subscribers {
    /// At most `max_per_version` streams per version at once.
    pub fn new(max_per_version: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_version,
            counts: Mutex::default(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place among the subscribers of `key`, held until the guard drops.
    fn join(self: &Arc<Self>, key: String) -> Result<Subscription> {
        let mut counts = self.counts();
        let count = counts.entry(key.clone()).or_default();
        if *count >= self.max_per_version {
            return Err(Error::Busy(format!(
                "{key} already has {count} event subscribers (the limit): try again later"
            )));
        }
        *count += 1;
        Ok(Subscription {
            subscribers: self.clone(),
            key,
        })
    }
}

/// One subscriber's place; gives it back when dropped.
struct Subscription {
    subscribers: Arc<Subscribers>,
    key: String,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut counts = self.subscribers.counts();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Whether `event` ends a version's pipeline: it goes live, fails or is retired, or its
/// rollout decides it stays `built` (a newer version is live, or a traffic split stands).
fn settles(event: &Event) -> bool {
    match event.state {
        Some(VersionState::Built) => event.stage == Stage::Rollout,
        Some(state) => state.ends_pipeline(),
        None => false,
    }
}

/// The event stream of one version.
pub fn stream(
    name: ModelName,
    version: VersionId,
    platform: Arc<Platform>,
    subscribers: Arc<Subscribers>,
) -> Result<Response> {
    let registry = platform.registry().clone();
    registry.version(&name, version)?;
    let subscription = subscribers.join(format!("{name} {version}"))?;
    let (history, live) = registry.subscribe(&name, version);
    let settled_now = registry
        .version(&name, version)
        .map(|r| r.state.ends_pipeline())
        .unwrap_or(true)
        || history.last().is_some_and(settles);
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
                    let done = settles(&event);
                    return Some((event, (live, done)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let stream = history.chain(live).map(move |event: Event| {
        let _held = &subscription;
        warp::sse::Event::default()
            .event(match event.kind {
                EventKind::Progress => "progress",
                EventKind::Log => "log",
                EventKind::Error => "error",
            })
            .json_data(&event)
            .map_err(std::io::Error::other)
    });
    Ok(warp::sse::reply(warp::sse::keep_alive().stream(stream)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_are_bounded_per_version_and_released_on_drop() {
        let subscribers = Subscribers::new(2);
        let a = subscribers.join("m v1".into()).unwrap();
        let _b = subscribers.join("m v1".into()).unwrap();
        let err = subscribers.join("m v1".into()).err().unwrap();
        assert!(matches!(err, Error::Busy(_)), "{err:?}");
        // Another version has its own count.
        let _c = subscribers.join("m v2".into()).unwrap();
        drop(a);
        subscribers.join("m v1".into()).unwrap();
    }
}
