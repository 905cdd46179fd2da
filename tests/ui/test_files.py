"""Browser test of files made in JupyterLab and written by a kernel (issue 19, item 1).

A new user made a folder with the file browser's New Folder and could not write into it
from the kernel (PermissionError): JupyterLab ran as root, kernels as another uid. The
server here runs as ``scripts/demo.sh`` runs it: as the kernels' user, or, where that user
cannot run this Python (an interpreter under /root), as root with the notebook folder
shared with the kernels' group (setgid, umask 002). A server of another uid than its
kernels, without such a folder, warns at start.
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


def test_a_server_of_another_user_than_its_kernels_warns_at_start(
    images: docker.DockerClient, tmp_path: Path
) -> None:
    server = start_lab(tmp_path / "lab", UI_CATALOG)
    try:
        log = server.log_path.read_text(errors="replace")
    finally:
        left = server.stop(images)
    line = next((line for line in log.splitlines() if WARNING in line), None)
    print(f"\n[ui] {line}")
    assert line is not None, log[-3000:]
    assert "PermissionError" in line and "New Folder" in line
    assert not left
