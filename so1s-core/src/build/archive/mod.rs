//! Unpacking an uploaded archive, which is untrusted input.
//!
//! Refused: absolute paths, `..`, links that point outside the directory (hard links,
//! devices and FIFOs always), writes through a link, more entries or bytes than the limits
//! allow, archives that unpack to more than `max_ratio` times their size. Sizes are counted
//! as bytes are written, so a header that lies (or a gzip bomb) stops at the limit. Archive
//! metadata (GNU long names and links, PAX records, zip link targets) is capped at
//! [`MAX_METADATA_BYTES`] before it is read. Once unpacked, every link must resolve to a file
//! inside, and is replaced by a copy of that file (counted against the limits): what comes
//! out holds regular files and folders only, so nothing after unpacking (a bundle, a Docker
//! build context) ever follows a link.

mod checks;
mod untar;
mod unzip;

use crate::store::ArchiveFormat;
use crate::{Error, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bounds on what one archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most entries (files, directories, links).
    pub max_entries: usize,
    /// Most bytes in all files together.
    pub max_total_bytes: u64,
    /// Most unpacked bytes per archive byte, once past [`RATIO_FLOOR`] (model weights barely
    /// compress; a bomb compresses a thousandfold).
    pub max_ratio: u64,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_total_bytes: 8 << 30,
            max_ratio: 20,
        }
    }
}

/// Largest GNU long name or link, PAX header, or zip link target read.
pub const MAX_METADATA_BYTES: u64 = 64 << 10;

/// Unpacked bytes below which the compression ratio is not checked (small text files
/// compress well and are harmless).
pub const RATIO_FLOOR: u64 = 64 << 20;

/// Packs a model directory into a `.tar.gz` in memory (what `so1s deploy DIR` uploads).
/// Links are followed, so the archive holds the files themselves. Weights barely compress
/// (MiniLM: 91 MB → 84 MB at the fastest level, for over a second of CPU), so the gzip
/// stream stores the files uncompressed.
pub fn pack_dir(dir: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io {
        context: format!("packing {}", dir.display()),
        source,
    };
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(true);
    builder.append_dir_all(".", dir).map_err(io)?;
    builder.into_inner().and_then(|e| e.finish()).map_err(io)
}

/// Unpacks `archive` into the empty directory `dest` and returns the model's root: `dest`
/// itself, or the single top-level folder the archive wraps everything in.
pub fn unpack(
    archive: &Path,
    format: ArchiveFormat,
    dest: &Path,
    limits: UnpackLimits,
) -> Result<PathBuf> {
    let file = File::open(archive).map_err(|source| Error::ModelFile {
        path: archive.to_owned(),
        source,
    })?;
    let archive_bytes = file
        .metadata()
        .map_err(|source| Error::ModelFile {
            path: archive.to_owned(),
            source,
        })?
        .len();
    let mut budget = Budget {
        limits,
        archive_bytes,
        entries: 0,
        bytes: 0,
    };
    match format {
        ArchiveFormat::TarGz => untar::unpack_tar(file, dest, &mut budget)?,
        ArchiveFormat::Zip => unzip::unpack_zip(file, dest, &mut budget)?,
    }
    checks::replace_links_with_files(dest, &mut budget)?;
    model_root(dest)
}

struct Budget {
    limits: UnpackLimits,
    archive_bytes: u64,
    entries: usize,
    bytes: u64,
}

impl Budget {
    fn entry(&mut self) -> Result<()> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(Error::InvalidModel(format!(
                "the archive has more than {} entries",
                self.limits.max_entries
            )));
        }
        Ok(())
    }

    /// Copies an entry's bytes into `target`, counting them against the limit.
    fn copy(&mut self, mut from: impl Read, target: &Path) -> Result<()> {
        let mut out = File::create(target).map_err(|e| write_error(target, e))?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = from
                .read(&mut buffer)
                .map_err(|e| Error::InvalidModel(format!("the archive is corrupt: {e}")))?;
            if n == 0 {
                return Ok(());
            }
            self.count(n as u64)?;
            out.write_all(&buffer[..n])
                .map_err(|e| write_error(target, e))?;
        }
    }
}

impl Budget {
    /// Counts `n` more unpacked bytes against the size and ratio limits.
    fn count(&mut self, n: u64) -> Result<()> {
        self.bytes += n;
        if self.bytes > self.limits.max_total_bytes {
            return Err(Error::InvalidModel(format!(
                "the archive unpacks to more than {} bytes",
                self.limits.max_total_bytes
            )));
        }
        let ratio_cap = self.archive_bytes.saturating_mul(self.limits.max_ratio);
        if self.bytes > RATIO_FLOOR && self.bytes > ratio_cap {
            return Err(Error::InvalidModel(format!(
                "the archive unpacks to more than {} times its size of {} bytes \
                 (a compression bomb?)",
                self.limits.max_ratio, self.archive_bytes
            )));
        }
        Ok(())
    }
}

/// The directory holding the model: `dest`, or its only child directory when the archive
/// wrapped everything in one folder.
fn model_root(dest: &Path) -> Result<PathBuf> {
    let entries: Vec<_> = std::fs::read_dir(dest)
        .map_err(|e| write_error(dest, e))?
        .filter_map(|entry| entry.ok())
        .collect();
    match entries.as_slice() {
        [] => Err(Error::InvalidModel("the archive is empty".into())),
        [only] if only.file_type().map(|t| t.is_dir()).unwrap_or(false) => Ok(only.path()),
        _ => Ok(dest.to_owned()),
    }
}

fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        context: format!("unpacking into {}", path.display()),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A tar.gz built entry by entry, with raw names so hostile paths can be written.
    pub(super) struct Tar {
        pub(super) builder: tar::Builder<flate2::write::GzEncoder<Vec<u8>>>,
    }

    impl Tar {
        pub(super) fn new() -> Self {
            let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            Self {
                builder: tar::Builder::new(encoder),
            }
        }

        pub(super) fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
            let mut header = tar::Header::new_gnu();
            let field = &mut header.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(kind);
            header.set_size(size);
            header.set_mode(0o644);
            header.set_cksum();
            header
        }

        pub(super) fn file(mut self, name: &str, data: &[u8]) -> Self {
            let header = Self::header(name, tar::EntryType::Regular, data.len() as u64);
            self.builder.append(&header, data).unwrap();
            self
        }

        pub(super) fn dir(mut self, name: &str) -> Self {
            let header = Self::header(name, tar::EntryType::Directory, 0);
            self.builder.append(&header, std::io::empty()).unwrap();
            self
        }

        pub(super) fn link(mut self, name: &str, target: &str) -> Self {
            let mut header = Self::header(name, tar::EntryType::Symlink, 0);
            header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
            header.set_cksum();
            self.builder.append(&header, std::io::empty()).unwrap();
            self
        }

        pub(super) fn bytes(self) -> Vec<u8> {
            self.builder.into_inner().unwrap().finish().unwrap()
        }
    }

    /// An archive written to a temporary folder, and an empty destination beside it.
    pub(super) struct Case {
        _tmp: tempfile::TempDir,
        archive: PathBuf,
        format: ArchiveFormat,
        pub(super) dest: PathBuf,
    }

    impl Case {
        pub(super) fn new(bytes: &[u8], format: ArchiveFormat) -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let archive = tmp.path().join("upload");
            std::fs::write(&archive, bytes).unwrap();
            let dest = tmp.path().join("work/unpacked");
            std::fs::create_dir_all(&dest).unwrap();
            Case {
                _tmp: tmp,
                archive,
                format,
                dest,
            }
        }

        pub(super) fn unpack_with(&self, limits: UnpackLimits) -> Result<PathBuf> {
            unpack(&self.archive, self.format, &self.dest, limits)
        }

        pub(super) fn unpack(&self) -> Result<PathBuf> {
            self.unpack_with(UnpackLimits::default())
        }
    }

    pub(super) fn case(tar: Tar) -> Case {
        Case::new(&tar.bytes(), ArchiveFormat::TarGz)
    }

    pub(super) fn refused(tar: Tar, expected: &str) {
        let case = case(tar);
        let err = case.unpack().unwrap_err().to_string();
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
        // Nothing landed beside the destination.
        let beside: Vec<_> = std::fs::read_dir(case.dest.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            beside,
            ["unpacked"],
            "files written outside the destination"
        );
    }

    pub(super) fn zip_archive(build: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Case {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        build(&mut writer);
        Case::new(&writer.finish().unwrap().into_inner(), ArchiveFormat::Zip)
    }

    #[test]
    fn a_wrapped_model_folder_becomes_the_root() {
        let case = case(
            Tar::new()
                .dir("minilm/")
                .file("minilm/config.json", b"{}")
                .file("minilm/1_Pooling/config.json", b"{\"p\": 1}")
                .link("minilm/weights", "config.json"),
        );
        let root = case.unpack().unwrap();
        assert_eq!(root, case.dest.join("minilm"));
        assert_eq!(
            std::fs::read(root.join("1_Pooling/config.json")).unwrap(),
            b"{\"p\": 1}"
        );
        assert_eq!(std::fs::read(root.join("weights")).unwrap(), b"{}");
        let weights = std::fs::symlink_metadata(root.join("weights")).unwrap();
        assert!(
            weights.is_file(),
            "links are replaced by copies of their files"
        );
    }

    #[test]
    fn a_compression_bomb_stops_at_the_ratio() {
        let zeros = vec![0u8; (RATIO_FLOOR + (4 << 20)) as usize];
        let case = case(Tar::new().file("zeros", &zeros));
        let err = case.unpack().unwrap_err();
        assert!(err.to_string().contains("times its size"), "{err}");
    }

    #[test]
    fn packed_directories_unpack_to_the_same_files() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        std::fs::create_dir_all(model.join("1_Pooling")).unwrap();
        std::fs::write(model.join("config.json"), b"{}").unwrap();
        std::fs::write(model.join("1_Pooling/config.json"), b"{\"p\": 2}").unwrap();
        let case = Case::new(&pack_dir(&model).unwrap(), ArchiveFormat::TarGz);
        let root = case.unpack().unwrap();
        assert_eq!(root, case.dest);
        assert_eq!(
            std::fs::read(root.join("1_Pooling/config.json")).unwrap(),
            b"{\"p\": 2}"
        );
    }

    #[test]
    fn flat_archives_unpack_in_place() {
        let case = case(
            Tar::new()
                .file("config.json", b"{}")
                .file("vocab.txt", b"a"),
        );
        assert_eq!(case.unpack().unwrap(), case.dest);
    }

    #[test]
    fn size_and_entry_limits_hold_even_when_headers_lie() {
        let big = case(Tar::new().file("big", &vec![7u8; 10_000]));
        let limits = UnpackLimits {
            max_entries: 10,
            max_total_bytes: 4096,
            ..UnpackLimits::default()
        };
        let err = big.unpack_with(limits).unwrap_err();
        assert!(err.to_string().contains("more than 4096 bytes"), "{err}");

        let mut tar = Tar::new();
        for i in 0..12 {
            tar = tar.file(&format!("f{i}"), b"x");
        }
        let many = case(tar);
        let err = many.unpack_with(limits).unwrap_err();
        assert!(err.to_string().contains("more than 10 entries"), "{err}");
    }

    #[test]
    fn corrupt_and_empty_archives_say_so() {
        let bytes = Tar::new().file("config.json", &[1u8; 5000]).bytes();
        let truncated = Case::new(&bytes[..bytes.len() / 2], ArchiveFormat::TarGz);
        let err = truncated.unpack().unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");

        let case = case(Tar::new());
        assert!(case.unpack().unwrap_err().to_string().contains("empty"));
    }
}
