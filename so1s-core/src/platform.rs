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

use crate::build::{Artifact, ImageBuilder};
use crate::events::{Event, EventKind, Events, Stage};
use crate::model::{ModelName, VersionId};
use crate::registry::{Registry, Transition, VersionRecord, VersionState};
use crate::rollout::{Arm, Health, Incident, ModelLocks, Rollout, Routes, Split, Target};
use crate::store::{ByteStream, ModelStore, StoredVersion};
use crate::{Error, Result};
use std::sync::{Arc, Weak};
use tokio::sync::{OwnedMutexGuard, Semaphore};

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
    /// One change of a model's traffic at a time.
    locks: ModelLocks,
}

impl Platform {
    /// A platform over the given backends. `routes` must be the table `rollout` switches.
    ///
    /// Within a Tokio runtime it also starts following the rollout's [`Incident`]s.
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
            locks: ModelLocks::default(),
        });
        if let (Some(mut incidents), Ok(runtime)) =
            (incidents, tokio::runtime::Handle::try_current())
        {
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
        crate::fault::point("upload-stored");
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
        crate::fault::point("build-started");
        let built = match self.store.archive(&model, version).await {
            Ok(archive) => self.builder.build(&stored, &archive, &events).await,
            Err(e) => Err(e),
        };
        crate::fault::point("build-finished");
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
        crate::fault::point("built-recorded");
        let result = match recorded {
            Ok(Some(artifact)) => self
                .deploy(&model, version, artifact, Reason::Upload)
                .await
                .map(|_| ()),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(%model, %version, error = %e.chain(), "the version did not go live");
        }
    }

    /// Rolls `version` out, in `model`'s turn.
    async fn deploy(
        &self,
        model: &ModelName,
        version: VersionId,
        artifact: Artifact,
        reason: Reason,
    ) -> Result<VersionRecord> {
        let turn = self.locks.lock(model).await;
        self.deploy_in_turn(&turn, model, version, artifact, reason)
            .await
    }

    /// Rolls `version` out while holding `model`'s turn. The live version, if any, serves
    /// until the new one has taken over; on failure it goes on serving.
    async fn deploy_in_turn(
        &self,
        _turn: &OwnedMutexGuard<()>,
        model: &ModelName,
        version: VersionId,
        artifact: Artifact,
        reason: Reason,
    ) -> Result<VersionRecord> {
        if reason == Reason::Upload {
            if let Some(why) = self.stays_built(model, version)? {
                let stays = Transition::to(VersionState::Built, Stage::Rollout, why);
                return self.registry.apply(model, version, stays);
            }
        }
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
        crate::fault::point("deploy-started");
        let target = Target {
            model: model.clone(),
            version,
            artifact,
        };
        match self.rollout.deploy(&target, &events).await {
            Ok(deployment) => {
                crate::fault::point("deploy-switched");
                self.default_if_unset(model);
                let live = self.registry.go_live(
                    model,
                    version,
                    format!("{model} {version} is live at {}", deployment.endpoint),
                );
                crate::fault::point("live-recorded");
                live
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

    /// Why an upload's `version` does not go live, if it does not: a traffic split stands, or
    /// a newer version went live first.
    fn stays_built(&self, model: &ModelName, version: VersionId) -> Result<Option<String>> {
        if let Some(split) = self.registry.split(model).filter(Split::is_split) {
            return Ok(Some(format!(
                "{model}'s traffic is split ({}): {version} stays built (give it a share with \
                 a new split, or promote it)",
                split.describe()
            )));
        }
        Ok(self.newer_live(model, version)?.map(|newer| {
            format!(
                "{newer} went live first and is newer: {version} stays built (promote it to \
                 roll it out)"
            )
        }))
    }

    /// The newest version of `model` after `version` that has gone live, if any.
    fn newer_live(&self, model: &ModelName, version: VersionId) -> Result<Option<VersionId>> {
        Ok(self
            .registry
            .versions(model)?
            .iter()
            .filter(|r| r.stored.version > version && r.live_since_ms.is_some())
            .map(|r| r.stored.version)
            .max())
    }

    /// The version that served before the live one (retired, with an artifact) and its
    /// artifact, if any.
    fn previous_good(&self, model: &ModelName) -> Result<Option<(VersionId, Artifact)>> {
        Ok(self
            .registry
            .versions(model)?
            .into_iter()
            .filter(|r| r.state == VersionState::Retired)
            .filter_map(|r| Some((r.live_since_ms, r.stored.version, r.artifact?)))
            .max_by_key(|(live_since, _, _)| *live_since)
            .map(|(_, version, artifact)| (version, artifact)))
    }

    /// Returns `model`'s traffic to the version that was live before the current one.
    pub async fn rollback(&self, model: &ModelName) -> Result<VersionRecord> {
        let turn = self.locks.lock(model).await;
        let (version, artifact) = self.previous_good(model)?.ok_or_else(|| {
            Error::Conflict(format!(
                "{model} has no earlier version that served to roll back to"
            ))
        })?;
        if let Some(current) = self.registry.live(model) {
            self.events(model, current.stored.version, Stage::Rollout)
                .progress(format!("rolling back to {version}"));
        }
        self.deploy_in_turn(&turn, model, version, artifact, Reason::Asked)
            .await
    }

    /// Rolls out a version that is built or served before (`built`, `retired`), whatever
    /// is live now; or, while a split is set, gives all requests to one of its versions and
    /// stops the others.
    pub async fn promote(&self, model: &ModelName, version: VersionId) -> Result<VersionRecord> {
        let turn = self.locks.lock(model).await;
        let record = self.registry.version(model, version)?;
        let split = self.registry.split(model).filter(Split::is_split);
        match (&record.state, &record.artifact) {
            (VersionState::Live, _) if split.is_none() => Ok(record),
            (VersionState::Live | VersionState::Built | VersionState::Retired, Some(artifact)) => {
                self.deploy_in_turn(&turn, model, version, artifact.clone(), Reason::Asked)
                    .await
            }
            (state, _) => Err(Error::Conflict(format!(
                "{model} {version} is {state}: only built or retired versions can be promoted"
            ))),
        }
    }

    /// How `model`'s requests are shared among its live versions; `None` if none is live.
    pub fn traffic(&self, model: &ModelName) -> Result<Option<Split>> {
        self.registry.versions(model)?;
        Ok(self.registry.split(model))
    }

    /// Shares `model`'s requests among the versions of `split`: each must be built (`live`,
    /// `built` or `retired`); each is started if it does not run, then the gateway routes by
    /// the weights, then the live versions left out are stopped and retired. A split of one
    /// version is a promotion. On failure the traffic stays as it was.
    pub async fn set_traffic(
        &self,
        model: &ModelName,
        split: &Split,
    ) -> Result<Vec<VersionRecord>> {
        let turn = self.locks.lock(model).await;
        self.set_traffic_in_turn(&turn, model, split).await
    }

    async fn set_traffic_in_turn(
        &self,
        turn: &OwnedMutexGuard<()>,
        model: &ModelName,
        split: &Split,
    ) -> Result<Vec<VersionRecord>> {
        let mut arms = Vec::new();
        for &(version, weight) in split.arms() {
            let record = self.registry.version(model, version)?;
            let artifact = match (record.state, record.artifact) {
                (
                    VersionState::Live | VersionState::Built | VersionState::Retired,
                    Some(artifact),
                ) => artifact,
                (state, _) => {
                    return Err(Error::Conflict(format!(
                        "{model} {version} is {state}: only live, built or retired versions \
                         can take traffic"
                    )))
                }
            };
            let target = Target {
                model: model.clone(),
                version,
                artifact,
            };
            arms.push(Arm { target, weight });
        }
        if let [one] = arms.as_slice() {
            let (version, artifact) = (one.target.version, one.target.artifact.clone());
            let record = self
                .deploy_in_turn(turn, model, version, artifact, Reason::Asked)
                .await?;
            return Ok(vec![record]);
        }
        let before = self.registry.split(model);
        let events = self.events(model, split.primary(&[]), Stage::Rollout);
        events.progress(format!("splitting {model} traffic: {}", split.describe()));
        match self.rollout.split(model, &arms, &events).await {
            Ok(_) => {
                self.default_if_unset(model);
                self.registry
                    .set_split(model, split, format!("live in {model}'s traffic split"))
            }
            Err(e) => {
                let serving = before
                    .map(|b| format!("; traffic stays {}", b.describe()))
                    .unwrap_or_default();
                events.error(format!("traffic split failed: {}{serving}", e.chain()));
                Err(e)
            }
        }
    }

    /// Deletes a version that is not serving (or being built or rolled out).
    pub async fn delete(&self, model: &ModelName, version: VersionId) -> Result<()> {
        let _turn = self.locks.lock(model).await;
        let record = self.registry.version(model, version)?;
        if !matches!(
            record.state,
            VersionState::Failed | VersionState::Retired | VersionState::Built
        ) {
            return Err(Error::Conflict(format!(
                "{model} {version} is {}: only failed, built or retired versions can be deleted",
                record.state
            )));
        }
        if let Some(artifact) = &record.artifact {
            self.builder.remove(artifact).await?;
        }
        self.store.delete(model, version).await?;
        crate::fault::point("delete-files-removed");
        self.registry.remove(model, version)
    }

    /// Picks up where the api server left off when it stopped (or crashed):
    ///
    /// 1. removes what interrupted builds left behind;
    /// 2. reconciles the registry with the store: a version stored but never recorded is
    ///    recorded (and built); a version whose files are gone (a delete was interrupted) is
    ///    forgotten;
    /// 3. brings the live version of each model back (adopted or started again);
    /// 4. takes up every version caught in the middle of its pipeline: `stored` and
    ///    `building` are built again, `built` and `deploying` rolled out again (newest wins,
    ///    as for any upload). A version that cannot be taken up is failed with the reason.
    pub async fn recover(self: &Arc<Self>) {
        match self.builder.clean_up().await {
            Ok(0) => {}
            Ok(n) => tracing::info!("removed {n} leftovers of interrupted builds"),
            Err(e) => tracing::warn!(error = %e.chain(), "could not clean up interrupted builds"),
        }
        if let Err(e) = self.reconcile().await {
            tracing::error!(error = %e.chain(), "could not reconcile the registry with the store");
        }
        self.restore_live().await;
        let unsettled = self
            .registry
            .in_states(&[
                VersionState::Stored,
                VersionState::Building,
                VersionState::Built,
                VersionState::Deploying,
            ])
            .unwrap_or_else(|e| {
                tracing::error!(error = %e.chain(), "could not read the registry");
                Vec::new()
            });
        for record in unsettled {
            self.resume(record);
        }
    }

    async fn reconcile(&self) -> Result<()> {
        let mut models = self.store.models().await?;
        for model in self.registry.models() {
            if !models.contains(&model) {
                models.push(model);
            }
        }
        for model in models {
            let stored = self.store.versions(&model).await?;
            let recorded = self.registry.versions(&model).unwrap_or_default();
            for version in &stored {
                if !recorded.iter().any(|r| r.stored.version == version.version) {
                    self.registry.add(version.clone())?;
                    self.events(&model, version.version, Stage::Upload)
                        .progress(format!(
                            "stored {model} {} ({} bytes, sha256 {}); recorded after a restart",
                            version.version, version.size, version.sha256
                        ));
                }
            }
            for record in recorded {
                if !stored.iter().any(|s| s.version == record.stored.version) {
                    tracing::info!(
                        %model, version = %record.stored.version,
                        "forgetting a version whose files were deleted before a restart"
                    );
                    if let Some(artifact) = &record.artifact {
                        let _ = self.builder.remove(artifact).await;
                    }
                    self.registry.remove(&model, record.stored.version)?;
                }
            }
        }
        Ok(())
    }

    /// Brings back the versions that were live before the api server restarted.
    async fn restore_live(&self) {
        for model in self.registry.models() {
            let Some(record) = self.registry.live(&model) else {
                continue;
            };
            let Some(artifact) = record.artifact.clone() else {
                continue;
            };
            let _turn = self.locks.lock(&model).await;
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
            if let Some(split) = self.registry.split(&model).filter(Split::is_split) {
                self.restore_split(&model, &split, &events).await;
            }
        }
        if let Some(model) = &self.default_model {
            self.routes.set_default(Some(model.clone()));
        }
    }

    /// Starts the other versions of a split the live version was brought back with.
    async fn restore_split(&self, model: &ModelName, split: &Split, events: &Events) {
        let arms: Vec<Arm> = split
            .arms()
            .iter()
            .filter_map(|&(version, weight)| {
                let artifact = self.registry.version(model, version).ok()?.artifact?;
                let target = Target {
                    model: model.clone(),
                    version,
                    artifact,
                };
                Some(Arm { target, weight })
            })
            .collect();
        events.progress(format!(
            "bringing the traffic split back: {}",
            split.describe()
        ));
        if let Err(e) = self.rollout.split(model, &arms, events).await {
            events.error(format!(
                "could not bring the traffic split back ({}): {}",
                split.describe(),
                e.chain()
            ));
        }
    }

    /// Takes up a version a restart interrupted, in the background.
    fn resume(self: &Arc<Self>, record: VersionRecord) {
        let platform = self.clone();
        let (model, version) = (record.stored.model.clone(), record.stored.version);
        let events = self.events(&model, version, Stage::Build);
        tokio::spawn(async move {
            match (record.state, record.artifact) {
                (VersionState::Built | VersionState::Deploying, Some(artifact)) => {
                    events.progress(format!(
                        "interrupted by a restart while {}: rolling out again",
                        record.state
                    ));
                    if let Err(e) = platform
                        .deploy(&model, version, artifact, Reason::Upload)
                        .await
                    {
                        tracing::warn!(%model, %version, error = %e.chain(), "not live after a restart");
                    }
                }
                (state, _) => {
                    events.progress(format!(
                        "interrupted by a restart while {state}: building again"
                    ));
                    if platform.store.version(&model, version).await.is_err() {
                        let failed = Transition::failed(
                            Stage::Build,
                            "interrupted by a restart, and its archive is gone",
                        );
                        let _ = platform.registry.apply(&model, version, failed);
                        return;
                    }
                    platform.build_and_deploy(record.stored).await;
                }
            }
        });
    }

    /// Records what happened to a live version, and hands traffic back to the previous good
    /// version when it crash-loops.
    async fn on_incident(&self, incident: Incident) {
        match incident {
            Incident::Exited {
                model,
                version,
                cause,
                restart_in,
            } => {
                let event = Event::now(
                    Stage::Rollout,
                    EventKind::Error,
                    format!(
                        "{model} {version} {cause}; starting it again in {} ms",
                        restart_in.as_millis()
                    ),
                );
                if let Err(e) = self.registry.record_exit(&model, version, &cause, event) {
                    tracing::warn!(error = %e.chain(), "could not record an exit");
                }
            }
            Incident::Restarted {
                model,
                version,
                endpoint,
            } => self
                .events(&model, version, Stage::Rollout)
                .progress(format!("{model} {version} serves again at {endpoint}")),
            Incident::CrashLoop {
                model,
                version,
                exits,
                window,
                cause,
            } => {
                let why = format!(
                    "unhealthy: exited {exits} times within {} s (last: {cause})",
                    window.as_secs()
                );
                if let Err(e) = self.roll_back_crash_loop(&model, version, &why).await {
                    self.events(&model, version, Stage::Rollout)
                        .error(format!("{why}; {}", e.chain()));
                }
            }
        }
    }

    async fn roll_back_crash_loop(
        &self,
        model: &ModelName,
        version: VersionId,
        why: &str,
    ) -> Result<()> {
        let turn = self.locks.lock(model).await;
        if let Some(split) = self.registry.split(model).filter(Split::is_split) {
            let Some(rest) = split
                .without(version)
                .filter(|_| split.weight(version).is_some())
            else {
                return Ok(()); // taken out meanwhile
            };
            self.events(model, version, Stage::Rollout).error(format!(
                "{why}: taking it out of the traffic split ({} from now on)",
                rest.describe()
            ));
            self.set_traffic_in_turn(&turn, model, &rest).await?;
            self.registry.apply(
                model,
                version,
                Transition::failed(Stage::Rollout, format!("{why}; taken out of the split")),
            )?;
            return Ok(());
        }
        if self.registry.live(model).map(|r| r.stored.version) != Some(version) {
            return Ok(()); // replaced meanwhile
        }
        let Some((to, artifact)) = self.previous_good(model)? else {
            return Err(Error::Conflict(format!(
                "there is no earlier version to hand traffic to: {version} keeps being restarted"
            )));
        };
        let events = self.events(model, version, Stage::Rollout);
        events.error(format!("{why}: rolling back to {to}"));
        self.events(model, to, Stage::Rollout).progress(format!(
            "taking traffic back from {version}, which is unhealthy"
        ));
        self.deploy_in_turn(&turn, model, to, artifact, Reason::Asked)
            .await?;
        self.registry.apply(
            model,
            version,
            Transition::failed(Stage::Rollout, format!("{why}; rolled back to {to}")),
        )?;
        Ok(())
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
