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

use super::container::{self, DockerRolloutConfig};
use super::live::LiveSet;
use super::{check, Deployment, ModelLocks, Rollout, Routes, Target};
use crate::docker::{engine_error, status_of, Docker};
use crate::events::Events;
use crate::model::{ModelName, VersionId};
use crate::{Error, Result};
use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use std::time::{Duration, Instant};

/// Runs model versions as Docker containers and switches [`Routes`] between them.
pub struct DockerRollout {
    docker: Docker,
    config: DockerRolloutConfig,
    client: reqwest::Client,
    live: LiveSet<String>,
    locks: ModelLocks,
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
        let spec = container::container_spec(&self.config, target)?;
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

    /// Switches traffic to a serving container and retires the model's previous one.
    async fn switch(
        &self,
        target: &Target,
        container: String,
        url: String,
        events: &Events,
    ) -> Deployment {
        let (deployment, old) = self
            .live
            .switch(target, url, container, self.config.drain_timeout, events)
            .await;
        if let Some((_, old)) = old {
            self.remove(&old).await;
            events.progress(format!("stopped and removed container {old}"));
        }
        deployment
    }
}

#[async_trait::async_trait]
impl Rollout for DockerRollout {
    async fn deploy(&self, target: &Target, events: &Events) -> Result<Deployment> {
        let _one_at_a_time = self.locks.lock(&target.model).await;
        if let Some(live) = self.live.status(&target.model).await {
            if live.target == *target {
                events.progress(format!(
                    "{} {} is already live",
                    target.model, target.version
                ));
                return Ok(live);
            }
        }
        let (container, url) = self.start(target, events).await?;
        Ok(self.switch(target, container, url, events).await)
    }

    async fn resume(&self, target: &Target, events: &Events) -> Result<Deployment> {
        let _one_at_a_time = self.locks.lock(&target.model).await;
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
        if adoptable {
            match self.wait_ready(&wanted, events).await {
                Ok(url) => {
                    events.progress(format!("adopted running container {wanted}"));
                    return Ok(self.switch(target, wanted, url, events).await);
                }
                Err(e) => {
                    events.log(format!(
                        "container {wanted} cannot be adopted: {}",
                        e.chain()
                    ));
                }
            }
        }
        let (container, url) = self.start(target, events).await?;
        Ok(self.switch(target, container, url, events).await)
    }

    async fn status(&self, model: &ModelName) -> Option<Deployment> {
        self.live.status(model).await
    }

    async fn undeploy(&self, model: &ModelName) -> Result<()> {
        let _one_at_a_time = self.locks.lock(model).await;
        if let Some(container) = self.live.remove(model, self.config.drain_timeout).await {
            self.remove(&container).await;
        }
        Ok(())
    }

    /// Stops routing; the containers keep running so that the next start adopts them.
    async fn shutdown(&self) {
        self.live.take_all().await;
    }
}
