"""Is what a kernel container mounted the folder that was checked? (bind mounts)

A bind mount's source is a path string, and Docker resolves it (following symlinks) when
the container starts. Between the check of a folder (the broker's notebook folder, the
checkpoint and log folders) and that start, a user who can write the folder's parent can
swap it for a symlink, and the container would mount wherever it leads.

So every checked folder's identity (``st_dev``, ``st_ino``) is recorded when it is
checked, from a descriptor opened without following symlinks (:func:`stat_nofollow`,
:func:`~jupyter_tfenv.checkpoints.prepare_bind`), and right after the container starts
:func:`verify_mounts` compares it with what is mounted at the folder's target, seen
through ``/proc/<container pid>/root<target>``. Any difference, or a mount that cannot be
seen, removes the container (force) and fails the start with
:class:`MountChangedError`, which names the folder.

What this does not close: the container runs for the moment between its start and the
check (the broker's launcher only, no user code is sent to it yet, but a kernel that
binds its sockets within those milliseconds could be reached), and runc creates a
missing working folder inside whatever is mounted. See docs/jupyterhub.md.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from docker.errors import APIError, NotFound

from .errors import TFEnvError

#: How every component of a checked folder is opened: never through a symlink.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckedFolder:
    """A host folder as it was when it was checked, and where the container mounts it."""

    host_path: str
    target: str
    dev: int
    ino: int

    @classmethod
    def of(cls, host_path: str, info: os.stat_result, target: str | None = None) -> CheckedFolder:
        return cls(host_path, target or host_path, info.st_dev, info.st_ino)


class MountChangedError(TFEnvError):
    """What a container mounted is not the folder that was checked (or cannot be seen)."""

    http_status = 403

    def __init__(self, message: str, folder: str) -> None:
        super().__init__(message)
        self.folder = folder


def stat_nofollow(path: str) -> os.stat_result:
    """``fstat`` of the folder ``path`` names, reached without following any symlink.

    Walks from ``/`` one component at a time, each opened with
    ``O_NOFOLLOW|O_DIRECTORY`` relative to its parent's descriptor, so the result is the
    folder that this exact path led to with no symlink in it (a symlink anywhere raises
    ``ELOOP``, a file ``ENOTDIR``, a missing component ``ENOENT``: the ``OSError`` of
    :func:`os.open`). ``path`` must be absolute and normalized.
    """
    if not os.path.isabs(path) or os.path.normpath(path) != path:
        raise OSError(errno.EINVAL, "not an absolute, normalized path", path)
    fd = os.open("/", DIR_FLAGS)
    try:
        for part in path.split("/")[1:]:
            if not part:
                continue
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.fstat(fd)
    finally:
        os.close(fd)


def first_symlink(path: str) -> str | None:
    """For messages: the first component of ``path`` that is a symlink now, if any.

    (``O_NOFOLLOW|O_DIRECTORY`` answers ``ENOTDIR`` for a symlink as for a file.)
    """
    current = "/"
    for part in path.split("/")[1:]:
        if not part:
            continue
        current = os.path.join(current, part)
        try:
            if os.path.islink(current):
                return current
        except OSError:
            return None
    return None


def _changed(folder: CheckedFolder, why: str) -> MountChangedError:
    return MountChangedError(
        f"{folder.host_path} changed between the check and the mount ({why}): the kernel "
        "container would not have had the folder that was checked, so it was removed and "
        f"the kernel was not started. Make sure {folder.host_path} is a real folder (not a "
        "symlink) and that nothing replaces it while a kernel starts, then start the kernel "
        "again.",
        folder.host_path,
    )


def _remove(container: Any) -> None:
    with contextlib.suppress(NotFound):
        try:
            container.remove(force=True)
        except APIError as err:
            if err.status_code != 409:  # removal already in progress
                raise


def _running_pid(container: Any) -> int:
    """The container's process id on this host, or 0 when it is no longer running."""
    try:
        container.reload()
    except NotFound:
        return 0
    state = (container.attrs or {}).get("State") or {}
    pid = int(state.get("Pid") or 0)
    return pid if state.get("Running") and pid > 0 else 0


def _process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (no /proc entry, or a zombie): its mounts are
    gone with it. A kernel that exits at once (a wrong ``python``) gets here while Docker
    still reports the container as running."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            state = handle.read().rsplit(")", 1)[-1].split()
    except OSError:
        return True
    return not state or state[0] in ("Z", "X")


def _exited(container: Any, pid: int) -> bool:
    return _process_gone(pid) or not _running_pid(container)


def _exits_now(container: Any, pid: int, wait: float = 1.0) -> bool:
    """Whether the process exits within ``wait`` seconds. A kernel that fails at once
    can be caught half-way out: its mount namespace already released, so its root no
    longer shows the mounts, though it is not yet a zombie."""
    deadline = time.monotonic() + wait
    while True:
        if _exited(container, pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _is_container_process(pid: int, container_id: str) -> bool | None:
    """Whether ``/proc/<pid>`` here is the container's process (its cgroup names the id).

    None when that cannot be read. False also where this process is in another PID
    namespace than the Docker engine: the engine's pid is then some other process here.
    """
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
            return bool(container_id) and container_id in handle.read()
    except OSError:
        return None


def verify_mounts(
    container: Any,
    checked: Iterable[CheckedFolder],
    *,
    strict: bool,
    log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
) -> None:
    """Fail unless each folder of ``checked`` is what ``container`` mounted; blocking.

    Right after the container started: ``/proc/<State.Pid>/root<target>`` must have the
    ``st_dev``/``st_ino`` recorded at check time. On any difference, or when it cannot be
    read while the container runs, the container is removed (force) and
    :class:`MountChangedError` names the folder. A container that is no longer running is
    left to the caller (it reports the exit with the container's logs as always): it has
    nothing mounted any more.

    ``strict`` is the broker's mode (it runs as root, for users who must not choose its
    mounts): a mount it cannot see is a failure. Not ``strict`` is the local server's:
    it runs as the user who owns the Docker socket, and the folders are that user's own,
    so a swap there only ever fools the user themselves. When the server cannot look
    into the container (``/proc/<pid>/root`` not readable, e.g. kernels run as another
    uid, or the server is in another PID namespace than the Docker engine) the check is
    skipped with a debug log line instead of failing every kernel start; a mount that it
    can see and that differs still fails.
    """
    folders = list(checked)
    if not folders:
        return
    logger = log or _log
    pid = _running_pid(container)
    if not pid:
        return
    own = _is_container_process(pid, str(getattr(container, "id", "") or ""))
    if own is None and _exited(container, pid):
        return  # exited already: the caller reports that, with the logs
    if not own:
        if not strict:
            logger.debug("tfenv: cannot see the processes of container %s", container.id)
            return
        _remove(container)
        raise _changed(
            folders[0],
            f"the container's process {pid} is not visible here, so its mounts cannot be "
            "checked; the broker must run in the host's PID namespace",
        )
    for folder in folders:
        try:
            info = os.stat(f"/proc/{pid}/root{folder.target}")
        except OSError as err:
            if _exits_now(container, pid):
                return
            if not strict and err.errno in (errno.EACCES, errno.EPERM):
                logger.debug("tfenv: cannot see the mounts of container %s: %s", container.id, err)
                return
            _remove(container)
            raise _changed(
                folder, f"its mount at {folder.target} cannot be read: {err.strerror or err}"
            ) from err
        if (info.st_dev, info.st_ino) != (folder.dev, folder.ino):
            if _exits_now(container, pid):
                return  # the caller reports the exit, with the logs
            _remove(container)
            raise _changed(folder, f"the container has another folder at {folder.target}")
