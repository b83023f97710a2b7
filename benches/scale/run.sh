#!/usr/bin/env bash
# Scale to zero, measured: wake latency and the memory of many models (see wake.py).
# Not part of CI. SO1S_WAKE_BACKEND=docker needs a Docker engine (scripts/docker-engine.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh >&2
cargo build --release -q -p so1s-bin --bin so1s --bin so1s-predict --bin so1s-probe >&2
exec python3 benches/scale/wake.py
