//! [`DockerImageBuilder`]: builds a model version into an image through the Docker API.
//!
//! The archive is first unpacked, checked and smoke-tested as the embedded backend does (a
//! broken model fails here, with the same messages, before any image exists). Then the
//! runtime image is made sure of (built once per set of binaries), and the model image is
//! built on top of it from a context so1s streams itself: one new layer, the model.

use super::context::{fingerprint, tar_stream};
use super::image::{self, ContextEntry, LinkedLibs};
use super::{Artifact, BundleBuilder, ImageBuilder};
use crate::docker::{engine_error, status_of, Engine};
use crate::events::Events;
use crate::store::StoredVersion;
use crate::{Error, Result};
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ListImagesOptionsBuilder, PushImageOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::sync::Mutex;

/// Credentials for pushing to a registry. Never printed: `Debug` shows the user only.
#[derive(Clone)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How the Docker builder makes images.
#[derive(Debug, Clone)]
pub struct DockerBuildConfig {
    /// The `so1s-predict` executable copied into the runtime image.
    pub predict_bin: PathBuf,
    /// The `so1s-probe` executable (the container health check).
    pub probe_bin: PathBuf,
    /// The runtime image's base: `scratch` (nothing to pull) or an image of your own.
    pub base_image: String,
    /// Push model images under this repository prefix (`registry.example.com/team`); images
    /// stay local when unset.
    pub push_to: Option<String>,
    /// Credentials for the push.
    pub registry_auth: Option<RegistryAuth>,
    /// Scratch space for unpacking archives before they become image layers.
    pub work_dir: PathBuf,
    /// Where each build's smoke test runs (default: in a child `predict_bin`).
    pub smoke: super::SmokeTest,
    /// The installation's instance id: model images are `so1s/<instance>/<model>:<version>`
    /// and labelled with it, so installations sharing the engine keep apart.
    pub instance: String,
}

impl DockerBuildConfig {
    /// Defaults: `FROM scratch`, no push, the binaries next to each other in `bin_dir`.
    pub fn new(bin_dir: &Path, work_dir: impl Into<PathBuf>) -> Self {
        let predict_bin = bin_dir.join("so1s-predict");
        Self {
            smoke: super::SmokeTest::Child(super::SmokeProcess::new(&predict_bin)),
            predict_bin,
            probe_bin: bin_dir.join("so1s-probe"),
            base_image: "scratch".into(),
            push_to: None,
            registry_auth: None,
            work_dir: work_dir.into(),
            instance: "default".into(),
        }
    }
}

/// Builds model images with a Docker engine.
pub struct DockerImageBuilder {
    docker: Docker,
    config: DockerBuildConfig,
    bundles: BundleBuilder,
    /// The runtime image, once made sure of.
    runtime: Mutex<Option<String>>,
    /// The shared libraries of the runtime's binaries, once `ldd` has listed them.
    runtime_libs: tokio::sync::OnceCell<LinkedLibs>,
}

impl DockerImageBuilder {
    /// A builder on `engine`.
    pub fn new(engine: Engine, config: DockerBuildConfig) -> Self {
        Self {
            bundles: BundleBuilder::new(config.work_dir.clone(), config.smoke.clone()),
            docker: engine.0,
            config,
            runtime: Mutex::new(None),
            runtime_libs: tokio::sync::OnceCell::new(),
        }
    }

    /// The shared libraries `so1s-predict` and `so1s-probe` need (ldd runs once).
    async fn runtime_libs(&self) -> Result<&LinkedLibs> {
        self.runtime_libs
            .get_or_try_init(|| async {
                let mut linked = ldd(&self.config.predict_bin).await?;
                linked.merge(ldd(&self.config.probe_bin).await?);
                Ok(linked)
            })
            .await
    }

    /// The runtime image for the configured binaries: found by its fingerprint, or built.
    /// Returns its reference.
    pub async fn runtime_image(&self, events: &Events) -> Result<String> {
        let mut runtime = self.runtime.lock().await;
        if let Some(reference) = runtime.as_ref() {
            return Ok(reference.clone());
        }
        let linked = self.runtime_libs().await?;
        let files = image::runtime_context(
            &self.config.base_image,
            &BTreeMap::new(),
            &self.config.predict_bin,
            &self.config.probe_bin,
            linked,
        )?;
        let fingerprint = fingerprint(files).await?;
        let reference = image::runtime_image_reference(&fingerprint);
        let entries = image::runtime_context(
            &self.config.base_image,
            &image::runtime_image_labels(&fingerprint),
            &self.config.predict_bin,
            &self.config.probe_bin,
            linked,
        )?;
        match self.docker.inspect_image(&reference).await {
            Ok(_) => events.progress(format!("runtime image {reference} is there")),
            Err(e) if status_of(&e) == Some(404) => {
                events.progress(format!(
                    "building runtime image {reference} ({} shared libraries, base {})",
                    linked.libs.len(),
                    self.config.base_image
                ));
                let started = Instant::now();
                self.build_context(&reference, entries, events).await?;
                events.progress(format!(
                    "built runtime image {reference} in {:.1} s",
                    started.elapsed().as_secs_f64()
                ));
                self.untag_old_runtimes(&fingerprint).await;
            }
            Err(e) => return Err(engine_error("looking for the runtime image", e)),
        }
        *runtime = Some(reference.clone());
        Ok(reference)
    }

    /// Builds the so1s image `tag`: the runtime plus the `so1s` command itself. It runs the
    /// api server and the build Jobs' first step in a cluster, and model images built there
    /// use it as their base (its layers are on the nodes already). Pushed if `push`.
    pub async fn so1s_image(
        &self,
        so1s_bin: &Path,
        tag: &str,
        push: bool,
        events: &Events,
    ) -> Result<String> {
        let mut linked = self.runtime_libs().await?.clone();
        linked.merge(ldd(so1s_bin).await?);
        let mut entries = image::runtime_context(
            &self.config.base_image,
            &image::so1s_image_labels(env!("CARGO_PKG_VERSION")),
            &self.config.predict_bin,
            &self.config.probe_bin,
            &linked,
        )?;
        entries.push(ContextEntry::new(
            format!("rootfs{}", image::SO1S_BIN),
            image::Source::File(so1s_bin.to_owned()),
        ));
        self.build_tagged("the so1s image", tag, entries, push, events)
            .await
    }

    /// Builds `entries` as `tag`, with the time it took in `events`; pushes it if `push`.
    async fn build_tagged(
        &self,
        what: &str,
        tag: &str,
        entries: Vec<ContextEntry>,
        push: bool,
        events: &Events,
    ) -> Result<String> {
        events.progress(format!("building {what} {tag}"));
        let started = Instant::now();
        let id = self.build_context(tag, entries, events).await?;
        events.progress(format!(
            "built {tag} ({}) in {:.1} s",
            &id[..19.min(id.len())],
            started.elapsed().as_secs_f64()
        ));
        if push {
            self.push(tag, events).await?;
        }
        Ok(id)
    }

    /// Builds the api-server-only image `tag`: `so1s` (built without the `inference`
    /// feature, so without libtorch), its libraries and the loader; no predict server. For
    /// an api server whose builds and models run in Docker or Kubernetes. Pushed if `push`.
    pub async fn api_server_image(
        &self,
        so1s_bin: &Path,
        tag: &str,
        push: bool,
        events: &Events,
    ) -> Result<String> {
        let linked = ldd(so1s_bin).await?;
        if linked.libs.keys().any(|name| name.starts_with("libtorch")) {
            return Err(Error::InvalidInput(format!(
                "{} links libtorch: build it with `--no-default-features --features \
                 docker,kubernetes` for an api-server-only image",
                so1s_bin.display()
            )));
        }
        let entries = image::api_server_context(
            &self.config.base_image,
            &image::so1s_image_labels(env!("CARGO_PKG_VERSION")),
            so1s_bin,
            &linked,
        )?;
        self.build_tagged("the api-server-only image", tag, entries, push, events)
            .await
    }

    /// Untags the runtime images of earlier binaries but the newest one (two builds of so1s
    /// in use side by side, say debug and release, keep theirs), so each rebuild of so1s does
    /// not leave hundreds of MB behind. Their layers stay while model images are built on them.
    async fn untag_old_runtimes(&self, fingerprint: &str) {
        let filters = HashMap::from([("label", vec![image::LABEL_RUNTIME])]);
        let options = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let Ok(images) = self.docker.list_images(Some(options)).await else {
            return;
        };
        let mut older: Vec<_> = images
            .into_iter()
            .filter(|i| i.labels.get(image::LABEL_RUNTIME).map(String::as_str) != Some(fingerprint))
            .collect();
        older.sort_by_key(|i| std::cmp::Reverse(i.created));
        for old in older.into_iter().skip(1) {
            for tag in old
                .repo_tags
                .iter()
                .filter(|t| t.starts_with(image::RUNTIME_REPOSITORY))
            {
                match self.remove_image(tag).await {
                    Ok(()) => tracing::info!("untagged the old runtime image {tag}"),
                    Err(e) => tracing::info!("keeping the old runtime image {tag}: {e}"),
                }
            }
        }
    }

    /// Sends a context to the engine's build endpoint, following its output into `events`.
    async fn build_context(
        &self,
        tag: &str,
        entries: Vec<ContextEntry>,
        events: &Events,
    ) -> Result<String> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .build();
        let body = bollard::body_try_stream(tar_stream(entries));
        let mut output = self.docker.build_image(options, None, Some(body));
        while let Some(item) = output.next().await {
            match item {
                Ok(info) => {
                    for line in info.stream.iter().flat_map(|s| s.lines()) {
                        let line = line.trim_end();
                        if !line.trim().is_empty() {
                            events.log(line.to_owned());
                        }
                    }
                }
                Err(e) => return Err(engine_error(&format!("building {tag}"), e)),
            }
        }
        let built = self
            .docker
            .inspect_image(tag)
            .await
            .map_err(|e| engine_error(&format!("inspecting {tag} after its build"), e))?;
        built
            .id
            .ok_or_else(|| Error::Backend(format!("the engine gave no id for {tag}")))
    }

    async fn push(&self, reference: &str, events: &Events) -> Result<()> {
        let (name, tag) = reference.rsplit_once(':').unwrap_or((reference, "latest"));
        events.progress(format!("pushing {reference}"));
        let credentials = self
            .config
            .registry_auth
            .as_ref()
            .map(|auth| DockerCredentials {
                username: Some(auth.username.clone()),
                password: Some(auth.password.clone()),
                ..Default::default()
            });
        let options = PushImageOptionsBuilder::default().tag(tag).build();
        let mut output = self.docker.push_image(name, Some(options), credentials);
        while let Some(item) = output.next().await {
            let info = item.map_err(|e| engine_error(&format!("pushing {reference}"), e))?;
            if let Some(status) = info.status {
                if info.progress_detail.is_none() || status != "Pushing" {
                    events.log(status);
                }
            }
        }
        Ok(())
    }

    async fn build_image(
        &self,
        version: &StoredVersion,
        model_dir: &Path,
        events: &Events,
    ) -> Result<Artifact> {
        let runtime = self.runtime_image(events).await?;
        let reference = image::model_image_reference(
            self.config.push_to.as_deref(),
            &self.config.instance,
            &version.model,
            version.version,
        );
        events.progress(format!("building image {reference} on {runtime}"));
        let started = Instant::now();
        let id = self
            .build_context(
                &reference,
                image::model_context(
                    &runtime,
                    &version.model,
                    version.version,
                    &image::model_image_labels(
                        Some(&self.config.instance),
                        &version.model,
                        version.version,
                        &version.sha256,
                    ),
                    model_dir,
                ),
                events,
            )
            .await?;
        events.progress(format!(
            "built {reference} ({}) in {:.1} s",
            &id[..19.min(id.len())],
            started.elapsed().as_secs_f64()
        ));
        if self.config.push_to.is_some() {
            if let Err(e) = self.push(&reference, events).await {
                let _ = self.remove_image(&reference).await;
                return Err(e);
            }
        }
        Ok(Artifact::Image {
            reference,
            id: Some(id),
            precision: None,
        })
    }

    async fn remove_image(&self, reference: &str) -> Result<()> {
        let options = RemoveImageOptionsBuilder::default().build();
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) if status_of(&e) == Some(409) => Err(Error::Conflict(format!(
                "image {reference} is still used by a container"
            ))),
            Err(e) => Err(engine_error(&format!("removing {reference}"), e)),
        }
    }
}

/// The shared libraries `binary` needs, from `ldd`.
async fn ldd(binary: &Path) -> Result<LinkedLibs> {
    if !binary.is_file() {
        return Err(Error::Backend(format!(
            "{} not found: the runtime image needs it",
            binary.display()
        )));
    }
    let output = tokio::process::Command::new("ldd")
        .arg(binary)
        .output()
        .await
        .map_err(|source| Error::Io {
            context: "running ldd (Debian package libc-bin)".into(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(Error::Backend(format!(
            "ldd {} failed: {}{}",
            binary.display(),
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    LinkedLibs::parse_ldd(&stdout)
}

#[async_trait::async_trait]
impl ImageBuilder for DockerImageBuilder {
    async fn build(
        &self,
        version: &StoredVersion,
        archive: &Path,
        events: &Events,
    ) -> Result<Artifact> {
        let bundle = self.bundles.build(version, archive, events).await?;
        let Artifact::Bundle { dir, precision } = &bundle else {
            return Err(Error::Backend("the bundle builder made no bundle".into()));
        };
        let built = self.build_image(version, dir, events).await;
        // The image holds the model now (or the build failed): the unpacked copy goes.
        let precision = precision.clone();
        let _ = self.bundles.remove(&bundle).await;
        Ok(built?.with_precision(precision))
    }

    /// The unpacked copies under `work_dir` only live while their image is built: at
    /// start every one is a leftover.
    async fn clean_up(&self) -> Result<usize> {
        let root = self.config.work_dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for model in std::fs::read_dir(&root).into_iter().flatten().flatten() {
                for entry in std::fs::read_dir(model.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let path = entry.path();
                    std::fs::remove_dir_all(&path).map_err(|source| Error::Io {
                        context: format!("removing {}", path.display()),
                        source,
                    })?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
        .map_err(|e| Error::Backend(format!("cleaning up builds: {e}")))?
    }

    async fn remove(&self, artifact: &Artifact) -> Result<()> {
        match artifact {
            Artifact::Image { reference, .. } => self.remove_image(reference).await,
            Artifact::Bundle { .. } => self.bundles.remove(artifact).await,
        }
    }
}
