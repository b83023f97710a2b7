//! [`ModelStore`]: immutable, checksummed model versions.
//!
//! A version is the archive a user uploaded (`.tar.gz` or `.zip`), stored as is with its
//! sha256 and size. Versions never change once stored; a crash while storing never leaves a
//! half version visible. [`FsModelStore`] keeps them in a directory; it is the store of every
//! backend (the docker backend reads the same files, the Kubernetes backend mounts them).

mod digest;
mod fs;

pub(crate) use digest::read_chunks;
pub use digest::{inspect_archive, ArchiveDigest, ArchiveSummary};
pub use fs::FsModelStore;

use crate::model::{ModelName, VersionId};
use crate::Result;
use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::pin::Pin;

/// An upload's bytes as they arrive.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// The archive formats so1s accepts, told apart by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveFormat {
    /// A gzip-compressed tar archive.
    TarGz,
    /// A zip archive.
    Zip,
}

impl ArchiveFormat {
    /// Recognises an archive from its first bytes.
    pub fn sniff(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Self::TarGz)
        } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Some(Self::Zip)
        } else {
            None
        }
    }
}

/// A stored version: what the store knows of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVersion {
    /// The model.
    pub model: ModelName,
    /// The version.
    pub version: VersionId,
    /// Hex sha256 of the archive.
    pub sha256: String,
    /// The archive's size in bytes.
    pub size: u64,
    /// The archive's format.
    pub format: ArchiveFormat,
    /// When it was stored, in seconds since the Unix epoch.
    pub stored_at: u64,
}

impl StoredVersion {
    /// Version `version` of `model`: the archive `summary` describes, stored at `stored_at`
    /// (seconds since the Unix epoch).
    pub fn new(
        model: ModelName,
        version: VersionId,
        summary: ArchiveSummary,
        stored_at: u64,
    ) -> Self {
        Self {
            model,
            version,
            sha256: summary.sha256,
            size: summary.size,
            format: summary.format,
            stored_at,
        }
    }
}

/// Where model versions live.
#[async_trait::async_trait]
pub trait ModelStore: Send + Sync {
    /// Stores a new version of `model` from `body`, numbered after the newest existing one.
    /// Fails without storing anything if the body is over the store's size limit, is not a
    /// `.tar.gz` or `.zip`, or cannot be read to its end.
    async fn put(&self, model: &ModelName, body: ByteStream) -> Result<StoredVersion>;

    /// Every model with at least one version, by name.
    async fn models(&self) -> Result<Vec<ModelName>>;

    /// A model's versions, oldest first (empty for an unknown model).
    async fn versions(&self, model: &ModelName) -> Result<Vec<StoredVersion>>;

    /// One version, or [`Error::NotFound`](crate::Error::NotFound).
    async fn version(&self, model: &ModelName, version: VersionId) -> Result<StoredVersion>;

    /// A local path to the version's archive, to read it (never to change it).
    async fn archive(&self, model: &ModelName, version: VersionId) -> Result<PathBuf>;

    /// Deletes a version. Whether it may be deleted (it must not be serving) is the caller's
    /// decision.
    async fn delete(&self, model: &ModelName, version: VersionId) -> Result<()>;

    /// Removes a version's archive but keeps its record (retention of an old version whose
    /// archive is not wanted any more); [`ModelStore::archive`] fails for it after. Returns
    /// the bytes freed. The default: archives are kept (0).
    async fn remove_archive(&self, _model: &ModelName, _version: VersionId) -> Result<u64> {
        Ok(0)
    }
}
