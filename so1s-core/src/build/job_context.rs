//! The first step of a Kubernetes build Job (`so1s context`): the uploaded archive becomes
//! the model image's build context — unpacked, checked and smoke-tested exactly as the
//! embedded default does it, then `OUT/Dockerfile` and `OUT/model/`.

use super::{Artifact, BundleBuilder, ImageBuilder, SmokeTest};
use crate::events::Events;
use crate::kubernetes::manifests::cluster_model_dockerfile;
use crate::model::{ModelName, VersionId};
use crate::store::{inspect_archive, StoredVersion};
use crate::{Error, Result};
use std::path::PathBuf;

/// What a build Job's context step is given.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The uploaded archive (`.tar.gz` or `.zip`), on the store's volume.
    pub archive: PathBuf,
    /// The model.
    pub model: ModelName,
    /// The version.
    pub version: VersionId,
    /// The stored version's sha256: the archive must have it (and the image is labelled
    /// with it).
    pub sha256: String,
    /// The image the model image is built on (the so1s image).
    pub base_image: String,
    /// Where to write the Dockerfile and the model directory.
    pub out: PathBuf,
}

impl JobContext {
    /// Unpacks, checks and smoke-tests (where `smoke` says) the archive, then writes
    /// `OUT/Dockerfile` and `OUT/model/`.
    pub async fn write(&self, smoke: SmokeTest, events: &Events) -> Result<()> {
        let summary = inspect_archive(&self.archive)?;
        if summary.sha256 != self.sha256 {
            return Err(Error::InvalidInput(format!(
                "{} has sha256 {}, not the stored version's {}",
                self.archive.display(),
                summary.sha256,
                self.sha256
            )));
        }
        let stored = StoredVersion::new(self.model.clone(), self.version, summary, 0);
        let scratch = self.out.join(".bundle");
        let bundles = BundleBuilder::new(&scratch, smoke);
        let artifact = bundles.build(&stored, &self.archive, events).await?;
        let Artifact::Bundle { dir, .. } = &artifact else {
            return Err(Error::Backend("the bundle builder made no bundle".into()));
        };
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| Error::Io { context, source }
        };
        std::fs::rename(dir, self.out.join("model"))
            .map_err(io("moving the model into the context"))?;
        let _ = std::fs::remove_dir_all(&scratch);
        let dockerfile =
            cluster_model_dockerfile(&self.base_image, &self.model, self.version, &stored.sha256);
        std::fs::write(self.out.join("Dockerfile"), dockerfile)
            .map_err(io("writing the Dockerfile"))?;
        events.progress(format!("context ready in {}", self.out.display()));
        Ok(())
    }
}
