"""Browser test of TensorBoard from the panel (issue 23 items 1 and 5).

A TF 2.20 kernel trains a tiny Keras model for two epochs with the TensorBoard callback
into ``$TFENV_LOG_DIR/run1``. The panel's Logs section lists ``run1``; its TensorBoard
button opens a main-area tab titled "TensorBoard: TensorFlow 2.20.0 (CPU)" that shows
TensorBoard itself (served by a container of the same image through the server's proxy)
with the run's name and its scalar chart; the button again reuses the tab. Then the run
is deleted from the Logs section (confirmed, sent with its ETag) and is gone from the
host. A reload of the page brings the tab back, running; the palette's "Open
TensorBoard" on the notebook makes the same tab current; "Compare in TensorBoard" opens
the comparison, with the run as ``tf220/run1/train``; the panel's TensorBoards section
lists both and its Stop removes one. The DOM contract is
``src/README.md``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import screenshot_dir
from .helpers import expect_output, new_notebook, run_cell, run_command, wait_kernel_idle
from .lab import UI_CATALOG, LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
LOGS = f"{PANEL} .jp-tfenv-logs"
RUN = f'{LOGS} .jp-tfenv-logrun[data-tfenv-run="run1"]'
TAB = '.jp-tfenv-tensorboard[data-tfenv-tensorboard="env-tf220"]'
TITLE = "TensorBoard: TensorFlow 2.20.0 (CPU)"
COMPARE = '.jp-tfenv-tensorboard[data-tfenv-tensorboard="compare"]'
COMPARE_TITLE = "TensorBoard: compare"

#: Typed into a cell (one line): two epochs with the TensorBoard callback into run1.
TRAIN = (
    "import os, numpy as np, keras; x = np.random.RandomState(0).rand(64, 4).astype('float32'); "
    "m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)]); "
    "m.compile(optimizer='adam', loss='mse'); "
    "m.fit(x, x.sum(axis=1), epochs=2, verbose=0, callbacks=[keras.callbacks.TensorBoard("
    "os.path.join(os.environ['TFENV_LOG_DIR'], 'run1'))]); print('trained')"
)

#: TensorBoard starts in a fresh container of the TF image (~10-40 s on a loaded machine).
TENSORBOARD_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def lab_catalog() -> list[dict[str, Any]]:
    """The UI catalog without its never-built entry ('missing', TensorFlow 9.9.9): the
    comparison view runs in the image of the newest TensorFlow environment
    (docs/tensorboard.md), and today that choice does not skip an environment whose image
    is not here, so with 'missing' in the catalog "Compare" answers 409."""
    return [env for env in UI_CATALOG if env["id"] != "missing"]


def open_panel(page: Any) -> None:
    """Show the panel (clicking its side tab while it is shown would collapse it)."""
    tab = page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]')
    tab.wait_for()
    if not page.locator(PANEL).is_visible():
        tab.click()
    page.locator(PANEL).wait_for(state="visible")


def test_tensorboard_opens_from_the_panel_and_shows_the_run(
    page: Any, lab: LabServer, request: pytest.FixtureRequest
) -> None:
    # The page fixture's workspace (conftest.py): reopened below without ?reset.
    workspace = re.sub(r"[^A-Za-z0-9-]", "-", request.node.name)[:60]
    try:
        check_tensorboard_from_the_panel(page, lab, workspace)
    finally:
        stop_tensorboards(lab)


def stop_tensorboards(lab: LabServer) -> None:
    """Stop this test's TensorBoards (the server would at its end: not left to it)."""
    try:
        boards = lab.api("GET", "tfenv/tensorboards")["tensorboards"]
    except Exception as err:  # the server may be what failed
        print(f"[ui] could not list the TensorBoards to stop them: {err}")
        return
    for board in boards:
        lab.api("DELETE", f"tfenv/tensorboards/{board['name']}")


def wait_running(page: Any, selector: str) -> None:
    """Wait until a TensorBoard tab settles (it shows its progress meanwhile); it must
    run, not show an error."""
    page.wait_for_function(
        """(sel) => {
            const el = document.querySelector(sel);
            return !!el && ['running', 'error'].includes(el.dataset.tfenvPhase);
        }""",
        arg=selector,
        timeout=TENSORBOARD_TIMEOUT_MS,
    )
    board = page.locator(selector)
    phase = board.get_attribute("data-tfenv-phase")
    assert phase == "running", f"the TensorBoard tab shows an error: {board.inner_text()}"


def wait_saved(lab: LabServer, workspace: str, key: str, timeout: float = 60) -> None:
    """Wait until JupyterLab saved ``key`` in the workspace (it saves layout changes late)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved = json.dumps(lab.api("GET", f"lab/api/workspaces/{workspace}"))
        if key in saved:
            return
        time.sleep(0.5)
    raise AssertionError(f"JupyterLab never saved {key!r} in the workspace {workspace!r}")


def check_tensorboard_from_the_panel(page: Any, lab: LabServer, workspace: str) -> None:
    from playwright.sync_api import expect

    nb = new_notebook(page, "TensorFlow 2.20.0 (CPU)")
    wait_kernel_idle(page, nb)
    run_cell(page, nb, TRAIN)
    expect_output(nb, "trained")
    host = Path(lab.api("GET", "tfenv/logs/tf220")["location"])
    assert list((host / "run1").rglob("events.out.tfevents.*")), (
        f"the TensorBoard callback wrote no event file under {host / 'run1'}"
    )

    open_panel(page)
    logs = page.locator(LOGS)
    expect(logs).to_have_attribute("data-tfenv-env", "tf220")
    logs.locator(".jp-tfenv-logs-refresh").click()
    run = page.locator(RUN)
    expect(run).to_be_visible(timeout=30_000)
    expect(run.locator(".jp-tfenv-logrun-name")).to_have_text("run1")
    expect(run.locator(".jp-tfenv-logrun-size")).not_to_have_text("0 B")

    page.locator(f'{PANEL} .jp-tfenv-tensorboard-open[data-tfenv-env="tf220"]').click()
    board = page.locator(TAB)
    expect(board).to_be_visible()
    tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text=TITLE)
    expect(tab).to_have_count(1)
    wait_running(page, TAB)
    frame = page.frame_locator(f"{TAB} .jp-tfenv-tensorboard-frame iframe")
    # TensorBoard's own page, with the run and a scalar chart of the two epochs.
    expect(frame.get_by_text("run1/train").first).to_be_visible(timeout=TENSORBOARD_TIMEOUT_MS)
    expect(frame.get_by_text("epoch_loss").first).to_be_visible(timeout=TENSORBOARD_TIMEOUT_MS)
    page.screenshot(path=str(screenshot_dir() / "tensorboard.png"), animations="disabled")

    # The button again: the same tab, no second TensorBoard.
    open_panel(page)
    page.locator(f'{PANEL} .jp-tfenv-tensorboard-open[data-tfenv-env="tf220"]').click()
    expect(page.locator(TAB)).to_have_count(1)
    expect(tab).to_have_count(1)
    boards = lab.api("GET", "tfenv/tensorboards")["tensorboards"]
    assert [b["name"] for b in boards] == ["env-tf220"], boards

    # A reload keeps the tab (the layout restorer opens it again; the server reuses it).
    wait_saved(lab, workspace, "tfenv-tensorboard:env-tf220")
    page.goto(lab.lab_url(workspace, reset=False))
    page.wait_for_function("() => window.jupyterapp !== undefined")
    page.evaluate("() => window.jupyterapp.restored")
    expect(page.locator(TAB)).to_have_attribute("data-tfenv-phase", "running")
    expect(tab).to_have_count(1)
    expect(frame.get_by_text("run1/train").first).to_be_visible(timeout=TENSORBOARD_TIMEOUT_MS)

    # The palette's "Open TensorBoard" on the notebook (its kernel's environment): the
    # same tab again, made current.
    notebook_tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text=".ipynb").first
    notebook_tab.click()
    run_command(page, "Open TensorBoard")
    expect(tab).to_have_class(re.compile(r"\blm-mod-current\b"))
    expect(page.locator(TAB)).to_have_count(1)

    # "Compare in TensorBoard": one more TensorBoard, every environment a run group.
    open_panel(page)
    page.locator(f"{PANEL} .jp-tfenv-tensorboard-compare").click()
    expect(
        page.locator("#jp-main-dock-panel .lm-TabBar-tab", has_text=COMPARE_TITLE)
    ).to_have_count(1)
    wait_running(page, COMPARE)
    compare = page.frame_locator(f"{COMPARE} .jp-tfenv-tensorboard-frame iframe")
    expect(compare.get_by_text("tf220/run1/train").first).to_be_visible(
        timeout=TENSORBOARD_TIMEOUT_MS
    )

    # The panel lists both TensorBoards; Stop removes the comparison's.
    open_panel(page)
    listed = page.locator(f"{PANEL} .jp-tfenv-tensorboards .jp-tfenv-tensorboard-item")
    expect(listed).to_have_count(2, timeout=30_000)
    item = page.locator(f'{PANEL} .jp-tfenv-tensorboard-item[data-tfenv-tensorboard="compare"]')
    expect(item).to_have_attribute("data-tfenv-state", "running")
    page.locator(f"{PANEL} .jp-tfenv-tensorboards").screenshot(
        path=str(screenshot_dir() / "panel-tensorboards.png"), animations="disabled"
    )
    item.locator(".jp-tfenv-tensorboard-item-stop").click()
    expect(item).to_have_count(0, timeout=30_000)
    boards = lab.api("GET", "tfenv/tensorboards")["tensorboards"]
    assert [b["name"] for b in boards] == ["env-tf220"], boards

    # The run deleted from the Logs section (the notebook's environment again: the panel
    # follows the active notebook): confirmed, then gone here and on the host.
    notebook_tab.click()
    open_panel(page)
    expect(run).to_be_visible(timeout=30_000)
    page.locator(LOGS).screenshot(
        path=str(screenshot_dir() / "panel-logs.png"), animations="disabled"
    )
    run.locator(".jp-tfenv-logrun-delete").click()
    dialog = page.locator(".jp-Dialog").filter(has_text="Delete log run")
    expect(dialog).to_contain_text("run1")
    dialog.locator("button.jp-mod-accept.jp-mod-warn").click()
    expect(dialog).to_have_count(0)
    expect(run).to_have_count(0, timeout=30_000)
    expect(logs.locator(".jp-tfenv-logs-notice")).to_have_count(0)
    assert not (host / "run1").exists()
