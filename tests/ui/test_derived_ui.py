"""Browser test of derived environments (issue 21): the panel lists the packages a derived
environment adds at their pinned versions, and one not built yet says so with the command
that builds it; a ModuleNotFoundError in a tfenv kernel gets one notification pointing at
the catalog's pip field; the Build button shows the build's steps while it runs and the
row turns built without a reload (a failing pin shows pip's own message); "Compare with…"
shows the packages that differ between two environments. Real JupyterLab, Debian's
Chromium, a real server and kernel; the builds download real wheels from PyPI (those tests
skip, with the reason, when it cannot be reached).
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from .helpers import KERNEL_TIMEOUT_MS, new_notebook, run_cell, wait_kernel_idle
from .lab import PY_IMAGE, LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
TOAST = ".jp-toastContainer .jp-Notification-Toast-info"
DERIVED = {
    "id": "ds",
    "base": "py",
    "pip": ["six==1.16.0", "tomli==2.0.1"],
    "repository": "tfenv-pytest-ui-derived/ds",
}
#: A pin PyPI has no such release of: its build fails in pip, with pip's words.
NO_SUCH = {
    "id": "no-such",
    "base": "py",
    "pip": ["six==0.0.12345"],
    "repository": "tfenv-pytest-ui-derived/no-such",
}


@pytest.fixture(scope="module", autouse=True)
def _remove_built(images: docker.DockerClient) -> Iterator[None]:
    yield
    for image in images.images.list():
        for tag in image.tags:
            if tag.startswith(DERIVED["repository"] + ":"):
                images.images.remove(tag, force=True)


def _pypi_reachable() -> bool:
    try:
        with urllib.request.urlopen("https://pypi.org/simple/six/", timeout=10) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def lab_catalog() -> list[dict[str, Any]]:
    return [{"id": "py", "image": PY_IMAGE, "display_name": "Python 3.11 (test)"}, DERIVED, NO_SUCH]


def test_the_panel_lists_the_added_packages_and_how_to_build(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    reply = lab.api("GET", "tfenv/environments")
    ds = next(env for env in reply["environments"] if env["id"] == "ds")
    assert ds["display_name"] == "Python 3.11 (test) + 2 packages"
    assert ds["derived"]["packages"] == [
        {"name": "six", "version": "1.16.0"},
        {"name": "tomli", "version": "2.0.1"},
    ]
    assert ds["image_status"]["present"] is False

    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    row = page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="ds"]')
    expect(row.locator(".jp-tfenv-env-name")).to_have_text("Python 3.11 (test) + 2 packages")
    packages = row.locator(".jp-tfenv-env-packages")
    expect(packages).to_have_text("+ six 1.16.0 · tomli 2.0.1 on py")
    expect(packages).to_have_attribute("data-tfenv-derived-base", "py")
    expect(row.locator(".jp-tfenv-presence")).to_have_text("not built")
    expect(row.locator(".jp-tfenv-not-built")).to_contain_text("`jupyter tfenv build ds`")
    # The plain environment shows neither.
    plain = page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="py"]')
    expect(plain.locator(".jp-tfenv-env-packages")).to_have_count(0)
    expect(plain.locator(".jp-tfenv-not-built")).to_have_count(0)


def test_a_missing_module_points_at_the_catalog_once(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    panel = new_notebook(page, "Python 3.11 (test)")
    wait_kernel_idle(page, panel)
    run_cell(page, panel, "import tfenv_no_such_module")
    toast = page.locator(TOAST).filter(has_text="tfenv_no_such_module")
    expect(toast).to_have_count(1, timeout=KERNEL_TIMEOUT_MS)
    text = toast.inner_text()
    assert "No 'tfenv_no_such_module' in 'py': kernels cannot pip install." in text, text
    assert "tfenv_no_such_module==<version> to the catalog's pip" in text, text
    # Its action says the whole of it.
    toast.get_by_role("button", name="How").click()
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("a derived environment with base: py")
    expect(dialog).to_contain_text("jupyter tfenv build")
    dialog.locator("button.jp-mod-accept").click()
    # The same module again: no second notification.
    run_cell(page, panel, None)
    wait_kernel_idle(page, panel)
    expect(page.locator(TOAST).filter(has_text="tfenv_no_such_module")).to_have_count(1)


def test_the_build_button_builds_the_environment(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    if not _pypi_reachable():
        pytest.skip("PyPI (https://pypi.org) cannot be reached: the build downloads wheels")
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    row = page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="ds"]')
    button = row.locator("button.jp-tfenv-build")
    expect(button).to_have_text("Build")
    button.click()
    # Progress while it runs, step by step (the events `jupyter tfenv build` prints).
    progress = row.locator(".jp-tfenv-build-progress")
    expect(progress).to_have_attribute("data-tfenv-build-state", "building")
    expect(progress.locator(".jp-tfenv-build-step")).to_have_text(
        [
            re.compile(r"^Resolving"),
            re.compile(r"^Downloading wheels"),
            "Building",
            "Verifying",
            "Tagging",
        ]
    )
    expect(row.locator("button.jp-tfenv-build")).to_have_text("Building…")
    # Then built, without a reload: the row shows the image as present, the button goes.
    expect(progress).to_have_attribute("data-tfenv-build-state", "done", timeout=KERNEL_TIMEOUT_MS)
    expect(progress.locator(".jp-tfenv-build-status")).to_have_text(
        re.compile(r"^Built tfenv-pytest-ui-derived/ds:v2-")
    )
    steps = progress.locator(".jp-tfenv-build-step[data-tfenv-step-state='done']")
    expect(steps).to_have_count(5)
    expect(row).to_have_attribute("data-tfenv-present", "true", timeout=KERNEL_TIMEOUT_MS)
    expect(row.locator("button.jp-tfenv-build")).to_have_count(0)
    expect(row.locator(".jp-tfenv-not-built")).to_have_count(0)
    expect(row.locator(".jp-tfenv-env-packages")).to_have_text("+ six 1.16.0 · tomli 2.0.1 on py")
    reply = lab.api("GET", "tfenv/environments")
    ds = next(env for env in reply["environments"] if env["id"] == "ds")
    assert ds["image_status"]["present"] is True
    [build] = lab.api("GET", "tfenv/builds")["builds"]
    assert build["state"] == "done" and build["result"]["image"] == ds["image"], build


def test_a_failed_build_shows_the_builds_message(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    if not _pypi_reachable():
        pytest.skip("PyPI (https://pypi.org) cannot be reached: the build asks it")
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    row = page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="no-such"]')
    row.locator("button.jp-tfenv-build").click()
    progress = row.locator(".jp-tfenv-build-progress")
    expect(progress).to_have_attribute("data-tfenv-build-state", "error", timeout=KERNEL_TIMEOUT_MS)
    message = progress.locator(".jp-tfenv-build-message")
    expect(message).to_contain_text("six==0.0.12345")
    expect(message).to_contain_text("pip exit")
    # The same message in JupyterLab's error dialog.
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text("Build failed")
    expect(dialog).to_contain_text("six==0.0.12345")
    dialog.get_by_role("button", name="Close").click()
    expect(row).to_have_attribute("data-tfenv-present", "false")
    expect(row.locator("button.jp-tfenv-build")).to_have_text("Build")


def test_two_environments_are_compared(page: Any, lab: LabServer) -> None:
    from playwright.sync_api import expect

    reply = lab.api("GET", "tfenv/environments")
    ds = next(env for env in reply["environments"] if env["id"] == "ds")
    if not ds["image_status"]["present"]:
        pytest.skip("ds was not built (the Build test needs PyPI): nothing to compare")
    page.locator(f'.lm-TabBar-tab[data-id="{PANEL[1:]}"]').click()
    row = page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="ds"]')
    row.locator("button.jp-tfenv-compare").click()
    picker = page.locator(".jp-Dialog")
    expect(picker).to_contain_text("Compare Python 3.11 (test) + 2 packages with…")
    # Only environments whose image is here are offered (py; not no-such).
    options = picker.locator("select option")
    expect(options).to_have_text(["Python 3.11 (test) (py)"])
    picker.get_by_role("button", name="Compare").click()
    compare = page.locator('.jp-Dialog .jp-tfenv-compare[data-tfenv-from="ds"][data-tfenv-to="py"]')
    expect(compare).to_be_visible(timeout=KERNEL_TIMEOUT_MS)
    # tomli 2.0.1 is what ds adds: only in ds, or at another version in py.
    tomli = compare.locator('li[data-tfenv-package="tomli"]')
    expect(tomli).to_contain_text("2.0.1")
    expect(compare.locator(".jp-tfenv-compare-summary")).to_contain_text("the same")
    python = compare.locator('tr[data-tfenv-version="python"]')
    expect(python).to_have_attribute("data-tfenv-same", "true")
    expect(python.locator("td").first).to_have_text(re.compile(r"^3\.11"))
    page.locator(".jp-Dialog").get_by_role("button", name="Close").click()
    expect(page.locator(".jp-Dialog")).to_have_count(0)
