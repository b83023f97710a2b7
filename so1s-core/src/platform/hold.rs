//! The gateway's hold: a request whose model wakes from zero, or whose version's instance is
//! being started again, waits here instead of failing, and is forwarded when an instance is
//! ready. The hold is bounded: at most [`ScaleOptions::wake_queue`](super::ScaleOptions)
//! requests per model, each for at most a deadline; past either the client gets `503` with
//! `Retry-After`.

use super::Platform;
use crate::metrics::GatewayMetrics;
use crate::model::ModelName;
use crate::rollout::{InFlight, Pick, Unavailable};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

/// Requests held per model.
#[derive(Debug, Default)]
pub(super) struct Held {
    counts: Mutex<HashMap<ModelName, usize>>,
}

/// One held request, counted until dropped.
pub(super) struct Hold<'a> {
    held: &'a Held,
    model: ModelName,
}

impl Held {
    /// Requests held for `model` now.
    pub(super) fn waiting(&self, model: &ModelName) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(model).copied().unwrap_or(0)
    }

    /// Counts one more request held for `model`, unless `most` already are.
    pub(super) fn enter(&self, model: &ModelName, most: usize) -> Option<Hold<'_>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(model.clone()).or_default();
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(Hold {
            held: self,
            model: model.clone(),
        })
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut counts = self.held.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.model) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.model);
            }
        }
    }
}

impl Platform {
    /// The gateway's figures of faults.
    pub fn gateway_metrics(&self) -> &GatewayMetrics {
        &self.gateway_metrics
    }

    /// The longest a request is held while its model wakes or its instance restarts.
    pub fn hold_timeout(&self) -> std::time::Duration {
        self.scale_options.wake_timeout
    }

    /// Holds a request to `model` while the instances `pick` could go to are being started
    /// again, until one is ready (then acquired for it) or `deadline`. Errors:
    /// [`Error::Busy`] past the queue, [`Error::Timeout`] past the deadline; the model's
    /// other states (scaled to zero, no longer routed) as [`Error::NotReady`], for the
    /// caller to look again.
    pub async fn hold_until_ready(
        &self,
        model: &ModelName,
        pick: Pick<'_>,
        deadline: Instant,
    ) -> Result<InFlight> {
        let Some(_hold) = self.held.enter(model, self.scale_options.wake_queue) else {
            return Err(Error::Busy(format!(
                "{} requests already wait for {model} to be ready",
                self.scale_options.wake_queue
            )));
        };
        GatewayMetrics::count(&self.gateway_metrics.held, model.as_str());
        let mut changes = self.routes.changes();
        loop {
            changes.borrow_and_update();
            match self.routes.acquire(model, pick) {
                Ok(in_flight) => return Ok(in_flight),
                Err(Unavailable::NotReady) => {}
                Err(_) => return Err(Error::NotReady),
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::NotReady),
                Err(_) => {
                    return Err(Error::Timeout(format!(
                        "{model} was being started again and was not ready in time"
                    )))
                }
            }
        }
    }
}
