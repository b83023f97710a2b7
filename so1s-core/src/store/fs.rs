//! [`FsModelStore`]: versions as files in a directory.
//!
//! ```text
//! ROOT/models/NAME/vN/archive        the uploaded bytes
//! ROOT/models/NAME/vN/version.json   StoredVersion
//! ROOT/models/NAME/vN.deleted        tombstone: vN existed, its number is never reused
//! ROOT/incoming/                     uploads in progress (cleared on open)
//! ```
//!
//! An upload is written and checksummed under `incoming/`, synced, then renamed into place in
//! one step, so a version is either whole or absent. With a quota, the archives' bytes are
//! counted (from the files at open, then as they come and go) and an upload that would pass
//! it is refused as it arrives.

use super::{ArchiveDigest, ArchiveSummary, ByteStream, ModelStore, StoredVersion};
use crate::model::{ModelName, VersionId};
use crate::{Error, Result};
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;

const ARCHIVE: &str = "archive";
const METADATA: &str = "version.json";
const TOMBSTONE: &str = ".deleted";

/// A [`ModelStore`] in a local directory.
#[derive(Debug)]
pub struct FsModelStore {
    root: PathBuf,
    max_size: u64,
    numbering: tokio::sync::Mutex<()>,
    uploads: AtomicU64,
    /// The most the archives may take together.
    quota: Option<u64>,
    /// Bytes the archives take, uploads in progress included.
    used: AtomicU64,
}

impl FsModelStore {
    /// Opens (creating if needed) a store under `root` that refuses archives over `max_size`
    /// bytes. Leftovers of uploads interrupted by a crash are removed.
    pub async fn open(root: impl Into<PathBuf>, max_size: u64) -> Result<Self> {
        let root = root.into();
        let incoming = root.join("incoming");
        if tokio::fs::try_exists(&incoming).await.unwrap_or(false) {
            tokio::fs::remove_dir_all(&incoming)
                .await
                .map_err(|e| io_error("clearing interrupted uploads", &incoming, e))?;
        }
        for dir in [&incoming, &root.join("models")] {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| io_error("creating the store", dir, e))?;
        }
        let used = archives_size(&root.join("models"));
        Ok(Self {
            root,
            max_size,
            numbering: tokio::sync::Mutex::new(()),
            uploads: AtomicU64::new(0),
            quota: None,
            used: AtomicU64::new(used),
        })
    }

    /// Refuses uploads that would take the archives past `quota` bytes together
    /// ([`Error::QuotaExceeded`]).
    pub fn with_quota(mut self, quota: u64) -> Self {
        self.quota = Some(quota);
        self
    }

    /// Bytes the stored archives take (uploads in progress included).
    pub fn used_bytes(&self) -> u64 {
        self.used.load(Ordering::SeqCst)
    }

    /// Counts `bytes` more against the quota, or refuses them (counting nothing).
    fn reserve(&self, bytes: u64) -> Result<()> {
        let Some(quota) = self.quota else {
            self.used.fetch_add(bytes, Ordering::SeqCst);
            return Ok(());
        };
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|total| *total <= quota)
            })
            .map(|_| ())
            .map_err(|used| {
                Error::QuotaExceeded(format!(
                    "the store's disk quota of {quota} bytes is reached ({used} bytes stored): \
                     delete versions or raise --store-quota-bytes"
                ))
            })
    }

    fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn model_dir(&self, model: &ModelName) -> PathBuf {
        self.root.join("models").join(model.as_str())
    }

    fn version_dir(&self, model: &ModelName, version: VersionId) -> PathBuf {
        self.model_dir(model).join(version.to_string())
    }

    /// Streams the body into `dir/archive`, returning its size, sha256 and format.
    async fn receive(&self, dir: &Path, mut body: ByteStream) -> Result<ArchiveSummary> {
        let path = dir.join(ARCHIVE);
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| io_error("creating the upload file", &path, e))?;
        let mut digest = ArchiveDigest::default();
        // What this upload counts against the quota; given back if it is not stored.
        let mut reserved = 0;
        let received = async {
            // Refused at once, before reading, when the quota is already passed.
            self.reserve(0)?;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::Upload(format!("reading the upload: {e}")))?;
                digest.update(&chunk);
                if digest.size() > self.max_size {
                    return Err(Error::TooLarge {
                        limit: self.max_size,
                    });
                }
                self.reserve(chunk.len() as u64)?;
                reserved += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_error("writing the upload", &path, e))?;
            }
            // tokio's File finishes a write in the background: flush reports its error (a
            // full disk on the last chunk), which sync_all alone would not.
            file.flush()
                .await
                .map_err(|e| io_error("writing the upload", &path, e))?;
            file.sync_all()
                .await
                .map_err(|e| io_error("syncing the upload", &path, e))
        }
        .await;
        match received {
            Ok(()) => digest.finish().inspect_err(|_| self.release(reserved)),
            Err(e) => {
                self.release(reserved);
                Err(e)
            }
        }
    }

    /// The number after every version the model has had, deleted ones included.
    async fn next_version(&self, model: &ModelName) -> Result<VersionId> {
        let dir = self.model_dir(model);
        let mut newest: Option<VersionId> = None;
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(VersionId::FIRST),
            Err(e) => return Err(io_error("listing versions", &dir, e)),
        };
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_error("listing versions", &dir, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(version) = VersionId::parse(name.trim_end_matches(TOMBSTONE)) {
                newest = newest.max(Some(version));
            }
        }
        Ok(newest.map_or(VersionId::FIRST, VersionId::next))
    }
}

#[async_trait::async_trait]
impl ModelStore for FsModelStore {
    async fn put(&self, model: &ModelName, body: ByteStream) -> Result<StoredVersion> {
        let upload = self.uploads.fetch_add(1, Ordering::Relaxed);
        let staging =
            self.root
                .join("incoming")
                .join(format!("{}-{}-{upload}", model, std::process::id()));
        tokio::fs::create_dir_all(&staging)
            .await
            .map_err(|e| io_error("creating the upload directory", &staging, e))?;
        let mut counted = 0;
        let stored = async {
            let summary = self.receive(&staging, body).await?;
            counted = summary.size;
            let _numbering = self.numbering.lock().await;
            let version = self.next_version(model).await?;
            let stored_at = crate::clock::now_ms() / 1000;
            let stored = StoredVersion::new(model.clone(), version, summary, stored_at);
            let metadata = serde_json::to_vec_pretty(&stored)
                .map_err(|e| Error::Upload(format!("encoding version metadata: {e}")))?;
            write_synced(&staging.join(METADATA), &metadata).await?;
            let model_dir = self.model_dir(model);
            tokio::fs::create_dir_all(&model_dir)
                .await
                .map_err(|e| io_error("creating the model directory", &model_dir, e))?;
            let target = self.version_dir(model, version);
            tokio::fs::rename(&staging, &target)
                .await
                .map_err(|e| io_error("moving the upload into place", &target, e))?;
            sync_dir(&model_dir).await?;
            Ok(stored)
        }
        .await;
        if stored.is_err() {
            self.release(counted);
            let _ = tokio::fs::remove_dir_all(&staging).await;
        }
        stored
    }

    async fn models(&self) -> Result<Vec<ModelName>> {
        let dir = self.root.join("models");
        let mut names = Vec::new();
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(|e| io_error("listing models", &dir, e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_error("listing models", &dir, e))?
        {
            if let Ok(name) = ModelName::parse(&entry.file_name().to_string_lossy()) {
                if !self.versions(&name).await?.is_empty() {
                    names.push(name);
                }
            }
        }
        names.sort();
        Ok(names)
    }

    async fn versions(&self, model: &ModelName) -> Result<Vec<StoredVersion>> {
        let dir = self.model_dir(model);
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("listing versions", &dir, e)),
        };
        let mut versions = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_error("listing versions", &dir, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(version) = VersionId::parse(&name) {
                versions.push(self.version(model, version).await?);
            }
        }
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn version(&self, model: &ModelName, version: VersionId) -> Result<StoredVersion> {
        let path = self.version_dir(model, version).join(METADATA);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("{model} {version}")))
            }
            Err(e) => return Err(io_error("reading version metadata", &path, e)),
        };
        serde_json::from_slice(&bytes).map_err(|source| Error::ModelJson { path, source })
    }

    async fn archive(&self, model: &ModelName, version: VersionId) -> Result<PathBuf> {
        self.version(model, version).await?;
        Ok(self.version_dir(model, version).join(ARCHIVE))
    }

    async fn delete(&self, model: &ModelName, version: VersionId) -> Result<()> {
        let _numbering = self.numbering.lock().await;
        self.version(model, version).await?;
        let dir = self.version_dir(model, version);
        let freed = file_size(&dir.join(ARCHIVE)).await;
        let tombstone = self.model_dir(model).join(format!("{version}{TOMBSTONE}"));
        write_synced(&tombstone, b"").await?;
        // Move it out of sight in one step, then remove the files at leisure.
        let doomed = self.root.join("incoming").join(format!(
            "deleted-{model}-{version}-{}",
            self.uploads.fetch_add(1, Ordering::Relaxed)
        ));
        tokio::fs::rename(&dir, &doomed)
            .await
            .map_err(|e| io_error("deleting the version", &dir, e))?;
        self.release(freed);
        tokio::fs::remove_dir_all(&doomed)
            .await
            .map_err(|e| io_error("removing the deleted version's files", &doomed, e))
    }

    async fn remove_archive(&self, model: &ModelName, version: VersionId) -> Result<u64> {
        let _numbering = self.numbering.lock().await;
        self.version(model, version).await?;
        let path = self.version_dir(model, version).join(ARCHIVE);
        let freed = file_size(&path).await;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                self.release(freed);
                Ok(freed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_error("removing the archive", &path, e)),
        }
    }
}

/// The size of the file at `path`, 0 if there is none.
async fn file_size(path: &Path) -> u64 {
    tokio::fs::metadata(path).await.map_or(0, |m| m.len())
}

/// The bytes of every version's archive under `models` (at open: a walk of two levels).
fn archives_size(models: &Path) -> u64 {
    let dirs = |dir: &Path| {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .collect::<Vec<_>>()
    };
    dirs(models)
        .iter()
        .flat_map(|model| dirs(model))
        .filter_map(|version| std::fs::metadata(version.join(ARCHIVE)).ok())
        .map(|metadata| metadata.len())
        .sum()
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| io_error("creating", path, e))?;
    file.write_all(bytes)
        .await
        .map_err(|e| io_error("writing", path, e))?;
    file.flush()
        .await
        .map_err(|e| io_error("writing", path, e))?;
    file.sync_all()
        .await
        .map_err(|e| io_error("syncing", path, e))
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let file = tokio::fs::File::open(dir)
        .await
        .map_err(|e| io_error("opening", dir, e))?;
    file.sync_all()
        .await
        .map_err(|e| io_error("syncing", dir, e))
}

fn io_error(step: &str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        context: format!("{step} {}", path.display()),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ArchiveFormat;
    use bytes::Bytes;
    use sha2::{Digest, Sha256};

    fn body(chunks: Vec<&'static [u8]>) -> ByteStream {
        Box::pin(futures::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
        ))
    }

    const GZIP: &[u8] = &[0x1f, 0x8b, 8, 0, 1, 2, 3];

    async fn store(limit: u64) -> (tempfile::TempDir, FsModelStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsModelStore::open(dir.path(), limit).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn versions_are_numbered_checksummed_and_listed() {
        let (_dir, store) = store(1 << 20).await;
        let model = ModelName::parse("minilm").unwrap();
        let v1 = store
            .put(&model, body(vec![&GZIP[..2], &GZIP[2..]]))
            .await
            .unwrap();
        assert_eq!(v1.version, VersionId::FIRST);
        assert_eq!(v1.size, GZIP.len() as u64);
        assert_eq!(v1.format, ArchiveFormat::TarGz);
        let expected: String = Sha256::digest(GZIP)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(v1.sha256, expected);
        let v2 = store
            .put(&model, body(vec![b"PK\x03\x04rest"]))
            .await
            .unwrap();
        assert_eq!(v2.version.to_string(), "v2");
        assert_eq!(v2.format, ArchiveFormat::Zip);

        assert_eq!(store.models().await.unwrap(), std::slice::from_ref(&model));
        let versions = store.versions(&model).await.unwrap();
        assert_eq!(versions, [v1.clone(), v2]);
        let path = store.archive(&model, v1.version).await.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), GZIP);
    }

    #[tokio::test]
    async fn refused_uploads_leave_nothing_behind() {
        let (dir, store) = store(8).await;
        let model = ModelName::parse("m").unwrap();
        let err = store.put(&model, body(vec![GZIP, GZIP])).await.unwrap_err();
        assert!(matches!(err, Error::TooLarge { limit: 8 }), "{err:?}");
        let err = store.put(&model, body(vec![b"hello"])).await.unwrap_err();
        assert!(
            err.to_string().contains("neither a .tar.gz nor a .zip"),
            "{err}"
        );
        let err = store.put(&model, body(vec![])).await.unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(GZIP)),
            Err(std::io::Error::other("connection reset")),
        ]));
        let err = store.put(&model, failing).await.unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");

        assert!(store.versions(&model).await.unwrap().is_empty());
        assert!(store.models().await.unwrap().is_empty());
        let incoming = std::fs::read_dir(dir.path().join("incoming"))
            .unwrap()
            .count();
        assert_eq!(incoming, 0, "staging files left behind");
    }

    #[tokio::test]
    async fn deleted_numbers_are_never_reused() {
        let (_dir, store) = store(1 << 20).await;
        let model = ModelName::parse("m").unwrap();
        store.put(&model, body(vec![GZIP])).await.unwrap();
        let v2 = store.put(&model, body(vec![GZIP])).await.unwrap();
        store.delete(&model, v2.version).await.unwrap();
        let err = store.version(&model, v2.version).await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        let v3 = store.put(&model, body(vec![GZIP])).await.unwrap();
        assert_eq!(v3.version.to_string(), "v3");
        let listed: Vec<String> = store
            .versions(&model)
            .await
            .unwrap()
            .iter()
            .map(|v| v.version.to_string())
            .collect();
        assert_eq!(listed, ["v1", "v3"]);
    }

    #[tokio::test]
    async fn reopening_keeps_versions_and_clears_interrupted_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let model = ModelName::parse("m").unwrap();
        {
            let store = FsModelStore::open(dir.path(), 1 << 20).await.unwrap();
            store.put(&model, body(vec![GZIP])).await.unwrap();
        }
        // What a crash in the middle of an upload leaves.
        std::fs::create_dir_all(dir.path().join("incoming/m-1-0")).unwrap();
        std::fs::write(dir.path().join("incoming/m-1-0/archive"), GZIP).unwrap();
        let store = FsModelStore::open(dir.path(), 1 << 20).await.unwrap();
        assert_eq!(store.versions(&model).await.unwrap().len(), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("incoming"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn concurrent_uploads_get_distinct_versions() {
        let (_dir, store) = store(1 << 20).await;
        let model = ModelName::parse("m").unwrap();
        let puts = (0..8).map(|_| store.put(&model, body(vec![GZIP])));
        let mut versions: Vec<u32> = futures::future::join_all(puts)
            .await
            .into_iter()
            .map(|r| r.unwrap().version.number())
            .collect();
        versions.sort();
        assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_quota_counts_archives_as_they_come_and_go_and_refuses_past_it() {
        let (dir, store) = store(1 << 20).await;
        let store = store.with_quota(20);
        let model = ModelName::parse("m").unwrap();
        let v1 = store.put(&model, body(vec![GZIP])).await.unwrap();
        store.put(&model, body(vec![GZIP])).await.unwrap();
        assert_eq!(store.used_bytes(), 14);
        let refused = store.put(&model, body(vec![GZIP])).await.unwrap_err();
        assert!(matches!(&refused, Error::QuotaExceeded(m) if m.contains("quota of 20 bytes")));
        assert_eq!(store.used_bytes(), 14, "the refused upload counts nothing");
        assert_eq!(store.versions(&model).await.unwrap().len(), 2);

        // Removing an archive (retention) or a version frees its bytes.
        assert_eq!(store.remove_archive(&model, v1.version).await.unwrap(), 7);
        assert_eq!(store.remove_archive(&model, v1.version).await.unwrap(), 0);
        assert!(
            store.version(&model, v1.version).await.is_ok(),
            "the record stays"
        );
        let v3 = store.put(&model, body(vec![GZIP])).await.unwrap();
        store.delete(&model, v3.version).await.unwrap();
        assert_eq!(store.used_bytes(), 7);

        // Reopened, the store counts what is on disk.
        drop(store);
        let reopened = FsModelStore::open(dir.path(), 1 << 20).await.unwrap();
        assert_eq!(reopened.used_bytes(), 7);
    }

    #[tokio::test]
    async fn a_full_disk_refuses_the_upload_with_507_and_leaves_nothing() {
        let (dir, store) = store(1 << 20).await;
        let model = ModelName::parse("m").unwrap();
        // The first upload's archive is written to /dev/full, which answers every write with
        // the operating system's "no space left on device".
        let staging = dir
            .path()
            .join("incoming")
            .join(format!("m-{}-0", std::process::id()));
        std::fs::create_dir_all(&staging).unwrap();
        std::os::unix::fs::symlink("/dev/full", staging.join(ARCHIVE)).unwrap();
        let refused = store.put(&model, body(vec![GZIP])).await.unwrap_err();
        assert!(refused.is_disk_full(), "{refused:?}");
        let api = crate::http::error::ApiError::from(&refused);
        assert_eq!(api.status.as_u16(), 507);
        assert!(!staging.exists(), "the partial upload is removed");
        assert_eq!(store.used_bytes(), 0);
        assert!(store.versions(&model).await.unwrap().is_empty());
        // With space again, the next upload is v1.
        let stored = store.put(&model, body(vec![GZIP])).await.unwrap();
        assert_eq!(stored.version.number(), 1);
    }
}
