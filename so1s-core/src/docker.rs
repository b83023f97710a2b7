//! The Docker engine as the docker backends see it: connecting, and engine errors turned
//! into [`Error`]s. The labels so1s puts on images and containers are in
//! [`build::image`](crate::build::image).
//!
//! The connection follows Docker's own conventions (`DOCKER_HOST`, else the local socket) and
//! negotiates the API version, so an engine as old as 20.10 (API 1.41) works.

use crate::{Error, Result};
pub use bollard::Docker;

/// Connects to the engine `DOCKER_HOST` names (the local socket by default) and checks that
/// it answers.
pub async fn connect() -> Result<Docker> {
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
    Ok(docker)
}

/// The HTTP status of an engine error, if the engine answered one.
pub fn status_of(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// An engine error as so1s reports it: what was being done, then what the engine said.
pub fn engine_error(context: &str, error: bollard::errors::Error) -> Error {
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
