//! [`Routes`]: where the gateway sends each model's requests, switched atomically by rollouts
//! and shared among versions by weight while a split is set.
//!
//! Each upstream counts the requests in flight to it, so a rollout can switch traffic to the
//! new version and then wait for the old one to drain before stopping it. Each model's
//! traffic notes when its last request came, so an idle model can be scaled to zero: its
//! routes are then *parked* (its split kept, no upstream) until it is woken.

use super::traffic::{self, Split};
use crate::clock::now_ms;
use crate::model::{ModelName, VersionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Which of a model's upstreams a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick<'a> {
    /// By weight, spread evenly.
    Any,
    /// By weight, the same version for the same session key.
    Session(&'a [u8]),
    /// This version only.
    Version(VersionId),
}

/// The gateway's routing table: model → its live upstreams with their weights ([`Split`]),
/// plus the default model that `/inference/predict` serves.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    inner: Arc<RwLock<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    models: HashMap<ModelName, Arc<Traffic>>,
    /// Models scaled to zero: their split, kept for when they wake.
    parked: HashMap<ModelName, Split>,
    default_model: Option<ModelName>,
}

/// One model's upstreams, in the split's order, the count of requests picked by weight, and
/// when (unix ms) the last request was routed, or the traffic set.
#[derive(Debug)]
struct Traffic {
    split: Split,
    upstreams: Vec<Arc<Upstream>>,
    picked: AtomicU64,
    last_request_ms: AtomicU64,
}

impl Traffic {
    fn upstream(&self, version: VersionId) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.version == version)
    }
}

fn upstream(version: VersionId, url: String) -> Arc<Upstream> {
    Arc::new(Upstream {
        url,
        version,
        in_flight: AtomicUsize::new(0),
    })
}

impl Routes {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends all of `model`'s traffic to `url` from now on; returns the upstreams it replaces.
    pub fn switch(&self, model: &ModelName, version: VersionId, url: String) -> Vec<Arc<Upstream>> {
        self.set(model, &Split::single(version), |_| Some(url.clone()))
    }

    /// Shares `model`'s traffic by `split` from now on, each version at the URL `url_of`
    /// gives (`None`: where it is routed now). An upstream kept at its URL keeps counting its
    /// requests in flight; the upstreams replaced or left out are returned, for draining.
    ///
    /// # Panics
    /// If `url_of` gives `None` for a version that is not routed now.
    pub fn set(
        &self,
        model: &ModelName,
        split: &Split,
        url_of: impl Fn(VersionId) -> Option<String>,
    ) -> Vec<Arc<Upstream>> {
        let mut table = self.write();
        let old = table.models.get(model).cloned();
        let kept = |version: VersionId, url: Option<&String>| {
            let current = old.as_ref()?.upstream(version)?;
            (url.is_none_or(|url| *url == current.url)).then(|| current.clone())
        };
        let upstreams: Vec<Arc<Upstream>> = split
            .versions()
            .map(|version| {
                let url = url_of(version);
                kept(version, url.as_ref()).unwrap_or_else(|| {
                    upstream(
                        version,
                        url.expect("a version not routed yet comes with its URL"),
                    )
                })
            })
            .collect();
        let replaced = old
            .map(|old| {
                old.upstreams
                    .iter()
                    .filter(|u| !upstreams.iter().any(|new| Arc::ptr_eq(new, u)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let traffic = Traffic {
            split: split.clone(),
            upstreams,
            picked: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(now_ms()),
        };
        table.parked.remove(model);
        table.models.insert(model.clone(), Arc::new(traffic));
        replaced
    }

    /// Points `model` `version`'s traffic at `url` (its instance was started again, on
    /// another address); changes nothing if the version is not routed or already goes to
    /// `url`. Returns whether it changed.
    pub fn repoint(&self, model: &ModelName, version: VersionId, url: &str) -> bool {
        let mut table = self.write();
        let Some(traffic) = table.models.get(model) else {
            return false;
        };
        match traffic.upstream(version) {
            Some(current) if current.url != url => {}
            _ => return false,
        }
        let upstreams = traffic
            .upstreams
            .iter()
            .map(|u| match u.version == version {
                true => upstream(version, url.to_owned()),
                false => u.clone(),
            })
            .collect();
        let traffic = Traffic {
            split: traffic.split.clone(),
            upstreams,
            picked: AtomicU64::new(traffic.picked.load(Ordering::Relaxed)),
            last_request_ms: AtomicU64::new(traffic.last_request_ms.load(Ordering::Relaxed)),
        };
        table.models.insert(model.clone(), Arc::new(traffic));
        true
    }

    /// The URL `model` `version`'s traffic goes to.
    pub fn url(&self, model: &ModelName, version: VersionId) -> Option<String> {
        let traffic = self.read().models.get(model)?.clone();
        traffic.upstream(version).map(|u| u.url.clone())
    }

    /// Stops routing `model` (parked or not); returns the upstreams it had.
    pub fn remove(&self, model: &ModelName) -> Vec<Arc<Upstream>> {
        let mut table = self.write();
        table.parked.remove(model);
        table
            .models
            .remove(model)
            .map(|traffic| traffic.upstreams.clone())
            .unwrap_or_default()
    }

    /// Parks `model` (it is scaled to zero): its requests find no upstream, its split is
    /// kept for [`Routes::set`] to route again when it wakes. Returns the upstreams it had,
    /// for draining; `None` if it is not routed.
    pub fn park(&self, model: &ModelName) -> Option<Vec<Arc<Upstream>>> {
        let mut table = self.write();
        let traffic = table.models.remove(model)?;
        table.parked.insert(model.clone(), traffic.split.clone());
        Some(traffic.upstreams.clone())
    }

    /// Parks `model` with `split` without its having been routed (it was scaled to zero
    /// when the api server stopped).
    pub fn park_split(&self, model: &ModelName, split: Split) {
        let mut table = self.write();
        table.models.remove(model);
        table.parked.insert(model.clone(), split);
    }

    /// How many models are routed (their instances run; parked ones aside).
    pub fn running_models(&self) -> usize {
        self.read().models.len()
    }

    /// Whether `model` is parked (scaled to zero).
    pub fn is_parked(&self, model: &ModelName) -> bool {
        self.read().parked.contains_key(model)
    }

    /// How long `model` has had no request: `None` while one is in flight, or if it is not
    /// routed (parked included).
    pub fn idle_for(&self, model: &ModelName) -> Option<Duration> {
        let traffic = self.read().models.get(model)?.clone();
        if traffic.upstreams.iter().any(|u| u.in_flight() > 0) {
            return None;
        }
        let last = traffic.last_request_ms.load(Ordering::Relaxed);
        Some(Duration::from_millis(now_ms().saturating_sub(last)))
    }

    /// When (unix ms) `model`'s last request was routed, or its traffic set, if it is routed.
    pub fn last_request_ms(&self, model: &ModelName) -> Option<u64> {
        let table = self.read();
        let traffic = table.models.get(model)?;
        Some(traffic.last_request_ms.load(Ordering::Relaxed))
    }

    /// The upstream of `model` that `pick` chooses, counted as in flight until the guard
    /// drops; `None` if the model is not routed or the version picked is not in its split.
    pub fn acquire(&self, model: &ModelName, pick: Pick<'_>) -> Option<InFlight> {
        let table = self.read();
        let traffic = table.models.get(model)?;
        let version = match pick {
            Pick::Version(version) => version,
            Pick::Session(key) => traffic.split.pick(traffic::point_of_session(key)),
            Pick::Any if !traffic.split.is_split() => traffic.upstreams[0].version,
            Pick::Any => {
                let n = traffic.picked.fetch_add(1, Ordering::Relaxed);
                traffic.split.pick(traffic::point_of_request(n))
            }
        };
        let upstream = traffic.upstream(version)?.clone();
        // Counted while the table is locked: a switch (or a scale to zero) cannot slip
        // between lookup and count.
        upstream.in_flight.fetch_add(1, Ordering::SeqCst);
        traffic.last_request_ms.store(now_ms(), Ordering::Relaxed);
        Some(InFlight { upstream })
    }

    /// How `model`'s traffic is split, if it is routed (or parked).
    pub fn split(&self, model: &ModelName) -> Option<Split> {
        let table = self.read();
        match table.models.get(model) {
            Some(traffic) => Some(traffic.split.clone()),
            None => table.parked.get(model).cloned(),
        }
    }

    /// The version that counts as `model`'s live one: its split's heaviest.
    pub fn version(&self, model: &ModelName) -> Option<VersionId> {
        self.split(model).map(|split| split.primary(&[]))
    }

    /// Sets the model `/inference/predict` serves.
    pub fn set_default(&self, model: Option<ModelName>) {
        self.write().default_model = model;
    }

    /// The model `/inference/predict` serves.
    pub fn default_model(&self) -> Option<ModelName> {
        self.read().default_model.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> VersionId {
        VersionId::parse(&n.to_string()).unwrap()
    }

    #[tokio::test]
    async fn switching_keeps_the_old_upstream_counting_until_its_requests_finish() {
        let routes = Routes::default();
        let model = ModelName::parse("m").unwrap();
        assert!(routes.acquire(&model, Pick::Any).is_none());
        routes.switch(&model, v(1), "http://old".into());
        let request = routes.acquire(&model, Pick::Any).unwrap();
        assert_eq!(request.upstream().url, "http://old");

        let old = routes.switch(&model, v(2), "http://new".into());
        assert_eq!(old.len(), 1);
        let new = routes.acquire(&model, Pick::Any).unwrap();
        assert_eq!(new.upstream().url, "http://new");
        assert_eq!(old[0].in_flight(), 1);
        assert!(!old[0].drained(Duration::from_millis(30)).await);
        drop(request);
        assert!(old[0].drained(Duration::from_millis(30)).await);
        assert_eq!(routes.split(&model), Some(Split::single(v(2))));
        assert!(routes.acquire(&model, Pick::Version(v(1))).is_none());
    }

    #[test]
    fn a_split_shares_requests_by_weight_and_keeps_the_upstreams_it_keeps() {
        let routes = Routes::default();
        let model = ModelName::parse("m").unwrap();
        routes.switch(&model, v(1), "http://one".into());
        let in_flight = routes.acquire(&model, Pick::Any).unwrap();
        let split = Split::new([(v(1), 70), (v(2), 30)]).unwrap();
        let urls = |version: VersionId| (version == v(2)).then(|| "http://two".to_owned());
        assert!(routes.set(&model, &split, urls).is_empty(), "v1 is kept");
        assert_eq!(in_flight.upstream().in_flight(), 1, "and still counts");
        let picked: Vec<VersionId> = (0..400)
            .map(|_| {
                routes
                    .acquire(&model, Pick::Any)
                    .unwrap()
                    .upstream()
                    .version
            })
            .collect();
        let to_v1 = picked.iter().filter(|version| **version == v(1)).count();
        assert!((278..=282).contains(&to_v1), "{to_v1} of 400 to v1");
        let session = |key: &str| {
            let pick = Pick::Session(key.as_bytes());
            routes.acquire(&model, pick).unwrap().upstream().version
        };
        assert!((0..10).all(|_| session("alice") == session("alice")));
        let named = routes.acquire(&model, Pick::Version(v(2))).unwrap();
        assert_eq!(named.upstream().url, "http://two");
        assert!(routes.acquire(&model, Pick::Version(v(3))).is_none());

        let replaced = routes.switch(&model, v(2), "http://two".into());
        let replaced: Vec<VersionId> = replaced.iter().map(|u| u.version).collect();
        assert_eq!(replaced, [v(1)], "v2 stays, v1 goes");
        assert_eq!(named.upstream().in_flight(), 1);
        assert_eq!(routes.remove(&model).len(), 1);
        assert!(routes.split(&model).is_none());
    }

    #[test]
    fn a_restarted_instance_is_followed_only_while_its_version_is_live() {
        let routes = Routes::default();
        let model = ModelName::parse("m").unwrap();
        let (v1, v2) = (v(1), v(2));
        assert!(!routes.repoint(&model, v1, "http://nowhere"));
        routes.switch(&model, v1, "http://a".into());
        assert!(routes.repoint(&model, v1, "http://b"));
        assert!(!routes.repoint(&model, v1, "http://b"));
        assert_eq!(routes.url(&model, v1).as_deref(), Some("http://b"));
        routes.switch(&model, v2, "http://c".into());
        assert!(
            !routes.repoint(&model, v1, "http://d"),
            "v1 is not live any more"
        );
        assert_eq!(routes.url(&model, v2).as_deref(), Some("http://c"));
    }
}
