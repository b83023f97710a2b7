//! The checks every entry passes, whatever the archive's format: metadata capped before it
//! is read, paths that stay inside the destination, links that point inside it and are
//! never written through, and, once unpacked, links replaced by copies of their files.

use super::{write_error, Budget, MAX_METADATA_BYTES};
use crate::{Error, Result};
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Reads an archive's metadata record (a long name, PAX records, a link target) of
/// `size` bytes, refusing one over [`MAX_METADATA_BYTES`] before reading it.
pub(super) fn read_metadata(from: impl Read, size: u64, what: &str) -> Result<Vec<u8>> {
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
pub(super) fn path_of(bytes: &[u8]) -> PathBuf {
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
pub(super) fn checked_path(dest: &Path, name: &Path) -> Result<PathBuf> {
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
pub(super) fn check_link(entry: &Path, target: &Path) -> Result<()> {
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

pub(super) fn create_dir(dest: &Path, path: &Path) -> Result<()> {
    refuse_links_on_the_way(dest, path)?;
    std::fs::create_dir_all(path).map_err(|e| write_error(path, e))
}

pub(super) fn create_parent(dest: &Path, path: &Path) -> Result<()> {
    refuse_links_on_the_way(dest, path)?;
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| write_error(parent, e)),
        None => Ok(()),
    }
}

/// After unpacking: every link must resolve to a file inside `dest`, and is replaced by a
/// copy of that file, counted against the limits. Links to folders are refused: two links
/// to `.` would make any walker that follows links (a Docker build context) explode.
pub(super) fn replace_links_with_files(dest: &Path, budget: &mut Budget) -> Result<()> {
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

pub(super) fn symlink(link: &Path, at: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{refused, zip_archive, Tar};
    use std::io::Write;

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
}
