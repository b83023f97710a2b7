//! The Docker engine as the docker backends see it: connecting, and engine errors turned
//! into [`Error`]s. The labels so1s puts on images and containers are in
//! [`build::image`](crate::build::image).
//!
//! The connection follows Docker's own conventions (`DOCKER_HOST`, else the local socket) and
//! negotiates the API version, so an engine as old as 20.10 (API 1.41) works.

use crate::{Error, Result};
use bollard::Docker;

/// A connection to a Docker engine, what the docker backends
/// ([`DockerImageBuilder`](crate::build::DockerImageBuilder),
/// [`DockerRollout`](crate::rollout::DockerRollout)) take. Cheap to clone: clones share the
/// connection. Made by [`connect`], or from a bollard client of the caller's.
#[derive(Clone)]
pub struct Engine(pub(crate) Docker);

impl From<Docker> for Engine {
    fn from(docker: Docker) -> Self {
        Engine(docker)
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Connects to the engine `DOCKER_HOST` names (the local socket by default) and checks that
/// it answers.
pub async fn connect() -> Result<Engine> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| engine_error("connecting to the Docker engine", e))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| engine_error("reaching the Docker engine", e))?;
    docker
        .ping()
        .await
        .map_err(|e| engine_error("reaching the Docker engine", e))?;
    Ok(Engine(docker))
}

/// The HTTP status of an engine error, if the engine answered one.
pub(crate) fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// An engine error as so1s reports it: what was being done, then what the engine said.
pub(crate) fn engine_error(context: &str, error: bollard::errors::Error) -> Error {
    let said = match &error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    };
    match status_of(&error) {
        Some(404) => Error::NotFound(format!("{context}: {said}")),
        _ => Error::Backend(format!("{context}: {said}")),
    }
}
