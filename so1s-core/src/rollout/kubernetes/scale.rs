//! Scale to zero on Kubernetes: the model's Ingresses are pointed at the so1s api server's
//! gateway ([`manifests::gateway_ingresses`]), which holds the requests from then on, then
//! its Deployment is scaled to 0 through the api server. A wake scales it back, waits for the
//! rollout to complete, routes the gateway to the model's Service and points the Ingresses
//! back at it. A model whose traffic is split, or that autoscales, does not scale to zero.

use super::KubeRollout;
use crate::events::Events;
use crate::kubernetes::api_error;
use crate::kubernetes::manifests::{self, Track, FIELD_MANAGER};
use crate::model::ModelName;
use crate::rollout::{split_of, Arm};
use crate::{Error, Result};
use k8s_openapi::api::apps::v1::Deployment as KubeDeployment;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams};
use std::time::Duration;

/// Longest wait for the requests in flight to a model's Service before it is scaled to 0.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl KubeRollout {
    /// Whether models can scale to zero here: not when they autoscale (the
    /// HorizontalPodAutoscaler owns the replicas).
    pub(super) fn can_scale_to_zero(&self) -> bool {
        self.config.cluster.autoscale.is_none()
    }

    /// [`Rollout::scale_to_zero`](crate::rollout::Rollout::scale_to_zero) on Kubernetes.
    pub(super) async fn scale_down_to_zero(
        &self,
        model: &ModelName,
        events: &Events,
    ) -> Result<bool> {
        let _one_at_a_time = self.locks.lock(model).await;
        // A split keeps running: nginx's canary Ingress has no place to wait.
        if self.routes.split(model).is_some_and(|s| s.is_split()) {
            return Ok(false);
        }
        let Some(live) = self.live.lock().await.get(model).cloned() else {
            return Ok(false);
        };
        // Requests from outside come to the gateway first, then it holds them.
        self.point_ingresses(model, true).await?;
        events.progress(format!(
            "{model}'s Ingresses point at the so1s gateway ({})",
            manifests::API_SERVER
        ));
        let upstreams = self.routes.park(model).unwrap_or_default();
        for upstream in upstreams {
            upstream.drained(DRAIN_TIMEOUT).await;
        }
        self.set_replicas(model, 0).await?;
        events.progress(format!(
            "Deployment {} scaled to 0",
            manifests::model_object_name(model)
        ));
        self.live.lock().await.remove(model);
        self.asleep.lock().await.insert(model.clone(), live.target);
        Ok(true)
    }

    /// [`Rollout::wake`](crate::rollout::Rollout::wake) on Kubernetes.
    pub(super) async fn wake_from_zero(&self, model: &ModelName, events: &Events) -> Result<bool> {
        let _one_at_a_time = self.locks.lock(model).await;
        let Some(target) = self.asleep.lock().await.get(model).cloned() else {
            return Ok(false);
        };
        let replicas = self.config.cluster.replicas;
        self.set_replicas(model, replicas).await?;
        events.progress(format!(
            "Deployment {} scaled to {replicas}",
            manifests::model_object_name(model)
        ));
        if let Err(e) = self.wait(Track::Main, model, target.version, events).await {
            // Back to zero: the gateway keeps holding and answering for it.
            let _ = self.set_replicas(model, 0).await;
            return Err(e);
        }
        self.go_live(&target).await;
        self.point_ingresses(model, false).await?;
        self.asleep.lock().await.remove(model);
        Ok(true)
    }

    /// [`Rollout::resume_scaled_to_zero`](crate::rollout::Rollout::resume_scaled_to_zero)
    /// on Kubernetes: the Deployment stays at 0, the gateway parks the model.
    pub(super) async fn resume_at_zero(&self, model: &ModelName, arms: &[Arm]) -> Result<()> {
        let split = split_of(arms)?;
        let [arm] = arms else {
            return Err(Error::Conflict(format!(
                "{model}'s traffic is split: it does not scale to zero on Kubernetes"
            )));
        };
        let _one_at_a_time = self.locks.lock(model).await;
        self.routes.park_split(model, split);
        self.asleep
            .lock()
            .await
            .insert(model.clone(), arm.target.clone());
        Ok(())
    }

    /// Scales the model's main Deployment to `replicas`.
    async fn set_replicas(&self, model: &ModelName, replicas: i32) -> Result<()> {
        let name = manifests::model_object_name(model);
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        self.api::<KubeDeployment>()
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error(&format!("scaling Deployment {name} to {replicas}"), e))?;
        Ok(())
    }

    /// Applies the model's predict and Open Inference Protocol Ingresses, to the gateway or
    /// back to the model's Service.
    async fn point_ingresses(&self, model: &ModelName, to_gateway: bool) -> Result<()> {
        let settings = &self.config.cluster;
        let name = manifests::model_object_name(model);
        let deployment = self
            .api::<KubeDeployment>()
            .get(&name)
            .await
            .map_err(|e| api_error(&format!("reading Deployment {name}"), e))?;
        let owner = manifests::owned_by(&deployment);
        let ingresses: [Ingress; 2] = match to_gateway {
            true => manifests::gateway_ingresses(settings, model, owner.as_ref()),
            false => [
                manifests::ingress(settings, model, owner.as_ref()),
                manifests::oip_ingress(settings, model, owner.as_ref()),
            ],
        };
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        for ingress in ingresses {
            let name = ingress.metadata.name.clone().unwrap_or_default();
            self.api::<Ingress>()
                .patch(&name, &apply, &Patch::Apply(&ingress))
                .await
                .map_err(|e| api_error(&format!("applying Ingress {name}"), e))?;
        }
        Ok(())
    }
}
