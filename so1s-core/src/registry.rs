//! [`Registry`]: models, versions, their states and events, kept across api-server restarts.
//!
//! The registry lives in the api server's SQLite database (`<data-dir>/so1s.db`, see
//! [`crate::db`]): a table of models, one of versions and one of events. Events are
//! appended, never rewritten, so recording one costs the same however long the history is.
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

use crate::build::Artifact;
use crate::clock::now_ms;
use crate::db::{self, database};
use crate::events::{Event, EventKind, Stage};
use crate::model::{ModelName, VersionId};
use crate::redact::Redactor;
use crate::store::StoredVersion;
use crate::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Where a version is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionState {
    /// Uploaded and stored.
    Stored,
    /// Being built.
    Building,
    /// Built; not (yet) deployed.
    Built,
    /// Being rolled out.
    Deploying,
    /// Serving traffic.
    Live,
    /// The build or rollout failed; `error` says why.
    Failed,
    /// Served before; replaced by another version.
    Retired,
}

impl VersionState {
    /// Whether the upload's pipeline has ended here: live, failed or (later) retired.
    pub fn ends_pipeline(self) -> bool {
        matches!(
            self,
            VersionState::Live | VersionState::Failed | VersionState::Retired
        )
    }

    /// Whether the version is done moving (no build or rollout running for it).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            VersionState::Built | VersionState::Live | VersionState::Failed | VersionState::Retired
        )
    }

    /// The state's name, as the api writes it (`live`, `failed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Stored => "stored",
            VersionState::Building => "building",
            VersionState::Built => "built",
            VersionState::Deploying => "deploying",
            VersionState::Live => "live",
            VersionState::Failed => "failed",
            VersionState::Retired => "retired",
        }
    }
}

impl std::fmt::Display for VersionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Everything known about one version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// What the store knows.
    #[serde(flatten)]
    pub stored: StoredVersion,
    /// The state.
    pub state: VersionState,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The built artifact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// When the state last changed, in ms since the Unix epoch.
    pub updated_at_ms: u64,
    /// When it last went live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_since_ms: Option<u64>,
    /// How often its live instance exited and was started again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Why its live instance last exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

/// A state change of a version.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The new state.
    pub state: VersionState,
    /// The stage it belongs to.
    pub stage: Stage,
    /// What happened, for the event history.
    pub message: String,
    /// Why it failed (for [`VersionState::Failed`]).
    pub error: Option<String>,
    /// The artifact, once built.
    pub artifact: Option<Artifact>,
}

impl Transition {
    /// A change to `state` with a message.
    pub fn to(state: VersionState, stage: Stage, message: impl Into<String>) -> Self {
        Self {
            state,
            stage,
            message: message.into(),
            error: None,
            artifact: None,
        }
    }

    /// A failure: the message is the error.
    pub fn failed(stage: Stage, error: impl Into<String>) -> Self {
        let error = error.into();
        Self {
            error: Some(error.clone()),
            ..Self::to(VersionState::Failed, stage, error)
        }
    }

    /// Attaches the built artifact.
    pub fn with_artifact(mut self, artifact: Artifact) -> Self {
        self.artifact = Some(artifact);
        self
    }
}

/// Most events kept per version: past it, log lines are dropped (one event says so);
/// progress, errors and state changes are always kept.
pub const MAX_EVENTS: usize = 10_000;

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

type Key = (ModelName, VersionId);

struct Db {
    conn: Connection,
    /// Whether the connection writes with `synchronous = FULL` right now.
    durable: bool,
    /// Events stored per version, counted once per process and kept up to date.
    counts: HashMap<Key, usize>,
    channels: HashMap<Key, broadcast::Sender<Event>>,
}

impl Db {
    /// Sets `synchronous` for the next writes: FULL for state changes, NORMAL for log lines.
    fn durable(&mut self, durable: bool) -> Result<()> {
        if self.durable != durable {
            let mode = if durable { "FULL" } else { "NORMAL" };
            self.conn
                .pragma_update(None, "synchronous", mode)
                .map_err(|e| database("setting synchronous", e))?;
            self.durable = durable;
        }
        Ok(())
    }

    fn count(&mut self, key: &Key) -> Result<&mut usize> {
        if !self.counts.contains_key(key) {
            let n: i64 = self
                .conn
                .query_row(
                    "SELECT COUNT(*) FROM events WHERE model = ?1 AND version = ?2",
                    params![key.0.as_str(), key.1.number()],
                    |row| row.get(0),
                )
                .map_err(|e| database("counting events", e))?;
            self.counts.insert(key.clone(), n as usize);
        }
        Ok(self.counts.get_mut(key).expect("counted above"))
    }

    fn send(&self, key: &Key, event: Event) {
        if let Some(channel) = self.channels.get(key) {
            let _ = channel.send(event);
        }
    }

    /// Runs `write` as one transaction (`synchronous = FULL` when `durable`), then counts
    /// the events it appended and sends them to their subscribers. `what` names the change
    /// in errors.
    fn write<T>(
        &mut self,
        durable: bool,
        what: &str,
        write: impl FnOnce(&Transaction<'_>) -> Result<(T, Vec<(Key, Event)>)>,
    ) -> Result<T> {
        self.durable(durable)?;
        let tx = self
            .conn
            .transaction()
            .map_err(|e| database(format!("starting a transaction: {what}"), e))?;
        let (value, appended) = write(&tx)?;
        tx.commit()
            .map_err(|e| database(format!("committing: {what}"), e))?;
        for (key, event) in appended {
            *self.count(&key)? += 1;
            self.send(&key, event);
        }
        Ok(value)
    }
}

/// A serde enum's name (`live`, `build`, ...), as stored.
fn text_of<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A stored name back into its enum.
fn parse_text<T: DeserializeOwned>(text: &str, column: usize) -> rusqlite::Result<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    })
}

const VERSION_COLUMNS: &str = "model, version, sha256, size, format, stored_at, state, error, \
     artifact, updated_at_ms, live_since_ms, restarts, last_exit";

fn version_row(row: &Row<'_>) -> rusqlite::Result<VersionRecord> {
    let model: String = row.get(0)?;
    let version: u32 = row.get(1)?;
    let format: String = row.get(4)?;
    let state: String = row.get(6)?;
    let artifact: Option<String> = row.get(8)?;
    let artifact = artifact
        .map(|json| {
            serde_json::from_str(&json).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    8,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .transpose()?;
    let invalid = |column, e: Error| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
    };
    Ok(VersionRecord {
        stored: StoredVersion {
            model: ModelName::parse(&model).map_err(|e| invalid(0, e))?,
            version: VersionId::parse(&version.to_string()).map_err(|e| invalid(1, e))?,
            sha256: row.get(2)?,
            size: row.get::<_, i64>(3)? as u64,
            format: parse_text(&format, 4)?,
            stored_at: row.get::<_, i64>(5)? as u64,
        },
        state: parse_text(&state, 6)?,
        error: row.get(7)?,
        artifact,
        updated_at_ms: row.get::<_, i64>(9)? as u64,
        live_since_ms: row.get::<_, Option<i64>>(10)?.map(|ms| ms as u64),
        restarts: row.get(11)?,
        last_exit: row.get(12)?,
    })
}

fn event_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let stage: String = row.get(1)?;
    let kind: String = row.get(2)?;
    let state: Option<String> = row.get(4)?;
    Ok(Event {
        at_ms: row.get::<_, i64>(0)? as u64,
        stage: parse_text(&stage, 1)?,
        kind: parse_text(&kind, 2)?,
        message: row.get(3)?,
        state: state.map(|s| parse_text(&s, 4)).transpose()?,
    })
}

fn select_version(
    conn: &Connection,
    model: &ModelName,
    version: VersionId,
) -> Result<VersionRecord> {
    conn.query_row(
        &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE model = ?1 AND version = ?2"),
        params![model.as_str(), version.number()],
        version_row,
    )
    .optional()
    .map_err(|e| database("reading a version", e))?
    .ok_or_else(|| Error::NotFound(format!("{model} {version}")))
}

fn insert_event(
    tx: &Transaction<'_>,
    model: &ModelName,
    version: VersionId,
    event: &Event,
) -> Result<()> {
    tx.execute(
        "INSERT INTO events (model, version, at_ms, stage, kind, message, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            model.as_str(),
            version.number(),
            event.at_ms as i64,
            text_of(event.stage),
            text_of(event.kind),
            event.message,
            event.state.map(VersionState::as_str),
        ],
    )
    .map_err(|e| database("appending an event", e))?;
    Ok(())
}

fn insert_version(tx: &Transaction<'_>, record: &VersionRecord) -> Result<()> {
    let stored = &record.stored;
    tx.execute(
        "INSERT OR IGNORE INTO models (name, created_at_ms) VALUES (?1, ?2)",
        params![stored.model.as_str(), record.updated_at_ms as i64],
    )
    .map_err(|e| database("recording a model", e))?;
    let artifact = record
        .artifact
        .as_ref()
        .map(|a| serde_json::to_string(a).unwrap_or_default());
    let inserted = tx.execute(
        &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
        params![
            stored.model.as_str(),
            stored.version.number(),
            stored.sha256,
            stored.size as i64,
            text_of(stored.format),
            stored.stored_at as i64,
            record.state.as_str(),
            record.error,
            artifact,
            record.updated_at_ms as i64,
            record.live_since_ms.map(|ms| ms as i64),
            record.restarts,
            record.last_exit,
        ],
    );
    match inserted {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(Error::Conflict(format!(
                "{} {} is in the registry already",
                stored.model, stored.version
            )))
        }
        Err(e) => Err(database("recording a version", e)),
    }
}

/// Writes a transition to a version's row; returns the row as it is now.
fn update_state(
    tx: &Transaction<'_>,
    model: &ModelName,
    version: VersionId,
    transition: &Transition,
    error: Option<String>,
    now: u64,
) -> Result<VersionRecord> {
    let artifact = transition
        .artifact
        .as_ref()
        .map(|a| serde_json::to_string(a).unwrap_or_default());
    let changed = tx
        .execute(
            "UPDATE versions SET state = ?3, error = ?4, artifact = COALESCE(?5, artifact),
                 updated_at_ms = ?6,
                 live_since_ms = CASE WHEN ?3 = 'live' THEN ?6 ELSE live_since_ms END,
                 restarts = CASE WHEN ?3 = 'live' THEN 0 ELSE restarts END,
                 last_exit = CASE WHEN ?3 = 'live' THEN NULL ELSE last_exit END
             WHERE model = ?1 AND version = ?2",
            params![
                model.as_str(),
                version.number(),
                transition.state.as_str(),
                error,
                artifact,
                now as i64
            ],
        )
        .map_err(|e| database("changing a version's state", e))?;
    if changed == 0 {
        return Err(Error::NotFound(format!("{model} {version}")));
    }
    select_version(tx, model, version)
}

/// What `registry.json` (so1s before the database) held.
#[derive(Debug, Default, Deserialize)]
struct LegacyDocument {
    models: BTreeMap<ModelName, BTreeMap<VersionId, VersionRecord>>,
    events: BTreeMap<String, Vec<Event>>,
}

const LEGACY_FILE: &str = "registry.json";

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
                db: Mutex::new(Db {
                    conn,
                    durable: true,
                    counts: HashMap::new(),
                    channels: HashMap::new(),
                }),
            }),
        };
        registry.import_legacy(&dir.join(LEGACY_FILE))?;
        Ok(registry)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Db> {
        self.inner.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Imports an earlier so1s's `registry.json` (models, versions, events) in one
    /// transaction, then renames it `registry.json.imported`. Returns whether it did.
    fn import_legacy(&self, path: &Path) -> Result<bool> {
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

    /// Records a newly stored version.
    pub fn add(&self, stored: StoredVersion) -> Result<VersionRecord> {
        let record = VersionRecord {
            stored,
            state: VersionState::Stored,
            error: None,
            artifact: None,
            updated_at_ms: now_ms(),
            live_since_ms: None,
            restarts: 0,
            last_exit: None,
        };
        self.lock().write(true, "recording a version", |tx| {
            insert_version(tx, &record)?;
            Ok(((), Vec::new()))
        })?;
        Ok(record)
    }

    /// The event a transition leaves in the history (with `state` set), redacted.
    fn transition_event(&self, transition: &Transition) -> Event {
        let kind = if transition.state == VersionState::Failed {
            EventKind::Error
        } else {
            EventKind::Progress
        };
        let mut event = Event::now(
            transition.stage,
            kind,
            self.inner.redactor.redact(&transition.message),
        );
        event.state = Some(transition.state);
        event
    }

    /// Moves a version to a new state, recording the change as an event of its own (with
    /// `state` set) in the same transaction.
    ///
    /// Making a version live this way fails if another version of the model is live: use
    /// [`Registry::go_live`], which retires it in the same step.
    pub fn apply(
        &self,
        model: &ModelName,
        version: VersionId,
        transition: Transition,
    ) -> Result<VersionRecord> {
        let event = self.transition_event(&transition);
        let error = transition
            .error
            .as_deref()
            .map(|e| self.inner.redactor.redact(e));
        self.lock().write(true, "changing a version's state", |tx| {
            let record = update_state(tx, model, version, &transition, error, event.at_ms)?;
            insert_event(tx, model, version, &event)?;
            Ok((record, vec![((model.clone(), version), event)]))
        })
    }

    /// Makes `version` the live version of `model` and retires the one it replaces, in one
    /// transaction, with an event for each.
    pub fn go_live(
        &self,
        model: &ModelName,
        version: VersionId,
        message: impl Into<String>,
    ) -> Result<VersionRecord> {
        let live =
            self.transition_event(&Transition::to(VersionState::Live, Stage::Rollout, message));
        let retire = Transition::to(
            VersionState::Retired,
            Stage::Rollout,
            format!("replaced by {version}"),
        );
        let retired_event = self.transition_event(&retire);
        self.lock().write(true, "switching the live version", |tx| {
            let previous: Option<u32> = tx
                .query_row(
                    "SELECT version FROM versions
                     WHERE model = ?1 AND state = 'live' AND version != ?2",
                    params![model.as_str(), version.number()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(|e| database("reading the live version", e))?;
            let mut appended = Vec::new();
            if let Some(previous) = previous {
                let previous = VersionId::parse(&previous.to_string())?;
                update_state(tx, model, previous, &retire, None, live.at_ms)?;
                insert_event(tx, model, previous, &retired_event)?;
                appended.push(((model.clone(), previous), retired_event));
            }
            let going_live = Transition::to(VersionState::Live, Stage::Rollout, "");
            let record = update_state(tx, model, version, &going_live, None, live.at_ms)?;
            insert_event(tx, model, version, &live)?;
            appended.push(((model.clone(), version), live));
            Ok((record, appended))
        })
    }

    /// Records that the live instance of a version exited (`cause`) and counts a restart,
    /// with an event saying so. Returns the record.
    pub fn record_exit(
        &self,
        model: &ModelName,
        version: VersionId,
        cause: &str,
        event: Event,
    ) -> Result<VersionRecord> {
        let mut event = event;
        event.message = self.inner.redactor.redact(&event.message);
        self.lock().write(true, "recording an exit", |tx| {
            let changed = tx
                .execute(
                    "UPDATE versions SET restarts = restarts + 1, last_exit = ?3
                     WHERE model = ?1 AND version = ?2",
                    params![model.as_str(), version.number(), cause],
                )
                .map_err(|e| database("recording an exit", e))?;
            if changed == 0 {
                return Err(Error::NotFound(format!("{model} {version}")));
            }
            insert_event(tx, model, version, &event)?;
            let record = select_version(tx, model, version)?;
            Ok((record, vec![((model.clone(), version), event)]))
        })
    }

    /// Appends an event to a version's history and sends it to live subscribers. Past
    /// [`MAX_EVENTS`] a version's log lines are dropped.
    pub fn record_event(&self, model: &ModelName, version: VersionId, mut event: Event) {
        event.message = self.inner.redactor.redact(&event.message);
        if let Err(e) = self.append(model, version, event) {
            tracing::warn!(error = %e.chain(), "could not record an event");
        }
    }

    fn append(&self, model: &ModelName, version: VersionId, mut event: Event) -> Result<()> {
        let key = (model.clone(), version);
        let mut db = self.lock();
        let count = *db.count(&key)?;
        if event.kind == EventKind::Log && count >= MAX_EVENTS {
            if count > MAX_EVENTS {
                return Ok(());
            }
            event = Event::now(
                event.stage,
                EventKind::Progress,
                format!("{MAX_EVENTS} events recorded: later log lines are not kept"),
            );
        }
        db.write(event.kind != EventKind::Log, "appending an event", |tx| {
            insert_event(tx, model, version, &event)?;
            Ok(((), vec![(key, event)]))
        })
    }

    /// A version's events so far and a receiver of those that follow.
    pub fn subscribe(
        &self,
        model: &ModelName,
        version: VersionId,
    ) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let mut db = self.lock();
        let history = Self::history(&db.conn, model, version).unwrap_or_else(|e| {
            tracing::warn!(error = %e.chain(), "could not read events");
            Vec::new()
        });
        let receiver = db
            .channels
            .entry((model.clone(), version))
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe();
        (history, receiver)
    }

    fn history(conn: &Connection, model: &ModelName, version: VersionId) -> Result<Vec<Event>> {
        let mut statement = conn
            .prepare_cached(
                "SELECT at_ms, stage, kind, message, state FROM events
                 WHERE model = ?1 AND version = ?2 ORDER BY id",
            )
            .map_err(|e| database("reading events", e))?;
        let events = statement
            .query_map(params![model.as_str(), version.number()], event_row)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| database("reading events", e))?;
        Ok(events)
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

    /// The version of `model` that is live, if any.
    pub fn live(&self, model: &ModelName) -> Option<VersionRecord> {
        self.select_versions("WHERE model = ?1 AND state = 'live'", [model.as_str()])
            .ok()?
            .pop()
    }

    /// Forgets a version and its events (after its files were deleted).
    pub fn remove(&self, model: &ModelName, version: VersionId) -> Result<()> {
        let mut db = self.lock();
        db.write(true, "removing a version", |tx| {
            let (name, number) = (model.as_str(), version.number());
            tx.execute(
                "DELETE FROM events WHERE model = ?1 AND version = ?2",
                params![name, number],
            )
            .and_then(|_| {
                tx.execute(
                    "DELETE FROM versions WHERE model = ?1 AND version = ?2",
                    params![name, number],
                )
            })
            .and_then(|_| {
                tx.execute(
                    "DELETE FROM models WHERE name = ?1
                     AND NOT EXISTS (SELECT 1 FROM versions WHERE model = ?1)",
                    [name],
                )
            })
            .map_err(|e| database("removing a version", e))?;
            Ok(((), Vec::new()))
        })?;
        let key = (model.clone(), version);
        db.counts.remove(&key);
        db.channels.remove(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ArchiveFormat;

    fn stored(model: &str, version: u32) -> StoredVersion {
        StoredVersion {
            model: ModelName::parse(model).unwrap(),
            version: VersionId::parse(&version.to_string()).unwrap(),
            sha256: "ab".repeat(32),
            size: 10,
            format: ArchiveFormat::TarGz,
            stored_at: 1,
        }
    }

    fn open(dir: &tempfile::TempDir) -> Registry {
        Registry::open(dir.path().join("so1s.db")).unwrap()
    }

    fn messages(registry: &Registry, model: &ModelName, version: VersionId) -> Vec<String> {
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
            let artifact = Artifact::Bundle {
                dir: "/b/m/v1".into(),
            };
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
        assert_eq!(
            live.artifact,
            Some(Artifact::Bundle {
                dir: "/b/m/v1".into()
            })
        );
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
    fn going_live_retires_the_previous_version_in_the_same_step() {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(&dir);
        let model = ModelName::parse("m").unwrap();
        let (v1, v2) = (VersionId::FIRST, VersionId::FIRST.next());
        registry.add(stored("m", 1)).unwrap();
        registry.add(stored("m", 2)).unwrap();
        registry.go_live(&model, v1, "v1 live").unwrap();
        let (_, mut v1_events) = registry.subscribe(&model, v1);
        let record = registry.go_live(&model, v2, "v2 live").unwrap();
        assert_eq!(record.state, VersionState::Live);
        assert_eq!(
            registry.version(&model, v1).unwrap().state,
            VersionState::Retired
        );
        assert_eq!(registry.live(&model).unwrap().stored.version, v2);
        let retired = v1_events.try_recv().unwrap();
        assert_eq!(retired.message, "replaced by v2");
        assert_eq!(retired.state, Some(VersionState::Retired));
        // A second live version by a plain state change is refused by the database.
        let err = registry
            .apply(
                &model,
                v1,
                Transition::to(VersionState::Live, Stage::Rollout, "both?"),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Database { .. }), "{err:?}");
        assert_eq!(registry.live(&model).unwrap().stored.version, v2);
    }

    #[test]
    fn exits_are_counted_until_the_version_goes_live_again() {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(&dir);
        let model = ModelName::parse("m").unwrap();
        registry.add(stored("m", 1)).unwrap();
        registry.go_live(&model, VersionId::FIRST, "live").unwrap();
        for n in 1..=2 {
            let record = registry
                .record_exit(
                    &model,
                    VersionId::FIRST,
                    "killed by signal 9",
                    Event::now(Stage::Rollout, EventKind::Error, format!("exit {n}")),
                )
                .unwrap();
            assert_eq!(record.restarts, n);
            assert_eq!(record.last_exit.as_deref(), Some("killed by signal 9"));
        }
        let record = registry.go_live(&model, VersionId::FIRST, "again").unwrap();
        assert_eq!((record.restarts, record.last_exit), (0, None));
    }

    #[tokio::test]
    async fn subscribers_get_history_then_live_events() {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(&dir);
        let model = ModelName::parse("m").unwrap();
        registry.add(stored("m", 1)).unwrap();
        let v1 = VersionId::FIRST;
        registry.record_event(
            &model,
            v1,
            Event::now(Stage::Build, EventKind::Progress, "one"),
        );
        let (history, mut live) = registry.subscribe(&model, v1);
        registry.record_event(&model, v1, Event::now(Stage::Build, EventKind::Log, "two"));
        assert_eq!(
            history
                .iter()
                .map(|e| e.message.as_str())
                .collect::<Vec<_>>(),
            ["one"]
        );
        assert_eq!(live.recv().await.unwrap().message, "two");
    }

    #[test]
    fn past_the_cap_log_lines_are_dropped_but_progress_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(&dir);
        let model = ModelName::parse("m").unwrap();
        registry.add(stored("m", 1)).unwrap();
        let v1 = VersionId::FIRST;
        for i in 0..MAX_EVENTS + 5 {
            registry.record_event(
                &model,
                v1,
                Event::now(Stage::Build, EventKind::Log, format!("line {i}")),
            );
        }
        registry.record_event(
            &model,
            v1,
            Event::now(Stage::Build, EventKind::Progress, "built"),
        );
        let history = messages(&registry, &model, v1);
        assert_eq!(history.len(), MAX_EVENTS + 2);
        assert!(
            history[MAX_EVENTS].contains("not kept"),
            "{}",
            history[MAX_EVENTS]
        );
        assert_eq!(history.last().unwrap(), "built");
    }

    #[test]
    fn removing_the_last_version_forgets_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let registry = open(&dir);
        let model = ModelName::parse("m").unwrap();
        registry.add(stored("m", 1)).unwrap();
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
