//! A version's event history: appending (capped at [`MAX_EVENTS`]), reading, and live
//! subscribers.

use super::sql::{event_row, insert_event};
use super::Registry;
use crate::db::database;
use crate::events::{Event, EventKind};
use crate::model::{ModelName, VersionId};
use crate::Result;
use rusqlite::{params, Connection};
use tokio::sync::broadcast;

/// Most events kept per version: past it, log lines are dropped (one event says so);
/// progress, errors and state changes are always kept.
pub const MAX_EVENTS: usize = 10_000;

impl Registry {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{messages, with_one_version};
    use super::*;
    use crate::events::Stage;

    #[tokio::test]
    async fn subscribers_get_history_then_live_events() {
        let (_dir, registry, model) = with_one_version();
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
        let (_dir, registry, model) = with_one_version();
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
}
