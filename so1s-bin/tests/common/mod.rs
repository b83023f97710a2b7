//! Helpers shared by the binaries' tests.

#![allow(dead_code)]

pub mod api;
#[path = "../../../so1s-inference/tests/common/minilm.rs"]
mod minilm;

pub use minilm::{cosine, minilm_dir, reference};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// MiniLM's embedding of "Hello world" as Python's sentence-transformers computes it.
pub fn hello_world_reference() -> Vec<f32> {
    let (text, vector) = reference().swap_remove(0);
    assert_eq!(text, "Hello world");
    vector
}

/// The cosine of a prediction reply's `result` to MiniLM's "Hello world": at least 0.9999
/// for MiniLM in f32 or bf16 (the defaults), about 0.99 in int8, far less for another model.
pub fn hello_world_cosine_of(body: &serde_json::Value) -> f64 {
    let vector: Vec<f64> = serde_json::from_value(body["result"].clone()).unwrap();
    cosine(&vector, &hello_world_reference())
}

/// The pid of a model's live predict server, from its health (`pid 4242`).
/// Sends `signal` (`KILL`, `STOP`, `TERM`) to `pid` with kill(1); asserts it was sent.
pub fn signal(pid: impl std::fmt::Display, signal: &str) {
    let sent = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(sent, "kill -{signal} {pid}");
}

pub fn live_pid(model: &serde_json::Value) -> Option<u32> {
    model["health"]["instances"][0]["name"]
        .as_str()?
        .strip_prefix("pid ")?
        .parse()
        .ok()
}

/// The value of `series` in a `/metrics` text: `series` as written with its labels
/// (`name{model="m"}`), or a bare name, which matches its first series whatever its labels.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = match rest.strip_prefix('{') {
            Some(labelled) => labelled.split_once("} ")?.1,
            None => rest.strip_prefix(' ')?,
        };
        value.trim().parse().ok()
    })
}

/// Asks the predict server at `base` for "Hello world", which must succeed.
pub async fn predict_hello_world(base: &str) -> reqwest::Response {
    let response = reqwest::Client::new()
        .post(format!("{base}/predict"))
        .json(&serde_json::json!({"text": "Hello world"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// The cosine to MiniLM's reference of what a predict server at `base` answers for
/// "Hello world".
pub async fn hello_world_cosine(base: &str) -> f64 {
    let body: serde_json::Value = predict_hello_world(base).await.json().await.unwrap();
    hello_world_cosine_of(&body)
}

/// Waits (at most 60 s) until the predict server at `base` answers `/readyz`.
pub async fn wait_ready(base: &str) {
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    loop {
        let ready = client.get(format!("{base}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{base} never ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Starts a so1s binary that prints `listening on http://ADDR` first; returns it and the URL.
pub fn spawn_listening(command: &mut Command) -> (Child, String) {
    if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
        command.env("RUST_LOG", "warn");
    }
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, base)
}

/// The Docker engine `DOCKER_HOST` names. The docker tests run only when `DOCKER_HOST` was
/// set at build time (`cfg(so1s_docker)`, see so1s-bin/build.rs) and are ignored otherwise;
/// when they run, an engine that does not answer fails the test (this panics).
pub async fn docker_engine() -> so1s_core::docker::Engine {
    match so1s_core::docker::connect().await {
        Ok(engine) => engine,
        Err(e) => panic!(
            "DOCKER_HOST was set when these tests were built, but no Docker engine answers at \
             {} ({}): start one (scripts/docker-engine.sh start) or build the tests without \
             DOCKER_HOST to ignore them",
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the default socket".into()),
            e.chain()
        ),
    }
}

/// A bollard client of the same engine, for the tests to inspect what the backends made.
#[allow(dead_code)]
pub async fn docker_client() -> bollard::Docker {
    docker_engine().await;
    bollard::Docker::connect_with_defaults()
        .expect("a bollard client of DOCKER_HOST")
        .negotiate_version()
        .await
        .expect("the engine's API version")
}

/// A name no other test run uses, valid as a model or instance name.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// Runs the docker CLI (against the same engine) and returns its trimmed stdout.
pub fn docker_cli(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The instance's containers: `name version state` lines, sorted.
pub fn containers(instance: &str) -> Vec<String> {
    let out = docker_cli(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.so1s.instance={instance}"),
        "--format",
        "{{.Names}} {{.Label \"io.so1s.version\"}} {{.State}} {{.ID}}",
    ]);
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Removes, when dropped (also when a test fails), the containers of a so1s instance and the
/// images of a model, through the docker CLI.
pub struct DockerCleanup {
    pub instance: String,
    pub model: String,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let list = |args: &[&str]| -> Vec<String> {
            Command::new("docker")
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let containers = list(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.so1s.instance={}", self.instance),
        ]);
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&containers)
                .output();
        }
        let images = list(&[
            "images",
            "-q",
            "--filter",
            &format!("label=io.so1s.model={}", self.model),
        ]);
        if !images.is_empty() {
            let _ = Command::new("docker")
                .args(["rmi", "-f"])
                .args(&images)
                .output();
        }
    }
}

/// Resident memory of `pid` in bytes: now (`VmRSS`) or at its peak (`VmHWM`).
pub fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib << 10
}

/// Runs `attack` and returns how far the server's resident memory rose above where it
/// stood before (its peak, reset first).
pub async fn growth<F: std::future::Future<Output = ()>>(pid: u32, attack: F) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = memory(pid, "VmRSS:");
    attack.await;
    memory(pid, "VmHWM:").saturating_sub(before)
}

/// A mebibyte.
pub const MIB: u64 = 1 << 20;
