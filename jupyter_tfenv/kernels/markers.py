"""Markers in a kernel's runtime folder: who holds the kernel, whether it was kept or pooled.

A container's labels cannot change, so what changes over a kernel's life is written as small
JSON files next to its connection file: *kept* (its server stopped and left it running),
*holder* (the server that adopted it: that server's labels and the kernel id it runs under),
*pool* (started for the warm pool). ``runtime_dir_problem`` says whether a folder is one a
kernel can be adopted from. All BLOCKING (the disk): call them in a thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from typing import Any

from jupyter_tfenv.core.containers import server_labels

#: Written by a server that stops and keeps the kernel: {"kept_at": <unix time>}.
KEPT_FILE = "tfenv-kept.json"
#: Written by a server that adopted the kernel: the server labels of that server.
HOLDER_FILE = "tfenv-holder.json"
CONNECTION_FILE = "kernel.json"
#: Written into a pool kernel's runtime folder when it is started for the pool.
POOL_FILE = "tfenv-pool.json"
#: In the holder marker: the kernel id the container runs under now (a pool kernel's
#: container label names its pool id).
ASSIGNED_KEY = "kernel_id"

_MAX_MARKER = 4096


def _read_json(folder: str, name: str) -> dict[str, Any] | None:
    """A small JSON file of ``folder``, never through a symlink; None when absent/bad."""
    try:
        fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _MAX_MARKER)
    finally:
        os.close(fd)
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _write_json(folder: str, name: str, value: dict[str, Any]) -> None:
    """Replace ``folder/name`` atomically (a temporary file renamed over it)."""
    tmp = os.path.join(folder, f".{name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(value).encode())
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(folder, name))


def mark_held(runtime_dir: str, kernel_id: str) -> None:
    """This server holds the kernel of ``runtime_dir`` now (it adopted it, or took it
    from the pool), under ``kernel_id``."""
    _write_json(runtime_dir, HOLDER_FILE, {**server_labels(), ASSIGNED_KEY: kernel_id})
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(runtime_dir, KEPT_FILE))


def mark_kept(runtime_dir: str, now: float | None = None) -> None:
    """The server stops and leaves the kernel of ``runtime_dir`` running, from now on."""
    _write_json(runtime_dir, KEPT_FILE, {"kept_at": time.time() if now is None else now})
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(runtime_dir, HOLDER_FILE))


def kept_since(runtime_dir: str) -> float | None:
    """When the kernel's last server stopped and kept it (None: it was not kept, e.g. its
    server was killed)."""
    marker = _read_json(runtime_dir, KEPT_FILE)
    value = marker.get("kept_at") if marker else None
    return float(value) if isinstance(value, int | float) else None


def mark_pool(runtime_dir: str) -> None:
    """The kernel of ``runtime_dir`` was started for the warm pool (no notebook's yet)."""
    _write_json(runtime_dir, POOL_FILE, {"pool": True})


def folder_assignment(runtime_dir: str) -> tuple[str | None, bool]:
    """(the kernel id a holder marker names, whether it was started for the pool)."""
    holder = _read_json(runtime_dir, HOLDER_FILE) or {}
    assigned = holder.get(ASSIGNED_KEY)
    pool = _read_json(runtime_dir, POOL_FILE) is not None
    return (assigned if isinstance(assigned, str) and assigned else None), pool


def runtime_dir_problem(runtime_dir: str, runtime_root: str, uid: int) -> str | None:
    """Why ``runtime_dir`` is not an adoptable kernel folder of ``uid`` (None: it is).

    It must be a real folder directly below ``runtime_root``, owned by ``uid``, no symlink
    on the way, and hold a regular connection file.
    """
    root = os.path.realpath(runtime_root)
    if not runtime_dir or os.path.dirname(os.path.abspath(runtime_dir)) != root:
        return f"its runtime folder {runtime_dir!r} is not in {root}"
    try:
        info = os.lstat(runtime_dir)
        conn = os.lstat(os.path.join(runtime_dir, CONNECTION_FILE))
    except OSError as err:
        return f"its runtime folder {runtime_dir} cannot be read: {err.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{runtime_dir} is not a folder"
    if info.st_uid != uid:
        return f"{runtime_dir} belongs to uid {info.st_uid}, not {uid}"
    if not stat.S_ISREG(conn.st_mode):
        return f"{runtime_dir}/{CONNECTION_FILE} is not a regular file"
    return None
