#!/usr/bin/env bash
# The test command. On a fresh machine it first installs what the tests need (libtorch, the
# MiniLM model and kubernetes-validate through scripts/setup.sh; a Docker engine through
# scripts/docker-engine.sh, stopped again at the end if this script started it), then checks
# formatting and lints and runs every test of the workspace: unit tests, the in-process
# platform and api-route tests, the real-model tests, the HTTP tests on port 0, the manifest
# validation, the Open Inference Protocol tests with Triton's client, the dashboard's test in
# headless Chromium (Debian's chromium and chromium-driver, installed by scripts/browser.sh
# when missing) and the docker backend's tests against the real engine.
#
# Tests that need something outside cargo are turned on by what is set when they are built
# (so1s-bin/build.rs): DOCKER_HOST for the docker tests, SO1S_K8S_VALIDATE for the manifest
# validation, SO1S_OIP_CLIENT for the Open Inference Protocol tests with Triton's client,
# SO1S_CHROMEDRIVER for the dashboard's browser test. This script exports all four:
# DOCKER_HOST with the engine it started or found (the default socket included),
# SO1S_CHROMEDRIVER with what scripts/browser.sh found or installed, the other two with what
# scripts/setup.sh installed.
# A test turned on fails when its engine or validator is missing; one left out shows as
# ignored with the reason, never as passed. Without an engine or a browser (not root, say) the
# docker tests or the browser test are ignored; under CI (CI=true) either missing is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
export SO1S_K8S_VALIDATE="$PWD/.cache/venv-k8s/bin/kubernetes-validate"
export SO1S_OIP_CLIENT="$PWD/.cache/venv-oip/bin/python"
if driver=$(scripts/browser.sh); then
  export SO1S_CHROMEDRIVER="$driver"
elif [[ "${CI:-}" == "true" ]]; then
  echo "CI=true and no chromium/chromedriver could be installed: the browser test cannot run" >&2
  exit 1
else
  unset SO1S_CHROMEDRIVER
  echo "no chromedriver: the dashboard's browser test will be ignored (SO1S_CHROMEDRIVER unset)" >&2
fi
if host=$(scripts/docker-engine.sh start); then
  export DOCKER_HOST="$host"
  trap 'scripts/docker-engine.sh stop' EXIT
elif [[ "${CI:-}" == "true" ]]; then
  echo "CI=true and no Docker engine could be started: the docker tests cannot run" >&2
  exit 1
else
  unset DOCKER_HOST
  echo "no Docker engine: the docker backend's tests will be ignored (DOCKER_HOST unset)" >&2
fi
if [[ "${CI:-}" == "true" ]]; then
  # A fresh clone builds once: incremental data would only take disk (several GB).
  export CARGO_INCREMENTAL=0
fi
cargo fmt --all -- --check
# so1s-core is the control plane: nothing it builds with (its tests included) may link
# libtorch. so1s-inference is where libtorch comes in.
core_tree=$(cargo tree -p so1s-core --all-features -e normal,build,dev --prefix none)
if grep -E '^(torch-sys|tch|rust-bert) ' <<<"$core_tree"; then
  echo "so1s-core depends on libtorch (above): it must build without it" >&2
  exit 1
fi
# No import circle between modules (a parent and its own child aside).
python3 scripts/module-cycles.py so1s-core/src so1s-inference/src
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --no-fail-fast --features so1s-bin/fault-injection "$@"
