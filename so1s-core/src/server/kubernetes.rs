//! The Kubernetes backend of [`ServeConfig`]: a build Job per version, a Deployment per
//! model, on the cluster `KUBECONFIG` or the in-cluster service account names.

use super::ServeConfig;
use crate::build::{ImageBuilder, KubeBuildConfig, KubeImageBuilder};
use crate::kubernetes::manifests::{BuildSettings, ClusterSettings};
use crate::rollout::{KubeRollout, KubeRolloutConfig, Rollout, Routes};
use crate::{Error, Result};
use std::sync::Arc;
use std::time::Duration;

/// Where models run in the cluster and how their images are built.
#[derive(Debug, Clone)]
pub struct KubeBackend {
    /// Namespace, ingress, replicas, resources. Its `default_model` and `threads` are
    /// taken from the [`ServeConfig`].
    pub cluster: ClusterSettings,
    /// The so1s image, the registry images are pushed to, the build mode, the store's claim.
    pub build: BuildSettings,
}

impl KubeBackend {
    /// The image builder and rollout.
    pub(super) async fn parts(
        &self,
        serve: &ServeConfig,
        routes: &Routes,
    ) -> Result<(Arc<dyn ImageBuilder>, Arc<dyn Rollout>)> {
        let client = crate::kubernetes::connect().await.map_err(|e| {
            Error::Backend(format!(
                "{} (KUBECONFIG? in-cluster service account?)",
                e.chain()
            ))
        })?;
        let mut cluster = self.cluster.clone();
        cluster.default_model = serve.default_model.clone();
        cluster.threads = serve.predict_threads;
        let builder = KubeImageBuilder::new(
            client.clone(),
            KubeBuildConfig {
                cluster: cluster.clone(),
                build: self.build.clone(),
                store_root: serve.data_dir.clone(),
                poll_interval: Duration::from_secs(1),
            },
        );
        let rollout = KubeRollout::new(client, KubeRolloutConfig::new(cluster), routes.clone());
        Ok((Arc::new(builder), Arc::new(rollout)))
    }
}
