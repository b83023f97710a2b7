//! What recording an event costs in the registry (SQLite) as the history grows: one version
//! with no history, and 200 versions × 200 events. Events are appended, so both should cost
//! the same. Log lines (`synchronous = NORMAL`) and progress events (`FULL`, an fsync each)
//! apart.
//!
//! ```sh
//! cargo bench -p so1s-benches --bench registry
//! ```

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use so1s_core::events::{Event, EventKind, Stage};
use so1s_core::registry::Registry;
use so1s_core::store::{ArchiveFormat, StoredVersion};
use so1s_core::{ModelName, VersionId};

fn stored(model: &ModelName, version: u32) -> StoredVersion {
    StoredVersion {
        model: model.clone(),
        version: VersionId::parse(&version.to_string()).unwrap(),
        sha256: "ab".repeat(32),
        size: 90 << 20,
        format: ArchiveFormat::TarGz,
        stored_at: 1,
    }
}

/// A registry in `dir` with `versions` versions of one model, `events` events each.
fn registry(dir: &std::path::Path, versions: u32, events: usize) -> (Registry, ModelName) {
    let registry = Registry::open(dir.join("so1s.db")).unwrap();
    let model = ModelName::parse("minilm").unwrap();
    for v in 1..=versions {
        registry.add(stored(&model, v)).unwrap();
        let version = VersionId::parse(&v.to_string()).unwrap();
        for i in 0..events {
            registry.record_event(
                &model,
                version,
                Event::now(Stage::Build, EventKind::Log, format!("build line {i}")),
            );
        }
    }
    (registry, model)
}

fn bench(c: &mut Criterion) {
    for (versions, events) in [(1, 0), (200, 200)] {
        let dir = tempfile::tempdir().unwrap();
        let (registry, model) = registry(dir.path(), versions, events);
        let newest = VersionId::parse(&versions.to_string()).unwrap();
        let label = format!("{versions} versions × {events} events");
        let mut group = c.benchmark_group(format!("registry, {label}"));
        for (kind, name) in [
            (EventKind::Log, "log line"),
            (EventKind::Progress, "progress"),
        ] {
            group.bench_function(format!("append a {name}"), |b| {
                b.iter_batched(
                    || Event::now(Stage::Rollout, kind, "a line of a rollout"),
                    |event| registry.record_event(&model, newest, event),
                    BatchSize::SmallInput,
                )
            });
        }
        group.bench_function("read a version", |b| {
            b.iter(|| registry.version(&model, newest).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
