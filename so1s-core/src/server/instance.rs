//! The installation's instance id: what its images, containers and labels on a shared Docker
//! engine are named with, so two installations with a model of the same name never touch each
//! other's. Made once per data directory (its name, plus 6 hex characters of a hash of its
//! path and the time) and kept in `<data-dir>/instance`; `--instance` sets it.

use crate::model::ModelName;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The file that keeps the instance id.
pub const INSTANCE_FILE: &str = "instance";

/// The instance id of the installation in `data_dir`: `explicit` if given (and kept), else
/// the one kept there, else `default` for a data directory made before instance ids were
/// kept (its containers are named with it), else a new one, kept.
pub fn resolve(data_dir: &Path, explicit: Option<ModelName>) -> Result<ModelName> {
    let path = data_dir.join(INSTANCE_FILE);
    let instance = match explicit {
        Some(instance) => instance,
        None => match std::fs::read_to_string(&path) {
            Ok(text) => {
                return ModelName::parse(text.trim())
                    .map_err(|e| Error::InvalidInput(format!("{}: {}", path.display(), e.chain())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match data_dir.join("so1s.db").exists() {
                    true => ModelName::parse("default")?,
                    false => derive(data_dir, &crate::clock::now_ms().to_string()),
                }
            }
            Err(source) => {
                return Err(Error::Io {
                    context: format!("reading {}", path.display()),
                    source,
                })
            }
        },
    };
    std::fs::write(&path, format!("{instance}\n")).map_err(|source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    })?;
    Ok(instance)
}

/// `<name of the data dir>-<6 hex>`: the name lower-cased to letters, digits and `-` (at most
/// 24, `so1s` when nothing is left), the hex from the path and `salt`.
pub fn derive(data_dir: &Path, salt: &str) -> ModelName {
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
    let base: String = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() {
            true => c,
            false => '-',
        })
        .collect();
    let base = base
        .trim_start_matches(|c: char| !c.is_ascii_lowercase())
        .chars()
        .take(24)
        .collect::<String>();
    let base = match base.trim_end_matches('-') {
        "" => "so1s",
        base => base,
    };
    let mut hash = Sha256::new();
    hash.update(path.to_string_lossy().as_bytes());
    hash.update(salt.as_bytes());
    let hex = format!("{:x}", hash.finalize());
    ModelName::parse(&format!("{base}-{}", &hex[..6]))
        .unwrap_or_else(|_| unreachable!("letters, digits and '-', starting with a letter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_id_is_made_once_kept_and_can_be_set() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("Team_Data.2");
        std::fs::create_dir(&data).unwrap();
        let made = resolve(&data, None).unwrap();
        assert!(made.as_str().starts_with("team-data-2-"), "{made}");
        assert_eq!(made.as_str().len(), "team-data-2-".len() + 6);
        assert_eq!(resolve(&data, None).unwrap(), made, "kept");

        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        assert_ne!(resolve(&other, None).unwrap(), made);

        let set = ModelName::parse("prod").unwrap();
        assert_eq!(resolve(&data, Some(set.clone())).unwrap(), set);
        assert_eq!(resolve(&data, None).unwrap(), set, "the flag's is kept");

        // A data dir from before instance ids: its containers are named `default`.
        let old = tmp.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("so1s.db"), b"").unwrap();
        assert_eq!(resolve(&old, None).unwrap().as_str(), "default");

        assert_eq!(
            derive(Path::new("/"), "x").as_str().len(),
            "so1s-".len() + 6
        );
        assert!(derive(Path::new("/srv/9-lives"), "x")
            .as_str()
            .starts_with("lives-"));
    }
}
