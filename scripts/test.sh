#!/usr/bin/env bash
# Run every check of jupyter_tfenv: setup, linters, type checks, then the test suite.
#
#   bash scripts/test.sh [PYTEST ARGS ...]
#
# Arguments go to pytest, e.g. `bash scripts/test.sh -k kernel -x` (jest, the frontend's
# unit tests, runs only without arguments). Every step runs even when an earlier one
# failed (setup excepted); the exit status is non-zero when any failed, and a summary
# line lists them. pytest collecting no test at all (exit 5) is a failure.
#
# Environment: TFENV_TEST_SKIP_SETUP=1 (reuse the current setup),
# TFENV_TEST_SKIP_LINT=1 (tests only), TFENV_TEST_FORMAT=0 (skip `ruff format --check`).
set -uo pipefail

# Every step runs with the project's own .venv (made by scripts/setup.sh).
# shellcheck source=scripts/venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/venv.sh" || exit 1
cd "$REPO" || exit 1
T0=$SECONDS
say() { echo "[test] $*"; }

if [ "${TFENV_TEST_SKIP_SETUP:-0}" != 1 ]; then
  if ! bash scripts/setup.sh; then
    say "FAILED: setup (scripts/setup.sh); nothing else ran"
    exit 1
  fi
fi
if [ ! -x "$PYTHON" ]; then
  say "FAILED: $PYTHON is missing: run scripts/setup.sh (TFENV_TEST_SKIP_SETUP=1 needs it)"
  exit 1
fi
say "python: $PYTHON ($("$PYTHON" --version 2>&1))"

passed=()
failed=()
step() {
  # step NAME COMMAND...: run one check, record its outcome.
  local name=$1 start=$SECONDS rc
  shift
  echo
  if declare -F "$1" >/dev/null; then say "=== $name"; else say "=== $name: $*"; fi
  "$@"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    passed+=("$name")
    say "--- $name: ok ($((SECONDS - start)) s)"
  else
    failed+=("$name")
    say "--- $name: FAILED (exit $rc, $((SECONDS - start)) s)"
  fi
  return 0
}

if [ "${TFENV_TEST_SKIP_LINT:-0}" != 1 ]; then
  step "ruff check" "$PYTHON" -m ruff check .
  if [ "${TFENV_TEST_FORMAT:-1}" != 0 ]; then
    step "ruff format" "$PYTHON" -m ruff format --check .
  fi
  step "mypy" "$PYTHON" -m mypy
  # The layers, the independent backends and no import circle (pyproject.toml,
  # [tool.importlinter]; docs/ARCHITECTURE.md says why), and no module over 600 lines
  # without a stated reason.
  step "import-linter" "$(dirname "$PYTHON")/lint-imports" --no-cache
  step "module sizes" "$PYTHON" scripts/check_module_size.py
  if node -e 'process.exit(require("./package.json").scripts?.["lint:check"] ? 0 : 1)'; then
    step "eslint+prettier" npm run --silent lint:check
  fi
  if node -e 'process.exit(require("./package.json").scripts?.["lint:cycles"] ? 0 : 1)'; then
    step "no TypeScript import circle" npm run --silent lint:cycles
  fi
fi

# shellcheck disable=SC2317  # called through step
pytest_run() {
  # --durations: the slowest tests, to see where the suite's time goes (limit: 45 minutes).
  say "$PYTHON -m pytest -ra --durations=30 $*"
  "$PYTHON" -m pytest -ra --durations=30 "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then
    say "pytest collected no tests (exit 5): that counts as a failure"
  fi
  return "$rc"
}
if [ $# -eq 0 ]; then
  # The frontend's unit tests (jest: the model and pure logic of the Lab extension).
  step "jest" npm test --silent -- --ci
fi
# Tests must never rewrite tracked files or leave new ones (screenshots go to a temporary
# folder; scripts/screenshots.sh refreshes docs/screenshots/ on purpose): `git status`
# before and after the run must agree.
tree_state() { git status --porcelain=v1 2>/dev/null; }
tree_before=$(tree_state)
step "pytest" pytest_run "$@"

# shellcheck disable=SC2317  # called through step
tree_unchanged() {
  local after
  after=$(tree_state)
  if [ "$after" != "$tree_before" ]; then
    say "the test run changed tracked files (tests must write elsewhere):"
    diff <(echo "$tree_before") <(echo "$after") | sed -n 's/^> /  /p'
    return 1
  fi
}
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  step "work tree unchanged" tree_unchanged
fi

echo
summary="$((${#passed[@]} + ${#failed[@]})) steps in $((SECONDS - T0)) s"
if [ ${#failed[@]} -eq 0 ]; then
  say "SUMMARY: all passed ($summary): ${passed[*]}"
  exit 0
fi
say "SUMMARY: FAILED: ${failed[*]} ($summary)${passed[*]:+; passed: ${passed[*]}}"
exit 1
