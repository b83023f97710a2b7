//! Why a pod cannot run or serve, read from its status alone: the one classifier of pod
//! states the builder (its Job's pods) and the rollout (a version's pods) both report with.
//!
//! [`container_problems`] reads each container's state, init containers first: waiting for
//! something other than starting up (an image that cannot be pulled, a crash loop, a missing
//! Secret...), a run that ended with a non-zero exit code (out of memory included), a
//! previous run that ended (the container was restarted). [`problems`] adds the pod's own
//! `Ready` condition when it is `False` and says why. Nothing here talks to a cluster.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use std::fmt;

/// Waiting reasons of a container that is only starting: not problems.
const STARTING: &[&str] = &["ContainerCreating", "PodInitializing"];

/// Waiting reasons that will not get better by waiting.
const HOPELESS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
];

/// The termination reason of a container the kernel killed for its memory.
const OUT_OF_MEMORY: &str = "OOMKilled";

/// One of a pod's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The container's name.
    pub name: String,
    /// Whether it is an init container.
    pub init: bool,
}

/// What is wrong with a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A container waits for something other than starting up (`ImagePullBackOff`,
    /// `CrashLoopBackOff`, `CreateContainerConfigError`...).
    Waiting {
        /// The container.
        container: ContainerRef,
        /// The kubelet's reason (`Waiting` when it gave none).
        reason: String,
        /// The kubelet's message (empty when it gave none).
        message: String,
    },
    /// A container's current run ended with a non-zero exit code.
    Failed {
        /// The container.
        container: ContainerRef,
        /// The kubelet's reason (`OOMKilled`; `Error` when it gave none).
        reason: String,
        /// The exit code.
        exit_code: i32,
    },
    /// A container's previous run ended: it was restarted.
    LastExit {
        /// The container.
        container: ContainerRef,
        /// The kubelet's reason (`OOMKilled`, `Error`; `terminated` when it gave none).
        reason: String,
        /// The exit code of that run.
        exit_code: i32,
    },
    /// The pod's `Ready` condition is `False`, with the kubelet's message.
    NotReady {
        /// Why (`containers with unready status: [predict]`).
        message: String,
    },
}

/// A [`Problem`] of the pod named `pod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProblem {
    /// The pod's name (`?` when it has none).
    pub pod: String,
    /// What is wrong with it.
    pub problem: Problem,
}

impl PodProblem {
    /// The container the problem is about (none for the pod's readiness).
    pub fn container(&self) -> Option<&ContainerRef> {
        match &self.problem {
            Problem::Waiting { container, .. }
            | Problem::Failed { container, .. }
            | Problem::LastExit { container, .. } => Some(container),
            Problem::NotReady { .. } => None,
        }
    }

    /// The reason a container waits, for a [`Problem::Waiting`].
    pub fn waiting_reason(&self) -> Option<&str> {
        match &self.problem {
            Problem::Waiting { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// A state that will not get better by waiting: an image that cannot be pulled, a crash
    /// loop, a container whose configuration cannot be made (a missing Secret...).
    pub fn is_hopeless(&self) -> bool {
        self.waiting_reason()
            .is_some_and(|reason| HOPELESS.contains(&reason))
    }

    /// A run the kernel ended for its memory (`OOMKilled`), now or before a restart.
    pub fn is_out_of_memory(&self) -> bool {
        match &self.problem {
            Problem::Failed { reason, .. } | Problem::LastExit { reason, .. } => {
                reason == OUT_OF_MEMORY
            }
            _ => false,
        }
    }
}

impl fmt::Display for PodProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pod = &self.pod;
        match &self.problem {
            Problem::Waiting {
                container,
                reason,
                message,
            } => write!(
                f,
                "pod {pod} container {}: {reason}: {message}",
                container.name
            ),
            Problem::Failed {
                container,
                reason,
                exit_code,
            } => write!(
                f,
                "pod {pod} container {}: {reason}, exit code {exit_code}",
                container.name
            ),
            Problem::LastExit {
                container,
                reason,
                exit_code,
            } => write!(
                f,
                "pod {pod} container {}: last exit {exit_code} ({reason})",
                container.name
            ),
            Problem::NotReady { message } => write!(f, "pod {pod} not ready: {message}"),
        }
    }
}

/// The problems of a pod's containers, init containers first, each container's in the
/// order waiting, failed, last exit.
pub fn container_problems(pod: &Pod) -> Vec<PodProblem> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let init = status.init_container_statuses.iter().flatten();
    let main = status.container_statuses.iter().flatten();
    init.map(|c| (c, true))
        .chain(main.map(|c| (c, false)))
        .flat_map(|(container, init)| container_state(container, init))
        .map(|problem| PodProblem {
            pod: name.to_owned(),
            problem,
        })
        .collect()
}

/// The problems of a pod: its containers' ([`container_problems`]), then its `Ready`
/// condition when it is `False` with a message.
pub fn problems(pod: &Pod) -> Vec<PodProblem> {
    let mut problems = container_problems(pod);
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    for condition in conditions.into_iter().flatten() {
        if condition.type_ == "Ready" && condition.status == "False" {
            if let Some(message) = &condition.message {
                problems.push(PodProblem {
                    pod: name.to_owned(),
                    problem: Problem::NotReady {
                        message: message.clone(),
                    },
                });
            }
        }
    }
    problems
}

/// What is wrong with one container, from its current and last state.
fn container_state(status: &ContainerStatus, init: bool) -> Vec<Problem> {
    let container = || ContainerRef {
        name: status.name.clone(),
        init,
    };
    let mut problems = Vec::new();
    let state = status.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = waiting.reason.as_deref().unwrap_or("Waiting");
        if !STARTING.contains(&reason) {
            problems.push(Problem::Waiting {
                container: container(),
                reason: reason.to_owned(),
                message: waiting.message.clone().unwrap_or_default(),
            });
        }
    }
    if let Some(done) = state.and_then(|s| s.terminated.as_ref()) {
        if done.exit_code != 0 {
            problems.push(Problem::Failed {
                container: container(),
                reason: done.reason.clone().unwrap_or_else(|| "Error".into()),
                exit_code: done.exit_code,
            });
        }
    }
    let last = status.last_state.as_ref();
    if let Some(last) = last.and_then(|s| s.terminated.as_ref()) {
        problems.push(Problem::LastExit {
            container: container(),
            reason: last.reason.clone().unwrap_or_else(|| "terminated".into()),
            exit_code: last.exit_code,
        });
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A container status named `name` in `state`, with `last_state`.
    fn container(name: &str, state: Value, last_state: Value) -> Value {
        json!({"name": name, "image": "img", "imageID": "", "ready": false, "restartCount": 0,
            "state": state, "lastState": last_state})
    }

    fn pod(init: Vec<Value>, main: Vec<Value>, conditions: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"initContainerStatuses": init, "containerStatuses": main,
                "conditions": conditions},
        }))
        .unwrap()
    }

    fn waiting(reason: &str, message: &str) -> Value {
        json!({"waiting": {"reason": reason, "message": message}})
    }

    fn terminated(code: i32, reason: Option<&str>) -> Value {
        json!({"terminated": {"exitCode": code, "reason": reason}})
    }

    fn texts(problems: &[PodProblem]) -> Vec<String> {
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn waiting_containers_are_problems_unless_they_are_starting() {
        let starting = pod(
            vec![container(
                "prepare",
                waiting("PodInitializing", ""),
                json!({}),
            )],
            vec![container(
                "build",
                waiting("ContainerCreating", ""),
                json!({}),
            )],
            json!([]),
        );
        assert!(problems(&starting).is_empty());

        for (reason, hopeless) in [
            ("ErrImagePull", true),
            ("ImagePullBackOff", true),
            ("InvalidImageName", true),
            ("CrashLoopBackOff", true),
            ("CreateContainerConfigError", true),
            ("RunContainerError", false),
        ] {
            let stuck = pod(
                vec![],
                vec![container("predict", waiting(reason, "why"), json!({}))],
                json!([]),
            );
            let found = container_problems(&stuck);
            assert_eq!(
                texts(&found),
                [format!("pod p container predict: {reason}: why")]
            );
            let problem = &found[0];
            assert_eq!(problem.waiting_reason(), Some(reason));
            assert_eq!(problem.is_hopeless(), hopeless, "{reason}");
            assert!(!problem.is_out_of_memory());
            let named = problem.container().unwrap();
            assert_eq!((named.name.as_str(), named.init), ("predict", false));
        }

        let unexplained: Pod = serde_json::from_value(json!({
            "metadata": {},
            "status": {"containerStatuses": [container("predict", json!({"waiting": {}}), json!({}))]},
        }))
        .unwrap();
        assert_eq!(
            texts(&problems(&unexplained)),
            ["pod ? container predict: Waiting: "]
        );
    }

    #[test]
    fn runs_that_ended_badly_are_problems_with_their_exit_code() {
        let ended = pod(
            vec![container(
                "prepare",
                terminated(0, Some("Completed")),
                json!({}),
            )],
            vec![
                container("build", terminated(137, Some("OOMKilled")), json!({})),
                container("sidecar", terminated(2, None), json!({})),
            ],
            json!([]),
        );
        let found = container_problems(&ended);
        assert_eq!(
            texts(&found),
            [
                "pod p container build: OOMKilled, exit code 137",
                "pod p container sidecar: Error, exit code 2",
            ],
            "a container that completed is not a problem"
        );
        assert!(found[0].is_out_of_memory());
        assert!(!found[1].is_out_of_memory());
        assert!(found.iter().all(|p| !p.is_hopeless()));

        let restarted = pod(
            vec![],
            vec![container(
                "predict",
                waiting("CrashLoopBackOff", "back-off 10s"),
                terminated(1, None),
            )],
            json!([]),
        );
        let found = container_problems(&restarted);
        assert_eq!(
            texts(&found),
            [
                "pod p container predict: CrashLoopBackOff: back-off 10s",
                "pod p container predict: last exit 1 (terminated)",
            ]
        );
        let oom = pod(
            vec![],
            vec![container(
                "predict",
                json!({"running": {}}),
                terminated(137, Some("OOMKilled")),
            )],
            json!([]),
        );
        let found = container_problems(&oom);
        assert_eq!(
            texts(&found),
            ["pod p container predict: last exit 137 (OOMKilled)"]
        );
        assert!(found[0].is_out_of_memory());
    }

    #[test]
    fn init_containers_come_first_and_are_marked() {
        let failed = pod(
            vec![container(
                "prepare",
                terminated(1, Some("Error")),
                json!({}),
            )],
            vec![container(
                "build",
                waiting("ImagePullBackOff", "no"),
                json!({}),
            )],
            json!([]),
        );
        let found = container_problems(&failed);
        assert_eq!(
            texts(&found),
            [
                "pod p container prepare: Error, exit code 1",
                "pod p container build: ImagePullBackOff: no",
            ]
        );
        assert!(found[0].container().unwrap().init);
        assert!(!found[1].container().unwrap().init);
    }

    #[test]
    fn a_pod_that_is_not_ready_says_why() {
        let unready = pod(
            vec![],
            vec![container("predict", json!({"running": {}}), json!({}))],
            json!([
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False",
                 "message": "containers with unready status: [predict]"},
            ]),
        );
        assert!(container_problems(&unready).is_empty());
        let found = problems(&unready);
        assert_eq!(
            texts(&found),
            ["pod p not ready: containers with unready status: [predict]"]
        );
        assert!(found[0].container().is_none());
        assert!(!found[0].is_hopeless());

        let silent = pod(
            vec![],
            vec![],
            json!([{"type": "Ready", "status": "False"}]),
        );
        assert!(problems(&silent).is_empty(), "no message, nothing to say");
        let ready = pod(vec![], vec![], json!([{"type": "Ready", "status": "True"}]));
        assert!(problems(&ready).is_empty());
        let bare: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert!(problems(&bare).is_empty(), "no status yet");
    }
}
