"""Browser tests of where a user chooses an environment: File > New > Notebook's kernel
picker, the Launcher, the panel's list (issue 19, items 6 and 7).

The server's default kernel is a tfenv environment (as in ``scripts/demo.sh``); the host
has no GPU runtime and one environment's image is not built, so two environments cannot
run here. Real JupyterLab, Debian's Chromium, TF kernels in containers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from .helpers import KERNEL_TIMEOUT_MS, new_notebook_dialog, wait_kernel_idle
from .lab import UI_CATALOG, LabServer, start_lab

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
DEFAULT = "TensorFlow 2.20.0 (CPU)"
#: Every environment, in the one order the Launcher, the picker and the panel show.
USABLE = ["TensorFlow 2.20.0 (CPU)", "TensorFlow 2.19.0 (CPU)"]
#: Those that cannot run here: after them, newest TensorFlow first (the GPU one has none).
UNUSABLE = {"missing": "TensorFlow 9.9.9 (CPU)", "gpu": "Python 3.11 (all GPUs)"}
GPU_REASON = re.compile(r"no NVIDIA (driver|container runtime)|no GPU on this host")


@pytest.fixture(scope="module")
def lab(
    images: docker.DockerClient,
    lab_catalog: list[dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LabServer]:
    """JupyterLab whose default kernel is the TF 2.20 environment, as the demo's is."""
    server = start_lab(
        tmp_path_factory.mktemp("lab"),
        lab_catalog,
        extra_args=["--MappingKernelManager.default_kernel_name=tfenv-tf220"],
    )
    try:
        yield server
    finally:
        left = server.stop(images)
        assert not left, f"JupyterLab left kernel containers behind: {left}"


@pytest.fixture(autouse=True)
def _no_gpu_runtime(lab: LabServer) -> None:
    gpus = lab.api("GET", "tfenv/gpus")
    if gpus.get("state") == "ok" and (gpus.get("runtime") or {}).get("nvidia"):
        pytest.skip("this host has an NVIDIA driver and runtime: the GPU environment can run")
    assert [env["id"] for env in UI_CATALOG] == ["tf220", "tf219", "gpu", "missing"]


def select_options(dialog: Any) -> list[dict[str, Any]]:
    """The picker's options in order: text, group, selected, tfenv attributes."""
    return list(
        dialog.locator("select").evaluate(
            """(select) => [...select.options].map(o => ({
                text: o.text, group: o.parentElement.label, selected: o.selected,
                title: o.title, env: o.dataset.tfenvEnv || null,
                available: o.dataset.tfenvAvailable || null,
            }))"""
        )
    )


def test_new_notebook_preselects_the_default_environment(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    dialog = new_notebook_dialog(page)
    # The dialog is filled once the catalog and the GPU check are known.
    expect(dialog.locator("select option[data-tfenv-env]")).to_have_count(4)
    options = select_options(dialog)
    print(f"\n[ui] File > New > Notebook picker: {[(o['group'], o['text']) for o in options]}")
    chosen = [o["text"] for o in options if o["selected"]]
    assert chosen == [DEFAULT], options
    # The environments that can run, in the panel's order, before the host's own kernel.
    starting = [o["text"] for o in options if o["group"] == "Start Kernel"]
    assert starting[:2] == USABLE, options
    assert "Python 3 (ipykernel)" in starting[2:], options
    # The others in a group of their own, with the reason and the server's words.
    unusable = [o for o in options if o["group"] == "Cannot run on this server"]
    assert [o["env"] for o in unusable] == ["missing", "gpu"], options
    assert all(o["available"] == "false" for o in unusable), options
    assert unusable[0]["text"] == f"{UNUSABLE['missing']} — unavailable: image not pulled"
    assert unusable[1]["text"].startswith(f"{UNUSABLE['gpu']} — unavailable: "), unusable
    assert GPU_REASON.search(unusable[1]["text"]), unusable
    assert "NVIDIA" in unusable[1]["title"], unusable
    # Each environment once.
    names = [o["env"] for o in options if o["env"]]
    assert sorted(names) == sorted(set(names)), options

    # Enter accepts the preselected environment: a tfenv kernel, not the host's ipykernel.
    page.keyboard.press("Enter")
    panel = page.locator(".jp-NotebookPanel").first
    wait_kernel_idle(page, panel)
    assert [k["name"] for k in lab.api("GET", "api/kernels")] == ["tfenv-tf220"]


def test_launcher_lists_each_environment_once_usable_first(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    tfenv_cards = page.locator('.jp-LauncherCard[data-category="TensorFlow environments"]')
    # Marked once the GPU check answered.
    expect(tfenv_cards.filter(has_text="unavailable")).to_have_count(2)
    labels = [text.strip() for text in tfenv_cards.all_inner_texts()]
    print(f"\n[ui] Launcher, TensorFlow environments: {labels}")
    assert labels[:2] == USABLE, labels
    assert labels[2] == f"{UNUSABLE['missing']} — unavailable: image not pulled", labels
    assert labels[3].startswith(f"{UNUSABLE['gpu']} — unavailable: "), labels
    assert GPU_REASON.search(labels[3]), labels
    assert "NVIDIA" in (tfenv_cards.nth(3).get_attribute("title") or "")
    # The "Notebook" section keeps the other kernels only: each environment is listed once.
    notebook_cards = page.locator('.jp-LauncherCard[data-category="Notebook"]')
    assert [t.strip() for t in notebook_cards.all_inner_texts()] == ["Python 3 (ipykernel)"]

    # A card that can run opens a notebook on its environment.
    tfenv_cards.filter(has_text=USABLE[1]).click()
    panel = page.locator(".jp-NotebookPanel").first
    wait_kernel_idle(page, panel)
    assert [k["name"] for k in lab.api("GET", "api/kernels")] == ["tfenv-tf219"]

    # The panel's list: the same order, the same marks.
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    rows = page.locator(f"{PANEL} .jp-tfenv-env-row")
    expect(rows.nth(3)).to_have_attribute("data-tfenv-available", "false")
    assert [rows.nth(i).get_attribute("data-tfenv-env") for i in range(4)] == [
        "tf220",
        "tf219",
        "missing",
        "gpu",
    ]
    assert [rows.nth(i).get_attribute("data-tfenv-available") for i in range(4)] == [
        "true",
        "true",
        "false",
        "false",
    ]
    gpu_row = rows.nth(3)
    expect(gpu_row.locator(".jp-tfenv-unavailable")).to_have_text(GPU_REASON)
    expect(gpu_row.locator(".jp-tfenv-switch")).to_be_disabled()
    expect(rows.nth(0).locator(".jp-tfenv-switch")).to_be_enabled()


def test_an_environment_that_cannot_run_says_why_in_full(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    # The user clicks the GPU card anyway.
    card = page.locator('.jp-LauncherCard[data-category="TensorFlow environments"]').filter(
        has_text=UNUSABLE["gpu"]
    )
    expect(card).to_contain_text("unavailable")
    card.click()
    error = page.locator(".jp-Dialog").filter(has_text="Error Starting Kernel")
    error.wait_for(timeout=KERNEL_TIMEOUT_MS)
    message = error.locator(".jp-Dialog-body > div > pre").first
    expect(message).to_contain_text("NVIDIA")
    # The whole message is on screen: wrapped, nothing cut off at the dialog's edge.
    box = message.evaluate(
        """(pre) => ({scroll: pre.scrollWidth, client: pre.clientWidth,
                      lines: Math.round(pre.getBoundingClientRect().height
                                        / parseFloat(getComputedStyle(pre).lineHeight)),
                      whiteSpace: getComputedStyle(pre).whiteSpace})"""
    )
    print(f"\n[ui] kernel error message: {message.inner_text()[:300]!r} ({box})")
    assert box["scroll"] <= box["client"] + 1, box
    assert box["lines"] > 1, box
    error.locator("button.jp-mod-accept").click()
    # The server logs this expected refusal in one line, without a traceback.
    log = lab.log_path.read_text(errors="replace")
    assert "tfenv: kernel not started: Environment 'gpu' asks for GPUs" in log, log[-3000:]
    assert "KernelStartError" not in log, log[-3000:]

    # JupyterLab then asks for another kernel: the failed one is not offered first.
    dialog = page.locator(".jp-Dialog").filter(has_text="Select Kernel")
    dialog.wait_for()
    expect(dialog.locator("select option[data-tfenv-env]")).to_have_count(4)
    options = select_options(dialog)
    chosen = [o["text"] for o in options if o["selected"]]
    assert chosen == [DEFAULT], options
    dialog.locator("button.jp-mod-reject").click()
    assert lab.api("GET", "api/kernels") == []
