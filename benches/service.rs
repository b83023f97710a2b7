//! Criterion benches of `TransformerService` on the real MiniLM model: one text, and one
//! batch of 32 short texts (the size a full batch reaches at 32 concurrent clients).
//!
//! ```sh
//! cargo bench -p so1s-benches --bench service
//! SO1S_THREADS=1 cargo bench -p so1s-benches --bench service      # intra-op threads
//! SO1S_NO_MALLOC_TUNING=1 cargo bench -p so1s-benches --bench service  # glibc defaults
//! ```

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use so1s_core::predict::ServiceOptions;
use so1s_core::{ModelLayout, TransformerService};
use std::path::PathBuf;

fn minilm_dir() -> PathBuf {
    std::env::var_os("SO1S_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.cache/models/all-MiniLM-L6-v2")
        })
}

fn bench(c: &mut Criterion) {
    let tuned = std::env::var_os("SO1S_NO_MALLOC_TUNING").is_none();
    if tuned {
        so1s_core::alloc::tune_for_inference();
    }
    let threads = std::env::var("SO1S_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    eprintln!(
        "MiniLM, {threads} intra-op threads, malloc tuning {}",
        if tuned { "on" } else { "off" }
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let service = runtime.block_on(async {
        let layout = ModelLayout::inspect(&minilm_dir()).expect("run scripts/setup.sh first");
        let options = ServiceOptions {
            threads: Some(threads),
            max_batch_size: 64,
            ..ServiceOptions::default()
        };
        TransformerService::load(layout, options).await.unwrap()
    });

    let mut group = c.benchmark_group("minilm");
    group.throughput(Throughput::Elements(1));
    group.bench_function("single_text", |b| {
        b.iter(|| {
            runtime
                .block_on(service.predict_one("Model serving should never drop a request."))
                .unwrap()
        })
    });
    let batch: Vec<String> = (0..32)
        .map(|i| format!("Short sentence number {i} about serving models."))
        .collect();
    group.throughput(Throughput::Elements(32));
    group.bench_function("batch_32", |b| {
        b.iter(|| runtime.block_on(service.predict(batch.clone())).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
