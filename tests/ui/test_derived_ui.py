"""Browser test of derived environments (issue 21): the panel lists the packages a derived
environment adds at their pinned versions, and one not built yet says so with the command
that builds it. Real JupyterLab, Debian's Chromium, a real server's answer; no PyPI needed
(the environment is not built).
"""

from __future__ import annotations

from typing import Any

import pytest

from .lab import PY_IMAGE, LabServer

pytestmark = [pytest.mark.docker, pytest.mark.ui]

PANEL = "#jp-tfenv-panel"
DERIVED = {
    "id": "ds",
    "base": "py",
    "pip": ["six==1.16.0", "tomli==2.0.1"],
    "repository": "tfenv-pytest-ui-derived/ds",
}


@pytest.fixture(scope="module")
def lab_catalog() -> list[dict[str, Any]]:
    return [{"id": "py", "image": PY_IMAGE, "display_name": "Python 3.11 (test)"}, DERIVED]


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
