#!/usr/bin/env bash
# Faults under load, measured: kill -9 and SIGSTOP of the live predict server while wrk
# drives the gateway (see faults.py). Not part of CI. SO1S_FAULTS_BACKEND=docker needs a
# Docker engine (scripts/docker-engine.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh >&2
cargo build --release -q -p so1s-bin --bin so1s --bin so1s-predict --bin so1s-probe >&2
exec python3 benches/faults/faults.py
