//! [`Rollout`]: putting a built artifact in front of traffic without dropping a request.
//!
//! A rollout starts the new version next to the old one, waits until it is ready and answers
//! a smoke prediction, switches the gateway's [`Routes`] to it, lets the requests in flight to
//! the old version finish, then stops the old version. If anything before the switch fails,
//! the new instance is removed and the old version keeps serving.

pub mod check;
#[cfg(feature = "docker")]
pub mod container;
#[cfg(feature = "docker")]
mod docker;
mod health;
#[cfg(feature = "kubernetes")]
mod kubernetes;
mod latency;
mod local;
mod process;
mod routes;
pub mod traffic;

#[cfg(feature = "docker")]
pub use container::DockerRolloutConfig;
#[cfg(feature = "docker")]
pub use docker::DockerRollout;
pub use health::{CrashLoopRule, Health, HealthStatus, Incident, Incidents};
#[cfg(feature = "kubernetes")]
pub use kubernetes::{KubeRollout, KubeRolloutConfig};
pub use latency::{AnswerTimeout, Latency};
pub use process::{ProcessRollout, ProcessRolloutConfig};
pub use routes::{InFlight, Pick, Routes, Unavailable, Upstream};
pub use traffic::Split;

use crate::build::Artifact;
use crate::events::Events;
use crate::model::{ModelName, VersionId};
use crate::Result;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// What to deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// The model.
    pub model: ModelName,
    /// The version.
    pub version: VersionId,
    /// Its artifact.
    pub artifact: Artifact,
}

/// A version that is live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// What was deployed.
    pub target: Target,
    /// Base URL of the predict server(s) serving it.
    pub endpoint: String,
}

/// A version to serve and its share (percent) of the model's requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    /// The version.
    pub target: Target,
    /// Its weight in the split.
    pub weight: u32,
}

/// The split `arms` make, checked.
pub fn split_of(arms: &[Arm]) -> Result<Split> {
    Split::new(arms.iter().map(|arm| (arm.target.version, arm.weight)))
}

/// Runs model versions and switches traffic between them.
#[async_trait::async_trait]
pub trait Rollout: Send + Sync {
    /// Deploys `target`: start, wait ready, smoke-test, switch traffic, drain and stop the
    /// previous version of the same model. On failure the previous version keeps serving.
    async fn deploy(&self, target: &Target, events: &Events) -> Result<Deployment>;

    /// Serves `model` from the versions of `arms` side by side, each taking its weight of the
    /// requests that name no version ([`Split`]): each is started (ready, smoke-tested) if it
    /// does not run yet, then traffic switches to the split at once, then the versions left
    /// out are drained and stopped. On failure nothing changes. Returns the arms' deployments,
    /// in version order.
    ///
    /// The default serves a single arm with [`Rollout::deploy`] and refuses a real split.
    async fn split(
        &self,
        model: &ModelName,
        arms: &[Arm],
        events: &Events,
    ) -> Result<Vec<Deployment>> {
        split_of(arms)?;
        match arms {
            [one] => Ok(vec![self.deploy(&one.target, events).await?]),
            _ => Err(crate::Error::Conflict(format!(
                "this backend cannot split {model}'s traffic between versions"
            ))),
        }
    }

    /// Brings a version that was live before a restart of the api server back: adopts it if
    /// it still runs, deploys it otherwise.
    async fn resume(&self, target: &Target, events: &Events) -> Result<Deployment> {
        self.deploy(target, events).await
    }

    /// The live deployment of `model`, if any (while a split is set: its heaviest version's).
    /// `None` while it is scaled to zero.
    async fn status(&self, model: &ModelName) -> Option<Deployment>;

    /// Whether [`Rollout::scale_to_zero`] can stop a model's instances.
    fn scales_to_zero(&self) -> bool {
        false
    }

    /// Scales `model` to zero: its routes are parked (requests to it wait for
    /// [`Rollout::wake`]), then every instance of its live versions is drained and stopped;
    /// the versions stay live. Returns whether it ran (`false`: nothing ran to stop).
    ///
    /// The default: this backend cannot scale to zero ([`Rollout::scales_to_zero`]).
    async fn scale_to_zero(&self, model: &ModelName, _events: &Events) -> Result<bool> {
        Err(crate::Error::Conflict(format!(
            "this backend cannot scale {model} to zero"
        )))
    }

    /// Starts the versions of `model` that [`Rollout::scale_to_zero`] stopped (each ready
    /// and smoke-tested, as in a rollout) and routes its traffic to them again, by the split
    /// it had. Returns whether it woke the model (`false`: it was not scaled to zero). On
    /// failure it stays scaled to zero.
    async fn wake(&self, _model: &ModelName, _events: &Events) -> Result<bool> {
        Ok(false)
    }

    /// Takes up `model`, scaled to zero when the api server stopped, as scaled to zero: its
    /// routes parked with the split of `arms`, nothing started until [`Rollout::wake`].
    ///
    /// The default brings its versions back as [`Rollout::resume`] and
    /// [`Rollout::split`] do.
    async fn resume_scaled_to_zero(
        &self,
        model: &ModelName,
        arms: &[Arm],
        events: &Events,
    ) -> Result<()> {
        match arms {
            [one] => self.resume(&one.target, events).await.map(|_| ()),
            _ => self.split(model, arms, events).await.map(|_| ()),
        }
    }

    /// How the live version of `model` is doing after its rollout: restarts, readiness,
    /// crash loops. `None` when the backend knows nothing more than [`Rollout::status`].
    async fn health(&self, _model: &ModelName) -> Option<Health> {
        None
    }

    /// What happens to live versions from now on (exits, restarts, crash loops), for the
    /// platform to record and act on. Given out once; `None` from backends that report none
    /// (Kubernetes restarts pods itself; its [`Rollout::health`] shows them).
    fn incidents(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Incident>> {
        None
    }

    /// Stops serving `model` altogether.
    async fn undeploy(&self, model: &ModelName) -> Result<()>;

    /// Stops every deployment (the api server is shutting down).
    async fn shutdown(&self);
}

/// One rollout per model at a time: deploys, resumes and undeploys of a model queue up.
#[derive(Debug, Default)]
pub struct ModelLocks {
    locks: std::sync::Mutex<HashMap<ModelName, Arc<Mutex<()>>>>,
}

impl ModelLocks {
    /// Waits for `model`'s turn; the turn lasts as long as the guard.
    pub async fn lock(&self, model: &ModelName) -> OwnedMutexGuard<()> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(model.clone())
            .or_default()
            .clone();
        lock.lock_owned().await
    }
}
