#!/usr/bin/env bash
# Prepare this machine for developing, testing and demoing jupyter_tfenv.
#
#   bash scripts/setup.sh [--tag-demo]
#
# Everything Python lives in the project-local virtual environment .venv/ (made here from
# scratch when missing or broken; nothing comes from the system Python's site-packages).
# Idempotent, and fast when already done:
#   1. Debian packages (scripts/debian-packages.txt, the one list): docker.io,
#      debootstrap, docker-registry, python3-venv, chromium and fonts, git;
#   2. .venv/ from TFENV_BASE_PYTHON (default python3, 3.10 or newer), with a current pip;
#   3. the package's build tools into .venv/ (pyproject.toml's [build-system] requires:
#      hatchling, and JupyterLab, whose `jupyter-builder` the labextension build calls);
#   4. the frontend: `npm ci` when node_modules is missing or out of date with
#      package-lock.json, then a labextension build (`npm run build`, .venv/bin on PATH)
#      when a source is newer than it;
#   5. the Python package, editable, with the test and lint extras, into .venv/; the
#      labextension is linked into the venv's Jupyter data dir (`jupyter builder
#      develop`), so later builds (`npm run build`) show up without a reinstall;
#      configurable-http-proxy (JupyterHub's proxy, for tests/hub) from npm, into .venv;
#   6. a Docker engine (scripts/start-dockerd.sh starts one when none answers);
#   7. the local test images (scripts/build_test_images.py, cached by recipe hash);
#      --tag-demo also tags them as the tensorflow/tensorflow:* names the demo uses.
#
# Then run anything with .venv/bin/python (or `. scripts/venv.sh` to put it on PATH).
#
# Environment: TFENV_BASE_PYTHON (interpreter the venv is made from; default python3),
# TFENV_VENV (default .venv), TFENV_DEV_CACHE (default ~/.cache/jupyter_tfenv-dev),
# TFENV_APT_EXTRA (more Debian packages), TFENV_SETUP_SKIP_IMAGES=1 (no Docker engine,
# no images: lint and unit tests only).
set -euo pipefail

# shellcheck source=scripts/venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$REPO"
BASE_PYTHON=${TFENV_BASE_PYTHON:-python3}
CACHE=${TFENV_DEV_CACHE:-$HOME/.cache/jupyter_tfenv-dev}
TAG_DEMO=0
for arg in "$@"; do
  case "$arg" in
    --tag-demo) TAG_DEMO=1 ;;
    -h | --help)
      sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'
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
step_time() { say "  ... $1 in $((SECONDS - $2)) s"; }
if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()
fi
pip_install() {
  # Some machines' pip.conf names local indexes that are not there: pip says so for
  # every package. Those lines only are dropped.
  local rc=0
  "$PYTHON" -m pip install --disable-pip-version-check --root-user-action=ignore \
    --progress-bar off -q "$@" 2>&1 |
    { grep -v "^WARNING: Location 'file:.*' is ignored" || true; } || rc=$?
  return "$rc"
}

# --------------------------------------------------------------------- 1. Debian packages
bash scripts/install-debian-packages.sh | sed 's/^/[setup] /'

# --------------------------------------------------------------------- 2. the venv
venv_works() {
  [ -x "$PYTHON" ] && "$PYTHON" -c 'import sys, pip; sys.exit(sys.prefix == sys.base_prefix)' \
    >/dev/null 2>&1
}
if venv_works; then
  say "venv: $VENV ($("$PYTHON" --version 2>&1))"
else
  t=$SECONDS
  command -v "$BASE_PYTHON" >/dev/null 2>&1 || die "$BASE_PYTHON not found (set TFENV_BASE_PYTHON=...)"
  "$BASE_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$("$BASE_PYTHON" --version 2>&1) is too old: jupyter_tfenv needs Python 3.10 or newer"
  [ -e "$VENV" ] && say "venv $VENV does not work: making it again"
  rm -rf "$VENV"
  say "creating the venv $VENV from $(command -v "$BASE_PYTHON") ($("$BASE_PYTHON" --version 2>&1)) ..."
  "$BASE_PYTHON" -m venv "$VENV" ||
    die "'$BASE_PYTHON -m venv' failed: on Debian, apt-get install python3-venv"
  pip_install --upgrade pip
  venv_works || die "the new venv $VENV does not work"
  step_time "venv made" "$t"
fi

# --------------------------------------------------------------------- 3. build tools
# The package's build requirements ([build-system] requires: hatchling, JupyterLab with its
# jupyter-builder) go in first: `npm run build` calls jupyter-builder.
build_reqs() {
  "$PYTHON" - <<'EOF'
import re
try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None
text = open("pyproject.toml", encoding="utf-8").read()
if tomllib is not None:
    config = tomllib.loads(text)
    reqs = list(config["build-system"]["requires"])
    hook = config["tool"]["hatch"]["build"]["hooks"]["jupyter-builder"]
    reqs += hook.get("dependencies", [])
else:
    reqs = re.findall(r'"([^"]+)"', re.search(r"requires = \[(.*?)\]", text, re.S).group(1))
    reqs.append("hatch-jupyter-builder>=0.5")
# What hatchling's get_requires_for_build_editable adds: the editable install (step 5)
# runs without build isolation, on these tools.
reqs.append("editables")
print("\n".join(reqs))
EOF
}
mapfile -t BUILD_REQS < <(build_reqs)
[ ${#BUILD_REQS[@]} -gt 0 ] || die "no [build-system] requires found in pyproject.toml"
if [ -x "$VENV/bin/jupyter-builder" ] && "$PYTHON" -c 'import hatchling, hatch_jupyter_builder, editables' 2>/dev/null; then
  say "build tools present: ${BUILD_REQS[*]}"
else
  t=$SECONDS
  say "pip install the build tools: ${BUILD_REQS[*]} ..."
  pip_install "${BUILD_REQS[@]}"
  [ -x "$VENV/bin/jupyter-builder" ] ||
    die "$VENV/bin/jupyter-builder is missing after installing ${BUILD_REQS[*]}"
  step_time "build tools installed" "$t"
fi

# --------------------------------------------------------------------- 4. frontend
command -v node >/dev/null 2>&1 || die "node not found: install Node.js 20 or newer"
command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js 20 or newer"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "Node.js $(node --version) is too old: use Node.js 20 or newer"

if [ ! -f node_modules/.package-lock.json ] ||
  [ package-lock.json -nt node_modules/.package-lock.json ] ||
  ! npm ls --depth=0 >/dev/null 2>&1; then
  t=$SECONDS
  say "npm ci (frontend dependencies, from package-lock.json) ..."
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.package-lock.json
  step_time "npm ci" "$t"
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
  t=$SECONDS
  say "building the labextension (npm run build) ..."
  # tsc is incremental: without lib/, its build info would make it skip the emit.
  [ -f lib/index.js ] || rm -f tsconfig.tsbuildinfo
  npm run --silent build
  touch "$labext_stamp"
  step_time "labextension built" "$t"
else
  say "labextension is up to date"
fi

# --------------------------------------------------------------------- 5. Python package
stamp_key=$(
  {
    echo "$REPO $VENV"
    cat pyproject.toml package.json
  } | sha256sum | cut -c1-16
)
stamp="$VENV/.tfenv-setup-$stamp_key"
labext_dir="$VENV/share/jupyter/labextensions/jupyter-tfenv"
installed_here() {
  # The editable install points at this checkout, and the extras are importable.
  (cd / && "$PYTHON" - "$REPO" <<'EOF' >/dev/null 2>&1)
import importlib.metadata, importlib.util, os, sys
importlib.metadata.version("jupyter_tfenv")
import jupyter_tfenv
assert os.path.realpath(os.path.dirname(jupyter_tfenv.__file__)) == os.path.join(sys.argv[1], "jupyter_tfenv")
for mod in ("pytest", "pytest_jupyter", "jupyter_kernel_test", "ipykernel", "jupyterlab", "jupyter_builder", "jupyterhub", "playwright", "build", "ruff", "mypy"):
    assert importlib.util.find_spec(mod) is not None, mod
EOF
}
if [ -f "$stamp" ] && installed_here; then
  say "jupyter_tfenv is installed (editable) in $VENV"
else
  t=$SECONDS
  say "pip install -e .[test,lint] into $VENV (~15 s; more on a cold pip cache) ..."
  # A reinstall would remove the previous install's labextension files through the
  # symlink `jupyter builder develop` made, that is from this checkout: drop the link.
  if [ -L "$labext_dir" ]; then rm -f "$labext_dir"; fi
  # The labextension was built above: the build hook need not run npm again.
  # Its build tools are in the venv (step 3): no isolated build environment to download.
  HATCH_JUPYTER_BUILDER_SKIP_NPM=1 pip_install --no-build-isolation -e ".[test,lint]"
  installed_here || die "jupyter_tfenv or a test/lint dependency does not import after pip install"
  rm -f "$VENV"/.tfenv-setup-*
  date -u +%FT%TZ >"$stamp"
  step_time "installed" "$t"
fi

# Link the built labextension into the venv's Jupyter data dir (a symlink to this checkout).
if [ "$(readlink -f "$labext_dir" 2>/dev/null)" != "$REPO/jupyter_tfenv/labextension" ]; then
  say "linking the labextension into $labext_dir"
  "$PYTHON" -m jupyter builder develop --overwrite . >/dev/null
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

# configurable-http-proxy: JupyterHub's proxy, for the JupyterHub tests (tests/hub). From
# npm, into the venv too (.venv/lib/node, linked into .venv/bin), never npm -g.
chp="$VENV/bin/configurable-http-proxy"
if [ -x "$chp" ] && "$chp" --version >/dev/null 2>&1; then
  say "configurable-http-proxy $("$chp" --version 2>/dev/null) is in $VENV"
else
  t=$SECONDS
  say "npm install configurable-http-proxy into $VENV/lib/node (JupyterHub's proxy) ..."
  npm install --prefix "$VENV/lib/node" --no-audit --no-fund --loglevel=error \
    "configurable-http-proxy@^5" >/dev/null
  ln -sfn "$VENV/lib/node/node_modules/.bin/configurable-http-proxy" "$chp"
  "$chp" --version >/dev/null || die "configurable-http-proxy does not run after npm install"
  step_time "configurable-http-proxy installed" "$t"
fi

# --------------------------------------------------------------------- 6.+7. Docker, images
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
  say "test images (scripts/build_test_images.py${image_args[*]:+ ${image_args[*]}}; cold: ~2 min) ..."
  TFENV_DEV_CACHE=$CACHE "$PYTHON" scripts/build_test_images.py "${image_args[@]}" ||
    die "building the test images failed (logs: $CACHE/logs)"
fi

say "done in $((SECONDS - T0)) s"
