//! [`BundleBuilder`]: the embedded backend's builder. The artifact is the unpacked model
//! directory itself.

use super::archive::{unpack, UnpackLimits};
use super::smoke::SmokeTest;
use super::{Artifact, ImageBuilder};
use crate::events::Events;
use crate::model::checkpoint::{self, InPlace};
use crate::model::ModelLayout;
use crate::predict::BuildRecord;
use crate::store::StoredVersion;
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Unpacks archives into `ROOT/<model>/<version>/`, validates the model, and smoke-tests it
/// by loading it and running one prediction.
#[derive(Debug, Clone)]
pub struct BundleBuilder {
    root: PathBuf,
    limits: UnpackLimits,
    smoke: SmokeTest,
}

impl BundleBuilder {
    /// A builder that keeps bundles under `root` and runs each build's smoke test where
    /// `smoke` says.
    pub fn new(root: impl Into<PathBuf>, smoke: SmokeTest) -> Self {
        Self {
            root: root.into(),
            limits: UnpackLimits::default(),
            smoke,
        }
    }

    /// Sets the unpacking limits.
    pub fn with_limits(mut self, limits: UnpackLimits) -> Self {
        self.limits = limits;
        self
    }

    async fn unpack_and_check(
        &self,
        version: &StoredVersion,
        archive: &Path,
        staging: &Path,
        events: &Events,
    ) -> Result<(PathBuf, BuildRecord)> {
        events.progress(format!(
            "unpacking the {} archive ({} bytes, sha256 {})",
            match version.format {
                crate::store::ArchiveFormat::TarGz => "tar.gz",
                crate::store::ArchiveFormat::Zip => "zip",
            },
            version.size,
            &version.sha256[..12.min(version.sha256.len())]
        ));
        let (archive, staging_dir) = (archive.to_owned(), staging.to_owned());
        let (format, limits) = (version.format, self.limits);
        let root = blocking(move || {
            std::fs::create_dir_all(&staging_dir).map_err(|source| Error::Io {
                context: format!("creating {}", staging_dir.display()),
                source,
            })?;
            unpack(&archive, format, &staging_dir, limits)
        })
        .await?;
        let converted = {
            let root = root.clone();
            blocking(move || checkpoint::convert_in_place(&root)).await?
        };
        match converted {
            Some(InPlace::Converted(tensors)) => events.log(format!(
                "pytorch_model.bin read without running its pickle: {tensors} tensors written \
                 as safetensors, the .bin files removed"
            )),
            Some(InPlace::Dropped) => {
                events.log("pytorch_model.bin removed unread: the model has safetensors weights")
            }
            None => {}
        }
        // Only the build writes a build record: one that came with the upload goes unread.
        if blocking({
            let root = root.clone();
            move || BuildRecord::remove(&root)
        })
        .await?
        {
            events.log(format!(
                "{} removed: the build writes its own",
                BuildRecord::FILE
            ));
        }
        events.progress("checking the model files");
        let layout = {
            let root = root.clone();
            blocking(move || ModelLayout::inspect(&root)).await?
        };
        events.log(format!(
            "task {}, architecture {}, weights {}",
            layout.task,
            layout.architecture.as_str(),
            layout
                .weights
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        {
            let layout = layout.clone();
            blocking(move || crate::model::size::check_config_matches_weights(&layout)).await?;
        }
        events.progress("smoke test: loading the model and running one prediction");
        let report = self.smoke.run(&root, layout, events).await?;
        events.log(format!("smoke prediction: {report}"));
        // What `auto` measured is kept with the bundle: its servers serve that choice.
        let record = BuildRecord {
            precision: report.precision,
        };
        if record.precision.is_some() {
            let (root, record) = (root.clone(), record.clone());
            blocking(move || record.write(&root)).await?;
        }
        Ok((root, record))
    }
}

/// Removes `ROOT/<model>/<version>.partial`, the folders of builds a crash interrupted.
fn remove_partial_bundles(root: &Path) -> Result<usize> {
    let io = |context: &str, path: &Path, source| Error::Io {
        context: format!("{context} {}", path.display()),
        source,
    };
    let models = match std::fs::read_dir(root) {
        Ok(models) => models,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("listing", root, e)),
    };
    let mut removed = 0;
    for model in models.flatten().filter(|e| e.path().is_dir()) {
        let dir = model.path();
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| io("listing", &dir, e))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "partial") {
                std::fs::remove_dir_all(&path).map_err(|e| io("removing", &path, e))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Load(format!("a build step panicked: {e}")))?
}

#[async_trait::async_trait]
impl ImageBuilder for BundleBuilder {
    async fn build(
        &self,
        version: &StoredVersion,
        archive: &Path,
        events: &Events,
    ) -> Result<Artifact> {
        let model_dir = self.root.join(version.model.as_str());
        let target = model_dir.join(version.version.to_string());
        let staging = model_dir.join(format!("{}.partial", version.version));
        let _ = tokio::fs::remove_dir_all(&staging).await;
        let checked = self
            .unpack_and_check(version, archive, &staging, events)
            .await;
        let (root, record) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&staging).await;
                return Err(e);
            }
        };
        // A rebuild replaces an earlier bundle of the same (immutable) version.
        let _ = tokio::fs::remove_dir_all(&target).await;
        tokio::fs::rename(&staging, &target)
            .await
            .map_err(|source| Error::Io {
                context: format!("moving the bundle to {}", target.display()),
                source,
            })?;
        let relative = root.strip_prefix(&staging).unwrap_or(Path::new(""));
        Ok(Artifact::Bundle {
            dir: target.join(relative),
            precision: record.precision,
        })
    }

    async fn clean_up(&self) -> Result<usize> {
        let root = self.root.clone();
        blocking(move || remove_partial_bundles(&root)).await
    }

    async fn remove(&self, artifact: &Artifact) -> Result<()> {
        if let Artifact::Bundle { dir, .. } = artifact {
            // The bundle is ROOT/<model>/<version>[/<wrapped folder>]: remove the version's folder.
            let version_dir = dir
                .ancestors()
                .find(|p| p.parent().and_then(Path::parent) == Some(self.root.as_path()))
                .unwrap_or(dir);
            if version_dir.starts_with(&self.root) {
                let _ = tokio::fs::remove_dir_all(version_dir).await;
            }
        }
        Ok(())
    }
}
