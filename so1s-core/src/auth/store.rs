//! [`TokenStore`]: api tokens in the database, by hash.

use super::{Identity, Role, TokenHash};
use crate::db::{self, database};
use crate::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Mutex;

/// What is known of a token, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// When it was made, in ms since the Unix epoch.
    pub created_at_ms: u64,
    /// When it was last accepted (recorded at most once a minute).
    pub last_used_at_ms: Option<u64>,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

/// How stale `last_used_at_ms` may get before a use writes it again.
const LAST_USED_RESOLUTION_MS: u64 = 60_000;

/// The tokens table.
pub struct TokenStore {
    conn: Mutex<Connection>,
}

impl TokenStore {
    /// Opens the database at `path` (see [`crate::db`]).
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            conn: Mutex::new(db::open(path)?),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any token is active.
    pub fn has_active(&self) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM tokens WHERE revoked_at_ms IS NULL)",
                [],
                |row| row.get(0),
            )
            .map_err(|e| database("reading tokens", e))
    }

    /// Stores a new token's hash; a name already in use is a conflict.
    pub fn insert(&self, name: &str, role: Role, hash: &TokenHash) -> Result<TokenInfo> {
        let now = crate::clock::now_ms();
        let inserted = self.conn().execute(
            "INSERT INTO tokens (name, role, hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![name, role.as_str(), &hash.as_bytes()[..], now as i64],
        );
        match inserted {
            Ok(_) => Ok(TokenInfo {
                name: name.to_owned(),
                role,
                created_at_ms: now,
                last_used_at_ms: None,
                revoked_at_ms: None,
            }),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::Conflict(format!(
                    "a token named `{name}` exists already: revoke it or pick another name"
                )))
            }
            Err(e) => Err(database("storing a token", e)),
        }
    }

    /// The active token with this hash; its use is recorded.
    pub fn authenticate(&self, hash: &TokenHash) -> Result<Option<Identity>> {
        let conn = self.conn();
        // Every active hash is compared, each in constant time: the lookup itself says
        // nothing about how close a guess came.
        let mut statement = conn
            .prepare_cached(
                "SELECT id, name, role, hash, last_used_at_ms FROM tokens WHERE revoked_at_ms IS NULL",
            )
            .map_err(|e| database("reading tokens", e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                    row.get::<_, Option<i64>>(4)?,
                ))
            })
            .map_err(|e| database("reading tokens", e))?;
        let mut found = None;
        for row in rows {
            let (id, name, role, stored, last_used) =
                row.map_err(|e| database("reading tokens", e))?;
            let matches = TokenHash::from_bytes(&stored).is_some_and(|stored| stored.matches(hash));
            if matches && found.is_none() {
                found = Some((id, name, role, last_used));
            }
        }
        drop(statement);
        let Some((id, name, role, last_used)) = found else {
            return Ok(None);
        };
        let now = crate::clock::now_ms();
        if last_used.is_none_or(|t| now.saturating_sub(t as u64) >= LAST_USED_RESOLUTION_MS) {
            conn.execute(
                "UPDATE tokens SET last_used_at_ms = ?1 WHERE id = ?2",
                params![now as i64, id],
            )
            .map_err(|e| database("recording a token's use", e))?;
        }
        Ok(Some(Identity {
            name,
            role: role.parse()?,
        }))
    }

    /// The active tokens, oldest first.
    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        let conn = self.conn();
        let mut statement = conn
            .prepare(
                "SELECT name, role, created_at_ms, last_used_at_ms, revoked_at_ms FROM tokens \
                 WHERE revoked_at_ms IS NULL ORDER BY id",
            )
            .map_err(|e| database("listing tokens", e))?;
        let rows = statement
            .query_map([], raw_info)
            .map_err(|e| database("listing tokens", e))?;
        rows.map(|row| info(row.map_err(|e| database("listing tokens", e))?))
            .collect()
    }

    /// Revokes the active token called `name`.
    pub fn revoke(&self, name: &str) -> Result<TokenInfo> {
        let conn = self.conn();
        let now = crate::clock::now_ms();
        let revoked = conn
            .query_row(
                "UPDATE tokens SET revoked_at_ms = ?1 WHERE name = ?2 AND revoked_at_ms IS NULL \
                 RETURNING name, role, created_at_ms, last_used_at_ms, revoked_at_ms",
                params![now as i64, name],
                raw_info,
            )
            .optional()
            .map_err(|e| database("revoking a token", e))?;
        info(revoked.ok_or_else(|| Error::NotFound(format!("token `{name}`")))?)
    }
}

/// A row of `tokens` as read: (name, role, created, last used, revoked).
type RawInfo = (String, String, i64, Option<i64>, Option<i64>);

fn raw_info(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawInfo> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn info((name, role, created, last_used, revoked): RawInfo) -> Result<TokenInfo> {
    let ms = |v: Option<i64>| v.map(|v| v as u64);
    Ok(TokenInfo {
        name,
        role: role.parse()?,
        created_at_ms: created as u64,
        last_used_at_ms: ms(last_used),
        revoked_at_ms: ms(revoked),
    })
}
