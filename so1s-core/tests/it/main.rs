//! so1s-core's integration tests: one binary (libtorch links once), one module per area.
//! They use the real MiniLM model that `scripts/setup.sh` installs and real HTTP servers on
//! port 0.

mod classifier;
#[cfg(feature = "kubernetes")]
mod cluster;
mod minilm;
mod predict_server;
mod support;
