//! [`TestPlatform`]: a [`Platform`] over a real store and registry in a temporary data
//! directory, with [`FakeBuilder`] and [`FakeRollout`] for backends: the whole upload →
//! live sequence in milliseconds, without a model.

use super::builder::{fake_body, FakeBuilder};
use super::record::eventually;
use super::rollout::FakeRollout;
use so1s_core::events::Event;
use so1s_core::model::{ModelName, VersionId};
use so1s_core::platform::{Platform, PlatformOptions};
use so1s_core::registry::{Registry, VersionRecord, VersionState};
use so1s_core::rollout::Routes;
use so1s_core::store::FsModelStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest upload the test store takes.
pub const MAX_UPLOAD: u64 = 1 << 20;

pub fn name(model: &str) -> ModelName {
    ModelName::parse(model).unwrap()
}

pub fn v(version: &str) -> VersionId {
    VersionId::parse(version).unwrap()
}

/// The registry database of a data directory.
pub fn registry_path(data: &Path) -> PathBuf {
    data.join("so1s.db")
}

/// The store of a data directory.
pub async fn open_store(data: &Path) -> FsModelStore {
    FsModelStore::open(data.join("store"), MAX_UPLOAD)
        .await
        .unwrap()
}

pub struct TestPlatform {
    pub platform: Arc<Platform>,
    pub builder: Arc<FakeBuilder>,
    pub rollout: Arc<FakeRollout>,
    pub data: PathBuf,
    /// Kept for the platform's lifetime (it owns `data`), when this platform made it.
    _dir: Option<tempfile::TempDir>,
}

impl TestPlatform {
    /// A new platform on an empty data directory; up to 4 builds at once.
    pub async fn start() -> Self {
        Self::with_options(PlatformOptions {
            default_model: None,
            max_concurrent_builds: 4,
            ..Default::default()
        })
        .await
    }

    pub async fn with_options(options: PlatformOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut platform = Self::open(dir.path(), options).await;
        platform._dir = Some(dir);
        platform
    }

    /// A platform on the data directory `data` (as after a restart), with new fakes. The
    /// caller keeps `data` alive.
    pub async fn open(data: &Path, options: PlatformOptions) -> Self {
        let store = open_store(data).await;
        let registry = Registry::open(registry_path(data)).unwrap();
        let routes = Routes::default();
        let builder = Arc::new(FakeBuilder::default());
        let rollout = Arc::new(FakeRollout::new(routes.clone()));
        let platform = Platform::new(
            Arc::new(store),
            builder.clone(),
            rollout.clone(),
            registry,
            routes,
            options,
        );
        Self {
            platform,
            builder,
            rollout,
            data: data.to_owned(),
            _dir: None,
        }
    }

    pub fn registry(&self) -> &Registry {
        self.platform.registry()
    }

    /// Uploads an archive with the [`fake_archive`](super::fake_archive) script `script`.
    pub async fn upload(&self, model: &str, script: &str) -> VersionRecord {
        self.platform
            .upload(&name(model), fake_body(script))
            .await
            .unwrap()
    }

    pub fn record(&self, model: &str, version: &str) -> VersionRecord {
        self.registry().version(&name(model), v(version)).unwrap()
    }

    pub fn state(&self, model: &str, version: &str) -> VersionState {
        self.record(model, version).state
    }

    /// The version's state once it is `state` (waits for it).
    pub async fn wait_state(
        &self,
        model: &str,
        version: &str,
        state: VersionState,
    ) -> VersionRecord {
        eventually(&format!("{model} {version} {state}"), || {
            let record = self.registry().version(&name(model), v(version)).ok()?;
            (record.state == state).then_some(record)
        })
        .await
    }

    /// The version once its pipeline has ended (live, failed or retired).
    pub async fn settle(&self, model: &str, version: &str) -> VersionRecord {
        eventually(&format!("{model} {version} settled"), || {
            let record = self.registry().version(&name(model), v(version)).ok()?;
            record.state.ends_pipeline().then_some(record)
        })
        .await
    }

    /// The version's events so far.
    pub fn events(&self, model: &str, version: &str) -> Vec<Event> {
        self.registry().subscribe(&name(model), v(version)).0
    }

    /// The states the version's events entered, in order.
    pub fn states(&self, model: &str, version: &str) -> Vec<VersionState> {
        self.events(model, version)
            .iter()
            .filter_map(|e| e.state)
            .collect()
    }

    /// Waits until one of the version's events contains `text`; returns it.
    pub async fn wait_event(&self, model: &str, version: &str, text: &str) -> Event {
        eventually(
            &format!("an event of {model} {version} with {text:?}"),
            || {
                self.events(model, version)
                    .into_iter()
                    .find(|e| e.message.contains(text))
            },
        )
        .await
    }

    /// The model's live version, if any.
    pub fn live(&self, model: &str) -> Option<String> {
        self.registry()
            .live(&name(model))
            .map(|r| r.stored.version.to_string())
    }

    /// Where the gateway sends the model's traffic (its split's heaviest version's).
    pub fn routed(&self, model: &str) -> Option<String> {
        let routes = self.platform.routes();
        routes.url(&name(model), routes.version(&name(model))?)
    }
}
