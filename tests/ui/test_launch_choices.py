"""Browser test of resources chosen at launch (issue 20 item 3, docs/choices.md).

A notebook of an environment that offers choices (memory, CPUs): JupyterLab asks for them
in a small dialog when the kernel starts, the container gets what was picked (docker
inspect), the panel's Container section shows the limits, the notebook's metadata records
the choice after a save; at the next kernel change the dialog preselects the recorded
choice, and the new pick is what the new container gets. An environment without choices
starts without the dialog.

Real JupyterLab, Debian's Chromium, real containers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import docker
import pytest

from .helpers import kernel_name, new_notebook, pick_kernel, wait_kernel_idle
from .lab import PY_IMAGE, UI_CATALOG, LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

MIB = 1024**2
PANEL = "#jp-tfenv-panel"
CHOICES_ENV: dict[str, Any] = {
    "id": "py-choices",
    "image": PY_IMAGE,
    "display_name": "Python with choices",
    "resources": {"memory": "256m"},
    "choices": {"memory": ["256m", "512m"], "cpus": [1, 2]},
}
DIALOG = ".jp-Dialog:has(.jp-tfenv-choices-dialog)"


@pytest.fixture(scope="module")
def lab_catalog() -> list[dict[str, Any]]:
    plain = {"id": "py-plain", "image": PY_IMAGE, "display_name": "Python without choices"}
    return [*UI_CATALOG, CHOICES_ENV, plain]


def kernel_container(lab: LabServer, client: docker.DockerClient, path: str) -> Any:
    """The container of the kernel of the session of ``path`` (the newest one)."""
    (session,) = [s for s in lab.api("GET", "api/sessions") if s["path"] == path]
    kernel_id = session["kernel"]["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [
            c
            for c in lab.containers(client)
            if c.labels.get("org.jupyter.tfenv.kernel-id") == kernel_id
        ]
        if found:
            found[0].reload()
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no container for kernel {kernel_id}")


def saved_choice(lab: LabServer, page: Any, path: str, expected: dict[str, Any]) -> Any:
    """Save the notebook (keeping its name at the first save's rename dialog) until its
    file's ``metadata.tfenv.choices`` is ``expected``; return what the file has."""
    page.keyboard.press("Control+s")
    rename = page.locator(".jp-Dialog").filter(has_text="Rename file")
    choice = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if rename.count():
            rename.locator("button.jp-mod-accept").click()
        try:
            data = json.loads((lab.root_dir / path).read_text())
        except ValueError:  # read while the server writes it
            time.sleep(0.2)
            continue
        choice = data["metadata"].get("tfenv", {}).get("choices")
        if choice == expected:
            return choice
        time.sleep(0.5)
    return choice


def test_the_dialog_choice_reaches_the_container_and_the_notebook(
    page: Any, lab: LabServer, images: docker.DockerClient
) -> None:
    from playwright.sync_api import expect

    nb = new_notebook(page, "Python with choices")
    dialog = page.locator(DIALOG)
    expect(dialog).to_be_visible()
    form = dialog.locator('.jp-tfenv-choices-dialog[data-tfenv-env="py-choices"]')
    memory = form.locator('select[data-tfenv-choice="memory"]')
    cpus = form.locator('select[data-tfenv-choice="cpus"]')
    # The defaults are preselected: the entry's own memory, the first CPU count.
    expect(memory.locator("option:checked")).to_have_text("256 MiB")
    expect(cpus.locator("option:checked")).to_have_text("1 CPU")
    memory.select_option(label="512 MiB")
    cpus.select_option(label="2 CPUs")
    page.screenshot(path=str(lab.log_path.parent / "launch-choices-dialog.png"))
    dialog.locator("button.jp-mod-accept").click()
    wait_kernel_idle(page, nb)
    path = "Untitled.ipynb"
    host = kernel_container(lab, images, path).attrs["HostConfig"]
    assert host["Memory"] == 512 * MIB and host["NanoCpus"] == 2 * 10**9, host

    # The panel's Container section shows the limits the kernel got.
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    expect(page.locator(f"{PANEL} .jp-tfenv-cpu")).to_contain_text("2-CPU limit")
    expect(page.locator(f"{PANEL} .jp-tfenv-memory")).to_contain_text("512")

    # Recorded in the notebook beside the provenance, once saved.
    chosen = {"environment": "py-choices", "values": {"memory": "512m", "cpus": 2}}
    assert saved_choice(lab, page, path, chosen) == chosen

    # A kernel change to the environment asks again, with the recorded choice preselected.
    kernel_name(nb).click()
    picker = page.locator(".jp-Dialog").filter(has_text="Select Kernel")
    pick_kernel(picker, "Python with choices")
    expect(dialog).to_be_visible()
    expect(memory.locator("option:checked")).to_have_text("512 MiB")
    expect(cpus.locator("option:checked")).to_have_text("2 CPUs")
    memory.select_option(label="256 MiB")
    dialog.locator("button.jp-mod-accept").click()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        host = kernel_container(lab, images, path).attrs["HostConfig"]
        if host["Memory"] == 256 * MIB:
            break
        time.sleep(1)
    assert host["Memory"] == 256 * MIB and host["NanoCpus"] == 2 * 10**9, host
    wait_kernel_idle(page, nb)
    chosen = {"environment": "py-choices", "values": {"memory": "256m", "cpus": 2}}
    assert saved_choice(lab, page, path, chosen) == chosen


def test_an_environment_without_choices_starts_without_the_dialog(
    page: Any, lab: LabServer
) -> None:
    from playwright.sync_api import expect

    nb = new_notebook(page, "Python without choices")
    # No choices offered: JupyterLab goes straight to the start; never the dialog.
    wait_kernel_idle(page, nb)
    expect(kernel_name(nb)).to_have_text("Python without choices")
    expect(page.locator(DIALOG)).to_have_count(0)
