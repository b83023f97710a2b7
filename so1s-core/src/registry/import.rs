//! The one-time import of `registry.json`, what so1s kept before the database.

use super::sql::{insert_event, insert_version};
use super::{Registry, VersionRecord};
use crate::clock::now_ms;
use crate::db::database;
use crate::events::Event;
use crate::model::{ModelName, VersionId};
use crate::{Error, Result};
use rusqlite::params;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// What `registry.json` (so1s before the database) held.
#[derive(Debug, Default, Deserialize)]
struct LegacyDocument {
    models: BTreeMap<ModelName, BTreeMap<VersionId, VersionRecord>>,
    events: BTreeMap<String, Vec<Event>>,
}

pub(super) const LEGACY_FILE: &str = "registry.json";

impl Registry {
    /// Imports an earlier so1s's `registry.json` (models, versions, events) in one
    /// transaction, then renames it `registry.json.imported`. Returns whether it did.
    pub(super) fn import_legacy(&self, path: &Path) -> Result<bool> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(Error::Io {
                    context: format!("reading {}", path.display()),
                    source,
                })
            }
        };
        let doc: LegacyDocument =
            serde_json::from_slice(&bytes).map_err(|source| Error::ModelJson {
                path: path.to_owned(),
                source,
            })?;
        let done = self.lock().write(true, "importing registry.json", |tx| {
            let done: bool = tx
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM imports WHERE name = ?1)",
                    [LEGACY_FILE],
                    |row| row.get(0),
                )
                .map_err(|e| database("reading imports", e))?;
            if !done {
                for record in doc.models.values().flat_map(BTreeMap::values) {
                    insert_version(tx, record)?;
                    let key = format!("{}/{}", record.stored.model, record.stored.version);
                    for event in doc.events.get(&key).into_iter().flatten() {
                        insert_event(tx, &record.stored.model, record.stored.version, event)?;
                    }
                }
                tx.execute(
                    "INSERT INTO imports (name, at_ms) VALUES (?1, ?2)",
                    params![LEGACY_FILE, now_ms() as i64],
                )
                .map_err(|e| database("recording the import", e))?;
            }
            Ok((done, Vec::new()))
        })?;
        let imported = path.with_extension("json.imported");
        std::fs::rename(path, &imported).map_err(|source| Error::Io {
            context: format!("renaming {}", path.display()),
            source,
        })?;
        tracing::info!(
            versions = doc.models.values().map(BTreeMap::len).sum::<usize>(),
            "imported {} into the database (kept as {})",
            path.display(),
            imported.display()
        );
        Ok(!done)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{messages, open};
    use super::*;
    use crate::registry::VersionState;
    use crate::store::ArchiveFormat;

    #[test]
    fn a_registry_json_of_an_earlier_so1s_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = serde_json::json!({
            "models": {"m": {
                "v1": {"model": "m", "version": "v1", "sha256": "ab", "size": 3,
                       "format": "tar-gz", "stored_at": 5, "state": "retired",
                       "artifact": {"kind": "bundle", "dir": "/b/m/v1"},
                       "updated_at_ms": 7, "live_since_ms": 6},
                "v2": {"model": "m", "version": "v2", "sha256": "cd", "size": 4,
                       "format": "zip", "stored_at": 8, "state": "live",
                       "updated_at_ms": 9, "live_since_ms": 9}
            }},
            "events": {"m/v2": [
                {"at_ms": 8, "stage": "upload", "kind": "progress", "message": "stored"},
                {"at_ms": 9, "stage": "rollout", "kind": "progress", "message": "live", "state": "live"}
            ]}
        });
        let path = dir.path().join(LEGACY_FILE);
        std::fs::write(&path, legacy.to_string()).unwrap();
        let registry = open(&dir);
        let model = ModelName::parse("m").unwrap();
        let versions = registry.versions(&model).unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0].state, VersionState::Retired);
        assert_eq!(versions[1].stored.format, ArchiveFormat::Zip);
        assert_eq!(registry.live(&model).unwrap().stored.version.number(), 2);
        let v2 = VersionId::parse("v2").unwrap();
        assert_eq!(messages(&registry, &model, v2), ["stored", "live"]);
        assert!(!path.exists());
        assert!(dir.path().join("registry.json.imported").exists());
        // A file put back later is not imported twice.
        drop(registry);
        std::fs::copy(dir.path().join("registry.json.imported"), &path).unwrap();
        let registry = open(&dir);
        assert_eq!(registry.versions(&model).unwrap().len(), 2);
        assert_eq!(messages(&registry, &model, v2).len(), 2);
    }
}
