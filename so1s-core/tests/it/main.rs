//! so1s-core's integration tests: one binary (libtorch links once), one module per area.
//! The model tests use the real MiniLM model that `scripts/setup.sh` installs and real HTTP
//! servers on port 0; the platform and api-route tests (`platform`, `api`) run in process
//! over fake backends (`support::FakeBuilder`, `support::FakeRollout`) and load no model.

mod api;
mod classifier;
#[cfg(feature = "kubernetes")]
mod cluster;
mod minilm;
mod platform;
mod predict_server;
mod support;
mod traffic;
mod transformers_fixtures;
