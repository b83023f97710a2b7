//! [`KubeRollout`]: each model is a Deployment (rolling updates that never go below the
//! wanted replicas) behind a Service and an Ingress, applied server-side with the field
//! manager `so1s`.
//!
//! A deploy applies the model's Deployment for the new image, then its Service and Ingresses
//! (predict, and the Open Inference Protocol's `/v2/models/{name}`) and, when autoscaling is
//! configured, its HorizontalPodAutoscaler, all owned by the Deployment; then it follows the
//! rollout until Kubernetes reports it complete.
//! It fails early when the new pods cannot pull their image or crash, and at the
//! Deployment's `progressDeadlineSeconds` when they never become ready; then it applies the
//! previous version's template again (Kubernetes rolls back to it) and says why. Applying the
//! version that already runs, unchanged and complete, sends nothing.
//!
//! A split of two versions keeps the main Deployment and adds a canary beside it
//! (`so1s-{name}-canary`: Deployment, Service, and an nginx canary Ingress carrying the
//! canary's weight); a deploy of one version afterwards removes the canary.

use super::health::Instance;
use super::{split_of, Arm, Deployment, Health, HealthStatus, ModelLocks, Rollout, Routes, Target};
use crate::build::image::{LABEL_MODEL, LABEL_VERSION};
use crate::build::Artifact;
use crate::events::Events;
use crate::kubernetes::api_error;
use crate::kubernetes::manifests::{
    self, ClusterSettings, Track, ANNOTATION_IMAGE, ANNOTATION_SPEC_HASH, ANNOTATION_VERSION,
    FIELD_MANAGER,
};
use crate::kubernetes::pods::{problems as pod_problems, PodProblem, Problem};
use crate::model::{ModelName, VersionId};
use crate::{Error, Result};
use k8s_openapi::api::apps::v1::Deployment as KubeDeployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::wait::{conditions, Condition};
use kube::Client;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

mod scale;

/// How the Kubernetes rollout works.
#[derive(Debug, Clone)]
pub struct KubeRolloutConfig {
    /// Namespace, ingress, replicas, resources, deadline.
    pub cluster: ClusterSettings,
    /// How often the Deployment and its pods are read while a rollout runs.
    pub poll_interval: Duration,
}

impl KubeRolloutConfig {
    /// Defaults around `cluster`: a read every second.
    pub fn new(cluster: ClusterSettings) -> Self {
        Self {
            cluster,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Rolls model versions out as Kubernetes Deployments.
pub struct KubeRollout {
    client: Client,
    config: KubeRolloutConfig,
    routes: Routes,
    live: Mutex<HashMap<ModelName, Deployment>>,
    /// The models scaled to zero: the version to bring back.
    asleep: Mutex<HashMap<ModelName, Target>>,
    locks: ModelLocks,
}

/// The health of a live version from its pods: each pod's readiness, restarts (the
/// Deployment restarts crashed pods itself) and what is wrong with it.
fn pods_health(version: VersionId, pods: &[Pod]) -> Health {
    let mut last_exit = None;
    let instances: Vec<Instance> = pods
        .iter()
        .map(|pod| {
            let status = pod.status.as_ref();
            let containers = status
                .and_then(|s| s.container_statuses.as_deref())
                .unwrap_or_default();
            let ready = status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let problems = pod_problems(pod);
            for problem in &problems {
                if let Problem::LastExit {
                    reason, exit_code, ..
                } = &problem.problem
                {
                    last_exit = Some(format!("exited with code {exit_code} ({reason})"));
                }
            }
            Instance {
                name: pod.metadata.name.clone().unwrap_or_default(),
                ready,
                restarts: containers
                    .iter()
                    .map(|c| c.restart_count.max(0) as u32)
                    .sum(),
                problem: problems.first().map(ToString::to_string),
            }
        })
        .collect();
    let ready = instances.iter().filter(|i| i.ready).count();
    let status = match ready {
        0 => HealthStatus::Unhealthy,
        n if n < instances.len() => HealthStatus::Degraded,
        _ => HealthStatus::Healthy,
    };
    Health {
        version,
        status,
        ready: ready > 0,
        restarts: instances.iter().map(|i| i.restarts).sum(),
        last_exit,
        instances,
        checked_at_ms: crate::clock::now_ms(),
    }
}

/// How far a Deployment's rollout is.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Running,
    Complete,
    /// Kubernetes gave up: the message of its `Progressing` condition.
    DeadlineExceeded(String),
}

fn progress(deployment: &KubeDeployment) -> Progress {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = deployment.status.as_ref() else {
        return Progress::Running;
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Running;
    }
    let progressing = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing");
    if let Some(c) = progressing {
        if c.status == "False" && c.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Progress::DeadlineExceeded(c.message.clone().unwrap_or_default());
        }
    }
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let all_new = status.updated_replicas.unwrap_or(0) >= wanted
        && status.available_replicas.unwrap_or(0) >= wanted
        && status.replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0);
    if all_new && conditions::is_deployment_completed().matches_object(Some(deployment)) {
        Progress::Complete
    } else {
        Progress::Running
    }
}

impl KubeRollout {
    /// A rollout through `client` that points the gateway's `routes` at each model's Service.
    pub fn new(client: Client, config: KubeRolloutConfig, routes: Routes) -> Self {
        Self {
            client,
            config,
            routes,
            live: Mutex::new(HashMap::new()),
            asleep: Mutex::new(HashMap::new()),
            locks: ModelLocks::default(),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.config.cluster.namespace)
    }

    /// Applies the model's Deployment, Service and Ingress for `version` running `image`.
    async fn apply(&self, model: &ModelName, version: VersionId, image: &str) -> Result<i64> {
        let settings = &self.config.cluster;
        let name = manifests::model_object_name(model);
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let desired = manifests::deployment(settings, model, version, image)?;
        let applied = self
            .api::<KubeDeployment>()
            .patch(&name, &apply, &Patch::Apply(&desired))
            .await
            .map_err(|e| api_error(&format!("applying Deployment {name}"), e))?;
        let owner = manifests::owned_by(&applied);
        let service = manifests::service(settings, model, owner.as_ref());
        self.api::<Service>()
            .patch(&name, &apply, &Patch::Apply(&service))
            .await
            .map_err(|e| api_error(&format!("applying Service {name}"), e))?;
        let ingress = manifests::ingress(settings, model, owner.as_ref());
        self.api::<Ingress>()
            .patch(&name, &apply, &Patch::Apply(&ingress))
            .await
            .map_err(|e| api_error(&format!("applying Ingress {name}"), e))?;
        let oip = manifests::oip_ingress(settings, model, owner.as_ref());
        let oip_name = manifests::oip_ingress_name(model);
        self.api::<Ingress>()
            .patch(&oip_name, &apply, &Patch::Apply(&oip))
            .await
            .map_err(|e| api_error(&format!("applying Ingress {oip_name}"), e))?;
        if let Some(autoscale) = &settings.autoscale {
            let hpa = manifests::autoscaler(settings, model, autoscale, owner.as_ref());
            self.api::<HorizontalPodAutoscaler>()
                .patch(&name, &apply, &Patch::Apply(&hpa))
                .await
                .map_err(|e| api_error(&format!("applying HorizontalPodAutoscaler {name}"), e))?;
        }
        Ok(applied.metadata.generation.unwrap_or(0))
    }

    /// Runs `target` as the canary of a split, with `weight` percent of the Ingress's requests:
    /// applies its Deployment (unless it runs that already) and follows it until complete,
    /// then its Service and the nginx canary Ingress. If it cannot complete, the canary's
    /// Deployment is removed again and the main one keeps all traffic.
    async fn apply_canary(&self, target: &Target, weight: u32, events: &Events) -> Result<()> {
        let settings = &self.config.cluster;
        let (model, version) = (&target.model, target.version);
        let image = image_of(target)?;
        let name = Track::Canary.object_name(model);
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let deployments = self.api::<KubeDeployment>();
        let current = deployments
            .get_opt(&name)
            .await
            .map_err(|e| api_error(&format!("reading Deployment {name}"), e))?;
        let desired = manifests::deployment_on(Track::Canary, settings, model, version, image)?;
        let live = match current {
            Some(current)
                if same_spec(&current, &desired) && progress(&current) == Progress::Complete =>
            {
                current
            }
            _ => {
                events.progress(format!(
                    "applying the canary Deployment {name} for {version} ({image})"
                ));
                let applied = deployments
                    .patch(&name, &apply, &Patch::Apply(&desired))
                    .await
                    .map_err(|e| api_error(&format!("applying Deployment {name}"), e))?;
                if let Err(e) = self.wait(Track::Canary, model, version, events).await {
                    events.progress(format!("removing the canary Deployment {name}"));
                    let _ = deployments.delete(&name, &DeleteParams::background()).await;
                    return Err(e);
                }
                applied
            }
        };
        let owner = manifests::owned_by(&live);
        let service = manifests::service_on(Track::Canary, settings, model, owner.as_ref());
        self.api::<Service>()
            .patch(&name, &apply, &Patch::Apply(&service))
            .await
            .map_err(|e| api_error(&format!("applying Service {name}"), e))?;
        let ingress = manifests::canary_ingress(settings, model, weight, owner.as_ref());
        self.api::<Ingress>()
            .patch(&name, &apply, &Patch::Apply(&ingress))
            .await
            .map_err(|e| api_error(&format!("applying Ingress {name}"), e))?;
        events.progress(format!(
            "canary Ingress {name}: {weight}% of the requests to {version}"
        ));
        Ok(())
    }

    /// Removes a split's canary: first its Ingress (traffic leaves it), then its Service and
    /// Deployment.
    async fn remove_canary(&self, model: &ModelName, events: &Events) -> Result<()> {
        let name = Track::Canary.object_name(model);
        let gone = |result: kube::Result<_>, what: &str| match result {
            Ok(_) => Ok(()),
            Err(e) if crate::kubernetes::status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(api_error(&format!("deleting {what} {name}"), e)),
        };
        let background = DeleteParams::background();
        gone(
            self.api::<Ingress>()
                .delete(&name, &background)
                .await
                .map(|_| ()),
            "Ingress",
        )?;
        gone(
            self.api::<Service>()
                .delete(&name, &background)
                .await
                .map(|_| ()),
            "Service",
        )?;
        gone(
            self.api::<KubeDeployment>()
                .delete(&name, &background)
                .await
                .map(|_| ()),
            "Deployment",
        )?;
        events.progress(format!("removed the canary {name}"));
        Ok(())
    }

    /// The pods of one version of a model.
    async fn pods(&self, model: &ModelName, version: VersionId) -> Result<Vec<Pod>> {
        let selector = format!("{LABEL_MODEL}={model},{LABEL_VERSION}={version}");
        self.api::<Pod>()
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|list| list.items)
            .map_err(|e| api_error("listing the rollout's pods", e))
    }

    /// Follows the rollout of `version` on `track` until complete; fails with the reason when
    /// it cannot complete.
    async fn wait(
        &self,
        track: Track,
        model: &ModelName,
        version: VersionId,
        events: &Events,
    ) -> Result<()> {
        let name = track.object_name(model);
        // Kubernetes decides at the progress deadline; the margin covers its reporting.
        let deadline =
            Instant::now() + self.config.cluster.progress_deadline + Duration::from_secs(60);
        let mut reported = Vec::new();
        loop {
            let deployment = self
                .api::<KubeDeployment>()
                .get(&name)
                .await
                .map_err(|e| api_error(&format!("reading Deployment {name}"), e))?;
            // Why the version's pods cannot serve, as far as their status says.
            let problems: Vec<PodProblem> = self
                .pods(model, version)
                .await?
                .iter()
                .flat_map(pod_problems)
                .collect();
            for problem in &problems {
                if !reported.contains(problem) {
                    events.log(problem.to_string());
                    reported.push(problem.clone());
                }
            }
            match progress(&deployment) {
                Progress::Complete => return Ok(()),
                Progress::DeadlineExceeded(message) => {
                    let why = if problems.is_empty() {
                        "the new pods never became ready".to_owned()
                    } else {
                        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
                        texts.join("; ")
                    };
                    return Err(Error::Load(format!(
                        "rollout of {model} {version} did not complete within {} s ({message}): {why}",
                        self.config.cluster.progress_deadline.as_secs()
                    )));
                }
                Progress::Running => {}
            }
            if let Some(problem) = problems.iter().find(|p| p.is_hopeless()) {
                return Err(Error::Load(format!(
                    "rollout of {model} {version} cannot complete: {problem}"
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Load(format!(
                    "rollout of {model} {version} still running after {} s",
                    self.config.cluster.progress_deadline.as_secs() + 60
                )));
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    /// The version and image a Deployment runs, from its annotations.
    fn running(deployment: &KubeDeployment) -> Option<(VersionId, String)> {
        let annotations = deployment.metadata.annotations.as_ref()?;
        let version = VersionId::parse(annotations.get(ANNOTATION_VERSION)?).ok()?;
        Some((version, annotations.get(ANNOTATION_IMAGE)?.clone()))
    }

    /// Sends all of `target.model`'s traffic to its main Service and records it live.
    async fn go_live(&self, target: &Target) -> Deployment {
        let url = manifests::service_url(&self.config.cluster, &target.model);
        self.routes
            .switch(&target.model, target.version, url.clone());
        let deployment = Deployment {
            target: target.clone(),
            endpoint: url,
        };
        self.live
            .lock()
            .await
            .insert(target.model.clone(), deployment.clone());
        deployment
    }
}

/// Whether two Deployments have the same spec, by their spec hashes.
fn same_spec(a: &KubeDeployment, b: &KubeDeployment) -> bool {
    let hash = |d: &KubeDeployment| {
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_SPEC_HASH).cloned())
    };
    hash(a).is_some() && hash(a) == hash(b)
}

fn image_of(target: &Target) -> Result<&str> {
    match &target.artifact {
        Artifact::Image { reference, .. } => Ok(reference),
        other => Err(Error::Conflict(format!(
            "the Kubernetes backend runs images from a registry, not {other}"
        ))),
    }
}

impl KubeRollout {
    /// Rolls the model's main Deployment to `target` (nothing to apply if it runs it,
    /// complete); on failure rolls it back to what it ran. The caller switches the routes.
    async fn deploy_main(&self, target: &Target, events: &Events) -> Result<()> {
        let (model, version) = (&target.model, target.version);
        let image = image_of(target)?;
        let name = manifests::model_object_name(model);
        let current = self
            .api::<KubeDeployment>()
            .get_opt(&name)
            .await
            .map_err(|e| api_error(&format!("reading Deployment {name}"), e))?;
        let desired = manifests::deployment(&self.config.cluster, model, version, image)?;
        if let Some(current) = &current {
            if same_spec(current, &desired) && progress(current) == Progress::Complete {
                events.progress(format!(
                    "Deployment {name} already runs {version} ({image}): nothing to apply"
                ));
                return Ok(());
            }
        }
        let previous = current.as_ref().and_then(KubeRollout::running);
        events.progress(format!(
            "applying Deployment, Service and Ingress {name} in {} for {version} ({image})",
            self.config.cluster.namespace
        ));
        let generation = self.apply(model, version, image).await?;
        events.progress(format!(
            "following the rollout (generation {generation}, deadline {} s)",
            self.config.cluster.progress_deadline.as_secs()
        ));
        match self.wait(Track::Main, model, version, events).await {
            Ok(()) => {
                events.progress(format!("rollout of {model} {version} complete"));
                Ok(())
            }
            Err(failure) => {
                match previous {
                    Some((previous_version, previous_image)) => {
                        events.error(failure.to_string());
                        events.progress(format!(
                            "rolling {name} back to {previous_version} ({previous_image})"
                        ));
                        if let Err(e) = self.apply(model, previous_version, &previous_image).await {
                            events.error(format!("the rollback failed too: {}", e.chain()));
                        }
                    }
                    None => {
                        // Nothing served before: leave nothing half-started behind (the
                        // Service and Ingress go with the Deployment).
                        events.progress(format!("removing Deployment {name}"));
                        let _ = self
                            .api::<KubeDeployment>()
                            .delete(&name, &DeleteParams::background())
                            .await;
                    }
                }
                Err(failure)
            }
        }
    }
}

#[async_trait::async_trait]
impl Rollout for KubeRollout {
    async fn deploy(&self, target: &Target, events: &Events) -> Result<Deployment> {
        let model = &target.model;
        let _one_at_a_time = self.locks.lock(model).await;
        self.deploy_main(target, events).await?;
        let was_split = self.routes.split(model).is_some_and(|s| s.is_split());
        let deployment = self.go_live(target).await;
        // Applied anew, its Ingresses point at its Service again: awake.
        self.asleep.lock().await.remove(model);
        if was_split {
            self.remove_canary(model, events).await?;
        }
        Ok(deployment)
    }

    /// Two versions at most (nginx takes one canary Ingress per path): the one the main
    /// Deployment runs stays there (else the heavier goes there), the other runs as the
    /// canary with its weight on the canary Ingress; the gateway splits by the same weights.
    async fn split(
        &self,
        model: &ModelName,
        arms: &[Arm],
        events: &Events,
    ) -> Result<Vec<Deployment>> {
        let split = split_of(arms)?;
        let [a, b] = arms else {
            if let [one] = arms {
                return Ok(vec![self.deploy(&one.target, events).await?]);
            }
            return Err(Error::Conflict(format!(
                "on Kubernetes a split holds two versions (nginx takes one canary Ingress per \
                 path), not {}",
                arms.len()
            )));
        };
        let _one_at_a_time = self.locks.lock(model).await;
        let name = manifests::model_object_name(model);
        let running = self
            .api::<KubeDeployment>()
            .get_opt(&name)
            .await
            .map_err(|e| api_error(&format!("reading Deployment {name}"), e))?
            .as_ref()
            .and_then(KubeRollout::running)
            .map(|(version, _)| version);
        let (main, canary) = match running {
            Some(version) if version == b.target.version => (b, a),
            Some(version) if version == a.target.version => (a, b),
            _ if b.weight > a.weight => (b, a),
            _ => (a, b),
        };
        self.deploy_main(&main.target, events).await?;
        self.apply_canary(&canary.target, canary.weight, events)
            .await?;
        let settings = &self.config.cluster;
        let url_of = |version: VersionId| match version == canary.target.version {
            true => manifests::service_url_on(Track::Canary, settings, model),
            false => manifests::service_url(settings, model),
        };
        self.routes
            .set(model, &split, |version| Some(url_of(version)));
        let deployments: Vec<Deployment> = arms
            .iter()
            .map(|arm| Deployment {
                target: arm.target.clone(),
                endpoint: url_of(arm.target.version),
            })
            .collect();
        let primary = deployments
            .iter()
            .find(|d| d.target.version == main.target.version)
            .cloned()
            .expect("the main version is an arm");
        self.live.lock().await.insert(model.clone(), primary);
        events.progress(format!("split {model} traffic: {}", split.describe()));
        Ok(deployments)
    }

    async fn resume(&self, target: &Target, events: &Events) -> Result<Deployment> {
        // A Deployment keeps running without the api server: `deploy` finds it complete and
        // applies nothing.
        self.deploy(target, events).await
    }

    async fn status(&self, model: &ModelName) -> Option<Deployment> {
        self.live.lock().await.get(model).cloned()
    }

    fn scales_to_zero(&self) -> bool {
        self.can_scale_to_zero()
    }

    async fn scale_to_zero(&self, model: &ModelName, events: &Events) -> Result<bool> {
        self.scale_down_to_zero(model, events).await
    }

    async fn wake(&self, model: &ModelName, events: &Events) -> Result<bool> {
        self.wake_from_zero(model, events).await
    }

    async fn resume_scaled_to_zero(
        &self,
        model: &ModelName,
        arms: &[Arm],
        _events: &Events,
    ) -> Result<()> {
        self.resume_at_zero(model, arms).await
    }

    /// Read from the live version's pods at each call.
    async fn health(&self, model: &ModelName) -> Option<Health> {
        let version = self.status(model).await?.target.version;
        match self.pods(model, version).await {
            Ok(pods) => Some(pods_health(version, &pods)),
            Err(e) => {
                tracing::warn!(error = %e.chain(), "reading {model}'s pods");
                None
            }
        }
    }

    async fn undeploy(&self, model: &ModelName) -> Result<()> {
        let _one_at_a_time = self.locks.lock(model).await;
        let was_split = self.routes.split(model).is_some_and(|s| s.is_split());
        self.routes.remove(model);
        self.live.lock().await.remove(model);
        self.asleep.lock().await.remove(model);
        if was_split {
            self.remove_canary(model, &Events::discard(crate::events::Stage::Rollout))
                .await?;
        }
        let name = manifests::model_object_name(model);
        match self
            .api::<KubeDeployment>()
            .delete(&name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if crate::kubernetes::status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(api_error(&format!("deleting Deployment {name}"), e)),
        }
    }

    /// Stops routing; the Deployments keep serving (the Ingress reaches them directly).
    async fn shutdown(&self) {
        let live: Vec<_> = self.live.lock().await.drain().collect();
        for (model, _) in live {
            self.routes.remove(&model);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, restarts: i32, last_exit: Option<(i32, &str)>) -> Pod {
        let last_state = last_exit.map(|(code, reason)| {
            serde_json::json!({"terminated": {"exitCode": code, "reason": reason}})
        });
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                "containerStatuses": [{
                    "name": "predict", "image": "so1s/m:v2", "imageID": "", "ready": ready,
                    "restartCount": restarts,
                    "lastState": last_state.unwrap_or_else(|| serde_json::json!({})),
                }],
            },
        }))
        .unwrap()
    }

    #[test]
    fn health_counts_ready_pods_and_their_restarts() {
        let v2 = VersionId::parse("v2").unwrap();
        let healthy = pods_health(v2, &[pod("a", true, 0, None), pod("b", true, 0, None)]);
        assert_eq!(healthy.status, HealthStatus::Healthy);
        assert_eq!(healthy.restarts, 0);
        assert_eq!(healthy.instances.len(), 2);

        let one_down = pods_health(
            v2,
            &[
                pod("a", true, 0, None),
                pod("b", false, 3, Some((137, "OOMKilled"))),
            ],
        );
        assert_eq!(one_down.status, HealthStatus::Degraded);
        assert!(one_down.ready);
        assert_eq!(one_down.restarts, 3);
        assert_eq!(
            one_down.last_exit.as_deref(),
            Some("exited with code 137 (OOMKilled)")
        );
        let b = &one_down.instances[1];
        assert_eq!((b.name.as_str(), b.ready, b.restarts), ("b", false, 3));
        assert!(
            b.problem.as_deref().unwrap().contains("last exit 137"),
            "{b:?}"
        );

        let none = pods_health(v2, &[pod("a", false, 5, Some((1, "Error")))]);
        assert_eq!(none.status, HealthStatus::Unhealthy);
        assert!(!none.ready);
        assert_eq!(pods_health(v2, &[]).status, HealthStatus::Unhealthy);
    }
}
