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
# As root, JupyterLab and its kernels run as one non-root user (DEMO_USER), so that a
# folder made in the file browser and a file written by a kernel have the same owner.
#
# Environment: DEMO_PORT (default 8888), DEMO_DIR (notebook folder; default
# /tmp/tfenv-demo as root, ~/tfenv-demo otherwise), DEMO_USER (as root: the non-root
# user JupyterLab and its kernels run as, created when missing and added to the Docker
# socket's group; default tfenv), DEMO_TOKEN (default: random).
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
      sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
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
# As root, it goes to a folder the demo user's server can read (root's home is private).
RUNTIMES_DIR=
runtime_args=(--python 3.11)
if [ "$(id -u)" -eq 0 ]; then
  RUNTIMES_DIR=${DEMO_RUNTIMES_DIR:-/var/lib/jupyter_tfenv-demo/runtimes}
  mkdir -p "$RUNTIMES_DIR"
  chmod 0755 "$(dirname "$RUNTIMES_DIR")" "$RUNTIMES_DIR"
  runtime_args+=(--runtimes-dir "$RUNTIMES_DIR")
fi
wheels=$(find "$CACHE/wheels" -maxdepth 2 -path '*/ipykernel-*/.complete' -printf '%h\n' \
  2>/dev/null | head -1 || true)
if "$PYTHON" -m jupyter tfenv runtime list ${RUNTIMES_DIR:+--runtimes-dir "$RUNTIMES_DIR"} \
  2>/dev/null | grep -qx "cp311-$(uname -m)"; then
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
AS_USER=()
SHARED=0
if [ "$(id -u)" -eq 0 ]; then
  # Kernels never run as root. As root, JupyterLab itself runs as a non-root user, the one
  # its kernels run as: a server of another uid than its kernels makes folders (New
  # Folder, uploads, notebooks) its kernels cannot write into.
  DEMO_USER=${DEMO_USER:-tfenv}
  if ! getent passwd "$DEMO_USER" >/dev/null; then
    say "creating the user '$DEMO_USER' that JupyterLab and its kernels run as"
    useradd --create-home --user-group --shell /bin/bash "$DEMO_USER"
  fi
  KUID=$(id -u "$DEMO_USER")
  KGID=$(id -g "$DEMO_USER")
  [ "$KUID" -ne 0 ] || die "DEMO_USER=$DEMO_USER is uid 0; pick a non-root user"
  DEMO_HOME=$(getent passwd "$DEMO_USER" | cut -d: -f6)
  # The server starts containers: the user joins the Docker socket's group.
  socket=${DOCKER_HOST:-unix:///var/run/docker.sock}
  socket=${socket#unix://}
  if [ -S "$socket" ]; then
    group=$(stat -c %G "$socket")
    [ "$group" != root ] ||
      die "the Docker socket $socket is root's only: start dockerd with a socket group (-G docker)"
    if ! id -nG "$DEMO_USER" | tr ' ' '\n' | grep -qx "$group"; then
      say "adding '$DEMO_USER' to the group '$group' of the Docker socket $socket"
      usermod -aG "$group" "$DEMO_USER"
    fi
  fi
  # setpriv execs (no child process): the server's pid is the one the demo waits for,
  # and the one its kernel containers are labelled with. HOME and the user's own Jupyter
  # folders, not root's.
  AS_USER=(setpriv --reuid="$KUID" --regid="$KGID" --init-groups
    env -u XDG_RUNTIME_DIR -u XDG_DATA_HOME -u XDG_CONFIG_HOME -u XDG_CACHE_HOME
    -u JUPYTER_CONFIG_DIR -u JUPYTER_DATA_DIR -u JUPYTER_RUNTIME_DIR
    HOME="$DEMO_HOME" USER="$DEMO_USER" LOGNAME="$DEMO_USER")
  SHARED=0
  if ! "${AS_USER[@]}" "$PYTHON" -c 'import jupyter_tfenv' >/dev/null 2>&1; then
    # This clone or its Python is in a folder only root can read (/root): JupyterLab
    # stays root, its kernels run as DEMO_USER, and the notebook folder is shared with
    # them: their group, setgid (what JupyterLab makes in it gets that group) and umask
    # 002 (group-writable).
    say "'$DEMO_USER' cannot run $PYTHON (a folder only root can read, such as /root):"
    say "JupyterLab runs as root and shares the notebook folder with the kernels' group."
    AS_USER=()
    SHARED=1
    export JUPYTER_TFENV_KERNEL_UID=$KUID JUPYTER_TFENV_KERNEL_GID=$KGID
    lab_args+=(--allow-root)
  elif ! "${AS_USER[@]}" "$PYTHON" -c 'import docker; docker.from_env().ping()' >/dev/null 2>&1; then
    die "the user '$DEMO_USER' cannot reach the Docker engine ($socket)"
  fi
  DEMO_DIR=${DEMO_DIR:-/tmp/tfenv-demo}
  lab_args+=(--DockerKernelProvisioner.runtimes_dir="$RUNTIMES_DIR")
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
  if [ "$SHARED" = 1 ]; then
    chmod 2775 "$DEMO_DIR"
    chmod 0664 "$DEMO_DIR/demo.ipynb"
    umask 002
  fi
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
  (cd "$DEMO_DIR" && exec "${AS_USER[@]}" "$PYTHON" -m jupyter lab "${lab_args[@]}" </dev/null >"$LOG" 2>&1) &
  LAB_PID=$!
  say "check: JupyterLab (pid $LAB_PID) on http://127.0.0.1:$PORT, notebooks in $DEMO_DIR"
  "$PYTHON" scripts/demo_check.py --url "http://127.0.0.1:$PORT" --pid "$LAB_PID" \
    --kernel tfenv-tf-2.20-cpu --expect 2.20.0 --cold tfenv-tf-2.19-cpu
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
if [ -n "${KUID:-}" ] && [ "$SHARED" = 0 ]; then
  say "user:      JupyterLab and its kernels run as $DEMO_USER (uid $KUID, gid $KGID), not root."
  say "           On your own machine, run JupyterLab as yourself: kernels then run as you."
elif [ -n "${KUID:-}" ]; then
  say "user:      kernels run as $DEMO_USER (uid $KUID); JupyterLab runs as root and makes"
  say "           files group $DEMO_USER, group-writable, in $DEMO_DIR (setgid, umask 002)."
fi
if [ "$START_LAB" = 0 ]; then
  say "prepared. Start JupyterLab with:"
  printf '[demo]   cd %q && JUPYTER_TOKEN=%q' "$DEMO_DIR" "$JUPYTER_TOKEN"
  printf ' %q' "${AS_USER[@]}" "$PYTHON" -m jupyter lab "${lab_args[@]}"
  echo
  say "then open $URL"
  exit 0
fi
say "starting JupyterLab on http://127.0.0.1:$PORT (Ctrl-C stops it) ..."
echo
cd "$DEMO_DIR"
"${AS_USER[@]}" "$PYTHON" -m jupyter lab "${lab_args[@]}" </dev/null &
LAB_PID=$!
# A background job ignores SIGINT: Ctrl-C reaches this script, which stops JupyterLab
# with SIGTERM (it shuts its kernels and their containers down, then exits).
trap 'kill -TERM "$LAB_PID" 2>/dev/null || true' INT TERM HUP
# JupyterLab's own last line is its URL with the token masked: once it answers, the usable
# URL comes last.
if "$PYTHON" - "http://127.0.0.1:$PORT" "$LAB_PID" <<'PY'; then
import os, sys, time, urllib.request
base, pid = sys.argv[1], int(sys.argv[2])
request = urllib.request.Request(
    f"{base}/api/status", headers={"Authorization": f"token {os.environ['JUPYTER_TOKEN']}"}
)
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)
    try:
        with urllib.request.urlopen(request, timeout=2):
            sys.exit(0)
    except OSError:
        time.sleep(0.2)
sys.exit(1)
PY
  echo
  say "JupyterLab is up ($((SECONDS - T0)) s). Open (pick a 'TensorFlow ...' kernel; Ctrl-C stops):"
  say "  $URL"
  echo
fi
rc=0
while kill -0 "$LAB_PID" 2>/dev/null; do
  rc=0
  wait "$LAB_PID" || rc=$?
done
exit "$rc"
