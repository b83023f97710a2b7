//! [`ArchiveDigest`]: an archive's size, sha256 and format, computed as its bytes go by: the
//! store computes it while receiving an upload, a build Job checks the archive it was given
//! against it ([`inspect_archive`]).

use super::ArchiveFormat;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// What [`ArchiveDigest`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256.
    pub sha256: String,
    /// Format, from the first bytes.
    pub format: ArchiveFormat,
}

/// Size, sha256 and first bytes of an archive, fed chunk by chunk.
#[derive(Debug, Default)]
pub struct ArchiveDigest {
    hasher: Sha256,
    size: u64,
    head: Vec<u8>,
}

/// How many first bytes [`ArchiveFormat::sniff`] needs.
const HEAD: usize = 4;

impl ArchiveDigest {
    /// Adds the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        if self.head.len() < HEAD {
            let take = (HEAD - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
    }

    /// Bytes seen so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The summary; an empty input or one that is neither a `.tar.gz` nor a `.zip` is an
    /// [`Error::Upload`].
    pub fn finish(self) -> Result<ArchiveSummary> {
        let format = ArchiveFormat::sniff(&self.head).ok_or_else(|| {
            Error::Upload(if self.size == 0 {
                "the archive is empty".into()
            } else {
                "the archive is neither a .tar.gz nor a .zip".into()
            })
        })?;
        Ok(ArchiveSummary {
            size: self.size,
            sha256: format!("{:x}", self.hasher.finalize()),
            format,
        })
    }
}

/// Reads the archive at `path` (blocking) and summarises it.
pub fn inspect_archive(path: &Path) -> Result<ArchiveSummary> {
    let mut digest = ArchiveDigest::default();
    read_chunks(path, |chunk| digest.update(chunk))?;
    digest.finish().map_err(|e| match e {
        Error::Upload(why) => Error::Upload(format!("{}: {why}", path.display())),
        other => other,
    })
}

/// Reads the file at `path` (blocking) to its end in 1 MiB chunks, handing each to `each`
/// (a hasher's `update`): how an archive is summarised and a build context's files are
/// fingerprinted. A file that cannot be read is an [`Error::Io`] naming it.
pub(crate) fn read_chunks(path: &Path, mut each: impl FnMut(&[u8])) -> Result<()> {
    let io_error = |source| Error::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buffer).map_err(io_error)? {
            0 => return Ok(()),
            n => each(&buffer[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_does_not_change_the_summary() {
        let bytes: Vec<u8> = [0x1f, 0x8b].into_iter().chain(0..=255u8).collect();
        let mut whole = ArchiveDigest::default();
        whole.update(&bytes);
        let mut bytewise = ArchiveDigest::default();
        for byte in &bytes {
            bytewise.update(std::slice::from_ref(byte));
        }
        let (whole, bytewise) = (whole.finish().unwrap(), bytewise.finish().unwrap());
        assert_eq!(whole, bytewise);
        assert_eq!(whole.size, 258);
        assert_eq!(whole.format, ArchiveFormat::TarGz);
        assert_eq!(whole.sha256, format!("{:x}", Sha256::digest(&bytes)));
    }

    #[test]
    fn empty_and_unknown_inputs_are_refused() {
        assert!(ArchiveDigest::default()
            .finish()
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let mut text = ArchiveDigest::default();
        text.update(b"name: model\n");
        assert!(text.finish().unwrap_err().to_string().contains("neither"));
    }

    #[test]
    fn a_file_that_is_no_archive_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "not an archive").unwrap();
        let err = inspect_archive(&path).unwrap_err().to_string();
        assert!(
            err.contains("notes.txt") && err.contains("neither"),
            "{err}"
        );
    }

    #[test]
    fn a_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.zip");
        let bytes: Vec<u8> = b"PK\x03\x04"
            .iter()
            .copied()
            .cycle()
            .take(3 << 20)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let summary = inspect_archive(&path).unwrap();
        assert_eq!(summary.size, 3 << 20);
        assert_eq!(summary.format, ArchiveFormat::Zip);
        assert_eq!(summary.sha256, format!("{:x}", Sha256::digest(&bytes)));
        let missing = inspect_archive(&dir.path().join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }
}
