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

use crate::store::ArchiveFormat;
use crate::{Error, Result};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

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
        ArchiveFormat::TarGz => unpack_tar(file, dest, &mut budget)?,
        ArchiveFormat::Zip => unpack_zip(file, dest, &mut budget)?,
    }
    replace_links_with_files(dest, &mut budget)?;
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

/// Reads an archive's metadata record (a long name, PAX records, a link target) of
/// `size` bytes, refusing one over [`MAX_METADATA_BYTES`] before reading it.
fn read_metadata(from: impl Read, size: u64, what: &str) -> Result<Vec<u8>> {
    if size > MAX_METADATA_BYTES {
        return Err(Error::InvalidModel(format!(
            "the archive's {what} is {size} bytes; at most {MAX_METADATA_BYTES} are allowed"
        )));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    from.take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::InvalidModel(format!("the archive is corrupt: {e}")))?;
    if bytes.len() as u64 > MAX_METADATA_BYTES {
        return Err(Error::InvalidModel(format!(
            "the archive's {what} is longer than {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

/// A path from an archive's bytes (NUL-terminated for GNU long names).
fn path_of(bytes: &[u8]) -> PathBuf {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    #[cfg(unix)]
    {
        PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&bytes[..end]))
    }
    #[cfg(not(unix))]
    {
        PathBuf::from(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }
}

/// Checks an entry's path and returns where it goes under `dest`.
fn checked_path(dest: &Path, name: &Path) -> Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::InvalidModel(format!(
                    "the archive entry `{}` contains `..`",
                    name.display()
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::InvalidModel(format!(
                    "the archive entry `{}` is an absolute path",
                    name.display()
                )))
            }
        }
    }
    Ok(dest.join(clean))
}

/// Checks that a symbolic link at `entry` (relative to the archive root) pointing at
/// `target` stays inside the archive.
fn check_link(entry: &Path, target: &Path) -> Result<()> {
    let escapes = || {
        Error::InvalidModel(format!(
            "the archive's link `{}` -> `{}` points outside the model directory",
            entry.display(),
            target.display()
        ))
    };
    if target.is_absolute() {
        return Err(escapes());
    }
    // Depth of the link's directory below the root, then walk the target.
    let mut depth: i64 = entry
        .parent()
        .map(|p| {
            p.components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .count() as i64
        })
        .unwrap_or(0);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(escapes()),
        }
        if depth < 0 {
            return Err(escapes());
        }
    }
    Ok(())
}

/// What GNU long-name entries and PAX headers say about the entry after them.
#[derive(Default)]
struct Pending {
    path: Option<PathBuf>,
    link: Option<PathBuf>,
}

fn unpack_tar(file: File, dest: &Path, budget: &mut Budget) -> Result<()> {
    let corrupt = |e: std::io::Error| Error::InvalidModel(format!("the archive is corrupt: {e}"));
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    // Raw entries: the tar crate would read long names and PAX headers whole, whatever
    // size they claim; they are read here, capped.
    let mut pending = Pending::default();
    for entry in archive.entries().map_err(corrupt)?.raw(true) {
        let mut entry = entry.map_err(corrupt)?;
        budget.entry()?;
        let kind = entry.header().entry_type();
        let size = entry.header().size().map_err(corrupt)?;
        if kind.is_gnu_longname() {
            pending.path = Some(path_of(&read_metadata(&mut entry, size, "long name")?));
            continue;
        }
        if kind.is_gnu_longlink() {
            pending.link = Some(path_of(&read_metadata(&mut entry, size, "long link")?));
            continue;
        }
        if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
            let records = read_metadata(&mut entry, size, "PAX header")?;
            if kind.is_pax_local_extensions() {
                apply_pax(&records, &mut pending)?;
            }
            continue;
        }
        let name = match pending.path.take() {
            Some(path) => path,
            None => path_of(&entry.header().path_bytes()),
        };
        let link = pending.link.take();
        let target = checked_path(dest, &name)?;
        if kind.is_dir() {
            create_dir(dest, &target)?;
        } else if kind.is_file() {
            create_parent(dest, &target)?;
            budget.copy(&mut entry, &target)?;
        } else if kind.is_symlink() {
            let link = link
                .or_else(|| entry.header().link_name_bytes().map(|b| path_of(&b)))
                .filter(|link| !link.as_os_str().is_empty())
                .ok_or_else(|| {
                    Error::InvalidModel(format!("the link `{}` has no target", name.display()))
                })?;
            check_link(&name, &link)?;
            create_parent(dest, &target)?;
            symlink(&link, &target)?;
        } else {
            return Err(Error::InvalidModel(format!(
                "the archive entry `{}` is a {}; only files, directories and links inside the archive are allowed",
                name.display(),
                entry_kind(kind)
            )));
        }
    }
    Ok(())
}

/// Takes `path` and `linkpath` from PAX records (`"<len> <key>=<value>\n"`); a `size`
/// (files over 8 GiB) is refused.
fn apply_pax(records: &[u8], pending: &mut Pending) -> Result<()> {
    let corrupt = || Error::InvalidModel("the archive has a malformed PAX header".into());
    let mut rest = records;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(corrupt)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > space + 1 && n <= rest.len())
            .ok_or_else(corrupt)?;
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").ok_or_else(corrupt)?;
        let equals = record.iter().position(|&b| b == b'=').ok_or_else(corrupt)?;
        let (key, value) = (&record[..equals], &record[equals + 1..]);
        match key {
            b"path" => pending.path = Some(path_of(value)),
            b"linkpath" => pending.link = Some(path_of(value)),
            b"size" => {
                return Err(Error::InvalidModel(
                    "the archive has a file over 8 GiB (PAX size record)".into(),
                ))
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(())
}

fn entry_kind(kind: tar::EntryType) -> &'static str {
    if kind.is_hard_link() {
        "hard link"
    } else if kind.is_character_special() || kind.is_block_special() {
        "device"
    } else if kind.is_fifo() {
        "FIFO"
    } else {
        "special entry"
    }
}

fn unpack_zip(file: File, dest: &Path, budget: &mut Budget) -> Result<()> {
    let corrupt =
        |e: zip::result::ZipError| Error::InvalidModel(format!("the archive is corrupt: {e}"));
    let mut archive = zip::ZipArchive::new(file).map_err(corrupt)?;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(corrupt)?;
        budget.entry()?;
        let name = PathBuf::from(entry.name());
        // zip's own check (enclosed_name) agrees with ours; ours names the problem.
        let target = checked_path(dest, &name)?;
        if entry.is_symlink() {
            let size = entry.size();
            let link = path_of(&read_metadata(&mut entry, size, "link target")?);
            check_link(&name, &link)?;
            create_parent(dest, &target)?;
            symlink(&link, &target)?;
        } else if entry.is_dir() {
            create_dir(dest, &target)?;
        } else {
            create_parent(dest, &target)?;
            budget.copy(&mut entry, &target)?;
        }
    }
    Ok(())
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

/// Refuses a path under `dest` if it or any folder on the way is a link: entries are only
/// ever written into real directories, never through a link.
fn refuse_links_on_the_way(dest: &Path, path: &Path) -> Result<()> {
    let relative = path.strip_prefix(dest).unwrap_or(path);
    let mut current = dest.to_owned();
    for component in relative.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Error::InvalidModel(format!(
                    "the archive writes through the link `{}`",
                    relative.display()
                )))
            }
            Ok(_) => {}
            Err(_) => break, // nothing there yet, nor below
        }
    }
    Ok(())
}

fn create_dir(dest: &Path, path: &Path) -> Result<()> {
    refuse_links_on_the_way(dest, path)?;
    std::fs::create_dir_all(path).map_err(|e| write_error(path, e))
}

fn create_parent(dest: &Path, path: &Path) -> Result<()> {
    refuse_links_on_the_way(dest, path)?;
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| write_error(parent, e)),
        None => Ok(()),
    }
}

/// After unpacking: every link must resolve to a file inside `dest`, and is replaced by a
/// copy of that file, counted against the limits. Links to folders are refused: two links
/// to `.` would make any walker that follows links (a Docker build context) explode.
fn replace_links_with_files(dest: &Path, budget: &mut Budget) -> Result<()> {
    let root = dest.canonicalize().map_err(|e| write_error(dest, e))?;
    let mut pending = vec![dest.to_owned()];
    let mut links = Vec::new();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| write_error(&dir, e))? {
            let entry = entry.map_err(|e| write_error(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| write_error(&path, e))?;
            if kind.is_symlink() {
                links.push(path);
            } else if kind.is_dir() {
                pending.push(path);
            }
        }
    }
    for path in links {
        let shown = path
            .strip_prefix(dest)
            .unwrap_or(&path)
            .display()
            .to_string();
        let resolved = path
            .canonicalize()
            .ok()
            .filter(|resolved| resolved.starts_with(&root))
            .ok_or_else(|| {
                Error::InvalidModel(format!(
                    "the archive's link `{shown}` points outside the model directory or nowhere"
                ))
            })?;
        if resolved.is_dir() {
            return Err(Error::InvalidModel(format!(
                "the archive's link `{shown}` points to a folder; only links to files are allowed"
            )));
        }
        std::fs::remove_file(&path).map_err(|e| write_error(&path, e))?;
        let source = File::open(&resolved).map_err(|e| write_error(&resolved, e))?;
        budget.copy(source, &path)?;
    }
    Ok(())
}

fn symlink(link: &Path, at: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(link, at).map_err(|e| write_error(at, e))
    }
    #[cfg(not(unix))]
    {
        let _ = (link, at);
        Err(Error::InvalidModel(
            "links in archives need a Unix host".into(),
        ))
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
    struct Tar {
        builder: tar::Builder<flate2::write::GzEncoder<Vec<u8>>>,
    }

    impl Tar {
        fn new() -> Self {
            let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            Self {
                builder: tar::Builder::new(encoder),
            }
        }

        fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
            let mut header = tar::Header::new_gnu();
            let field = &mut header.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(kind);
            header.set_size(size);
            header.set_mode(0o644);
            header.set_cksum();
            header
        }

        fn file(mut self, name: &str, data: &[u8]) -> Self {
            let header = Self::header(name, tar::EntryType::Regular, data.len() as u64);
            self.builder.append(&header, data).unwrap();
            self
        }

        fn dir(mut self, name: &str) -> Self {
            let header = Self::header(name, tar::EntryType::Directory, 0);
            self.builder.append(&header, std::io::empty()).unwrap();
            self
        }

        fn link(mut self, name: &str, target: &str) -> Self {
            let mut header = Self::header(name, tar::EntryType::Symlink, 0);
            header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
            header.set_cksum();
            self.builder.append(&header, std::io::empty()).unwrap();
            self
        }

        fn bytes(self) -> Vec<u8> {
            self.builder.into_inner().unwrap().finish().unwrap()
        }
    }

    /// An archive written to a temporary folder, and an empty destination beside it.
    struct Case {
        _tmp: tempfile::TempDir,
        archive: PathBuf,
        format: ArchiveFormat,
        dest: PathBuf,
    }

    impl Case {
        fn new(bytes: &[u8], format: ArchiveFormat) -> Self {
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

        fn unpack_with(&self, limits: UnpackLimits) -> Result<PathBuf> {
            unpack(&self.archive, self.format, &self.dest, limits)
        }

        fn unpack(&self) -> Result<PathBuf> {
            self.unpack_with(UnpackLimits::default())
        }
    }

    fn case(tar: Tar) -> Case {
        Case::new(&tar.bytes(), ArchiveFormat::TarGz)
    }

    fn refused(tar: Tar, expected: &str) {
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
    fn links_to_folders_are_refused() {
        refused(
            Tar::new().dir("m/").link("m/a", ".").link("m/b", "."),
            "points to a folder",
        );
    }

    /// A header of `kind` that claims `size` bytes, followed by only `data`.
    fn claiming(mut tar: Tar, kind: tar::EntryType, size: u64, data: &[u8]) -> Tar {
        let header = Tar::header("././@LongLink", kind, size);
        let mut block = header.as_bytes().to_vec();
        block.extend_from_slice(data);
        block.resize(block.len().div_ceil(512) * 512, 0);
        tar.builder.get_mut().write_all(&block).unwrap();
        tar
    }

    #[test]
    fn archive_metadata_is_capped_before_it_is_read() {
        let huge = 512 << 20;
        refused(
            claiming(Tar::new(), tar::EntryType::GNULongName, huge, b"aaaa"),
            "long name is 536870912 bytes",
        );
        refused(
            claiming(Tar::new(), tar::EntryType::XHeader, huge, b"aaaa"),
            "PAX header is 536870912 bytes",
        );
        let long_target = "a".repeat(100 << 10);
        let case = zip_archive(|w| {
            w.add_symlink(
                "link",
                &long_target,
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
        });
        let err = case.unpack().unwrap_err();
        assert!(
            err.to_string().contains("link target is 102400 bytes"),
            "{err}"
        );
    }

    #[test]
    fn long_names_and_pax_paths_are_honoured() {
        let long = format!("model/{}/config.json", "d".repeat(150));
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        builder.append_data(&mut header, &long, &b"{}"[..]).unwrap();
        // A PAX record naming the next entry (what Python's tarfile writes for non-ASCII).
        let record = "path=model/모델.txt\n";
        let record = format!("{} {record}", record.len() + 3);
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(record.len() as u64);
        pax.set_cksum();
        builder.append(&pax, record.as_bytes()).unwrap();
        let mut file = tar::Header::new_ustar();
        file.set_path("model/ascii-name").unwrap();
        file.set_size(1);
        file.set_mode(0o644);
        file.set_cksum();
        builder.append(&file, &b"x"[..]).unwrap();
        let case = Case::new(
            &builder.into_inner().unwrap().finish().unwrap(),
            ArchiveFormat::TarGz,
        );
        let root = case.unpack().unwrap();
        assert_eq!(root, case.dest.join("model"));
        let deep = case.dest.join(&long);
        assert_eq!(std::fs::read(deep).unwrap(), b"{}");
        assert_eq!(std::fs::read(root.join("모델.txt")).unwrap(), b"x");
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
    fn hostile_paths_are_refused() {
        refused(Tar::new().file("../evil", b"x"), "contains `..`");
        refused(Tar::new().file("model/../../evil", b"x"), "contains `..`");
        refused(Tar::new().file("/tmp/so1s-evil", b"x"), "absolute path");
    }

    #[test]
    fn links_may_not_leave_or_be_written_through() {
        refused(
            Tar::new().link("escape", "../../etc/passwd"),
            "points outside",
        );
        refused(Tar::new().link("escape", "/etc/passwd"), "points outside");
        // Each link looks harmless alone; together `c` resolves above the root.
        refused(
            Tar::new().dir("sub/").link("a", ".").link("c", "a/.."),
            "points outside",
        );
        refused(
            Tar::new().dir("sub/").link("a", "sub").file("a/x", b"x"),
            "writes through the link",
        );
        refused(
            Tar::new().link("dangling", "missing"),
            "points outside the model directory or nowhere",
        );
    }

    #[test]
    fn hard_links_and_devices_are_refused() {
        let mut tar = Tar::new();
        let mut header = Tar::header("hard", tar::EntryType::Link, 0);
        header.as_old_mut().linkname[..6].copy_from_slice(b"target");
        header.set_cksum();
        tar.builder.append(&header, std::io::empty()).unwrap();
        refused(tar, "is a hard link");

        let mut tar = Tar::new();
        let header = Tar::header("fifo", tar::EntryType::Fifo, 0);
        tar.builder.append(&header, std::io::empty()).unwrap();
        refused(tar, "is a FIFO");
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

    fn zip_archive(build: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Case {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        build(&mut writer);
        Case::new(&writer.finish().unwrap().into_inner(), ArchiveFormat::Zip)
    }

    #[test]
    fn zip_archives_unpack_with_the_same_rules() {
        let options = zip::write::SimpleFileOptions::default();
        let case = zip_archive(|w| {
            w.add_directory("model/", options).unwrap();
            w.start_file("model/config.json", options).unwrap();
            w.write_all(b"{}").unwrap();
        });
        let root = case.unpack().unwrap();
        assert_eq!(std::fs::read(root.join("config.json")).unwrap(), b"{}");

        let case = zip_archive(|w| {
            w.start_file("../evil", options).unwrap();
            w.write_all(b"x").unwrap();
        });
        let err = case.unpack().unwrap_err();
        assert!(err.to_string().contains("contains `..`"), "{err}");

        let case = zip_archive(|w| {
            w.add_symlink("escape", "../../etc/passwd", options)
                .unwrap();
        });
        let err = case.unpack().unwrap_err();
        assert!(err.to_string().contains("points outside"), "{err}");
    }
}
