//! [`Platform`]: upload → store → build → roll out, wired from the three traits.
//!
//! The api server calls the platform; the platform records every step in the [`Registry`]
//! and never lets a failed build or rollout touch the version that is serving.
//!
//! Rules it keeps:
//! - One change of a model's traffic at a time: rollouts, rollbacks, promotions, deletes and
//!   the automatic rollback of a crash-looping version take the model's lock in turn.
//! - Newest wins: an upload whose build ends after a newer version of the model went live
//!   does not replace it; it stays `built`, for [`Platform::promote`].
//! - A split stands: while a model's traffic is split between versions
//!   ([`Platform::set_traffic`]), a new upload stays `built` until a split or a promotion
//!   places it.
//! - After a restart ([`Platform::recover`]) every version caught in the middle of its
//!   pipeline is taken up again, and what the crash left half-done is removed.
//! - An idle model sleeps: with an idle policy, its instances stop after that long without
//!   a request and its next request wakes it, held by the gateway meanwhile.
//!
//! Each concern is an `impl Platform` block of its own: `upload` (upload, build, delete),
//! `deploy` (rollouts in a model's turn: after a build, rollback, promote), `traffic`
//! (splits), `recovery` (after a restart), `incidents` (exits and crash loops of live
//! versions) and `scale` (scale to zero and wake).

mod deploy;
mod hold;
mod incidents;
mod recovery;
mod retention;
mod scale;
mod traffic;
mod upload;

pub use retention::Retention;
pub use scale::ScaleOptions;

use crate::build::ImageBuilder;
use crate::events::{Events, Stage};
use crate::model::{ModelName, VersionId};
use crate::registry::Registry;
use crate::rollout::{Health, ModelLocks, Rollout, Routes};
use crate::store::ModelStore;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Weak};
use tokio::sync::Semaphore;

/// Choices of a platform beyond its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformOptions {
    /// The model `/inference/predict` serves (default: the first model to go live).
    pub default_model: Option<ModelName>,
    /// Builds that may run at once; more wait in upload order. Each build unpacks and
    /// loads a model, so on a small machine one at a time is the safe choice.
    pub max_concurrent_builds: usize,
    /// Uploads that may wait for a build slot; past them an upload is refused (`429` with
    /// `Retry-After`) before it is stored.
    pub max_queued_builds: usize,
    /// How idle models are scaled to zero and woken.
    pub scale: ScaleOptions,
    /// What is kept of versions that no longer serve.
    pub retention: Retention,
}

impl Default for PlatformOptions {
    fn default() -> Self {
        Self {
            default_model: None,
            max_concurrent_builds: default_concurrent_builds(),
            max_queued_builds: 16,
            scale: ScaleOptions::default(),
            retention: Retention::default(),
        }
    }
}

/// One build per 4 cores, at least one.
pub fn default_concurrent_builds() -> usize {
    std::thread::available_parallelism()
        .map(|n| (n.get() / 4).max(1))
        .unwrap_or(1)
}

/// Why a version is being rolled out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// Its upload was built: it goes live unless a newer version went live meanwhile.
    Upload,
    /// Someone asked for this version (rollback, promote, recovery of the live version).
    Asked,
}

/// The pieces a platform is made of.
pub struct Platform {
    store: Arc<dyn ModelStore>,
    builder: Arc<dyn ImageBuilder>,
    rollout: Arc<dyn Rollout>,
    registry: Registry,
    routes: Routes,
    default_model: Option<ModelName>,
    /// Build slots: `max_concurrent_builds` permits.
    builds: Arc<Semaphore>,
    max_concurrent_builds: usize,
    /// Uploads waiting for a build slot.
    queued_builds: Arc<AtomicUsize>,
    max_queued_builds: usize,
    retention: Retention,
    /// One change of a model's traffic at a time.
    locks: ModelLocks,
    scale_options: ScaleOptions,
    /// Requests held while their model wakes or their version restarts.
    held: hold::Held,
    scale_metrics: crate::metrics::ScaleMetrics,
    gateway_metrics: crate::metrics::GatewayMetrics,
}

impl Platform {
    /// A platform over the given backends. `routes` must be the table `rollout` switches.
    ///
    /// Within a Tokio runtime it also starts following the rollout's
    /// [`Incident`](crate::rollout::Incident)s and looking for idle models.
    pub fn new(
        store: Arc<dyn ModelStore>,
        builder: Arc<dyn ImageBuilder>,
        rollout: Arc<dyn Rollout>,
        registry: Registry,
        routes: Routes,
        options: PlatformOptions,
    ) -> Arc<Self> {
        routes.set_default(options.default_model.clone());
        let max_concurrent_builds = options.max_concurrent_builds.max(1);
        let incidents = rollout.incidents();
        let platform = Arc::new(Self {
            store,
            builder,
            rollout,
            registry,
            routes,
            default_model: options.default_model,
            builds: Arc::new(Semaphore::new(max_concurrent_builds)),
            max_concurrent_builds,
            queued_builds: Arc::default(),
            max_queued_builds: options.max_queued_builds.max(1),
            retention: options.retention,
            locks: ModelLocks::default(),
            scale_options: options.scale,
            held: hold::Held::default(),
            scale_metrics: Default::default(),
            gateway_metrics: Default::default(),
        });
        let runtime = tokio::runtime::Handle::try_current();
        if let Ok(runtime) = &runtime {
            Self::watch_idle(&platform, runtime);
        }
        if let (Some(mut incidents), Ok(runtime)) = (incidents, runtime) {
            let platform = Arc::downgrade(&platform);
            runtime.spawn(async move {
                while let Some(incident) = incidents.recv().await {
                    let Some(platform) = Weak::upgrade(&platform) else {
                        return;
                    };
                    // A rollback can take a while; other incidents need not wait for it.
                    tokio::spawn(async move { platform.on_incident(incident).await });
                }
            });
        }
        platform
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The gateway's routing table.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// How `model`'s live version is doing, as its backend sees it.
    pub async fn health(&self, model: &ModelName) -> Option<Health> {
        self.rollout.health(model).await
    }

    /// What happens to `version` at `stage`, recorded in the registry.
    fn events(&self, model: &ModelName, version: VersionId, stage: Stage) -> Events {
        let (registry, model) = (self.registry.clone(), model.clone());
        Events::new(stage, move |event| {
            registry.record_event(&model, version, event)
        })
    }

    /// Makes `model` the one `/inference/predict` serves, unless there is one.
    fn default_if_unset(&self, model: &ModelName) {
        if self.routes.default_model().is_none() {
            self.routes.set_default(Some(model.clone()));
        }
    }

    /// Stops everything the platform runs.
    pub async fn shutdown(&self) {
        self.rollout.shutdown().await;
    }
}
