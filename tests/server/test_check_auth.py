"""The CI check that every REST handler is authenticated and authorized."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import check_auth  # scripts/ is on sys.path (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]


def test_every_tfenv_handler_passes():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_auth.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    assert "0 problem(s)" in result.stdout


def test_a_handler_that_forgot_is_caught(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "class H(TFEnvHandler):\n"
        "    @web.authenticated\n"
        "    async def get(self):\n        pass\n\n"
        "    @authorized\n"
        "    async def delete(self):\n        pass\n"
    )
    problems = check_auth.problems_in(bad)
    assert problems == [
        "bad.py:3 H.get lacks @authorized",
        "bad.py:7 H.delete lacks @web.authenticated",
    ]
