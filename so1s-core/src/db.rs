//! The api server's database: one SQLite file (`<data-dir>/so1s.db`), WAL, numbered
//! migrations (`PRAGMA user_version`), one transaction per change.
//!
//! It holds the api tokens and the registry (models, versions, events); each migration below
//! is applied once, in order.

use crate::{Error, Result};
use rusqlite::Connection;
use std::path::Path;

/// The schema, one step per entry; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: api tokens. A revoked token keeps its row (who had access, until when); a name is
    // unique among the tokens that are not revoked.
    "CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        hash BLOB NOT NULL UNIQUE,
        created_at_ms INTEGER NOT NULL,
        last_used_at_ms INTEGER,
        revoked_at_ms INTEGER
    );
    CREATE UNIQUE INDEX tokens_active_name ON tokens(name) WHERE revoked_at_ms IS NULL;",
    // 2: the registry. A model has versions; a version has events, appended and never
    // rewritten. At most one version of a model is live, which the database itself keeps
    // (until migration 3).
    "CREATE TABLE models (
        name TEXT PRIMARY KEY,
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE versions (
        model TEXT NOT NULL REFERENCES models(name),
        version INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        format TEXT NOT NULL,
        stored_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        artifact TEXT,
        updated_at_ms INTEGER NOT NULL,
        live_since_ms INTEGER,
        restarts INTEGER NOT NULL DEFAULT 0,
        last_exit TEXT,
        PRIMARY KEY (model, version)
    );
    CREATE UNIQUE INDEX versions_one_live ON versions(model) WHERE state = 'live';
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        version INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        stage TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        state TEXT,
        FOREIGN KEY (model, version) REFERENCES versions(model, version) ON DELETE CASCADE
    );
    CREATE INDEX events_of_version ON events(model, version, id);
    CREATE TABLE imports (
        name TEXT PRIMARY KEY,
        at_ms INTEGER NOT NULL
    );",
    // 3: traffic splits. A live version has a weight, its percent of the model's requests;
    // while a split is set several versions of a model are live, so the one-live index
    // goes. The registry's writes keep a model's live weights adding up to 100.
    "ALTER TABLE versions ADD COLUMN weight INTEGER;
    UPDATE versions SET weight = 100 WHERE state = 'live';
    DROP INDEX versions_one_live;",
    // 4: scale to zero. A model's idle policy (seconds without a request before its
    // instances stop; 0 = always on), whether it is scaled to zero now, and its wake-ups.
    "CREATE TABLE scale (
        model TEXT PRIMARY KEY,
        idle_after_s INTEGER NOT NULL DEFAULT 0,
        asleep INTEGER NOT NULL DEFAULT 0,
        wakeups INTEGER NOT NULL DEFAULT 0
    );",
];

/// Opens (creating and migrating) the database at `path`.
pub fn open(path: &Path) -> Result<Connection> {
    let mut conn =
        Connection::open(path).map_err(|e| database(format!("opening {}", path.display()), e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
        .and_then(|()| conn.pragma_update(None, "foreign_keys", "ON"))
        .and_then(|()| conn.busy_timeout(std::time::Duration::from_secs(5)))
        .map_err(|e| database("configuring the database", e))?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .map_err(|e| database("starting the migration", e))?;
    let version: usize = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| database("reading the schema version", e))?;
    if version > MIGRATIONS.len() {
        return Err(Error::InvalidInput(format!(
            "the database has schema version {version}, newer than this so1s knows ({}): \
             run a newer so1s",
            MIGRATIONS.len()
        )));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(sql)
            .map_err(|e| database(format!("migrating the database to version {}", step + 1), e))?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len())
        .map_err(|e| database("writing the schema version", e))?;
    tx.commit()
        .map_err(|e| database("committing the migration", e))
}

/// A database error with what was being done.
pub(crate) fn database(context: impl Into<String>, source: rusqlite::Error) -> Error {
    Error::Database {
        context: context.into(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("so1s.db");
        drop(open(&path).unwrap());
        let conn = open(&path).unwrap();
        let version: usize = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len());
        conn.pragma_update(None, "user_version", MIGRATIONS.len() + 1)
            .unwrap();
        drop(conn);
        let err = open(&path).unwrap_err();
        assert!(err.to_string().contains("newer than this so1s"), "{err}");
    }
}
