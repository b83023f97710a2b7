//! [`ProcessRollout`]: the embedded backend. Each version runs as a `so1s-predict` child on a
//! free loopback port, blue/green behind the gateway, supervised while it is live.

use super::health::ExitHistory;
use super::live::LiveSet;
use super::{
    check, deploy_alone, split_of, Arm, CrashLoopRule, Deployment, Health, HealthStatus, Incident,
    Incidents, ModelLocks, Rollout, Routes, Target,
};
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
/// in a row) it is started again after a backoff and the gateway follows its new port; the
/// exits are reported as [`Incident`]s and in [`Rollout::health`].
pub struct ProcessRollout {
    shared: Arc<Shared>,
    live: LiveSet<Supervised>,
    locks: ModelLocks,
}

/// What the rollout and its supervisors share.
struct Shared {
    config: ProcessRolloutConfig,
    client: reqwest::Client,
    routes: Routes,
    incidents: Incidents,
}

impl ProcessRollout {
    /// A rollout that switches `routes`.
    pub fn new(config: ProcessRolloutConfig, routes: Routes) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                client: reqwest::Client::new(),
                routes: routes.clone(),
                incidents: Incidents::default(),
            }),
            live: LiveSet::new(routes),
            locks: ModelLocks::default(),
        }
    }
}

impl Shared {
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

/// A live child under supervision; stopping it ends the supervision.
struct Supervised {
    stop: oneshot::Sender<Duration>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervised {
    fn spawn(
        shared: Arc<Shared>,
        target: Target,
        events: Events,
        child: Child,
        url: String,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let supervisor = Supervisor {
            history: ExitHistory::new(shared.config.crash_loop),
            shared,
            target,
            events,
            stopped,
        };
        let task = tokio::spawn(supervisor.run(child, url));
        Self { stop, task }
    }

    /// Stops the child (SIGTERM, then SIGKILL after `grace`) and its supervision.
    async fn stop(self, grace: Duration) {
        let _ = self.stop.send(grace);
        let _ = self.task.await;
    }
}

/// Why a supervised child's watch ended.
enum Ended {
    /// Asked to stop: the child is stopped.
    Stopped,
    /// The child exited (or was killed for not answering), for this reason.
    Exited(String),
}

struct Supervisor {
    shared: Arc<Shared>,
    target: Target,
    events: Events,
    history: ExitHistory,
    stopped: oneshot::Receiver<Duration>,
}

impl Supervisor {
    async fn run(mut self, mut child: Child, mut url: String) {
        let (model, version) = (self.target.model.clone(), self.target.version);
        let mut restarted = false;
        loop {
            let cause = match self.watch(&mut child, &url, restarted).await {
                Ended::Stopped => break,
                Ended::Exited(cause) => cause,
            };
            let Some((next, next_url)) = self.start_again(cause).await else {
                break;
            };
            (child, url, restarted) = (next, next_url, true);
            self.shared.routes.repoint(&model, version, &url);
            let pid = child.id().unwrap_or(0);
            self.shared.incidents.update(&model, version, |health| {
                // A crash loop stays reported until the version is replaced.
                if health.status == HealthStatus::Restarting {
                    health.status = HealthStatus::Healthy;
                }
                health.ready = true;
                if let Some(instance) = health.instances.first_mut() {
                    instance.name = format!("pid {pid}");
                    instance.ready = true;
                }
            });
            self.shared.incidents.report(Incident::Restarted {
                model: model.clone(),
                version,
                endpoint: url.clone(),
            });
        }
        self.shared.incidents.forget(&model, version);
    }

    /// Watches the child until it exits, fails too many readiness checks, or a stop is asked.
    async fn watch(&mut self, child: &mut Child, url: &str, restarted: bool) -> Ended {
        let config = &self.shared.config;
        let (model, version) = (&self.target.model, self.target.version);
        let mut checks = tokio::time::interval_at(
            tokio::time::Instant::now() + config.check_interval,
            config.check_interval,
        );
        let mut failed = 0;
        loop {
            tokio::select! {
                grace = &mut self.stopped => {
                    stop_child(child, grace.unwrap_or(config.drain_timeout)).await;
                    return Ended::Stopped;
                }
                status = child.wait() => {
                    return Ended::Exited(match status {
                        Ok(status) => exit_cause(status),
                        Err(e) => format!("could not be waited for: {e}"),
                    });
                }
                _ = checks.tick() => {
                    if check::is_ready(&self.shared.client, url).await {
                        if restarted {
                            // In case the restart raced a switch to this version.
                            self.shared.routes.repoint(model, version, url);
                        }
                        if failed > 0 {
                            self.shared.incidents.update(model, version, |h| set_ready(h, None));
                        }
                        failed = 0;
                        continue;
                    }
                    failed += 1;
                    let problem = format!("/readyz did not answer {failed} times in a row");
                    self.shared.incidents.update(model, version, |h| set_ready(h, Some(&problem)));
                    if failed >= config.max_failed_checks {
                        let _ = child.kill().await;
                        return Ended::Exited(format!("stopped answering /readyz ({failed} checks)"));
                    }
                }
            }
        }
    }

    /// Reports the exit, waits the backoff and starts the child again, until it serves or a
    /// stop is asked (`None`).
    async fn start_again(&mut self, mut cause: String) -> Option<(Child, String)> {
        let (model, version) = (self.target.model.clone(), self.target.version);
        loop {
            let (exits, looping) = self.history.record(Instant::now());
            let rule = self.shared.config.crash_loop;
            let restart_in = rule.backoff(exits);
            self.shared.incidents.update(&model, version, |health| {
                health.restarts += 1;
                health.last_exit = Some(cause.clone());
                health.ready = false;
                health.status = if looping {
                    HealthStatus::Unhealthy
                } else {
                    HealthStatus::Restarting
                };
                if let Some(instance) = health.instances.first_mut() {
                    instance.ready = false;
                    instance.restarts += 1;
                    instance.problem = Some(cause.clone());
                }
            });
            self.shared.incidents.report(Incident::Exited {
                model: model.clone(),
                version,
                cause: cause.clone(),
                restart_in,
            });
            if looping {
                self.shared.incidents.report(Incident::CrashLoop {
                    model: model.clone(),
                    version,
                    exits,
                    window: self.history.window(),
                    cause: cause.clone(),
                });
            }
            tokio::select! {
                _ = &mut self.stopped => return None,
                () = tokio::time::sleep(restart_in) => {}
            }
            tokio::select! {
                _ = &mut self.stopped => return None,
                started = self.shared.start(&self.target, &self.events) => match started {
                    Ok(started) => return Some(started),
                    Err(e) => cause = format!("could not be started again: {}", e.chain()),
                },
            }
        }
    }
}

fn set_ready(health: &mut Health, problem: Option<&str>) {
    health.ready = problem.is_none();
    if let Some(instance) = health.instances.first_mut() {
        instance.ready = problem.is_none();
        instance.problem = problem.map(str::to_owned);
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

#[async_trait::async_trait]
impl Rollout for ProcessRollout {
    async fn deploy(&self, target: &Target, events: &Events) -> Result<Deployment> {
        deploy_alone(self, target, events).await
    }

    async fn split(
        &self,
        model: &ModelName,
        arms: &[Arm],
        events: &Events,
    ) -> Result<Vec<Deployment>> {
        let split = split_of(arms)?;
        let _one_at_a_time = self.locks.lock(model).await;
        let drain = self.shared.config.drain_timeout;
        let mut started = Vec::new();
        for Arm { target, .. } in arms {
            if self.live.running(model, target.version).await.is_some() {
                continue;
            }
            let (child, url) = match self.shared.start(target, events).await {
                Ok(started) => started,
                Err(e) => {
                    for (_, supervised) in started {
                        Supervised::stop(supervised, drain).await;
                    }
                    return Err(e);
                }
            };
            crate::fault::point("rollout-instance-started");
            let pid = child.id().unwrap_or(0);
            self.shared
                .incidents
                .set_health(model, Health::started(target.version, format!("pid {pid}")));
            let supervised = Supervised::spawn(
                self.shared.clone(),
                target.clone(),
                events.clone(),
                child,
                url.clone(),
            );
            let deployment = Deployment {
                target: target.clone(),
                endpoint: url,
            };
            started.push((deployment, supervised));
        }
        let (deployments, left_out) = self.live.place(model, &split, started, drain, events).await;
        for (old, supervised) in left_out {
            supervised.stop(drain).await;
            events.progress(format!("stopped {}", old.target.version));
        }
        Ok(deployments)
    }

    async fn status(&self, model: &ModelName) -> Option<Deployment> {
        self.live.status(model).await
    }

    async fn health(&self, model: &ModelName) -> Option<Health> {
        let live = self.live.status(model).await?;
        self.shared.incidents.health(model, live.target.version)
    }

    fn incidents(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Incident>> {
        self.shared.incidents.take_receiver()
    }

    async fn undeploy(&self, model: &ModelName) -> Result<()> {
        let _one_at_a_time = self.locks.lock(model).await;
        let drain = self.shared.config.drain_timeout;
        for supervised in self.live.remove(model, drain).await {
            supervised.stop(drain).await;
        }
        Ok(())
    }

    async fn shutdown(&self) {
        for supervised in self.live.take_all().await {
            supervised.stop(Duration::from_secs(10)).await;
        }
    }
}
