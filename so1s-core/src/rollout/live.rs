//! [`LiveSet`]: the live instance of each model behind the gateway, and the blue/green switch
//! every local backend (process, container) makes the same way.

use super::{drain, Deployment, Routes, Target};
use crate::events::Events;
use crate::model::ModelName;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// The live instances of a backend: for each model, its [`Deployment`] and the backend's
/// handle `H` on what runs it (a child process, a container name).
pub(crate) struct LiveSet<H> {
    routes: Routes,
    live: Mutex<HashMap<ModelName, (Deployment, H)>>,
}

impl<H> LiveSet<H> {
    /// Nothing live yet; switches go to `routes`.
    pub(crate) fn new(routes: Routes) -> Self {
        Self {
            routes,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Switches `target.model`'s traffic to `url`, records `handle` as its live instance, and
    /// drains the instance it replaces (at most `drain_timeout`). Returns the new deployment
    /// and the replaced instance's handle and deployment, for the caller to stop.
    pub(crate) async fn switch(
        &self,
        target: &Target,
        url: String,
        handle: H,
        drain_timeout: Duration,
        events: &Events,
    ) -> (Deployment, Option<(Deployment, H)>) {
        let deployment = Deployment {
            target: target.clone(),
            endpoint: url.clone(),
        };
        let old_upstream = self.routes.switch(&target.model, target.version, url);
        events.progress(format!(
            "switched {} traffic to {}",
            target.model, target.version
        ));
        let old = self
            .live
            .lock()
            .await
            .insert(target.model.clone(), (deployment.clone(), handle));
        if let (Some((old, _)), Some(upstream)) = (&old, old_upstream) {
            drain(&upstream, old.target.version, drain_timeout, events).await;
        }
        (deployment, old)
    }

    /// The live deployment of `model`, if any, at the address its traffic goes to now (an
    /// instance that was started again may answer on another one).
    pub(crate) async fn status(&self, model: &ModelName) -> Option<Deployment> {
        let mut deployment = self
            .live
            .lock()
            .await
            .get(model)
            .map(|(deployment, _)| deployment.clone())?;
        if self.routes.version(model) == Some(deployment.target.version) {
            if let Some(url) = self.routes.url(model) {
                deployment.endpoint = url;
            }
        }
        Some(deployment)
    }

    /// Stops routing to `model`, waits (at most `drain_timeout`) for its requests in flight,
    /// and hands back its instance for the caller to stop.
    pub(crate) async fn remove(&self, model: &ModelName, drain_timeout: Duration) -> Option<H> {
        let upstream = self.routes.remove(model);
        let (_, handle) = self.live.lock().await.remove(model)?;
        if let Some(upstream) = upstream {
            upstream.drained(drain_timeout).await;
        }
        Some(handle)
    }

    /// Stops routing to every model and hands back all instances.
    pub(crate) async fn take_all(&self) -> Vec<H> {
        let live: Vec<_> = self.live.lock().await.drain().collect();
        live.into_iter()
            .map(|(model, (_, handle))| {
                self.routes.remove(&model);
                handle
            })
            .collect()
    }
}
