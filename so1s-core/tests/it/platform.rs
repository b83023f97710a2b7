//! [`Platform`](so1s_core::platform::Platform) in process, over a real store and registry
//! and fake backends ([`FakeBuilder`](crate::support::builder::FakeBuilder),
//! [`FakeRollout`](crate::support::rollout::FakeRollout)): the rules of upload → build → live, each
//! in milliseconds and without a model.

use crate::support::{
    fake_archive, fake_artifact, fake_body, fake_endpoint, name, open_store, registry_path, v,
    TestPlatform,
};

/// The size of the archive `fake_archive("")` makes.
fn fake_archive_len() -> u64 {
    fake_archive("").len() as u64
}
use sha2::{Digest, Sha256};
use so1s_core::events::{EventKind, Stage};
use so1s_core::platform::{PlatformOptions, Retention};
use so1s_core::registry::{Registry, Transition, VersionState};
use so1s_core::rollout::{HealthStatus, Incident};
use so1s_core::store::{FsModelStore, ModelStore};
use so1s_core::Error;
use so1s_core::ModelName;
use std::time::Duration;
use VersionState::{Building, Built, Deploying, Failed, Live, Retired, Stored, Superseded};

fn options(max_concurrent_builds: usize) -> PlatformOptions {
    PlatformOptions {
        default_model: None,
        max_concurrent_builds,
        ..Default::default()
    }
}

/// The `deploy ...` calls a rollout saw.
fn deploys(t: &TestPlatform) -> Vec<String> {
    t.rollout.calls().starting_with("deploy ")
}

#[tokio::test]
async fn an_upload_is_stored_built_and_goes_live_with_its_states_and_events_in_order() {
    let t = TestPlatform::start().await;
    let record = t.upload("m", "log unpacking").await;
    let archive = crate::support::fake_archive("log unpacking");
    assert_eq!(record.state, Stored);
    assert_eq!(record.stored.version, v("v1"));
    assert_eq!(record.stored.size, archive.len() as u64);
    assert_eq!(
        record.stored.sha256,
        format!("{:x}", Sha256::digest(&archive))
    );

    let live = t.settle("m", "v1").await;
    assert_eq!(live.state, Live);
    assert_eq!(live.artifact, Some(fake_artifact("m", "v1")));
    assert!(
        live.live_since_ms.is_some() && live.error.is_none(),
        "{live:?}"
    );
    assert_eq!(t.states("m", "v1"), [Building, Built, Deploying, Live]);

    // Every event, in order: the upload's, the build's (its log line inside), the rollout's.
    let events = t.events("m", "v1");
    let mut stages: Vec<Stage> = events.iter().map(|e| e.stage).collect();
    stages.dedup();
    assert_eq!(stages, [Stage::Upload, Stage::Build, Stage::Rollout]);
    assert!(
        events[0].message.starts_with(&format!(
            "stored m v1 ({} bytes, sha256 {}",
            archive.len(),
            record.stored.sha256
        )),
        "{events:?}"
    );
    let position = |pred: &dyn Fn(&so1s_core::events::Event) -> bool| {
        events.iter().position(pred).expect("the event is there")
    };
    let building = position(&|e| e.state == Some(Building));
    let log = position(&|e| e.kind == EventKind::Log && e.message == "unpacking");
    let built = position(&|e| e.state == Some(Built));
    assert!(building < log && log < built, "{events:?}");
    assert_eq!(events[built].message, "built image fake/m:v1");
    assert_eq!(
        events.last().unwrap().message,
        "m v1 is live at http://m-v1.fake.invalid"
    );

    assert_eq!(t.builder.calls().all(), ["build m v1", "built m v1"]);
    assert_eq!(t.rollout.calls().all(), ["deploy m v1", "live m v1"]);
    assert_eq!(t.routed("m"), Some(fake_endpoint(&name("m"), v("v1"))));
    // The first model to go live is the one /inference/predict serves.
    assert_eq!(t.platform.routes().default_model(), Some(name("m")));
    let health = t.platform.health(&name("m")).await.unwrap();
    assert_eq!(
        (health.version, health.status),
        (v("v1"), HealthStatus::Healthy)
    );

    // The next upload replaces it: the old version is stopped and retired, in one step.
    t.upload("m", "").await;
    assert_eq!(t.settle("m", "v2").await.state, Live);
    assert_eq!(t.state("m", "v1"), Retired);
    let retired = t.events("m", "v1").pop().unwrap();
    assert_eq!(
        (retired.message.as_str(), retired.state),
        ("replaced by v2", Some(Retired))
    );
    assert_eq!(
        t.rollout.calls().all()[2..],
        ["deploy m v2", "stop m v1", "live m v2"]
    );
    assert_eq!(t.routed("m"), Some(fake_endpoint(&name("m"), v("v2"))));
}

#[tokio::test]
async fn a_failed_build_leaves_the_live_version_serving_and_says_why() {
    let t = TestPlatform::start().await;
    t.upload("m", "").await;
    t.settle("m", "v1").await;
    t.upload("m", "log unpacking\nfail config.json is missing")
        .await;
    let failed = t.settle("m", "v2").await;
    assert_eq!(failed.state, Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("build failed: config.json is missing")
    );
    assert_eq!(failed.artifact, None);
    assert_eq!(t.states("m", "v2"), [Building, Failed]);
    let last = t.events("m", "v2").pop().unwrap();
    assert_eq!((last.stage, last.kind), (Stage::Build, EventKind::Error));

    assert_eq!(t.live("m").as_deref(), Some("v1"));
    assert_eq!(t.routed("m"), Some(fake_endpoint(&name("m"), v("v1"))));
    assert_eq!(deploys(&t), ["deploy m v1"], "nothing was rolled out");
}

#[tokio::test]
async fn a_failed_rollout_leaves_the_live_version_serving_and_says_why() {
    let t = TestPlatform::start().await;
    t.upload("m", "").await;
    t.settle("m", "v1").await;
    t.rollout.fail_deploy("m", "v2", "not ready after 60 s");
    t.upload("m", "").await;
    let failed = t.settle("m", "v2").await;
    assert_eq!(failed.state, Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("rollout failed: not ready after 60 s; v1 keeps serving")
    );
    assert_eq!(t.states("m", "v2"), [Building, Built, Deploying, Failed]);
    assert_eq!(t.live("m").as_deref(), Some("v1"));
    assert_eq!(t.routed("m"), Some(fake_endpoint(&name("m"), v("v1"))));
    let calls = t.rollout.calls().all();
    assert_eq!(
        calls[2..],
        ["deploy m v2", "failed m v2"],
        "v1 never stopped"
    );
}

#[tokio::test]
async fn newest_wins_an_older_upload_built_after_a_newer_went_live_is_superseded() {
    let t = TestPlatform::start().await;
    t.upload("m", "wait slow").await;
    t.builder.calls().wait_for("build m v1").await;
    t.upload("m", "").await;
    assert_eq!(t.settle("m", "v2").await.state, Live);
    assert_eq!(t.state("m", "v1"), Building);

    t.builder.release("slow");
    let stays = t.wait_event("m", "v1", "went live first").await;
    assert_eq!(
        stays.message,
        "v2 went live first and is newer: v1 is superseded, not rolled out (promote it to roll \
         it out)"
    );
    assert_eq!(
        (stays.stage, stays.state),
        (Stage::Rollout, Some(Superseded))
    );
    assert_eq!(t.state("m", "v1"), Superseded);
    assert_eq!(t.live("m").as_deref(), Some("v2"));
    assert_eq!(deploys(&t), ["deploy m v2"], "v1 was never rolled out");

    // Promote rolls the built version out on purpose.
    let promoted = t.platform.promote(&name("m"), v("v1")).await.unwrap();
    assert_eq!((promoted.stored.version, promoted.state), (v("v1"), Live));
    assert_eq!(t.state("m", "v2"), Retired);
    assert_eq!(t.routed("m"), Some(fake_endpoint(&name("m"), v("v1"))));
}

#[tokio::test]
async fn versions_overtaken_while_they_wait_for_their_rollout_are_superseded_not_rolled_out() {
    let t = TestPlatform::with_options(options(4)).await;
    t.rollout.hold_deploy("m", "v1");
    t.upload("m", "").await;
    t.rollout.calls().wait_for("deploy m v1").await;
    // v2, v3 and v4 are built while v1's rollout runs: each waits for its turn.
    for version in ["v2", "v3", "v4"] {
        t.upload("m", "").await;
        t.wait_state("m", version, Built).await;
    }
    t.rollout.release("m", "v1");
    assert_eq!(t.settle("m", "v4").await.state, Live);
    for version in ["v2", "v3"] {
        assert_eq!(t.state("m", version), Superseded);
        let event = t.wait_event("m", version, "is superseded").await;
        assert_eq!(event.state, Some(Superseded));
        assert!(event.message.starts_with("v4 was built first"), "{event:?}");
    }
    assert_eq!(deploys(&t), ["deploy m v1", "deploy m v4"]);

    // A superseded version can still be promoted, or deleted.
    let promoted = t.platform.promote(&name("m"), v("v3")).await.unwrap();
    assert_eq!((promoted.stored.version, promoted.state), (v("v3"), Live));
    t.platform.delete(&name("m"), v("v2")).await.unwrap();
}

#[tokio::test]
async fn uploads_past_the_build_queue_are_refused_before_anything_is_stored() {
    let t = TestPlatform::with_options(PlatformOptions {
        max_queued_builds: 2,
        ..options(1)
    })
    .await;
    t.upload("m", "wait first").await;
    t.builder.calls().wait_for("build m v1").await;
    // v1 builds; v2 and v3 wait for the slot; a fourth upload is one too many.
    t.upload("m", "").await;
    t.upload("other", "").await;
    let refused = t
        .platform
        .upload(&name("m"), fake_body(""))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Busy(m) if m == "2 uploads already wait for a build: try again when they are built"),
        "{refused:?}"
    );
    assert_eq!(t.registry().versions(&name("m")).unwrap().len(), 2);
    let store = open_store(&t.data).await;
    assert_eq!(
        store.versions(&name("m")).await.unwrap().len(),
        2,
        "nothing stored"
    );

    // As the queue drains, uploads are taken again.
    t.builder.release("first");
    t.settle("m", "v2").await;
    t.upload("m", "").await;
    assert_eq!(t.settle("m", "v3").await.state, Live);
}

#[tokio::test]
async fn retention_removes_the_artifacts_and_archives_of_old_versions_past_the_newest_kept() {
    let t = TestPlatform::with_options(PlatformOptions {
        retention: Retention {
            keep: 1,
            prune_archives: true,
        },
        ..options(1)
    })
    .await;
    for version in ["v1", "v2", "v3", "v4"] {
        t.upload("m", "").await;
        assert_eq!(t.settle("m", version).await.state, Live);
    }
    // Retention follows v4's rollout, newest version first: its last event is awaited.
    t.wait_event("m", "v1", "retention: removed the archive")
        .await;
    let store = open_store(&t.data).await;
    // v4 serves; v3 is the one retired version kept whole; v1 and v2 lost their artifact
    // and archive, with an event each, and keep their records.
    for version in ["v1", "v2"] {
        t.wait_event("m", version, "retention: removed the archive")
            .await;
        t.wait_event("m", version, "retention: removed").await;
        let record = t.record("m", version);
        assert_eq!((record.state, record.artifact), (Retired, None));
        assert!(t
            .builder
            .calls()
            .all()
            .contains(&format!("remove fake/m:{version}")));
        let archive = store.archive(&name("m"), v(version)).await.unwrap();
        assert!(!archive.exists(), "{archive:?}");
    }
    assert_eq!(t.record("m", "v3").artifact, Some(fake_artifact("m", "v3")));
    assert!(store.archive(&name("m"), v("v3")).await.unwrap().exists());
    assert_eq!(
        store.used_bytes(),
        2 * fake_archive_len(),
        "v3's and v4's archives"
    );

    // A pruned version cannot be promoted, and says why; the kept one can.
    let refused = t.platform.promote(&name("m"), v("v1")).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("its artifact was pruned by retention"),
        "{refused}"
    );
    let back = t.platform.rollback(&name("m")).await.unwrap();
    assert_eq!(back.stored.version, v("v3"));
}

#[tokio::test]
async fn builds_past_the_limit_wait_for_a_slot_in_upload_order() {
    let t = TestPlatform::with_options(options(1)).await;
    t.upload("m", "wait first").await;
    t.builder.calls().wait_for("build m v1").await;
    t.upload("m", "").await;
    t.wait_event(
        "m",
        "v2",
        "waiting for a build slot (1 builds run at a time)",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        t.builder.calls().all(),
        ["build m v1"],
        "one build at a time"
    );
    assert_eq!(t.state("m", "v2"), Stored);

    t.builder.release("first");
    assert_eq!(t.settle("m", "v2").await.state, Live);
    assert_eq!(
        t.builder.calls().all(),
        ["build m v1", "built m v1", "build m v2", "built m v2"]
    );
    assert_eq!(t.state("m", "v1"), Retired);
}

#[tokio::test]
async fn changes_of_a_models_traffic_take_turns() {
    let t = TestPlatform::start().await;
    for version in ["v1", "v2"] {
        t.upload("m", "").await;
        t.settle("m", version).await;
    }
    t.rollout.hold_deploy("m", "v3");
    t.upload("m", "").await;
    t.rollout.calls().wait_for("deploy m v3").await;
    assert_eq!(t.state("m", "v3"), Deploying);

    // A rollback asked for meanwhile waits for the rollout of v3 to end...
    let rollback = {
        let platform = t.platform.clone();
        tokio::spawn(async move { platform.rollback(&name("m")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !rollback.is_finished(),
        "the rollback did not wait its turn"
    );
    assert_eq!(deploys(&t), ["deploy m v1", "deploy m v2", "deploy m v3"]);
    // ... and so does a delete of the retired v1.
    let delete = {
        let platform = t.platform.clone();
        tokio::spawn(async move { platform.delete(&name("m"), v("v1")).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!delete.is_finished(), "the delete did not wait its turn");
    assert_eq!(t.state("m", "v1"), Retired);

    // Then it hands traffic back to the version v3 replaced.
    t.rollout.release("m", "v3");
    let back = rollback.await.unwrap().unwrap();
    assert_eq!((back.stored.version, back.state), (v("v2"), Live));
    delete.await.unwrap().unwrap();
    let calls = t.rollout.calls().all();
    let v3_live = calls.iter().position(|c| c == "live m v3").unwrap();
    assert_eq!(
        calls[v3_live..],
        ["live m v3", "deploy m v2", "stop m v3", "live m v2"]
    );
    assert_eq!(t.state("m", "v3"), Retired);
    assert!(t.registry().version(&name("m"), v("v1")).is_err());
}

#[tokio::test]
async fn rollback_promote_and_delete_refuse_what_they_cannot_do() {
    let t = TestPlatform::start().await;
    let m = name("m");
    t.upload("m", "").await;
    t.settle("m", "v1").await;
    let conflict = |e: Error, text: &str| {
        assert!(matches!(e, Error::Conflict(_)), "{e:?}");
        assert!(e.to_string().contains(text), "{e}");
    };
    conflict(
        t.platform.rollback(&m).await.unwrap_err(),
        "m has no earlier version that served to roll back to",
    );
    assert!(matches!(
        t.platform.rollback(&name("nope")).await,
        Err(Error::NotFound(_))
    ));

    t.upload("m", "").await;
    t.settle("m", "v2").await;
    t.upload("m", "fail broken").await;
    assert_eq!(t.settle("m", "v3").await.state, Failed);

    // Rollback: back to the version that served before.
    let back = t.platform.rollback(&m).await.unwrap();
    assert_eq!((back.stored.version, back.state), (v("v1"), Live));
    assert_eq!(t.state("m", "v2"), Retired);
    t.wait_event("m", "v2", "rolling back to v1").await;

    // Promote: built or retired versions only; the live one is already there.
    conflict(
        t.platform.promote(&m, v("v3")).await.unwrap_err(),
        "m v3 is failed: only built, retired or superseded versions with their artifact can be promoted",
    );
    let deploys_before = deploys(&t).len();
    let same = t.platform.promote(&m, v("v1")).await.unwrap();
    assert_eq!(same.state, Live);
    assert_eq!(deploys(&t).len(), deploys_before, "nothing rolled out");
    assert!(matches!(
        t.platform.promote(&m, v("v9")).await,
        Err(Error::NotFound(_))
    ));
    let promoted = t.platform.promote(&m, v("v2")).await.unwrap();
    assert_eq!((promoted.stored.version, promoted.state), (v("v2"), Live));

    // Delete: not what serves; a deleted version's files, artifact and records go.
    conflict(
        t.platform.delete(&m, v("v2")).await.unwrap_err(),
        "m v2 is live: only failed, built, retired or superseded versions can be deleted",
    );
    t.platform.delete(&m, v("v3")).await.unwrap();
    assert!(matches!(
        t.registry().version(&m, v("v3")),
        Err(Error::NotFound(_))
    ));
    assert!(!t.data.join("store/models/m/v3").exists());
    t.platform.delete(&m, v("v1")).await.unwrap();
    assert_eq!(
        t.builder.calls().starting_with("remove "),
        ["remove fake/m:v1"]
    );
    assert!(matches!(
        t.platform.delete(&m, v("v1")).await,
        Err(Error::NotFound(_))
    ));

    // Nor what is being built; and numbers are never reused.
    t.upload("m", "wait hold").await;
    t.builder.calls().wait_for("build m v4").await;
    conflict(
        t.platform.delete(&m, v("v4")).await.unwrap_err(),
        "m v4 is building",
    );
    t.builder.release("hold");
    assert_eq!(t.settle("m", "v4").await.state, Live);
}

#[tokio::test]
async fn exits_are_recorded_and_a_crash_loop_hands_traffic_back_to_the_previous_version() {
    let t = TestPlatform::start().await;
    let m = name("m");
    for version in ["v1", "v2", "v3"] {
        t.upload("m", "").await;
        t.settle("m", version).await;
    }
    t.rollout.report(Incident::Exited {
        model: m.clone(),
        version: v("v3"),
        cause: "killed by signal 9".into(),
        restart_in: Duration::from_millis(100),
    });
    let exited = t
        .wait_event(
            "m",
            "v3",
            "m v3 killed by signal 9; starting it again in 100 ms",
        )
        .await;
    assert_eq!(exited.kind, EventKind::Error);
    let record = t.record("m", "v3");
    assert_eq!(
        (record.restarts, record.last_exit.as_deref()),
        (1, Some("killed by signal 9"))
    );
    t.rollout.report(Incident::Restarted {
        model: m.clone(),
        version: v("v3"),
        endpoint: "http://elsewhere.invalid".into(),
    });
    t.wait_event("m", "v3", "m v3 serves again at http://elsewhere.invalid")
        .await;
    assert_eq!(t.live("m").as_deref(), Some("v3"));

    t.rollout.report(Incident::CrashLoop {
        model: m.clone(),
        version: v("v3"),
        exits: 5,
        window: Duration::from_secs(120),
        cause: "killed by signal 9".into(),
    });
    let failed = t.wait_state("m", "v3", Failed).await;
    assert_eq!(
        failed.error.as_deref(),
        Some(
            "unhealthy: exited 5 times within 120 s (last: killed by signal 9); rolled back to v2"
        )
    );
    // The version that served last before it, not the oldest.
    assert_eq!(t.live("m").as_deref(), Some("v2"));
    assert_eq!(t.state("m", "v1"), Retired);
    assert_eq!(t.routed("m"), Some(fake_endpoint(&m, v("v2"))));
    assert_eq!(deploys(&t).last().unwrap(), "deploy m v2");
    t.wait_event(
        "m",
        "v3",
        "unhealthy: exited 5 times within 120 s (last: killed by signal 9): rolling back to v2",
    )
    .await;
    t.wait_event("m", "v2", "taking traffic back from v3, which is unhealthy")
        .await;
    assert_eq!(t.platform.health(&m).await.unwrap().version, v("v2"));
}

#[tokio::test]
async fn a_crash_loop_without_an_earlier_version_keeps_the_version_and_says_so() {
    let t = TestPlatform::start().await;
    t.upload("m", "").await;
    t.settle("m", "v1").await;
    t.rollout.report(Incident::CrashLoop {
        model: name("m"),
        version: v("v1"),
        exits: 5,
        window: Duration::from_secs(120),
        cause: "exited with code 1".into(),
    });
    let said = t
        .wait_event("m", "v1", "there is no earlier version to hand traffic to")
        .await;
    assert_eq!(said.kind, EventKind::Error);
    assert!(
        said.message
            .starts_with("unhealthy: exited 5 times within 120 s (last: exited with code 1); "),
        "{}",
        said.message
    );
    assert_eq!(t.state("m", "v1"), Live);
    assert_eq!(deploys(&t), ["deploy m v1"]);
}

/// What a previous run left in `data`: `m` v1 stored and built.
async fn built_v1(data: &std::path::Path, m: &ModelName) -> (FsModelStore, Registry) {
    let store = open_store(data).await;
    let registry = Registry::open(registry_path(data)).unwrap();
    let v1 = store.put(m, fake_body("")).await.unwrap();
    registry.add(v1).unwrap();
    let built =
        Transition::to(Built, Stage::Build, "built").with_artifact(fake_artifact("m", "v1"));
    registry.apply(m, v("v1"), built).unwrap();
    (store, registry)
}

#[tokio::test]
async fn recover_brings_the_live_version_back_and_builds_a_version_left_building_again() {
    let data = tempfile::tempdir().unwrap();
    let m = name("m");
    {
        // What a crash left: v1 live, v2 caught in its build.
        let (store, registry) = built_v1(data.path(), &m).await;
        registry.go_live(&m, v("v1"), "live").unwrap();
        let v2 = store.put(&m, fake_body("log again")).await.unwrap();
        registry.add(v2).unwrap();
        let building = Transition::to(Building, Stage::Build, "building m v2");
        registry.apply(&m, v("v2"), building).unwrap();
    }
    let t = TestPlatform::open(data.path(), options(4)).await;
    t.platform.recover().await;
    assert_eq!(
        t.rollout.calls().all()[..2],
        ["resume m v1", "live m v1"],
        "the live version is back before anything else rolls out"
    );
    assert_eq!(t.settle("m", "v2").await.state, Live);
    t.wait_event(
        "m",
        "v2",
        "interrupted by a restart while building: building again",
    )
    .await;
    t.wait_event(
        "m",
        "v1",
        "api server restarted: bringing the live version back",
    )
    .await;
    assert_eq!(t.state("m", "v1"), Retired);
    assert_eq!(
        t.builder.calls().all(),
        ["clean-up", "build m v2", "built m v2"]
    );
    assert_eq!(
        t.states("m", "v2"),
        [Building, Building, Built, Deploying, Live]
    );
}

#[tokio::test]
async fn recover_records_a_version_only_the_store_has_and_forgets_one_whose_files_are_gone() {
    let data = tempfile::tempdir().unwrap();
    let m = name("m");
    {
        // v1 is in the registry, built, but its files were deleted (an interrupted delete).
        let (store, _registry) = built_v1(data.path(), &m).await;
        store.delete(&m, v("v1")).await.unwrap();
        // v2 was stored, and the crash came before the registry heard of it.
        store.put(&m, fake_body("")).await.unwrap();
    }
    let t = TestPlatform::open(data.path(), options(4)).await;
    t.platform.recover().await;
    assert_eq!(t.settle("m", "v2").await.state, Live);
    t.wait_event("m", "v2", "recorded after a restart").await;
    assert!(matches!(
        t.registry().version(&m, v("v1")),
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        t.builder.calls().all(),
        ["clean-up", "remove fake/m:v1", "build m v2", "built m v2"]
    );
}
