"""Browser tests of the kernel picker: real JupyterLab, real Chromium, TF kernels in containers."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import (
    KERNEL_TIMEOUT_MS,
    PRINT_TF_VERSION,
    expect_output,
    kernel_name,
    new_notebook,
    new_notebook_dialog,
    pick_kernel,
    run_cell,
    wait_kernel_idle,
)
from .lab import LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]


def test_kernel_picker_runs_the_pinned_tensorflow(page: Any, lab: LabServer) -> None:
    dialog = new_notebook_dialog(page)
    options = dialog.locator("select option").all_inner_texts()
    assert "TensorFlow 2.20.0 (CPU)" in options, options
    assert "TensorFlow 2.19.0 (CPU)" in options, options
    pick_kernel(dialog, "TensorFlow 2.20.0 (CPU)")
    panel = page.locator(".jp-NotebookPanel").first
    panel.wait_for()
    # The toolbar names the environment.
    from playwright.sync_api import expect

    expect(kernel_name(panel)).to_have_text("TensorFlow 2.20.0 (CPU)")

    wait_kernel_idle(page, panel)
    run_cell(page, panel, PRINT_TF_VERSION)
    assert expect_output(panel, "2.20.0") == "2.20.0"

    # It is a tfenv kernel: the server runs it in a container of the pinned image.
    kernels = lab.api("GET", "api/kernels")
    assert [k["name"] for k in kernels] == ["tfenv-tf220"], kernels


def test_missing_image_shows_the_server_message(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    new_notebook(page, "TensorFlow 9.9.9 (CPU)")
    error = page.locator(".jp-Dialog").filter(has_text="Error Starting Kernel")
    error.wait_for(timeout=KERNEL_TIMEOUT_MS)
    body = error.locator(".jp-Dialog-body")
    expect(body).to_contain_text("is not on this Docker engine")
    expect(body).to_contain_text("tfenv-test/not-built:9.9.9")
    expect(body).to_contain_text("jupyter tfenv pull missing")
    print(f"\n[ui] kernel start error dialog: {body.inner_text()[:300]!r}")
    error.locator("button.jp-mod-accept, button.jp-mod-reject").first.click()
    assert lab.api("GET", "api/kernels") == []
