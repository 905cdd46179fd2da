# Sourced by the scripts: the project-local virtual environment every command runs in.
#
#   . scripts/venv.sh        # sets REPO, VENV, PYTHON and puts $VENV/bin first on PATH
#
# scripts/setup.sh creates $VENV from scratch when it is missing or broken; nothing is
# taken from the system Python's site-packages. TFENV_VENV moves it (default: .venv in
# the checkout); TFENV_BASE_PYTHON is the interpreter it is made from (default: python3).
# shellcheck shell=bash
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
VENV=${TFENV_VENV:-$REPO/.venv}
PYTHON=$VENV/bin/python
case ":$PATH:" in
  *":$VENV/bin:"*) ;;
  *) PATH="$VENV/bin:$PATH" ;;
esac
export REPO VENV PYTHON PATH
# Where a command installs nothing else: pip must not fall back to a user site.
export PIP_REQUIRE_VIRTUALENV=1
