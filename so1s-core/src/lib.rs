//! # so1s-core
//!
//! Turn an uploaded model into a live inference endpoint: upload → store → build → roll out →
//! serve. This crate is the library; `so1s-bin` holds thin binaries over it.
//!
//! # Layout
//!
//! - [`model`]: what a model directory holds — task, architecture, weights, tokenizer files,
//!   the `so1s.toml` manifest — read without loading weights.
//! - [`predict`]: the request and reply types; with the `inference` feature (default on)
//!   the rust-bert pipelines, so1s's own encoder and `TransformerService`, the batching
//!   handle to a model running on its own thread.
//! - [`build`]: [`build::ImageBuilder`], safe archive unpacking, the embedded bundle
//!   builder that validates and smoke-tests a model, the inference image layout and the
//!   Docker image builder.
//! - [`rollout`]: [`rollout::Rollout`], the gateway's [`rollout::Routes`], the process
//!   backend that runs each version as a `so1s-predict` child, and the Docker backend that
//!   runs each version as a container.
//! - [`docker`] (feature `docker`): the Docker engine connection behind
//!   [`build::DockerImageBuilder`] and [`rollout::DockerRollout`].
//! - [`kubernetes`] (feature `kubernetes`): the cluster connection, the manifest builders and
//!   the pod-state classifier behind [`build::KubeImageBuilder`] and [`rollout::KubeRollout`].
//! - [`platform`]: [`platform::Platform`], upload → store → build → roll out.
//! - [`server`] (feature `http`): [`server::ServeConfig`], `so1s serve` as a library: the
//!   data directory and a backend wired into a [`platform::Platform`] and the api server.
//! - [`client`] (feature `http`): [`client::ApiClient`], a typed client of the api server.
//! - [`auth`]: api tokens with roles (viewer, deployer, admin), stored hashed.
//! - [`db`]: the api server's SQLite database and its migrations.
//! - [`clock`]: wall-clock milliseconds.
//! - [`redact`]: host paths shortened in what clients read.
//! - [`registry`]: models, versions, states and events in SQLite, across restarts and crashes.
//! - [`resources`]: the api server's answers as types, shared by the server and the client.
//! - [`events`]: build and rollout progress lines.
//! - [`fault`]: fault-injection points for crash tests (feature `fault-injection`).
//! - [`lock`]: the data directory's lock: one api server per data directory.
//! - [`store`]: [`store::ModelStore`], immutable checksummed versions, and its filesystem
//!   implementation.
//! - [`http`] (feature `http`): the warp servers; today the predict server.
//! - [`metrics`]: Prometheus metrics, `so1s_` prefix, buckets in one place.
//! - [`alloc`]: allocator settings for inference processes.
//! - [`Error`]: the crate's one error type.
//!
//! # Features
//!
//! `inference` (rust-bert, tch, libtorch), `http` (the servers and the api client), `docker`
//! (bollard) and `kubernetes` (kube, k8s-openapi); all on by default. Without `inference`
//! nothing links libtorch: an api server whose builds and models run in Docker or
//! Kubernetes needs only `http` with `docker` and/or `kubernetes`.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod alloc;
pub mod auth;
pub mod build;
#[cfg(feature = "http")]
pub mod client;
pub mod clock;
pub mod db;
#[cfg(feature = "docker")]
pub mod docker;
mod error;
pub mod events;
pub mod fault;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod lock;
pub mod metrics;
pub mod model;
pub mod platform;
pub mod predict;
pub mod redact;
pub mod registry;
pub mod resources;
pub mod rollout;
#[cfg(feature = "http")]
pub mod server;
pub mod store;

pub use error::{Error, Result};
pub use model::{ModelLayout, ModelName, Task, VersionId};
#[cfg(feature = "inference")]
pub use predict::TransformerService;
pub use predict::{LabelScore, Prediction};
