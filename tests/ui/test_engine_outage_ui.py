"""The panel while the Docker engine is away (issue 24, item 5): it says so, with the
server's reason, and goes back to the normal view by itself once the engine answers.

Real fault injection, as in tests/backends/test_engine_outage.py: a dockerd of this
module's own (tests/support/gpu_engine.py's TestEngine: own data root and socket,
``--live-restore``), a real JupyterLab whose tfenv extension talks to it through
DOCKER_HOST, Debian's Chromium, a running kernel of the small python image. The engine is
stopped with SIGTERM (what an upgrade of docker does) and started again; the kernel keeps
its variables and computes throughout (its sockets never pass through dockerd).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.gpu_engine import TestEngine

from .conftest import screenshot_dir
from .helpers import KERNEL_TIMEOUT_MS, expect_output, new_notebook, wait_kernel_idle
from .lab import PY_IMAGE, LabServer, start_lab

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
STATE = f"{PANEL} .jp-tfenv-state"
STATUS_ITEM = ".jp-tfenv-status-item"
DISPLAY_NAME = "Python 3.11 (outage test)"
CATALOG: list[dict[str, Any]] = [{"id": "py", "image": PY_IMAGE, "display_name": DISPLAY_NAME}]


@pytest.fixture(scope="module")
def lab(outage_engine: TestEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab of this module's own, its tfenv extension on the outage engine."""
    server = start_lab(
        tmp_path_factory.mktemp("lab"), CATALOG, extra_env={"DOCKER_HOST": outage_engine.url}
    )
    try:
        yield server
    finally:
        if outage_engine.client is None:
            outage_engine.start()
        assert outage_engine.client is not None
        left = server.stop(outage_engine.client)
        assert not left, f"JupyterLab left kernel containers behind: {left}"


def run_next(page: Any, notebook: Any, index: int, code: str) -> None:
    """Type ``code`` into cell ``index`` and press Shift+Enter (a new cell follows)."""
    cell = notebook.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")


def outage_seen(page: Any, notebook: Any, engine: TestEngine) -> None:
    """What the panel and the status bar show while the engine is away."""
    from playwright.sync_api import expect

    state = page.locator(STATE)
    expect(state).to_have_attribute("data-tfenv-state", "engine-unreachable")
    expect(state).to_have_attribute("data-tfenv-reason", "engine-unreachable")
    expect(state.locator(".jp-tfenv-state-title")).to_have_text("Docker engine unreachable")
    message = state.locator(".jp-tfenv-server-message")
    expect(message).to_contain_text("Cannot reach the Docker engine")
    expect(message).to_contain_text(engine.url.removeprefix("unix://"))
    expect(message).to_contain_text("systemctl start docker")
    expect(state.locator(".jp-tfenv-engine-hint")).to_contain_text("admin to start it")
    # Not a death: no "Kernel dead", no restart button.
    expect(state).not_to_contain_text(re.compile(r"\bdied\b|\bdead\b", re.IGNORECASE))
    expect(state.locator(".jp-tfenv-restart")).to_have_count(0)
    # The last facts read stay, marked stale; the status bar says it in two words.
    expect(page.locator(f"{PANEL} .jp-tfenv-kernel")).to_have_attribute("data-tfenv-stale", "true")
    status = page.locator(STATUS_ITEM)
    expect(status).to_have_attribute("data-tfenv-state", "engine-unreachable")
    expect(status.locator(".jp-tfenv-status-problem")).to_have_text("engine unreachable")
    page.locator(PANEL).screenshot(
        path=str(screenshot_dir() / "panel-engine-unreachable.png"), animations="disabled"
    )
    print(f"\n[ui] panel during the outage: {state.inner_text()!r}")

    # It is not a dead kernel: it computes on without the engine.
    run_next(page, notebook, 1, "print(x + 1)")
    expect_output(notebook, "43", index=1)
    expect(state).to_have_attribute("data-tfenv-state", "engine-unreachable")


def test_the_panel_says_the_engine_is_away_and_recovers_by_itself(
    page: Any, lab: LabServer, outage_engine: TestEngine
) -> None:
    from playwright.sync_api import expect

    notebook = new_notebook(page, DISPLAY_NAME)
    wait_kernel_idle(page, notebook)
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    state = page.locator(STATE)
    expect(state).to_have_attribute("data-tfenv-state", "ok", timeout=KERNEL_TIMEOUT_MS)
    run_next(page, notebook, 0, "x = 42; print(x)")
    expect_output(notebook, "42", index=0)
    [container] = outage_engine.containers()

    # The engine goes away under the running kernel; the panel finds out by polling.
    outage_engine.stop_daemon()
    try:
        outage_seen(page, notebook, outage_engine)
    finally:
        # Back (live-restore: the same container); also after a failure, so that the
        # kernel is shut down with its container.
        outage_engine.start()
    assert [c.id for c in outage_engine.containers()] == [container.id]
    # No click: the panel's own polling.
    expect(state).to_have_attribute("data-tfenv-state", "ok", timeout=KERNEL_TIMEOUT_MS)
    expect(state).to_contain_text(f"container {container.id[:12]}")
    expect(page.locator(f"{PANEL} .jp-tfenv-kernel")).not_to_have_attribute(
        "data-tfenv-stale", "true"
    )
    status = page.locator(STATUS_ITEM)
    expect(status).not_to_have_attribute("data-tfenv-state", "engine-unreachable")
    expect(status.locator(".jp-tfenv-status-problem")).to_have_count(0)
    run_next(page, notebook, 2, "print(x + 1)")
    expect_output(notebook, "43", index=2)
    page.locator(PANEL).screenshot(
        path=str(screenshot_dir() / "panel-engine-back.png"), animations="disabled"
    )
