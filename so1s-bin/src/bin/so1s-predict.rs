//! `so1s-predict`: serves one model version over HTTP (`POST /predict`, `/healthz`, `/readyz`,
//! `/metrics`, `/v1/model`). Prints `listening on http://ADDR` on stdout once bound, so a
//! parent process that asked for port 0 learns the port.

use anyhow::Context;
use clap::Parser;
use so1s_core::predict::InputLimits;
use so1s_inference::server::{self as predict, PredictServerConfig};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Serve one model version over HTTP.
#[derive(Debug, Parser)]
#[command(name = "so1s-predict", version, about)]
struct Args {
    /// Model directory: config.json, tokenizer files, model.safetensors or rust_model.ot, and
    /// an optional so1s.toml.
    #[arg(long, env = "SO1S_MODEL_DIR")]
    model_dir: PathBuf,
    /// The model's name in replies (default: the directory's name).
    #[arg(long, env = "SO1S_MODEL_NAME")]
    model_name: Option<String>,
    /// The version's name in replies.
    #[arg(long, env = "SO1S_MODEL_VERSION", default_value = "0")]
    model_version: String,
    /// Address to listen on.
    #[arg(long, env = "SO1S_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port, printed on stdout).
    #[arg(long, env = "SO1S_PORT", default_value_t = 8080)]
    port: u16,
    /// libtorch intra-op threads (default: one per core).
    #[arg(long, env = "SO1S_THREADS")]
    threads: Option<usize>,
    /// Who runs the forward pass: auto (so1s's own encoder where it covers the model, else
    /// rust-bert), so1s, or rust-bert (default: the model's so1s.toml, else auto).
    #[arg(long, env = "SO1S_FORWARD_PASS")]
    forward_pass: Option<so1s_core::predict::ForwardPass>,
    /// Precision of so1s's own forward pass: auto (bf16 where the CPU has native bf16 and the
    /// model keeps within tolerance of f32 in it, else f32), f32, bf16 or int8 (default: the
    /// model's so1s.toml, else auto).
    #[arg(long, env = "SO1S_PRECISION")]
    precision: Option<so1s_core::predict::Precision>,
    /// Most texts per forward pass (default: the model's so1s.toml, else 32).
    #[arg(long, env = "SO1S_MAX_BATCH_SIZE")]
    max_batch_size: Option<usize>,
    /// Longest wait in ms for a batch to fill (default: the model's so1s.toml, else 2).
    #[arg(long, env = "SO1S_MAX_BATCH_WAIT_MS")]
    max_batch_wait_ms: Option<u64>,
    /// Most tokens per forward pass: a larger request is split into passes interleaved
    /// with other requests (default: the model's so1s.toml, else 4096).
    #[arg(long, env = "SO1S_MAX_BATCH_TOKENS")]
    max_batch_tokens: Option<usize>,
    /// Most requests waiting for the model before answering 429.
    #[arg(long, env = "SO1S_QUEUE_CAPACITY", default_value_t = 512)]
    queue_capacity: usize,
    /// Milliseconds a request may wait for the model unless its `so1s-timeout-ms` header
    /// says; then its remaining texts are dropped and it is answered 504.
    #[arg(long, env = "SO1S_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "SO1S_MAX_BODY_BYTES", default_value_t = 2 << 20)]
    max_body_bytes: usize,
    /// Longest text in characters (422 beyond).
    #[arg(long, env = "SO1S_MAX_INPUT_CHARS", default_value_t = InputLimits::default().max_input_chars)]
    max_input_chars: usize,
    /// Most texts in one request (422 beyond).
    #[arg(long, env = "SO1S_MAX_TEXTS", default_value_t = InputLimits::default().max_texts)]
    max_texts: usize,
    /// Keep glibc's default malloc settings instead of the ones tuned for inference.
    #[arg(long, env = "SO1S_NO_MALLOC_TUNING")]
    no_malloc_tuning: bool,
    /// Load the model, run one prediction, print what it answered and what `auto`
    /// precision measured (a JSON line) and exit (a build's smoke test); no server starts.
    #[arg(long)]
    smoke_test: bool,
    /// Cap this process's address space (MiB): a model that needs more fails to load
    /// instead of taking the machine's memory.
    #[arg(long, env = "SO1S_MEMORY_LIMIT_MIB")]
    memory_limit_mib: Option<u64>,
}

impl Args {
    fn config(&self) -> PredictServerConfig {
        PredictServerConfig {
            model_dir: self.model_dir.clone(),
            model_name: self.model_name.clone(),
            model_version: self.model_version.clone(),
            max_batch_size: self.max_batch_size,
            max_batch_wait: self.max_batch_wait_ms.map(Duration::from_millis),
            max_batch_tokens: self.max_batch_tokens,
            queue_capacity: self.queue_capacity,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            threads: self.threads,
            forward_pass: self.forward_pass,
            precision: self.precision,
            limits: InputLimits {
                max_input_chars: self.max_input_chars,
                max_texts: self.max_texts,
            },
            body_limit: self.max_body_bytes,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    so1s_bin::init_tracing();
    if let Some(mib) = args.memory_limit_mib {
        if !so1s_inference::alloc::limit_address_space(mib << 20) {
            tracing::warn!("the memory limit of {mib} MiB could not be set");
        }
    }
    if !args.no_malloc_tuning {
        so1s_inference::alloc::tune_for_inference();
    }
    if args.smoke_test {
        let layout = so1s_core::ModelLayout::inspect(&args.model_dir)
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
        let report = so1s_inference::smoke::smoke_test(layout)
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()))?;
        // The last line is the report, as JSON: the build reads it.
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    tracing::info!(?args, "starting so1s-predict");
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    println!("listening on http://{bound}");
    std::io::stdout().flush()?;
    predict::run(listener, args.config(), so1s_bin::shutdown_signal())
        .await
        .map_err(|e| anyhow::anyhow!(e.chain()))
}
