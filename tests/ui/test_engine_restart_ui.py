"""A kernel restarted because the Docker engine restarted under it, in Chromium (issue
24, item 3): JupyterLab says why, once, in a notification that stays, and the panel's
kernel section says it too.

Real fault injection, as in tests/backends/test_engine_restart.py: a dockerd of this
module's own *without* live-restore (the ``restart_engine`` fixture), a real JupyterLab
whose tfenv extension talks to it through DOCKER_HOST, Debian's Chromium, a running
kernel of the small python image. The engine is stopped with SIGTERM (its kernel container
with it) and started again; jupyter's restarter starts the kernel again in a new
container, and JupyterLab tells it once.
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
TOAST = ".jp-toastContainer .jp-Notification-Toast-warning"
DISPLAY_NAME = "Python 3.11 (restart test)"
CATALOG: list[dict[str, Any]] = [{"id": "py", "image": PY_IMAGE, "display_name": DISPLAY_NAME}]
SAID = "the kernel was restarted in a new container"


@pytest.fixture(scope="module")
def lab(
    restart_engine: TestEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabServer]:
    """A JupyterLab of this module's own, its tfenv extension on the restart engine."""
    server = start_lab(
        tmp_path_factory.mktemp("lab"), CATALOG, extra_env={"DOCKER_HOST": restart_engine.url}
    )
    try:
        yield server
    finally:
        if restart_engine.client is None:
            restart_engine.start()
        assert restart_engine.client is not None
        left = server.stop(restart_engine.client)
        assert not left, f"JupyterLab left kernel containers behind: {left}"


def run_next(page: Any, notebook: Any, index: int, code: str) -> None:
    """Type ``code`` into cell ``index`` and press Shift+Enter (a new cell follows)."""
    cell = notebook.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")


def test_jupyterlab_says_the_engine_restarted_the_kernel(
    page: Any, lab: LabServer, restart_engine: TestEngine
) -> None:
    from playwright.sync_api import expect

    notebook = new_notebook(page, DISPLAY_NAME)
    wait_kernel_idle(page, notebook)
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    state = page.locator(STATE)
    expect(state).to_have_attribute("data-tfenv-state", "ok", timeout=KERNEL_TIMEOUT_MS)
    run_next(page, notebook, 0, "x = 42; print(x)")
    expect_output(notebook, "42", index=0)
    [old] = restart_engine.containers()

    restart_engine.stop_daemon()  # SIGTERM: without live-restore it stops the kernel
    restart_engine.start()

    notice = page.locator(f"{PANEL} .jp-tfenv-last-restart")
    toast = page.locator(TOAST).filter(has_text="kernel restarted in a new container")
    try:
        expect(notice).to_have_attribute(
            "data-tfenv-restart-reason", "engine-restart", timeout=KERNEL_TIMEOUT_MS
        )
        expect(notice).to_contain_text(SAID)
        expect(toast).to_have_count(1)
    except AssertionError:
        kernels = lab.api("GET", "api/kernels")
        statuses = [lab.api("GET", f"tfenv/kernels/{k['id']}") for k in kernels]
        print(f"\n[ui] kernels: {statuses}\n[ui] panel: {page.locator(PANEL).inner_text()!r}")
        print(f"[ui] toasts: {page.locator('.jp-toastContainer').all_inner_texts()!r}")
        log = lab.log_path.read_text(errors="replace").splitlines()
        said = ("tfenv: kernel", "Restarter", "did not start", "Error", "restarted")
        print("\n".join(line[:300] for line in log if any(w in line for w in said)))
        raise
    # A toast shows 140 characters: the restart in a few words (the browser's clock) and
    # a "Details" button to the panel, whose kernel section has the server's message.
    expect(toast).to_contain_text(re.compile(r"Docker engine restarted at \d\d:\d\d"))
    for words in ("variables lost", "checkpoints in $TFENV_CHECKPOINT_DIR kept"):
        expect(toast).to_contain_text(words)
    expect(toast.locator("button", has_text="Details")).to_have_count(1)
    for words in ("variables are lost", "$TFENV_CHECKPOINT_DIR are kept", "live-restore"):
        expect(notice).to_contain_text(words)
    print(f"\n[ui] the notification: {toast.inner_text()!r}")
    page.screenshot(path=str(screenshot_dir() / "engine-restart-notice.png"), animations="disabled")

    # A fresh kernel in a new container (that x is gone is checked through the kernel
    # manager in tests/backends/test_engine_restart.py).
    expect(state).to_have_attribute("data-tfenv-state", "ok", timeout=KERNEL_TIMEOUT_MS)
    running = [c.id for c in restart_engine.containers() if c.status == "running"]
    assert len(running) == 1 and running != [old.id], running
    expect(state).to_contain_text(f"container {running[0][:12]}")
    # Told once: the panel's polling does not tell it again.
    page.wait_for_timeout(6000)
    expect(toast).to_have_count(1)

    # The page reaches the new kernel without a reload (server/kernel_ws.py): its status
    # is idle again and the next cell runs there, in a fresh namespace.
    dialog = page.locator(".jp-Dialog").filter(has_text="Kernel Restarting")
    if dialog.count():
        dialog.locator("button.jp-mod-accept").click()
    wait_kernel_idle(page, notebook)
    run_next(page, notebook, 1, "print('x' in globals())")
    expect_output(notebook, "False", index=1)
