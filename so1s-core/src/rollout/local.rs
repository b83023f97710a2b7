//! [`LocalRollout`]: the rollout of the backends that run each version's instance next to the
//! api server (a child process, a container), over what differs between them: [`Instances`].
//!
//! The rollout owns what is the same for every such backend, once: starting the versions of a
//! split that do not run yet (and removing them again if one fails), switching the gateway's
//! [`Routes`] and draining the versions left out before they are stopped, each live
//! instance's [`Health`] and [`Incident`]s (with the crash-loop rule), scaling a model to zero
//! and waking it, undeploy and shutdown.
//! The backend starts, adopts, supervises and stops one instance.

use super::health::ExitHistory;
use super::{
    split_of, traffic, Arm, CrashLoopRule, Deployment, Health, HealthStatus, Incident, Incidents,
    ModelLocks, Rollout, Routes, Split, Target, Upstream,
};
use crate::events::Events;
use crate::model::{ModelName, VersionId};
use crate::Result;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Mutex};

/// What differs between the local backends: how one version's instance is started, adopted
/// after a restart of the api server, supervised while it is live, and stopped.
#[async_trait::async_trait]
pub trait Instances: Send + Sync + 'static {
    /// A running instance, as stopping it needs it (a child process, a container).
    type Instance: Send + 'static;

    /// Starts `target`'s instance and waits until it answers `/readyz` and a smoke
    /// prediction. Leaves nothing running when it fails.
    async fn start(&self, target: &Target, events: &Events) -> Result<Started<Self::Instance>>;

    /// The instance of `target` that outlived the previous api server, once it serves again,
    /// if there is one (leftovers of other versions go). The default: nothing outlives it.
    async fn adopt(
        &self,
        _target: &Target,
        _events: &Events,
    ) -> Result<Option<Started<Self::Instance>>> {
        Ok(None)
    }

    /// Watches a live instance until `stop` resolves: reports its exits, restarts and
    /// readiness checks to `watch`, and starts it again after an exit unless its engine does.
    /// Returns the instance that runs when the stop comes, if one does, for
    /// [`Instances::stop`].
    async fn supervise(
        &self,
        live: Started<Self::Instance>,
        watch: Watch,
        stop: oneshot::Receiver<()>,
    ) -> Option<Self::Instance>;

    /// Stops an instance that serves no traffic any more: asks it to finish the requests in
    /// flight, then ends it after the backend's grace period. Errors are logged: nothing is
    /// left to serve from it either way.
    async fn stop(&self, instance: Self::Instance);

    /// The api server is shutting down: stops `instance`, or leaves it serving for the next
    /// api server to [adopt](Instances::adopt).
    async fn shut_down(&self, instance: Self::Instance);
}

/// An instance that started (or was adopted) and serves.
#[derive(Debug)]
pub struct Started<I> {
    /// The backend's handle on it.
    pub instance: I,
    /// The base URL it answers on.
    pub endpoint: String,
    /// What [`Health`] calls it: `pid 4242`, a container's name.
    pub name: String,
}

/// Who starts an instance again after it exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Its supervision, after the crash-loop rule's backoff.
    AfterBackoff,
    /// Its engine (Docker's restart policy), with its own backoff.
    ByEngine,
}

/// Where the supervision of one live instance reports what happens to it; the rollout keeps
/// the version's [`Health`], reports [`Incident`]s, counts crash loops and points the
/// gateway at the instance's address.
pub struct Watch {
    target: Target,
    events: Events,
    incidents: Incidents,
    routes: Routes,
    history: ExitHistory,
    endpoint: String,
    restarted: bool,
}

impl Watch {
    /// The version the instance serves.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The events of the rollout that started the version (for starting it again).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The instance exited (or was killed for not answering) for `cause`; it is started again
    /// as `restart` says. Returns the wait before it is (zero when the engine restarts it).
    pub fn exited(&mut self, cause: &str, restart: Restart) -> Duration {
        let (model, version) = (&self.target.model, self.target.version);
        let (exits, looping) = self.history.record(Instant::now());
        let restart_in = match restart {
            Restart::AfterBackoff => self.history.rule().backoff(exits),
            Restart::ByEngine => Duration::ZERO,
        };
        // Requests wait for it (the gateway holds them) instead of reaching a dead address.
        self.routes.set_ready(model, version, false);
        self.incidents.update(model, version, |health| {
            health.restarts += 1;
            health.last_exit = Some(cause.to_owned());
            health.ready = false;
            health.status = match looping {
                true => HealthStatus::Unhealthy,
                false => HealthStatus::Restarting,
            };
            if let Some(instance) = health.instances.first_mut() {
                instance.ready = false;
                instance.restarts += 1;
                instance.problem = Some(cause.to_owned());
            }
        });
        self.incidents.report(Incident::Exited {
            model: model.clone(),
            version,
            cause: cause.to_owned(),
            restart_in,
        });
        if looping {
            self.incidents.report(Incident::CrashLoop {
                model: model.clone(),
                version,
                exits,
                window: self.history.window(),
                cause: cause.to_owned(),
            });
        }
        restart_in
    }

    /// The instance serves again after an exit, as `name` at `endpoint`: the gateway follows
    /// it there.
    pub fn ready_again(&mut self, endpoint: &str, name: &str) {
        let (model, version) = (&self.target.model, self.target.version);
        self.endpoint = endpoint.to_owned();
        self.restarted = true;
        self.routes.repoint(model, version, endpoint);
        self.routes.set_ready(model, version, true);
        self.incidents.update(model, version, |health| {
            // A crash loop stays reported until the version is replaced.
            if matches!(
                health.status,
                HealthStatus::Restarting | HealthStatus::Degraded
            ) {
                health.status = HealthStatus::Healthy;
            }
            health.ready = true;
            if let Some(instance) = health.instances.first_mut() {
                instance.name = name.to_owned();
                instance.ready = true;
            }
        });
        self.incidents.report(Incident::Restarted {
            model: model.clone(),
            version,
            endpoint: endpoint.to_owned(),
        });
    }

    /// Resolves when the gateway condemns the live instance: its answers timed out or were
    /// server errors too many times in a row. Never, if it is not routed. From then on its
    /// requests wait, until [`Watch::acquit`] or its restart.
    pub async fn condemned(&self) {
        let (model, version) = (&self.target.model, self.target.version);
        match self.routes.upstream_at(model, version, &self.endpoint) {
            Some(upstream) => upstream.condemned().await,
            None => std::future::pending().await,
        }
        self.routes.set_ready(model, version, false);
        self.checked(Some(
            "its answers timed out or failed at the gateway: being looked at",
        ));
    }

    /// A condemned instance still answers `/readyz`: it is slow (a burst of requests), not
    /// frozen, and is left running; its requests go to it again.
    pub fn acquit(&self) {
        let (model, version) = (&self.target.model, self.target.version);
        if let Some(upstream) = self.routes.upstream_at(model, version, &self.endpoint) {
            upstream.answered();
        }
        self.routes.set_ready(model, version, true);
        self.checked(None);
        tracing::warn!(
            %model, %version,
            "answers timed out at the gateway but /readyz answers: left running"
        );
    }

    /// A readiness check of the live instance found `problem`, or none.
    pub fn checked(&self, problem: Option<&str>) {
        let (model, version) = (&self.target.model, self.target.version);
        if problem.is_none() && self.restarted {
            // In case the restart raced a switch to this version.
            self.routes.repoint(model, version, &self.endpoint);
        }
        self.incidents.update(model, version, |health| {
            health.ready = problem.is_none();
            health.status = match (problem, health.status) {
                (None, HealthStatus::Restarting | HealthStatus::Degraded) => HealthStatus::Healthy,
                (Some(_), HealthStatus::Healthy) => HealthStatus::Degraded,
                (_, status) => status,
            };
            if let Some(instance) = health.instances.first_mut() {
                instance.ready = problem.is_none();
                instance.problem = problem.map(str::to_owned);
            }
        });
    }
}

/// A live instance under supervision; stopping it ends the supervision first.
pub struct Supervised<I> {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Option<I>>,
}

impl<I> Supervised<I> {
    /// Ends the supervision; hands back the instance that runs, if one does.
    async fn end(self) -> Option<I> {
        let _ = self.stop.send(());
        self.task.await.ok().flatten()
    }
}

/// A live version: its [`Deployment`] and its instance's supervision.
type Live<I> = (Deployment, Supervised<I>);

/// Runs each model version as an instance of `I` and switches [`Routes`] between them: blue
/// /green for one version, a weighted split for several.
pub struct LocalRollout<I: Instances> {
    instances: Arc<I>,
    /// For each model, one live instance per version of its split.
    live: Mutex<HashMap<ModelName, Vec<Live<I::Instance>>>>,
    /// The models scaled to zero: the versions of their split, to start when they wake.
    asleep: Mutex<HashMap<ModelName, Vec<Target>>>,
    locks: ModelLocks,
    incidents: Incidents,
    routes: Routes,
    drain_timeout: Duration,
    crash_loop: CrashLoopRule,
}

impl<I: Instances> LocalRollout<I> {
    /// A rollout of `instances` that switches `routes`, waits at most `drain_timeout` for the
    /// requests to a version left out, and counts crash loops by `crash_loop`.
    pub(crate) fn with(
        instances: I,
        routes: Routes,
        drain_timeout: Duration,
        crash_loop: CrashLoopRule,
    ) -> Self {
        Self {
            instances: Arc::new(instances),
            live: Mutex::new(HashMap::new()),
            asleep: Mutex::new(HashMap::new()),
            locks: ModelLocks::default(),
            incidents: Incidents::default(),
            routes,
            drain_timeout,
            crash_loop,
        }
    }

    /// The backend.
    #[cfg_attr(not(any(test, feature = "docker")), allow(dead_code))]
    pub(crate) fn instances(&self) -> &I {
        &self.instances
    }

    /// Serves `model` by the split of `arms`: starts (or, with `adopt`, first tries to adopt)
    /// each version that does not run yet, switches traffic, then drains and stops the
    /// versions left out. On failure the instances it started are stopped and nothing
    /// changes. A model scaled to zero is awake after it.
    async fn roll(
        &self,
        model: &ModelName,
        arms: &[Arm],
        adopt: bool,
        events: &Events,
    ) -> Result<Vec<Deployment>> {
        let split = split_of(arms)?;
        let _one_at_a_time = self.locks.lock(model).await;
        let deployments = self
            .roll_in_turn(model, &split, arms, adopt, events)
            .await?;
        self.asleep.lock().await.remove(model);
        Ok(deployments)
    }

    /// [`LocalRollout::roll`] in `model`'s turn.
    async fn roll_in_turn(
        &self,
        model: &ModelName,
        split: &Split,
        arms: &[Arm],
        adopt: bool,
        events: &Events,
    ) -> Result<Vec<Deployment>> {
        let mut started = Vec::new();
        for Arm { target, .. } in arms {
            if let Some(live) = self.running(model, target.version).await {
                if live.target == *target {
                    events.progress(format!("{model} {} is already live", target.version));
                    continue;
                }
            }
            match self.bring_up(target, adopt, events).await {
                Ok(instance) => started.push((target.clone(), instance)),
                Err(e) => {
                    for (_, instance) in started {
                        self.instances.stop(instance.instance).await;
                    }
                    return Err(e);
                }
            }
        }
        let started = started
            .into_iter()
            .map(|(target, instance)| self.supervise(target, instance, events))
            .collect();
        let (deployments, left_out) = self.place(model, split, started, events).await;
        for (old, supervised) in left_out {
            let version = old.target.version;
            if let Some(instance) = supervised.end().await {
                self.instances.stop(instance).await;
            }
            if split.weight(version).is_none() {
                self.incidents.forget(model, version);
            }
            events.progress(format!("stopped {version}"));
        }
        Ok(deployments)
    }

    /// The running instance of `model` `version`, if any, at the address its traffic goes to
    /// now (an instance that was started again may answer on another one).
    async fn running(&self, model: &ModelName, version: VersionId) -> Option<Deployment> {
        let mut deployment = self
            .live
            .lock()
            .await
            .get(model)?
            .iter()
            .find(|(deployment, _)| deployment.target.version == version)
            .map(|(deployment, _)| deployment.clone())?;
        if let Some(url) = self.routes.url(model, version) {
            deployment.endpoint = url;
        }
        Some(deployment)
    }

    /// Shares `model`'s traffic by `split` among its instances, the running ones and
    /// `started` (which replace running ones of their version), and drains the instances it
    /// leaves out. Returns the deployments of the split, in its order, and the instances left
    /// out, for the caller to stop.
    ///
    /// # Panics
    /// If a version of `split` neither runs nor is in `started`.
    async fn place(
        &self,
        model: &ModelName,
        split: &Split,
        started: Vec<Live<I::Instance>>,
        events: &Events,
    ) -> (Vec<Deployment>, Vec<Live<I::Instance>>) {
        let mut live = self.live.lock().await;
        let mut instances = live.remove(model).unwrap_or_default();
        let mut left_out = Vec::new();
        let fresh: Vec<(VersionId, String)> = started
            .iter()
            .map(|(d, _)| (d.target.version, d.endpoint.clone()))
            .collect();
        for instance in started {
            let version = instance.0.target.version;
            if let Some(at) = instances
                .iter()
                .position(|(d, _)| d.target.version == version)
            {
                left_out.push(instances.swap_remove(at));
            }
            instances.push(instance);
        }
        let (mut kept, out): (Vec<_>, Vec<_>) = instances
            .into_iter()
            .partition(|(d, _)| split.weight(d.target.version).is_some());
        left_out.extend(out);
        kept.sort_by_key(|(d, _)| d.target.version);
        // A started instance at its address; a running one where its route goes now (it may
        // have been started again on another port), or where it was deployed.
        let urls: Vec<(VersionId, Option<String>)> = split
            .versions()
            .map(|version| {
                let url = match fresh.iter().find(|(v, _)| *v == version) {
                    Some((_, url)) => Some(url.clone()),
                    None if self.routes.url(model, version).is_some() => None,
                    None => kept
                        .iter()
                        .find(|(d, _)| d.target.version == version)
                        .map(|(d, _)| d.endpoint.clone()),
                };
                (version, url)
            })
            .collect();
        let replaced = self.routes.set(model, split, |version| {
            urls.iter()
                .find(|(v, _)| *v == version)
                .and_then(|(_, url)| url.clone())
        });
        events.progress(match split.is_split() {
            true => format!("split {model} traffic: {}", split.describe()),
            false => format!("switched {model} traffic to {}", split.primary(&[])),
        });
        let deployments = kept.iter().map(|(d, _)| d.clone()).collect();
        live.insert(model.clone(), kept);
        drop(live);
        for upstream in replaced {
            drain(&upstream, self.drain_timeout, events).await;
        }
        (deployments, left_out)
    }

    /// The live deployment of `model` (its split's heaviest version), if any.
    async fn primary(&self, model: &ModelName) -> Option<Deployment> {
        let primary = self.routes.split(model)?.primary(&[]);
        self.running(model, primary).await
    }

    /// Adopts `target`'s instance if asked and there is one, starts it otherwise.
    async fn bring_up(
        &self,
        target: &Target,
        adopt: bool,
        events: &Events,
    ) -> Result<Started<I::Instance>> {
        if adopt {
            if let Some(adopted) = self.instances.adopt(target, events).await? {
                return Ok(adopted);
            }
        }
        let started = self.instances.start(target, events).await?;
        crate::fault::point("rollout-instance-started");
        Ok(started)
    }

    /// Puts a started instance under supervision, healthy to begin with.
    fn supervise(
        &self,
        target: Target,
        started: Started<I::Instance>,
        events: &Events,
    ) -> (Deployment, Supervised<I::Instance>) {
        self.incidents.set_health(
            &target.model,
            Health::started(target.version, started.name.as_str()),
        );
        let deployment = Deployment {
            target: target.clone(),
            endpoint: started.endpoint.clone(),
        };
        let watch = Watch {
            target,
            events: events.clone(),
            incidents: self.incidents.clone(),
            routes: self.routes.clone(),
            history: ExitHistory::new(self.crash_loop),
            endpoint: started.endpoint.clone(),
            restarted: false,
        };
        let (stop, stopped) = oneshot::channel();
        let instances = self.instances.clone();
        let task = tokio::spawn(async move { instances.supervise(started, watch, stopped).await });
        (deployment, Supervised { stop, task })
    }

    /// Serves `target` alone, adopting its instance if asked.
    async fn alone(&self, target: &Target, adopt: bool, events: &Events) -> Result<Deployment> {
        let arm = Arm {
            target: target.clone(),
            weight: traffic::TOTAL_WEIGHT,
        };
        let mut deployments = self.roll(&target.model, &[arm], adopt, events).await?;
        Ok(deployments.remove(0))
    }
}

#[async_trait::async_trait]
impl<I: Instances> Rollout for LocalRollout<I> {
    async fn deploy(&self, target: &Target, events: &Events) -> Result<Deployment> {
        self.alone(target, false, events).await
    }

    async fn split(
        &self,
        model: &ModelName,
        arms: &[Arm],
        events: &Events,
    ) -> Result<Vec<Deployment>> {
        self.roll(model, arms, false, events).await
    }

    async fn resume(&self, target: &Target, events: &Events) -> Result<Deployment> {
        self.alone(target, true, events).await
    }

    async fn status(&self, model: &ModelName) -> Option<Deployment> {
        self.primary(model).await
    }

    fn scales_to_zero(&self) -> bool {
        true
    }

    async fn scale_to_zero(&self, model: &ModelName, events: &Events) -> Result<bool> {
        let _one_at_a_time = self.locks.lock(model).await;
        // Parked first: from now on a request waits for the wake instead of reaching an
        // instance about to stop.
        let Some(upstreams) = self.routes.park(model) else {
            return Ok(false);
        };
        let instances = self.live.lock().await.remove(model).unwrap_or_default();
        for upstream in upstreams {
            drain(&upstream, self.drain_timeout, events).await;
        }
        let mut targets = Vec::new();
        for (deployment, supervised) in instances {
            if let Some(instance) = supervised.end().await {
                self.instances.stop(instance).await;
            }
            self.incidents.forget(model, deployment.target.version);
            targets.push(deployment.target);
        }
        self.asleep.lock().await.insert(model.clone(), targets);
        Ok(true)
    }

    async fn wake(&self, model: &ModelName, events: &Events) -> Result<bool> {
        let _one_at_a_time = self.locks.lock(model).await;
        let targets = match self.asleep.lock().await.get(model) {
            Some(targets) => targets.clone(),
            None => return Ok(false),
        };
        let Some(split) = self.routes.split(model) else {
            return Ok(false);
        };
        let arms: Vec<Arm> = targets
            .into_iter()
            .filter_map(|target| {
                let weight = split.weight(target.version)?;
                Some(Arm { target, weight })
            })
            .collect();
        self.roll_in_turn(model, &split, &arms, false, events)
            .await?;
        self.asleep.lock().await.remove(model);
        Ok(true)
    }

    async fn resume_scaled_to_zero(
        &self,
        model: &ModelName,
        arms: &[Arm],
        _events: &Events,
    ) -> Result<()> {
        let split = split_of(arms)?;
        let _one_at_a_time = self.locks.lock(model).await;
        self.routes.park_split(model, split);
        let targets = arms.iter().map(|arm| arm.target.clone()).collect();
        self.asleep.lock().await.insert(model.clone(), targets);
        Ok(())
    }

    async fn health(&self, model: &ModelName) -> Option<Health> {
        let live = self.primary(model).await?;
        self.incidents.health(model, live.target.version)
    }

    fn incidents(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Incident>> {
        self.incidents.take_receiver()
    }

    async fn undeploy(&self, model: &ModelName) -> Result<()> {
        let _one_at_a_time = self.locks.lock(model).await;
        self.asleep.lock().await.remove(model);
        let upstreams = self.routes.remove(model);
        let instances = self.live.lock().await.remove(model).unwrap_or_default();
        for upstream in upstreams {
            upstream.drained(self.drain_timeout).await;
        }
        for (old, supervised) in instances {
            if let Some(instance) = supervised.end().await {
                self.instances.stop(instance).await;
            }
            self.incidents.forget(model, old.target.version);
        }
        Ok(())
    }

    async fn shutdown(&self) {
        self.asleep.lock().await.clear();
        let live: Vec<_> = self.live.lock().await.drain().collect();
        for (model, _) in &live {
            self.routes.remove(model);
        }
        for (_, supervised) in live.into_iter().flat_map(|(_, instances)| instances) {
            if let Some(instance) = supervised.end().await {
                self.instances.shut_down(instance).await;
            }
        }
    }
}

/// Waits until the requests in flight to a replaced upstream have finished, at most `timeout`;
/// says so in `events` if some are still running when it gives up.
async fn drain(upstream: &Upstream, timeout: Duration, events: &Events) {
    let version = upstream.version;
    events.progress(format!("draining {version}"));
    if !upstream.drained(timeout).await {
        events.log(format!(
            "{} requests to {version} still running after {} s; stopping it anyway",
            upstream.in_flight(),
            timeout.as_secs()
        ));
    }
}

#[cfg(test)]
mod tests;
