//! so1s-core's integration tests: one binary, one module per area, no model and no libtorch.
//! The platform, traffic and api-route tests run in process over fake backends
//! (`support::FakeBuilder`, `support::FakeRollout`); the cluster tests run the Kubernetes
//! backends against a scripted double of the API. The model tests are so1s-inference's.

mod api;
#[cfg(feature = "kubernetes")]
mod cluster;
mod platform;
mod support;
mod traffic;
