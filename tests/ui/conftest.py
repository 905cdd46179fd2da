"""Fixtures of the browser tests: a real JupyterLab, Debian's Chromium, the test images.

- ``lab`` (module): JupyterLab as a subprocess (see ``lab.py``) with the UI catalog; at the
  end it is shut down and no container of its pid may be left.
- ``browser`` (module): Chromium from ``/usr/bin/chromium`` driven by Python playwright
  (its driver ships in the wheel; no browser download). The sync API is used from plain
  (non-async) tests, so no asyncio loop is running in the test's thread.
- ``page`` (function): a fresh browser context on a fresh, reset workspace of ``lab``;
  its console errors and page errors are printed at the end, and the test's kernels are
  shut down afterwards.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from .lab import CHROMIUM_ARGS, UI_CATALOG, LabServer, chromium_executable, start_lab

REPO = Path(__file__).resolve().parents[2]
#: Where the browser tests' screenshots go unless ``$TFENV_SCREENSHOTS`` says otherwise:
#: outside the work tree, so that a test run never rewrites tracked files (CI keeps the
#: folder as an artefact). ``bash scripts/screenshots.sh`` refreshes ``docs/screenshots/``.
SCREENSHOTS = Path(tempfile.gettempdir()) / "tfenv-screenshots"

#: Playwright's default wait for one action or assertion, in ms: generous for a loaded CI.
DEFAULT_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_executable()
    if path is None:
        pytest.fail("Chromium is not installed: run scripts/setup.sh (Debian package chromium)")
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install -e .[test] (playwright)"
    )
    # expect() has its own default wait (5 s), which the context's default does not
    # change: a panel still probing its image on a loaded CI machine needs longer.
    sync_api.expect.set_options(timeout=DEFAULT_TIMEOUT_MS)
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def lab_catalog() -> list[dict[str, Any]]:
    """The environments of the module's JupyterLab (a module may override this fixture)."""
    return list(UI_CATALOG)


@pytest.fixture(scope="module")
def lab(
    images: docker.DockerClient,
    lab_catalog: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LabServer]:
    server = start_lab(tmp_path_factory.mktemp("lab"), lab_catalog)
    try:
        yield server
    finally:
        left = server.stop(images)
        print(f"\n[ui] JupyterLab pid {server.pid} stopped; log: {server.log_path}")
        assert server.proc.returncode is not None
        assert not left, f"JupyterLab left kernel containers behind: {left}"


@pytest.fixture
def page(browser: Any, lab: LabServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on(
        "console",
        lambda msg: (
            problems.append(f"console.{msg.type}: {msg.text}")
            if msg.type in ("error", "warning")
            else None
        ),
    )
    tab.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    workspace = re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)[:60]
    open_lab(tab, lab, workspace)
    try:
        yield tab
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            shot = lab.base / f"failure-{workspace}.png"
            try:
                tab.screenshot(path=str(shot))
                print(f"\n[ui] screenshot at the failure: {shot}")
            except Exception as err:  # best effort: the page may be gone
                print(f"\n[ui] no screenshot at the failure: {err}")
            print(f"[ui] server log (tail):\n{lab.log_tail(40)}")
        if problems:
            print(f"\n[ui] browser console of {request.node.name}:")
            for line in problems:
                print(f"[ui]   {line[:500]}")
        context.close()
        lab.shutdown_kernels()


def open_lab(tab: Any, lab: LabServer, workspace: str) -> None:
    """Open JupyterLab on a reset workspace and wait until its layout is restored."""
    tab.goto(lab.lab_url(workspace))
    tab.wait_for_function("() => window.jupyterapp !== undefined")
    tab.evaluate("() => window.jupyterapp.restored")
    tab.locator("#jp-main-dock-panel").wait_for()


def screenshot_dir() -> Path:
    """The folder for screenshots: ``$TFENV_SCREENSHOTS``, else a temporary one."""
    path = Path(os.environ.get("TFENV_SCREENSHOTS") or SCREENSHOTS)
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ui: browser test (Chromium, JupyterLab, kernels)")


# pytest_jupyter's autouse fixtures make an asyncio loop the thread's current one and
# close it after each test; playwright's sync API runs its own loop in this thread. The
# browser tests use no in-process server, so they do without both.
@pytest.fixture
def jp_asyncio_loop() -> None:
    return None


@pytest.fixture
def jp_server_cleanup() -> None:
    return None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # The call's report on the item, so that ``page`` can take a screenshot of a failure.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
