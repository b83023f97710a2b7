//! The Kubernetes API double: kube-fake-client's in-memory API server behind a recording
//! layer. so1s's code talks to it through a real `kube::Client`; every request it makes is
//! kept (method, path, query, content type, JSON body) for the test to check; `pods/log`,
//! which the fake does not serve, answers from logs the test sets. The test plays the
//! controllers (Deployment, Job) by writing status and pods through the fake directly.

use http_body_util::BodyExt;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One request so1s made.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

impl Request {
    /// `METHOD path` for messages.
    pub fn line(&self) -> String {
        format!("{} {}?{}", self.method, self.path, self.query)
    }
}

/// Container logs by `pod/container`: lines with the time they were written.
type Logs = HashMap<String, Vec<(Timestamp, String)>>;

/// The API double.
#[derive(Clone)]
pub struct Cluster {
    /// The client given to so1s (recorded).
    pub client: kube::Client,
    /// The client the test plays controllers with (not recorded).
    pub fake: kube::Client,
    requests: Arc<Mutex<Vec<Request>>>,
    logs: Arc<Mutex<Logs>>,
}

impl Cluster {
    pub async fn new() -> Cluster {
        let fake = kube_fake_client::ClientBuilder::new()
            .with_status_subresource::<k8s_openapi::api::apps::v1::Deployment>()
            .with_status_subresource::<k8s_openapi::api::batch::v1::Job>()
            .with_status_subresource::<k8s_openapi::api::core::v1::Pod>()
            .build()
            .await
            .expect("the fake API server");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let logs: Arc<Mutex<Logs>> = Arc::default();
        let (inner, recorded, canned) = (fake.clone(), requests.clone(), logs.clone());
        let service = tower::service_fn(move |request: http::Request<Body>| {
            let (inner, recorded, canned) = (inner.clone(), recorded.clone(), canned.clone());
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| kube::Error::Service(Box::new(e)))?
                    .to_bytes();
                let path = parts.uri.path().to_owned();
                let query = parts.uri.query().unwrap_or("").to_owned();
                recorded.lock().unwrap().push(Request {
                    method: parts.method.to_string(),
                    path: path.clone(),
                    query: query.clone(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                });
                if let Some(pod_path) = path.strip_suffix("/log") {
                    let pod = pod_path.rsplit('/').next().unwrap_or("");
                    let text = answer_log(&canned.lock().unwrap(), pod, &query);
                    return Ok::<_, kube::Error>(http::Response::new(Body::from(
                        text.into_bytes(),
                    )));
                }
                inner
                    .send(http::Request::from_parts(parts, Body::from(bytes.to_vec())))
                    .await
            }
        });
        Cluster {
            client: kube::Client::new(service, "so1s"),
            fake,
            requests,
            logs,
        }
    }

    /// Every request so1s made so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Forgets the requests so far.
    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }

    /// The requests other than reads (GET).
    pub fn writes(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != "GET")
            .collect()
    }

    /// Appends `text`'s lines, stamped now, to the log of `container` in `pod`.
    pub fn append_log(&self, pod: &str, container: &str, text: &str) {
        let now = Timestamp::now();
        self.logs
            .lock()
            .unwrap()
            .entry(format!("{pod}/{container}"))
            .or_default()
            .extend(text.lines().map(|line| (now, line.to_owned())));
    }
}

/// What the kubelet answers to `pods/{pod}/log?{query}`: the container's lines at or after
/// `sinceTime` (whole seconds), prefixed with their RFC 3339 timestamps if `timestamps=true`.
fn answer_log(logs: &Logs, pod: &str, query: &str) -> String {
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    let container = param("container").unwrap_or("");
    let since: Option<Timestamp> = param("sinceTime").map(|at| {
        at.replace("%3A", ":")
            .parse()
            .expect("sinceTime is RFC 3339")
    });
    let timestamps = param("timestamps") == Some("true");
    logs.get(&format!("{pod}/{container}"))
        .into_iter()
        .flatten()
        .filter(|(at, _)| since.is_none_or(|since| *at >= since))
        .map(|(at, line)| match timestamps {
            true => format!("{at} {line}\n"),
            false => format!("{line}\n"),
        })
        .collect()
}
