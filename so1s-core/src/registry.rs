//! [`Registry`]: models, versions, their states and events, kept across api-server restarts.
//!
//! The registry is a JSON file written atomically (temporary file, fsync, rename) on every
//! state change. Events stream live to subscribers (server-sent events) through a broadcast
//! channel per version; a subscriber gets the history first, then what follows, without gaps.

use crate::build::Artifact;
use crate::clock::now_ms;
use crate::events::{Event, EventKind, Stage};
use crate::model::{ModelName, VersionId};
use crate::redact::Redactor;
use crate::store::StoredVersion;
use crate::{Error, Result};
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

/// The persisted document.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Document {
    models: BTreeMap<ModelName, BTreeMap<VersionId, VersionRecord>>,
    events: BTreeMap<String, Vec<Event>>,
}

/// Most events kept per version.
const MAX_EVENTS: usize = 2_000;

/// The registry. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// What clients read (errors, events) has host paths shortened.
    redactor: Redactor,
    state: Mutex<State>,
}

struct State {
    doc: Document,
    channels: HashMap<String, broadcast::Sender<Event>>,
}

fn key(model: &ModelName, version: VersionId) -> String {
    format!("{model}/{version}")
}

impl Registry {
    /// Opens the registry file (created on first write). Versions caught in the middle of a
    /// build or rollout by a crash are marked failed: nothing is running them any more.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let mut doc: Document = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::ModelJson {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Document::default(),
            Err(source) => {
                return Err(Error::Io {
                    context: format!("reading the registry {}", path.display()),
                    source,
                })
            }
        };
        for record in doc
            .models
            .values_mut()
            .flat_map(|versions| versions.values_mut())
        {
            if !record.state.is_settled() && record.state != VersionState::Stored {
                record.state = VersionState::Failed;
                record.error = Some("interrupted: the api server stopped during this step".into());
            }
        }
        let registry = Self {
            inner: Arc::new(Inner {
                redactor: Redactor::with_data_dir(path.parent().unwrap_or(Path::new("."))),
                path,
                state: Mutex::new(State {
                    doc,
                    channels: HashMap::new(),
                }),
            }),
        };
        Ok(registry)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the registry to disk atomically.
    fn persist(&self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec(&state.doc).map_err(|e| Error::Io {
            context: "encoding the registry".into(),
            source: std::io::Error::other(e),
        })?;
        let tmp = self.inner.path.with_extension("json.tmp");
        let io = |context: &str, source| Error::Io {
            context: format!("{context} {}", tmp.display()),
            source,
        };
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(|e| io("creating", e))?;
            file.write_all(&bytes).map_err(|e| io("writing", e))?;
            file.sync_all().map_err(|e| io("syncing", e))?;
        }
        std::fs::rename(&tmp, &self.inner.path).map_err(|e| io("renaming", e))
    }

    /// Records a newly stored version.
    pub fn add(&self, stored: StoredVersion) -> Result<VersionRecord> {
        let mut state = self.lock();
        let record = VersionRecord {
            stored: stored.clone(),
            state: VersionState::Stored,
            error: None,
            artifact: None,
            updated_at_ms: now_ms(),
            live_since_ms: None,
        };
        state
            .doc
            .models
            .entry(stored.model.clone())
            .or_default()
            .insert(stored.version, record.clone());
        self.persist(&state)?;
        Ok(record)
    }

    /// Moves a version to a new state, recording the change as an event of its own (with
    /// `state` set) in the same step, and persists it.
    pub fn apply(
        &self,
        model: &ModelName,
        version: VersionId,
        transition: Transition,
    ) -> Result<VersionRecord> {
        let mut state = self.lock();
        let record = state
            .doc
            .models
            .get_mut(model)
            .and_then(|versions| versions.get_mut(&version))
            .ok_or_else(|| Error::NotFound(format!("{model} {version}")))?;
        let redactor = &self.inner.redactor;
        record.state = transition.state;
        record.error = transition.error.as_deref().map(|e| redactor.redact(e));
        if transition.artifact.is_some() {
            record.artifact = transition.artifact;
        }
        record.updated_at_ms = now_ms();
        if transition.state == VersionState::Live {
            record.live_since_ms = Some(record.updated_at_ms);
        }
        let record = record.clone();
        let kind = if transition.state == VersionState::Failed {
            EventKind::Error
        } else {
            EventKind::Progress
        };
        let mut event = Event::now(transition.stage, kind, transition.message);
        event.message = self.inner.redactor.redact(&event.message);
        event.state = Some(transition.state);
        Self::push_event(&mut state, model, version, event);
        self.persist(&state)?;
        Ok(record)
    }

    /// Appends an event to a version's history and sends it to live subscribers.
    pub fn record_event(&self, model: &ModelName, version: VersionId, mut event: Event) {
        event.message = self.inner.redactor.redact(&event.message);
        let mut state = self.lock();
        let kind = event.kind;
        Self::push_event(&mut state, model, version, event);
        // Progress and errors are worth a write; log lines ride along with the next one.
        if kind != EventKind::Log {
            if let Err(e) = self.persist(&state) {
                tracing::warn!(error = %e.chain(), "could not persist the registry");
            }
        }
    }

    fn push_event(state: &mut State, model: &ModelName, version: VersionId, event: Event) {
        let key = key(model, version);
        let history = state.doc.events.entry(key.clone()).or_default();
        history.push(event.clone());
        if history.len() > MAX_EVENTS {
            let excess = history.len() - MAX_EVENTS;
            history.drain(..excess);
        }
        if let Some(channel) = state.channels.get(&key) {
            let _ = channel.send(event);
        }
    }

    /// A version's events so far and a receiver of those that follow.
    pub fn subscribe(
        &self,
        model: &ModelName,
        version: VersionId,
    ) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let mut state = self.lock();
        let key = key(model, version);
        let history = state.doc.events.get(&key).cloned().unwrap_or_default();
        let receiver = state
            .channels
            .entry(key)
            .or_insert_with(|| broadcast::channel(1024).0)
            .subscribe();
        (history, receiver)
    }

    /// One version.
    pub fn version(&self, model: &ModelName, version: VersionId) -> Result<VersionRecord> {
        self.lock()
            .doc
            .models
            .get(model)
            .and_then(|versions| versions.get(&version))
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{model} {version}")))
    }

    /// A model's versions, oldest first.
    pub fn versions(&self, model: &ModelName) -> Result<Vec<VersionRecord>> {
        self.lock()
            .doc
            .models
            .get(model)
            .map(|versions| versions.values().cloned().collect())
            .ok_or_else(|| Error::NotFound(format!("model {model}")))
    }

    /// Every model's name.
    pub fn models(&self) -> Vec<ModelName> {
        self.lock().doc.models.keys().cloned().collect()
    }

    /// The version of `model` that is live, if any.
    pub fn live(&self, model: &ModelName) -> Option<VersionRecord> {
        self.lock()
            .doc
            .models
            .get(model)?
            .values()
            .find(|record| record.state == VersionState::Live)
            .cloned()
    }

    /// Forgets a version (after its files were deleted).
    pub fn remove(&self, model: &ModelName, version: VersionId) -> Result<()> {
        let mut state = self.lock();
        if let Some(versions) = state.doc.models.get_mut(model) {
            versions.remove(&version);
            if versions.is_empty() {
                state.doc.models.remove(model);
            }
        }
        let key = key(model, version);
        state.doc.events.remove(&key);
        state.channels.remove(&key);
        self.persist(&state)
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

    #[test]
    fn states_and_events_survive_a_reopen_and_interrupted_work_is_failed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let model = ModelName::parse("m").unwrap();
        let (v1, v2) = (VersionId::FIRST, VersionId::FIRST.next());
        {
            let registry = Registry::open(&path).unwrap();
            registry.add(stored("m", 1)).unwrap();
            registry.add(stored("m", 2)).unwrap();
            let artifact = Artifact::Bundle {
                dir: "/b/m/v1".into(),
            };
            registry
                .apply(
                    &model,
                    v1,
                    Transition::to(VersionState::Live, Stage::Rollout, "live")
                        .with_artifact(artifact),
                )
                .unwrap();
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
                Event::now(Stage::Rollout, EventKind::Progress, "live"),
            );
        }
        let registry = Registry::open(&path).unwrap();
        let live = registry.live(&model).unwrap();
        assert_eq!(live.stored.version, v1);
        assert!(live.live_since_ms.is_some());
        assert_eq!(
            live.artifact,
            Some(Artifact::Bundle {
                dir: "/b/m/v1".into()
            })
        );
        let interrupted = registry.version(&model, v2).unwrap();
        assert_eq!(interrupted.state, VersionState::Failed);
        assert!(interrupted.error.unwrap().contains("interrupted"));
        let (history, _) = registry.subscribe(&model, v1);
        let messages: Vec<_> = history.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["live", "live"]);
        assert_eq!(
            history[0].state,
            Some(VersionState::Live),
            "transitions carry their state"
        );
        assert_eq!(history[1].state, None);
    }

    #[tokio::test]
    async fn subscribers_get_history_then_live_events() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path().join("r.json")).unwrap();
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
    fn removing_the_last_version_forgets_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path().join("r.json")).unwrap();
        let model = ModelName::parse("m").unwrap();
        registry.add(stored("m", 1)).unwrap();
        assert_eq!(registry.models(), std::slice::from_ref(&model));
        registry.remove(&model, VersionId::FIRST).unwrap();
        assert!(registry.models().is_empty());
        assert!(matches!(registry.versions(&model), Err(Error::NotFound(_))));
    }
}
