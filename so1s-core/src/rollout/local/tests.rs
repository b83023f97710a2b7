//! The local rollout over a backend that runs nothing: what it starts, stops and reports.

use super::*;
use crate::build::Artifact;
use crate::events::{EventLog, Stage};
use crate::model::VersionId;
use crate::rollout::{Pick, Unavailable};
use tokio::sync::broadcast;

/// Instances that are names (`v1#1`): starts fail for the versions in `failing`; an exit sent
/// on `exits` makes a supervised instance of that version exit and be restarted.
struct Fake {
    failing: Vec<VersionId>,
    log: std::sync::Mutex<Vec<String>>,
    exits: broadcast::Sender<VersionId>,
    started: std::sync::atomic::AtomicUsize,
}

impl Fake {
    fn record(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
}

#[async_trait::async_trait]
impl Instances for Fake {
    type Instance = String;

    async fn start(&self, target: &Target, _events: &Events) -> Result<Started<String>> {
        if self.failing.contains(&target.version) {
            return Err(crate::Error::Load(format!(
                "{} does not start",
                target.version
            )));
        }
        let n = 1 + self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("{}#{n}", target.version);
        self.record(format!("start {name}"));
        Ok(Started {
            instance: name.clone(),
            endpoint: format!("http://{}-{n}", target.version),
            name,
        })
    }

    async fn supervise(
        &self,
        live: Started<String>,
        mut watch: Watch,
        mut stop: oneshot::Receiver<()>,
    ) -> Option<String> {
        let mut exits = self.exits.subscribe();
        loop {
            tokio::select! {
                _ = &mut stop => return Some(live.instance),
                exit = exits.recv() => if exit.ok() == Some(watch.target().version) {
                    watch.exited("exited with code 1", Restart::ByEngine);
                    watch.ready_again(&live.endpoint, &live.name);
                },
            }
        }
    }

    async fn stop(&self, instance: String) {
        self.record(format!("stop {instance}"));
    }

    async fn shut_down(&self, instance: String) {
        self.record(format!("shut down {instance}"));
    }
}

fn rollout(failing: Vec<VersionId>) -> (LocalRollout<Fake>, Routes) {
    let fake = Fake {
        failing,
        log: Default::default(),
        exits: broadcast::channel(16).0,
        started: Default::default(),
    };
    let routes = Routes::default();
    let rule = CrashLoopRule::default();
    let rollout = LocalRollout::with(fake, routes.clone(), Duration::from_secs(1), rule);
    (rollout, routes)
}

fn log(rollout: &LocalRollout<Fake>) -> Vec<String> {
    std::mem::take(&mut rollout.instances().log.lock().unwrap())
}

fn model() -> ModelName {
    ModelName::parse("m").unwrap()
}

fn target(version: VersionId) -> Target {
    Target {
        model: model(),
        version,
        artifact: Artifact::bundle(format!("/bundles/{version}")),
    }
}

fn arm(version: VersionId, weight: u32) -> Arm {
    Arm {
        target: target(version),
        weight,
    }
}

const V1: VersionId = VersionId::FIRST;

#[tokio::test]
async fn a_deploy_switches_traffic_then_stops_the_previous_version() {
    let (rollout, routes) = rollout(vec![]);
    let v2 = V1.next();
    let events = EventLog::default();
    rollout
        .deploy(&target(V1), &events.events(Stage::Rollout))
        .await
        .unwrap();
    let live = rollout
        .deploy(&target(v2), &events.events(Stage::Rollout))
        .await
        .unwrap();
    assert_eq!(live.endpoint, "http://v2-2");
    assert_eq!(log(&rollout), ["start v1#1", "start v2#2", "stop v1#1"]);
    assert_eq!(routes.url(&model(), v2).as_deref(), Some("http://v2-2"));
    assert_eq!(routes.url(&model(), V1), None);
    assert_eq!(rollout.status(&model()).await.unwrap().target.version, v2);
    let health = rollout.health(&model()).await.unwrap();
    assert_eq!((health.version, health.status), (v2, HealthStatus::Healthy));
    assert_eq!(health.instances[0].name, "v2#2");
    assert_eq!(rollout.incidents.health(&model(), V1), None);

    // The live version again: nothing starts.
    rollout
        .deploy(&target(v2), &events.events(Stage::Rollout))
        .await
        .unwrap();
    assert!(log(&rollout).is_empty());
    assert!(
        events.text().contains("m v2 is already live"),
        "{}",
        events.text()
    );
}

#[tokio::test]
async fn a_split_keeps_what_runs_and_a_failed_one_stops_what_it_started() {
    let (v2, v3) = (V1.next(), V1.next().next());
    let (rollout, routes) = rollout(vec![v3]);
    let events = Events::discard(Stage::Rollout);
    rollout.deploy(&target(V1), &events).await.unwrap();
    let split = rollout
        .split(&model(), &[arm(V1, 90), arm(v2, 10)], &events)
        .await
        .unwrap();
    assert_eq!(split.len(), 2);
    assert_eq!(log(&rollout), ["start v1#1", "start v2#2"]);
    assert!(routes.split(&model()).unwrap().is_split());

    let error = rollout
        .split(&model(), &[arm(V1, 50), arm(v3, 50)], &events)
        .await;
    assert!(error.is_err());
    assert!(
        log(&rollout).is_empty(),
        "v1 runs already, v3 did not start"
    );
    assert_eq!(routes.split(&model()).unwrap().weight(v2), Some(10));

    rollout.deploy(&target(v2), &events).await.unwrap();
    assert_eq!(log(&rollout), ["stop v1#1"]);
    assert_eq!(routes.version(&model()), Some(v2));
}

#[tokio::test]
async fn a_failed_start_stops_the_versions_started_before_it() {
    let (v2, v3) = (V1.next(), V1.next().next());
    let (rollout, routes) = rollout(vec![v3]);
    let events = Events::discard(Stage::Rollout);
    rollout.deploy(&target(V1), &events).await.unwrap();
    let error = rollout
        .split(&model(), &[arm(v2, 50), arm(v3, 50)], &events)
        .await;
    assert!(error.unwrap_err().to_string().contains("v3 does not start"));
    assert_eq!(log(&rollout), ["start v1#1", "start v2#2", "stop v2#2"]);
    assert_eq!(routes.version(&model()), Some(V1));
    assert_eq!(rollout.status(&model()).await.unwrap().target.version, V1);
}

#[tokio::test]
async fn exits_are_reported_and_too_many_make_a_crash_loop() {
    let (rollout, _routes) = rollout(vec![]);
    let mut incidents = rollout.incidents().unwrap();
    assert!(rollout.incidents().is_none(), "given out once");
    rollout
        .deploy(&target(V1), &Events::discard(Stage::Rollout))
        .await
        .unwrap();
    let rule = CrashLoopRule::default();
    // The supervision runs (it listens for exits).
    while rollout.instances().exits.receiver_count() == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..rule.max_exits {
        rollout.instances().exits.send(V1).unwrap();
    }
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some(Incident::CrashLoop { .. })) {
        seen.push(incidents.recv().await.unwrap());
    }
    let exited =
        |i: &Incident| matches!(i, Incident::Exited { restart_in, .. } if restart_in.is_zero());
    assert_eq!(seen.iter().filter(|i| exited(i)).count(), rule.max_exits);
    let restarted = |i: &Incident| matches!(i, Incident::Restarted { endpoint, .. } if endpoint == "http://v1-1");
    assert_eq!(
        seen.iter().filter(|i| restarted(i)).count(),
        rule.max_exits - 1
    );
    let health = rollout.health(&model()).await.unwrap();
    assert_eq!(health.restarts as usize, rule.max_exits);
    assert_eq!(health.last_exit.as_deref(), Some("exited with code 1"));
    // A crash loop stays reported even though it serves again.
    incidents.recv().await.unwrap();
    let health = rollout.health(&model()).await.unwrap();
    assert_eq!(
        (health.status, health.ready),
        (HealthStatus::Unhealthy, true)
    );
}

#[tokio::test]
async fn undeploy_stops_and_shutdown_hands_each_instance_to_the_backend() {
    let (rollout, routes) = rollout(vec![]);
    let other = ModelName::parse("other").unwrap();
    let events = Events::discard(Stage::Rollout);
    rollout.deploy(&target(V1), &events).await.unwrap();
    let mut elsewhere = target(V1);
    elsewhere.model = other.clone();
    rollout.deploy(&elsewhere, &events).await.unwrap();
    rollout.undeploy(&model()).await.unwrap();
    assert_eq!(log(&rollout), ["start v1#1", "start v1#2", "stop v1#1"]);
    assert!(rollout.status(&model()).await.is_none());
    assert!(routes.version(&model()).is_none());
    rollout.shutdown().await;
    assert_eq!(log(&rollout), ["shut down v1#2"]);
    assert!(routes.version(&other).is_none());
}

#[tokio::test]
async fn a_model_scaled_to_zero_keeps_its_split_and_wakes_every_version_of_it() {
    let (rollout, routes) = rollout(vec![]);
    let v2 = V1.next();
    let log_of_events = EventLog::default();
    let events = log_of_events.events(Stage::Rollout);
    rollout
        .split(&model(), &[arm(V1, 70), arm(v2, 30)], &events)
        .await
        .unwrap();
    log(&rollout);
    assert!(routes.idle_for(&model()).is_some());
    let in_flight = routes.acquire(&model(), Pick::Any).unwrap();
    assert_eq!(routes.idle_for(&model()), None, "a request is in flight");
    drop(in_flight);

    assert!(rollout.scale_to_zero(&model(), &events).await.unwrap());
    assert_eq!(log(&rollout), ["stop v1#1", "stop v2#2"]);
    assert!(routes.is_parked(&model()));
    assert_eq!(
        routes.acquire(&model(), Pick::Any).unwrap_err(),
        Unavailable::Parked
    );
    assert_eq!(routes.idle_for(&model()), None);
    let split = Split::new([(V1, 70), (v2, 30)]).unwrap();
    assert_eq!(routes.split(&model()), Some(split.clone()));
    assert!(rollout.status(&model()).await.is_none());
    assert!(!rollout.scale_to_zero(&model(), &events).await.unwrap());

    // Two wakes at once: one starts the versions, the other finds them awake.
    let name = model();
    let (first, second) = tokio::join!(rollout.wake(&name, &events), rollout.wake(&name, &events));
    assert_eq!(
        [first.unwrap(), second.unwrap()]
            .iter()
            .filter(|w| **w)
            .count(),
        1
    );
    assert_eq!(log(&rollout), ["start v1#3", "start v2#4"]);
    assert!(!routes.is_parked(&model()));
    assert_eq!(routes.split(&model()), Some(split));
    let url = |version| routes.url(&model(), version);
    assert_eq!(url(V1).as_deref(), Some("http://v1-3"));
    assert_eq!(url(v2).as_deref(), Some("http://v2-4"));
    assert!(
        !rollout.wake(&model(), &events).await.unwrap(),
        "awake already"
    );
}

#[tokio::test]
async fn a_failed_wake_leaves_the_model_scaled_to_zero_and_a_restart_keeps_it_so() {
    let v2 = V1.next();
    let (rollout, routes) = rollout(vec![v2]);
    let log_of_events = EventLog::default();
    let events = log_of_events.events(Stage::Rollout);
    // Taken up after a restart as scaled to zero: nothing starts.
    rollout
        .resume_scaled_to_zero(&model(), &[arm(V1, 50), arm(v2, 50)], &events)
        .await
        .unwrap();
    assert!(log(&rollout).is_empty());
    assert!(routes.is_parked(&model()));
    // v2 does not start: v1, started for the wake, is stopped again.
    let error = rollout.wake(&model(), &events).await.unwrap_err();
    assert!(error.to_string().contains("does not start"), "{error}");
    assert_eq!(log(&rollout), ["start v1#1", "stop v1#1"]);
    assert!(routes.is_parked(&model()));
    // A deploy of v1 alone wakes the model on its own split.
    rollout.deploy(&target(V1), &events).await.unwrap();
    assert!(!routes.is_parked(&model()));
    assert!(!rollout.wake(&model(), &events).await.unwrap());
    rollout.undeploy(&model()).await.unwrap();
    assert_eq!(routes.split(&model()), None);
}

#[tokio::test]
async fn a_watch_degrades_health_holds_the_route_through_a_restart_and_hears_the_gateway() {
    let (routes, incidents) = (Routes::default(), Incidents::default());
    routes.switch(&model(), V1, "http://a".into());
    incidents.set_health(&model(), Health::started(V1, "pid 1"));
    let mut watch = Watch {
        target: target(V1),
        events: EventLog::default().events(Stage::Rollout),
        incidents: incidents.clone(),
        routes: routes.clone(),
        history: ExitHistory::new(CrashLoopRule::default()),
        endpoint: "http://a".into(),
        restarted: false,
    };
    let status = || incidents.health(&model(), V1).unwrap().status;

    // A failed readiness check says `degraded` at once; the next good one ends it.
    watch.checked(Some("/readyz does not answer"));
    assert_eq!(status(), HealthStatus::Degraded);
    watch.checked(None);
    assert_eq!(status(), HealthStatus::Healthy);

    // While it is started again its requests wait (the route is not ready), then follow it.
    watch.exited("was killed by signal 9 (SIGKILL)", Restart::AfterBackoff);
    assert_eq!(status(), HealthStatus::Restarting);
    assert_eq!(
        routes.acquire(&model(), Pick::Any).unwrap_err(),
        Unavailable::NotReady
    );
    watch.ready_again("http://b", "pid 2");
    assert_eq!(status(), HealthStatus::Healthy);
    let in_flight = routes.acquire(&model(), Pick::Any).unwrap();
    assert_eq!(in_flight.upstream().url, "http://b");

    // Failures in a row at the gateway condemn it: its supervision hears of it, and its
    // requests wait while it looks.
    for _ in 0..3 {
        in_flight.upstream().failed(3);
    }
    tokio::time::timeout(Duration::from_secs(1), watch.condemned())
        .await
        .expect("condemned");
    assert_eq!(
        routes.acquire(&model(), Pick::Any).unwrap_err(),
        Unavailable::NotReady
    );
    assert_eq!(status(), HealthStatus::Degraded);
    // Still answering /readyz (slow, not frozen): acquitted, served again, the count anew.
    watch.acquit();
    assert_eq!(status(), HealthStatus::Healthy);
    let again = routes.acquire(&model(), Pick::Any).unwrap();
    assert!(!again.upstream().failed(3) && !again.upstream().failed(3));
}
