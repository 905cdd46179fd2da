"""The panel says who holds which GPU (issue 20, item 1): each device kernels may get, with
"this kernel", the user's other kernels, or free.

Real parts: the stand-in GPU engine of tests/support/gpu_engine.py (a dockerd of the
module's own whose NVIDIA device driver is enabled by a stand-in hook, so Docker really
hands out devices and sets ``NVIDIA_VISIBLE_DEVICES``), a real JupyterLab whose tfenv
extension allocates four stand-in devices (``gpu_devices``), Debian's Chromium. The device
the panel marks "this kernel" is the one Docker gave the notebook's container: the kernel
prints its ``NVIDIA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.gpu_engine import GpuEngine

from .conftest import screenshot_dir
from .helpers import (
    KERNEL_TIMEOUT_MS,
    STDOUT,
    cell_output,
    new_notebook,
    run_cell,
    wait_kernel_idle,
)
from .lab import PY_IMAGE, LabServer, start_lab

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
HOLDERS = f"{PANEL} .jp-tfenv-gpu-holders li"
DISPLAY_NAME = "Python 3.11 (1 GPU)"
DEVICES = ["0", "1", "2", "3"]
CATALOG: list[dict[str, Any]] = [
    {"id": "gpu1", "image": PY_IMAGE, "display_name": DISPLAY_NAME, "gpus": 1}
]


@pytest.fixture(scope="module")
def lab(gpu_engine: GpuEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab of this module's own on the GPU engine, with four devices for kernels."""
    server = start_lab(
        tmp_path_factory.mktemp("lab"),
        CATALOG,
        extra_env={"DOCKER_HOST": gpu_engine.url},
        # A list trait on the command line: the option once per item.
        extra_args=[f"--TFEnvKernelProvisioner.gpu_devices={d}" for d in DEVICES],
    )
    try:
        yield server
    finally:
        assert gpu_engine.client is not None
        left = server.stop(gpu_engine.client)
        assert not left, f"JupyterLab left kernel containers behind: {left}"


def holders(lab: LabServer) -> dict[str, list[str | None]]:
    """The server's picture: each device id with its holders' kernel ids."""
    reply = lab.api("GET", "tfenv/gpus")
    return {row["id"]: [h["kernel_id"] for h in row["holders"]] for row in reply["allocation"]}


def wait_for(read: Any, done: Any, timeout: float = 60.0) -> Any:
    """``read()`` until ``done`` says yes of it; the last value."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.5)
        value = read()
    return value


def test_the_panel_shows_which_kernel_holds_which_gpu(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    assert holders(lab) == {d: [] for d in DEVICES}
    # Another kernel of the same user (a second notebook, started through the REST API).
    other = lab.api("POST", "api/kernels", {"name": "tfenv-gpu1"})["id"]
    try:
        notebook = new_notebook(page, DISPLAY_NAME)
        wait_kernel_idle(page, notebook)
        run_cell(page, notebook, "import os; print('gpu=' + os.environ['NVIDIA_VISIBLE_DEVICES'])")
        stdout = cell_output(notebook).locator(STDOUT)
        expect(stdout).to_have_text(re.compile(r"^\s*gpu=\d\s*$"), timeout=KERNEL_TIMEOUT_MS)
        mine = stdout.inner_text().strip().removeprefix("gpu=")
        # The server reads the GPUs at most every GPU_TTL seconds: wait for its next look.
        held = wait_for(lambda: holders(lab), lambda h: sum(map(len, h.values())) == 2)
        other_device = next(d for d, ids in held.items() if other in ids)
        assert mine in DEVICES and mine != other_device, (mine, held)
        assert sorted(len(ids) for ids in held.values()) == [0, 0, 1, 1], held

        page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
        rows = page.locator(HOLDERS)
        expect(rows).to_have_count(4, timeout=KERNEL_TIMEOUT_MS)
        this = page.locator(f'{HOLDERS}[data-tfenv-device="{mine}"] [data-tfenv-holder="this"]')
        expect(this).to_have_text("this kernel (gpu1)")
        yours = page.locator(
            f'{HOLDERS}[data-tfenv-device="{other_device}"] [data-tfenv-holder="mine"]'
        )
        expect(yours).to_have_text(f"your kernel {other[:8]} (gpu1)")
        expect(page.locator(f'{HOLDERS}[data-tfenv-free="true"]')).to_have_count(2)
        expect(page.locator(f"{HOLDERS} [data-tfenv-holder]")).to_have_count(2)
        section = page.locator(f"{PANEL} .jp-tfenv-gpus")
        section.scroll_into_view_if_needed()
        section.screenshot(
            path=str(screenshot_dir() / "panel-gpu-holders.png"), animations="disabled"
        )
        print(f"\n[ui] GPU holders: {page.locator(HOLDERS).all_inner_texts()}")
    finally:
        lab.api("DELETE", f"api/kernels/{other}")
    # The other kernel's device is free again: the panel's own polling finds out.
    freed = page.locator(f'{HOLDERS}[data-tfenv-device="{other_device}"]')
    expect(freed).to_have_attribute("data-tfenv-free", "true", timeout=KERNEL_TIMEOUT_MS)
    expect(page.locator(f'{HOLDERS}[data-tfenv-free="true"]')).to_have_count(3)
