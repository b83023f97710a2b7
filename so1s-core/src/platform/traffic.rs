//! A model's traffic split between its versions.

use super::{Platform, Reason};
use crate::events::Stage;
use crate::model::ModelName;
use crate::registry::VersionRecord;
use crate::rollout::{Arm, Split, Target};
use crate::{Error, Result};
use tokio::sync::OwnedMutexGuard;

impl Platform {
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

    /// [`Platform::set_traffic`] while holding `model`'s turn (the rollback of a crash loop
    /// holds it already).
    pub(super) async fn set_traffic_in_turn(
        &self,
        turn: &OwnedMutexGuard<()>,
        model: &ModelName,
        split: &Split,
    ) -> Result<Vec<VersionRecord>> {
        let mut arms = Vec::new();
        for &(version, weight) in split.arms() {
            let record = self.registry.version(model, version)?;
            let artifact = match (record.state, record.artifact) {
                (state, Some(artifact)) if state.can_serve() => artifact,
                (state, artifact) => {
                    return Err(Error::Conflict(format!(
                        "{model} {version} {}: only live, built, retired or superseded versions \
                         with their artifact can take traffic",
                        state.describe(artifact.is_some())
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
                self.awake_after_rollout(model);
                let records = self.registry.set_split(
                    model,
                    split,
                    format!("live in {model}'s traffic split"),
                )?;
                self.apply_retention(model).await;
                Ok(records)
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
}
