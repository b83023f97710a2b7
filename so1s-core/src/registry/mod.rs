//! [`Registry`]: models, versions, their states and events, kept across api-server restarts.
//!
//! The registry lives in the api server's SQLite database (`<data-dir>/so1s.db`, see
//! [`crate::db`]): a table of versions, one of events and one of models' scale-to-zero
//! policies ([`Scale`]). Events are appended, never rewritten, so recording one costs the
//! same however long the history is.
//! Each state change is one transaction with its event, and the change that makes a version
//! live retires the one it replaces in the same transaction: a crash leaves either the old
//! version live or the new one, never both or neither. State changes are written with
//! `synchronous = FULL`; log lines ride with `NORMAL` and become durable with the next one.
//!
//! Events stream live to subscribers (server-sent events) through a broadcast channel per
//! version; a subscriber gets the history first, then what follows, without gaps.
//!
//! A `registry.json` left by an earlier so1s beside the database is imported once on open
//! and renamed to `registry.json.imported`.

mod events;
mod import;
mod record;
mod scale;
mod sql;
pub(crate) mod state;
mod transitions;

pub use events::MAX_EVENTS;
pub use record::{Transition, VersionRecord};
pub use scale::{Scale, MAX_IDLE_AFTER_S};
pub use state::VersionState;

use crate::db::{self, database};
use crate::model::{ModelName, VersionId};
use crate::redact::Redactor;
use crate::rollout::traffic::Split;
use crate::rollout::traffic::TOTAL_WEIGHT;
use crate::{Error, Result};
use sql::{live_versions, select_version, version_row, Db, VERSION_COLUMNS};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    /// What clients read (errors, events) has host paths shortened.
    redactor: Redactor,
    db: Mutex<Db>,
}

impl Registry {
    /// Opens the registry in the database at `path` (created and migrated as needed), and
    /// imports a `registry.json` found beside it, once.
    ///
    /// Versions caught in the middle of a build or rollout by a crash keep their state here;
    /// [`Platform::recover`](crate::platform::Platform::recover) resumes or fails them.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        let conn = db::open(&path)?;
        let registry = Self {
            inner: Arc::new(Inner {
                redactor: Redactor::with_data_dir(&dir),
                db: Mutex::new(Db::new(conn)),
            }),
        };
        registry.import_legacy(&dir.join(import::LEGACY_FILE))?;
        Ok(registry)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Db> {
        self.inner.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One version.
    pub fn version(&self, model: &ModelName, version: VersionId) -> Result<VersionRecord> {
        select_version(&self.lock().conn, model, version)
    }

    fn select_versions(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<VersionRecord>> {
        let db = self.lock();
        let mut statement = db
            .conn
            .prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions {filter} ORDER BY model, version"
            ))
            .map_err(|e| database("reading versions", e))?;
        let records = statement
            .query_map(args, version_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| database("reading versions", e))?;
        Ok(records)
    }

    /// A model's versions, oldest first.
    pub fn versions(&self, model: &ModelName) -> Result<Vec<VersionRecord>> {
        let versions = self.select_versions("WHERE model = ?1", [model.as_str()])?;
        if versions.is_empty() {
            return Err(Error::NotFound(format!("model {model}")));
        }
        Ok(versions)
    }

    /// Every version in a state of `states`, by model and version.
    pub fn in_states(&self, states: &[VersionState]) -> Result<Vec<VersionRecord>> {
        let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
        self.select_versions(&format!("WHERE state IN ({})", names.join(", ")), [])
    }

    /// Every model's name.
    pub fn models(&self) -> Vec<ModelName> {
        let db = self.lock();
        let names = db
            .conn
            .prepare_cached("SELECT DISTINCT model FROM versions ORDER BY model")
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| row.get::<_, String>(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            });
        match names {
            Ok(names) => names
                .iter()
                .filter_map(|name| ModelName::parse(name).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %database("listing models", e).chain(), "registry");
                Vec::new()
            }
        }
    }

    /// The version of `model` that is live, if any; while a split is set, the heaviest
    /// (among equals, the one live longest).
    pub fn live(&self, model: &ModelName) -> Option<VersionRecord> {
        live_versions(&self.lock().conn, model)
            .ok()?
            .into_iter()
            .next()
    }

    /// How `model`'s requests are shared among its live versions, if one is live.
    pub fn split(&self, model: &ModelName) -> Option<Split> {
        let live = live_versions(&self.lock().conn, model).ok()?;
        if live.is_empty() {
            return None;
        }
        let arms = live
            .iter()
            .map(|r| (r.stored.version, r.weight.unwrap_or(TOTAL_WEIGHT)));
        Split::new(arms).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::Artifact;
    use crate::events::{Event, EventKind, Stage};
    use crate::store::{ArchiveFormat, StoredVersion};

    pub(super) fn stored(model: &str, version: u32) -> StoredVersion {
        StoredVersion {
            model: ModelName::parse(model).unwrap(),
            version: VersionId::parse(&version.to_string()).unwrap(),
            sha256: "ab".repeat(32),
            size: 10,
            format: ArchiveFormat::TarGz,
            stored_at: 1,
        }
    }

    pub(super) fn open(dir: &tempfile::TempDir) -> Registry {
        Registry::open(dir.path().join("so1s.db")).unwrap()
    }

    /// A registry in a new folder (kept as long as the `TempDir` lives) holding `m` v1.
    pub(super) fn with_one_version() -> (tempfile::TempDir, Registry, ModelName) {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(&dir);
        registry.add(stored("m", 1)).unwrap();
        (dir, registry, ModelName::parse("m").unwrap())
    }

    pub(super) fn messages(
        registry: &Registry,
        model: &ModelName,
        version: VersionId,
    ) -> Vec<String> {
        registry
            .subscribe(model, version)
            .0
            .into_iter()
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn states_artifacts_and_events_survive_a_reopen_and_interrupted_work_keeps_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let model = ModelName::parse("m").unwrap();
        let (v1, v2) = (VersionId::FIRST, VersionId::FIRST.next());
        {
            let registry = open(&dir);
            registry.add(stored("m", 1)).unwrap();
            registry.add(stored("m", 2)).unwrap();
            let artifact = Artifact::bundle("/b/m/v1");
            registry
                .apply(
                    &model,
                    v1,
                    Transition::to(VersionState::Built, Stage::Build, "built")
                        .with_artifact(artifact),
                )
                .unwrap();
            registry.go_live(&model, v1, "live").unwrap();
            registry
                .apply(
                    &model,
                    v2,
                    Transition::to(VersionState::Building, Stage::Build, "building"),
                )
                .unwrap();
            registry.record_event(
                &model,
                v1,
                Event::now(Stage::Rollout, EventKind::Log, "a log line"),
            );
        }
        let registry = open(&dir);
        let live = registry.live(&model).unwrap();
        assert_eq!(live.stored.version, v1);
        assert!(live.live_since_ms.is_some());
        assert_eq!(live.artifact, Some(Artifact::bundle("/b/m/v1")));
        // Recovery is the platform's decision: the registry keeps what it was told.
        assert_eq!(
            registry.version(&model, v2).unwrap().state,
            VersionState::Building
        );
        let unsettled = registry
            .in_states(&[VersionState::Building, VersionState::Stored])
            .unwrap();
        assert_eq!(unsettled.len(), 1);
        assert_eq!(unsettled[0].stored.version, v2);
        let (history, _) = registry.subscribe(&model, v1);
        let seen: Vec<_> = history
            .iter()
            .map(|e| (e.message.as_str(), e.state))
            .collect();
        assert_eq!(
            seen,
            [
                ("built", Some(VersionState::Built)),
                ("live", Some(VersionState::Live)),
                ("a log line", None)
            ]
        );
    }

    #[test]
    fn removing_the_last_version_forgets_the_model() {
        let (_dir, registry, model) = with_one_version();
        assert!(matches!(
            registry.add(stored("m", 1)),
            Err(Error::Conflict(_))
        ));
        assert_eq!(registry.models(), std::slice::from_ref(&model));
        registry.remove(&model, VersionId::FIRST).unwrap();
        assert!(registry.models().is_empty());
        assert!(matches!(registry.versions(&model), Err(Error::NotFound(_))));
        assert!(messages(&registry, &model, VersionId::FIRST).is_empty());
    }
}
