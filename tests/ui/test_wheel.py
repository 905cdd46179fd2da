"""The wheel works without Node.js: a clean venv with only the wheel and JupyterLab.

As the JupyterLab extension template's "isolated" check does: take the wheel users get
(``python -m build`` of a fresh clone, tests/support/dist.py), install it and ``jupyterlab`` into
a new venv, hide Node.js, then

- ``jupyter labextension list`` / ``jupyter server extension list`` show both parts OK;
- ``python -m jupyterlab.browser_check --no-browser-test`` passes (the server starts with
  the extension and logs no error);
- ``jupyterlab.browser_check`` with a browser passes too: its browser half (JupyterLab's
  ``browser-test.js`` needs Node.js and a browser download) is ``browser_check_page.py``,
  which opens the page in Debian's Chromium, fails on any error JupyterLab collected, and
  checks that the jupyter-tfenv plugins are activated.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.dist import Dists

from .lab import chromium_executable

REPO = Path(__file__).resolve().parents[2]
LABEXT = REPO / "jupyter_tfenv" / "labextension"

pytestmark = [pytest.mark.ui, pytest.mark.slow]

#: Run by the venv's Python: browser_check, with browser_check_page.py as its browser.
BROWSER_CHECK = """
import os
import sys

import jupyterlab.browser_check as browser_check

driver = sys.argv[1:3]
del sys.argv[1:3]


async def run_browser(url):
    # The browser is test tooling, not the product: it gets the machine's PATH (Debian's
    # /usr/bin/chromium is a shell script); the server keeps its PATH without Node.js.
    env = {**os.environ, "PATH": os.environ["TFENV_BROWSER_PATH"]}
    await browser_check.run_async_process([*driver, url], env=env)


browser_check.run_browser = run_browser


class BrowserApp(browser_check.BrowserApp):
    # As in `python -m jupyterlab.browser_check`: the extension point is this module.
    name = __name__


def _jupyter_server_extension_points():
    return [{"module": __name__, "app": BrowserApp}]


if __name__ == "__main__":
    BrowserApp.launch_instance()
"""

#: Tools the no-Node PATH offers besides the venv (Debian's /bin is /usr/bin: not on PATH).
TOOLS = ("sh", "bash", "env", "uname", "cat", "ls", "id")


def run(args: list[str], *, timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    start = time.monotonic()
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )  # type: ignore[call-overload]
    print(
        f"[wheel] {Path(args[0]).name} {' '.join(args[1:4])} ...: "
        f"exit {result.returncode} in {time.monotonic() - start:.1f} s"
    )
    return result


def test_wheel_works_without_nodejs(tmp_path: Path, dists: Dists) -> None:
    chromium = chromium_executable()
    if chromium is None:
        pytest.fail("Chromium is not installed: run scripts/setup.sh (Debian package chromium)")
    # The wheel `python -m build` made from the sdist of a fresh clone (tests/support/dist.py).
    wheel = dists.wheel
    names = subprocess.run(
        [sys.executable, "-m", "zipfile", "-l", str(wheel)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "share/jupyter/labextensions/jupyter-tfenv/package.json" in names
    assert "share/jupyter/labextensions/jupyter-tfenv/static/style.js" in names
    assert "etc/jupyter/jupyter_server_config.d/jupyter_tfenv.json" in names

    venv = tmp_path / "venv"
    result = run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert result.returncode == 0, result.stderr
    python = venv / "bin" / "python"
    result = run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            "--progress-bar",
            "off",
            str(wheel),
            "jupyterlab",
        ],
        timeout=900,
    )
    assert result.returncode == 0, f"pip install failed:\n{result.stdout}\n{result.stderr}"

    # A PATH with the venv and a few tools, and no Node.js anywhere on it.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    path = f"{venv / 'bin'}:{tools}"
    for program in ("node", "nodejs", "npm", "npx"):
        assert shutil.which(program, path=path) is None, f"{program} is on the test PATH"
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": path,
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "TFENV_CHROMIUM": chromium,
    }
    if "DOCKER_HOST" in os.environ:
        env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    result = run(
        [str(python), "-c", "import shutil; print(shutil.which('node'))"], timeout=60, env=env
    )
    assert result.stdout.strip() == "None"

    listed = run([str(venv / "bin" / "jupyter"), "labextension", "list"], timeout=120, env=env)
    out = listed.stdout + listed.stderr
    assert listed.returncode == 0, out
    assert any(
        "jupyter-tfenv" in line and "enabled" in line and "OK" in line for line in out.splitlines()
    ), out
    assert str(venv) in out, f"the labextension is not the venv's:\n{out}"
    listed = run(
        [str(venv / "bin" / "jupyter"), "server", "extension", "list"], timeout=120, env=env
    )
    out = listed.stdout + listed.stderr
    assert any("jupyter_tfenv" in line and "OK" in line for line in out.splitlines()), out

    # JupyterLab's own check, as the extension template runs it in CI.
    root = ["--allow-root"] if os.getuid() == 0 else []
    result = run(
        [str(python), "-m", "jupyterlab.browser_check", "--no-browser-test", *root],
        timeout=300,
        env=env,
        cwd=home,
    )
    assert result.returncode == 0, f"browser_check failed:\n{result.stdout}\n{result.stderr}"

    # The same check with a real browser: Debian's Chromium instead of browser-test.js.
    script = tmp_path / "browser_check_chromium.py"
    script.write_text(BROWSER_CHECK)
    page = Path(__file__).with_name("browser_check_page.py")
    shot = tmp_path / "browser_check.png"
    result = run(
        [
            str(python),
            str(script),
            sys.executable,
            str(page),
            f"--ServerApp.root_dir={home}",
            # window.jupyterapp, to list the activated plugins
            "--LabApp.expose_app_in_browser=True",
            *root,
        ],
        timeout=300,
        env={
            **env,
            "TFENV_BROWSER_CHECK_SCREENSHOT": str(shot),
            "TFENV_BROWSER_PATH": os.environ.get("PATH", os.defpath),
        },
        cwd=home,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"browser_check in Chromium failed:\n{output}"
    assert "browser_check_page: JupyterLab started without errors" in output, output
    assert "jupyter-tfenv:" in output, output
