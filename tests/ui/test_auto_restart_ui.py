"""A tfenv kernel that died and was restarted automatically is usable again in the same
page, in Chromium: JupyterLab's kernel status returns to idle and the next cell runs,
without a reload (before the fix it stayed "starting": docs/operations.md).

Real parts: JupyterLab with the tfenv extension as a subprocess, Debian's Chromium, a
kernel container of the small python image; the kernel process ends itself with
``os._exit(1)`` and jupyter's restarter starts it again in a new container.
"""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import KERNEL_TIMEOUT_MS, expect_output, new_notebook, run_cell, wait_kernel_idle
from .lab import PY_IMAGE, LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

DISPLAY_NAME = "Python 3.11 (auto-restart test)"


@pytest.fixture(scope="module")
def lab_catalog() -> list[dict[str, Any]]:
    return [{"id": "py", "image": PY_IMAGE, "display_name": DISPLAY_NAME}]


def test_status_returns_to_idle_after_an_automatic_restart(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    notebook = new_notebook(page, DISPLAY_NAME)
    wait_kernel_idle(page, notebook)
    run_cell(page, notebook, "x = 42; print(x)", index=0)
    expect_output(notebook, "42", index=0)
    [before] = [k["id"] for k in lab.api("GET", "api/kernels")]

    notebook.locator(".jp-Notebook .jp-Cell").nth(0).locator(".cm-content").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below
    run_cell(page, notebook, "import os; os._exit(1)", index=1)
    dialog = page.locator(".jp-Dialog").filter(has_text="Kernel Restarting")
    dialog.wait_for(timeout=KERNEL_TIMEOUT_MS)
    dialog.locator("button.jp-mod-accept").click()

    try:
        wait_kernel_idle(page, notebook)
    except Exception as err:
        status = page.evaluate(
            """() => [...window.jupyterapp.shell.widgets('main')]
                .filter(w => w.sessionContext && w.sessionContext.session)
                .map(w => w.sessionContext.session.kernel)
                .map(k => k && [k.connectionStatus, k.status])"""
        )
        raise AssertionError(
            "After the automatic restart JupyterLab's kernel did not return to idle "
            f"(connection, status: {status}); the page's websocket does not reach the new "
            f"kernel. Server log:\n{lab.log_tail()}"
        ) from err
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    run_cell(page, notebook, "print('x' in globals())", index=2)
    expect_output(notebook, "False", index=2)
    assert [k["id"] for k in lab.api("GET", "api/kernels")] == [before], (
        "the restarted kernel keeps its id"
    )
    expect(page.locator(".jp-Dialog")).to_have_count(0)
