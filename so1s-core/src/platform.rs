//! [`Platform`]: upload → store → build → roll out, wired from the three traits.
//!
//! The api server calls the platform; the platform records every step in the [`Registry`]
//! and never lets a failed build or rollout touch the version that is serving.

use crate::build::{Artifact, ImageBuilder};
use crate::events::{Events, Stage};
use crate::model::{ModelName, VersionId};
use crate::registry::{Registry, Transition, VersionRecord, VersionState};
use crate::rollout::{Rollout, Routes, Target};
use crate::store::{ByteStream, ModelStore, StoredVersion};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Mutex, Semaphore};

/// Choices of a platform beyond its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformOptions {
    /// The model `/inference/predict` serves (default: the first model to go live).
    pub default_model: Option<ModelName>,
    /// Builds that may run at once; more wait in upload order. Each build unpacks and
    /// loads a model, so on a small machine one at a time is the safe choice.
    pub max_concurrent_builds: usize,
}

impl Default for PlatformOptions {
    fn default() -> Self {
        Self {
            default_model: None,
            max_concurrent_builds: default_concurrent_builds(),
        }
    }
}

/// One build per 4 cores, at least one.
pub fn default_concurrent_builds() -> usize {
    std::thread::available_parallelism()
        .map(|n| (n.get() / 4).max(1))
        .unwrap_or(1)
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
    /// One deploy per model at a time, in order.
    deploying: Mutex<HashMap<ModelName, Arc<Mutex<()>>>>,
}

impl Platform {
    /// A platform over the given backends. `routes` must be the table `rollout` switches.
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
        Arc::new(Self {
            store,
            builder,
            rollout,
            registry,
            routes,
            default_model: options.default_model,
            builds: Arc::new(Semaphore::new(max_concurrent_builds)),
            max_concurrent_builds,
            deploying: Mutex::new(HashMap::new()),
        })
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The gateway's routing table.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    fn events(&self, model: &ModelName, version: VersionId, stage: Stage) -> Events {
        let (registry, model) = (self.registry.clone(), model.clone());
        Events::new(stage, move |event| {
            registry.record_event(&model, version, event)
        })
    }

    /// Stores an upload as a new version and starts building and rolling it out in the
    /// background. Returns once the version is stored.
    pub async fn upload(
        self: &Arc<Self>,
        model: &ModelName,
        body: ByteStream,
    ) -> Result<VersionRecord> {
        let stored = self.store.put(model, body).await?;
        let record = self.registry.add(stored.clone())?;
        self.events(model, stored.version, Stage::Upload)
            .progress(format!(
                "stored {} {} ({} bytes, sha256 {})",
                model, stored.version, stored.size, stored.sha256
            ));
        let platform = self.clone();
        tokio::spawn(async move { platform.build_and_deploy(stored).await });
        Ok(record)
    }

    async fn build_and_deploy(&self, stored: StoredVersion) {
        let (model, version) = (stored.model.clone(), stored.version);
        let events = self.events(&model, version, Stage::Build);
        if self.builds.available_permits() == 0 {
            events.progress(format!(
                "waiting for a build slot ({} builds run at a time)",
                self.max_concurrent_builds
            ));
        }
        let Ok(slot) = self.builds.clone().acquire_owned().await else {
            return; // closed: the platform is going away
        };
        let building = Transition::to(
            VersionState::Building,
            Stage::Build,
            format!("building {model} {version}"),
        );
        if let Err(e) = self.registry.apply(&model, version, building) {
            tracing::error!(error = %e.chain(), "registry");
            return;
        }
        let built = match self.store.archive(&model, version).await {
            Ok(archive) => self.builder.build(&stored, &archive, &events).await,
            Err(e) => Err(e),
        };
        // The build's outcome is recorded before its slot is given back.
        let recorded = match built {
            Ok(artifact) => {
                let done = Transition::to(
                    VersionState::Built,
                    Stage::Build,
                    format!("built {artifact}"),
                )
                .with_artifact(artifact.clone());
                self.registry
                    .apply(&model, version, done)
                    .map(|_| Some(artifact))
            }
            Err(e) => self
                .registry
                .apply(
                    &model,
                    version,
                    Transition::failed(Stage::Build, format!("build failed: {}", e.chain())),
                )
                .map(|_| None),
        };
        drop(slot);
        let result = match recorded {
            Ok(Some(artifact)) => self.deploy(&model, version, artifact).await.map(|_| ()),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(%model, %version, error = %e.chain(), "the version did not go live");
        }
    }

    /// Rolls `version` out. The live version, if any, serves until the new one has taken
    /// over; on failure it goes on serving.
    async fn deploy(
        &self,
        model: &ModelName,
        version: VersionId,
        artifact: Artifact,
    ) -> Result<VersionRecord> {
        let lock = self
            .deploying
            .lock()
            .await
            .entry(model.clone())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        let events = self.events(model, version, Stage::Rollout);
        let previous = self.registry.live(model);
        self.registry.apply(
            model,
            version,
            Transition::to(
                VersionState::Deploying,
                Stage::Rollout,
                format!("rolling out {model} {version}"),
            ),
        )?;
        let target = Target {
            model: model.clone(),
            version,
            artifact,
        };
        match self.rollout.deploy(&target, &events).await {
            Ok(deployment) => {
                if let Some(previous) = previous.filter(|p| p.stored.version != version) {
                    let retired = Transition::to(
                        VersionState::Retired,
                        Stage::Rollout,
                        format!("replaced by {version}"),
                    );
                    let _ = self.registry.apply(model, previous.stored.version, retired);
                }
                self.default_if_unset(model);
                let live = Transition::to(
                    VersionState::Live,
                    Stage::Rollout,
                    format!("{model} {version} is live at {}", deployment.endpoint),
                );
                self.registry.apply(model, version, live)
            }
            Err(e) => {
                let serving = previous
                    .map(|p| format!("; {} keeps serving", p.stored.version))
                    .unwrap_or_default();
                let failed = Transition::failed(
                    Stage::Rollout,
                    format!("rollout failed: {}{serving}", e.chain()),
                );
                self.registry.apply(model, version, failed)?;
                Err(e)
            }
        }
    }

    /// Returns `model`'s traffic to the version that was live before the current one.
    pub async fn rollback(&self, model: &ModelName) -> Result<VersionRecord> {
        let versions = self.registry.versions(model)?;
        let current = versions
            .iter()
            .find(|r| r.state == VersionState::Live)
            .map(|r| r.stored.version);
        let previous = versions
            .iter()
            .filter(|r| r.state == VersionState::Retired && r.artifact.is_some())
            .max_by_key(|r| r.live_since_ms)
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "{model} has no earlier version that served to roll back to"
                ))
            })?;
        let (version, artifact) = (previous.stored.version, previous.artifact.clone());
        let artifact = artifact.ok_or_else(|| Error::Conflict("no artifact".into()))?;
        if let Some(current) = current {
            self.events(model, current, Stage::Rollout)
                .progress(format!("rolling back to {version}"));
        }
        self.deploy(model, version, artifact).await
    }

    /// Deletes a version that is not serving (or being built or rolled out).
    pub async fn delete(&self, model: &ModelName, version: VersionId) -> Result<()> {
        let record = self.registry.version(model, version)?;
        if !matches!(
            record.state,
            VersionState::Failed | VersionState::Retired | VersionState::Built
        ) {
            return Err(Error::Conflict(format!(
                "{model} {version} is {}: only failed, built or retired versions can be deleted",
                serde_json::to_value(record.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )));
        }
        if let Some(artifact) = &record.artifact {
            self.builder.remove(artifact).await?;
        }
        self.store.delete(model, version).await?;
        self.registry.remove(model, version)
    }

    /// Brings back the versions that were live before the api server restarted.
    pub async fn restore(&self) {
        for model in self.registry.models() {
            let Some(record) = self.registry.live(&model) else {
                continue;
            };
            let Some(artifact) = record.artifact.clone() else {
                continue;
            };
            let version = record.stored.version;
            let events = self.events(&model, version, Stage::Rollout);
            events.progress("api server restarted: bringing the live version back");
            let target = Target {
                model: model.clone(),
                version,
                artifact,
            };
            match self.rollout.resume(&target, &events).await {
                Ok(_) => self.default_if_unset(&model),
                Err(e) => events.error(format!(
                    "could not bring {model} {version} back: {}",
                    e.chain()
                )),
            }
        }
        if let Some(model) = &self.default_model {
            self.routes.set_default(Some(model.clone()));
        }
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
