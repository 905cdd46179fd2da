"""A server restart under an open notebook (``keep_kernels_on_stop``, issue 22 item 2):
the page reconnects by itself to the kernel the new server adopted, a loop started before
the restart goes on printing into its cell, ``x`` is still 42; a page opened afresh after
the restart finds the notebook's session and the same kernel.

Real JupyterLab (stopped with SIGINT without a tty, as JupyterHub's local spawner stops a
server, then started again on the same port, token and folders), a real kernel container
that outlives it, Debian's Chromium.
"""

from __future__ import annotations

import re
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from .conftest import screenshot_dir
from .helpers import KERNEL_TIMEOUT_MS, STDOUT, expect_output, new_notebook, wait_kernel_idle
from .lab import PY_IMAGE, LabServer, start_lab

pytestmark = [pytest.mark.docker, pytest.mark.ui]

DISPLAY_NAME = "Python 3.11 (kept)"
CATALOG: list[dict[str, Any]] = [{"id": "py", "image": PY_IMAGE, "display_name": DISPLAY_NAME}]
LOOP = "import time\nfor i in range(900):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)"


@pytest.fixture(scope="module")
def lab(images: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = start_lab(
        tmp_path_factory.mktemp("lab"), CATALOG, extra_args=["--TFEnvApp.keep_kernels_on_stop=all"]
    )
    try:
        yield server
    finally:
        left = server.stop(images)
        assert not left, f"JupyterLab left kernel containers behind: {left}"


def saved_cells(lab: LabServer) -> list[Any]:
    """The cells of the notebook as saved on the server (none while it cannot be read)."""
    try:
        model = lab.api("GET", "api/contents/Untitled.ipynb?content=1")
    except urllib.error.HTTPError as err:
        print(f"[ui] Untitled.ipynb not readable yet: {err} {err.read()[:200]!r}")
        return []
    return list((model.get("content") or {}).get("cells") or [])


def run_next(page: Any, notebook: Any, index: int, code: str) -> None:
    """Type ``code`` into cell ``index`` and press Shift+Enter (a new cell follows)."""
    cell = notebook.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".cm-content").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")


def ticks(notebook: Any, index: int) -> list[int]:
    text = "\n".join(
        notebook.locator(".jp-Notebook .jp-Cell").nth(index).locator(STDOUT).all_inner_texts()
    )
    return [int(n) for n in re.findall(r"tick (\d+)", text)]


def wait_ticks(notebook: Any, index: int, above: int, timeout: float = 120) -> int:
    """Until cell ``index`` printed a tick above ``above``; the highest one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = ticks(notebook, index)
        if seen and max(seen) > above:
            return max(seen)
        time.sleep(0.5)
    pytest.fail(f"no tick above {above} in cell {index} within {timeout:.0f} s")


def test_an_open_notebook_goes_on_across_a_server_restart(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    notebook = new_notebook(page, DISPLAY_NAME)
    wait_kernel_idle(page, notebook)
    run_next(page, notebook, 0, "x = 42; print(x)")
    expect_output(notebook, "42", index=0)
    run_next(page, notebook, 1, LOOP)
    before = wait_ticks(notebook, 1, 1)
    # Saved, so that the notebook on disk has its cells (the page is reloaded below).
    page.keyboard.press("Control+s")
    rename = page.locator(".jp-Dialog").filter(has_text="Rename file")  # the first save asks
    rename.locator("button.jp-mod-accept").click()
    expect(rename).to_have_count(0)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(saved_cells(lab)) != 3:
        time.sleep(0.25)  # the save's request is on its way
    assert len(saved_cells(lab)) == 3
    [session] = lab.api("GET", "api/sessions")
    kernel_id = session["kernel"]["id"]

    lab.restart()  # SIGINT, no tty: the kernel is kept; the new server adopts it
    deadline = time.monotonic() + 60
    while not lab.api("GET", "api/kernels") and time.monotonic() < deadline:
        time.sleep(0.25)  # the adoption runs right after the server started listening
    assert [k["id"] for k in lab.api("GET", "api/kernels")] == [kernel_id], lab.log_tail()
    # The page reconnects by itself: the loop's output goes on in its cell.
    after = wait_ticks(notebook, 1, before)
    print(f"\n[ui] ticks: {before} before the restart, {after} after it")
    assert "adopted kernel " + kernel_id in lab.log_tail(200)
    page.locator(".jp-Notebook").first.screenshot(
        path=str(screenshot_dir() / "kept-kernel-after-restart.png"), animations="disabled"
    )

    # What JupyterLab said while the server was away ("Server Connection Error", an
    # autosave's "File Save Error") goes.
    dialogs = page.locator(".jp-Dialog")
    while dialogs.count():
        dialogs.first.locator(".jp-Dialog-footer button").last.click()
    # The panel says where the kernel came from.
    page.locator('.lm-TabBar-tab[data-id="jp-tfenv-panel"]').click()
    badge = page.locator("#jp-tfenv-panel .jp-tfenv-kernel .jp-tfenv-origin")
    expect(badge).to_have_attribute("data-tfenv-origin", "adopted", timeout=KERNEL_TIMEOUT_MS)
    expect(badge).to_have_text("adopted")

    # Interrupted, the kernel is idle again. (The loop cell's own execute_reply went to the
    # stopped server's socket: its prompt may stay "[*]", as after any server restart.)
    lab.api("POST", f"api/kernels/{kernel_id}/interrupt")
    wait_kernel_idle(page, notebook)

    # A page opened afresh (the user comes back) finds the notebook's session: same kernel.
    page.reload()
    page.wait_for_function("() => window.jupyterapp !== undefined")
    notebook = page.locator(".jp-NotebookPanel").first
    wait_kernel_idle(page, notebook)
    # The saved cells are back: the loop's, and the empty one after it.
    expect(notebook.locator(".jp-Notebook .jp-Cell")).to_have_count(3)
    last = 2
    run_next(page, notebook, last, "print(x + 1)")
    expect_output(notebook, "43", index=last)
    assert [s["kernel"]["id"] for s in lab.api("GET", "api/sessions")] == [kernel_id]
