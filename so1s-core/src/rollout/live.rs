//! [`LiveSet`]: the live instances of each model behind the gateway, and the switch every
//! local backend (process, container) makes the same way: blue/green for one version, a
//! weighted split for several.

use super::{drain, Deployment, Routes, Split};
use crate::events::Events;
use crate::model::{ModelName, VersionId};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::Mutex;

/// A live instance: its [`Deployment`] and the backend's handle `H` on what runs it (a
/// child process, a container name).
pub(crate) type Instance<H> = (Deployment, H);

/// The live instances of a backend: for each model, one per version in its split.
pub(crate) struct LiveSet<H> {
    routes: Routes,
    live: Mutex<HashMap<ModelName, Vec<Instance<H>>>>,
}

impl<H> LiveSet<H> {
    /// Nothing live yet; switches go to `routes`.
    pub(crate) fn new(routes: Routes) -> Self {
        Self {
            routes,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// The running instance of `model` `version`, if any, at the address its traffic goes to
    /// now (an instance that was started again may answer on another one).
    pub(crate) async fn running(
        &self,
        model: &ModelName,
        version: VersionId,
    ) -> Option<Deployment> {
        let mut deployment = self
            .live
            .lock()
            .await
            .get(model)?
            .iter()
            .find(|(deployment, _)| deployment.target.version == version)
            .map(|(deployment, _)| deployment.clone())?;
        if let Some(url) = self.routes.url(model, version) {
            deployment.endpoint = url;
        }
        Some(deployment)
    }

    /// Shares `model`'s traffic by `split` among its instances, the running ones and
    /// `started` (which replace running ones of their version), and drains the instances it
    /// leaves out (each at most `drain_timeout`). Returns the deployments of the split, in its
    /// order, and the instances left out, for the caller to stop.
    ///
    /// # Panics
    /// If a version of `split` neither runs nor is in `started`.
    pub(crate) async fn place(
        &self,
        model: &ModelName,
        split: &Split,
        started: Vec<Instance<H>>,
        drain_timeout: Duration,
        events: &Events,
    ) -> (Vec<Deployment>, Vec<Instance<H>>) {
        let mut live = self.live.lock().await;
        let mut instances = live.remove(model).unwrap_or_default();
        let mut left_out = Vec::new();
        let fresh: Vec<(VersionId, String)> = started
            .iter()
            .map(|(d, _)| (d.target.version, d.endpoint.clone()))
            .collect();
        for instance in started {
            let version = instance.0.target.version;
            if let Some(at) = instances
                .iter()
                .position(|(d, _)| d.target.version == version)
            {
                left_out.push(instances.swap_remove(at));
            }
            instances.push(instance);
        }
        let (mut kept, out): (Vec<_>, Vec<_>) = instances
            .into_iter()
            .partition(|(d, _)| split.weight(d.target.version).is_some());
        left_out.extend(out);
        kept.sort_by_key(|(d, _)| d.target.version);
        // A started instance at its address; a running one where its route goes now (it may
        // have been started again on another port), or where it was deployed.
        let urls: Vec<(VersionId, Option<String>)> = split
            .versions()
            .map(|version| {
                let url = match fresh.iter().find(|(v, _)| *v == version) {
                    Some((_, url)) => Some(url.clone()),
                    None if self.routes.url(model, version).is_some() => None,
                    None => kept
                        .iter()
                        .find(|(d, _)| d.target.version == version)
                        .map(|(d, _)| d.endpoint.clone()),
                };
                (version, url)
            })
            .collect();
        let replaced = self.routes.set(model, split, |version| {
            urls.iter()
                .find(|(v, _)| *v == version)
                .and_then(|(_, url)| url.clone())
        });
        events.progress(match split.is_split() {
            true => format!("split {model} traffic: {}", split.describe()),
            false => format!("switched {model} traffic to {}", split.primary(&[])),
        });
        let deployments = kept.iter().map(|(d, _)| d.clone()).collect();
        live.insert(model.clone(), kept);
        drop(live);
        for upstream in replaced {
            drain(&upstream, upstream.version, drain_timeout, events).await;
        }
        (deployments, left_out)
    }

    /// The live deployment of `model` (its split's heaviest version), if any.
    pub(crate) async fn status(&self, model: &ModelName) -> Option<Deployment> {
        let primary = self.routes.split(model)?.primary(&[]);
        self.running(model, primary).await
    }

    /// Stops routing to `model`, waits (at most `drain_timeout`) for its requests in flight,
    /// and hands back its instances for the caller to stop.
    pub(crate) async fn remove(&self, model: &ModelName, drain_timeout: Duration) -> Vec<H> {
        let upstreams = self.routes.remove(model);
        let instances = self.live.lock().await.remove(model).unwrap_or_default();
        for upstream in upstreams {
            upstream.drained(drain_timeout).await;
        }
        instances.into_iter().map(|(_, handle)| handle).collect()
    }

    /// Stops routing to every model and hands back all instances.
    pub(crate) async fn take_all(&self) -> Vec<H> {
        let live: Vec<_> = self.live.lock().await.drain().collect();
        live.into_iter()
            .flat_map(|(model, instances)| {
                self.routes.remove(&model);
                instances.into_iter().map(|(_, handle)| handle)
            })
            .collect()
    }
}
