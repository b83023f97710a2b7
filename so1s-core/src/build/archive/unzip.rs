//! `.zip` archives, under the same rules as `.tar.gz` ones.

use super::checks::{
    check_link, checked_path, create_dir, create_parent, path_of, read_metadata, symlink,
};
use super::Budget;
use crate::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

pub(super) fn unpack_zip(file: File, dest: &Path, budget: &mut Budget) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::zip_archive;
    use std::io::Write;

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
