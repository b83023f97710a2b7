//! Rolling a version out in its model's turn: after an upload, a rollback or a promotion.

use super::{Platform, Reason};
use crate::build::Artifact;
use crate::events::Stage;
use crate::model::{ModelName, VersionId};
use crate::registry::{Transition, VersionRecord, VersionState};
use crate::rollout::{Split, Target};
use crate::{Error, Result};
use tokio::sync::OwnedMutexGuard;

impl Platform {
    /// Rolls `version` out, in `model`'s turn.
    pub(super) async fn deploy(
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
    pub(super) async fn deploy_in_turn(
        &self,
        _turn: &OwnedMutexGuard<()>,
        model: &ModelName,
        version: VersionId,
        artifact: Artifact,
        reason: Reason,
    ) -> Result<VersionRecord> {
        if reason == Reason::Upload {
            if let Some((state, why)) = self.held_back(model, version)? {
                let stays = Transition::to(state, Stage::Rollout, why);
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
                self.awake_after_rollout(model);
                let live = self.registry.go_live(
                    model,
                    version,
                    format!("{model} {version} is live at {}", deployment.endpoint),
                );
                crate::fault::point("live-recorded");
                if live.is_ok() {
                    self.apply_retention(model).await;
                }
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

    /// Why an upload's `version` does not go live, if it does not, and the state it stays
    /// in: `built` while a traffic split stands; `superseded` when a newer version overtook
    /// it (went live, or is built or being rolled out, first).
    fn held_back(
        &self,
        model: &ModelName,
        version: VersionId,
    ) -> Result<Option<(VersionState, String)>> {
        if let Some(split) = self.registry.split(model).filter(Split::is_split) {
            return Ok(Some((
                VersionState::Built,
                format!(
                    "{model}'s traffic is split ({}): {version} stays built (give it a share \
                     with a new split, or promote it)",
                    split.describe()
                ),
            )));
        }
        Ok(self.overtaken_by(model, version)?.map(|(newer, how)| {
            (
                VersionState::Superseded,
                format!(
                    "{newer} {how} first and is newer: {version} is superseded, not rolled out \
                     (promote it to roll it out)"
                ),
            )
        }))
    }

    /// The newest version of `model` after `version` that has gone live or is built or
    /// being rolled out, if any, and which of these.
    fn overtaken_by(
        &self,
        model: &ModelName,
        version: VersionId,
    ) -> Result<Option<(VersionId, &'static str)>> {
        Ok(self
            .registry
            .versions(model)?
            .iter()
            .filter(|r| r.stored.version > version)
            .filter_map(|r| {
                let how = match r.state {
                    _ if r.live_since_ms.is_some() => "went live",
                    VersionState::Built | VersionState::Deploying => "was built",
                    _ => return None,
                };
                Some((r.stored.version, how))
            })
            .max_by_key(|(newer, _)| *newer))
    }

    /// The version that served before the live one (retired, with an artifact) and its
    /// artifact, if any.
    pub(super) fn previous_good(&self, model: &ModelName) -> Result<Option<(VersionId, Artifact)>> {
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
            (state, Some(artifact)) if state.can_serve() => {
                self.deploy_in_turn(&turn, model, version, artifact.clone(), Reason::Asked)
                    .await
            }
            (state, artifact) => Err(Error::Conflict(format!(
                "{model} {version} {}: only built, retired or superseded versions with their \
                 artifact can be promoted",
                state.describe(artifact.is_some())
            ))),
        }
    }
}
