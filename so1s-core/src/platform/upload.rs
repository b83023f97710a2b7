//! A version's way in (upload, then its build in a slot, then its rollout) and out (delete).

use super::{Platform, Reason};
use crate::events::Stage;
use crate::model::{ModelName, VersionId};
use crate::registry::{Transition, VersionRecord, VersionState};
use crate::store::{ByteStream, StoredVersion};
use crate::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One upload counted in the build queue until dropped.
pub(super) struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Platform {
    /// Stores an upload as a new version and starts building and rolling it out in the
    /// background. Returns once the version is stored. Refused with [`Error::Busy`] before
    /// anything is stored while [`PlatformOptions::max_queued_builds`](super::PlatformOptions)
    /// uploads wait for a build slot.
    pub async fn upload(
        self: &Arc<Self>,
        model: &ModelName,
        body: ByteStream,
    ) -> Result<VersionRecord> {
        let queued = self.queue_build()?;
        let stored = self.store.put(model, body).await?;
        crate::fault::point("upload-stored");
        let record = self.registry.add(stored.clone())?;
        self.events(model, stored.version, Stage::Upload)
            .progress(format!(
                "stored {} {} ({} bytes, sha256 {})",
                model, stored.version, stored.size, stored.sha256
            ));
        let platform = self.clone();
        tokio::spawn(async move { platform.build_and_deploy(stored, Some(queued)).await });
        Ok(record)
    }

    /// Counts one more upload waiting for a build slot, unless the queue is full.
    fn queue_build(&self) -> Result<Queued> {
        let most = self.max_queued_builds;
        self.queued_builds
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < most).then_some(n + 1)
            })
            .map_err(|_| {
                Error::Busy(format!(
                    "{most} uploads already wait for a build: try again when they are built"
                ))
            })?;
        Ok(Queued(self.queued_builds.clone()))
    }

    /// Builds a stored version in a build slot, records how the build ended, and rolls the
    /// version out if it built. `queued` counts it in the build queue until its slot comes.
    pub(super) async fn build_and_deploy(&self, stored: StoredVersion, queued: Option<Queued>) {
        let (model, version) = (stored.model.clone(), stored.version);
        let events = self.events(&model, version, Stage::Build);
        if self.builds.available_permits() == 0 {
            events.progress(format!(
                "waiting for a build slot ({} builds run at a time)",
                self.max_concurrent_builds
            ));
        }
        let Ok(slot) = self.builds.clone().acquire_owned().await else {
            return; // closed: the platform is going away
        };
        drop(queued);
        let building = Transition::to(
            VersionState::Building,
            Stage::Build,
            format!("building {model} {version}"),
        );
        if let Err(e) = self.registry.apply(&model, version, building) {
            tracing::error!(error = %e.chain(), "registry");
            return;
        }
        crate::fault::point("build-started");
        let built = match self.store.archive(&model, version).await {
            Ok(archive) => self.builder.build(&stored, &archive, &events).await,
            Err(e) => Err(e),
        };
        crate::fault::point("build-finished");
        // The build's outcome is recorded before its slot is given back.
        let recorded = match built {
            Ok(artifact) => {
                let done = Transition::to(
                    VersionState::Built,
                    Stage::Build,
                    format!("built {artifact}"),
                )
                .with_artifact(artifact.clone());
                self.registry
                    .apply(&model, version, done)
                    .map(|_| Some(artifact))
            }
            Err(e) => self
                .registry
                .apply(
                    &model,
                    version,
                    Transition::failed(Stage::Build, format!("build failed: {}", e.chain())),
                )
                .map(|_| None),
        };
        drop(slot);
        crate::fault::point("built-recorded");
        let result = match recorded {
            Ok(Some(artifact)) => self
                .deploy(&model, version, artifact, Reason::Upload)
                .await
                .map(|_| ()),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(%model, %version, error = %e.chain(), "the version did not go live");
        }
    }

    /// Deletes a version that is not serving (or being built or rolled out).
    pub async fn delete(&self, model: &ModelName, version: VersionId) -> Result<()> {
        let _turn = self.locks.lock(model).await;
        let record = self.registry.version(model, version)?;
        if !matches!(
            record.state,
            VersionState::Failed
                | VersionState::Retired
                | VersionState::Built
                | VersionState::Superseded
        ) {
            return Err(Error::Conflict(format!(
                "{model} {version} is {}: only failed, built, retired or superseded versions can \
                 be deleted",
                record.state
            )));
        }
        if let Some(artifact) = &record.artifact {
            self.builder.remove(artifact).await?;
        }
        self.store.delete(model, version).await?;
        crate::fault::point("delete-files-removed");
        self.registry.remove(model, version)
    }
}
