//! A model's scale-to-zero policy and state, as the registry keeps them across restarts.

use super::Registry;
use crate::db::database;
use crate::model::ModelName;
use crate::{Error, Result};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// The longest idle policy: a week.
pub const MAX_IDLE_AFTER_S: u64 = 7 * 24 * 3600;

/// A model's scale-to-zero policy and where it stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    /// Seconds without a request after which the model's instances stop; 0: always on.
    pub idle_after_s: u64,
    /// Whether it is scaled to zero now.
    pub asleep: bool,
    /// How often it was woken.
    pub wakeups: u64,
}

/// A [`Scale`] from `idle_after_s, asleep, wakeups` at column `at` on.
fn scale_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Scale> {
    Ok(Scale {
        idle_after_s: row.get::<_, i64>(at)?.max(0) as u64,
        asleep: row.get(at + 1)?,
        wakeups: row.get::<_, i64>(at + 2)?.max(0) as u64,
    })
}

impl Registry {
    /// `model`'s policy and state (the defaults if none was set).
    pub fn scale(&self, model: &ModelName) -> Scale {
        let db = self.lock();
        let row = db
            .conn
            .prepare_cached("SELECT idle_after_s, asleep, wakeups FROM scale WHERE model = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row([model.as_str()], |row| scale_row(row, 0))
                    .optional()
            });
        match row {
            Ok(scale) => scale.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %database("reading a scale policy", e).chain(), "registry");
                Scale::default()
            }
        }
    }

    /// Every model with an idle policy, with its state, in one query (the idle watcher
    /// reads it twice a second).
    pub fn idle_policies(&self) -> Vec<(ModelName, Scale)> {
        let db = self.lock();
        let rows = db
            .conn
            .prepare_cached(
                "SELECT model, idle_after_s, asleep, wakeups FROM scale
                 WHERE idle_after_s > 0 ORDER BY model",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([], |row| Ok((row.get::<_, String>(0)?, scale_row(row, 1)?)))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            });
        match rows {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(name, scale)| Some((ModelName::parse(&name).ok()?, scale)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %database("reading idle policies", e).chain(), "registry");
                Vec::new()
            }
        }
    }

    /// Sets `model`'s idle policy: `idle_after_s` seconds without a request (0: always on,
    /// at most [`MAX_IDLE_AFTER_S`]). The model must have versions.
    pub fn set_idle_after(&self, model: &ModelName, idle_after_s: u64) -> Result<Scale> {
        if idle_after_s > MAX_IDLE_AFTER_S {
            return Err(Error::InvalidInput(format!(
                "idle_after_s {idle_after_s} is more than a week ({MAX_IDLE_AFTER_S} s)"
            )));
        }
        self.versions(model)?;
        self.lock().write(true, "setting an idle policy", |tx| {
            tx.execute(
                "INSERT INTO scale (model, idle_after_s) VALUES (?1, ?2)
                 ON CONFLICT(model) DO UPDATE SET idle_after_s = excluded.idle_after_s",
                params![model.as_str(), idle_after_s as i64],
            )
            .map_err(|e| database("setting an idle policy", e))?;
            Ok(((), Vec::new()))
        })?;
        Ok(self.scale(model))
    }

    /// Records that `model` was scaled to zero (`asleep`) or woken (counted).
    pub fn set_asleep(&self, model: &ModelName, asleep: bool) -> Result<()> {
        let woke = i64::from(!asleep);
        self.lock().write(true, "recording a scale to zero", |tx| {
            tx.execute(
                "INSERT INTO scale (model, asleep, wakeups) VALUES (?1, ?2, ?3)
                 ON CONFLICT(model) DO UPDATE SET asleep = excluded.asleep,
                     wakeups = wakeups + ?3",
                params![model.as_str(), asleep, woke],
            )
            .map_err(|e| database("recording a scale to zero", e))?;
            Ok(((), Vec::new()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::with_one_version;
    use super::*;

    #[test]
    fn the_policy_and_the_state_are_kept_and_checked() {
        let (dir, registry, model) = with_one_version();
        assert_eq!(registry.scale(&model), Scale::default());
        assert!(registry.idle_policies().is_empty());
        let set = registry.set_idle_after(&model, 30).unwrap();
        assert_eq!(set.idle_after_s, 30);
        registry.set_asleep(&model, true).unwrap();
        registry.set_asleep(&model, false).unwrap();
        registry.set_asleep(&model, true).unwrap();
        let expected = Scale {
            idle_after_s: 30,
            asleep: true,
            wakeups: 1,
        };
        assert_eq!(registry.scale(&model), expected);
        drop(registry);
        let reopened = super::super::tests::open(&dir);
        assert_eq!(reopened.idle_policies(), vec![(model.clone(), expected)]);

        let too_long = reopened.set_idle_after(&model, MAX_IDLE_AFTER_S + 1);
        assert!(too_long
            .unwrap_err()
            .to_string()
            .contains("more than a week"));
        let unknown = ModelName::parse("nobody").unwrap();
        assert!(matches!(
            reopened.set_idle_after(&unknown, 5),
            Err(Error::NotFound(_))
        ));
        reopened.set_idle_after(&model, 0).unwrap();
        assert!(reopened.idle_policies().is_empty());
    }
}
