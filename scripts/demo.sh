#!/usr/bin/env bash
# The main job on the embedded default: set up (libtorch + the bundled MiniLM model), build,
# start the so1s api server, deploy MiniLM as a model, and show a prediction through the
# seed's path POST /inference/predict. Stops the server at the end, unless SO1S_DEMO_KEEP is
# set: then it keeps serving (the dashboard at /) until Ctrl-C.
#   scripts/demo.sh [TEXT]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
text=${1:-Hello world}

scripts/setup.sh
cargo build --release -p so1s-bin

work=$(mktemp -d)
cleanup() {
  if [ -n "${server:-}" ]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
# The server and the client commands share the data directory: the client commands read the
# admin token the first start writes there (<data-dir>/admin.token).
export SO1S_DATA_DIR="$work/data"
target/release/so1s serve --port 0 >"$work/stdout" 2>"$work/stderr" &
server=$!
for _ in $(seq 100); do
  base=$(sed -n 's/^listening on //p' "$work/stdout")
  [ -n "$base" ] && break
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/stderr" >&2; exit 1; fi
  sleep 0.1
done
echo "so1s is serving at $base (data in $work/data)"
echo
echo "\$ so1s deploy .cache/models/all-MiniLM-L6-v2 --name minilm"
start=$(python3 -c 'import time; print(time.time())')
target/release/so1s deploy .cache/models/all-MiniLM-L6-v2 --name minilm --server "$base"
python3 -c 'import sys, time; print("upload to live: %.1f s\n" % (time.time() - float(sys.argv[1])))' "$start"

echo "\$ curl -s $base/inference/predict -d '{\"text\": \"$text\"}'"
body=$(python3 -c 'import json,sys; print(json.dumps({"text": sys.argv[1]}))' "$text")
curl -fsS "$base/inference/predict" -H 'content-type: application/json' -d "$body" |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["result"]; print("{\"result\": [%s, ... %d values]}" % (", ".join("%.6f" % x for x in r[:6]), len(r)))'
echo
echo "\$ so1s status"
target/release/so1s status --server "$base"

if [ -n "${SO1S_DEMO_KEEP:-}" ]; then
  echo
  echo "the dashboard: $base/ (sign in with the token in $work/data/admin.token); Ctrl-C stops"
  wait "$server"
fi
