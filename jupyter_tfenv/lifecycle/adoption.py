"""Kernels that outlive their server: keeping them at server stop, adopting them at start.

A container kernel lives apart from the Jupyter server that started it. With
``c.TFEnvApp.keep_kernels_on_stop`` a stopping server leaves its kernel containers
running (it writes a *kept* marker, with the time, into each kernel's runtime folder),
and the next server of the same user finds them by their labels and **adopts** them
under their old kernel ids: the provisioner then loads the connection file that is still
in the runtime folder instead of starting a container (``TFEnvKernelProvisioner``,
``tfenv_adopt``). A notebook that reconnects finds its variables, and a cell that was
running goes on.

A container's labels cannot change, so the server that holds an adopted kernel writes a
*holder* marker (the same server labels a container gets at start) into the runtime
folder: ``jupyter tfenv gc`` and the orphan reaper then see that a live server holds it.

Everything here that touches Docker or the disk is BLOCKING: call it in a thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import time
from dataclasses import dataclass
from typing import Any, Protocol

from jupyter_tfenv.backends.docker.engine import server_alive, server_labels, tfenv_containers
from jupyter_tfenv.core.labels import (
    LABEL_BROKER,
    LABEL_ENVIRONMENT,
    LABEL_KERNEL_ID,
    LABEL_POOL,
    LABEL_RUNTIME_DIR,
)

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


def held_by_live_server(labels: dict[str, str]) -> bool:
    """Whether a live server holds this container: the one that started it, or one that
    adopted it (its holder marker in the runtime folder)."""
    if server_alive(labels):
        return True
    rundir = labels.get(LABEL_RUNTIME_DIR, "")
    if not rundir:
        return False
    holder = _read_json(rundir, HOLDER_FILE)
    return holder is not None and server_alive({k: str(v) for k, v in holder.items()})


def mark_pool(runtime_dir: str) -> None:
    """The kernel of ``runtime_dir`` was started for the warm pool (no notebook's yet)."""
    _write_json(runtime_dir, POOL_FILE, {"pool": True})


def folder_assignment(runtime_dir: str) -> tuple[str | None, bool]:
    """(the kernel id a holder marker names, whether it was started for the pool)."""
    holder = _read_json(runtime_dir, HOLDER_FILE) or {}
    assigned = holder.get(ASSIGNED_KEY)
    pool = _read_json(runtime_dir, POOL_FILE) is not None
    return (assigned if isinstance(assigned, str) and assigned else None), pool


def assigned_kernel_id(labels: dict[str, str]) -> str | None:
    """The kernel id a container runs under: its label's, or for a pool kernel the one
    it was taken for (None: a pool kernel nobody took)."""
    rundir = labels.get(LABEL_RUNTIME_DIR, "")
    assigned, pool = folder_assignment(rundir) if rundir else (None, False)
    if assigned:
        return assigned
    if pool or LABEL_POOL in labels:
        return None
    return labels.get(LABEL_KERNEL_ID, "")


@dataclass(frozen=True)
class Candidate:
    """A running kernel container of this user that no live server holds."""

    kernel_id: str
    environment: str
    #: The kernel id of the container's label (a pool kernel's: its pool id).
    container_kernel_id: str
    container_id: str
    name: str
    runtime_dir: str
    workdir: str
    kept_at: float | None

    def age(self, now: float | None = None) -> float | None:
        """Seconds since its server kept it (None: not kept)."""
        if self.kept_at is None:
            return None
        return (time.time() if now is None else now) - self.kept_at


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


def find_candidates(client: Any, owner: str, runtime_root: str, uid: int) -> list[Candidate]:
    """This owner's running kernel containers (local mode) that no live server holds and
    whose runtime folder and connection file are still there."""
    found = []
    for container in tfenv_containers(client, owner):
        labels = container.labels or {}
        if LABEL_BROKER in labels or container.status != "running":
            continue
        if held_by_live_server(labels):
            continue
        rundir = labels.get(LABEL_RUNTIME_DIR, "")
        if runtime_dir_problem(rundir, runtime_root, uid) is not None:
            continue
        kernel_id = assigned_kernel_id(labels)
        if not kernel_id:
            continue  # an untaken pool kernel: the reaper removes it
        config = (container.attrs or {}).get("Config") or {}
        found.append(
            Candidate(
                kernel_id=kernel_id,
                environment=labels.get(LABEL_ENVIRONMENT, ""),
                container_kernel_id=labels.get(LABEL_KERNEL_ID, ""),
                container_id=container.id,
                name=container.name,
                runtime_dir=rundir,
                workdir=str(config.get("WorkingDir") or ""),
                kept_at=kept_since(rundir),
            )
        )
    return found


class PoolLike(Protocol):
    """What the provisioner asks of the warm pool (jupyter_tfenv.lifecycle.pool.KernelPool)."""

    async def take(self, env_id: str, cwd: str) -> dict[str, Any] | None: ...


_POOL: PoolLike | None = None


def current_pool() -> PoolLike | None:
    """The running server's warm pool (None: no pool, e.g. outside a server)."""
    return _POOL


def set_pool(pool: PoolLike | None) -> None:
    global _POOL  # noqa: PLW0603 - one pool per server process
    _POOL = pool
