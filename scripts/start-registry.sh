#!/usr/bin/env bash
# Start a local container registry (Debian's docker-registry, i.e. CNCF distribution 2.8)
# on loopback, for testing pulls, progress, digests and tag re-pointing.
#
#   bash scripts/start-registry.sh
#
# Idempotent: when http://127.0.0.1:PORT/v2/ already answers 200, it says so and exits 0.
# Otherwise it installs the docker-registry package if it is missing (and makes sure the
# package's own service, which listens on every interface, is not running), writes a
# config that listens on 127.0.0.1 only with its storage in a folder under /tmp, starts
# the registry in the background and waits until GET /v2/ answers 200.
#
# Environment:
#   TFENV_REGISTRY_PORT  port on 127.0.0.1 (default 5000)
#   TFENV_REGISTRY_DIR   folder for config, storage, log and pid file
#                        (default /tmp/tfenv-registry-PORT)
#
# Output (stdout, one per line, for scripts): pid=…, dir=…, log=…, url=…; when it was
# already running, url=… and already_running=1 only. Stop it with: kill "$(cat DIR/registry.pid)".
set -euo pipefail

PORT=${TFENV_REGISTRY_PORT:-5000}
DIR=${TFENV_REGISTRY_DIR:-/tmp/tfenv-registry-$PORT}
URL="http://127.0.0.1:$PORT"
say() { echo "[registry] $*" >&2; }

status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/v2/" 2>/dev/null || true; }

if [ "$(status_of)" = 200 ]; then
  say "a registry already answers at $URL/v2/"
  echo "url=$URL"
  echo "already_running=1"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
if ! command -v docker-registry >/dev/null 2>&1; then
  say "installing Debian's docker-registry package ..."
  bash "$(dirname "${BASH_SOURCE[0]}")/install-debian-packages.sh" docker-registry >&2
fi
# The package's own service listens on :5000 on every interface (with htpasswd auth);
# we want ours, on loopback only. Stop and disable it wherever an init system runs it.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  if systemctl is-active --quiet docker-registry 2>/dev/null ||
    systemctl is-enabled --quiet docker-registry 2>/dev/null; then
    say "stopping and disabling the docker-registry system service (it listens on *:5000)"
    "${SUDO[@]}" systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
elif [ -x /etc/init.d/docker-registry ] &&
  /etc/init.d/docker-registry status >/dev/null 2>&1; then
  say "stopping the docker-registry system service (it listens on *:5000)"
  "${SUDO[@]}" /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
fi

code=$(status_of)
if [ "$code" = 200 ]; then
  say "a registry already answers at $URL/v2/"
  echo "url=$URL"
  echo "already_running=1"
  exit 0
fi
if [ -n "$code" ] && [ "$code" != 000 ]; then
  say "something else answers at $URL/v2/ (HTTP $code): pick another TFENV_REGISTRY_PORT"
  exit 1
fi

mkdir -p "$DIR/storage"
cat >"$DIR/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
  fields:
    service: tfenv-test-registry
storage:
  filesystem:
    rootdirectory: $DIR/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$PORT
  secret: tfenv-local-test-registry
  headers:
    X-Content-Type-Options: [nosniff]
EOF

LOG="$DIR/registry.log"
nohup setsid docker-registry serve "$DIR/config.yml" >"$LOG" 2>&1 </dev/null &
PID=$!
echo "$PID" >"$DIR/registry.pid"
for _ in $(seq 1 100); do
  if [ "$(status_of)" = 200 ]; then
    say "docker-registry is up at $URL (pid $PID, storage $DIR/storage, log $LOG)"
    echo "pid=$PID"
    echo "dir=$DIR"
    echo "log=$LOG"
    echo "url=$URL"
    exit 0
  fi
  if ! kill -0 "$PID" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
say "docker-registry did not answer at $URL/v2/ within 10 s; last lines of $LOG:"
tail -20 "$LOG" >&2 || true
kill "$PID" 2>/dev/null || true
exit 1
