#!/usr/bin/env bash
# The main job on the embedded default: set up (libtorch + the bundled MiniLM model), build,
# start the predict server on a free port, show one prediction, stop the server.
#   scripts/demo.sh [TEXT]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
text=${1:-Hello world}

scripts/setup.sh
cargo build --release -p so1s-bin --bin so1s-predict

log=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$log"' EXIT
target/release/so1s-predict --port 0 --model-dir .cache/models/all-MiniLM-L6-v2 \
  --model-version demo >"$log/stdout" 2>"$log/stderr" &
server=$!

for _ in $(seq 600); do
  base=$(sed -n 's/^listening on //p' "$log/stdout")
  if [ -n "$base" ] && curl -fs "$base/readyz" >/dev/null; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$log/stderr" >&2; exit 1; fi
  sleep 0.1
done
echo "so1s-predict is serving all-MiniLM-L6-v2 at $base"
echo
echo "\$ curl -s $base/predict -d '{\"text\": \"$text\"}'"
body=$(python3 -c 'import json,sys; print(json.dumps({"text": sys.argv[1]}))' "$text")
curl -fsS "$base/predict" -H 'content-type: application/json' -d "$body" |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print("{\"result\": [%s, ... %d values]}" % (", ".join("%.6f" % x for x in r[:6]), len(r)))'
echo
echo "\$ curl -s $base/v1/model"
curl -fsS "$base/v1/model"
echo
