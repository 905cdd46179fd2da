"""Pure parts of the warm pool's take (no engine): where a taken kernel runs, and the
connection file a kernel pod's take hands over (lifecycle/pool.py)."""

from __future__ import annotations

import json
from pathlib import Path

from jupyter_tfenv.lifecycle.pool import PoolKernel, loopback_address


def kernel(root: str, workdir: str) -> PoolKernel:
    return PoolKernel("pool-id", "env", None, "pod-or-container", "/run/k", root, workdir)


def test_a_kernel_that_sees_the_servers_folders_moves_into_the_notebooks():
    # A container, or a kernel pod with the home claim: it runs in the server's root.
    assert kernel("/home/jovyan", "/home/jovyan").folder_for("/home/jovyan/work") == (
        "/home/jovyan/work"
    )
    assert kernel("/srv/nb", "/srv/nb/sub").folder_for("/srv/nb/other") == "/srv/nb/other"
    # Not asked yet (an older pool kernel): as before, the notebook's folder.
    assert kernel("/srv/nb", "").folder_for("/srv/nb/x") == "/srv/nb/x"


def test_a_kernel_pod_without_the_notebooks_folder_stays_where_it_runs():
    # A kernel pod without the home runs in its /tmp, as a new kernel pod would.
    assert kernel("/home/jovyan", "/tmp").folder_for("/home/jovyan/work") == "/tmp"
    # A folder whose name merely starts like the root is not inside it.
    assert kernel("/srv/nb", "/srv/nb2").folder_for("/srv/nb/x") == "/srv/nb2"


def write(folder: Path, **info: object) -> Path:
    path = folder / "kernel.json"
    path.write_text(json.dumps({"key": "k", "shell_port": 1, **info}))
    path.chmod(0o600)
    return path


def test_a_pods_connection_file_says_loopback_for_the_adopting_manager(tmp_path: Path):
    path = write(tmp_path, transport="tcp", ip="10.1.2.3")
    loopback_address(str(tmp_path))
    info = json.loads(path.read_text())
    assert info["ip"] in ("127.0.0.1", "::1"), info
    assert info["key"] == "k" and info["shell_port"] == 1  # the rest as it was
    assert path.stat().st_mode & 0o777 == 0o600


def test_local_and_ipc_connection_files_are_left_alone(tmp_path: Path):
    for info in ({"transport": "tcp", "ip": "127.0.0.1"}, {"transport": "ipc", "ip": "/r/k"}):
        path = write(tmp_path, **info)
        before = path.read_text()
        loopback_address(str(tmp_path))
        assert path.read_text() == before


def test_an_unreadable_connection_file_is_left_to_the_adoption(tmp_path: Path):
    loopback_address(str(tmp_path))  # no file: the adoption says so
    (tmp_path / "kernel.json").write_text("{not json")
    loopback_address(str(tmp_path))
    assert (tmp_path / "kernel.json").read_text() == "{not json"
