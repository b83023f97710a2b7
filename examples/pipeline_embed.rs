//! Store, build and roll out a model in-process with so1s-core's building blocks, then ask
//! it for a prediction through the routing table the gateway uses.
//!
//! ```sh
//! cargo build --release -p so1s-bin       # the so1s-predict child each version runs as
//! cargo run --release -p so1s-examples --example pipeline_embed -- [MODEL_DIR]
//! # the same on Docker: an image per version, a container per live version
//! SO1S_BACKEND=docker cargo run --release -p so1s-examples --example pipeline_embed
//! ```

use anyhow::Context;
use so1s_core::build::{
    pack_dir, BundleBuilder, DockerBuildConfig, DockerImageBuilder, ImageBuilder, SmokeTest,
};
use so1s_core::platform::{Platform, PlatformOptions};
use so1s_core::registry::{Registry, VersionState};
use so1s_core::rollout::{
    DockerRollout, DockerRolloutConfig, Pick, ProcessRollout, ProcessRolloutConfig, Rollout, Routes,
};
use so1s_core::store::FsModelStore;
use so1s_core::ModelName;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let model_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| ".cache/models/all-MiniLM-L6-v2".into());
    let predict_bin =
        std::env::var("SO1S_PREDICT_BIN").unwrap_or_else(|_| "target/release/so1s-predict".into());
    let data = std::env::temp_dir().join(format!("so1s-example-{}", std::process::id()));

    let routes = Routes::default();
    let name = ModelName::parse("example")?;
    // The embedded default, or Docker (the engine DOCKER_HOST names).
    let mut docker = None;
    let (builder, rollout): (Arc<dyn ImageBuilder>, Arc<dyn Rollout>) =
        if std::env::var("SO1S_BACKEND").as_deref() == Ok("docker") {
            let engine = so1s_core::docker::connect().await?;
            let bin_dir = std::path::Path::new(&predict_bin)
                .parent()
                .context("so1s-predict's folder")?;
            let builder = Arc::new(DockerImageBuilder::new(
                engine.clone(),
                DockerBuildConfig::new(bin_dir, data.join("builds")),
            ));
            let instance = ModelName::parse(&format!("example-{}", std::process::id()))?;
            let rollout = Arc::new(DockerRollout::new(
                engine,
                DockerRolloutConfig::new(instance),
                routes.clone(),
            ));
            docker = Some((builder.clone(), rollout.clone()));
            (builder, rollout)
        } else {
            (
                // Each build's smoke test loads the model in this process.
                Arc::new(BundleBuilder::new(
                    data.join("bundles"),
                    SmokeTest::in_process(so1s_inference::InProcessSmokeTest),
                )),
                Arc::new(ProcessRollout::new(
                    ProcessRolloutConfig::new(&predict_bin),
                    routes.clone(),
                )),
            )
        };
    let platform = Platform::new(
        Arc::new(FsModelStore::open(data.join("store"), 4 << 30).await?),
        builder,
        rollout,
        Registry::open(data.join("so1s.db"))?,
        routes.clone(),
        PlatformOptions::default(),
    );

    let bytes = pack_dir(model_dir.as_ref())?;
    let body = Box::pin(futures::stream::once(async move {
        Ok(bytes::Bytes::from(bytes))
    }));
    let record = platform.upload(&name, body).await?;
    println!(
        "stored {} {} (sha256 {})",
        name, record.stored.version, record.stored.sha256
    );

    let version = record.stored.version;
    let live = loop {
        let record = platform.registry().version(&name, version)?;
        match record.state {
            VersionState::Live => break record,
            VersionState::Failed => anyhow::bail!("failed: {}", record.error.unwrap_or_default()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    println!("{} {} is {:?}", name, version, live.state);

    let upstream = routes.acquire(&name, Pick::Any).context("no route")?;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/predict", upstream.upstream().url))
        .json(&serde_json::json!({"text": "Hello world"}))
        .send()
        .await?
        .json()
        .await?;
    drop(upstream);
    let values = answer["result"].as_array().map(Vec::len).unwrap_or(0);
    println!("prediction: {values} values, first {}", answer["result"][0]);

    platform.shutdown().await;
    if let Some((builder, rollout)) = docker {
        // Containers outlive the platform (a restart adopts them): this example cleans up.
        rollout.remove_all().await?;
        builder
            .remove(&live.artifact.context("no artifact")?)
            .await?;
        println!("removed the container and the image");
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
