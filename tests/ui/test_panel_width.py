"""Browser test of the panel at JupyterLab's default sidebar width (issue 19, item 8).

A new user saw names and image references cut off ("tensorflow/tensorflow:2.2…" made
three images look alike), paths broken mid-word and the CheckpointManager hint clipped.
At the width the right sidebar opens with, every value is on screen in full, and long
ones wrap at their separators (``/``, ``:``, ``@``, ``,``, ``(``, ``[``, ``-``) or spaces.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import screenshot_dir
from .helpers import new_notebook, wait_kernel_idle
from .lab import TF219, TF220, LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
SEPARATORS = "/:@,([- "

#: For one element: is any of it hidden (scrolled or cut off), where do its lines break
#: (the characters either side of each break), and its whole text.
LAYOUT = """(el) => {
    const panel = document.querySelector('#jp-tfenv-panel').getBoundingClientRect();
    const box = el.getBoundingClientRect();
    const breaks = [];
    let prevTop = null, prev = null;
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        const node = walker.currentNode;
        for (let i = 0; i < node.length; i++) {
            const range = document.createRange();
            range.setStart(node, i);
            range.setEnd(node, i + 1);
            const rects = range.getClientRects();
            if (!rects.length) { continue; }
            const top = rects[0].top;
            if (prevTop !== null && top > prevTop + 2) { breaks.push([prev, node.data[i]]); }
            prevTop = top;
            prev = node.data[i];
        }
    }
    return {text: el.textContent, hidden: el.scrollWidth > el.clientWidth + 1,
            inside: box.right <= panel.right + 1, breaks};
}"""


def check_fits(locator: Any, what: str) -> dict[str, Any]:
    layout = dict(locator.evaluate(LAYOUT))
    print(f"[ui]   {what}: {layout['text']!r} breaks {layout['breaks']}")
    assert not layout["hidden"], f"{what} is cut off: {layout}"
    assert layout["inside"], f"{what} goes past the panel's edge: {layout}"
    bad = [b for b in layout["breaks"] if b[0] not in SEPARATORS and b[1] != " "]
    assert not bad, f"{what} breaks inside a word: {bad} ({layout})"
    return layout


def test_every_value_is_whole_at_the_default_sidebar_width(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    nb = new_notebook(page, "TensorFlow 2.20.0 (CPU)")
    wait_kernel_idle(page, nb)
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    expect(page.locator(f"{PANEL} .jp-tfenv-state")).to_have_attribute("data-tfenv-state", "ok")
    location = page.locator(f"{PANEL} .jp-tfenv-checkpoints-location")
    expect(location).not_to_have_text("—")
    width = page.evaluate("() => document.querySelector('#jp-right-stack').offsetWidth")
    print(f"\n[ui] right sidebar at its default width: {width} px")

    images = []
    for row in page.locator(f"{PANEL} .jp-tfenv-env-row").all():
        env = row.get_attribute("data-tfenv-env")
        check_fits(row.locator(".jp-tfenv-env-name"), f"{env} name")
        images.append(check_fits(row.locator(".jp-tfenv-env-image"), f"{env} image")["text"])
    # The images are told apart: each reference is on screen whole.
    assert TF220 in images and TF219 in images, images
    assert (
        check_fits(page.locator(f"{PANEL} .jp-tfenv-kernel .jp-tfenv-image"), "image")["text"]
        == TF220
    )
    check_fits(page.locator(f"{PANEL} .jp-tfenv-checkpoints-container-path"), "container path")
    check_fits(location, "checkpoint folder")
    hint = check_fits(
        page.locator(f"{PANEL} .jp-tfenv-checkpoints-empty .jp-tfenv-checkpoints-hint"), "hint"
    )
    assert hint["text"].startswith("tf.train.CheckpointManager(")
    assert hint["text"].endswith("max_to_keep=3)")
    # The Logs section's line (no runs yet) is whole as well.
    log_hint = page.locator(f"{PANEL} .jp-tfenv-logs-empty .jp-tfenv-checkpoints-hint")
    expect(log_hint).to_be_visible()
    assert check_fits(log_hint, "log hint")["text"].startswith("keras.callbacks.TensorBoard(")
    page.locator(PANEL).screenshot(path=str(screenshot_dir() / "panel-default-width.png"))
