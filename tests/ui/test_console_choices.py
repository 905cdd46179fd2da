"""Browser test of resources chosen at launch for a console (docs/choices.md).

A console opened for an environment that offers choices (as the Launcher's console card
opens one: ``console:create`` with the kernel's name) asks for them in the same dialog as
a notebook; the container gets what was picked (docker inspect). A console has no file to
record the choice in: the next console of that environment preselects the last pick, and
Cancel starts no kernel.

Real JupyterLab, Debian's Chromium, real containers.
"""

from __future__ import annotations

import time
from typing import Any

import docker
import pytest

from .helpers import KERNEL_TIMEOUT_MS
from .lab import PY_IMAGE, UI_CATALOG, LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

MIB = 1024**2
CHOICES_ENV: dict[str, Any] = {
    "id": "py-console-choices",
    "image": PY_IMAGE,
    "display_name": "Python console with choices",
    "resources": {"memory": "256m"},
    "choices": {"memory": ["256m", "512m"]},
}
DIALOG = ".jp-Dialog:has(.jp-tfenv-choices-dialog)"


@pytest.fixture(scope="module")
def lab_catalog() -> list[dict[str, Any]]:
    return [*UI_CATALOG, CHOICES_ENV]


def open_console(page: Any) -> None:
    """What the Launcher's console card of the environment does."""
    page.evaluate(
        """() => { void window.jupyterapp.commands.execute('console:create', {
            kernelPreference: {name: 'tfenv-py-console-choices'}
        }); }"""
    )


def console_sessions(lab: LabServer) -> list[dict[str, Any]]:
    return [s for s in lab.api("GET", "api/sessions") if s["type"] == "console"]


def wait_console_idle(page: Any, index: int) -> None:
    """Wait until console ``index`` (in the order opened) has a connected, idle kernel."""
    page.wait_for_function(
        """(index) => {
            const consoles = [...window.jupyterapp.shell.widgets('main')]
                .filter(w => w.hasClass && w.hasClass('jp-ConsolePanel'));
            const ctx = consoles[index] && consoles[index].sessionContext;
            const kernel = ctx && ctx.session && ctx.session.kernel;
            return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle';
        }""",
        arg=index,
        timeout=KERNEL_TIMEOUT_MS,
    )


def test_a_console_asks_and_its_container_gets_the_choice(
    page: Any, lab: LabServer, images: docker.DockerClient
) -> None:
    from playwright.sync_api import expect

    open_console(page)
    dialog = page.locator(DIALOG)
    expect(dialog).to_be_visible()
    form = dialog.locator('.jp-tfenv-choices-dialog[data-tfenv-env="py-console-choices"]')
    memory = form.locator('select[data-tfenv-choice="memory"]')
    expect(memory.locator("option:checked")).to_have_text("256 MiB")  # the default
    memory.select_option(label="512 MiB")
    dialog.locator("button.jp-mod-accept").click()
    wait_console_idle(page, 0)
    (session,) = console_sessions(lab)
    kernel_id = session["kernel"]["id"]
    deadline = time.monotonic() + 60
    found: list[Any] = []
    while not found and time.monotonic() < deadline:
        found = [
            c
            for c in lab.containers(images)
            if c.labels.get("org.jupyter.tfenv.kernel-id") == kernel_id
        ]
        time.sleep(0.5)
    assert found, f"no container for the console's kernel {kernel_id}: {lab.log_tail(30)}"
    host = found[0].attrs["HostConfig"]
    assert host["Memory"] == 512 * MIB, (
        f"the console's kernel did not get the chosen 512 MiB: {host['Memory']} bytes"
    )

    # The next console of that environment preselects the last pick; Cancel starts nothing.
    open_console(page)
    expect(dialog).to_be_visible()
    expect(memory.locator("option:checked")).to_have_text("512 MiB")
    dialog.locator("button.jp-mod-reject").click()
    expect(dialog).to_have_count(0)
    expect(page.locator(".jp-ConsolePanel")).to_have_count(2)
    assert len(console_sessions(lab)) == 1, console_sessions(lab)
    assert [
        c.labels.get("org.jupyter.tfenv.kernel-id")
        for c in lab.containers(images)
        if c.status == "running"
    ] == [kernel_id]
