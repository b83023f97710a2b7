//! Progress events of builds and rollouts: what a user follows live (server-sent events) and
//! reads back later (the registry keeps them).

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The stage an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Receiving and storing the upload.
    Upload,
    /// Turning the stored version into an artifact.
    Build,
    /// Starting the artifact and switching traffic to it.
    Rollout,
}

/// What kind of line an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A step began or ended.
    Progress,
    /// Output of the work (build logs, server logs).
    Log,
    /// The step failed; the message says why.
    Error,
}

/// One line of a version's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The stage.
    pub stage: Stage,
    /// The kind of line.
    pub kind: EventKind,
    /// The text.
    pub message: String,
    /// The state the version entered with this event, for state changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::registry::state::VersionState>,
}

impl Event {
    /// An event stamped now.
    pub fn now(stage: Stage, kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            at_ms: crate::clock::now_ms(),
            stage,
            kind,
            message: message.into(),
            state: None,
        }
    }
}

/// Where builders and rollouts report: a cheap handle bound to one stage.
#[derive(Clone)]
pub struct Events {
    stage: Stage,
    sink: Arc<dyn Fn(Event) + Send + Sync>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("stage", &self.stage)
            .finish()
    }
}

impl Events {
    /// Events of `stage`, each handed to `sink`.
    pub fn new(stage: Stage, sink: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Self {
            stage,
            sink: Arc::new(sink),
        }
    }

    /// Events that go nowhere.
    pub fn discard(stage: Stage) -> Self {
        Self::new(stage, |_| {})
    }

    /// The same sink for another stage.
    pub fn for_stage(&self, stage: Stage) -> Self {
        Self {
            stage,
            sink: self.sink.clone(),
        }
    }

    /// Reports progress.
    pub fn progress(&self, message: impl Into<String>) {
        (self.sink)(Event::now(self.stage, EventKind::Progress, message));
    }

    /// Reports a log line.
    pub fn log(&self, message: impl Into<String>) {
        (self.sink)(Event::now(self.stage, EventKind::Log, message));
    }

    /// Reports a failure.
    pub fn error(&self, message: impl Into<String>) {
        (self.sink)(Event::now(self.stage, EventKind::Error, message));
    }
}

/// Events kept in memory, in order: for programs that embed builders and rollouts and want
/// their output afterwards, and for tests.
#[derive(Debug, Clone, Default)]
pub struct EventLog(Arc<std::sync::Mutex<Vec<Event>>>);

impl EventLog {
    /// A handle for `stage` whose events are kept here.
    pub fn events(&self, stage: Stage) -> Events {
        let kept = self.0.clone();
        Events::new(stage, move |event| {
            kept.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(event)
        })
    }

    /// The events kept so far.
    pub fn kept(&self) -> Vec<Event> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The messages kept so far, a line each.
    pub fn text(&self) -> String {
        self.kept()
            .iter()
            .map(|event| event.message.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_log_keeps_every_stage_in_order() {
        let log = EventLog::default();
        let build = log.events(Stage::Build);
        build.progress("unpacking");
        build.for_stage(Stage::Rollout).error("not ready");
        build.log("done");
        let kept = log.kept();
        let seen: Vec<_> = kept.iter().map(|e| (e.stage, e.kind)).collect();
        assert_eq!(
            seen,
            [
                (Stage::Build, EventKind::Progress),
                (Stage::Rollout, EventKind::Error),
                (Stage::Build, EventKind::Log)
            ]
        );
        assert_eq!(log.text(), "unpacking\nnot ready\ndone");
    }
}
