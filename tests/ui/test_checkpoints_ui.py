"""Browser test of the panel's Checkpoints section (issue 5, checkpoint browsing).

A TF 2.20 kernel saves a ``tf.train.CheckpointManager`` checkpoint into
``$TFENV_CHECKPOINT_DIR/run1``; the panel lists it; its Delete button asks for
confirmation and deletes with the listed ETag (``If-Match``): a change in between is
answered 412 and the panel says so, nothing deleted; confirmed again, the files are gone
on the host. The DOM contract is ``src/README.md``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from .conftest import screenshot_dir
from .helpers import expect_output, new_notebook, run_cell, wait_kernel_idle
from .lab import LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
SECTION = f"{PANEL} .jp-tfenv-checkpoints"
ITEM = f'{SECTION} .jp-tfenv-checkpoint[data-tfenv-checkpoint="run1/checkpoint"]'

SAVE = (
    "import os, tensorflow as tf; v = tf.Variable([1.0, 2.0]); "
    "m = tf.train.CheckpointManager(tf.train.Checkpoint(v=v), "
    "os.environ['TFENV_CHECKPOINT_DIR'] + '/run1', max_to_keep=3); "
    "print(m.save(checkpoint_number=7))"
)


def open_panel(page: Any) -> None:
    tab = page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]')
    tab.wait_for()
    tab.click()


def confirm_delete(page: Any) -> None:
    from playwright.sync_api import expect

    page.locator(f"{ITEM} .jp-tfenv-checkpoint-delete").click()
    dialog = page.locator(".jp-Dialog").filter(has_text="Delete checkpoint")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("run1")
    dialog.locator("button.jp-mod-accept.jp-mod-warn").click()
    expect(dialog).to_have_count(0)


def test_checkpoint_listed_and_deleted_from_the_panel(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    nb = new_notebook(page, "TensorFlow 2.20.0 (CPU)")
    wait_kernel_idle(page, nb)
    open_panel(page)
    section = page.locator(SECTION)
    expect(section).to_have_attribute("data-tfenv-env", "tf220")
    # Nothing saved yet: the designed empty state, with the container path.
    expect(section.locator(".jp-tfenv-checkpoints-empty")).to_contain_text(
        "No checkpoints yet", timeout=60_000
    )
    expect(section.locator(".jp-tfenv-checkpoints-container-path")).to_have_text(
        "/tfenv/checkpoints"
    )
    listing = lab.api("GET", "tfenv/checkpoints/tf220")
    host = Path(listing["location"])
    expect(section.locator(".jp-tfenv-checkpoints-location")).to_have_text(str(host))

    run_cell(page, nb, SAVE)
    expect_output(nb, "/tfenv/checkpoints/run1/ckpt-7")
    run1 = host / "run1"
    assert (run1 / "checkpoint").is_file()
    assert (run1 / "ckpt-7.index").is_file()

    # The refresh button lists it now (the poll would within the model's interval).
    page.locator(f"{PANEL} .jp-tfenv-refresh").click()
    item = page.locator(ITEM)
    expect(item).to_be_visible(timeout=30_000)
    expect(item).to_have_attribute("data-tfenv-kind", "tf_checkpoint_set")
    expect(item).to_have_attribute("data-tfenv-complete", "true")
    expect(item.locator(".jp-tfenv-checkpoint-kind")).to_have_text("TF set")
    expect(item.locator(".jp-tfenv-checkpoint-name")).to_have_text("run1")
    expect(item.locator(".jp-tfenv-checkpoint-step")).to_have_text("step 7")
    size = re.compile(r"^\d+(\.\d+)? (B|KiB)$")
    expect(item.locator(".jp-tfenv-checkpoint-size")).to_have_text(size)
    expect(item.locator(".jp-tfenv-checkpoint-incomplete")).to_have_count(0)
    section.screenshot(path=str(screenshot_dir() / "panel-checkpoints.png"), animations="disabled")

    # Cancel keeps it.
    item.locator(".jp-tfenv-checkpoint-delete").click()
    dialog = page.locator(".jp-Dialog").filter(has_text="Delete checkpoint")
    dialog.locator("button.jp-mod-reject").click()
    expect(dialog).to_have_count(0)
    expect(item).to_be_visible()
    assert (run1 / "ckpt-7.index").is_file()

    # Changed after it was listed (as a landing save would): 412, nothing deleted.
    etag = item.get_attribute("data-tfenv-etag")
    assert etag
    item.locator(".jp-tfenv-checkpoint-delete").click()
    expect(dialog).to_be_visible()
    index = run1 / "ckpt-7.index"
    stat = index.stat()
    os.utime(index, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    dialog.locator("button.jp-mod-accept.jp-mod-warn").click()
    expect(section.locator(".jp-tfenv-checkpoints-notice")).to_contain_text("changed")
    assert index.is_file()
    expect(item).to_be_visible()
    # The panel lists it again after the 412: the new ETag is the one to confirm.
    expect(item).not_to_have_attribute("data-tfenv-etag", etag, timeout=30_000)

    # Confirmed on the refreshed listing: deleted, gone from the list and from the host.
    confirm_delete(page)
    expect(item).to_have_count(0, timeout=30_000)
    expect(section.locator(".jp-tfenv-checkpoints-notice")).to_have_count(0)
    expect(section.locator(".jp-tfenv-checkpoints-empty")).to_be_visible()
    assert not (run1 / "checkpoint").exists()
    assert not index.exists()
    assert not run1.exists() or not list(run1.glob("ckpt-7*"))
    assert lab.api("GET", "tfenv/checkpoints/tf220")["checkpoints"] == []


def test_after_a_switch_the_other_environments_checkpoints_are_shown_and_restore(
    page: Any, lab: LabServer
) -> None:
    """Train in 2.19, continue in 2.20 (issue 19, item 5): after Switch, the panel shows
    2.19's checkpoints under "Other environments (read-only)" with the line that finds
    the latest, and that line restores the 2.19 variable in the 2.20 kernel."""
    from playwright.sync_api import expect

    nb = new_notebook(page, "TensorFlow 2.19.0 (CPU)")
    wait_kernel_idle(page, nb)
    run_cell(page, nb, SAVE)
    expect_output(nb, "/tfenv/checkpoints/run1/ckpt-7")

    open_panel(page)
    page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="tf220"] .jp-tfenv-switch').click()
    dialog = page.locator(".jp-Dialog").filter(has_text="Switch to TensorFlow 2.20.0 (CPU)?")
    dialog.locator("button.jp-mod-warn, button.jp-mod-accept").last.click()
    page.wait_for_function(
        """() => [...window.jupyterapp.shell.widgets('main')].some(w =>
            w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel
            && w.sessionContext.session.kernel.name === 'tfenv-tf220')""",
        timeout=180_000,
    )
    wait_kernel_idle(page, nb)

    section = page.locator(SECTION)
    expect(section).to_have_attribute("data-tfenv-env", "tf220", timeout=60_000)
    group = section.locator('.jp-tfenv-checkpoints-other[data-tfenv-env="tf219"]')
    expect(group).to_be_visible(timeout=60_000)
    expect(section.locator(".jp-tfenv-checkpoints-others-title")).to_have_text(
        "Other environments (read-only)"
    )
    expect(group.locator(".jp-tfenv-checkpoints-other-name")).to_have_text(
        "TensorFlow 2.19.0 (CPU)"
    )
    expect(group.locator(".jp-tfenv-checkpoints-other-path")).to_have_text(
        "/tfenv/checkpoints-of/tf219"
    )
    item = group.locator('.jp-tfenv-checkpoint[data-tfenv-checkpoint="run1/checkpoint"]')
    expect(item.locator(".jp-tfenv-checkpoint-step")).to_have_text("step 7")
    # Read-only here: no delete button.
    expect(item.locator(".jp-tfenv-checkpoint-delete")).to_have_count(0)
    hint = group.locator(".jp-tfenv-checkpoints-hint")
    line = "tf.train.latest_checkpoint('/tfenv/checkpoints-of/tf219/run1')"
    expect(hint).to_have_text(line)
    section.screenshot(
        path=str(screenshot_dir() / "panel-checkpoints-other.png"), animations="disabled"
    )

    # The panel's line restores the 2.19 checkpoint in the 2.20 kernel.
    editor = nb.locator(".jp-Notebook .jp-Cell").nth(0).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+A")
    editor.press_sequentially(
        "import tensorflow as tf; v = tf.Variable([0.0, 0.0]); "
        f"tf.train.Checkpoint(v=v).restore({line}); print(v.numpy().tolist(), tf.__version__)"
    )
    page.keyboard.press("Control+Enter")
    expect_output(nb, "[1.0, 2.0] 2.20.0")
