//! The smoke test of a build: load the model and run one prediction before anything is
//! switched. In this process (by a [`SmokeRunner`] the caller supplies), or in a child
//! `so1s-predict --smoke-test` whose address space is capped, so a model that asks for too
//! much memory fails its version, not the api server.

use crate::events::Events;
use crate::model::ModelLayout;
use crate::predict::Accuracy;
use crate::{Error, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The text of the smoke prediction.
pub const SMOKE_TEXT: &str = "so1s smoke test: does this model answer?";

/// What a smoke test found: the model's answer, and what `auto` precision measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeReport {
    /// What the model answered, in words (`a 384-value embedding`, ``label `positive`
    /// (0.973)``).
    pub answer: String,
    /// What `auto` precision measured against f32 and chose, when it measured (a CPU with
    /// native bf16, so1s's own forward pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Accuracy>,
}

impl std::fmt::Display for SmokeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.precision {
            Some(accuracy) => write!(f, "{}; precision {accuracy}", self.answer),
            None => f.write_str(&self.answer),
        }
    }
}

/// Loads a model and runs one prediction in the calling process: what
/// [`SmokeTest::InProcess`] runs. so1s-core runs no model itself (it links no libtorch);
/// so1s-inference's `InProcessSmokeTest` is the one binaries with inference supply.
#[async_trait]
pub trait SmokeRunner: Send + Sync + std::fmt::Debug {
    /// Loads the model of `layout` with the forward pass it will be served with, runs one
    /// prediction of [`SMOKE_TEXT`], and reports what the model answered and what `auto`
    /// precision measured.
    async fn run(&self, layout: ModelLayout) -> Result<SmokeReport>;
}

/// Where the smoke test runs.
#[derive(Debug, Clone)]
pub enum SmokeTest {
    /// In the calling process (a build Job's own container, tests), by the runner given.
    InProcess(Arc<dyn SmokeRunner>),
    /// In a child process with a memory limit.
    Child(SmokeProcess),
}

impl SmokeTest {
    /// In the calling process, by `runner`.
    pub fn in_process(runner: impl SmokeRunner + 'static) -> Self {
        SmokeTest::InProcess(Arc::new(runner))
    }
}

/// A smoke test in a child process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmokeProcess {
    /// The `so1s-predict` executable (run with `--smoke-test`).
    pub predict_bin: PathBuf,
    /// Its address-space limit in MiB.
    pub memory_limit_mib: u64,
    /// How long it may take.
    pub timeout: Duration,
}

impl SmokeProcess {
    /// A child smoke test with the default limits: 4 GiB, 5 minutes.
    pub fn new(predict_bin: impl Into<PathBuf>) -> Self {
        Self {
            predict_bin: predict_bin.into(),
            memory_limit_mib: 4096,
            timeout: Duration::from_secs(300),
        }
    }
}

/// Most bytes of the child's output kept.
const MAX_OUTPUT: u64 = 64 << 10;

impl SmokeTest {
    /// Runs the smoke test of the model in `dir` (already inspected as `layout`); reports
    /// what the model answered and what `auto` precision measured.
    pub async fn run(
        &self,
        dir: &Path,
        layout: ModelLayout,
        events: &Events,
    ) -> Result<SmokeReport> {
        match self {
            SmokeTest::InProcess(runner) => runner.run(layout).await,
            SmokeTest::Child(child) => {
                events.log(format!(
                    "in a child process limited to {} MiB",
                    child.memory_limit_mib
                ));
                in_child(child, dir).await
            }
        }
    }
}

/// Runs `so1s-predict --smoke-test` on `dir` under the limits; its last line of stdout is
/// its [`SmokeReport`] as JSON, its last line of stderr the error.
async fn in_child(child: &SmokeProcess, dir: &Path) -> Result<SmokeReport> {
    let mut process = tokio::process::Command::new(&child.predict_bin)
        .arg("--smoke-test")
        .arg("--model-dir")
        .arg(dir)
        .args(["--threads", "1"])
        .args(["--memory-limit-mib", &child.memory_limit_mib.to_string()])
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Io {
            context: format!("starting {}", child.predict_bin.display()),
            source,
        })?;
    let (mut stdout, mut stderr) = (
        process.stdout.take().expect("piped").take(MAX_OUTPUT),
        process.stderr.take().expect("piped").take(MAX_OUTPUT),
    );
    let finished = tokio::time::timeout(child.timeout, async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (_, _, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            process.wait()
        );
        (out, err, status)
    })
    .await;
    let Ok((out, err, status)) = finished else {
        return Err(Error::InvalidModel(format!(
            "the smoke test took longer than {} s",
            child.timeout.as_secs()
        )));
    };
    let status = status.map_err(|source| Error::Io {
        context: "waiting for the smoke test".into(),
        source,
    })?;
    let last_line = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
    };
    if status.success() {
        let line = last_line(&out)
            .ok_or_else(|| Error::InvalidModel("the smoke test answered nothing".into()))?;
        return serde_json::from_str(&line).map_err(|e| {
            Error::InvalidModel(format!("the smoke test's report is not one ({e}): {line}"))
        });
    }
    // The error line (`Error: ...`), else whatever came last.
    let text = String::from_utf8_lossy(&err);
    let said = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Error: ").map(str::to_owned))
        .or_else(|| last_line(&err));
    let limit = child.memory_limit_mib;
    Err(Error::InvalidModel(match (status.code(), said) {
        (Some(_), Some(said)) => {
            format!("the smoke test (limited to {limit} MiB) failed: {said}")
        }
        _ => format!(
            "the smoke test crashed ({status}): the model may need more than its limit of \
             {limit} MiB"
        ),
    }))
}
