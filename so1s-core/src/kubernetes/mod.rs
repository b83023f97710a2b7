//! Kubernetes as the cluster backends see it: connecting (kubeconfig or in-cluster), API
//! errors turned into [`Error`]s, polling waits, and in [`manifests`] the pure builders of
//! every object so1s applies; in [`pods`] the pure classifier of pod states (why a build pod
//! failed, why a model's pods cannot serve); in [`logs`] the cursor that reads a container's
//! log by polls.
//!
//! Waits poll the API (`get` every poll interval, judged with kube's runtime conditions)
//! rather than watch: it works the same against every API server and its test doubles, and a
//! rollout or build is followed for minutes, not milliseconds.

pub mod logs;
pub mod manifests;
pub mod pods;

use crate::{Error, Result};
use kube::Client;

/// Connects with the local kubeconfig (`KUBECONFIG`, `~/.kube/config`) or, inside a pod, the
/// service account.
pub async fn connect() -> Result<Client> {
    Client::try_default()
        .await
        .map_err(|e| api_error("connecting to the Kubernetes API", e))
}

/// A client of the cluster that the kubeconfig context `context` names (whatever context is
/// current is not used): for tests and tools that must not touch another cluster.
pub async fn connect_to(context: &str) -> Result<Client> {
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_owned()),
        ..Default::default()
    };
    let config = kube::Config::from_kubeconfig(&options)
        .await
        .map_err(|e| Error::Backend(format!("reading the kubeconfig context {context}: {e}")))?;
    Client::try_from(config)
        .map_err(|e| api_error(&format!("connecting to the context {context}"), e))
}

/// The HTTP status of an API error, if the API server answered one.
pub fn status_of(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// An API error as so1s reports it: what was being done, then what the API server said.
pub fn api_error(context: &str, error: kube::Error) -> Error {
    match &error {
        kube::Error::Api(status) if status.code == 404 => {
            Error::NotFound(format!("{context}: {}", status.message))
        }
        kube::Error::Api(status) => Error::Backend(format!(
            "{context}: {} ({} {})",
            status.message, status.code, status.reason
        )),
        other => Error::Backend(format!("{context}: {other}")),
    }
}
