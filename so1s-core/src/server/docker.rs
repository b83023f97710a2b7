//! The Docker backend of [`ServeConfig`]: images built and containers run by the engine
//! `DOCKER_HOST` names.

use super::ServeConfig;
use crate::build::{DockerBuildConfig, DockerImageBuilder, ImageBuilder, RegistryAuth};
use crate::events::{Events, Stage};
use crate::model::ModelName;
use crate::rollout::{DockerRollout, DockerRolloutConfig, Rollout, Routes};
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// How the Docker backend builds images and runs containers.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    /// Memory limit of each version's container, in MiB.
    pub memory_mib: i64,
    /// CPU limit of each version's container, in cores.
    pub cpus: Option<f64>,
    /// Base of the runtime image: `scratch` (nothing to pull) or an image of your own.
    pub base_image: String,
    /// Push model images under this repository prefix.
    pub push_to: Option<String>,
    /// Run containers on this Docker network and reach them by name.
    pub network: Option<String>,
    /// Credentials for pushes (from the environment, never flags or logs).
    pub registry_auth: Option<RegistryAuth>,
}

impl Default for DockerBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl DockerBackend {
    /// The defaults of `so1s serve --backend docker`.
    pub fn new() -> Self {
        Self {
            memory_mib: 4096,
            cpus: None,
            base_image: "scratch".into(),
            push_to: None,
            network: None,
            registry_auth: None,
        }
    }

    /// The image builder and rollout. The runtime image is built (once per set of
    /// binaries) in the background now, rather than in the first upload's build.
    pub(super) async fn parts(
        &self,
        serve: &ServeConfig,
        routes: &Routes,
        instance: &ModelName,
    ) -> Result<(Arc<dyn ImageBuilder>, Arc<dyn Rollout>)> {
        let predict_bin = serve.predict_bin()?;
        let docker = crate::docker::connect().await.map_err(|e| {
            Error::Backend(format!(
                "{} (is a Docker engine running? DOCKER_HOST?)",
                e.chain()
            ))
        })?;
        let bin_dir = predict_bin.parent().unwrap_or(Path::new("/"));
        let mut build = DockerBuildConfig::new(bin_dir, serve.data_dir.join("docker-builds"));
        build.predict_bin = predict_bin.clone();
        build.smoke = serve.smoke_test(&predict_bin);
        build.base_image = self.base_image.clone();
        build.push_to = self.push_to.clone();
        build.registry_auth = self.registry_auth.clone();
        build.instance = instance.to_string();
        if !build.probe_bin.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} not found: build so1s-probe",
                build.probe_bin.display()
            )));
        }
        let mut rollout = DockerRolloutConfig::new(instance.clone());
        rollout.memory_bytes = Some(self.memory_mib << 20);
        rollout.cpus = self.cpus;
        rollout.threads = serve.predict_threads;
        rollout.network = self.network.clone();
        let builder = Arc::new(DockerImageBuilder::new(docker.clone(), build));
        let warm = builder.clone();
        tokio::spawn(async move {
            let events = Events::new(Stage::Build, |e| {
                tracing::info!("runtime image: {}", e.message)
            });
            if let Err(e) = warm.runtime_image(&events).await {
                tracing::error!("the runtime image cannot be built: {}", e.chain());
            }
        });
        Ok((
            builder,
            Arc::new(DockerRollout::new(docker, rollout, routes.clone())),
        ))
    }
}
