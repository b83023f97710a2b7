//! What recording an event costs in the registry (SQLite) as the history grows: one version
//! with no history, and 200 versions × 200 events. Events are appended, so both should cost
//! the same. Log lines (`synchronous = NORMAL`) and progress events (`FULL`, an fsync each)
//! apart.
//!
//! ```sh
//! cargo bench -p so1s-benches --bench registry
//! ```

use criterion::{criterion_group, criterion_main, Criterion};
use so1s_core::events::{Event, EventKind, Stage};
use so1s_core::registry::Registry;
use so1s_core::store::{ArchiveFormat, StoredVersion};
use so1s_core::{ModelName, VersionId};
use std::time::{Duration, Instant};

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

/// Appends `iters` events of `kind` to `model`, to a new version after `version` for each
/// 5000 (below the per-version cap, past which log lines are dropped, not written); returns
/// the time the appends took.
fn append(
    registry: &Registry,
    model: &ModelName,
    version: &mut u32,
    kind: EventKind,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut id = VersionId::FIRST;
    for i in 0..iters {
        if i % 5000 == 0 {
            *version += 1;
            registry.add(stored(model, *version)).unwrap();
            id = VersionId::parse(&version.to_string()).unwrap();
        }
        let event = Event::now(Stage::Rollout, kind, "a line of a rollout");
        let started = Instant::now();
        registry.record_event(model, id, event);
        total += started.elapsed();
    }
    total
}

fn bench(c: &mut Criterion) {
    for (versions, events) in [(1, 0), (200, 200)] {
        let dir = tempfile::tempdir().unwrap();
        let (registry, model) = registry(dir.path(), versions, events);
        let mut next = versions;
        let label = format!("{versions} versions × {events} events");
        let mut group = c.benchmark_group(format!("registry, {label}"));
        for (kind, name) in [
            (EventKind::Log, "log line"),
            (EventKind::Progress, "progress"),
        ] {
            group.bench_function(format!("append a {name}"), |b| {
                b.iter_custom(|iters| append(&registry, &model, &mut next, kind, iters))
            });
        }
        let newest = VersionId::parse(&versions.to_string()).unwrap();
        group.bench_function("read a version", |b| {
            b.iter(|| registry.version(&model, newest).unwrap())
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
