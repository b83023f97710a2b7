#!/usr/bin/env bash
# A Docker engine for the docker backend's tests and demos.
#
#   scripts/docker-engine.sh start   prints the DOCKER_HOST to use. An engine that already
#                                    answers (DOCKER_HOST, or the default socket) is used as it
#                                    is; otherwise Debian's docker.io is installed if needed and
#                                    dockerd is started as root with its own data folder
#                                    (/var/lib/so1s-docker) and socket (/run/so1s-docker).
#   scripts/docker-engine.sh stop    stops the dockerd that `start` started, if any.
#
# Progress goes to stderr; `start` exits 1 with the reason when no engine can be had.
set -euo pipefail

RUN_DIR=/run/so1s-docker
DATA_DIR=/var/lib/so1s-docker
SOCKET="unix://$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
STARTED="$RUN_DIR/started-by-so1s"

say() { echo "docker-engine: $*" >&2; }

answers() { # HOST
  command -v docker >/dev/null 2>&1 && DOCKER_HOST="$1" timeout 10 docker version >/dev/null 2>&1
}

start() {
  for host in "${DOCKER_HOST:-}" unix:///var/run/docker.sock "$SOCKET"; do
    if [[ -n "$host" ]] && answers "$host"; then
      say "using the engine at $host"
      echo "$host"
      return 0
    fi
  done
  if [[ $(id -u) -ne 0 ]]; then
    say "no Docker engine answers and starting one needs root"
    return 1
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    say "installing Debian's docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq docker.io >&2
  fi
  mkdir -p "$RUN_DIR" "$DATA_DIR"
  say "starting dockerd (data in $DATA_DIR, socket $SOCKET)"
  nohup dockerd \
    --data-root "$DATA_DIR" \
    --exec-root "$RUN_DIR/exec" \
    --pidfile "$PIDFILE" \
    --host "$SOCKET" \
    >"$RUN_DIR/dockerd.log" 2>&1 &
  echo $! >"$STARTED"
  for _ in $(seq 1 120); do
    if answers "$SOCKET"; then
      say "dockerd is up"
      echo "$SOCKET"
      return 0
    fi
    if ! kill -0 "$(cat "$STARTED")" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  say "dockerd did not come up; its log:"
  tail -n 30 "$RUN_DIR/dockerd.log" >&2 || true
  return 1
}

stop() {
  [[ -f "$STARTED" ]] || return 0
  local pid
  pid=$(cat "$STARTED")
  rm -f "$STARTED"
  if kill -0 "$pid" 2>/dev/null; then
    say "stopping dockerd ($pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || return 0
      sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
