"""Browser tests of the panel while the kernel restarts and after the server stopped
(issue 19, item 9): every state is shown as it is, never the last one read.

A new user saw "Running" with the old container's id during a restart, and "Running"
beside "Failed to fetch" after the server had stopped. Real JupyterLab, Debian's
Chromium, TF kernels in containers; the second test stops this module's server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from .helpers import expect_output, new_notebook, run_cell, run_command, wait_kernel_idle
from .lab import LabServer, start_lab

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
STATE = f"{PANEL} .jp-tfenv-state"

#: Records every (state, reason, text) the panel's banner shows, however briefly.
WATCH_STATES = """(selector) => {
    window.__tfenvStates = [];
    const record = () => {
        const el = document.querySelector(selector);
        if (!el) { return; }
        const entry = [el.getAttribute('data-tfenv-state'),
                       el.getAttribute('data-tfenv-reason'), el.innerText];
        const seen = window.__tfenvStates;
        const last = seen[seen.length - 1];
        if (!last || last.join('|') !== entry.join('|')) { seen.push(entry); }
    };
    record();
    new MutationObserver(record).observe(document.body,
        {subtree: true, childList: true, attributes: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def lab(
    images: docker.DockerClient,
    lab_catalog: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LabServer]:
    """A server of this module's own: the last test stops it."""
    server = start_lab(tmp_path_factory.mktemp("lab"), lab_catalog)
    try:
        yield server
    finally:
        left = server.stop(images)
        assert not left, f"JupyterLab left kernel containers behind: {left}"


def container_id(text: str) -> str:
    found = re.search(r"container ([0-9a-f]{12})", text)
    assert found, text
    return found.group(1)


def open_running_panel(page: Any) -> Any:
    from playwright.sync_api import expect

    nb = new_notebook(page, "TensorFlow 2.20.0 (CPU)")
    wait_kernel_idle(page, nb)
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    expect(page.locator(STATE)).to_have_attribute("data-tfenv-state", "ok")
    return nb


def test_a_restart_is_shown_as_a_restart_then_the_new_container(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    nb = open_running_panel(page)
    run_cell(page, nb, "x = 1; print(x)")
    expect_output(nb, "1")
    old = container_id(page.locator(STATE).inner_text())
    page.evaluate(WATCH_STATES, STATE)

    run_command(page, "Restart Kernel…")
    page.locator(".jp-Dialog button.jp-mod-warn").click()
    state = page.locator(STATE)
    expect(state).to_have_attribute("data-tfenv-state", "ok", timeout=180_000)
    expect(state).not_to_contain_text(old, timeout=60_000)
    new = container_id(state.inner_text())
    seen = page.evaluate("() => window.__tfenvStates")
    print(f"\n[ui] panel during the restart: {[(s, r, t[:60]) for s, r, t in seen]}")
    assert new != old
    restarting = [i for i, (s, r, _) in enumerate(seen) if r == "restarting"]
    assert restarting, seen
    assert "Restarting" in seen[restarting[0]][2], seen
    # From the restart on, never "Running" with the old container.
    stale = [e for e in seen[restarting[0] :] if e[0] == "ok" and old in e[2]]
    assert not stale, seen


def test_the_panel_says_when_the_server_stopped(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    open_running_panel(page)
    lab.api("POST", "api/shutdown")
    lab.proc.wait(90)
    page.locator(f"{PANEL} .jp-tfenv-refresh").click()
    state = page.locator(STATE)
    expect(state).to_have_attribute("data-tfenv-state", "error", timeout=60_000)
    expect(state).to_have_attribute("data-tfenv-reason", "server-unreachable")
    expect(state).to_contain_text("Server not reachable")
    expect(state).not_to_contain_text("Running")
    print(f"\n[ui] panel after the server stopped: {state.inner_text()!r}")
