//! [`ProcessRollout`]: the embedded backend. Each version runs as a `so1s-predict` child on a
//! free loopback port, blue/green behind the gateway, supervised while it is live.

use super::local::{Instances, LocalRollout, Restart, Started, Watch};
use super::{check, CrashLoopRule, Routes, Target};
use crate::build::Artifact;
use crate::events::Events;
use crate::{Error, Result};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

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
    /// How often a live server's `/readyz` is checked.
    pub check_interval: Duration,
    /// Failed checks in a row after which a live server is killed and started again.
    pub max_failed_checks: u32,
    /// Restart backoff and what counts as a crash loop.
    pub crash_loop: CrashLoopRule,
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
            check_interval: Duration::from_secs(5),
            max_failed_checks: 3,
            crash_loop: CrashLoopRule::default(),
        }
    }
}

/// Runs each model version as a child process and switches [`Routes`] between them.
///
/// Each live child is supervised: if it exits (or fails `max_failed_checks` readiness checks
/// in a row, or the gateway condemns it for timeouts or server errors in a row) it is started again after a backoff and the gateway follows its new port; the
/// exits are reported as [`Incident`](super::Incident)s and in
/// [`Rollout::health`](super::Rollout::health).
pub type ProcessRollout = LocalRollout<Processes>;

impl ProcessRollout {
    /// A rollout that switches `routes`.
    pub fn new(config: ProcessRolloutConfig, routes: Routes) -> Self {
        let (drain_timeout, crash_loop) = (config.drain_timeout, config.crash_loop);
        let processes = Processes {
            config,
            client: reqwest::Client::new(),
        };
        LocalRollout::with(processes, routes, drain_timeout, crash_loop)
    }
}

/// Versions' instances as `so1s-predict` child processes.
pub struct Processes {
    config: ProcessRolloutConfig,
    client: reqwest::Client,
}

impl Processes {
    /// Watches the child until it exits, fails `max_failed_checks` readiness checks in a row
    /// or is condemned by the gateway (then kills it): returns why. `None`: the stop came
    /// first.
    async fn watch(
        &self,
        child: &mut Child,
        url: &str,
        watch: &Watch,
        stop: &mut oneshot::Receiver<()>,
    ) -> Option<String> {
        let interval = self.config.check_interval;
        let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let mut failed = 0;
        // The readiness check under way: exits and the gateway's verdicts are heard while it
        // waits for an answer.
        let mut checking: Option<check::Pending<'_, bool>> = None;
        loop {
            tokio::select! {
                _ = &mut *stop => return None,
                () = watch.condemned() => {
                    if check::ready_within(&self.client, url, check::CONDEMNED_CHECK).await {
                        watch.acquit();
                        continue;
                    }
                    let _ = child.kill().await;
                    return Some(check::CONDEMNED.to_owned());
                }
                status = child.wait() => {
                    return Some(match status {
                        Ok(status) => exit_cause(status),
                        Err(e) => format!("could not be waited for: {e}"),
                    });
                }
                _ = checks.tick(), if checking.is_none() => {
                    checking = Some(Box::pin(check::is_ready(&self.client, url)));
                }
                ready = async { checking.as_mut().expect("checked").await }, if checking.is_some() => {
                    checking = None;
                    if ready {
                        failed = 0;
                        watch.checked(None);
                        continue;
                    }
                    failed += 1;
                    let problem = format!("/readyz did not answer {failed} times in a row");
                    watch.checked(Some(&problem));
                    if failed >= self.config.max_failed_checks {
                        let _ = child.kill().await;
                        return Some(format!("stopped answering /readyz ({failed} checks)"));
                    }
                }
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
                    "so1s-predict {} before it was ready (see the log lines above)",
                    exit_cause(status)
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

#[async_trait::async_trait]
impl Instances for Processes {
    type Instance = Child;

    /// Starts the child and waits until it is ready and answers; kills it on any failure.
    async fn start(&self, target: &Target, events: &Events) -> Result<Started<Child>> {
        let Artifact::Bundle { dir, .. } = &target.artifact else {
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
            Ok(endpoint) => {
                // From now on the server's log lines go to the api server's log only.
                attached.store(false, Ordering::SeqCst);
                let name = format!("pid {}", child.id().unwrap_or(0));
                Ok(Started {
                    instance: child,
                    endpoint,
                    name,
                })
            }
            Err(e) => {
                stop_child(&mut child, Duration::from_secs(5)).await;
                Err(e)
            }
        }
    }

    /// Watches the child; when it exits (or is killed for failing too many readiness checks
    /// in a row) starts it again after the backoff, until it serves or the stop comes.
    async fn supervise(
        &self,
        live: Started<Child>,
        mut watch: Watch,
        mut stop: oneshot::Receiver<()>,
    ) -> Option<Child> {
        let (mut child, mut url) = (live.instance, live.endpoint);
        loop {
            let Some(mut cause) = self.watch(&mut child, &url, &watch, &mut stop).await else {
                return Some(child);
            };
            let started = loop {
                let restart_in = watch.exited(&cause, Restart::AfterBackoff);
                tokio::select! {
                    _ = &mut stop => return None,
                    () = tokio::time::sleep(restart_in) => {}
                }
                let started = tokio::select! {
                    _ = &mut stop => return None,
                    started = self.start(watch.target(), watch.events()) => started,
                };
                match started {
                    Ok(started) => break started,
                    Err(e) => cause = format!("could not be started again: {}", e.chain()),
                }
            };
            watch.ready_again(&started.endpoint, &started.name);
            (child, url) = (started.instance, started.endpoint);
        }
    }

    /// SIGTERM (it finishes the requests in flight), SIGKILL after the drain timeout.
    async fn stop(&self, mut child: Child) {
        stop_child(&mut child, self.config.drain_timeout).await;
    }

    /// Children do not outlive the api server: stops it, with 10 s to finish its requests.
    async fn shut_down(&self, mut child: Child) {
        stop_child(&mut child, Duration::from_secs(10)).await;
    }
}

/// What an exit status says, as a user reads it: `exited with code 1`, `was killed by
/// signal 9 (SIGKILL)`.
pub fn exit_cause(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGTERM => " (SIGTERM)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGINT => " (SIGINT)",
                _ => "",
            };
            return format!("was killed by signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => format!("exited ({status})"),
    }
}

fn exited(child: &mut Child, when: &str) -> Error {
    match child.try_wait() {
        Ok(Some(status)) => Error::Load(format!(
            "so1s-predict {} {when} (see the log lines above)",
            exit_cause(status)
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
