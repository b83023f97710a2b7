//! The whole loop on the docker backend, against the real binaries and a real engine:
//! `so1s serve --backend docker` builds an image per version and runs each live version as a
//! container. It runs when `DOCKER_HOST` is set at build time (`cfg(so1s_docker)`,
//! scripts/test.sh sets it) and is ignored with the reason otherwise; then an engine that
//! does not answer fails it.

mod common;

use common::api::{
    broken_model_archive, kill_under_load, minilm_archive, minilm_archive_with_links,
    swap_under_load, Api,
};
use common::{containers, docker_cli, docker_engine, growth, signal, unique, DockerCleanup, MIB};
use std::time::Instant;

#[tokio::test]
#[cfg_attr(
    not(so1s_docker),
    ignore = "needs a Docker engine: set DOCKER_HOST when building the tests (scripts/test.sh does, from scripts/docker-engine.sh start)"
)]
async fn docker_backend_swaps_refuses_rolls_back_and_adopts_on_restart() {
    docker_engine().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (instance, model) = (unique("e2e"), unique("minilm"));
    let _cleanup = DockerCleanup {
        instance: instance.clone(),
        model: model.clone(),
    };
    let args = ["--backend", "docker", "--instance", instance.as_str()];
    let api = Api::start_with(&data, &args);
    let named = format!("/inference/{model}/predict");

    // Nothing is live yet.
    let response = api.predict("/inference/predict", "anyone?").await.unwrap();
    assert_eq!(response.status(), 503);

    // v1: an image is built and a container goes live behind the gateway.
    let started = Instant::now();
    let accepted = api.upload(&model, minilm_archive()).await;
    assert_eq!(accepted["version"], "v1");
    let record = api.settle(&model, "v1").await;
    let upload_to_live = started.elapsed();
    assert_eq!(record["state"], "live", "{record}");
    assert_eq!(record["artifact"]["kind"], "image", "{record}");
    assert_eq!(
        record["artifact"]["reference"],
        format!("so1s/{instance}/{model}:v1")
    );
    let seed = api.predict_json("/inference/predict", "Hello world").await;
    let cosine = common::hello_world_cosine_of(&seed);
    assert!(cosine >= 0.9999, "not MiniLM: {cosine}");
    let response = api.predict(&named, "Hello world").await.unwrap();
    assert_eq!(response.headers()["so1s-model-version"], "v1");
    let listed = containers(&instance);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].starts_with(&format!("so1s-{instance}-{model}-v1 v1 running")));

    // v2 swaps in under continuous traffic: no request fails, v1's container goes.
    let started = Instant::now();
    let (failed, sent, seen) = swap_under_load(&api, &model, minilm_archive(), "v2").await;
    let swap = started.elapsed();
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the swap"
    );
    assert!(
        seen.iter().any(|v| v == "v1") && seen.last().map(String::as_str) == Some("v2"),
        "{seen:?}"
    );
    let listed = containers(&instance);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains(" v2 running"), "{listed:?}");
    eprintln!(
        "FIGURES docker backend (debug build): v1 upload to live {:.1} s; v2 upload to live \
         under load {:.1} s ({sent} requests, 0 failed)",
        upload_to_live.as_secs_f64(),
        swap.as_secs_f64() - 1.0
    );

    // A broken model fails its build with the cause, and v2 keeps serving.
    let accepted = api.upload(&model, broken_model_archive()).await;
    assert_eq!(accepted["version"], "v3");
    let record = api.settle(&model, "v3").await;
    assert_eq!(record["state"], "failed", "{record}");
    let error = record["error"].as_str().unwrap();
    assert!(error.contains("the weights have no embeddings"), "{error}");
    let response = api.predict(&named, "still there?").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["so1s-model-version"], "v2");
    assert!(docker_cli(&["images", "-q", &format!("so1s/{instance}/{model}:v3")]).is_empty());

    // Two links to `.` would make a build context that follows links explode: refused at
    // unpacking, before any context exists, in bounded memory.
    let looping = minilm_archive_with_links(&[("a", "."), ("b", ".")]);
    let grown = growth(api.child.id(), async {
        let accepted = api.upload(&model, looping).await;
        assert_eq!(accepted["version"], "v4");
        let record = api.settle(&model, "v4").await;
        assert_eq!(record["state"], "failed", "{record}");
        let error = record["error"].as_str().unwrap();
        assert!(error.contains("points to a folder"), "{error}");
    })
    .await;
    eprintln!("docker backend, two links to `.`: +{} MiB", grown / MIB);
    assert!(grown < 150 * MIB, "grew {} MiB", grown / MIB);
    assert!(docker_cli(&["images", "-q", &format!("so1s/{instance}/{model}:v4")]).is_empty());

    // Rollback: v1's image runs again.
    let response = api
        .client
        .post(format!("{}/v1/models/{model}/rollback", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let response = api.predict(&named, "after rollback").await.unwrap();
    assert_eq!(response.headers()["so1s-model-version"], "v1");
    let before_restart = containers(&instance);
    assert_eq!(before_restart.len(), 1, "{before_restart:?}");
    assert!(
        before_restart[0].contains(" v1 running"),
        "{before_restart:?}"
    );

    // Restart: the container outlives the api server and is adopted, not duplicated.
    api.stop();
    assert_eq!(containers(&instance), before_restart, "still running");
    let api = Api::start_with(&data, &args);
    let response = api.predict_when_live(&named, "Hello world").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["so1s-model-version"], "v1");
    assert_eq!(containers(&instance), before_restart, "the same container");
    let events = api.events(&model, "v1").await;
    assert!(events.contains("adopted running container"), "{events}");

    // kill -9 of the container's process under 8 clients: the engine restarts it on the
    // port so1s chose, the gateway holds the requests meanwhile (none fails), and the
    // status says what happened.
    let container = format!("so1s-{instance}-{model}-v1");
    let pid = docker_cli(&["inspect", "-f", "{{.State.Pid}}", &container]);
    let port = docker_cli(&["port", &container, "8080/tcp"]);
    kill_under_load(&api, &model, &pid, "v1", "docker backend", |m| {
        m["health"]["restarts"] == 1 && m["health"]["ready"] == true
    })
    .await;
    for i in 0..30 {
        let response = api.predict(&named, &format!("after {i}")).await.unwrap();
        assert_eq!(response.status(), 200, "request {i} after the restart");
    }
    assert_eq!(
        docker_cli(&["port", &container, "8080/tcp"]),
        port,
        "the same port"
    );
    let view = api
        .model_until(&model, std::time::Duration::from_secs(10), |m| {
            m["health"]["restarts"] == 1 && m["health"]["ready"] == true
        })
        .await;
    let cause = view["health"]["last_exit"].as_str().unwrap();
    assert!(cause.contains("signal 9"), "{cause}");
    assert_eq!(api.version(&model, "v1").await["restarts"], 1);

    // Four more deaths within two minutes: a crash loop, and traffic goes back to v2.
    for exits in 2..=5 {
        let pid = docker_cli(&["inspect", "-f", "{{.State.Pid}}", &container]);
        signal(&pid, "KILL");
        if exits < 5 {
            api.model_until(&model, std::time::Duration::from_secs(30), |m| {
                m["health"]["restarts"] == exits && m["health"]["ready"] == true
            })
            .await;
        }
    }
    let view = api
        .model_until(&model, std::time::Duration::from_secs(60), |m| {
            m["live_version"] == "v2"
        })
        .await;
    assert_eq!(view["health"]["version"], "v2", "{view}");
    let v1 = api.version(&model, "v1").await;
    assert_eq!(v1["state"], "failed", "{v1}");
    assert!(
        v1["error"].as_str().unwrap().contains("rolled back to v2"),
        "{v1}"
    );
    let response = api.predict(&named, "who answers?").await.unwrap();
    assert_eq!(response.headers()["so1s-model-version"], "v2");
    let listed = containers(&instance);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains(" v2 running"), "{listed:?}");
    api.stop();
}

#[tokio::test]
#[cfg_attr(
    not(so1s_docker),
    ignore = "needs a Docker engine: set DOCKER_HOST when building the tests (scripts/test.sh does, from scripts/docker-engine.sh start)"
)]
async fn docker_backend_scales_an_idle_model_to_zero_and_wakes_it_for_every_request() {
    docker_engine().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (instance, model) = (unique("idle"), unique("minilm"));
    let _cleanup = DockerCleanup {
        instance: instance.clone(),
        model: model.clone(),
    };
    let args = ["--backend", "docker", "--instance", instance.as_str()];
    let api = Api::start_with(&data, &args);
    api.upload(&model, minilm_archive()).await;
    assert_eq!(api.settle(&model, "v1").await["state"], "live");
    assert_eq!(containers(&instance).len(), 1);

    // Idle for a second: the container is removed, the image stays.
    let set = api
        .client
        .patch(format!("{}/v1/models/{model}", api.base))
        .json(&serde_json::json!({"idle_after_s": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    api.scaled_to_zero(&model, "v1", 1).await;
    assert_eq!(containers(&instance), Vec::<String>::new());
    let image = docker_cli(&["images", "-q", &format!("so1s/{instance}/{model}:v1")]);
    assert!(!image.trim().is_empty(), "the image is kept");

    // Eight requests at once wake it from the image: every one gets MiniLM's answer.
    let started = Instant::now();
    let answers = api
        .predict_at_once(&format!("/inference/{model}/predict"), 8)
        .await;
    let woke = started.elapsed();
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        assert!(common::hello_world_cosine_of(&body) > 0.9999, "{body}");
    }
    let listed = containers(&instance);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].contains(" v1 running"), "{listed:?}");
    assert_eq!(api.model(&model).await["scale"]["wakeups"], 1);
    eprintln!(
        "FIGURES docker backend (debug build): wake from zero to 8 answers {:.2} s",
        woke.as_secs_f64()
    );
    api.stop();
}

#[tokio::test]
#[cfg_attr(
    not(so1s_docker),
    ignore = "needs a Docker engine: set DOCKER_HOST when building the tests (scripts/test.sh does, from scripts/docker-engine.sh start)"
)]
async fn two_installations_on_one_engine_keep_apart_with_the_same_model_name() {
    docker_engine().await;
    let tmp = tempfile::tempdir().unwrap();
    let model = unique("shared");
    let (data_a, data_b) = (tmp.path().join("team-a"), tmp.path().join("team-b"));
    // No --instance: each data dir makes its own id on its first start.
    let args = ["--backend", "docker", "--gateway-timeout-slack-ms", "1500"];
    let (a, b) = (
        Api::start_with(&data_a, &args),
        Api::start_with(&data_b, &args),
    );
    let instance = |data: &std::path::Path| {
        std::fs::read_to_string(data.join("instance"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let (ia, ib) = (instance(&data_a), instance(&data_b));
    assert!(
        ia.starts_with("team-a-") && ib.starts_with("team-b-"),
        "{ia} {ib}"
    );
    let _cleanup = [&ia, &ib].map(|instance| DockerCleanup {
        instance: instance.clone(),
        model: model.clone(),
    });
    let (up_a, up_b) = tokio::join!(
        a.upload(&model, minilm_archive()),
        b.upload(&model, minilm_archive())
    );
    assert_eq!(
        (&up_a["version"], &up_b["version"]),
        (&"v1".into(), &"v1".into())
    );
    assert_eq!(a.settle(&model, "v1").await["state"], "live");
    assert_eq!(b.settle(&model, "v1").await["state"], "live");
    let image = |instance: &str, version: &str| {
        docker_cli(&[
            "images",
            "-q",
            &format!("so1s/{instance}/{model}:{version}"),
        ])
    };
    assert!(!image(&ia, "v1").is_empty() && !image(&ib, "v1").is_empty());
    assert_eq!(containers(&ia).len(), 1);
    assert!(containers(&ib)[0].starts_with(&format!("so1s-{ib}-{model}-v1 v1 running")));

    // A's new version replaces A's container only; B serves on, from its own.
    a.upload(&model, minilm_archive()).await;
    assert_eq!(a.settle(&model, "v2").await["state"], "live");
    let listed = containers(&ia);
    assert!(
        listed.len() == 1 && listed[0].starts_with(&format!("so1s-{ia}-{model}-v2")),
        "{listed:?}"
    );
    assert!(containers(&ib)[0].starts_with(&format!("so1s-{ib}-{model}-v1 v1 running")));
    let path = format!("/inference/{model}/predict");
    let answer = b.predict(&path, "still mine?").await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["so1s-model-version"], "v1");

    // Deleting A's v1 removes A's image, not B's of the same name and version.
    let deleted = a
        .client
        .delete(format!("{}/v1/models/{model}/versions/v1", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(image(&ia, "v1").is_empty());
    assert!(!image(&ib, "v1").is_empty());
    assert_eq!(b.predict(&path, "and now?").await.unwrap().status(), 200);

    // B's container frozen (SIGSTOP): its clients get 504 at the model's timeout, then B
    // has the engine restart it; A serves on throughout.
    for i in 0..40 {
        assert_eq!(
            b.predict(&path, &format!("warm {i}"))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let container = format!("so1s-{ib}-{model}-v1");
    let pid = docker_cli(&["inspect", "-f", "{{.State.Pid}}", &container]);
    signal(&pid, "STOP");
    let texts: Vec<String> = (0..4).map(|i| format!("frozen {i}")).collect();
    let frozen = futures::future::join_all(texts.iter().map(|text| b.predict(&path, text)));
    let (frozen, from_a) = tokio::join!(frozen, a.predict(&path, "A, meanwhile"));
    assert_eq!(from_a.unwrap().status(), 200);
    for answer in frozen {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 504);
        let body = answer.text().await.unwrap();
        assert!(body.contains("did not answer within"), "{body}");
    }
    let view = b
        .model_until(&model, std::time::Duration::from_secs(30), |m| {
            m["health"]["ready"] == true && m["health"]["restarts"] == 1
        })
        .await;
    let cause = view["health"]["last_exit"].as_str().unwrap();
    assert!(cause.contains("stopped answering requests"), "{cause}");
    let back = b.predict(&path, "after the restart").await.unwrap();
    assert_eq!(back.status(), 200);
    a.stop();
    b.stop();
}
