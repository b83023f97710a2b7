//! # so1s-core
//!
//! Turn an uploaded model into a live inference endpoint: upload → store → build → roll out →
//! serve. This crate is the control plane and links no libtorch; `so1s-inference` is the
//! data plane (the model on its own thread, the pipelines, the predict server) and
//! `so1s-bin` holds thin binaries wiring the two.
//!
//! # Layout
//!
//! - [`model`]: what a model directory holds — task, architecture, weights, tokenizer files,
//!   the `so1s.toml` manifest — read without loading weights.
//! - [`predict`]: predictions as plain data: the request and reply types, the Open Inference
//!   Protocol's messages, the serving choices (precision, forward pass) and CPU features.
//! - [`build`]: [`build::ImageBuilder`], safe archive unpacking, the embedded bundle
//!   builder that validates and smoke-tests a model, the inference image layout and the
//!   Docker image builder.
//! - [`rollout`]: [`rollout::Rollout`], the gateway's [`rollout::Routes`], the process
//!   backend that runs each version as a `so1s-predict` child, and the Docker backend that
//!   runs each version as a container.
//! - [`docker`] (feature `docker`): the Docker engine connection ([`docker::Engine`],
//!   [`docker::connect`]) behind [`build::DockerImageBuilder`] and [`rollout::DockerRollout`].
//! - [`kubernetes`] (feature `kubernetes`): the cluster connection, the manifest builders and
//!   the pod-state classifier behind [`build::KubeImageBuilder`] and [`rollout::KubeRollout`].
//! - [`platform`]: [`platform::Platform`], upload → store → build → roll out.
//! - [`server`] (feature `http`): [`server::ServeConfig`], `so1s serve` as a library: the
//!   data directory and a backend wired into a [`platform::Platform`] and the api server.
//! - [`client`] (feature `http`): [`client::ApiClient`], a typed client of the api server.
//! - [`auth`]: api tokens with roles (viewer, deployer, admin), stored hashed.
//! - [`registry`]: models, versions, states and events in SQLite, across restarts and crashes.
//! - [`resources`]: the api server's answers as types, shared by the server and the client.
//! - [`events`]: build and rollout progress lines.
//! - [`store`]: [`store::ModelStore`], immutable checksummed versions, and its filesystem
//!   implementation.
//! - [`http`] (feature `http`): the warp servers of the control plane (the api server and the
//!   gateway), their connection loop and the one JSON error shape.
//! - [`metrics`]: Prometheus metrics, `so1s_` prefix, buckets in one place.
//! - [`Error`]: the crate's one error type; [`ClientError`], the kinds only the api client
//!   meets, apart.
//!
//! Inside, not public: `db` (the SQLite database and its migrations, under [`auth`] and
//! [`registry`]), `lock` (one api server per data directory), `clock` (wall-clock
//! milliseconds), `redact` (host paths shortened in what clients read) and `fault` (the
//! crash tests' fault points; public with the `fault-injection` feature).
//!
//! # Features
//!
//! `http` (the servers and the api client), `docker` (bollard) and `kubernetes` (kube,
//! k8s-openapi); all on by default, none links libtorch. A build's smoke test runs in a
//! child `so1s-predict` ([`build::SmokeTest::Child`]) or by a runner the caller supplies
//! ([`build::SmokeRunner`]; so1s-inference has the in-process one).

#![forbid(unsafe_op_in_unsafe_fn)]
// docs.rs builds with `--cfg docsrs`: feature-gated items say which feature they need.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod build;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod client;
mod clock;
mod db;
#[cfg(feature = "docker")]
#[cfg_attr(docsrs, doc(cfg(feature = "docker")))]
pub mod docker;
mod error;
pub mod events;
// The crash-test points are public only in crash-test builds.
#[cfg(feature = "fault-injection")]
#[cfg_attr(docsrs, doc(cfg(feature = "fault-injection")))]
pub mod fault;
#[cfg(not(feature = "fault-injection"))]
mod fault;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
#[cfg(feature = "kubernetes")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubernetes")))]
pub mod kubernetes;
mod lock;
pub mod metrics;
pub mod model;
pub mod platform;
pub mod predict;
mod redact;
pub mod registry;
pub mod resources;
pub mod rollout;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod server;
pub mod store;

pub use error::{ClientError, Error, Result};
pub use model::{ModelLayout, ModelName, Task, VersionId};
pub use predict::{Entity, LabelScore, Prediction};
