#!/usr/bin/env bash
# Prepare this machine for developing, testing and demoing jupyter_tfenv.
#
#   bash scripts/setup.sh [--tag-demo]
#
# Idempotent, and fast when already done:
#   1. Debian packages: docker.io, debootstrap, python3-venv (the JupyterHub tests' users'
#      venv), and chromium with fonts for the browser tests (apt-get only when one is
#      missing; no browser download: Python playwright, from the test extra, drives
#      /usr/bin/chromium);
#   2. the frontend: `npm ci` when node_modules is missing or out of date with
#      package-lock.json, then a labextension build when a source is newer than it;
#   3. the Python package, editable, with the test and lint extras; the labextension is
#      linked into Jupyter's data dir (`jupyter builder develop`), so that later
#      builds (`npm run build`) show up without a reinstall;
#   4. a Docker engine (scripts/start-dockerd.sh starts one when none answers);
#   5. the local test images (scripts/build_test_images.py, cached by recipe hash);
#      --tag-demo also tags them as the tensorflow/tensorflow:* names the demo uses.
#
# Environment: PYTHON (default python3), TFENV_DEV_CACHE (default
# ~/.cache/jupyter_tfenv-dev), TFENV_APT_EXTRA (more Debian packages to install),
# TFENV_SETUP_SKIP_IMAGES=1 (no Docker engine, no images: lint and unit tests only).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd -P)
PYTHON=${PYTHON:-python3}
CACHE=${TFENV_DEV_CACHE:-$HOME/.cache/jupyter_tfenv-dev}
TAG_DEMO=0
for arg in "$@"; do
  case "$arg" in
    --tag-demo) TAG_DEMO=1 ;;
    -h | --help)
      sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "[setup] unknown argument: $arg (see --help)" >&2
      exit 2
      ;;
  esac
done

T0=$SECONDS
say() { echo "[setup] $*"; }
die() {
  echo "[setup] ERROR: $*" >&2
  exit 1
}
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()
fi

# --------------------------------------------------------------------- 1. Debian packages
# shellcheck disable=SC2206
APT_PACKAGES=(docker.io debootstrap python3-venv chromium fonts-liberation fonts-dejavu-core ${TFENV_APT_EXTRA:-})
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} yourself"
  say "installing Debian packages: ${missing[*]} ..."
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present: ${APT_PACKAGES[*]}"
fi

# --------------------------------------------------------------------- 2. frontend
command -v node >/dev/null 2>&1 || die "node not found: install Node.js 20 or newer"
command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js 20 or newer"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "Node.js $(node --version) is too old: use Node.js 20 or newer"

if [ ! -f node_modules/.package-lock.json ] ||
  [ package-lock.json -nt node_modules/.package-lock.json ] ||
  ! npm ls --depth=0 >/dev/null 2>&1; then
  say "npm ci (frontend dependencies, from package-lock.json) ..."
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
else
  say "node_modules is up to date"
fi

labext_stamp=jupyter_tfenv/labextension/package.json
labext_stale() {
  [ -f jupyter_tfenv/labextension/static/style.js ] || return 0
  [ -f "$labext_stamp" ] || return 0
  [ -n "$(find src style schema package.json tsconfig.json -newer "$labext_stamp" -type f \
    -print -quit 2>/dev/null)" ]
}
if labext_stale; then
  say "building the labextension (npm run build) ..."
  npm run --silent build
  touch "$labext_stamp"
else
  say "labextension is up to date"
fi

# configurable-http-proxy: JupyterHub's proxy, for the JupyterHub tests (tests/hub).
if command -v configurable-http-proxy >/dev/null 2>&1; then
  say "configurable-http-proxy $(configurable-http-proxy --version 2>/dev/null) is installed"
else
  say "npm install -g configurable-http-proxy (JupyterHub's proxy, for tests/hub) ..."
  "${SUDO[@]}" npm install -g --no-audit --no-fund --loglevel=error configurable-http-proxy
fi

# --------------------------------------------------------------------- 3. Python package
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "$("$PYTHON" --version 2>&1) is too old: jupyter_tfenv needs Python 3.10 or newer"

py_prefix=$("$PYTHON" -c 'import sys; print(sys.prefix)')
stamp_key=$(
  {
    echo "$REPO $py_prefix"
    cat pyproject.toml package.json
  } | sha256sum | cut -c1-16
)
stamp="$CACHE/setup/pip-$stamp_key"
labext_dir="$py_prefix/share/jupyter/labextensions/jupyter-tfenv"
installed_here() {
  # The editable install points at this checkout, and the extras are importable.
  (cd / && "$PYTHON" - "$REPO" <<'EOF' >/dev/null 2>&1)
import importlib.metadata, importlib.util, os, sys
importlib.metadata.version("jupyter_tfenv")
import jupyter_tfenv
assert os.path.realpath(os.path.dirname(jupyter_tfenv.__file__)) == os.path.join(sys.argv[1], "jupyter_tfenv")
for mod in ("pytest", "pytest_jupyter", "jupyter_kernel_test", "ipykernel", "jupyterlab", "jupyterhub", "playwright", "ruff", "mypy"):
    assert importlib.util.find_spec(mod) is not None, mod
EOF
}
if [ -f "$stamp" ] && installed_here; then
  say "jupyter_tfenv is installed (editable) in $py_prefix"
else
  say "pip install -e .[test,lint] into $py_prefix ..."
  # A reinstall would remove the previous install's labextension files through the
  # symlink `jupyter builder develop` made, that is from this checkout: drop the link.
  if [ -L "$labext_dir" ]; then rm -f "$labext_dir"; fi
  # The labextension was built above: the build hook need not run npm again.
  HATCH_JUPYTER_BUILDER_SKIP_NPM=1 "$PYTHON" -m pip install --disable-pip-version-check \
    --root-user-action=ignore --progress-bar off -q -e ".[test,lint]"
  installed_here || die "jupyter_tfenv or a test/lint dependency does not import after pip install"
  mkdir -p "$(dirname "$stamp")"
  date -u +%FT%TZ >"$stamp"
fi

# Link the built labextension into Jupyter's data dir (a symlink to this checkout).
if [ "$(readlink -f "$labext_dir" 2>/dev/null)" != "$REPO/jupyter_tfenv/labextension" ]; then
  say "linking the labextension into $labext_dir"
  if "$PYTHON" -c 'import jupyter_builder' 2>/dev/null; then
    "$PYTHON" -m jupyter builder develop --overwrite . >/dev/null
  else # JupyterLab < 4.6
    "$PYTHON" -m jupyter labextension develop --overwrite . >/dev/null
  fi
fi
if ! "$PYTHON" -m jupyter labextension list 2>&1 | grep -E "jupyter-tfenv .*enabled.*OK" >/dev/null; then
  "$PYTHON" -m jupyter labextension list >&2 || true
  die "JupyterLab does not list the jupyter-tfenv labextension as enabled and OK"
fi
if ! "$PYTHON" -m jupyter server extension list 2>&1 | grep -E "jupyter_tfenv .*OK" >/dev/null; then
  "$PYTHON" -m jupyter server extension list >&2 || true
  die "Jupyter Server does not list the jupyter_tfenv server extension as OK"
fi
say "labextension jupyter-tfenv and server extension jupyter_tfenv: enabled, OK"

# --------------------------------------------------------------------- 4.+5. Docker, images
if [ "${TFENV_SETUP_SKIP_IMAGES:-0}" = 1 ]; then
  say "TFENV_SETUP_SKIP_IMAGES=1: no Docker engine, no test images"
else
  if docker info >/dev/null 2>&1; then
    say "Docker engine answers ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
  else
    say "starting dockerd (scripts/start-dockerd.sh) ..."
    "${SUDO[@]}" bash scripts/start-dockerd.sh
    docker info >/dev/null 2>&1 ||
      die "the Docker engine runs but $(id -un) cannot reach it: add yourself to the docker group"
  fi
  image_args=()
  [ "$TAG_DEMO" = 1 ] && image_args+=(--tag-demo)
  say "test images (scripts/build_test_images.py${image_args[*]:+ ${image_args[*]}}; cold: ~5-10 min) ..."
  TFENV_DEV_CACHE=$CACHE "$PYTHON" scripts/build_test_images.py "${image_args[@]}" ||
    die "building the test images failed (logs: $CACHE/logs)"
fi

say "done in $((SECONDS - T0)) s"
