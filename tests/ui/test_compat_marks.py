"""Browser test of the GPU compatibility marks (issue 20 item 2): an environment whose
image may not use this host's GPUs is marked in the panel, the Launcher and the kernel
picker.

This host has no NVML, so the server answers ``unknown`` for the catalog's GPU environment
(``not_applicable`` for the CPU ones): the quiet "GPU compatibility unknown" mark with the
server's message. ``incompatible`` needs a GPU and an older driver: the second test rewrites
the server's answers in the browser to see it. Real JupyterLab, Debian's Chromium, the UI
catalog.
"""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import new_notebook_dialog
from .lab import UI_CATALOG, LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
UNKNOWN = "GPU compatibility unknown"


def compatibility(lab: LabServer) -> dict[str, dict[str, Any]]:
    """The server's answer per environment id."""
    reply = lab.api("GET", "tfenv/environments")
    return {env["id"]: env.get("compatibility") for env in reply["environments"]}


@pytest.fixture(autouse=True)
def _ui_catalog() -> None:
    assert [env["id"] for env in UI_CATALOG] == ["tf220", "tf219", "gpu", "missing"]


def test_unknown_is_marked_in_the_panel_launcher_and_picker(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    verdicts = compatibility(lab)
    if (verdicts["gpu"] or {}).get("state") != "unknown":
        # A server without the field (older), or a host with NVML.
        pytest.skip(f"the server does not answer unknown for the GPU environment: {verdicts}")
    print(f"\n[ui] compatibility: {verdicts}")
    message = verdicts["gpu"]["message"].strip()
    assert message, verdicts
    assert all(verdicts[i]["state"] == "not_applicable" for i in ("tf220", "tf219")), verdicts

    # The Launcher: the GPU card says it in its title (quiet: not in its label).
    cards = page.locator('.jp-LauncherCard[data-category="TensorFlow environments"]')
    expect(cards).to_have_count(4)
    gpu_card = cards.filter(has_text="(all GPUs)")
    title = gpu_card.get_attribute("title") or ""
    assert f"{UNKNOWN}: {message}" in title, title
    assert UNKNOWN not in gpu_card.inner_text(), gpu_card.inner_text()
    for i in range(4):
        card = cards.nth(i)
        if "(all GPUs)" not in card.inner_text():
            assert UNKNOWN not in (card.get_attribute("title") or ""), card.inner_text()

    # The panel's list: a quiet badge on the GPU row with the message, none elsewhere.
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    row = page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="gpu"]')
    badge = row.locator('.jp-tfenv-compat[data-tfenv-compat="unknown"]')
    expect(badge).to_have_text(UNKNOWN)
    expect(badge).to_have_attribute("title", message)
    expect(row).to_have_attribute("data-tfenv-compat", "unknown")
    expect(page.locator(f"{PANEL} .jp-tfenv-env-row")).to_have_count(4)
    expect(page.locator(f"{PANEL} .jp-tfenv-compat")).to_have_count(1)
    expect(page.locator(f"{PANEL} .jp-tfenv-compat-message")).to_have_count(0)
    page.screenshot(path=str(lab.log_path.parent / "compat-marks-panel.png"))

    # The kernel picker: the option carries the mark and the message in its title.
    dialog = new_notebook_dialog(page)
    expect(dialog.locator("select option[data-tfenv-env]")).to_have_count(4)
    option = dialog.locator('select option[data-tfenv-env="gpu"]')
    expect(option).to_have_attribute("data-tfenv-compat", "unknown")
    assert f"{UNKNOWN}: {message}" in (option.get_attribute("title") or "")
    expect(dialog.locator("select option[data-tfenv-compat]")).to_have_count(1)
    dialog.locator("button.jp-mod-reject").click()
    assert lab.api("GET", "api/kernels") == []


#: What a server with a GPU answers for an image built for a newer CUDA than its driver.
INCOMPATIBLE = (
    "'gpu' is built for CUDA 12.5 but this host's NVIDIA driver supports CUDA 12.2 at most: "
    "update the driver, or use an image built for CUDA 12.2 or older."
)


def test_incompatible_is_a_warning_and_stays_selectable(page: Any, lab: LabServer) -> None:
    """The server's answers as on a host with a GPU and an older driver (rewritten in the
    browser: this host has none): the GPU environment can run but is incompatible."""
    import json

    from playwright.sync_api import expect

    def environments(route: Any) -> None:
        reply = route.fetch().json()
        for env in reply["environments"]:
            if env["id"] == "gpu":
                env["compatibility"] = {"state": "incompatible", "message": INCOMPATIBLE}
        route.fulfill(json=reply)

    def gpus(route: Any) -> None:
        reply = route.fetch().json()
        reply.update(state="ok", message="", driver_version="535.0", cuda_driver_version="12.2")
        reply["runtime"] = {**(reply.get("runtime") or {}), "nvidia": True, "message": ""}
        route.fulfill(body=json.dumps(reply), content_type="application/json")

    page.route("**/tfenv/environments?*", environments)
    page.route("**/tfenv/environments", environments)
    page.route("**/tfenv/gpus*", gpus)
    page.reload()
    page.wait_for_function("() => window.jupyterapp !== undefined")

    label = "Python 3.11 (all GPUs) — GPU incompatible"
    # The Launcher: after the compatible environments, the warning in its label and title.
    cards = page.locator('.jp-LauncherCard[data-category="TensorFlow environments"]')
    expect(cards.filter(has_text="GPU incompatible")).to_have_count(1)
    labels = [text.strip().replace("\n", " ") for text in cards.all_inner_texts()]
    print(f"\n[ui] Launcher, TensorFlow environments: {labels}")
    assert labels[:3] == ["TensorFlow 2.20.0 (CPU)", "TensorFlow 2.19.0 (CPU)", label], labels
    gpu_card = cards.nth(2)
    assert f"GPU incompatible: {INCOMPATIBLE}" in (gpu_card.get_attribute("title") or "")

    # The panel: a warning badge and the message in the row, Switch not hidden.
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    row = page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="gpu"]')
    expect(row).to_have_attribute("data-tfenv-compat", "incompatible")
    badge = row.locator('.jp-tfenv-compat[data-tfenv-compat="incompatible"]')
    expect(badge).to_have_text("GPU incompatible")
    expect(badge).to_have_attribute("title", INCOMPATIBLE)
    expect(row.locator(".jp-tfenv-compat-message")).to_have_text(INCOMPATIBLE)
    expect(row.locator(".jp-tfenv-switch")).to_be_visible()
    page.screenshot(path=str(lab.log_path.parent / "compat-marks-incompatible.png"))

    # The kernel picker: selectable, marked, not preselected.
    dialog = new_notebook_dialog(page)
    expect(dialog.locator("select option[data-tfenv-env]")).to_have_count(4)
    option = dialog.locator('select option[data-tfenv-env="gpu"]')
    expect(option).to_have_attribute("data-tfenv-compat", "incompatible")
    expect(option).to_have_attribute("data-tfenv-available", "true")
    expect(option).to_have_text(label)
    assert f"GPU incompatible: {INCOMPATIBLE}" in (option.get_attribute("title") or "")
    assert option.evaluate("(o) => !o.disabled && !o.selected")
    dialog.locator("button.jp-mod-reject").click()
    assert lab.api("GET", "api/kernels") == []
