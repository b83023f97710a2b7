//! [`Routes`]: where the gateway sends each model's requests, switched atomically by rollouts.
//!
//! Each upstream counts the requests in flight to it, so a rollout can switch traffic to the
//! new version and then wait for the old one to drain before stopping it.

use crate::model::{ModelName, VersionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A live predict server a model's traffic goes to.
#[derive(Debug)]
pub struct Upstream {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The version it serves.
    pub version: VersionId,
    in_flight: AtomicUsize,
}

impl Upstream {
    /// Requests being proxied to it right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no request is in flight, or `timeout` passes. Returns whether it drained.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.in_flight() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

/// Counts one request in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    upstream: Arc<Upstream>,
}

impl InFlight {
    /// The upstream the request goes to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.upstream.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The gateway's routing table: model → live upstream, plus the default model that
/// `/inference/predict` serves.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    inner: Arc<RwLock<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    upstreams: HashMap<ModelName, Arc<Upstream>>,
    default_model: Option<ModelName>,
}

impl Routes {
    /// Sends `model`'s traffic to `url` from now on; returns the upstream it replaces.
    pub fn switch(
        &self,
        model: &ModelName,
        version: VersionId,
        url: String,
    ) -> Option<Arc<Upstream>> {
        let upstream = Arc::new(Upstream {
            url,
            version,
            in_flight: AtomicUsize::new(0),
        });
        let mut table = self.inner.write().unwrap_or_else(|e| e.into_inner());
        table.upstreams.insert(model.clone(), upstream)
    }

    /// Points `model`'s traffic at `url` if it goes to `version` (whose instance was started
    /// again, on another address); changes nothing if it goes to another version or already
    /// to `url`. Returns whether it changed.
    pub fn repoint(&self, model: &ModelName, version: VersionId, url: &str) -> bool {
        let mut table = self.inner.write().unwrap_or_else(|e| e.into_inner());
        match table.upstreams.get(model) {
            Some(upstream) if upstream.version == version && upstream.url != url => {
                let upstream = Arc::new(Upstream {
                    url: url.to_owned(),
                    version,
                    in_flight: AtomicUsize::new(0),
                });
                table.upstreams.insert(model.clone(), upstream);
                true
            }
            _ => false,
        }
    }

    /// The URL `model`'s traffic goes to.
    pub fn url(&self, model: &ModelName) -> Option<String> {
        let table = self.inner.read().unwrap_or_else(|e| e.into_inner());
        table.upstreams.get(model).map(|u| u.url.clone())
    }

    /// Stops routing `model`; returns the upstream it had.
    pub fn remove(&self, model: &ModelName) -> Option<Arc<Upstream>> {
        let mut table = self.inner.write().unwrap_or_else(|e| e.into_inner());
        table.upstreams.remove(model)
    }

    /// The upstream of `model`, counted as in flight until the guard drops.
    pub fn acquire(&self, model: &ModelName) -> Option<InFlight> {
        let table = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let upstream = table.upstreams.get(model)?.clone();
        // Counted while the table is locked: a switch cannot slip between lookup and count.
        upstream.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(InFlight { upstream })
    }

    /// The version `model`'s traffic goes to.
    pub fn version(&self, model: &ModelName) -> Option<VersionId> {
        let table = self.inner.read().unwrap_or_else(|e| e.into_inner());
        table.upstreams.get(model).map(|u| u.version)
    }

    /// Sets the model `/inference/predict` serves.
    pub fn set_default(&self, model: Option<ModelName>) {
        let mut table = self.inner.write().unwrap_or_else(|e| e.into_inner());
        table.default_model = model;
    }

    /// The model `/inference/predict` serves.
    pub fn default_model(&self) -> Option<ModelName> {
        let table = self.inner.read().unwrap_or_else(|e| e.into_inner());
        table.default_model.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn switching_keeps_the_old_upstream_counting_until_its_requests_finish() {
        let routes = Routes::default();
        let model = ModelName::parse("m").unwrap();
        assert!(routes.acquire(&model).is_none());
        routes.switch(&model, VersionId::FIRST, "http://old".into());
        let request = routes.acquire(&model).unwrap();
        assert_eq!(request.upstream().url, "http://old");

        let old = routes
            .switch(&model, VersionId::FIRST.next(), "http://new".into())
            .unwrap();
        assert_eq!(routes.acquire(&model).unwrap().upstream().url, "http://new");
        assert_eq!(old.in_flight(), 1);
        assert!(!old.drained(Duration::from_millis(30)).await);
        drop(request);
        assert!(old.drained(Duration::from_millis(30)).await);
        assert_eq!(routes.version(&model), Some(VersionId::FIRST.next()));
    }

    #[test]
    fn a_restarted_instance_is_followed_only_while_its_version_is_live() {
        let routes = Routes::default();
        let model = ModelName::parse("m").unwrap();
        let (v1, v2) = (VersionId::FIRST, VersionId::FIRST.next());
        assert!(!routes.repoint(&model, v1, "http://nowhere"));
        routes.switch(&model, v1, "http://a".into());
        assert!(routes.repoint(&model, v1, "http://b"));
        assert!(!routes.repoint(&model, v1, "http://b"));
        assert_eq!(routes.url(&model).as_deref(), Some("http://b"));
        routes.switch(&model, v2, "http://c".into());
        assert!(
            !routes.repoint(&model, v1, "http://d"),
            "v1 is not live any more"
        );
        assert_eq!(routes.url(&model).as_deref(), Some("http://c"));
    }
}
