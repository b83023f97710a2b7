//! Scale to zero: a model with an idle policy has its instances stopped after that long
//! without a request, and its next request wakes it. The gateway holds the requests that
//! arrive while it wakes ([`Platform::wake_for_request`]): a bounded number per model, for a
//! bounded time (the same hold as for a restart, [`super::hold`]).

use super::Platform;
use crate::events::Stage;
use crate::metrics::ModelLabels;
use crate::model::ModelName;
use crate::registry::Scale;
use crate::resources::ScaleView;
use crate::{Error, Result};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How idle models are scaled to zero and woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleOptions {
    /// How often idle models are looked for.
    pub check_interval: Duration,
    /// Requests held per model while it wakes; more get `503` with `Retry-After`.
    pub wake_queue: usize,
    /// Longest hold of a request while its model wakes; then `503` with `Retry-After`.
    pub wake_timeout: Duration,
}

impl Default for ScaleOptions {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_millis(500),
            wake_queue: 1024,
            wake_timeout: Duration::from_secs(60),
        }
    }
}

fn labels(model: &ModelName) -> ModelLabels {
    ModelLabels {
        model: model.as_str().to_owned(),
    }
}

impl Platform {
    /// `model`'s scaling, as `GET /v1/models/{name}` shows it.
    pub fn scale(&self, model: &ModelName) -> ScaleView {
        let Scale {
            idle_after_s,
            wakeups,
            ..
        } = self.registry.scale(model);
        let last_request_at = self.routes.last_request_ms(model);
        ScaleView {
            idle_after_s,
            running: last_request_at.is_some(),
            wakeups,
            waking: self.routes.is_parked(model) && self.held.waiting(model) > 0,
            last_request_at,
        }
    }

    /// Sets `model`'s idle policy: after `idle_after_s` seconds without a request its
    /// instances stop, until the next request (0: always on).
    pub fn set_idle_after(&self, model: &ModelName, idle_after_s: u64) -> Result<ScaleView> {
        if idle_after_s > 0 && !self.rollout.scales_to_zero() {
            return Err(Error::Conflict(
                "this backend cannot scale models to zero (on Kubernetes, models that autoscale \
                 cannot)"
                    .into(),
            ));
        }
        self.registry.set_idle_after(model, idle_after_s)?;
        if let Some(live) = self.registry.live(model) {
            let policy = match idle_after_s {
                0 => "always on".to_owned(),
                n => format!("scaled to zero after {n} s without a request"),
            };
            self.events(model, live.stored.version, Stage::Rollout)
                .progress(format!("idle policy of {model}: {policy}"));
        }
        Ok(self.scale(model))
    }

    /// Scales every model idle for longer than its policy to zero, once.
    pub async fn scale_down_idle(&self) {
        for (model, scale) in self.registry.idle_policies() {
            let Some(idle) = self.routes.idle_for(&model) else {
                continue;
            };
            if idle < Duration::from_secs(scale.idle_after_s) {
                continue;
            }
            let Some(live) = self.registry.live(&model) else {
                continue;
            };
            let events = self.events(&model, live.stored.version, Stage::Rollout);
            match self.rollout.scale_to_zero(&model, &events).await {
                Ok(true) => {
                    self.record_asleep(&model, true);
                    self.scale_metrics
                        .scale_downs
                        .get_or_create(&labels(&model))
                        .inc();
                    events.progress(format!(
                        "scaled {model} to zero after {} s without a request",
                        idle.as_secs()
                    ));
                }
                Ok(false) => {}
                Err(e) => events.error(format!("could not scale {model} to zero: {}", e.chain())),
            }
        }
    }

    /// Wakes `model` if it is scaled to zero: starts its live versions and routes its
    /// traffic to them again.
    pub async fn wake(&self, model: &ModelName) -> Result<()> {
        let Some(live) = self.registry.live(model) else {
            return Err(Error::NotFound(format!(
                "model {model} has no live version"
            )));
        };
        let events = self.events(model, live.stored.version, Stage::Rollout);
        let started = Instant::now();
        match self.rollout.wake(model, &events).await {
            Ok(true) => {
                let took = started.elapsed();
                events.progress(format!("woke {model} in {} ms", took.as_millis()));
                let labels = labels(model);
                self.scale_metrics.wakeups.get_or_create(&labels).inc();
                self.scale_metrics
                    .wake_seconds
                    .get_or_create(&labels)
                    .observe(took.as_secs_f64());
                self.record_asleep(model, false);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                events.error(format!("could not wake {model}: {}", e.chain()));
                Err(e)
            }
        }
    }

    /// Holds a request to `model`, scaled to zero, until it is awake: at most
    /// [`ScaleOptions::wake_queue`] requests per model, at most
    /// [`ScaleOptions::wake_timeout`]. The wake goes on if the request is given up. Errors:
    /// [`Error::Busy`] past the queue, [`Error::Timeout`] past the timeout, the wake's own
    /// when it fails.
    pub async fn wake_for_request(self: &Arc<Self>, model: &ModelName) -> Result<()> {
        let Some(_hold) = self.held.enter(model, self.scale_options.wake_queue) else {
            return Err(Error::Busy(format!(
                "{} requests already wait for {model} to wake",
                self.scale_options.wake_queue
            )));
        };
        let (platform, name) = (self.clone(), model.clone());
        let wake = tokio::spawn(async move { platform.wake(&name).await });
        match tokio::time::timeout(self.scale_options.wake_timeout, wake).await {
            Ok(Ok(woken)) => woken,
            Ok(Err(e)) => Err(Error::Backend(format!("waking {model} failed: {e}"))),
            Err(_) => Err(Error::Timeout(format!(
                "{model} did not wake within {} s",
                self.scale_options.wake_timeout.as_secs()
            ))),
        }
    }

    /// The api server's metrics in the OpenMetrics text format: scale to zero's and the
    /// gateway's.
    pub fn metrics_text(&self) -> String {
        let running = self.routes.running_models();
        self.scale_metrics
            .running_models
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        let mut registry = prometheus_client::registry::Registry::default();
        self.scale_metrics.register(&mut registry);
        self.gateway_metrics.register(&mut registry);
        crate::metrics::render(&registry)
    }

    /// A rollout started `model`'s versions: if it was scaled to zero, it is awake now (a
    /// restart must not take it up as scaled to zero).
    pub(super) fn awake_after_rollout(&self, model: &ModelName) {
        if self.registry.scale(model).asleep {
            self.record_asleep(model, false);
        }
    }

    fn record_asleep(&self, model: &ModelName, asleep: bool) {
        if let Err(e) = self.registry.set_asleep(model, asleep) {
            tracing::warn!(%model, error = %e.chain(), "could not record a scale to zero");
        }
    }

    /// Looks for idle models every [`ScaleOptions::check_interval`] while the platform
    /// lives.
    pub(super) fn watch_idle(platform: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let interval = platform.scale_options.check_interval;
        let platform: Weak<Self> = Arc::downgrade(platform);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(platform) = Weak::upgrade(&platform) else {
                    return;
                };
                platform.scale_down_idle().await;
            }
        });
    }
}
