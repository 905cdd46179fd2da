"""A cell run while the notebook's kernel container is still starting (issue 19, item 3).

The user clicks an environment in the Launcher and presses Shift+Enter at once: the
notebook has no kernel yet (its container starts, TensorFlow is not loaded), so the run
must wait for the kernel and then happen, in order, instead of being dropped with an
empty ``[ ]`` prompt. Real JupyterLab, Debian's Chromium, a cold TF 2.19 container (the
UI catalog has no warm pool).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from .helpers import KERNEL_TIMEOUT_MS, expect_output, wait_kernel_idle
from .lab import LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

#: Whether the notebook in ``panel`` (by id) has no kernel connection yet.
NO_KERNEL_YET = """(id) => {
    const widget = [...window.jupyterapp.shell.widgets('main')].find(w => w.id === id);
    const context = widget && widget.sessionContext;
    return !!context && !(context.session && context.session.kernel);
}"""


def type_and_run(page: Any, cell: Any, code: str) -> None:
    """Type ``code`` into ``cell`` and press Shift+Enter, as a person does."""
    editor = cell.locator(".cm-content")
    editor.click()
    # At once, not key by key: a warm engine starts the container within a slow typist's
    # time, and the cells must be run before the kernel is there.
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")


def test_cells_run_while_the_container_starts_are_queued(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    page.locator(
        '.jp-LauncherCard[data-category="TensorFlow environments"]', has_text="TensorFlow 2.19.0"
    ).click()
    panel = page.locator(".jp-NotebookPanel").first
    cells = panel.locator(".jp-Notebook .jp-Cell")
    cells.first.wait_for()
    panel_id = panel.get_attribute("id")

    # Two cells, each run with Shift+Enter before the kernel is there; the second needs
    # the first's variable, so they must also run in this order.
    type_and_run(page, cells.nth(0), "import tensorflow as tf; v = tf.__version__")
    type_and_run(page, cells.nth(1), "print(v)")
    # Checked after the key presses: the kernel was not there when they happened.
    assert page.evaluate(NO_KERNEL_YET, panel_id), "the kernel was up before the cells ran"
    # Scheduled, not dropped: "[*]" while waiting (a dropped run shows "[ ]").
    for index in (0, 1):
        expect(cells.nth(index).locator(".jp-InputArea-prompt")).to_have_text(
            re.compile(r"\[(\*|\d+)\]")
        )

    wait_kernel_idle(page, panel)
    assert expect_output(panel, "2.19.0", index=1, timeout=KERNEL_TIMEOUT_MS) == "2.19.0"
    prompts = [cells.nth(i).locator(".jp-InputArea-prompt").inner_text() for i in (0, 1)]
    assert [p.strip() for p in prompts] == ["[1]:", "[2]:"], prompts
    # No dialog, and the kernel is the environment's.
    expect(page.locator(".jp-Dialog")).to_have_count(0)
    assert [k["name"] for k in lab.api("GET", "api/kernels")] == ["tfenv-tf219"]


def test_a_cell_run_during_a_switch_runs_in_the_new_environment(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    page.locator(
        '.jp-LauncherCard[data-category="TensorFlow environments"]', has_text="TensorFlow 2.20.0"
    ).click()
    panel = page.locator(".jp-NotebookPanel").first
    wait_kernel_idle(page, panel)
    page.locator('.lm-TabBar-tab[data-id="jp-tfenv-panel"]').click()
    # A fresh kernel: Switch acts at once (no question), and the new container starts.
    page.locator(
        '#jp-tfenv-panel .jp-tfenv-env-row[data-tfenv-env="tf219"] .jp-tfenv-switch'
    ).click()
    cell = panel.locator(".jp-Notebook .jp-Cell").first
    editor = cell.locator(".cm-content")
    editor.click()
    editor.press_sequentially("import tensorflow as tf; print(tf.__version__)")
    page.keyboard.press("Control+Enter")
    # Checked after the key press: the notebook still had the old kernel then.
    old = page.evaluate(
        """(id) => {
            const widget = [...window.jupyterapp.shell.widgets('main')].find(w => w.id === id);
            const kernel = widget.sessionContext.session && widget.sessionContext.session.kernel;
            return !kernel || kernel.name !== 'tfenv-tf219';
        }""",
        panel.get_attribute("id"),
    )
    assert old, "the switch was over before the cell ran"
    # The run waited for the new kernel: it ran in 2.19, not in the kernel being replaced.
    assert expect_output(panel, "2.19.0") == "2.19.0"
    expect(cell.locator(".jp-InputArea-prompt")).to_have_text(re.compile(r"\[1\]"))
    assert [k["name"] for k in lab.api("GET", "api/kernels")] == ["tfenv-tf219"]
