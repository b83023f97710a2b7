//! What the registry knows about a version: its [`VersionRecord`] and the [`Transition`]s
//! that move it.

use super::state::VersionState;
use crate::build::Artifact;
use crate::events::Stage;
use crate::store::StoredVersion;
use serde::{Deserialize, Serialize};

/// Everything known about one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// What the store knows.
    #[serde(flatten)]
    pub stored: StoredVersion,
    /// The state.
    pub state: VersionState,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The built artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// When the state last changed, in ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// When it last went live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_since_ms: Option<u64>,
    /// How often its live instance exited and was started again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Why its live instance last exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// While live: its percent of the model's requests (100 unless a split is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// A state change of a version.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The new state.
    pub state: VersionState,
    /// The stage it belongs to.
    pub stage: Stage,
    /// What happened, for the event history.
    pub message: String,
    /// Why it failed (for [`VersionState::Failed`]).
    pub error: Option<String>,
    /// The artifact, once built.
    pub artifact: Option<Artifact>,
}

impl Transition {
    /// A change to `state` with a message.
    pub fn to(state: VersionState, stage: Stage, message: impl Into<String>) -> Self {
        Self {
            state,
            stage,
            message: message.into(),
            error: None,
            artifact: None,
        }
    }

    /// A failure: the message is the error.
    pub fn failed(stage: Stage, error: impl Into<String>) -> Self {
        let error = error.into();
        Self {
            error: Some(error.clone()),
            ..Self::to(VersionState::Failed, stage, error)
        }
    }

    /// Attaches the built artifact.
    pub fn with_artifact(mut self, artifact: Artifact) -> Self {
        self.artifact = Some(artifact);
        self
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
