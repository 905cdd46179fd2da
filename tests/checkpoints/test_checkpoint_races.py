"""Browsing and deleting checkpoints never leave the checkpoint folder (issue 17, item 8).

Kernel code writes the checkpoint folder, so it can swap any folder in it for a symlink
at any moment. The swap is injected at the step each implementation is weakest at: right
after a check by path (``realpath``, a listing by path), or right after the folder was
opened. Reading and removing by descriptor all the way down (helper._inventory,
_delete, _remove_tree) must neither read nor remove anything outside.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_tfenv.checkpoints.classification import classify
from jupyter_tfenv.checkpoints.helper import _delete, _inventory


def swap_for_symlink(path: Path, target: Path) -> None:
    """What the kernel would do: its folder moves aside, a symlink takes its place."""
    os.rename(path, str(path) + ".moved")
    os.symlink(target, path)


def after(
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    func: str,
    when: Callable[..., bool],
    then: Callable[[], None],
    fired: list[bool],
) -> None:
    """Wrap ``module.<func>``: the first call that matches ``when`` runs ``then`` (once,
    shared by every hook that gets the same ``fired`` list) right after it returns."""
    real = getattr(module, func)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = real(*args, **kwargs)
        if not fired and when(*args, **kwargs):
            fired.append(True)
            then()
        return result

    monkeypatch.setattr(module, func, wrapper)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint folder with ``run/ckpt-3_temp/`` and ``run/checkpoint``, and, outside
    it, a folder of the same shape that must stay untouched and unread."""
    root = tmp_path / "ckpt" / "alice" / "py"
    (root / "run" / "ckpt-3_temp").mkdir(parents=True)
    (root / "run" / "ckpt-3_temp" / "part-0").write_bytes(b"x" * 10)
    (root / "run" / "checkpoint").write_text('model_checkpoint_path: "ckpt-3"\n')
    outside = tmp_path / "home" / "bob"
    (outside / "ckpt-3_temp").mkdir(parents=True)
    (outside / "ckpt-3_temp" / "thesis.tex").write_text("years of work\n")
    (outside / "checkpoint").write_text('model_checkpoint_path: "SECRET of bob"\n')
    return root, outside


def test_a_parent_swapped_during_a_delete_removes_nothing_outside(layout, monkeypatch):
    root, outside = layout
    run = root / "run"
    fired: list[bool] = []

    def swap() -> None:
        swap_for_symlink(run, outside)

    # By path: right after the folder was checked with realpath. By descriptor: right
    # after the folder to remove was opened.
    after(
        monkeypatch,
        os.path,
        "realpath",
        lambda p, *a, **k: str(p).endswith("run/ckpt-3_temp"),
        swap,
        fired,
    )
    after(
        monkeypatch,
        os,
        "open",
        lambda p, *a, **k: p == "ckpt-3_temp" and k.get("dir_fd") is not None,
        swap,
        fired,
    )
    result = _delete(str(root), ["run/ckpt-3_temp"])
    monkeypatch.undo()
    assert fired, "the swap was not made"
    assert (outside / "ckpt-3_temp" / "thesis.tex").read_text() == "years of work\n"
    # What was listed (in the folder that moved aside) is what went.
    assert result == {"removed": ["run/ckpt-3_temp"], "failed": []}
    assert os.listdir(str(run) + ".moved") == ["checkpoint"]


def test_a_file_delete_through_a_swapped_parent_is_refused(layout, monkeypatch):
    """A parent that is a symlink when the removal starts is never followed."""
    root, outside = layout
    swap_for_symlink(root / "run", outside)
    result = _delete(str(root), ["run/checkpoint", "run/ckpt-3_temp"])
    assert result["removed"] == []
    assert sorted(p for p, _ in result["failed"]) == ["run/checkpoint", "run/ckpt-3_temp"]
    assert (outside / "checkpoint").exists() and (outside / "ckpt-3_temp" / "thesis.tex").exists()


def test_a_folder_swapped_during_the_walk_is_not_read(layout, monkeypatch):
    root, outside = layout
    run = root / "run"
    fired: list[bool] = []

    def swap() -> None:
        swap_for_symlink(run, outside)

    # By path: right after the folder was listed. By descriptor: right after it was opened.
    after(monkeypatch, os, "scandir", lambda p=".", *a, **k: str(p).endswith("/run"), swap, fired)
    after(
        monkeypatch,
        os,
        "open",
        lambda p, *a, **k: p == "run" and k.get("dir_fd") is not None,
        swap,
        fired,
    )
    inv = _inventory(str(root))
    monkeypatch.undo()
    assert fired, "the swap was not made"
    assert inv["state"] == {"run/checkpoint": 'model_checkpoint_path: "ckpt-3"\n'}
    assert not any("SECRET" in text for text in inv["state"].values())
    names = {item["name"] for item in classify(inv)}
    assert names == {"run/checkpoint"}


def test_the_walk_and_the_delete_refuse_a_root_reached_through_a_symlink(tmp_path, layout):
    root, _ = layout
    link = tmp_path / "link"
    link.symlink_to(root.parent)
    assert _inventory(str(link / "py"))["exists"] is False
    with pytest.raises(OSError):
        _delete(str(link / "py"), ["run/checkpoint"])
    assert (root / "run" / "checkpoint").exists()
