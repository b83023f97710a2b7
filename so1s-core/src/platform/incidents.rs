//! What the rollout reports about live versions: exits, restarts, crash loops (rolled back).

use super::{Platform, Reason};
use crate::events::{Event, EventKind, Stage};
use crate::model::{ModelName, VersionId};
use crate::registry::Transition;
use crate::rollout::{Incident, Split};
use crate::{Error, Result};

impl Platform {
    /// Records what happened to a live version, and hands traffic back to the previous good
    /// version when it crash-loops.
    pub(super) async fn on_incident(&self, incident: Incident) {
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

    /// Takes a crash-looping version out of traffic in `model`'s turn: out of the split, or
    /// back to the previous good version.
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
}
