//! so1s-inference's integration tests: one binary (libtorch links once), one module per
//! area, on real models: the MiniLM model `scripts/setup.sh` installs, the classifiers made
//! by Hugging Face transformers under `tests/fixtures/`, tiny random-weight classifiers, and
//! real predict servers on port 0.

mod classifier;
mod minilm;
mod predict_server;
mod support;
mod tasks;
mod transformers_fixtures;
