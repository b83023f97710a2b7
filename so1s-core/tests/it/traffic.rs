//! The platform's rules for traffic splits, in process over a real store and registry and
//! the fake backends: who goes live, what an upload does while a split stands, what a crash
//! loop of one of its versions does, and what a restart brings back.

use crate::support::{fake_endpoint, name, v, TestPlatform};
use so1s_core::platform::PlatformOptions;
use so1s_core::registry::VersionState::{Built, Failed, Live, Retired};
use so1s_core::rollout::{Incident, Pick, Split};
use so1s_core::Error;
use std::time::Duration;

fn split(arms: &[(&str, u32)]) -> Split {
    Split::new(arms.iter().map(|(version, weight)| (v(version), *weight))).unwrap()
}

/// `m` with v1 retired and v2 live, then split v1 70 / v2 30.
async fn split_m() -> TestPlatform {
    let t = TestPlatform::start().await;
    for version in ["v1", "v2"] {
        t.upload("m", "").await;
        t.settle("m", version).await;
    }
    let records = t
        .platform
        .set_traffic(&name("m"), &split(&[("v1", 70), ("v2", 30)]))
        .await
        .unwrap();
    let weights: Vec<_> = records.iter().map(|r| (r.state, r.weight)).collect();
    assert_eq!(weights, [(Live, Some(70)), (Live, Some(30))]);
    t
}

#[tokio::test]
async fn a_split_makes_its_versions_live_with_their_weights_and_routes_by_them() {
    let t = split_m().await;
    let m = name("m");
    assert_eq!(t.live("m").as_deref(), Some("v1"), "the heaviest");
    assert_eq!(
        t.platform.traffic(&m).unwrap(),
        Some(split(&[("v1", 70), ("v2", 30)]))
    );
    assert_eq!(
        t.rollout.calls().starting_with("split "),
        ["split m v1=70 v2=30"]
    );
    let routes = t.platform.routes();
    let to_v1 = (0..100)
        .filter(|_| routes.acquire(&m, Pick::Any).unwrap().upstream().version == v("v1"))
        .count();
    assert_eq!(to_v1, 70);
    let named = routes.acquire(&m, Pick::Version(v("v2"))).unwrap();
    assert_eq!(named.upstream().url, fake_endpoint(&m, v("v2")));
    t.wait_event(
        "m",
        "v1",
        "live in m's traffic split (70% of requests: v1 70%, v2 30%)",
    )
    .await;

    // New weights: no version starts or stops, each records its new share.
    let stops = t.rollout.calls().starting_with("stop ").len();
    t.platform
        .set_traffic(&m, &split(&[("v1", 20), ("v2", 80)]))
        .await
        .unwrap();
    assert_eq!(t.live("m").as_deref(), Some("v2"));
    t.wait_event("m", "v1", "goes from 70% to 20% (v1 20%, v2 80%)")
        .await;
    assert_eq!(t.rollout.calls().starting_with("stop ").len(), stops);
    assert!(t.platform.health(&m).await.is_some());
}

#[tokio::test]
async fn what_cannot_take_traffic_is_refused_and_changes_nothing() {
    let t = split_m().await;
    let m = name("m");
    t.rollout.fail_deploy("m", "v2", "no room");
    let err = t
        .platform
        .set_traffic(&m, &split(&[("v1", 50), ("v2", 50)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no room"), "{err}");
    let err = t
        .platform
        .set_traffic(&m, &split(&[("v1", 50), ("v7", 50)]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    t.upload("m", "fail broken").await;
    assert_eq!(t.settle("m", "v3").await.state, Failed);
    let err = t
        .platform
        .set_traffic(&m, &split(&[("v1", 50), ("v3", 50)]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("m v3 is failed: only live, built, retired or superseded"),
        "{err}"
    );
    assert_eq!(
        t.platform.traffic(&m).unwrap(),
        Some(split(&[("v1", 70), ("v2", 30)]))
    );
    // A version in the split is live: it cannot be deleted.
    let err = t.platform.delete(&m, v("v2")).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn an_upload_waits_built_while_the_split_stands_and_promote_collapses_it() {
    let t = split_m().await;
    let m = name("m");
    t.upload("m", "").await;
    t.wait_event(
        "m",
        "v3",
        "m's traffic is split (v1 70%, v2 30%): v3 stays built",
    )
    .await;
    assert_eq!(t.state("m", "v3"), Built);
    assert_eq!(t.live("m").as_deref(), Some("v1"));

    // v3 joins as a canary; then promote v2 (a live version of the split) to all traffic.
    t.platform
        .set_traffic(&m, &split(&[("v1", 80), ("v2", 10), ("v3", 10)]))
        .await
        .unwrap();
    assert_eq!(t.state("m", "v3"), Live);
    let stops = t.rollout.calls().starting_with("stop ").len();
    let promoted = t.platform.promote(&m, v("v2")).await.unwrap();
    assert_eq!((promoted.state, promoted.weight), (Live, Some(100)));
    assert_eq!(
        t.platform.traffic(&m).unwrap(),
        Some(Split::single(v("v2")))
    );
    assert_eq!((t.state("m", "v1"), t.state("m", "v3")), (Retired, Retired));
    assert_eq!(t.routed("m"), Some(fake_endpoint(&m, v("v2"))));
    let stopped = t.rollout.calls().starting_with("stop ");
    assert_eq!(stopped[stops..], ["stop m v1", "stop m v3"]);

    // Without a split, uploads go live again.
    t.upload("m", "").await;
    assert_eq!(t.settle("m", "v4").await.state, Live);
}

#[tokio::test]
async fn a_version_of_the_split_that_crash_loops_is_taken_out() {
    let t = split_m().await;
    let m = name("m");
    t.rollout.report(Incident::CrashLoop {
        model: m.clone(),
        version: v("v2"),
        exits: 5,
        window: Duration::from_secs(120),
        cause: "exited with code 1".into(),
    });
    let failed = t.wait_state("m", "v2", Failed).await;
    assert!(
        failed.error.unwrap().ends_with("; taken out of the split"),
        "{:?}",
        t.events("m", "v2")
    );
    assert_eq!(
        t.platform.traffic(&m).unwrap(),
        Some(Split::single(v("v1")))
    );
    assert_eq!(t.state("m", "v1"), Live);
    assert_eq!(t.routed("m"), Some(fake_endpoint(&m, v("v1"))));
}

#[tokio::test]
async fn a_restart_brings_every_version_of_the_split_back() {
    let data = tempfile::tempdir().unwrap();
    {
        let t = TestPlatform::open(data.path(), PlatformOptions::default()).await;
        for version in ["v1", "v2"] {
            t.upload("m", "").await;
            t.settle("m", version).await;
        }
        t.platform
            .set_traffic(&name("m"), &split(&[("v1", 60), ("v2", 40)]))
            .await
            .unwrap();
    }
    let t = TestPlatform::open(data.path(), PlatformOptions::default()).await;
    t.platform.recover().await;
    assert_eq!(
        t.rollout.calls().all()[..4],
        [
            "resume m v1",
            "live m v1",
            "split m v1=60 v2=40",
            "live m v1=60 v2=40"
        ]
    );
    assert_eq!(
        t.platform.routes().split(&name("m")),
        Some(split(&[("v1", 60), ("v2", 40)]))
    );
    t.wait_event("m", "v1", "bringing the traffic split back: v1 60%, v2 40%")
        .await;
}
