//! [`Routes`]: where the gateway sends each model's requests, switched atomically by rollouts
//! and shared among versions by weight while a split is set.
//!
//! Each upstream counts the requests in flight to it, so a rollout can switch traffic to the
//! new version and then wait for the old one to drain before stopping it. Each model's
//! traffic notes when its last request came, so an idle model can be scaled to zero: its
//! routes are then *parked* (its split kept, no upstream) until it is woken.
//!
//! An upstream whose instance exited and is being started again is *not ready*: requests to
//! it wait (the gateway holds them) until its supervision routes it again. The gateway reports
//! each answer to it ([`Upstream::answered`], [`Upstream::failed`]); failures in a row tell
//! its supervision to start it again ([`Upstream::condemned`]). Every change of the table is
//! announced on [`Routes::changes`], for the requests held.

use super::latency::{AnswerTimeout, Latency};
use super::traffic::{self, Split};
use crate::clock::now_ms;
use crate::model::{ModelName, VersionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// A live predict server a model's traffic goes to.
#[derive(Debug)]
pub struct Upstream {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The version it serves.
    pub version: VersionId,
    in_flight: AtomicUsize,
    /// Its instance serves (not exited and being started again).
    ready: AtomicBool,
    /// Timeouts and server errors in a row.
    failures: AtomicU32,
    /// Set (once per run of failures) for its supervision to start it again.
    condemned: Notify,
    /// A supervision listens for [`Upstream::condemned`]: a condemned upstream is then not
    /// ready at once (its supervision makes it ready again, or starts it again).
    supervised: AtomicBool,
}

impl Upstream {
    /// Whether its instance serves: not exited and being started again.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// It answered: a run of failures ends.
    pub fn answered(&self) {
        self.failures.store(0, Ordering::SeqCst);
    }

    /// It timed out or answered with a server error. The `limit`th failure in a row
    /// condemns it: if supervised it is not ready from now on (requests wait), and its
    /// supervision looks at it ([`Upstream::condemned`]). Returns whether this failure did.
    pub fn failed(&self, limit: u32) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        let condemned = failures == limit.max(1);
        if condemned {
            if self.supervised.load(Ordering::SeqCst) {
                self.ready.store(false, Ordering::SeqCst);
            }
            self.condemned.notify_one();
        }
        condemned
    }

    /// Resolves once the gateway has condemned it (at once if it did before the call); from
    /// the first call on it counts as supervised.
    pub async fn condemned(&self) {
        self.supervised.store(true, Ordering::SeqCst);
        self.condemned.notified().await;
    }

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
    latency: Arc<Latency>,
}

impl InFlight {
    /// The upstream the request goes to.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// How long its answer may take by `rule`, from the model's recent answers.
    pub fn answer_timeout(&self, rule: AnswerTimeout) -> Duration {
        self.latency.timeout(rule)
    }

    /// It was answered in `took`: counted in the model's latency, and its upstream's run of
    /// failures ends.
    pub fn answered(&self, took: Duration) {
        self.latency.record(took);
        self.upstream.answered();
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

/// Why no upstream was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The model is not routed.
    #[error("the model is not routed")]
    NotRouted,
    /// The model is scaled to zero.
    #[error("the model is scaled to zero")]
    Parked,
    /// The version asked for is not in the model's split.
    #[error("the version is not in the model's split")]
    NotServing,
    /// The upstreams that could take it are being started again.
    #[error("the model's instances are being started again")]
    NotReady,
}

/// The gateway's routing table: model → its live upstreams with their weights ([`Split`]),
/// plus the default model that `/inference/predict` serves.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    table: RwLock<Table>,
    /// Counts the table's changes.
    changed: watch::Sender<u64>,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            table: RwLock::default(),
            changed: watch::Sender::new(0),
        }
    }
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
    latency: Arc<Latency>,
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
        ready: AtomicBool::new(true),
        failures: AtomicU32::new(0),
        condemned: Notify::new(),
        supervised: AtomicBool::new(false),
    })
}

/// The table, locked to be changed; the change is announced when it drops.
struct Changing<'a> {
    table: std::sync::RwLockWriteGuard<'a, Table>,
    changed: &'a watch::Sender<u64>,
}

impl std::ops::Deref for Changing<'_> {
    type Target = Table;

    fn deref(&self) -> &Table {
        &self.table
    }
}

impl std::ops::DerefMut for Changing<'_> {
    fn deref_mut(&mut self) -> &mut Table {
        &mut self.table
    }
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

/// The upstream of `traffic` that `pick` chooses, or, when that one is not ready and the
/// pick allows, another ready one.
fn choose(traffic: &Traffic, pick: Pick<'_>) -> Result<Arc<Upstream>, Unavailable> {
    let version = match pick {
        Pick::Version(version) => version,
        Pick::Session(key) => traffic.split.pick(traffic::point_of_session(key)),
        Pick::Any if !traffic.split.is_split() => traffic.upstreams[0].version,
        Pick::Any => {
            let n = traffic.picked.fetch_add(1, Ordering::Relaxed);
            traffic.split.pick(traffic::point_of_request(n))
        }
    };
    let upstream = traffic.upstream(version).ok_or(Unavailable::NotServing)?;
    if upstream.is_ready() {
        return Ok(upstream.clone());
    }
    if let Pick::Version(_) = pick {
        return Err(Unavailable::NotReady);
    }
    traffic
        .upstreams
        .iter()
        .find(|u| u.is_ready())
        .cloned()
        .ok_or(Unavailable::NotReady)
}

impl Routes {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The table to change; the change is announced when the guard drops.
    fn write(&self) -> Changing<'_> {
        Changing {
            table: self.inner.table.write().unwrap_or_else(|e| e.into_inner()),
            changed: &self.inner.changed,
        }
    }

    /// Announces each change of the table from now on.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Marks `model` `version`'s upstream ready or not (its instance exited and is being
    /// started again, or serves again). Returns whether it changed.
    pub fn set_ready(&self, model: &ModelName, version: VersionId, ready: bool) -> bool {
        let table = self.write();
        let Some(upstream) = table
            .models
            .get(model)
            .and_then(|traffic| traffic.upstream(version))
        else {
            return false;
        };
        if ready {
            upstream.failures.store(0, Ordering::SeqCst);
        }
        upstream.ready.swap(ready, Ordering::SeqCst) != ready
    }

    /// `model` `version`'s upstream, if it is routed at `url`.
    pub fn upstream_at(
        &self,
        model: &ModelName,
        version: VersionId,
        url: &str,
    ) -> Option<Arc<Upstream>> {
        let table = self.read();
        let upstream = table.models.get(model)?.upstream(version)?;
        (upstream.url == url).then(|| upstream.clone())
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
            .as_ref()
            .map(|old| {
                old.upstreams
                    .iter()
                    .filter(|u| !upstreams.iter().any(|new| Arc::ptr_eq(new, u)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let latency = old.map(|old| old.latency.clone()).unwrap_or_default();
        let traffic = Traffic {
            split: split.clone(),
            upstreams,
            picked: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(now_ms()),
            latency,
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
            latency: traffic.latency.clone(),
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

    /// The upstream of `model` that `pick` chooses (another ready one of its split if that
    /// one is not ready and the pick names no version), counted as in flight until the guard
    /// drops.
    pub fn acquire(&self, model: &ModelName, pick: Pick<'_>) -> Result<InFlight, Unavailable> {
        let table = self.read();
        let Some(traffic) = table.models.get(model) else {
            return Err(match table.parked.contains_key(model) {
                true => Unavailable::Parked,
                false => Unavailable::NotRouted,
            });
        };
        let upstream = choose(traffic, pick)?;
        // Counted while the table is locked: a switch (or a scale to zero) cannot slip
        // between lookup and count.
        upstream.in_flight.fetch_add(1, Ordering::SeqCst);
        traffic.last_request_ms.store(now_ms(), Ordering::Relaxed);
        Ok(InFlight {
            upstream,
            latency: traffic.latency.clone(),
        })
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
        assert_eq!(
            routes.acquire(&model, Pick::Any).unwrap_err(),
            Unavailable::NotRouted
        );
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
        assert_eq!(
            routes.acquire(&model, Pick::Version(v(1))).unwrap_err(),
            Unavailable::NotServing
        );
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
        assert!(routes.acquire(&model, Pick::Version(v(3))).is_err());

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

    #[tokio::test]
    async fn an_upstream_being_restarted_is_passed_over_and_its_return_announced() {
        let routes = Routes::default();
        let model = ModelName::parse("m").unwrap();
        routes.switch(&model, v(1), "http://one".into());
        let mut changes = routes.changes();
        assert!(routes.set_ready(&model, v(1), false));
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        assert_eq!(
            routes.acquire(&model, Pick::Any).unwrap_err(),
            Unavailable::NotReady
        );

        // In a split, requests go to the version that is ready, unless one is named.
        let split = Split::new([(v(1), 50), (v(2), 50)]).unwrap();
        let urls = |version: VersionId| (version == v(2)).then(|| "http://two".to_owned());
        routes.set(&model, &split, urls);
        assert!((0..20).all(|_| routes
            .acquire(&model, Pick::Any)
            .unwrap()
            .upstream()
            .version
            == v(2)));
        assert_eq!(
            routes.acquire(&model, Pick::Version(v(1))).unwrap_err(),
            Unavailable::NotReady
        );
        let waiter = tokio::spawn(async move { changes.changed().await.is_ok() });
        assert!(routes.set_ready(&model, v(1), true));
        assert!(waiter.await.unwrap(), "the return is announced");
        assert!(routes.acquire(&model, Pick::Version(v(1))).is_ok());

        routes.park(&model);
        assert_eq!(
            routes.acquire(&model, Pick::Any).unwrap_err(),
            Unavailable::Parked
        );
    }

    #[tokio::test]
    async fn failures_in_a_row_condemn_an_upstream_once_and_an_answer_ends_the_run() {
        let routes = Routes::default();
        let model = ModelName::parse("m").unwrap();
        routes.switch(&model, v(1), "http://one".into());
        let upstream = routes.upstream_at(&model, v(1), "http://one").unwrap();
        assert!(routes
            .upstream_at(&model, v(1), "http://elsewhere")
            .is_none());
        assert!(!upstream.failed(3) && !upstream.failed(3));
        upstream.answered();
        assert!(!upstream.failed(3) && !upstream.failed(3));
        assert!(upstream.failed(3), "the third in a row");
        assert!(!upstream.failed(3), "told once");
        tokio::time::timeout(Duration::from_secs(1), upstream.condemned())
            .await
            .expect("its supervision hears of it even if it was not listening yet");
        assert!(
            upstream.is_ready(),
            "unsupervised, it stays ready (Kubernetes' Services)"
        );

        // Supervised (its supervision listens), a condemned upstream is not ready at once.
        let listening = tokio::time::timeout(Duration::from_millis(5), upstream.condemned());
        assert!(listening.await.is_err());
        // (Marked ready again, as after a restart: the count starts anew.)
        routes.set_ready(&model, v(1), true);
        assert!(!upstream.failed(3) && !upstream.failed(3));
        assert!(upstream.failed(3));
        assert!(!upstream.is_ready());
    }
}
