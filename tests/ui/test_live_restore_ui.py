"""The panel says when the Docker engine's live-restore is off (issue 24, item 2).

Real engines, Debian's Chromium: the main test engine runs with Docker's default (no
live-restore), so the module's JupyterLab shows the warning; a JupyterLab on a dockerd of
this test's own started with ``--live-restore`` (tests/support/gpu_engine.py's
TestEngine) shows none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.support.gpu_engine import TestEngine

from .conftest import DEFAULT_TIMEOUT_MS, open_lab, screenshot_dir
from .lab import PY_IMAGE, LabServer, start_lab

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
WARNING = f"{PANEL} .jp-tfenv-engine-warning"
CATALOG: list[dict[str, Any]] = [
    {"id": "py", "image": PY_IMAGE, "display_name": "Python 3.11 (live-restore test)"}
]


@pytest.fixture(scope="module")
def lab_catalog() -> list[dict[str, Any]]:
    return list(CATALOG)


def open_panel(page: Any) -> None:
    from playwright.sync_api import expect

    tab = page.locator('.lm-TabBar-tab[data-id="jp-tfenv-panel"]')
    tab.wait_for()
    tab.click()
    # The listing has arrived (the warning comes with it).
    expect(page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="py"]')).to_be_visible()


def test_the_panel_warns_when_live_restore_is_off(
    page: Any, lab: LabServer, images: docker.DockerClient
) -> None:
    from playwright.sync_api import expect

    assert images.info()["LiveRestoreEnabled"] is False  # the main engine: Docker's default
    assert lab.api("GET", "tfenv/environments")["engine"]["live_restore"] is False
    open_panel(page)
    warning = page.locator(WARNING)
    expect(warning).to_be_visible()
    expect(warning).to_have_attribute("data-tfenv-live-restore", "false")
    expect(warning).to_contain_text(
        "The Docker engine's live-restore is off: an engine restart or upgrade restarts "
        "every kernel; variables are lost."
    )
    expect(warning.locator("code")).to_have_text('"live-restore": true')
    expect(warning).to_contain_text("/etc/docker/daemon.json")
    expect(warning).to_contain_text("docs/operations.md")
    print(f"\n[ui] panel: {warning.inner_text()!r}")
    page.locator(PANEL).screenshot(path=str(screenshot_dir() / "live-restore-off.png"))

    # An admin who read it can dismiss it; it stays away after a reload (this browser,
    # this engine and version), while the server still reports the engine as it is.
    warning.get_by_role("button", name="Dismiss").click()
    expect(warning).to_have_count(0)
    page.reload()
    page.locator('.lm-TabBar-tab[data-id="jp-tfenv-panel"]').wait_for()
    page.wait_for_timeout(1000)  # the restored layout may have opened the panel already
    if not page.locator(PANEL).is_visible():
        open_panel(page)
    expect(page.locator(f'{PANEL} .jp-tfenv-env-row[data-tfenv-env="py"]')).to_be_visible()
    expect(page.locator(WARNING)).to_have_count(0)
    assert lab.api("GET", "tfenv/environments")["engine"]["live_restore"] is False


@pytest.fixture(scope="module")
def live_restore_engine(images: docker.DockerClient) -> Iterator[TestEngine]:
    engine = TestEngine(live_restore=True)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


def test_no_warning_on_an_engine_with_live_restore(
    browser: Any, live_restore_engine: TestEngine, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    client = live_restore_engine.client
    assert client is not None and client.info()["LiveRestoreEnabled"] is True
    server = start_lab(
        tmp_path / "lab", CATALOG, extra_env={"DOCKER_HOST": live_restore_engine.url}
    )
    try:
        engine = server.api("GET", "tfenv/environments")["engine"]
        assert engine["live_restore"] is True
        assert engine["host"] == live_restore_engine.url
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        try:
            page = context.new_page()
            open_lab(page, server, "live-restore-on")
            open_panel(page)
            expect(page.locator(WARNING)).to_have_count(0)
        finally:
            context.close()
    finally:
        left = server.stop(client)
    assert not left
