//! [`KubeImageBuilder`]: builds a version's image in the cluster with one Job.
//!
//! The Job (see [`manifests::build_job`]) reads the archive from the store's
//! PersistentVolumeClaim; its init container (the so1s image) unpacks, checks and
//! smoke-tests the model and writes the build context; its build container (Kaniko, or the
//! node's Docker socket) builds the model image on the so1s image and pushes it. so1s follows
//! the Job, streams its pods' log lines into the version's events (read by a [`LogCursor`]
//! per container), and on failure reports why (image pull, out of memory, exit code,
//! deadline). The Job's name comes from model and
//! version: a retry follows a build that is still running, and replaces one that failed,
//! so one version is never built twice at once.

use super::{Artifact, ImageBuilder};
use crate::events::Events;
use crate::kubernetes::api_error;
use crate::kubernetes::logs::LogCursor;
use crate::kubernetes::manifests::{self, BuildSettings, ClusterSettings};
use crate::kubernetes::pods::{container_problems, PodProblem};
use crate::store::StoredVersion;
use crate::{Error, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How the Kubernetes builder works.
#[derive(Debug, Clone)]
pub struct KubeBuildConfig {
    /// Namespace and cluster-wide settings.
    pub cluster: ClusterSettings,
    /// Images, registry, build mode, the store's claim.
    pub build: BuildSettings,
    /// Where the store's claim is mounted in the api server: archive paths are made
    /// relative to it for the Job.
    pub store_root: PathBuf,
    /// How often the Job and its pods are read.
    pub poll_interval: Duration,
}

/// Builds model images with Kubernetes Jobs.
pub struct KubeImageBuilder {
    client: Client,
    config: KubeBuildConfig,
}

/// How a Job ended, from its conditions.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Running,
    Complete,
    /// The `Failed` condition's reason and message.
    Failed(String),
}

fn outcome(job: &Job) -> Outcome {
    let status = job.status.as_ref();
    for condition in status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        if condition.status != "True" {
            continue;
        }
        match condition.type_.as_str() {
            "Complete" => return Outcome::Complete,
            "Failed" => {
                return Outcome::Failed(format!(
                    "{}: {}",
                    condition.reason.as_deref().unwrap_or("Failed"),
                    condition.message.as_deref().unwrap_or("")
                ))
            }
            _ => {}
        }
    }
    if status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        Outcome::Complete
    } else {
        Outcome::Running
    }
}

/// A build pod's problem (from its containers' states: image pulls, OOM kills, exit codes,
/// see [`container_problems`]) as the build's error says it.
fn failure_text(problem: &PodProblem) -> String {
    if problem.is_out_of_memory() {
        format!("{problem} (out of memory: raise the build's memory)")
    } else {
        problem.to_string()
    }
}

impl KubeImageBuilder {
    /// A builder through `client`.
    pub fn new(client: Client, config: KubeBuildConfig) -> Self {
        Self { client, config }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.config.cluster.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.config.cluster.namespace)
    }

    /// Creates the version's Job, or takes over the one that exists: a running one is
    /// followed, a failed one replaced.
    async fn start(&self, job: &Job, events: &Events) -> Result<()> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let jobs = self.jobs();
        if let Some(existing) = jobs
            .get_opt(&name)
            .await
            .map_err(|e| api_error(&format!("reading Job {name}"), e))?
        {
            match outcome(&existing) {
                Outcome::Running | Outcome::Complete => {
                    events.progress(format!("following the existing build Job {name}"));
                    return Ok(());
                }
                Outcome::Failed(why) => {
                    events.progress(format!("replacing the failed build Job {name} ({why})"));
                    jobs.delete(&name, &DeleteParams::background())
                        .await
                        .map_err(|e| api_error(&format!("deleting Job {name}"), e))?;
                    let gone_by = Instant::now() + Duration::from_secs(60);
                    while jobs
                        .get_opt(&name)
                        .await
                        .map_err(|e| api_error(&format!("reading Job {name}"), e))?
                        .is_some()
                    {
                        if Instant::now() > gone_by {
                            return Err(Error::Backend(format!("Job {name} is not going away")));
                        }
                        tokio::time::sleep(self.config.poll_interval).await;
                    }
                }
            }
        }
        jobs.create(&PostParams::default(), job)
            .await
            .map_err(|e| api_error(&format!("creating Job {name}"), e))?;
        events.progress(format!(
            "created build Job {name} in {}",
            self.config.cluster.namespace
        ));
        Ok(())
    }

    /// Forwards the log lines of the Job's pods that were not forwarded yet.
    async fn forward_logs(
        &self,
        pods: &[Pod],
        cursors: &mut HashMap<(String, &'static str), LogCursor>,
        events: &Events,
    ) {
        let api = self.pods();
        for pod in pods {
            let Some(pod_name) = pod.metadata.name.clone() else {
                continue;
            };
            for container in ["prepare", "build"] {
                let cursor = cursors.entry((pod_name.clone(), container)).or_default();
                // Not started yet, or gone: nothing to read now.
                let Ok(text) = api.logs(&pod_name, &cursor.params(container)).await else {
                    continue;
                };
                for line in cursor.advance(&text) {
                    if !line.trim().is_empty() {
                        events.log(format!("[{container}] {line}"));
                    }
                }
            }
        }
    }

    /// Follows the Job until it completes or fails.
    async fn follow(&self, name: &str, events: &Events) -> Result<()> {
        let deadline = Instant::now() + self.config.build.deadline + Duration::from_secs(60);
        let mut cursors = HashMap::new();
        loop {
            let job = self
                .jobs()
                .get(name)
                .await
                .map_err(|e| api_error(&format!("reading Job {name}"), e))?;
            let pods = self
                .pods()
                .list(&ListParams::default().labels(&format!("job-name={name}")))
                .await
                .map_err(|e| api_error(&format!("listing the pods of Job {name}"), e))?
                .items;
            self.forward_logs(&pods, &mut cursors, events).await;
            match outcome(&job) {
                Outcome::Complete => return Ok(()),
                Outcome::Failed(why) => {
                    let mut reasons = vec![why];
                    reasons.extend(
                        pods.iter()
                            .flat_map(container_problems)
                            .map(|p| failure_text(&p)),
                    );
                    return Err(Error::Backend(format!(
                        "build Job {name} failed: {}",
                        reasons.join("; ")
                    )));
                }
                Outcome::Running => {}
            }
            // An image that cannot be pulled never gets better: stop waiting for the deadline.
            if let Some(failure) = pods.iter().flat_map(container_problems).find(|p| {
                matches!(
                    p.waiting_reason(),
                    Some("ImagePullBackOff" | "InvalidImageName")
                )
            }) {
                return Err(Error::Backend(format!(
                    "build Job {name} failed: {}",
                    failure_text(&failure)
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Backend(format!(
                    "build Job {name} still running past its deadline"
                )));
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }
}

#[async_trait::async_trait]
impl ImageBuilder for KubeImageBuilder {
    async fn build(
        &self,
        version: &StoredVersion,
        archive: &Path,
        events: &Events,
    ) -> Result<Artifact> {
        let relative = archive
            .strip_prefix(&self.config.store_root)
            .map_err(|_| {
                Error::Backend(format!(
                    "{} is not in the store claim mounted at {}",
                    archive.display(),
                    self.config.store_root.display()
                ))
            })?
            .to_string_lossy()
            .into_owned();
        // In a cluster an installation is its namespace.
        let reference = crate::build::image::model_image_reference(
            Some(&self.config.build.push_to),
            &self.config.cluster.namespace,
            &version.model,
            version.version,
        );
        let job = manifests::build_job(
            &self.config.cluster,
            &self.config.build,
            &version.model,
            version.version,
            &version.sha256,
            &relative,
            &reference,
        );
        let name = job.metadata.name.clone().unwrap_or_default();
        self.start(&job, events).await?;
        self.follow(&name, events).await?;
        events.progress(format!("build Job {name} pushed {reference}"));
        Ok(Artifact::Image {
            reference,
            id: None,
            precision: None,
        })
    }

    /// Images stay in the registry (its retention policy decides); the finished Job goes by
    /// its `ttlSecondsAfterFinished`.
    async fn remove(&self, _artifact: &Artifact) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_pod_killed_for_its_memory_says_what_to_raise() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "so1s-build-minilm-v4-x"},
            "status": {
                "initContainerStatuses": [{"name": "prepare", "image": "so1s", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [{"name": "build", "image": "kaniko", "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}],
            },
        }))
        .unwrap();
        let texts: Vec<String> = container_problems(&pod).iter().map(failure_text).collect();
        assert_eq!(
            texts,
            [
                "pod so1s-build-minilm-v4-x container build: OOMKilled, exit code 137 \
              (out of memory: raise the build's memory)"
            ]
        );
    }
}
