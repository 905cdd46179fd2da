"""JupyterLab through JupyterHub in a real browser (broker mode).

Chromium logs in as tfenv-alice on the hub's PAM login form, lands in her server's Lab
(``/user/tfenv-alice/lab``, the example config's ``default_url``), creates a notebook on
the TensorFlow 2.20 environment, runs TensorFlow as her uid, and reads the tfenv panel and
status bar: what they show comes from the broker (her server has no Docker). One page
load; the hub and her server are the package's. Browser plumbing: ``tests/ui``.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TF220
from tests.ui.conftest import (  # noqa: F401 - fixtures: Chromium, and no asyncio loop
    DEFAULT_TIMEOUT_MS,
    browser,
    chromium,
    jp_asyncio_loop,
    jp_server_cleanup,
    screenshot_dir,
)
from tests.ui.helpers import KERNEL_TIMEOUT_MS, STDOUT, new_notebook, run_cell, wait_kernel_idle
from tests.ui.lab import chromium_executable
from tests.ui.test_panel import (
    PANEL,
    STATUS,
    env_row,
    expect_panel_state,
    open_panel_by_tab,
    widen_right_sidebar,
)

from .harness import ALICE, HubHarness

pytestmark = [
    pytest.mark.docker,
    pytest.mark.ui,
    pytest.mark.skipif(
        chromium_executable() is None,
        reason="Chromium is not installed: run scripts/setup.sh (Debian package chromium)",
    ),
]

TF220_NAME = "TensorFlow 2.20.0 (CPU)"
CODE = "import tensorflow as tf, os; print(tf.__version__, os.getuid())"


def quiet_news(hub: HubHarness) -> None:
    """Alice's Lab asks no "get notified about Jupyter news?" question (it would cover
    the status bar in the screenshot)."""
    settings = {"fetchNews": "false", "checkForUpdates": False}
    response = hub.user_request(
        "PUT",
        ALICE,
        "lab/api/settings/@jupyterlab/apputils-extension:notification",
        hub.token(ALICE),
        data=json.dumps({"raw": json.dumps(settings)}),
    )
    assert response.status_code == 204, f"{response.status_code} {response.text}"


def login(page: Any, hub: HubHarness) -> None:
    """The hub's login form, as a person fills it in; on to her Lab."""
    page.goto(f"{hub.public_url}/hub/login?next=/user/{ALICE}/lab")
    page.locator("input[name=username]").fill(ALICE)
    page.locator("input[name=password]").fill(hub.passwords[ALICE])
    page.locator("form [type=submit]").click()
    page.wait_for_url(re.compile(rf"/user/{ALICE}/lab"))
    page.wait_for_function("() => window.jupyterapp !== undefined")
    page.evaluate("() => window.jupyterapp.restored")
    page.locator("#jp-main-dock-panel").wait_for()


def test_lab_through_the_hub_runs_tf_as_the_user_and_the_panel_shows_the_broker_kernel(
    hub: HubHarness,
    alice_server: str,
    browser: Any,  # noqa: F811
) -> None:
    from playwright.sync_api import expect

    started = time.monotonic()
    quiet_news(hub)
    uid = hub.users[ALICE].uid
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
    notebook_path = None
    try:
        login(page, hub)
        loaded = time.monotonic() - started

        nb = new_notebook(page, TF220_NAME)
        notebook_path = page.evaluate(
            """(id) => [...window.jupyterapp.shell.widgets('main')]
                .find(w => w.id === id).context.path""",
            nb.get_attribute("id"),
        )
        wait_kernel_idle(page, nb)
        run_cell(page, nb, CODE)
        output = nb.locator(".jp-Notebook .jp-Cell").first.locator(STDOUT)
        expect(output).to_have_text(
            re.compile(rf"^\s*2\.20\.0 {uid}\s*$"), timeout=KERNEL_TIMEOUT_MS
        )

        # The panel: what the broker says the kernel runs on.
        open_panel_by_tab(page)
        state = expect_panel_state(page, "ok")
        expect(state).to_have_attribute("data-tfenv-reason", "ok")
        expect(page.locator(f"{PANEL} .jp-tfenv-content")).to_have_attribute(
            "data-tfenv-active-env", "tf220"
        )
        expect(page.locator(f"{PANEL} .jp-tfenv-image")).to_have_text(TF220)
        expect(page.locator(f"{PANEL} .jp-tfenv-tf-version")).to_have_text("2.20.0")
        expect(page.locator(f"{PANEL} .jp-tfenv-build")).to_have_text("CPU only (no CUDA)")
        expect(page.locator(f"{PANEL} .jp-tfenv-gpu-state")).to_have_attribute(
            "data-tfenv-gpu-state", "not-requested"
        )
        expect(env_row(page, "tf220")).to_have_attribute("data-tfenv-current", "true")
        expect(env_row(page, "tf220")).to_have_attribute("data-tfenv-present", "true")
        # An admin pulls images on a hub host: the panel offers no Pull / Re-pull.
        expect(env_row(page, "tf220").locator(".jp-tfenv-switch")).to_be_visible()
        expect(page.locator(f"{PANEL} .jp-tfenv-pull")).to_have_count(0)
        status = page.locator(STATUS)
        expect(status.locator(".jp-tfenv-status-text")).to_have_text("TF 2.20.0 · CPU")
        expect(status.locator(".jp-tfenv-status-item")).to_have_attribute("data-tfenv-env", "tf220")

        widen_right_sidebar(page, 130)
        shot = screenshot_dir() / "hub-lab-panel.png"
        page.screenshot(path=str(shot), animations="disabled")
        print(
            f"\n[hub-ui] Lab through the hub: login to a restored Lab {loaded:.1f} s, "
            f"whole test {time.monotonic() - started:.1f} s; screenshot {shot}"
        )
    except BaseException:
        failure = Path(tempfile.gettempdir()) / "tfenv-failure-hub-lab.png"
        try:
            page.screenshot(path=str(failure))
            print(f"\n[hub-ui] screenshot at the failure: {failure}")
        except Exception as err:  # best effort: the page may be gone
            print(f"\n[hub-ui] no screenshot at the failure: {err}")
        print(f"[hub-ui] hub log (tail):\n{hub.log_tail(40)}")
        raise
    finally:
        if problems:
            print("\n[hub-ui] browser console errors:")
            for line in problems:
                print(f"[hub-ui]   {line[:500]}")
        context.close()
        for kernel in hub.list_kernels(ALICE):
            hub.shutdown_kernel(ALICE, kernel["id"])
        if notebook_path:
            hub.user_request("DELETE", ALICE, f"api/contents/{notebook_path}", hub.token(ALICE))
    assert hub.list_kernels(ALICE) == []
