"""Browser test of the GPU compatibility marks (issue 20 item 2): an environment whose
image may not use this host's GPUs is marked in the panel, the Launcher and the kernel
picker. Real servers, real answers: nothing is rewritten in the browser.

- ``unknown``: the module's ``lab`` on this host, which has no NVML: the server answers
  ``unknown`` for the catalog's GPU environment (``not_applicable`` for the CPU ones), the
  quiet "GPU compatibility unknown" mark with the server's message.
- ``incompatible``: a JupyterLab of the test's own whose host facts come from the stand-in
  ``pynvml`` of tests/support/fake_nvml.py (driver 470.82.01: CUDA up to 11.4, one A100)
  first on its ``PYTHONPATH``, with a cached probe of TensorFlow 2.20's CUDA 12.5 build for
  the GPU environment's image in its probe cache (as `jupyter tfenv probe` writes it): the
  server's verdict is ``incompatible`` and it refuses the start (409) before any container
  is made. This host's Docker engine has no NVIDIA runtime (a real fact the server reports
  too), so the GPU environment is also listed as one that cannot run here.

Real JupyterLab, Debian's Chromium, the UI catalog.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from jupyter_tfenv.backends.docker.probe import PROBE_VERSION, probe_cache_path
from jupyter_tfenv.catalog.validation import environment_from_dict
from tests.kernels.test_compat import TF220_GPU
from tests.support.fake_nvml import fake_pynvml_dir

from .conftest import DEFAULT_TIMEOUT_MS, open_lab
from .helpers import new_notebook_dialog, pick_kernel
from .lab import PY_IMAGE, UI_CATALOG, LabServer, start_lab

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
    print(f"\n[ui] compatibility: {verdicts}")
    # This host has no NVML: the server cannot read the driver, so the GPU environment's
    # compatibility is unknown (whether or not its image was probed).
    assert verdicts["gpu"]["state"] == "unknown", verdicts
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


# -- incompatible: a host whose driver is older than the image's CUDA -------------------------

#: The server's verdict on the GPU environment (jupyter_tfenv/kernels/compat.py): the image
#: was probed as TensorFlow 2.20's CUDA 12.5 build, the driver 470.82.01 supports CUDA 11.4.
INCOMPATIBLE = (
    "TensorFlow in 'gpu' was built for CUDA 12.5, but the host's driver 470.82.01 supports "
    "CUDA up to 11.4. Install an NVIDIA driver >= 555.42.02 (CUDA 12.5); at least >= "
    "525.60.13 (CUDA 12.0), enough through CUDA minor-version compatibility when every GPU "
    "has native code in the build, or use an image built for CUDA 11.4 or older."
)


def cache_cuda12_probe(client: docker.DockerClient, cache_dir: Path) -> None:
    """A cached probe of TF 2.20's CUDA 12.5 build for the UI catalog's GPU environment's
    image, in ``cache_dir``, as `jupyter tfenv probe` writes it."""
    spec = next(env for env in UI_CATALOG if env["id"] == "gpu")
    image_id = client.images.get(spec["image"]).id
    path = probe_cache_path(cache_dir, image_id, environment_from_dict(spec))
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {**TF220_GPU, "environment": "gpu", "image": spec["image"], "image_id": image_id}
    path.write_text(json.dumps({**stored, "probe_version": PROBE_VERSION}))


@pytest.fixture(scope="module")
def old_driver_lab(
    images: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabServer]:
    """A JupyterLab of its own with the UI catalog, on a host whose NVML (the stand-in
    pynvml) reports driver 470.82.01 (CUDA 11.4) and one A100, where the GPU environment's
    image was probed as a CUDA 12.5 build."""
    assert next(env for env in UI_CATALOG if env["id"] == "gpu")["image"] == PY_IMAGE
    base = tmp_path_factory.mktemp("old-driver-lab")
    # The server's probe cache, where its listing and its kernels' backend both read: the
    # default one, in its Jupyter data dir (start_lab's JUPYTER_DATA_DIR is base/data).
    cache_cuda12_probe(images, base / "data" / "jupyter_tfenv" / "probes")
    server = start_lab(
        base, list(UI_CATALOG), extra_env={"PYTHONPATH": str(fake_pynvml_dir(base / "nvml"))}
    )
    try:
        yield server
    finally:
        left = server.stop(images)
        print(f"\n[ui] JupyterLab pid {server.pid} stopped; log: {server.log_path}")
        assert not left, f"JupyterLab left kernel containers behind: {left}"


@pytest.fixture
def old_driver_page(browser: Any, old_driver_lab: LabServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    tab = context.new_page()
    open_lab(tab, old_driver_lab, "compat-incompatible")
    try:
        yield tab
    finally:
        context.close()
        old_driver_lab.shutdown_kernels()


def test_incompatible_is_a_warning_and_the_start_is_refused(
    old_driver_page: Any, old_driver_lab: LabServer, images: docker.DockerClient
) -> None:
    """The real server's verdict on a host with an older driver: the GPU environment is
    marked incompatible with the server's message, stays in the picker (not preselected),
    and a start from the picker ends in JupyterLab's kernel error dialog with the server's
    refusal, before any container is made."""
    from playwright.sync_api import expect

    page, lab = old_driver_page, old_driver_lab
    verdicts = compatibility(lab)
    print(f"\n[ui] compatibility: {verdicts}")
    assert verdicts["gpu"] == {"state": "incompatible", "message": INCOMPATIBLE}, verdicts
    assert all(verdicts[i]["state"] == "not_applicable" for i in ("tf220", "tf219")), verdicts
    gpus = lab.api("GET", "tfenv/gpus")
    assert (gpus["state"], gpus["driver_version"], gpus["cuda_driver_version"]) == (
        "ok",
        "470.82.01",
        "11.4",
    ), gpus
    # This host's engine has no NVIDIA runtime: the environment cannot run here either.
    assert gpus["runtime"]["nvidia"] is False, gpus["runtime"]
    warning = f"GPU incompatible: {INCOMPATIBLE}"
    unavailable = "Python 3.11 (all GPUs) — unavailable: no NVIDIA container runtime"

    # The Launcher: the compatible environments first; the GPU card's title has the warning.
    cards = page.locator('.jp-LauncherCard[data-category="TensorFlow environments"]')
    expect(cards).to_have_count(4)
    expect(cards.nth(3)).to_contain_text("Python 3.11 (all GPUs)")
    labels = [text.strip().replace("\n", " ") for text in cards.all_inner_texts()]
    print(f"[ui] Launcher, TensorFlow environments: {labels}")
    assert labels[:2] == ["TensorFlow 2.20.0 (CPU)", "TensorFlow 2.19.0 (CPU)"], labels
    assert labels[3] == unavailable, labels
    title = cards.nth(3).get_attribute("title") or ""
    assert title.splitlines()[-1] == warning, title
    for i in range(3):
        assert "GPU incompatible" not in (cards.nth(i).get_attribute("title") or "")

    # The panel: a warning badge and the message in the row, Switch not hidden.
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    row = page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="gpu"]')
    expect(row).to_have_attribute("data-tfenv-compat", "incompatible")
    badge = row.locator('.jp-tfenv-compat[data-tfenv-compat="incompatible"]')
    expect(badge).to_have_text("GPU incompatible")
    expect(badge).to_have_attribute("title", INCOMPATIBLE)
    expect(row.locator(".jp-tfenv-compat-message")).to_have_text(INCOMPATIBLE)
    expect(row.locator(".jp-tfenv-switch")).to_be_visible()
    expect(page.locator(f"{PANEL} .jp-tfenv-compat")).to_have_count(1)
    page.screenshot(path=str(lab.base / "compat-marks-incompatible.png"))

    # The kernel picker: marked, with the warning in its title, selectable, not preselected.
    dialog = new_notebook_dialog(page)
    expect(dialog.locator("select option[data-tfenv-env]")).to_have_count(4)
    option = dialog.locator('select option[data-tfenv-env="gpu"]')
    expect(option).to_have_attribute("data-tfenv-compat", "incompatible")
    expect(option).to_have_attribute("data-tfenv-available", "false")
    expect(option).to_have_text(unavailable)
    assert (option.get_attribute("title") or "").splitlines()[-1] == warning
    assert option.evaluate("(o) => !o.disabled && !o.selected")
    expect(dialog.locator("select option[data-tfenv-compat]")).to_have_count(1)

    # Started anyway: the kernel backend refuses it (409, before any container is made;
    # /api/sessions passes it on as a 500) with the verdict, JupyterLab's dialog shows it.
    pick_kernel(dialog, "Python 3.11 (all GPUs)")
    error = page.locator(".jp-Dialog").filter(has_text="Error Starting Kernel")
    expect(error).to_be_visible()
    expect(error.locator(".jp-Dialog-body")).to_have_text(INCOMPATIBLE)
    page.screenshot(path=str(lab.base / "compat-marks-refused.png"))
    error.locator("button.jp-mod-accept").click()
    expect(error).to_have_count(0)
    assert lab.api("GET", "api/kernels") == []
    assert lab.containers(images) == []  # refused before any container was made
