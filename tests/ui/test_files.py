"""Browser test of files made in JupyterLab and written by a kernel (issue 19, item 1).

A new user made a folder with the file browser's New Folder and could not write into it
from the kernel (PermissionError): JupyterLab ran as root, kernels as another uid. The
server here runs as ``scripts/demo.sh`` runs it: as the kernels' user, or, where that user
cannot run this Python (an interpreter under /root), as root with the notebook folder
shared with the kernels' group (setgid, umask 002). A server of another uid than its
kernels, without such a folder, warns at start, answers why in ``GET /tfenv/environments``
(``files``), and the panel's kernel section shows it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from .conftest import DEFAULT_TIMEOUT_MS, open_lab, screenshot_dir
from .helpers import expect_output, run_cell, wait_kernel_idle
from .lab import KERNEL_UID, UI_CATALOG, LabServer, kernel_user_can_run, start_lab

pytestmark = [pytest.mark.docker, pytest.mark.ui]

WARNING = f"tfenv: this server runs as uid 0 but its kernels run as uid {KERNEL_UID}"


@pytest.fixture(scope="module")
def lab(images: docker.DockerClient, lab_catalog: list[dict[str, Any]]) -> Iterator[LabServer]:
    # Not under pytest's temporary folder: only root may enter it.
    base = Path(tempfile.mkdtemp(prefix="tfui-files-", dir="/tmp"))
    own_user = kernel_user_can_run()
    print(
        "\n[ui] JupyterLab runs as "
        + (f"uid {KERNEL_UID}, the kernels' user" if own_user else "root, folder shared")
    )
    server = start_lab(
        base / "lab", lab_catalog, as_kernel_user=own_user, shared_folder=not own_user
    )
    try:
        yield server
    finally:
        left = server.stop(images)
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"JupyterLab left kernel containers behind: {left}"


def test_the_kernel_writes_into_a_folder_made_in_the_file_browser(
    page: Any, lab: LabServer
) -> None:
    from playwright.sync_api import expect

    # File browser > New Folder, named "data".
    page.locator(
        ".jp-FileBrowser-toolbar [data-command='filebrowser:create-new-directory']"
    ).click()
    editor = page.locator(".jp-DirListing-editor")
    editor.wait_for()
    editor.fill("data")
    editor.press("Enter")
    expect(
        page.locator(".jp-DirListing-item .jp-DirListing-itemText", has_text="data")
    ).to_have_count(1)
    folder = lab.root_dir / "data"
    assert folder.is_dir()

    # A notebook on TensorFlow 2.20 writes into it.
    page.locator('.jp-LauncherCard[data-category="TensorFlow environments"]').filter(
        has_text="TensorFlow 2.20.0 (CPU)"
    ).click()
    nb = page.locator(".jp-NotebookPanel").first
    wait_kernel_idle(page, nb)
    run_cell(page, nb, "open('data/out.csv', 'w').write('x,y\\n'); print('written')")
    assert expect_output(nb, "written") == "written"

    written = folder / "out.csv"
    assert written.read_text() == "x,y\n"
    info = os.stat(folder)
    print(
        f"\n[ui] data/: uid {info.st_uid} gid {info.st_gid} mode {oct(info.st_mode)}; "
        f"data/out.csv: uid {os.stat(written).st_uid}"
    )
    assert os.stat(written).st_uid == KERNEL_UID
    assert WARNING not in lab.log_path.read_text(errors="replace")
    # Nothing to explain: the API has no files warning, the panel shows none.
    assert "files" not in lab.api("GET", "tfenv/environments")
    page.locator('.lm-TabBar-tab[data-id="jp-tfenv-panel"]').click()
    expect(page.locator('#jp-tfenv-panel .jp-tfenv-kernel[data-tfenv-env="tf220"]')).to_be_visible()
    expect(page.locator("#jp-tfenv-panel .jp-tfenv-files-warning")).to_have_count(0)


def test_a_server_of_another_user_than_its_kernels_warns_at_start(
    images: docker.DockerClient, browser: Any, tmp_path: Path
) -> None:
    """The server (root) warns in its log, its API says why, the panel shows it."""
    from playwright.sync_api import expect

    server = start_lab(tmp_path / "lab", UI_CATALOG)
    try:
        log = server.log_path.read_text(errors="replace")
        files = server.api("GET", "tfenv/environments").get("files")
        # The user's path: a folder made in JupyterLab (root's), a notebook writes into it.
        server.api("PUT", "api/contents/data", {"type": "directory"})
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        try:
            page = context.new_page()
            open_lab(page, server, "files-mismatch")
            page.locator('.jp-LauncherCard[data-category="TensorFlow environments"]').filter(
                has_text="TensorFlow 2.20.0 (CPU)"
            ).click()
            nb = page.locator(".jp-NotebookPanel").first
            wait_kernel_idle(page, nb)
            # One line: the editor would indent a typed block.
            run_cell(
                page,
                nb,
                "exec(\"try: open('data/out.csv', 'w')\\n"
                'except PermissionError as e: print(type(e).__name__)")',
            )
            assert expect_output(nb, "PermissionError") == "PermissionError"

            # The panel's kernel section says why, and what to do.
            tab = page.locator('.lm-TabBar-tab[data-id="jp-tfenv-panel"]')
            tab.wait_for()
            tab.click()
            warning = page.locator(
                '#jp-tfenv-panel .jp-tfenv-kernel[data-tfenv-env="tf220"] .jp-tfenv-files-warning'
            )
            expect(warning).to_be_visible()
            expect(warning).to_have_attribute("data-tfenv-server-uid", "0")
            expect(warning).to_have_attribute("data-tfenv-kernel-uid", str(KERNEL_UID))
            expect(warning).to_contain_text(
                f"Files made in JupyterLab (New Folder, uploads, new notebooks) belong to uid 0; "
                f"this kernel runs as uid {KERNEL_UID} and cannot write into them "
                "(PermissionError)."
            )
            expect(warning).to_contain_text(f"Run JupyterLab as uid {KERNEL_UID}")
            print(f"\n[ui] panel: {warning.inner_text()!r}")
            page.screenshot(path=str(screenshot_dir() / "files-uid-warning.png"))
        finally:
            context.close()
            server.shutdown_kernels()
    finally:
        left = server.stop(images)
    line = next((line for line in log.splitlines() if WARNING in line), None)
    print(f"\n[ui] {line}")
    assert line is not None, log[-3000:]
    assert "PermissionError" in line and "New Folder" in line
    assert files == {
        "server_uid": 0,
        "kernel_uid": KERNEL_UID,
        "message": line.split("tfenv: ", 1)[1],
    }
    assert not left
