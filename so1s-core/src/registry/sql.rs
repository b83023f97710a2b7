//! The SQLite side of the registry: the connection with its event counts and subscriber
//! channels ([`Db`]), and the statements that turn records and events into rows and back.

use super::{Transition, VersionRecord, VersionState};
use crate::db::database;
use crate::events::Event;
use crate::model::{ModelName, VersionId};
use crate::store::StoredVersion;
use crate::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use tokio::sync::broadcast;

pub(super) type Key = (ModelName, VersionId);

pub(super) struct Db {
    pub(super) conn: Connection,
    /// Whether the connection writes with `synchronous = FULL` right now.
    durable: bool,
    /// Events stored per version, counted once per process and kept up to date.
    pub(super) counts: HashMap<Key, usize>,
    pub(super) channels: HashMap<Key, broadcast::Sender<Event>>,
}

impl Db {
    /// A connection that writes with `synchronous = FULL`, as [`crate::db::open`] leaves it.
    pub(super) fn new(conn: Connection) -> Self {
        Self {
            conn,
            durable: true,
            counts: HashMap::new(),
            channels: HashMap::new(),
        }
    }

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

    pub(super) fn count(&mut self, key: &Key) -> Result<&mut usize> {
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
    pub(super) fn write<T>(
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

pub(super) const VERSION_COLUMNS: &str =
    "model, version, sha256, size, format, stored_at, state, error, \
     artifact, updated_at_ms, live_since_ms, restarts, last_exit, weight";

pub(super) fn version_row(row: &Row<'_>) -> rusqlite::Result<VersionRecord> {
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
        weight: row.get(13)?,
    })
}

pub(super) fn event_row(row: &Row<'_>) -> rusqlite::Result<Event> {
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

pub(super) fn select_version(
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

pub(super) fn insert_event(
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

pub(super) fn insert_version(tx: &Transaction<'_>, record: &VersionRecord) -> Result<()> {
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
        &format!("INSERT INTO versions ({VERSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"),
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
            record.weight,
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
pub(super) fn update_state(
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
                 last_exit = CASE WHEN ?3 = 'live' THEN NULL ELSE last_exit END,
                 weight = CASE WHEN ?3 = 'live' THEN weight ELSE NULL END
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

/// Sets the weight of a live version.
pub(super) fn set_weight(
    tx: &Transaction<'_>,
    model: &ModelName,
    version: VersionId,
    weight: u32,
) -> Result<VersionRecord> {
    tx.execute(
        "UPDATE versions SET weight = ?3 WHERE model = ?1 AND version = ?2",
        params![model.as_str(), version.number(), weight],
    )
    .map_err(|e| database("setting a version's weight", e))?;
    select_version(tx, model, version)
}

/// The live versions of `model`, heaviest first (among equals, the longest live).
pub(super) fn live_versions(conn: &Connection, model: &ModelName) -> Result<Vec<VersionRecord>> {
    let mut statement = conn
        .prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ?1 AND state = 'live'
             ORDER BY weight DESC, live_since_ms ASC, version DESC"
        ))
        .map_err(|e| database("reading the live versions", e))?;
    let records = statement
        .query_map([model.as_str()], version_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(|e| database("reading the live versions", e))?;
    Ok(records)
}
