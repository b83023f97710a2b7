//! `.tar.gz` archives, read entry by entry as raw records: GNU long names and PAX headers
//! are read here, capped, rather than by the tar crate, which reads them whole.

use super::checks::{
    check_link, checked_path, create_dir, create_parent, path_of, read_metadata, symlink,
};
use super::Budget;
use crate::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// What GNU long-name entries and PAX headers say about the entry after them.
#[derive(Default)]
struct Pending {
    path: Option<PathBuf>,
    link: Option<PathBuf>,
}

pub(super) fn unpack_tar(file: File, dest: &Path, budget: &mut Budget) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{refused, Case, Tar};
    use crate::store::ArchiveFormat;

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
}
