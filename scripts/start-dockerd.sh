#!/usr/bin/env bash
# Start a Docker engine for development and CI when none answers.
# Traffic stays on loopback: no bridge network, no iptables rules.
set -euo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd not found: installing docker.io" >&2
  bash "$(dirname "${BASH_SOURCE[0]}")/install-debian-packages.sh" docker.io >&2
fi
log=${TFENV_DOCKERD_LOG:-/tmp/tfenv-dockerd.log}
nohup setsid dockerd --bridge=none --iptables=false --ip6tables=false >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "dockerd is up (log: $log)" >&2
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not answer within 30 s; see $log" >&2
tail -20 "$log" >&2
exit 1
