"""Broker mode's pure parts: the check of the socket path the broker names (before the
server connects to it) and the broker's object read as the server's TensorBoard."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jupyter_tfenv.tensorboard.brokered import from_broker, socket_problem

UID = 1000


@pytest.fixture
def tb_root(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the per-uid folder is root's (the broker's): made as root here")
    root = tmp_path / "tb"
    (root / str(UID)).mkdir(parents=True, mode=0o711)
    os.chmod(root / str(UID), 0o711)
    return root


def lent(root: Path, name: str = "tb-0123456789ab", uid: int = UID, mode: int = 0o700) -> str:
    folder = root / str(UID) / name
    folder.mkdir()
    os.chown(folder, uid, uid)
    os.chmod(folder, mode)
    return str(folder / "tb.sock")


def test_the_users_own_folder_is_accepted(tb_root: Path) -> None:
    assert socket_problem(lent(tb_root), UID) == ""


@pytest.mark.parametrize(
    "path",
    [
        "relative/tb/1000/tb-0123456789ab/tb.sock",
        "/run/tfenv-broker/tb/1000/tb-0123456789ab/other.sock",
        "/run/tfenv-broker/tb/1001/tb-0123456789ab/tb.sock",  # another uid's folder
        "/run/tfenv-broker/1000/tb-0123456789ab/tb.sock",  # a kernel's folder
        "/run/tfenv-broker/tb/1000/../1001/tb.sock",
        "/run/tfenv-broker/tb/1000/kernel-1/tb.sock",
    ],
)
def test_other_shapes_are_refused(path: str) -> None:
    assert "not <runtime_root>/tb/<your uid>" in socket_problem(path, UID)


def test_a_folder_of_someone_else_or_open_to_others_is_refused(tb_root: Path) -> None:
    assert "not your own private folder" in socket_problem(lent(tb_root, uid=UID + 1), UID)
    other = lent(tb_root, "tb-0123456789ac", mode=0o755)
    assert "not your own private folder" in socket_problem(other, UID)


def test_a_per_uid_folder_writable_by_others_is_refused(tb_root: Path) -> None:
    path = lent(tb_root)
    os.chmod(tb_root / str(UID), 0o777)
    assert "is not the broker's" in socket_problem(path, UID)


def test_a_symlink_is_refused(tb_root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, tb_root / str(UID) / "tb-0123456789ab")
    problem = socket_problem(str(tb_root / str(UID) / "tb-0123456789ab" / "tb.sock"), UID)
    assert "symlink" in problem


def test_a_missing_folder_says_so() -> None:
    problem = socket_problem("/nonexistent-tfenv/tb/1000/tb-0123456789ab/tb.sock", UID)
    assert "cannot be read" in problem


def test_the_brokers_object_as_the_servers() -> None:
    board = from_broker(
        {
            "name": "env-tf220",
            "view": "environment",
            "environment": "tf220",
            "image": "img",
            "state": "running",
            "message": None,
            "socket": "/run/b/tb/1000/tb-0123456789ab/tb.sock",
            "started_at": "2026-01-02T03:04:05+00:00",
            "last_activity": "2026-01-02T03:04:06+00:00",
        }
    )
    assert board.socket == "/run/b/tb/1000/tb-0123456789ab/tb.sock"
    assert board.last_activity - board.started_at == 1.0
    data = board.to_dict("/user/alice/")
    assert data["url"] == "/user/alice/tfenv/tensorboard/env-tf220/"
    assert data["state"] == "running" and data["started_at"] == "2026-01-02T03:04:05+00:00"
