//! Retention: versions that no longer serve (retired, superseded) keep their artifact (an
//! unpacked bundle, an image) for a rollback or a promotion, but only the newest few of each
//! model; older ones lose it, and their archive too if asked, with an event each. Their
//! records stay.

use super::Platform;
use crate::events::Stage;
use crate::model::ModelName;
use crate::registry::VersionState;
use std::cmp::Reverse;

/// What is kept of versions that no longer serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Versions of each model no longer serving (retired or superseded) that keep their
    /// artifact: the newest this many.
    pub keep: usize,
    /// Whether the older ones lose their archive too (then they can only be uploaded again).
    pub prune_archives: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep: 5,
            prune_archives: false,
        }
    }
}

impl Platform {
    /// Removes the artifacts (and, if asked, the archives) of `model`'s versions that no
    /// longer serve, past the newest [`Retention::keep`]. Failures are events, not errors:
    /// what serves is not touched either way.
    pub(super) async fn apply_retention(&self, model: &ModelName) {
        let Ok(versions) = self.registry.versions(model) else {
            return;
        };
        let mut resting: Vec<_> = versions
            .into_iter()
            .filter(|r| matches!(r.state, VersionState::Retired | VersionState::Superseded))
            .collect();
        resting.sort_by_key(|r| Reverse(r.stored.version));
        let keep = self.retention.keep;
        for record in resting.into_iter().skip(keep) {
            let version = record.stored.version;
            let events = self.events(model, version, Stage::Rollout);
            if let Some(artifact) = &record.artifact {
                let removed = match self.builder.remove(artifact).await {
                    Ok(()) => self.registry.forget_artifact(model, version),
                    Err(e) => Err(e),
                };
                match removed {
                    Ok(()) => events.progress(format!(
                        "retention: removed {artifact} of {version} (the newest {keep} versions \
                         that no longer serve keep theirs)"
                    )),
                    Err(e) => events.error(format!(
                        "retention: could not remove {artifact}: {}",
                        e.chain()
                    )),
                }
            }
            if self.retention.prune_archives {
                match self.store.remove_archive(model, version).await {
                    Ok(0) => {}
                    Ok(freed) => events.progress(format!(
                        "retention: removed the archive of {version} ({freed} bytes)"
                    )),
                    Err(e) => events.error(format!(
                        "retention: could not remove the archive of {version}: {}",
                        e.chain()
                    )),
                }
            }
        }
    }
}
