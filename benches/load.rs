//! `so1s-load`: drives a predict server over HTTP at several concurrency levels and prints
//! requests/s and latency percentiles as a table.
//!
//! ```sh
//! cargo build --release --workspace
//! target/release/so1s-load --model-dir .cache/models/all-MiniLM-L6-v2   # starts so1s-predict
//! target/release/so1s-load --url http://127.0.0.1:8080/predict            # a running server
//! ```
//!
//! Every run is bounded: `--duration` seconds per level (plus `--warmup`), at most
//! `--max-requests` requests per level, and only to the address given (loopback by default).

mod corpus;

use anyhow::{bail, Context, Result};
use clap::Parser;
use corpus::TEXTS;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Load-test a so1s predict server.
#[derive(Debug, Parser)]
#[command(name = "so1s-load", about)]
struct Args {
    /// Predict URL of a running server. Without it, so1s-load starts the so1s-predict binary
    /// next to itself on a free loopback port with --model-dir.
    #[arg(long)]
    url: Option<String>,
    /// Model directory for the so1s-predict it starts.
    #[arg(long, default_value = ".cache/models/all-MiniLM-L6-v2")]
    model_dir: PathBuf,
    /// Extra flags for the so1s-predict it starts (e.g. "--threads 2").
    #[arg(long, allow_hyphen_values = true, default_value = "")]
    server_args: String,
    /// Concurrency levels, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Seconds of measurement per level.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured load before each level.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Most requests per level.
    #[arg(long, default_value_t = 200_000)]
    max_requests: usize,
}

struct Level {
    concurrency: usize,
    ok: usize,
    failed: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Level {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index =
            ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[index - 1].as_secs_f64() * 1000.0
    }
}

async fn run_level(client: &reqwest::Client, url: &str, concurrency: usize, args: &Args) -> Level {
    let warmup_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = warmup_end + Duration::from_secs_f64(args.duration);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(args.max_requests));
    let workers = (0..concurrency).map(|worker| {
        let client = client.clone();
        let url = url.to_owned();
        let budget = budget.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
            let mut i = worker;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let measured = now >= warmup_end;
                if measured && budget.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                    break;
                }
                let body = serde_json::json!({ "text": TEXTS[i % TEXTS.len()] });
                i += 1;
                let started = Instant::now();
                let result = client.post(&url).json(&body).send().await;
                let success = match result {
                    Ok(response) => {
                        response.status().is_success() && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                if measured {
                    latencies.push(started.elapsed());
                    if success {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
            }
            (ok, failed, latencies)
        })
    });
    let mut level = Level {
        concurrency,
        ok: 0,
        failed: 0,
        seconds: 0.0,
        latencies: Vec::new(),
    };
    let started = Instant::now();
    for worker in futures::future::join_all(workers).await {
        let (ok, failed, latencies) = worker.expect("a load worker panicked");
        level.ok += ok;
        level.failed += failed;
        level.latencies.extend(latencies);
    }
    level.seconds = (started.elapsed().as_secs_f64() - args.warmup).max(1e-9);
    level.latencies.sort();
    level
}

/// Starts the so1s-predict binary that sits next to this one, on a free loopback port.
fn start_server(args: &Args) -> Result<(Child, String)> {
    let exe = std::env::current_exe()?
        .parent()
        .context("locating so1s-load's directory")?
        .join("so1s-predict");
    if !exe.is_file() {
        bail!(
            "{} is missing: run `cargo build --release --workspace`",
            exe.display()
        );
    }
    let mut child = Command::new(&exe)
        .args(["--port", "0", "--model-version", "load-test"])
        .arg("--model-dir")
        .arg(&args.model_dir)
        .args(args.server_args.split_whitespace())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("so1s-predict's stdout")?).read_line(&mut line)?;
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("so1s-predict said {line:?}"))?
        .to_owned();
    Ok((child, format!("{base}/predict")))
}

async fn wait_ready(client: &reqwest::Client, predict_url: &str) -> Result<()> {
    let ready = predict_url.replace("/predict", "/readyz");
    for _ in 0..600 {
        if let Ok(response) = client.get(&ready).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{ready} did not become ready within 60 s")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let (mut child, url) = match &args.url {
        Some(url) => (None, url.clone()),
        None => {
            let (child, url) = start_server(&args)?;
            (Some(child), url)
        }
    };
    wait_ready(&client, &url).await?;
    println!(
        "so1s-load: {url}, {} cores, {:.0} s per level after {:.0} s warm-up\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        args.duration,
        args.warmup
    );
    println!("| concurrency | requests | failed | req/s | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failures = 0;
    for &concurrency in &args.concurrency {
        let level = run_level(&client, &url, concurrency.max(1), &args).await;
        failures += level.failed;
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            level.concurrency,
            level.ok + level.failed,
            level.failed,
            level.ok as f64 / level.seconds,
            level.percentile(0.50),
            level.percentile(0.90),
            level.percentile(0.99),
            level.percentile(1.0),
        );
    }
    if let Some(child) = child.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    if failures > 0 {
        bail!("{failures} requests failed");
    }
    Ok(())
}
