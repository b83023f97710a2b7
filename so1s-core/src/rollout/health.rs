//! What happens to a version after its rollout: its instance exits, is started again, stops
//! answering, or keeps failing. Backends watch their live instances and report
//! [`Incident`]s; the platform records them and hands traffic back to the previous good
//! version when one crash-loops ([`CrashLoopRule`], after systemd's `StartLimitBurst` within
//! `StartLimitIntervalSec`).

use crate::clock::now_ms;
use crate::model::{ModelName, VersionId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Something that happened to a live version.
#[derive(Debug, Clone, PartialEq)]
pub enum Incident {
    /// Its instance exited or stopped answering; it is started again after `restart_in`
    /// (by so1s, or by the engine's restart policy).
    Exited {
        /// The model.
        model: ModelName,
        /// The version.
        version: VersionId,
        /// Why: `exited with code 1`, `killed by signal 9`, `not ready for 3 checks`...
        cause: String,
        /// When it is started again.
        restart_in: Duration,
    },
    /// It answers again after a restart.
    Restarted {
        /// The model.
        model: ModelName,
        /// The version.
        version: VersionId,
        /// Where it answers now.
        endpoint: String,
    },
    /// It exited `exits` times within `window`: it keeps failing.
    CrashLoop {
        /// The model.
        model: ModelName,
        /// The version.
        version: VersionId,
        /// Exits counted in the window.
        exits: usize,
        /// The window.
        window: Duration,
        /// Why it last exited.
        cause: String,
    },
}

/// How a live version is doing, as `GET /v1/models/{name}` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    /// Running and answering.
    Healthy,
    /// Running, but an instance is not ready (it failed its last readiness check, or on
    /// Kubernetes some replicas are not ready).
    Degraded,
    /// Exited or not answering; being started again.
    Restarting,
    /// Crash-looping (or, on Kubernetes, no replica ready).
    Unhealthy,
}

/// One instance (process, container, pod) of a live version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// `pid 4242`, a container's or a pod's name.
    pub name: String,
    /// Whether it answered its last readiness check.
    pub ready: bool,
    /// Times it was restarted.
    pub restarts: u32,
    /// Why it is not ready or last restarted, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The health of a model's live version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The version it is about.
    pub version: VersionId,
    /// The verdict.
    pub status: HealthStatus,
    /// Whether it answered its last readiness check.
    pub ready: bool,
    /// Times its instances exited and were started again since it went live.
    pub restarts: u32,
    /// Why it last exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Its instances.
    pub instances: Vec<Instance>,
    /// When this was last checked, in ms since the Unix epoch.
    pub checked_at_ms: u64,
}

impl Health {
    /// A version that just went live with one ready instance.
    pub fn started(version: VersionId, instance: impl Into<String>) -> Self {
        Self {
            version,
            status: HealthStatus::Healthy,
            ready: true,
            restarts: 0,
            last_exit: None,
            instances: vec![Instance {
                name: instance.into(),
                ready: true,
                restarts: 0,
                problem: None,
            }],
            checked_at_ms: now_ms(),
        }
    }
}

/// When a version counts as crash-looping, and how long to wait before each restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLoopRule {
    /// This many exits ...
    pub max_exits: usize,
    /// ... within this window make a crash loop.
    pub window: Duration,
    /// The wait before the first restart; it doubles with each exit in the window.
    pub first_backoff: Duration,
    /// The longest wait before a restart.
    pub max_backoff: Duration,
}

impl Default for CrashLoopRule {
    /// 5 exits in 2 minutes; restarts after 100 ms, doubling up to 30 s.
    fn default() -> Self {
        Self {
            max_exits: 5,
            window: Duration::from_secs(120),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl CrashLoopRule {
    /// The wait before restarting after the `exits`-th exit in the window (1-based).
    pub fn backoff(&self, exits: usize) -> Duration {
        let doublings = exits.saturating_sub(1).min(20) as u32;
        self.first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }
}

/// The exits of one live version within the rule's window.
#[derive(Debug, Clone)]
pub struct ExitHistory {
    rule: CrashLoopRule,
    exits: VecDeque<Instant>,
}

impl ExitHistory {
    /// No exits yet.
    pub fn new(rule: CrashLoopRule) -> Self {
        Self {
            rule,
            exits: VecDeque::new(),
        }
    }

    /// The rule exits are counted by.
    pub fn rule(&self) -> CrashLoopRule {
        self.rule
    }

    /// The window exits are counted in.
    pub fn window(&self) -> Duration {
        self.rule.window
    }

    /// Records an exit at `now`: returns the exits in the window (this one included) and
    /// whether they make a crash loop. A crash loop is reported once: the count starts over.
    pub fn record(&mut self, now: Instant) -> (usize, bool) {
        while self
            .exits
            .front()
            .is_some_and(|&at| now.duration_since(at) > self.rule.window)
        {
            self.exits.pop_front();
        }
        self.exits.push_back(now);
        let exits = self.exits.len();
        let looping = exits >= self.rule.max_exits;
        if looping {
            self.exits.clear();
        }
        (exits, looping)
    }
}

/// Where a backend's watchers report: incidents for the platform, and each model's current
/// [`Health`]. Cheap to clone.
#[derive(Clone)]
pub struct Incidents {
    inner: Arc<IncidentsInner>,
}

struct IncidentsInner {
    sender: mpsc::UnboundedSender<Incident>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Incident>>>,
    health: Mutex<HashMap<(ModelName, VersionId), Health>>,
}

impl Default for Incidents {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(IncidentsInner {
                sender,
                receiver: Mutex::new(Some(receiver)),
                health: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Incidents {
    /// Reports an incident (dropped if nobody took the receiver).
    pub fn report(&self, incident: Incident) {
        let _ = self.inner.sender.send(incident);
    }

    /// The receiving end, once.
    pub fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Incident>> {
        self.inner
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn health_map(&self) -> std::sync::MutexGuard<'_, HashMap<(ModelName, VersionId), Health>> {
        self.inner.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the health of `model`'s version `health.version`.
    pub fn set_health(&self, model: &ModelName, health: Health) {
        self.health_map()
            .insert((model.clone(), health.version), health);
    }

    /// Changes the health of `model` `version` if it has one (a watcher of a version that
    /// was stopped changes nothing).
    pub fn update(&self, model: &ModelName, version: VersionId, change: impl FnOnce(&mut Health)) {
        if let Some(health) = self.health_map().get_mut(&(model.clone(), version)) {
            change(health);
            health.checked_at_ms = now_ms();
        }
    }

    /// The health of `model` `version`.
    pub fn health(&self, model: &ModelName, version: VersionId) -> Option<Health> {
        self.health_map().get(&(model.clone(), version)).cloned()
    }

    /// Forgets the health of `model` `version` (it was stopped).
    pub fn forget(&self, model: &ModelName, version: VersionId) {
        self.health_map().remove(&(model.clone(), version));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_wait_up_to_the_cap() {
        let rule = CrashLoopRule::default();
        let waits: Vec<_> = (1..=6).map(|n| rule.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200]);
        assert_eq!(rule.backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn five_exits_within_the_window_make_a_crash_loop_and_old_ones_age_out() {
        let rule = CrashLoopRule::default();
        let mut history = ExitHistory::new(rule);
        let start = Instant::now();
        // Four exits, then one after the window: the first four have aged out.
        for i in 0..4 {
            assert_eq!(
                history.record(start + Duration::from_secs(i)),
                (i as usize + 1, false)
            );
        }
        let later = start + Duration::from_secs(200);
        assert_eq!(history.record(later), (1, false));
        for i in 1..4 {
            assert!(!history.record(later + Duration::from_secs(i)).1);
        }
        assert_eq!(history.record(later + Duration::from_secs(10)), (5, true));
        // Reported once: the count starts over.
        assert_eq!(history.record(later + Duration::from_secs(11)), (1, false));
    }

    #[test]
    fn each_version_has_its_health_and_a_stopped_ones_watcher_changes_nothing() {
        let incidents = Incidents::default();
        let model = ModelName::parse("m").unwrap();
        let (v1, v2) = (VersionId::FIRST, VersionId::FIRST.next());
        incidents.set_health(&model, Health::started(v1, "pid 1"));
        incidents.set_health(&model, Health::started(v2, "pid 2"));
        incidents.update(&model, v1, |h| h.status = HealthStatus::Unhealthy);
        let status = |v| incidents.health(&model, v).map(|h| h.status);
        assert_eq!(status(v1), Some(HealthStatus::Unhealthy));
        assert_eq!(status(v2), Some(HealthStatus::Healthy));
        incidents.forget(&model, v1);
        incidents.update(&model, v1, |h| h.restarts += 1);
        assert_eq!(status(v1), None);
        incidents.update(&model, v2, |h| h.restarts += 1);
        assert_eq!(incidents.health(&model, v2).unwrap().restarts, 1);
        assert!(incidents.take_receiver().is_some());
        assert!(incidents.take_receiver().is_none());
    }
}
