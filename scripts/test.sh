#!/usr/bin/env bash
# The test command. On a fresh machine it first installs what the tests need (libtorch and the
# MiniLM model, through scripts/setup.sh), then checks formatting and lints and runs every test
# of the workspace: unit tests, the real-model tests and the HTTP tests on port 0.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace "$@"
