#!/usr/bin/env bash
# The test command. On a fresh machine it first installs what the tests need (libtorch and the
# MiniLM model through scripts/setup.sh; a Docker engine through scripts/docker-engine.sh,
# stopped again at the end if this script started it), then checks formatting and lints and
# runs every test of the workspace: unit tests, the real-model tests, the HTTP tests on port 0
# and the docker backend's tests against the real engine.
#
# Without an engine (not root, say) the docker tests are skipped with the reason printed;
# under CI (CI=true) a missing engine is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
if host=$(scripts/docker-engine.sh start); then
  export DOCKER_HOST="$host"
  trap 'scripts/docker-engine.sh stop' EXIT
elif [[ "${CI:-}" == "true" ]]; then
  echo "CI=true and no Docker engine could be started: the docker tests cannot run" >&2
  exit 1
else
  echo "no Docker engine: the docker backend's tests will be skipped" >&2
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --features so1s-bin/fault-injection "$@"
