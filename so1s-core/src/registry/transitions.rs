//! Writes that move a version: recording it, changing its state, switching the live
//! version, counting its exits, forgetting it.

use super::sql::{
    insert_event, insert_version, live_versions, select_version, set_weight, update_state,
};
use super::{Registry, Transition, VersionRecord, VersionState};
use crate::clock::now_ms;
use crate::db::database;
use crate::events::{Event, EventKind, Stage};
use crate::model::{ModelName, VersionId};
use crate::rollout::traffic::Split;
use crate::store::StoredVersion;
use crate::{Error, Result};
use rusqlite::params;

impl Registry {
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
            weight: None,
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
    /// A version goes live only through [`Registry::go_live`] or [`Registry::set_split`],
    /// which retire what it replaces in the same step: this refuses it.
    pub fn apply(
        &self,
        model: &ModelName,
        version: VersionId,
        transition: Transition,
    ) -> Result<VersionRecord> {
        if transition.state == VersionState::Live {
            return Err(Error::Conflict(format!(
                "{model} {version} goes live with the versions it replaces, not on its own"
            )));
        }
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

    /// Makes `version` the live version of `model`, taking all its requests, and retires the
    /// ones it replaces, in one transaction, with an event for each.
    pub fn go_live(
        &self,
        model: &ModelName,
        version: VersionId,
        message: impl Into<String>,
    ) -> Result<VersionRecord> {
        let mut records = self.set_split(model, &Split::single(version), message)?;
        Ok(records.remove(0))
    }

    /// Makes the versions of `split` the live versions of `model` with their weights and
    /// retires the live versions it leaves out, in one transaction, with an event for each
    /// change (`message` for the versions that go live). Returns the split's records, in its
    /// order.
    pub fn set_split(
        &self,
        model: &ModelName,
        split: &Split,
        message: impl Into<String>,
    ) -> Result<Vec<VersionRecord>> {
        let message = message.into();
        let primary = split.primary(&[]);
        let retire = Transition::to(
            VersionState::Retired,
            Stage::Rollout,
            match split.is_split() {
                true => format!("taken out of the traffic split ({})", split.describe()),
                false => format!("replaced by {primary}"),
            },
        );
        let retired_event = self.transition_event(&retire);
        let now = retired_event.at_ms;
        self.lock()
            .write(true, "switching the live versions", |tx| {
                let mut appended = Vec::new();
                for previous in live_versions(tx, model)? {
                    let previous = previous.stored.version;
                    if split.weight(previous).is_none() {
                        update_state(tx, model, previous, &retire, None, now)?;
                        insert_event(tx, model, previous, &retired_event)?;
                        appended.push(((model.clone(), previous), retired_event.clone()));
                    }
                }
                let mut records = Vec::new();
                for &(version, weight) in split.arms() {
                    let current = select_version(tx, model, version)?;
                    let event = match (current.state, current.weight) {
                        // Going live on its own starts its record over, as a rollout does.
                        (VersionState::Live, Some(old)) if old == weight && split.is_split() => {
                            None
                        }
                        (VersionState::Live, old) if split.is_split() => Some(Event::now(
                            Stage::Rollout,
                            EventKind::Progress,
                            format!(
                                "its share of {model}'s requests goes from {}% to {weight}% ({})",
                                old.unwrap_or(0),
                                split.describe()
                            ),
                        )),
                        _ => {
                            let text = match split.is_split() {
                                true => format!(
                                    "{message} ({weight}% of requests: {})",
                                    split.describe()
                                ),
                                false => message.clone(),
                            };
                            let live = Transition::to(VersionState::Live, Stage::Rollout, text);
                            update_state(tx, model, version, &live, None, now)?;
                            Some(self.transition_event(&live))
                        }
                    };
                    if let Some(event) = event {
                        insert_event(tx, model, version, &event)?;
                        appended.push(((model.clone(), version), event));
                    }
                    records.push(set_weight(tx, model, version, weight)?);
                }
                Ok((records, appended))
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

    /// Forgets a version's artifact (retention removed it); the version stays, with its
    /// state.
    pub fn forget_artifact(&self, model: &ModelName, version: VersionId) -> Result<()> {
        self.lock().write(true, "forgetting an artifact", |tx| {
            let changed = tx
                .execute(
                    "UPDATE versions SET artifact = NULL WHERE model = ?1 AND version = ?2",
                    params![model.as_str(), version.number()],
                )
                .map_err(|e| database("forgetting an artifact", e))?;
            if changed == 0 {
                return Err(Error::NotFound(format!("{model} {version}")));
            }
            Ok(((), Vec::new()))
        })
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
    use super::super::tests::{open, stored, with_one_version};
    use super::*;

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
        // A second live version by a plain state change is refused.
        let err = registry
            .apply(
                &model,
                v1,
                Transition::to(VersionState::Live, Stage::Rollout, "both?"),
            )
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(registry.live(&model).unwrap().stored.version, v2);
    }

    #[test]
    fn exits_are_counted_until_the_version_goes_live_again() {
        let (_dir, registry, model) = with_one_version();
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
}
