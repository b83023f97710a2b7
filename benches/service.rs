//! Criterion benches of `TransformerService` on the real MiniLM model: one text, and one
//! batch of so1s-load's 32 texts (the size a full batch reaches at 32 concurrent clients),
//! on rust-bert's forward pass and on so1s's own in f32, bf16 and int8 (bf16 is fast only
//! where the CPU has native bf16: the bench prints the CPU's flags); and, for so1s's own,
//! the bare forward pass of one text (`bare_single_text`: the pipeline, no service).
//!
//! ```sh
//! cargo bench -p so1s-benches --bench service
//! SO1S_THREADS=1 cargo bench -p so1s-benches --bench service      # intra-op threads
//! SO1S_NO_MALLOC_TUNING=1 cargo bench -p so1s-benches --bench service  # glibc defaults
//! ```

mod corpus;

use corpus::TEXTS;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use so1s_core::predict::{CpuFeatures, ForwardPass, Precision};
use so1s_core::ModelLayout;
use so1s_inference::TransformerService;
use so1s_inference::{EncoderPipeline, ServiceOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
        so1s_inference::alloc::tune_for_inference();
    }
    let threads = std::env::var("SO1S_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    eprintln!(
        "MiniLM, {threads} intra-op threads, malloc tuning {}, CPU: {}",
        if tuned { "on" } else { "off" },
        CpuFeatures::detect().summary()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A batch as 32 clients of so1s-load make it: its sentences, of 2 to 11 words.
    let batch: Vec<String> = (0..32).map(|i| TEXTS[i % TEXTS.len()].to_owned()).collect();
    for (name, forward_pass, precision) in ENGINES {
        let mut group = c.benchmark_group(format!("minilm/{name}"));
        // The bare forward pass of one text, without the service's queue, thread hop and
        // batching: what a one-client HTTP latency is measured against.
        if forward_pass == ForwardPass::So1s {
            group.throughput(Throughput::Elements(1));
            bare_single_text(precision, threads, |timed| {
                group.bench_function("bare_single_text", |b| b.iter_custom(&mut *timed));
            });
        }
        let service = runtime.block_on(async {
            let layout = ModelLayout::inspect(&minilm_dir()).expect("run scripts/setup.sh first");
            let options = ServiceOptions {
                threads: Some(threads),
                max_batch_size: 64,
                forward_pass,
                precision,
                ..ServiceOptions::default()
            };
            TransformerService::load(layout, options).await.unwrap()
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function("single_text", |b| {
            b.iter(|| {
                runtime
                    .block_on(service.predict_one("Model serving should never drop a request."))
                    .unwrap()
            })
        });
        group.throughput(Throughput::Elements(32));
        group.bench_function("batch_32", |b| {
            b.iter(|| runtime.block_on(service.predict(batch.clone())).unwrap())
        });
        group.finish();
    }
}

/// Runs `bench` with a function timing `n` bare forward passes of one text. The pipeline is
/// loaded once, on a thread of its own that ends when `bench` returns: two threads driving
/// libtorch in one process slow each other (each keeps its own OpenMP team), about doubling
/// a one-text pass, so the bare pipeline must be gone before the service's model thread runs
/// (so1s-predict drives libtorch from the model thread only).
fn bare_single_text(
    precision: Precision,
    threads: usize,
    bench: impl FnOnce(&mut dyn FnMut(u64) -> Duration),
) {
    let (asks, asked) = std::sync::mpsc::channel::<u64>();
    let (answers, answered) = std::sync::mpsc::channel::<Duration>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            tch::set_num_threads(threads as i32);
            let layout = ModelLayout::inspect(&minilm_dir()).expect("run scripts/setup.sh first");
            let pipeline = EncoderPipeline::load(&layout, precision).unwrap();
            let one = ["Model serving should never drop a request.".to_owned()];
            pipeline.predict(&one).unwrap();
            // Until the sender is dropped: one timing per request.
            for iterations in asked {
                let started = Instant::now();
                for _ in 0..iterations {
                    pipeline.predict(&one).unwrap();
                }
                let _ = answers.send(started.elapsed());
            }
        });
        let mut timed = |iterations| {
            asks.send(iterations).unwrap();
            answered.recv().unwrap()
        };
        bench(&mut timed);
        // The thread's loop ends with the queue.
        drop(asks);
    });
}

/// The forward passes compared: rust-bert's, and so1s's own in f32 and int8.
const ENGINES: [(&str, ForwardPass, Precision); 4] = [
    ("rust-bert", ForwardPass::RustBert, Precision::F32),
    ("so1s-f32", ForwardPass::So1s, Precision::F32),
    ("so1s-bf16", ForwardPass::So1s, Precision::Bf16),
    ("so1s-int8", ForwardPass::So1s, Precision::Int8),
];

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
