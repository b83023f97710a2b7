//! `so1s image`: the so1s image, built with the Docker engine `DOCKER_HOST` names.

use anyhow::Context;
use so1s_core::build::{DockerBuildConfig, DockerImageBuilder};
use so1s_core::events::{Events, Stage};
use std::process::ExitCode;

/// `so1s image`.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The image's tag (with the registry, to push it).
    #[arg(long, default_value = crate::DEFAULT_SO1S_IMAGE)]
    pub tag: String,
    /// Push it (credentials from SO1S_REGISTRY_USERNAME / SO1S_REGISTRY_PASSWORD).
    #[arg(long)]
    pub push: bool,
    /// Only the api server: `so1s` without so1s-predict and libtorch, for installations
    /// whose builds run in Kubernetes Jobs or Docker (the default when this so1s was built
    /// without the `inference` feature).
    #[arg(long)]
    pub api_server_only: bool,
}

/// Builds the image from the binaries next to this one; prints `TAG ID`.
pub async fn build(args: &ImageArgs) -> anyhow::Result<ExitCode> {
    let so1s = std::env::current_exe()?;
    let bin_dir = so1s.parent().context("locating so1s's directory")?;
    let docker = so1s_core::docker::connect()
        .await
        .map_err(|e| anyhow::anyhow!("{} (is a Docker engine running? DOCKER_HOST?)", e.chain()))?;
    let mut config = DockerBuildConfig::new(bin_dir, std::env::temp_dir());
    config.registry_auth = crate::serve::registry_auth();
    let events = Events::new(Stage::Build, |e| eprintln!("{}", e.message));
    let builder = DockerImageBuilder::new(docker, config);
    let built = if args.api_server_only || !cfg!(feature = "inference") {
        builder
            .api_server_image(&so1s, &args.tag, args.push, &events)
            .await
    } else {
        builder
            .so1s_image(&so1s, &args.tag, args.push, &events)
            .await
    };
    let id = built.map_err(|e| anyhow::anyhow!(e.chain()))?;
    println!("{} {id}", args.tag);
    Ok(ExitCode::SUCCESS)
}
