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
use super::local::{Instances, LocalRollout, Restart, Started, Watch};
use super::{check, Routes, Target};
use crate::docker::{engine_error, status_of, Engine};
use crate::events::Events;
use crate::model::{ModelName, VersionId};
use crate::{Error, Result};
use bollard::models::EventMessage;
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// How often a container that exited is looked at until it serves again.
const RECOVERY_CHECK: Duration = Duration::from_millis(100);

/// Runs model versions as Docker containers and switches [`Routes`] between them.
pub type DockerRollout = LocalRollout<Containers>;

impl DockerRollout {
    /// A rollout on `engine` that switches `routes`.
    pub fn new(engine: Engine, config: DockerRolloutConfig, routes: Routes) -> Self {
        let (drain_timeout, crash_loop) = (config.drain_timeout, config.crash_loop);
        let containers = Containers {
            docker: engine.0,
            config,
            client: reqwest::Client::new(),
        };
        LocalRollout::with(containers, routes, drain_timeout, crash_loop)
    }

    /// The name of the container a version runs in.
    pub fn container_name(&self, model: &ModelName, version: VersionId) -> String {
        self.instances().container_name(model, version)
    }

    /// Removes every container of this instance, running or not (for tests and uninstalls;
    /// the api server's shutdown leaves them serving).
    pub async fn remove_all(&self) -> Result<usize> {
        let containers = self.instances().list(None).await?;
        for (name, _) in &containers {
            self.instances().remove(name).await;
        }
        Ok(containers.len())
    }
}

/// A version's container: its name, and the id of the one started under that name.
#[derive(Debug)]
pub struct Container {
    name: String,
    id: String,
}

/// Versions' instances as containers of their images.
pub struct Containers {
    docker: Docker,
    config: DockerRolloutConfig,
    client: reqwest::Client,
}

#[async_trait::async_trait]
impl Instances for Containers {
    type Instance = Container;

    /// Creates and starts the version's container, waits until it serves; removes it on any
    /// failure.
    async fn start(&self, target: &Target, events: &Events) -> Result<Started<Container>> {
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
            Ok(started) => {
                logs.abort();
                Ok(started)
            }
            Err(e) => {
                // Let the last log lines arrive before the container goes.
                let _ = tokio::time::timeout(Duration::from_secs(2), logs).await;
                self.remove(&name).await;
                Err(e)
            }
        }
    }

    /// The version's container if it still runs (by its labels) and serves; the model's
    /// containers of other versions (an interrupted rollout) are removed.
    async fn adopt(&self, target: &Target, events: &Events) -> Result<Option<Started<Container>>> {
        let wanted = self.container_name(&target.model, target.version);
        let mut adoptable = false;
        for (name, version) in self.list(Some(&target.model)).await? {
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
        if !adoptable {
            return Ok(None);
        }
        match self.wait_ready(&wanted, events).await {
            Ok(adopted) => {
                events.progress(format!("adopted running container {wanted}"));
                Ok(Some(adopted))
            }
            Err(e) => {
                events.log(format!(
                    "container {wanted} cannot be adopted: {}",
                    e.chain()
                ));
                Ok(None)
            }
        }
    }

    /// Follows the engine's events of the container (`die`, `oom`) for its exits, and checks
    /// its state and `/readyz` every `check_interval`; the engine's restart policy restarts
    /// it.
    async fn supervise(
        &self,
        live: Started<Container>,
        mut watch: Watch,
        mut stop: oneshot::Receiver<()>,
    ) -> Option<Container> {
        self.follow(&live.instance, &live.endpoint, &mut watch, &mut stop)
            .await;
        Some(live.instance)
    }

    async fn stop(&self, container: Container) {
        // By id: a container started since under the same name stays.
        self.remove(&container.id).await;
    }

    /// Containers outlive the api server: it keeps serving, for the next start to adopt.
    async fn shut_down(&self, _container: Container) {}
}

impl Containers {
    /// The name of the container a version runs in.
    fn container_name(&self, model: &ModelName, version: VersionId) -> String {
        container::container_name(&self.config.instance, model, version)
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
    /// prediction.
    async fn wait_ready(&self, name: &str, events: &Events) -> Result<Started<Container>> {
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
                        let container = Container {
                            name: name.to_owned(),
                            id: inspect.id.unwrap_or_else(|| name.to_owned()),
                        };
                        return Ok(Started {
                            instance: container,
                            endpoint: url.clone(),
                            name: name.to_owned(),
                        });
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

    /// Stops a container, by name or id (SIGTERM: it finishes requests in flight), and
    /// removes it. Errors are logged, not returned: there is nothing left to serve from it
    /// either way.
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

    /// Kills the container (no grace: it stopped answering) and starts it again.
    async fn restart(&self, container: &Container) {
        let options = RestartContainerOptionsBuilder::default().t(0).build();
        if let Err(e) = self
            .docker
            .restart_container(&container.id, Some(options))
            .await
        {
            tracing::warn!("restarting container {}: {e}", container.name);
        }
    }

    /// The engine's events of `container`, from `since` (Unix seconds) when given.
    fn engine_events(&self, container: &Container, since: Option<i64>) -> EngineEvents {
        let filters = HashMap::from([
            ("type", vec!["container".to_owned()]),
            ("container", vec![container.id.clone()]),
        ]);
        let mut options = EventsOptionsBuilder::default().filters(&filters);
        let since = since.map(|s| s.to_string());
        if let Some(since) = &since {
            options = options.since(since);
        }
        Box::pin(self.docker.events(Some(options.build())))
    }

    /// Reports the exits of the container at `url`, and its state and `/readyz` every
    /// `check_interval`, to `watch` until `stop` resolves.
    async fn follow(
        &self,
        container: &Container,
        url: &str,
        watch: &mut Watch,
        stop: &mut oneshot::Receiver<()>,
    ) {
        let mut events = self.engine_events(container, None);
        // The last event handled (seconds, and nanoseconds to skip it when resubscribing).
        let (mut since, mut last_nano) = (None, 0i64);
        // Exits reported since it last answered; the engine said it ran out of memory.
        let (mut recovering, mut oom) = (false, false);
        // The gateway condemned it and it was restarted for that.
        let mut condemned = false;
        let mut checks = tokio::time::interval(self.config.check_interval);
        // The check under way: the engine's events and the gateway's verdicts are heard
        // while it waits for answers.
        let mut checking: Option<check::Pending<'_, Option<Option<String>>>> = None;
        loop {
            tokio::select! {
                _ = &mut *stop => return,
                () = watch.condemned() => {
                    if check::ready_within(&self.client, url, check::CONDEMNED_CHECK).await {
                        watch.acquit();
                        continue;
                    }
                    // Killed and started again at once (a frozen one too); the engine's
                    // `die` reports the exit, with this cause.
                    condemned = true;
                    self.restart(container).await;
                }
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
                                let cause = match std::mem::take(&mut condemned) {
                                    true => check::CONDEMNED.to_owned(),
                                    false => describe_exit(code, std::mem::take(&mut oom)),
                                };
                                watch.exited(&cause, Restart::ByEngine);
                                recovering = true;
                                // Its requests wait for it: looked at often until it serves.
                                checks.reset_after(RECOVERY_CHECK);
                            }
                            _ => {}
                        }
                    }
                    Some(Err(_)) | None => {
                        // The engine restarted or the connection broke: follow again from
                        // the last event seen.
                        tokio::select! {
                            _ = &mut *stop => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        events = self.engine_events(container, since);
                    }
                },
                _ = checks.tick(), if checking.is_none() => {
                    checking = Some(Box::pin(self.check(container, url)));
                }
                checked = async { checking.as_mut().expect("checking").await }, if checking.is_some() => {
                    checking = None;
                    let Some(problem) = checked else {
                        continue;
                    };
                    if problem.is_none() && recovering {
                        recovering = false;
                        watch.ready_again(url, &container.name);
                    } else if recovering {
                        checks.reset_after(RECOVERY_CHECK);
                    }
                    watch.checked(problem.as_deref());
                }
            }
        }
    }

    /// Reads the container's state and `/readyz`: what keeps it from serving, if anything.
    /// `None`: the engine could not tell.
    async fn check(&self, container: &Container, url: &str) -> Option<Option<String>> {
        let inspect = match self.docker.inspect_container(&container.id, None).await {
            Ok(inspect) => inspect,
            Err(e) => {
                tracing::warn!("watching container {}: {e}", container.name);
                return None;
            }
        };
        let state = inspect.state.unwrap_or_default();
        let running = state.status == Some(ContainerStateStatusEnum::RUNNING);
        let ready = running && check::is_ready(&self.client, url).await;
        let unhealthy = state.health.and_then(|h| h.status) == Some(HealthStatusEnum::UNHEALTHY);
        Some(match (running, ready, unhealthy) {
            (false, _, _) => Some("not running: the engine restarts it".to_owned()),
            (_, _, true) => Some("Docker reports it unhealthy".to_owned()),
            (_, false, _) => Some("/readyz does not answer".to_owned()),
            _ => None,
        })
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

type EngineEvents = std::pin::Pin<
    Box<
        dyn futures::Stream<Item = std::result::Result<EventMessage, bollard::errors::Error>>
            + Send,
    >,
>;

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
