//! The Docker backends against a real engine: real images built from the real binaries and
//! MiniLM, real containers. They run when `DOCKER_HOST` is set at build time
//! (`cfg(so1s_docker)`, scripts/test.sh sets it) and are ignored with the reason otherwise;
//! then an engine that does not answer fails them.

mod common;

use bollard::Docker;
use common::{docker_cli, docker_client, hello_world_cosine, minilm_dir, unique, DockerCleanup};
use so1s_core::build::image::{runtime_image_reference, LABEL_MODEL, LABEL_SHA256, LABEL_VERSION};
use so1s_core::build::{Artifact, DockerBuildConfig, DockerImageBuilder, ImageBuilder};
use so1s_core::events::{EventLog, Events, Stage};
use so1s_core::rollout::{DockerRollout, DockerRolloutConfig, Pick, Rollout, Routes, Target};
use so1s_core::store::{FsModelStore, ModelStore, StoredVersion};
use so1s_core::ModelName;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One test at a time: they share the engine, the runtime image and the two cores, and the
/// build timings they print mean something only alone.
static ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_so1s-predict"))
        .parent()
        .unwrap()
        .to_owned()
}

fn builder(docker: &Docker, work: &Path) -> DockerImageBuilder {
    let mut config = DockerBuildConfig::new(&bin_dir(), work);
    config.probe_bin = PathBuf::from(env!("CARGO_BIN_EXE_so1s-probe"));
    DockerImageBuilder::new(docker.clone().into(), config)
}

/// Stores MiniLM `count` times as versions of `model`, each with its own note file so that
/// no two versions (of any run) have the same model layer: nothing comes from the build cache.
async fn store_minilm(
    dir: &Path,
    model: &ModelName,
    count: usize,
) -> (FsModelStore, Vec<StoredVersion>) {
    let store = FsModelStore::open(dir, 1 << 30).await.unwrap();
    let mut versions = Vec::new();
    for n in 1..=count {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(&minilm_dir(), copy.path());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        std::fs::write(
            copy.path().join("NOTES.txt"),
            format!("{model} v{n} {now} ms"),
        )
        .unwrap();
        let archive = so1s_core::build::pack_dir(copy.path()).unwrap();
        let body = futures::stream::iter([Ok(bytes::Bytes::from(archive))]);
        versions.push(store.put(model, Box::pin(body)).await.unwrap());
    }
    (store, versions)
}

async fn build(
    builder: &DockerImageBuilder,
    store: &FsModelStore,
    version: &StoredVersion,
    recorded: &EventLog,
) -> (Artifact, Duration) {
    let archive = store
        .archive(&version.model, version.version)
        .await
        .unwrap();
    let started = Instant::now();
    let artifact = builder
        .build(version, &archive, &recorded.events(Stage::Build))
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), recorded.text()));
    (artifact, started.elapsed())
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn reference(artifact: &Artifact) -> &str {
    match artifact {
        Artifact::Image { reference, .. } => reference,
        other => panic!("not an image: {other}"),
    }
}

async fn layers(docker: &Docker, image: &str) -> Vec<String> {
    let inspect = docker.inspect_image(image).await.unwrap();
    inspect.root_fs.unwrap().layers.unwrap()
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = std::fs::metadata(entry.path()).unwrap();
            if meta.is_dir() {
                dir_size(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Runs `image` alone (`docker run`, nothing mounted or passed, labelled with the test's
/// `instance` for cleanup), waits until it answers `/readyz`, checks its `/predict` gives
/// MiniLM's embedding of "Hello world", and returns the container's id.
async fn run_alone_and_predict(image: &str, instance: &str) -> String {
    let label = format!("io.so1s.instance={instance}");
    let id = docker_cli(&[
        "run",
        "-d",
        "--label",
        &label,
        "-p",
        "127.0.0.1::8080",
        image,
    ]);
    let port = docker_cli(&["port", &id, "8080/tcp"]);
    let url = format!("http://{}", port.lines().next().unwrap());
    let started = Instant::now();
    while !so1s_core::rollout::check::is_ready(&reqwest::Client::new(), &url).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{}",
            docker_cli(&["logs", &id])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cosine = hello_world_cosine(&url).await;
    assert!(cosine >= 0.9999, "{cosine}");
    id
}

/// The container's Docker health status once it is no longer `starting` (at most 30 s).
async fn settled_health(container: &str) -> String {
    let started = Instant::now();
    loop {
        let health = docker_cli(&["inspect", "--format", "{{.State.Health.Status}}", container]);
        if health != "starting" || started.elapsed() > Duration::from_secs(30) {
            return health;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
#[cfg_attr(
    not(so1s_docker),
    ignore = "needs a Docker engine: set DOCKER_HOST when building the tests (scripts/test.sh does, from scripts/docker-engine.sh start)"
)]
async fn a_new_version_adds_one_model_layer_and_its_image_runs_alone() {
    let docker = docker_client().await;
    let _alone = ENGINE.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let model = ModelName::parse(&unique("layers")).unwrap();
    // `docker run` below labels its container with this instance, so the cleanup finds it.
    let instance = unique("t-layers");
    let _cleanup = DockerCleanup {
        instance: instance.clone(),
        model: model.to_string(),
    };
    let (store, versions) = store_minilm(&tmp.path().join("store"), &model, 2).await;
    let builder = builder(&docker, &tmp.path().join("work"));
    let recorded = EventLog::default();

    let started = Instant::now();
    let runtime = builder
        .runtime_image(&recorded.events(Stage::Build))
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), recorded.text()));
    let runtime_time = started.elapsed();
    assert!(runtime.starts_with("so1s/runtime:"), "{runtime}");
    let (v1, v1_time) = build(&builder, &store, &versions[0], &recorded).await;
    let (v2, v2_time) = build(&builder, &store, &versions[1], &recorded).await;
    assert_eq!(reference(&v1), format!("so1s/default/{model}:v1"));
    assert_eq!(reference(&v2), format!("so1s/default/{model}:v2"));
    let log = recorded.text();
    assert!(log.contains("Step 2/4 : COPY model/ /model/"), "{log}");
    assert_eq!(
        log.matches(&format!("building runtime image {runtime}"))
            .count(),
        usize::from(runtime_time > Duration::from_secs(3)),
        "the runtime image is built at most once: {log}"
    );
    assert!(
        !tmp.path()
            .join("work")
            .join(model.as_str())
            .join("v1")
            .exists(),
        "the unpacked model is removed once it is in the image"
    );

    // v2 = the runtime's layers + exactly one layer, the model.
    let runtime_layers = layers(&docker, &runtime).await;
    let v2_layers = layers(&docker, reference(&v2)).await;
    assert_eq!(v2_layers.len(), runtime_layers.len() + 1, "{v2_layers:?}");
    assert_eq!(v2_layers[..runtime_layers.len()], runtime_layers[..]);
    let history = docker.image_history(reference(&v2)).await.unwrap();
    let runtime_history = docker.image_history(&runtime).await.unwrap();
    let added = &history[..history.len() - runtime_history.len()];
    let with_files: Vec<_> = added.iter().filter(|h| h.size > 0).collect();
    assert_eq!(with_files.len(), 1, "{added:?}");
    assert!(with_files[0].created_by.contains("COPY"), "{added:?}");
    let model_bytes = dir_size(&minilm_dir()) as i64;
    assert!(
        (with_files[0].size - model_bytes).abs() < model_bytes / 50,
        "the model layer is {} bytes, the model {model_bytes}",
        with_files[0].size
    );

    // Labels name the model, the version and the archive.
    let labels = docker
        .inspect_image(reference(&v2))
        .await
        .unwrap()
        .config
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(labels[LABEL_MODEL], model.as_str());
    assert_eq!(labels[LABEL_VERSION], "v2");
    assert_eq!(labels[LABEL_SHA256], versions[1].sha256);

    let runtime_size = docker.inspect_image(&runtime).await.unwrap().size.unwrap();
    let v2_size = docker
        .inspect_image(reference(&v2))
        .await
        .unwrap()
        .size
        .unwrap();
    eprintln!(
        "FIGURES runtime image {runtime}: {:.0} MB (ensured in {:.1} s); model image: +{:.1} MB; \
         build v1 {:.1} s, v2 {:.1} s",
        runtime_size as f64 / 1e6,
        runtime_time.as_secs_f64(),
        (v2_size - runtime_size) as f64 / 1e6,
        v1_time.as_secs_f64(),
        v2_time.as_secs_f64()
    );

    // The image alone, nothing mounted, nothing passed: `docker run` answers /predict, and
    // Docker's health check (so1s-probe inside the image) reports it healthy.
    let id = run_alone_and_predict(reference(&v1), &instance).await;
    let health = settled_health(&id).await;
    docker_cli(&["rm", "-f", &id]);
    assert_eq!(health, "healthy");

    for artifact in [&v1, &v2] {
        builder.remove(artifact).await.unwrap();
        assert!(docker.inspect_image(reference(artifact)).await.is_err());
    }

    // With a registry configured the image is pushed; a push that fails fails the build,
    // names the registry, and leaves no image behind.
    let mut config = DockerBuildConfig::new(&bin_dir(), tmp.path().join("work"));
    config.probe_bin = PathBuf::from(env!("CARGO_BIN_EXE_so1s-probe"));
    config.push_to = Some("127.0.0.1:9/so1s-test".into());
    let pushing = DockerImageBuilder::new(docker.clone().into(), config);
    let archive = store
        .archive(&versions[0].model, versions[0].version)
        .await
        .unwrap();
    let error = pushing
        .build(&versions[0], &archive, &Events::discard(Stage::Build))
        .await
        .unwrap_err()
        .chain();
    let pushed = format!("127.0.0.1:9/so1s-test/so1s/default/{model}:v1");
    assert!(error.contains(&format!("pushing {pushed}")), "{error}");
    assert!(docker.inspect_image(&pushed).await.is_err());
    assert_eq!(
        runtime,
        runtime_image_reference(runtime.split(':').nth(1).unwrap())
    );
}

#[tokio::test]
#[cfg_attr(
    not(so1s_docker),
    ignore = "needs a Docker engine: set DOCKER_HOST when building the tests (scripts/test.sh does, from scripts/docker-engine.sh start)"
)]
async fn a_container_that_cannot_serve_is_removed_and_a_restart_adopts_the_live_one() {
    let docker = docker_client().await;
    let _alone = ENGINE.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let model = ModelName::parse(&unique("rollout")).unwrap();
    let instance = ModelName::parse(&unique("t-rollout")).unwrap();
    let _cleanup = DockerCleanup {
        instance: instance.to_string(),
        model: model.to_string(),
    };
    let (store, versions) = store_minilm(&tmp.path().join("store"), &model, 1).await;
    let builder = builder(&docker, &tmp.path().join("work"));
    let recorded = EventLog::default();
    let (v1, _) = build(&builder, &store, &versions[0], &recorded).await;

    let mut config = DockerRolloutConfig::new(instance);
    config.memory_bytes = Some(2 << 30);
    config.cpus = Some(1.5);
    config.threads = Some(1);
    config.health_interval = Duration::from_secs(1);
    let routes = Routes::default();
    let rollout = DockerRollout::new(docker.clone().into(), config.clone(), routes.clone());
    let target = Target {
        model: model.clone(),
        version: versions[0].version,
        artifact: v1.clone(),
    };
    let deployment = rollout
        .deploy(&target, &recorded.events(Stage::Rollout))
        .await
        .unwrap_or_else(|e| panic!("{}\n{}", e.chain(), recorded.text()));
    let cosine = hello_world_cosine(&deployment.endpoint).await;
    assert!(cosine >= 0.9999, "{cosine}");
    assert_eq!(
        routes.acquire(&model, Pick::Any).unwrap().upstream().url,
        deployment.endpoint
    );

    // The container carries the labels, limits, policy and hardening asked for.
    let name = rollout.container_name(&model, versions[0].version);
    let inspect = docker.inspect_container(&name, None).await.unwrap();
    let labels = inspect.config.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels[LABEL_MODEL], model.as_str());
    assert_eq!(labels[LABEL_VERSION], "v1");
    let host = inspect.host_config.clone().unwrap();
    assert_eq!(host.memory, Some(2 << 30));
    assert_eq!(host.nano_cpus, Some(1_500_000_000));
    assert_eq!(
        host.restart_policy.unwrap().name.unwrap().to_string(),
        "unless-stopped"
    );
    assert_eq!(host.readonly_rootfs, Some(true));
    let container_id = inspect.id.clone().unwrap();
    assert_eq!(settled_health(&name).await, "healthy");

    // An image that cannot serve (the runtime alone: no model in it) fails the rollout with
    // its own log lines; its container is removed and v1 keeps serving.
    let runtime = builder
        .runtime_image(&Events::discard(Stage::Build))
        .await
        .unwrap();
    let broken = Target {
        model: model.clone(),
        version: so1s_core::VersionId::parse("v2").unwrap(),
        artifact: Artifact::Image {
            reference: runtime,
            id: None,
            precision: None,
        },
    };
    let failed = EventLog::default();
    let error = rollout
        .deploy(&broken, &failed.events(Stage::Rollout))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("exited with code"),
        "{}",
        error.chain()
    );
    assert!(failed.text().contains("/model"), "{}", failed.text());
    assert!(docker
        .inspect_container(&rollout.container_name(&model, broken.version), None)
        .await
        .is_err());
    assert_eq!(routes.version(&model), Some(versions[0].version));
    assert!(hello_world_cosine(&deployment.endpoint).await >= 0.9999);

    // A restarted api server adopts the running container instead of starting another.
    rollout.shutdown().await;
    assert!(routes.version(&model).is_none());
    let restarted_routes = Routes::default();
    let restarted = DockerRollout::new(docker.clone().into(), config, restarted_routes.clone());
    let adopted = EventLog::default();
    let resumed = restarted
        .resume(&target, &adopted.events(Stage::Rollout))
        .await
        .unwrap();
    assert!(
        adopted.text().contains("adopted running container"),
        "{}",
        adopted.text()
    );
    assert_eq!(resumed.endpoint, deployment.endpoint);
    assert_eq!(
        restarted_routes
            .acquire(&model, Pick::Any)
            .unwrap()
            .upstream()
            .url,
        deployment.endpoint
    );
    let inspect = docker.inspect_container(&name, None).await.unwrap();
    assert_eq!(inspect.id.unwrap(), container_id);

    assert_eq!(restarted.remove_all().await.unwrap(), 1);
    builder.remove(&v1).await.unwrap();
}

/// The Kubernetes build path, with the engine standing in for the build container: the so1s
/// image (`so1s image`), the build Job's first step (`so1s context`), then the `docker build`
/// the docker-socket mode runs. The model image runs on the so1s image and answers.
#[tokio::test]
#[cfg_attr(
    not(so1s_docker),
    ignore = "needs a Docker engine: set DOCKER_HOST when building the tests (scripts/test.sh does, from scripts/docker-engine.sh start)"
)]
async fn the_cluster_build_path_makes_a_serving_model_image_on_the_so1s_image() {
    let docker = docker_client().await;
    let _alone = ENGINE.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let (instance, model) = (unique("t-context"), unique("context"));
    let _cleanup = DockerCleanup {
        instance: instance.clone(),
        model: model.clone(),
    };
    let so1s = env!("CARGO_BIN_EXE_so1s");
    let so1s_tag = format!("so1s/so1s:{model}");
    let output = std::process::Command::new(so1s)
        .args(["image", "--tag", &so1s_tag])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The so1s image runs `so1s` as well as the predict server.
    let version = docker_cli(&[
        "run",
        "--rm",
        "--entrypoint",
        "so1s",
        &so1s_tag,
        "--version",
    ]);
    assert!(version.starts_with("so1s "), "{version}");

    let archive = tmp.path().join("v1.tar.gz");
    std::fs::write(&archive, so1s_core::build::pack_dir(&minilm_dir()).unwrap()).unwrap();
    let sha256 = {
        use sha2::Digest;
        format!(
            "{:x}",
            sha2::Sha256::digest(std::fs::read(&archive).unwrap())
        )
    };
    let out = tmp.path().join("workspace");
    let context = |sha: &str| {
        std::process::Command::new(so1s)
            .args(["context", "--archive"])
            .arg(&archive)
            .args(["--model", &model, "--version", "v1", "--sha256", sha])
            .args(["--base-image", &so1s_tag, "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let refused = context(&"0".repeat(64));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("has sha256"));
    let prepared = context(&sha256);
    let said = String::from_utf8_lossy(&prepared.stdout);
    assert!(
        prepared.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&prepared.stderr)
    );
    assert!(
        said.contains("smoke prediction: a 384-value embedding"),
        "{said}"
    );
    assert!(out.join("model/model.safetensors").is_file());
    let dockerfile = std::fs::read_to_string(out.join("Dockerfile")).unwrap();
    assert!(
        dockerfile.starts_with(&format!("FROM {so1s_tag}\n")),
        "{dockerfile}"
    );

    let reference = format!("so1s/{model}:v1");
    docker_cli(&["build", "-q", "-t", &reference, out.to_str().unwrap()]);
    let labels = docker
        .inspect_image(&reference)
        .await
        .unwrap()
        .config
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(labels[LABEL_SHA256], sha256);
    run_alone_and_predict(&reference, &instance).await;
    docker_cli(&["rmi", "-f", &so1s_tag]);
}
