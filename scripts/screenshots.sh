#!/usr/bin/env bash
# Refresh the screenshots in docs/screenshots/ (README, docs/jupyterhub.md) from the
# browser tests, deliberately: a plain test run writes its screenshots to a temporary
# folder and never touches tracked files.
#
#   bash scripts/screenshots.sh [PYTEST ARGS ...]
#
# Runs setup (unless TFENV_TEST_SKIP_SETUP=1), then the browser tests that take them
# (tests/ui, tests/hub/test_hub_lab.py) with TFENV_SCREENSHOTS=docs/screenshots. Review
# `git diff --stat docs/screenshots` and commit what changed on purpose.
set -euo pipefail
# shellcheck source=scripts/venv.sh
. "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$REPO"
if [ "${TFENV_TEST_SKIP_SETUP:-0}" != 1 ]; then
  bash scripts/setup.sh
fi
export TFENV_SCREENSHOTS="$REPO/docs/screenshots"
"$PYTHON" -m pytest -q tests/ui/test_panel.py tests/ui/test_checkpoints_ui.py \
  tests/ui/test_tensorboard_ui.py \
  tests/hub/test_hub_lab.py "$@"
git status --short docs/screenshots
