//! [`DockerRollout`]: each version runs as a container of its image, blue/green behind the
//! gateway.
//!
//! A deploy creates and starts the new version's container, forwards its log lines to the
//! version's events, waits until it runs, is not unhealthy, answers `/readyz` and one smoke
//! prediction, switches the gateway, drains the old version and stops and removes its
//! container. Any failure before the switch removes the new container; the old one keeps
//! serving. Containers outlive the api server (restart policy `unless-stopped`): on restart
//! [`Rollout::resume`] adopts the live version's running container by its labels.
//!
//! Readiness is polled every 100 ms from the host rather than waiting for Docker's health
//! status, which only changes once per health interval; Docker's health check (`so1s-probe`
//! on `/readyz`, every 5 s by default) watches the container from then on, and a container
//! Docker reports unhealthy fails the rollout.
//!
//! Live containers are published on a host port so1s chooses, so the engine's restarts
//! (restart policy) keep the address the gateway knows. A watcher per live container follows
//! the engine's events (`die` with its exit code, `oom`) and checks its state and `/readyz`
//! every `check_interval`: exits and restarts become [`Incident`]s and [`Rollout::health`],
//! and too many exits make a crash loop.

use super::container::{self, DockerRolloutConfig};
use super::health::ExitHistory;
use super::live::LiveSet;
use super::{
    check, deploy_alone, split_of, Arm, Deployment, Health, HealthStatus, Incident, Incidents,
    ModelLocks, Rollout, Routes, Split, Target,
};
use crate::docker::{engine_error, status_of, Docker};
use crate::events::Events;
use crate::model::{ModelName, VersionId};
use crate::{Error, Result};
use bollard::models::EventMessage;
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Runs model versions as Docker containers and switches [`Routes`] between them.
pub struct DockerRollout {
    docker: Docker,
    config: DockerRolloutConfig,
    client: reqwest::Client,
    live: LiveSet<String>,
    locks: ModelLocks,
    incidents: Incidents,
    /// The watcher of each live container, by container name.
    watchers: std::sync::Mutex<HashMap<String, Watcher>>,
}

impl DockerRollout {
    /// A rollout on `docker` that switches `routes`.
    pub fn new(docker: Docker, config: DockerRolloutConfig, routes: Routes) -> Self {
        Self {
            docker,
            config,
            client: reqwest::Client::new(),
            live: LiveSet::new(routes),
            locks: ModelLocks::default(),
            incidents: Incidents::default(),
            watchers: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Starts watching a live container.
    fn watch(&self, target: &Target, name: &str, url: &str) {
        let (stop, stopped) = oneshot::channel();
        let watch = ContainerWatch {
            docker: self.docker.clone(),
            client: self.client.clone(),
            incidents: self.incidents.clone(),
            model: target.model.clone(),
            version: target.version,
            name: name.to_owned(),
            url: url.to_owned(),
            interval: self.config.check_interval,
            history: ExitHistory::new(self.config.crash_loop),
        };
        let task = tokio::spawn(watch.run(stopped));
        let old = self
            .watchers()
            .insert(name.to_owned(), Watcher { stop, task });
        if let Some(old) = old {
            old.task.abort();
        }
    }

    fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watcher>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops watching a container (it is being replaced or removed).
    async fn unwatch(&self, name: &str) {
        let watcher = self.watchers().remove(name);
        if let Some(watcher) = watcher {
            let _ = watcher.stop.send(());
            let _ = watcher.task.await;
        }
    }

    /// The name of the container a version runs in.
    pub fn container_name(&self, model: &ModelName, version: VersionId) -> String {
        container::container_name(&self.config.instance, model, version)
    }

    /// Removes every container of this instance, running or not (for tests and uninstalls;
    /// the api server's shutdown leaves them serving).
    pub async fn remove_all(&self) -> Result<usize> {
        let containers = self.list(None).await?;
        for (name, _) in &containers {
            self.remove(name).await;
        }
        Ok(containers.len())
    }

    /// This instance's containers (of one model): name and version label.
    async fn list(&self, model: Option<&ModelName>) -> Result<Vec<(String, Option<String>)>> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&container::label_filter(&self.config.instance, model))
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine_error("listing so1s containers", e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let name = c.names?.first()?.trim_start_matches('/').to_owned();
                let version = c
                    .labels
                    .and_then(|mut l| l.remove(crate::build::image::LABEL_VERSION));
                Some((name, version))
            })
            .collect())
    }

    /// Creates and starts the version's container, waits until it serves; removes it on any
    /// failure.
    async fn start(&self, target: &Target, events: &Events) -> Result<(String, String)> {
        let host_port = free_loopback_port()?;
        let spec = container::container_spec(&self.config, target, host_port)?;
        let name = self.container_name(&target.model, target.version);
        // A container of this name is a leftover (an interrupted rollout): replace it.
        self.remove(&name).await;
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), spec)
            .await
            .map_err(|e| engine_error(&format!("creating container {name}"), e))?;
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.remove(&name).await;
            return Err(engine_error(&format!("starting container {name}"), e));
        }
        events.progress(format!(
            "started container {name} ({})",
            &created.id[..12.min(created.id.len())]
        ));
        // Following from the start, once started: the output from the first line on.
        let logs = self.forward_logs(&name, events);
        match self.wait_ready(&name, events).await {
            Ok(url) => {
                logs.abort();
                Ok((name, url))
            }
            Err(e) => {
                // Let the last log lines arrive before the container goes.
                let _ = tokio::time::timeout(Duration::from_secs(2), logs).await;
                self.remove(&name).await;
                Err(e)
            }
        }
    }

    /// Follows the container's output into `events` until aborted or the container ends.
    fn forward_logs(&self, name: &str, events: &Events) -> tokio::task::JoinHandle<()> {
        let options = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut output = self.docker.logs(name, Some(options));
        let (events, label) = (events.clone(), name.to_owned());
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = output.next().await {
                let bytes = chunk.into_bytes();
                for line in String::from_utf8_lossy(&bytes).lines() {
                    let line = line.trim_end();
                    if !line.is_empty() && !line.starts_with("listening on ") {
                        tracing::info!(target: "so1s::predict", "{label}: {line}");
                        events.log(line.to_owned());
                    }
                }
            }
        })
    }

    /// Waits until the container runs, is not unhealthy, answers `/readyz` and one smoke
    /// prediction. Returns its URL.
    async fn wait_ready(&self, name: &str, events: &Events) -> Result<String> {
        let deadline = Instant::now() + self.config.ready_timeout;
        let mut url: Option<String> = None;
        let mut restarts_before: Option<i64> = None;
        loop {
            let inspect = self
                .docker
                .inspect_container(name, None)
                .await
                .map_err(|e| engine_error(&format!("inspecting container {name}"), e))?;
            let state = inspect.state.clone().unwrap_or_default();
            // Exited, or exited and restarted by the restart policy while we waited: crashed.
            let restarts = inspect.restart_count.unwrap_or(0);
            let restarted = restarts > *restarts_before.get_or_insert(restarts);
            let exited = matches!(
                state.status,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            );
            if exited || restarted {
                let how = if state.oom_killed == Some(true) {
                    "was killed for using too much memory (raise the memory limit)".to_owned()
                } else if exited {
                    format!("exited with code {}", state.exit_code.unwrap_or(-1))
                } else {
                    "exited with code != 0 and was restarted".to_owned()
                };
                return Err(Error::Load(format!(
                    "container {name} {how} before it was ready (see the log lines above)"
                )));
            }
            if state.health.and_then(|h| h.status) == Some(HealthStatusEnum::UNHEALTHY) {
                return Err(Error::Load(format!(
                    "Docker reports container {name} unhealthy"
                )));
            }
            if state.running == Some(true) {
                if url.is_none() {
                    let found = container::endpoint(&self.config, name, &inspect)?;
                    events.progress(format!("waiting for {found}/readyz"));
                    url = Some(found);
                }
                if let Some(url) = &url {
                    if check::is_ready(&self.client, url).await {
                        check::smoke_test(&self.client, url, events).await?;
                        return Ok(url.clone());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Load(format!(
                    "container {name} was not ready after {} s",
                    self.config.ready_timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops a container (SIGTERM: it finishes requests in flight) and removes it. Errors are
    /// logged, not returned: there is nothing left to serve from it either way.
    async fn remove(&self, name: &str) {
        let stop = StopContainerOptionsBuilder::default()
            .t(self.config.stop_timeout.as_secs() as i32)
            .build();
        match self.docker.stop_container(name, Some(stop)).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => return,
            // 304: already stopped.
            Err(e) if status_of(&e) == Some(304) => {}
            Err(e) => tracing::warn!("stopping container {name}: {e}"),
        }
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(name, Some(options)).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => tracing::warn!("removing container {name}: {e}"),
        }
    }

    /// Shares `model`'s traffic by `split` among its running containers and `started`
    /// (container, address), watches the started ones, and stops and removes those left out.
    async fn place(
        &self,
        model: &ModelName,
        split: &Split,
        started: Vec<(Target, String, String)>,
        events: &Events,
    ) -> Vec<Deployment> {
        let mut instances = Vec::new();
        for (target, container, url) in started {
            self.incidents
                .set_health(model, Health::started(target.version, &container));
            self.watch(&target, &container, &url);
            let deployment = Deployment {
                target,
                endpoint: url,
            };
            instances.push((deployment, container));
        }
        let kept: Vec<String> = instances.iter().map(|(_, c)| c.clone()).collect();
        let (deployments, left_out) = self
            .live
            .place(model, split, instances, self.config.drain_timeout, events)
            .await;
        // (The same container again, adopted: nothing to retire.)
        for (old, container) in left_out.into_iter().filter(|(_, c)| !kept.contains(c)) {
            self.unwatch(&container).await;
            self.remove(&container).await;
            self.incidents.forget(model, old.target.version);
            events.progress(format!("stopped and removed container {container}"));
        }
        deployments
    }
}

#[async_trait::async_trait]
impl Rollout for DockerRollout {
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
        let mut started = Vec::new();
        for Arm { target, .. } in arms {
            if let Some(live) = self.live.running(model, target.version).await {
                if live.target == *target {
                    events.progress(format!("{model} {} is already live", target.version));
                    continue;
                }
            }
            match self.start(target, events).await {
                Ok((container, url)) => started.push((target.clone(), container, url)),
                Err(e) => {
                    for (_, container, _) in started {
                        self.remove(&container).await;
                    }
                    return Err(e);
                }
            }
            crate::fault::point("rollout-instance-started");
        }
        Ok(self.place(model, &split, started, events).await)
    }

    async fn resume(&self, target: &Target, events: &Events) -> Result<Deployment> {
        let _one_at_a_time = self.locks.lock(&target.model).await;
        let model = &target.model;
        let split = Split::single(target.version);
        let wanted = self.container_name(model, target.version);
        let mut adoptable = false;
        for (name, version) in self.list(Some(model)).await? {
            if name == wanted && version.as_deref() == Some(&target.version.to_string()) {
                adoptable = true;
            } else {
                // A version that is not live any more (an interrupted rollout): it goes.
                events.log(format!(
                    "removing container {name}, which is not the live version"
                ));
                self.remove(&name).await;
            }
        }
        let started = match adoptable {
            true => match self.wait_ready(&wanted, events).await {
                Ok(url) => {
                    events.progress(format!("adopted running container {wanted}"));
                    Some((wanted, url))
                }
                Err(e) => {
                    events.log(format!(
                        "container {wanted} cannot be adopted: {}",
                        e.chain()
                    ));
                    None
                }
            },
            false => None,
        };
        let (container, url) = match started {
            Some(adopted) => adopted,
            None => self.start(target, events).await?,
        };
        let started = vec![(target.clone(), container, url)];
        let mut deployments = self.place(model, &split, started, events).await;
        Ok(deployments.remove(0))
    }

    async fn status(&self, model: &ModelName) -> Option<Deployment> {
        self.live.status(model).await
    }

    async fn health(&self, model: &ModelName) -> Option<Health> {
        let live = self.live.status(model).await?;
        self.incidents.health(model, live.target.version)
    }

    fn incidents(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Incident>> {
        self.incidents.take_receiver()
    }

    async fn undeploy(&self, model: &ModelName) -> Result<()> {
        let _one_at_a_time = self.locks.lock(model).await;
        for container in self.live.remove(model, self.config.drain_timeout).await {
            self.unwatch(&container).await;
            self.remove(&container).await;
        }
        Ok(())
    }

    /// Stops routing; the containers keep running so that the next start adopts them.
    async fn shutdown(&self) {
        for container in self.live.take_all().await {
            self.unwatch(&container).await;
        }
    }
}

/// A free port of the host's loopback, for a container to be published on.
fn free_loopback_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|source| Error::Io {
            context: "finding a free loopback port".into(),
            source,
        })
}

/// A running container watch; stopping it ends the task.
struct Watcher {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// Watches one live container: the engine's events (`die`, `oom`) for its exits, and its
/// state and `/readyz` every `interval`.
struct ContainerWatch {
    docker: Docker,
    client: reqwest::Client,
    incidents: Incidents,
    model: ModelName,
    version: VersionId,
    name: String,
    url: String,
    interval: Duration,
    history: ExitHistory,
}

type EngineEvents = std::pin::Pin<
    Box<
        dyn futures::Stream<Item = std::result::Result<EventMessage, bollard::errors::Error>>
            + Send,
    >,
>;

impl ContainerWatch {
    /// The engine's events of this container, from `since` (Unix seconds) when given.
    fn subscribe(&self, since: Option<i64>) -> EngineEvents {
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            ("container", vec![self.name.clone()]),
        ]);
        let mut options = EventsOptionsBuilder::default().filters(&filters);
        let since = since.map(|s| s.to_string());
        if let Some(since) = &since {
            options = options.since(since);
        }
        Box::pin(self.docker.events(Some(options.build())))
    }

    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut events = self.subscribe(None);
        // The last event handled (seconds, and nanoseconds to skip it when resubscribing).
        let (mut since, mut last_nano) = (None, 0i64);
        // Exits reported since it last answered; the engine said it ran out of memory.
        let (mut recovering, mut oom) = (false, false);
        let mut checks = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                event = events.next() => match event {
                    Some(Ok(event)) => {
                        let nano = event.time_nano.unwrap_or(0);
                        if nano != 0 && nano <= last_nano {
                            continue;
                        }
                        (since, last_nano) = (event.time.or(since), nano);
                        match event.action.as_deref() {
                            Some("oom") => oom = true,
                            Some("die") => {
                                let code = event
                                    .actor
                                    .and_then(|a| a.attributes)
                                    .and_then(|mut a| a.remove("exitCode"))
                                    .and_then(|c| c.parse().ok());
                                self.exited(describe_exit(code, std::mem::take(&mut oom)));
                                recovering = true;
                            }
                            _ => {}
                        }
                    }
                    Some(Err(_)) | None => {
                        // The engine restarted or the connection broke: follow again from
                        // the last event seen.
                        tokio::select! {
                            _ = &mut stopped => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        events = self.subscribe(since);
                    }
                },
                _ = checks.tick() => self.check(&mut recovering).await,
            }
        }
    }

    /// Reads the container's state and `/readyz` into its health.
    async fn check(&mut self, recovering: &mut bool) {
        let inspect = match self.docker.inspect_container(&self.name, None).await {
            Ok(inspect) => inspect,
            Err(e) => {
                tracing::warn!("watching container {}: {e}", self.name);
                return;
            }
        };
        let state = inspect.state.unwrap_or_default();
        let running = state.status == Some(ContainerStateStatusEnum::RUNNING);
        let ready = running && check::is_ready(&self.client, &self.url).await;
        let unhealthy = state.health.and_then(|h| h.status) == Some(HealthStatusEnum::UNHEALTHY);
        if ready && *recovering {
            *recovering = false;
            self.incidents.report(Incident::Restarted {
                model: self.model.clone(),
                version: self.version,
                endpoint: self.url.clone(),
            });
        }
        let problem = match (running, ready, unhealthy) {
            (false, _, _) => Some("not running: the engine restarts it".to_owned()),
            (_, _, true) => Some("Docker reports it unhealthy".to_owned()),
            (_, false, _) => Some("/readyz does not answer".to_owned()),
            _ => None,
        };
        let restarts = inspect.restart_count.unwrap_or(0).max(0) as u32;
        self.incidents.update(&self.model, self.version, |health| {
            health.ready = problem.is_none();
            if problem.is_none() && health.status == HealthStatus::Restarting {
                health.status = HealthStatus::Healthy;
            }
            if let Some(instance) = health.instances.first_mut() {
                instance.ready = problem.is_none();
                instance.restarts = restarts;
                instance.problem = problem.clone();
            }
        });
    }

    fn exited(&mut self, cause: String) {
        let (exits, looping) = self.history.record(Instant::now());
        self.incidents.update(&self.model, self.version, |health| {
            health.restarts += 1;
            health.ready = false;
            health.last_exit = Some(cause.clone());
            health.status = if looping {
                HealthStatus::Unhealthy
            } else {
                HealthStatus::Restarting
            };
        });
        self.incidents.report(Incident::Exited {
            model: self.model.clone(),
            version: self.version,
            cause: cause.clone(),
            // The engine's restart policy starts it again, with its own backoff.
            restart_in: Duration::ZERO,
        });
        if looping {
            self.incidents.report(Incident::CrashLoop {
                model: self.model.clone(),
                version: self.version,
                exits,
                window: self.history.window(),
                cause,
            });
        }
    }
}

/// Why a container exited, from its `die` event's exit code (and an `oom` before it).
fn describe_exit(code: Option<i64>, oom: bool) -> String {
    if oom {
        return "was killed for using too much memory (raise the memory limit)".into();
    }
    let signal = |n: i64| match n {
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        6 => " (SIGABRT)",
        _ => "",
    };
    match code {
        Some(code) if code > 128 => format!(
            "was killed by signal {}{}, exit code {code}",
            code - 128,
            signal(code - 128)
        ),
        Some(code) => format!("exited with code {code}"),
        None => "exited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::describe_exit;

    #[test]
    fn exit_codes_read_as_their_signals() {
        assert_eq!(
            describe_exit(Some(137), false),
            "was killed by signal 9 (SIGKILL), exit code 137"
        );
        assert_eq!(describe_exit(Some(1), false), "exited with code 1");
        assert!(describe_exit(Some(137), true).contains("too much memory"));
        assert_eq!(describe_exit(None, false), "exited");
    }
}
