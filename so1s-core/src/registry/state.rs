//! [`VersionState`]: where a version is in its life. A leaf: events carry it, and it imports
//! nothing of so1s.

use serde::{Deserialize, Serialize};

/// Where a version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionState {
    /// Uploaded and stored.
    Stored,
    /// Being built.
    Building,
    /// Built; not (yet) deployed.
    Built,
    /// Being rolled out.
    Deploying,
    /// Serving traffic.
    Live,
    /// The build or rollout failed; `error` says why.
    Failed,
    /// Served before; replaced by another version.
    Retired,
    /// Built after a newer version of its model had overtaken it (built or live first):
    /// not rolled out. It can be promoted.
    Superseded,
}

impl VersionState {
    /// Whether the upload's pipeline has ended here: live, failed or (later) retired.
    pub fn ends_pipeline(self) -> bool {
        matches!(
            self,
            VersionState::Live
                | VersionState::Failed
                | VersionState::Retired
                | VersionState::Superseded
        )
    }

    /// Whether the version is done moving (no build or rollout running for it).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            VersionState::Built
                | VersionState::Live
                | VersionState::Failed
                | VersionState::Retired
                | VersionState::Superseded
        )
    }

    /// Whether a version in this state may take traffic (with its artifact): live, built,
    /// retired or superseded.
    pub fn can_serve(self) -> bool {
        matches!(
            self,
            VersionState::Live
                | VersionState::Built
                | VersionState::Retired
                | VersionState::Superseded
        )
    }

    /// `is retired`, or `is retired and its artifact was pruned`, for errors.
    pub fn describe(self, has_artifact: bool) -> String {
        match (self.can_serve(), has_artifact) {
            (true, false) => {
                format!("is {self} and its artifact was pruned by retention (upload it again)")
            }
            _ => format!("is {self}"),
        }
    }

    /// The state's name, as the api writes it (`live`, `failed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Stored => "stored",
            VersionState::Building => "building",
            VersionState::Built => "built",
            VersionState::Deploying => "deploying",
            VersionState::Live => "live",
            VersionState::Failed => "failed",
            VersionState::Retired => "retired",
            VersionState::Superseded => "superseded",
        }
    }
}

impl std::fmt::Display for VersionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
