//! [`ImageBuilder`]: turning a stored version into an [`Artifact`] that a
//! [`Rollout`](crate::rollout::Rollout) can start.
//!
//! Every builder checks the model before anything is switched: the archive unpacks safely,
//! the model directory is complete, and the model loads and answers one prediction.

mod archive;
mod bundle;
pub mod context;
#[cfg(feature = "docker")]
mod docker;
pub mod image;
#[cfg(feature = "kubernetes")]
mod job_context;
#[cfg(feature = "kubernetes")]
mod kubernetes;
pub mod smoke;

pub use archive::{pack_dir, UnpackLimits};
pub use bundle::BundleBuilder;
#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub use docker::{DockerBuildConfig, DockerImageBuilder, RegistryAuth};
#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub use job_context::JobContext;
#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub use kubernetes::{KubeBuildConfig, KubeImageBuilder};
pub use smoke::{SmokeProcess, SmokeReport, SmokeRunner, SmokeTest};

use crate::events::Events;
use crate::predict::Accuracy;
use crate::store::StoredVersion;
use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a build produces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Artifact {
    /// A validated, unpacked model directory (the embedded backend).
    Bundle {
        /// The model directory.
        dir: PathBuf,
        /// What `auto` precision measured at build and chose (also in the bundle's
        /// [`BuildRecord::FILE`](crate::predict::BuildRecord::FILE)).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        precision: Option<Accuracy>,
    },
    /// A container image (the docker and Kubernetes backends).
    Image {
        /// The image reference, `so1s/<model>:<version>` (under a registry prefix if pushed).
        reference: String,
        /// The image id (`sha256:...`) the build produced: what is run, even if the tag moves.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// What `auto` precision measured at build and chose, when the build reported it
        /// (a Kubernetes build Job measures in the cluster: its image holds the record,
        /// the api server does not see it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        precision: Option<Accuracy>,
    },
}

impl Artifact {
    /// A bundle directory with no precision measured.
    pub fn bundle(dir: impl Into<PathBuf>) -> Self {
        Artifact::Bundle {
            dir: dir.into(),
            precision: None,
        }
    }

    /// This artifact, with what `auto` precision measured at build.
    pub fn with_precision(mut self, measured: Option<Accuracy>) -> Self {
        match &mut self {
            Artifact::Bundle { precision, .. } | Artifact::Image { precision, .. } => {
                *precision = measured
            }
        }
        self
    }

    /// What `auto` precision measured at build and chose, when known.
    pub fn precision(&self) -> Option<&Accuracy> {
        match self {
            Artifact::Bundle { precision, .. } | Artifact::Image { precision, .. } => {
                precision.as_ref()
            }
        }
    }
}

impl std::fmt::Display for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Artifact::Bundle { dir, .. } => write!(f, "bundle {}", dir.display()),
            Artifact::Image { reference, .. } => write!(f, "image {reference}"),
        }
    }
}

/// Builds deployable artifacts from stored versions.
#[async_trait::async_trait]
pub trait ImageBuilder: Send + Sync {
    /// Builds `version` from its archive at `archive`, reporting progress and log lines to
    /// `events`. Fails with a message a user can act on; a failed build leaves nothing behind.
    async fn build(
        &self,
        version: &StoredVersion,
        archive: &Path,
        events: &Events,
    ) -> Result<Artifact>;

    /// Removes an artifact that is no longer needed (its version was deleted).
    async fn remove(&self, artifact: &Artifact) -> Result<()>;

    /// Removes what builds interrupted by a crash left behind (half-unpacked folders, build
    /// contexts); called once at start, before any build runs. Returns how many it removed.
    async fn clean_up(&self) -> Result<usize> {
        Ok(0)
    }
}
