//! [`FakeRollout`]: a [`Rollout`] that "runs" versions in no time, switching the gateway's
//! [`Routes`] as a real backend does, fails or holds the deploys a test asks for, and
//! reports the health and incidents the test scripts.

use super::record::{Calls, Gates};
use so1s_core::events::Events;
use so1s_core::model::{ModelName, VersionId};
use so1s_core::rollout::{
    split_of, Arm, Deployment, Health, Incident, Incidents, Rollout, Routes, Target,
};
use so1s_core::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc::UnboundedReceiver;

/// Where the fake says version `version` of `model` answers (nothing does).
pub fn fake_endpoint(model: &ModelName, version: VersionId) -> String {
    format!("http://{model}-{version}.fake.invalid")
}

/// Records, in order: `deploy M V` when a deploy starts, then `live M V` after its switch
/// (preceded by `stop M OLD` for the version it replaced) or `failed M V`; `resume M V`
/// for a resume (then the same as a deploy); `undeploy M`; `shutdown`.
#[derive(Default)]
pub struct FakeRollout {
    routes: Routes,
    incidents: Incidents,
    calls: Calls,
    gates: Gates,
    live: Mutex<HashMap<ModelName, Deployment>>,
    /// Deploys that fail, by `M V`, with the message.
    failing: Mutex<HashMap<String, String>>,
    /// Deploys that wait at the gate of their `M V` until released.
    held: Mutex<Vec<String>>,
}

impl FakeRollout {
    /// A rollout switching `routes`.
    pub fn new(routes: Routes) -> Self {
        Self {
            routes,
            ..Self::default()
        }
    }

    /// The calls so far.
    pub fn calls(&self) -> &Calls {
        &self.calls
    }

    /// Deploys of `model` `version` fail with `message` (before any switch).
    pub fn fail_deploy(&self, model: &str, version: &str, message: &str) {
        self.failing
            .lock()
            .unwrap()
            .insert(format!("{model} {version}"), message.to_owned());
    }

    /// Deploys of `model` `version` wait (after `deploy M V`) until [`Self::release`].
    pub fn hold_deploy(&self, model: &str, version: &str) {
        self.held.lock().unwrap().push(format!("{model} {version}"));
    }

    /// Lets one held deploy of `model` `version` go on.
    pub fn release(&self, model: &str, version: &str) {
        self.gates.release(&format!("{model} {version}"));
    }

    /// Reports an incident to the platform, as a backend's watcher does.
    pub fn report(&self, incident: Incident) {
        self.incidents.report(incident);
    }

    /// Changes what [`Rollout::health`] says of `model` (if about `version`).
    pub fn update_health(
        &self,
        model: &ModelName,
        version: VersionId,
        change: impl FnOnce(&mut Health),
    ) {
        self.incidents.update(model, version, change);
    }

    async fn start(&self, target: &Target, events: &Events) -> Result<Deployment> {
        let name = format!("{} {}", target.model, target.version);
        events.progress(format!("fake: starting {name}"));
        let held = self.held.lock().unwrap().contains(&name);
        if held {
            self.gates.pass(&name).await;
        }
        let failure = self.failing.lock().unwrap().get(&name).cloned();
        if let Some(message) = failure {
            self.calls.push(format!("failed {name}"));
            return Err(Error::Backend(message));
        }
        let endpoint = fake_endpoint(&target.model, target.version);
        let replaced = self
            .routes
            .switch(&target.model, target.version, endpoint.clone());
        for old in replaced.iter().filter(|old| old.version != target.version) {
            self.calls
                .push(format!("stop {} {}", target.model, old.version));
        }
        self.incidents.set_health(
            &target.model,
            Health::started(target.version, format!("fake {}", target.version)),
        );
        let deployment = Deployment {
            target: target.clone(),
            endpoint,
        };
        self.live
            .lock()
            .unwrap()
            .insert(target.model.clone(), deployment.clone());
        self.calls.push(format!("live {name}"));
        Ok(deployment)
    }
}

#[async_trait::async_trait]
impl Rollout for FakeRollout {
    async fn deploy(&self, target: &Target, events: &Events) -> Result<Deployment> {
        self.calls
            .push(format!("deploy {} {}", target.model, target.version));
        self.start(target, events).await
    }

    async fn resume(&self, target: &Target, events: &Events) -> Result<Deployment> {
        self.calls
            .push(format!("resume {} {}", target.model, target.version));
        self.start(target, events).await
    }

    async fn status(&self, model: &ModelName) -> Option<Deployment> {
        self.live.lock().unwrap().get(model).cloned()
    }

    async fn split(
        &self,
        model: &ModelName,
        arms: &[Arm],
        events: &Events,
    ) -> Result<Vec<Deployment>> {
        let split = split_of(arms)?;
        let pairs: Vec<String> = split
            .arms()
            .iter()
            .map(|(version, weight)| format!("{version}={weight}"))
            .collect();
        self.calls
            .push(format!("split {model} {}", pairs.join(" ")));
        for arm in arms {
            let name = format!("{model} {}", arm.target.version);
            events.progress(format!("fake: starting {name}"));
            let failure = self.failing.lock().unwrap().get(&name).cloned();
            if let Some(message) = failure {
                self.calls.push(format!("failed {name}"));
                return Err(Error::Backend(message));
            }
        }
        let replaced = self
            .routes
            .set(model, &split, |version| Some(fake_endpoint(model, version)));
        for old in replaced {
            self.calls.push(format!("stop {model} {}", old.version));
            self.incidents.forget(model, old.version);
        }
        let deployments: Vec<Deployment> = arms
            .iter()
            .map(|arm| Deployment {
                target: arm.target.clone(),
                endpoint: fake_endpoint(model, arm.target.version),
            })
            .collect();
        for deployment in &deployments {
            let version = deployment.target.version;
            if self.incidents.health(model, version).is_none() {
                let health = Health::started(version, format!("fake {version}"));
                self.incidents.set_health(model, health);
            }
        }
        let primary = split.primary(&[]);
        let live = deployments.iter().find(|d| d.target.version == primary);
        self.live
            .lock()
            .unwrap()
            .insert(model.clone(), live.cloned().expect("the primary is an arm"));
        self.calls.push(format!("live {model} {}", pairs.join(" ")));
        Ok(deployments)
    }

    async fn health(&self, model: &ModelName) -> Option<Health> {
        let version = self.live.lock().unwrap().get(model)?.target.version;
        self.incidents.health(model, version)
    }

    fn incidents(&self) -> Option<UnboundedReceiver<Incident>> {
        self.incidents.take_receiver()
    }

    async fn undeploy(&self, model: &ModelName) -> Result<()> {
        self.calls.push(format!("undeploy {model}"));
        if let Some(gone) = self.live.lock().unwrap().remove(model) {
            self.incidents.forget(model, gone.target.version);
        }
        self.routes.remove(model);
        Ok(())
    }

    async fn shutdown(&self) {
        self.calls.push("shutdown");
    }
}
