//! Picking up after a restart: leftovers, the registry against the store, live versions and
//! interrupted pipelines.

use super::{Platform, Reason};
use crate::events::{Events, Stage};
use crate::model::ModelName;
use crate::registry::{Transition, VersionRecord, VersionState};
use crate::rollout::{Arm, Split, Target};
use crate::Result;
use std::sync::Arc;

impl Platform {
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

    /// Step 2 of [`Platform::recover`]: the registry reconciled with the store.
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
            let scale = self.registry.scale(&model);
            if scale.asleep && scale.idle_after_s > 0 {
                self.restore_scaled_to_zero(&model, &events).await;
                continue;
            }
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

    /// Takes up a model that was scaled to zero as such: nothing starts before its next
    /// request.
    async fn restore_scaled_to_zero(&self, model: &ModelName, events: &Events) {
        let Some(split) = self.registry.split(model) else {
            return;
        };
        let arms = self.arms_of(model, &split);
        events.progress("api server restarted: the model stays scaled to zero until a request");
        match self
            .rollout
            .resume_scaled_to_zero(model, &arms, events)
            .await
        {
            Ok(()) => self.default_if_unset(model),
            Err(e) => events.error(format!(
                "could not take {model} up scaled to zero: {}",
                e.chain()
            )),
        }
    }

    /// The arms of `split`: each version with its artifact and weight.
    fn arms_of(&self, model: &ModelName, split: &Split) -> Vec<Arm> {
        split
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
            .collect()
    }

    /// Starts the other versions of a split the live version was brought back with.
    async fn restore_split(&self, model: &ModelName, split: &Split, events: &Events) {
        let arms = self.arms_of(model, split);
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
                    platform.build_and_deploy(record.stored, None).await;
                }
            }
        });
    }
}
