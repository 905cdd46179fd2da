"""Browser test of Switch in the panel when the kernel holds state (issue 19, item 4).

Real JupyterLab, Debian's Chromium, TF kernels in containers: the user runs a cell on
TensorFlow 2.20, clicks Switch on 2.19, is told what is lost, cancels, then switches.
"""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import (
    KERNEL_TIMEOUT_MS,
    expect_output,
    kernel_name,
    new_notebook,
    run_cell,
    wait_kernel_idle,
)
from .lab import LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"


def switch_button(page: Any, env_id: str) -> Any:
    return page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="{env_id}"] .jp-tfenv-switch')


def kernel_names(lab: LabServer) -> list[str]:
    return [k["name"] for k in lab.api("GET", "api/kernels")]


def test_switch_asks_first_when_the_kernel_holds_state(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    nb = new_notebook(page, "TensorFlow 2.20.0 (CPU)")
    wait_kernel_idle(page, nb)
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()

    # A fresh kernel holds nothing: Switch acts at once.
    switch_button(page, "tf219").click()
    expect(kernel_name(nb)).to_have_text("TensorFlow 2.19.0 (CPU)", timeout=KERNEL_TIMEOUT_MS)
    wait_kernel_idle(page, nb)
    assert page.locator(".jp-Dialog").count() == 0

    # Once a cell ran, Switch says what is lost and waits for an answer.
    run_cell(page, nb, "model = 'trained'; print(model)")
    expect_output(nb, "trained")
    switch_button(page, "tf220").click()
    dialog = page.locator(".jp-Dialog").filter(has_text="Switch to TensorFlow 2.20.0 (CPU)?")
    dialog.wait_for()
    body = dialog.locator(".jp-tfenv-switch-confirm")
    expect(body).to_have_attribute("data-tfenv-to", "tf220")
    expect(body).to_have_attribute("data-tfenv-execution-count", "1")
    expect(body).to_contain_text("has run 1 cell in TensorFlow 2.19.0 (CPU)")
    expect(body).to_contain_text("variables")
    expect(body).to_contain_text("outputs on screen stay those of TensorFlow 2.19.0 (CPU)")
    print(f"\n[ui] switch confirmation: {body.inner_text()!r}")
    # Cancel: nothing changes, the kernel still holds the variable.
    dialog.locator("button.jp-mod-reject").click()
    expect(dialog).to_have_count(0)
    assert kernel_names(lab) == ["tfenv-tf219"]
    expect(kernel_name(nb)).to_have_text("TensorFlow 2.19.0 (CPU)")

    # Switch: a new kernel in the other environment, without the old one's memory.
    switch_button(page, "tf220").click()
    dialog.wait_for()
    dialog.locator("button.jp-mod-warn, button.jp-mod-accept").last.click()
    expect(kernel_name(nb)).to_have_text("TensorFlow 2.20.0 (CPU)", timeout=KERNEL_TIMEOUT_MS)
    wait_kernel_idle(page, nb)
    editor = nb.locator(".jp-Notebook .jp-Cell").nth(0).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    editor.press_sequentially("print('model' in globals())")
    page.keyboard.press("Control+Enter")
    expect_output(nb, "False")
    assert kernel_names(lab) == ["tfenv-tf220"]
