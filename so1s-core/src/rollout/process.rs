//! [`ProcessRollout`]: the embedded backend. Each version runs as a `so1s-predict` child on a
//! free loopback port, blue/green behind the gateway.

use super::live::LiveSet;
use super::{check, Deployment, ModelLocks, Rollout, Routes, Target};
use crate::build::Artifact;
use crate::events::Events;
use crate::model::ModelName;
use crate::{Error, Result};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How the process backend runs predict servers.
#[derive(Debug, Clone)]
pub struct ProcessRolloutConfig {
    /// The `so1s-predict` executable.
    pub predict_bin: PathBuf,
    /// libtorch intra-op threads per predict server (default: libtorch's).
    pub threads: Option<usize>,
    /// Longest wait for a new version to become ready.
    pub ready_timeout: Duration,
    /// Longest wait for the old version's requests to finish before it is stopped.
    pub drain_timeout: Duration,
    /// Extra environment for the predict servers.
    pub env: Vec<(String, String)>,
}

impl ProcessRolloutConfig {
    /// Defaults around the given `so1s-predict` executable.
    pub fn new(predict_bin: impl Into<PathBuf>) -> Self {
        Self {
            predict_bin: predict_bin.into(),
            threads: None,
            ready_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
            env: Vec::new(),
        }
    }
}

/// Runs each model version as a child process and switches [`Routes`] between them.
pub struct ProcessRollout {
    config: ProcessRolloutConfig,
    client: reqwest::Client,
    live: LiveSet<Child>,
    locks: ModelLocks,
}

impl ProcessRollout {
    /// A rollout that switches `routes`.
    pub fn new(config: ProcessRolloutConfig, routes: Routes) -> Self {
        Self {
            config,
            client: reqwest::Client::new(),
            live: LiveSet::new(routes),
            locks: ModelLocks::default(),
        }
    }

    /// Starts the child and waits until it is ready and answers; kills it on any failure.
    async fn start(&self, target: &Target, events: &Events) -> Result<(Child, String)> {
        let Artifact::Bundle { dir } = &target.artifact else {
            return Err(Error::Conflict(format!(
                "the process backend runs model bundles, not {}",
                target.artifact
            )));
        };
        let mut command = Command::new(&self.config.predict_bin);
        command
            .arg("--host")
            .arg("127.0.0.1")
            .args(["--port", "0"])
            .arg("--model-dir")
            .arg(dir)
            .arg("--model-name")
            .arg(target.model.as_str())
            .arg("--model-version")
            .arg(target.version.to_string())
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(threads) = self.config.threads {
            command.arg("--threads").arg(threads.to_string());
        }
        die_with_parent(&mut command);
        let mut child = command.spawn().map_err(|source| Error::Io {
            context: format!("starting {}", self.config.predict_bin.display()),
            source,
        })?;
        events.progress(format!(
            "started so1s-predict for {} {} (pid {})",
            target.model,
            target.version,
            child.id().unwrap_or(0)
        ));
        let attached = Arc::new(AtomicBool::new(true));
        if let Some(stderr) = child.stderr.take() {
            forward_logs(stderr, events.clone(), attached.clone(), target);
        }
        match self.wait_ready(&mut child, events).await {
            Ok(url) => {
                // From now on the server's log lines go to the api server's log only.
                attached.store(false, Ordering::SeqCst);
                Ok((child, url))
            }
            Err(e) => {
                stop_child(&mut child, Duration::from_secs(5)).await;
                Err(e)
            }
        }
    }

    async fn wait_ready(&self, child: &mut Child, events: &Events) -> Result<String> {
        let deadline = Instant::now() + self.config.ready_timeout;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Load("so1s-predict has no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(self.config.ready_timeout, lines.next_line())
            .await
            .map_err(|_| Error::Load("so1s-predict did not report its address".into()))?
            .map_err(|source| Error::Io {
                context: "reading so1s-predict's output".into(),
                source,
            })?;
        let url = first
            .as_deref()
            .and_then(|line| line.strip_prefix("listening on "))
            .map(str::to_owned)
            .ok_or_else(|| exited(child, "before listening"))?;
        events.progress(format!("waiting for {url}/readyz"));
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(Error::Load(format!(
                    "so1s-predict exited with {status} before it was ready (see the log lines above)"
                )));
            }
            if check::is_ready(&self.client, &url).await {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Load(format!(
                    "not ready after {} s",
                    self.config.ready_timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        check::smoke_test(&self.client, &url, events).await?;
        Ok(url)
    }
}

fn exited(child: &mut Child, when: &str) -> Error {
    match child.try_wait() {
        Ok(Some(status)) => Error::Load(format!(
            "so1s-predict exited with {status} {when} (see the log lines above)"
        )),
        _ => Error::Load(format!("so1s-predict said something unexpected {when}")),
    }
}

/// Forwards the child's log lines to the version's events while `attached`, and to the
/// api server's log always.
fn forward_logs(
    stderr: tokio::process::ChildStderr,
    events: Events,
    attached: Arc<AtomicBool>,
    target: &Target,
) {
    let label = format!("{} {}", target.model, target.version);
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "so1s::predict", "{label}: {line}");
            if attached.load(Ordering::SeqCst) {
                events.log(line);
            }
        }
    });
}

/// Asks the child to stop (SIGTERM: it finishes requests in flight), then kills it if it
/// has not exited within `grace`.
async fn stop_child(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        terminate(pid);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

#[allow(unsafe_code)]
fn terminate(pid: u32) {
    #[cfg(unix)]
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) and a valid signal.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    #[cfg(not(unix))]
    let _ = pid;
}

/// Makes the child receive SIGTERM if the api server dies, so no orphan keeps a port.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

#[async_trait::async_trait]
impl Rollout for ProcessRollout {
    async fn deploy(&self, target: &Target, events: &Events) -> Result<Deployment> {
        let _one_at_a_time = self.locks.lock(&target.model).await;
        let (child, url) = self.start(target, events).await?;
        let (deployment, old) = self
            .live
            .switch(target, url, child, self.config.drain_timeout, events)
            .await;
        if let Some((old, mut child)) = old {
            stop_child(&mut child, self.config.drain_timeout).await;
            events.progress(format!("stopped {}", old.target.version));
        }
        Ok(deployment)
    }

    async fn status(&self, model: &ModelName) -> Option<Deployment> {
        self.live.status(model).await
    }

    async fn undeploy(&self, model: &ModelName) -> Result<()> {
        let _one_at_a_time = self.locks.lock(model).await;
        if let Some(mut child) = self.live.remove(model, self.config.drain_timeout).await {
            stop_child(&mut child, self.config.drain_timeout).await;
        }
        Ok(())
    }

    async fn shutdown(&self) {
        for mut child in self.live.take_all().await {
            stop_child(&mut child, Duration::from_secs(10)).await;
        }
    }
}
