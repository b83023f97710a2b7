//! `kill -9` of the api server at every point of upload → build → rollout → live, then a
//! restart: so1s picks up where it stopped and its state stays straight.

mod common;

use common::api::{minilm_archive, Api};
use common::{containers, docker_engine, unique, DockerCleanup};
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The fault points (so1s-core makes them public in crash-test builds only; without the
/// feature the tests that walk them are ignored).
#[cfg(feature = "fault-injection")]
use so1s_core::fault::POINTS;
#[cfg(not(feature = "fault-injection"))]
const POINTS: &[&str] = &[];

/// Processes whose command line mentions `needle` (the test's data directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// Files and folders a crash may leave half-done.
fn leftovers(data: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(data.join("store/incoming")) {
        found.extend(entries.flatten().map(|e| e.path().display().to_string()));
    }
    for model in std::fs::read_dir(data.join("bundles"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for entry in std::fs::read_dir(model.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "partial") {
                found.push(entry.path().display().to_string());
            }
        }
    }
    found
}

/// Waits until every version of `model` is settled (live, retired or failed); returns them.
async fn settled_versions(api: &Api, model: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let view = api.model(model).await;
        let versions = view["versions"].as_array().cloned().unwrap_or_default();
        if !versions.is_empty()
            && versions
                .iter()
                .all(|v| matches!(v["state"].as_str(), Some("live" | "retired" | "failed")))
        {
            return versions;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "versions still moving: {view}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `data:` payloads of a version's server-sent events.
async fn events(api: &Api, model: &str, version: &str) -> Vec<Value> {
    api.events(model, version)
        .await
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

#[tokio::test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature: cargo test --features so1s-bin/fault-injection (scripts/test.sh passes it)"
)]
async fn killed_at_every_point_of_an_upload_so1s_recovers_to_one_live_version() {
    kill_at_every_point(&[], "minilm", None).await;
}

#[tokio::test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the fault-injection feature: cargo test --features so1s-bin/fault-injection (scripts/test.sh passes it)"
)]
#[cfg_attr(
    all(feature = "fault-injection", not(so1s_docker)),
    ignore = "needs a Docker engine: set DOCKER_HOST when building the tests (scripts/test.sh does, from scripts/docker-engine.sh start)"
)]
async fn on_docker_killed_at_every_point_so1s_recovers_to_one_live_container() {
    docker_engine().await;
    let (instance, model) = (unique("crash"), unique("crashed"));
    let _cleanup = DockerCleanup {
        instance: instance.clone(),
        model: model.clone(),
    };
    let args = ["--backend", "docker", "--instance", instance.as_str()];
    kill_at_every_point(&args, &model, Some(&instance)).await;
}

/// Uploads `model` once, then for each fault point: starts `so1s serve` (with `args`)
/// armed to die there, uploads again, and after a plain restart checks that one version
/// is live and serving, none is left moving, nothing half-done remains, every version's
/// events read in order, and (on Docker, `instance`) only the live version's container runs.
async fn kill_at_every_point(args: &[&str], model: &str, instance: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let needle = data.display().to_string();
    let archive = minilm_archive();
    let path = format!("/inference/{model}/predict");
    let api = Api::start_with(&data, args);
    assert_eq!(api.upload(model, archive.clone()).await["version"], "v1");
    assert_eq!(api.settle(model, "v1").await["state"], "live");
    api.stop();

    for point in POINTS {
        // The process backend brings the live version back at start by starting it, which
        // passes the rollout's own point once already: this upload's pass is the second.
        // (Docker adopts the running container instead.)
        let fault = match *point {
            "rollout-instance-started" if instance.is_none() => format!("{point}:2"),
            _ => point.to_string(),
        };
        let mut api = Api::start_env(&data, args, &[("SO1S_FAULT", &fault)]);
        let live = api.predict_when_live(&path, "before").await;
        assert_eq!(
            live.status(),
            200,
            "{point}: nothing serves after a restart"
        );
        // The server dies somewhere in this upload's way to live (perhaps before it answers).
        let _ = api
            .client
            .post(format!("{}/v1/models/{model}/versions", api.base))
            .body(archive.clone())
            .send()
            .await;
        let waited = Instant::now();
        let status = loop {
            if let Some(status) = api.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(120),
                "{point}: the fault never fired"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(status.signal(), Some(9), "{point}: {status}");
        // Its predict servers follow it (they watch their parent).
        let waited = Instant::now();
        while !processes_mentioning(&needle).is_empty() {
            assert!(
                waited.elapsed() < Duration::from_secs(15),
                "{point}: orphans {:?}",
                processes_mentioning(&needle)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let api = Api::start_with(&data, args);
        let versions = settled_versions(&api, model).await;
        let live: Vec<_> = versions.iter().filter(|v| v["state"] == "live").collect();
        assert_eq!(live.len(), 1, "{point}: {versions:?}");
        let live = live[0]["version"].as_str().unwrap().to_owned();
        let newest = versions.last().unwrap()["version"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            live, newest,
            "{point}: the interrupted upload did not go live"
        );
        let answer = api.predict_when_live(&path, "after").await;
        assert_eq!(answer.status(), 200, "{point}");
        assert_eq!(
            answer.headers()["so1s-model-version"],
            live.as_str(),
            "{point}"
        );
        assert_eq!(leftovers(&data), Vec::<String>::new(), "{point}");
        for version in &versions {
            let name = version["version"].as_str().unwrap();
            let history = events(&api, model, name).await;
            let times: Vec<u64> = history
                .iter()
                .map(|e| e["at_ms"].as_u64().unwrap())
                .collect();
            assert!(
                times.windows(2).all(|w| w[0] <= w[1]),
                "{point}: {name}'s events out of order: {times:?}"
            );
            let last_state = history.iter().rev().find_map(|e| e["state"].as_str());
            assert_eq!(last_state, version["state"].as_str(), "{point}: {name}");
        }
        if let Some(instance) = instance {
            let listed = containers(instance);
            let expected = format!("so1s-{instance}-{model}-{live} {live} running");
            assert!(
                listed.len() == 1 && listed[0].starts_with(&expected),
                "{point}: containers {listed:?}"
            );
        }
        eprintln!("{point}: recovered, {live} live of {}", versions.len());
        api.stop();
    }
    assert!(processes_mentioning(&needle).is_empty());
}
