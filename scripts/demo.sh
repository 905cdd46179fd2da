#!/usr/bin/env bash
# The jupyter_tfenv demo: JupyterLab with pinned TensorFlow environments as kernels.
#
#   bash scripts/demo.sh [--no-lab | --check]
#
#   1. scripts/setup.sh --tag-demo: Docker engine, the package, and the images of
#      examples/demo-catalog.yaml (local stand-ins where Docker Hub cannot be reached);
#   2. the read-only ipykernel runtime for images without ipykernel
#      (`jupyter tfenv runtime build --python 3.11`);
#   3. a notebook folder with examples/demo.ipynb;
#   4. JupyterLab on http://127.0.0.1:$DEMO_PORT with the demo catalog
#      (examples/jupyter_server_config.py). Stop it with Ctrl-C.
#
# --no-lab    prepare everything, print the command that starts JupyterLab, and exit.
# --check     the quick start without blocking (run by the tests): prepare everything,
#             start JupyterLab on a free loopback port in a new notebook folder, start
#             the TensorFlow 2.20 kernel through the REST API, read tf.__version__ over
#             the kernel websocket (scripts/demo_check.py), stop, and leave no kernel
#             container, server or folder behind. Exit 0 when all of that worked.
#
# Environment: DEMO_PORT (default 8888), DEMO_DIR (notebook folder; default
# /tmp/tfenv-demo as root, ~/tfenv-demo otherwise), DEMO_USER (as root: the non-root
# user kernels run as, created when missing; default tfenv), DEMO_TOKEN (default: random).
set -euo pipefail

# Everything runs with the project's .venv (made by scripts/setup.sh below).
# shellcheck source=scripts/venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$REPO"
CACHE=${TFENV_DEV_CACHE:-$HOME/.cache/jupyter_tfenv-dev}
PORT=${DEMO_PORT:-8888}
START_LAB=1
CHECK=0
for arg in "$@"; do
  case "$arg" in
    --no-lab) START_LAB=0 ;;
    --check) CHECK=1 ;;
    -h | --help)
      sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "[demo] unknown argument: $arg (see --help)" >&2
      exit 2
      ;;
  esac
done
T0=$SECONDS
say() { echo "[demo] $*"; }
die() {
  echo "[demo] ERROR: $*" >&2
  exit 1
}
[[ "$PORT" =~ ^[0-9]+$ ]] || die "DEMO_PORT must be a port number, not '$PORT'"

# ------------------------------------------------------------------ 1. setup and images
bash scripts/setup.sh --tag-demo

# The GPU entry of the demo catalog: where no real tensorflow/tensorflow:2.20.0-gpu-jupyter
# exists (no registry here), tag the CPU stand-in under its name, so that the kernel picker
# shows it and starting it shows the product's "no GPU / no NVIDIA runtime" message.
GPU_IMAGE=tensorflow/tensorflow:2.20.0-gpu-jupyter
STAND_IN=tfenv-test/tensorflow:2.20.0-jupyter
if docker image inspect "$GPU_IMAGE" >/dev/null 2>&1; then
  gpu_label=$(docker image inspect \
    --format '{{index .Config.Labels "org.jupyter.tfenv.stand-in"}}' "$GPU_IMAGE")
else
  gpu_label=missing
fi
if [ "$gpu_label" = missing ] || [ "$gpu_label" = true ]; then
  if [ "$(docker image inspect --format '{{.Id}}' "$GPU_IMAGE" 2>/dev/null)" != \
    "$(docker image inspect --format '{{.Id}}' "$STAND_IN")" ]; then
    docker tag "$STAND_IN" "$GPU_IMAGE"
    say "tagged $GPU_IMAGE -> $STAND_IN (CPU-only stand-in: no registry here)"
  fi
else
  say "using the real $GPU_IMAGE found on this engine"
fi

# ------------------------------------------------------------------ 2. kernel runtime
# tensorflow/tensorflow:2.20.0 has no ipykernel: jupyter_tfenv mounts a runtime built once
# on the host. Offline first, from the ipykernel wheels build_test_images.py downloaded.
runtime_args=(--python 3.11)
wheels=$(find "$CACHE/wheels" -maxdepth 2 -path '*/ipykernel-*/.complete' -printf '%h\n' \
  2>/dev/null | head -1 || true)
if "$PYTHON" -m jupyter tfenv runtime list 2>/dev/null | grep -qx "cp311-$(uname -m)"; then
  say "kernel runtime for Python 3.11 is built"
else
  say "building the kernel runtime for Python 3.11 (jupyter tfenv runtime build) ..."
  if [ -z "$wheels" ] ||
    ! "$PYTHON" -m jupyter tfenv runtime build "${runtime_args[@]}" --find-links "$wheels" \
      --no-index; then
    [ -n "$wheels" ] && say "offline build from $wheels failed; trying PyPI"
    "$PYTHON" -m jupyter tfenv runtime build "${runtime_args[@]}"
  fi
fi

# ------------------------------------------------------------------ 3. user and folder
lab_args=()
if [ "$(id -u)" -eq 0 ]; then
  # Kernels never run as root. As root, JupyterLab hands them to a non-root user.
  DEMO_USER=${DEMO_USER:-tfenv}
  if ! getent passwd "$DEMO_USER" >/dev/null; then
    say "creating the user '$DEMO_USER' that kernels run as"
    useradd --create-home --user-group --shell /bin/bash "$DEMO_USER"
  fi
  KUID=$(id -u "$DEMO_USER")
  KGID=$(id -g "$DEMO_USER")
  [ "$KUID" -ne 0 ] || die "DEMO_USER=$DEMO_USER is uid 0; pick a non-root user"
  export JUPYTER_TFENV_KERNEL_UID=$KUID JUPYTER_TFENV_KERNEL_GID=$KGID
  DEMO_DIR=${DEMO_DIR:-/tmp/tfenv-demo}
  lab_args+=(--allow-root)
else
  docker info >/dev/null 2>&1 || die "$(id -un) cannot reach the Docker engine (docker group?)"
  DEMO_DIR=${DEMO_DIR:-$HOME/tfenv-demo}
fi
if [ "$CHECK" = 1 ]; then
  # A folder and a port of its own: the check never touches a demo you are running.
  DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tfenv-demo-check.XXXXXX")
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
mkdir -p "$DEMO_DIR"
DEMO_DIR=$(cd "$DEMO_DIR" && pwd -P)
[ -e "$DEMO_DIR/demo.ipynb" ] || cp examples/demo.ipynb "$DEMO_DIR/demo.ipynb"
if [ -n "${KUID:-}" ]; then
  chown "$KUID:$KGID" "$DEMO_DIR" "$DEMO_DIR/demo.ipynb"
  chmod 0775 "$DEMO_DIR"
fi

# ------------------------------------------------------------------ 4. JupyterLab
CONFIG="$REPO/examples/jupyter_server_config.py"
"$PYTHON" -m jupyter tfenv list --config "$CONFIG" 2>&1 | sed 's/^/[demo]   /' ||
  say "(jupyter tfenv list failed; the server reads the same catalog)"

export JUPYTER_TOKEN=${DEMO_TOKEN:-$("$PYTHON" -c 'import secrets; print(secrets.token_hex(24))')}
lab_args+=(
  --config "$CONFIG"
  --no-browser
  --ServerApp.ip=127.0.0.1
  --ServerApp.port="$PORT"
  --ServerApp.port_retries=0
  --ServerApp.root_dir="$DEMO_DIR"
  --MappingKernelManager.default_kernel_name=tfenv-tf-2.20-cpu
)
URL="http://127.0.0.1:$PORT/lab/tree/demo.ipynb?token=$JUPYTER_TOKEN"

if [ "$CHECK" = 1 ]; then
  LOG="$DEMO_DIR.log"
  LAB_PID=
  finish() {
    local rc=$? left
    if [ -n "$LAB_PID" ] && kill -0 "$LAB_PID" 2>/dev/null; then
      kill -INT "$LAB_PID" 2>/dev/null || true
      for _ in $(seq 1 60); do kill -0 "$LAB_PID" 2>/dev/null || break; sleep 0.5; done
      kill -KILL "$LAB_PID" 2>/dev/null || true
    fi
    if [ -n "$LAB_PID" ]; then
      left=$(docker ps -aq --filter "label=org.jupyter.tfenv.server-pid=$LAB_PID" 2>/dev/null || true)
      if [ -n "$left" ]; then
        echo "[demo] ERROR: JupyterLab left kernel containers behind: $(echo "$left" | tr '\n' ' ')" >&2
        docker rm -f $left >/dev/null 2>&1 || true
        rc=1
      fi
    fi
    if [ "$rc" -ne 0 ] && [ -f "$LOG" ]; then
      echo "[demo] JupyterLab's log ($LOG), last lines:" >&2
      tail -40 "$LOG" | sed 's/^/[demo]   /' >&2
    fi
    rm -rf "$DEMO_DIR" "$LOG"
    if [ "$rc" -eq 0 ]; then
      say "check passed in $((SECONDS - T0)) s: nothing left behind"
    else
      say "check FAILED"
    fi
    exit "$rc"
  }
  trap finish EXIT
  (cd "$DEMO_DIR" && exec "$PYTHON" -m jupyter lab "${lab_args[@]}" </dev/null >"$LOG" 2>&1) &
  LAB_PID=$!
  say "check: JupyterLab (pid $LAB_PID) on http://127.0.0.1:$PORT, notebooks in $DEMO_DIR"
  "$PYTHON" scripts/demo_check.py --url "http://127.0.0.1:$PORT" --pid "$LAB_PID" \
    --kernel tfenv-tf-2.20-cpu --expect 2.20.0
  # demo_check.py asked the server to shut down: it stops its kernels, then exits.
  for _ in $(seq 1 120); do kill -0 "$LAB_PID" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$LAB_PID" 2>/dev/null; then
    die "JupyterLab did not exit within 60 s of POST /api/shutdown"
  fi
  wait "$LAB_PID" || die "JupyterLab exited with status $?"
  exit 0
fi
echo
say "catalog:   $REPO/examples/demo-catalog.yaml (config: examples/jupyter_server_config.py)"
say "notebooks: $DEMO_DIR"
if [ -n "${KUID:-}" ]; then
  say "kernels:   run as $DEMO_USER (uid $KUID, gid $KGID), as JupyterLab runs as root here."
  say "           On your own machine, run JupyterLab as yourself: kernels then run as you."
fi
if [ "$START_LAB" = 0 ]; then
  say "prepared. Start JupyterLab with:"
  printf '[demo]   cd %q && ' "$DEMO_DIR"
  [ -n "${KUID:-}" ] && printf 'JUPYTER_TFENV_KERNEL_UID=%s JUPYTER_TFENV_KERNEL_GID=%s ' "$KUID" "$KGID"
  printf 'JUPYTER_TOKEN=%q %q -m jupyter lab' "$JUPYTER_TOKEN" "$PYTHON"
  printf ' %q' "${lab_args[@]}"
  echo
  say "then open $URL"
  exit 0
fi
say "open:      $URL"
say "           (pick a 'TensorFlow ...' kernel; Ctrl-C stops JupyterLab)"
echo
cd "$DEMO_DIR"
exec "$PYTHON" -m jupyter lab "${lab_args[@]}"
