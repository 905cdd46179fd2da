"""Is what a kernel container mounted the folder that was checked? (bind mounts)

A bind mount's source is a path string, and Docker resolves it (following symlinks) when
the container starts. Between the check of a folder (the broker's notebook folder, the
checkpoint and log folders) and that start, a user who can write the folder's parent can
swap it for a symlink (a ``rename`` or ``renameat2(RENAME_EXCHANGE)`` in a tight loop),
and the container would mount wherever it leads: another user's folder, or a Docker
volume's ``_data`` (a mount bypasses the permissions of the folders above it).

The broker (root) closes this at the cause with **staging mounts**
(:class:`StagedMounts`): each checked folder is opened again by a descriptor walk that
follows no symlink, its identity (``st_dev``, ``st_ino``) must be the one recorded at
check time (:func:`open_checked`), and that *descriptor* is bind-mounted with
``mount(2)`` (source ``/proc/self/fd/<fd>``) onto a per-kernel folder under
:data:`STAGING_ROOT`: root-owned, 0700, a private mount (nothing propagates to other
mount namespaces). Docker is given the staging path as the bind source, which no user
can rename or replace; once the container has started (its mount namespace has its own
copy) and on every failure path the staging mounts are detached (``MNT_DETACH``) and
their folders removed. A broker that cannot call ``mount(2)`` (no ``CAP_SYS_ADMIN``, or
another mount namespace than the engine's) refuses to start kernels with bind mounts,
saying what to do: it never falls back to mounting by path.

The identity check after the start stays, as a second line: right after the container
starts :func:`verify_mounts` compares the recorded identity with what is mounted at the
folder's target, seen through ``/proc/<container pid>/root<target>``. In strict mode (the
broker) a difference, or a mount that cannot be seen, kills the container at once
(SIGKILL, no grace: user code must not run with a wrong mount) and fails the start with
:class:`MountChangedError`, which names the folder; a container that turns out to have
exited on its own is left to the caller, which reports that exit with its logs.

The local server (not strict) runs as the user who owns the Docker socket, on the user's
own folders: it still mounts by path (a swap there only fools the user themselves) and
keeps the check after the start, with a short grace for a kernel caught half-way out of
an exit.

What is not closed here: catalog binds (the admin's, checked when the catalog is read)
and the runtime folder (below root's 0711 folders, so the user cannot replace it) are
still mounted by path; the local server's mounts are by path (the user's own folders);
the check after the start needs the host's PID namespace. See docs/jupyterhub.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from docker.errors import APIError, NotFound
from docker.types import Mount

from jupyter_tfenv.errors import TFEnvError

#: How every component of a checked folder is opened: never through a symlink.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: Where the broker stages the folders it bind-mounts: root's, 0700, a private mount
#: (beside the runtime root, not in it: nothing that cleans runtime folders goes there).
STAGING_ROOT = "/run/tfenv-broker-mounts"

# mount(2) flags (linux/mount.h)
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

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


def open_nofollow(path: str) -> int:
    """A descriptor of the folder ``path`` names, reached without following any symlink.

    Walks from ``/`` one component at a time, each opened with
    ``O_NOFOLLOW|O_DIRECTORY`` relative to its parent's descriptor, so the result is the
    folder that this exact path led to with no symlink in it (a symlink anywhere raises
    ``ELOOP``, a file ``ENOTDIR``, a missing component ``ENOENT``: the ``OSError`` of
    :func:`os.open`). ``path`` must be absolute and normalized. The caller closes it.
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
    except BaseException:
        os.close(fd)
        raise
    return fd


def stat_nofollow(path: str) -> os.stat_result:
    """``fstat`` of :func:`open_nofollow`'s descriptor (see there)."""
    fd = open_nofollow(path)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def open_checked(folder: CheckedFolder) -> int:
    """A descriptor of ``folder`` as it was checked, or :class:`MountChangedError`.

    Reached by :func:`open_nofollow`; its ``st_dev``/``st_ino`` must be the recorded ones
    (a folder swapped since the check, even for another real folder, is refused). Once
    it is open the descriptor *is* that folder, whatever happens to the path.
    """
    try:
        fd = open_nofollow(folder.host_path)
    except OSError as err:
        link = first_symlink(folder.host_path)
        why = f"{link} is a symlink now" if link else (err.strerror or str(err))
        raise _changed(folder, why, started=False) from err
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != (folder.dev, folder.ino) or not stat.S_ISDIR(info.st_mode):
        os.close(fd)
        raise _changed(folder, "it is another folder now", started=False)
    return fd


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


def _changed(folder: CheckedFolder, why: str, *, started: bool = True) -> MountChangedError:
    done = "it was removed" if started else "it was not created"
    return MountChangedError(
        f"{folder.host_path} changed between the check and the mount ({why}): the kernel "
        f"container would not have had the folder that was checked, so {done} and "
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
    mounts): a mount it cannot see is a failure, and a differing or unreadable mount
    kills the container at once (:func:`_kill_now`), with no grace; only a container
    whose exit code shows it had exited on its own is left to the caller. Not
    ``strict`` is the local server's:
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
            if strict:
                if _process_gone(pid) or not _kill_now(container) or err.errno == errno.ENOENT:
                    # It had exited, or was exiting (its root gone with its mount
                    # namespace: killed by another, `docker rm -f`, or on its own) before
                    # this look; killed now in any case. Nothing ran with a wrong mount:
                    # the caller reports the exit, with its own exit code.
                    return
            else:
                if _exits_now(container, pid):
                    return
                if err.errno in (errno.EACCES, errno.EPERM):
                    logger.debug(
                        "tfenv: cannot see the mounts of container %s: %s", container.id, err
                    )
                    return
            _remove(container)
            raise _changed(
                folder, f"its mount at {folder.target} cannot be read: {err.strerror or err}"
            ) from err
        if (info.st_dev, info.st_ino) != (folder.dev, folder.ino):
            if strict:
                if not _kill_now(container):
                    return  # the caller reports the exit, with the logs
            elif _exits_now(container, pid):
                return  # the caller reports the exit, with the logs
            _remove(container)
            raise _changed(folder, f"the container has another folder at {folder.target}")


def _kill_now(container: Any) -> bool:
    """SIGKILL ``container`` at once (strict mode: no user code may run on with a wrong
    mount); whether it was still running, i.e. the kill is what stopped it.

    False when Docker says it was not running, or when its exit code is not SIGKILL's
    137: a kernel caught half-way out of an exit (its mount namespace already released,
    so its root shows no mounts) keeps its own exit code, and the caller reports that
    exit with its logs.
    """
    try:
        container.kill(signal="SIGKILL")
    except NotFound:
        return False
    except APIError as err:
        if err.status_code == 409:  # "is not running"
            return False
        raise
    try:
        code = (container.wait(timeout=30) or {}).get("StatusCode")
    except NotFound:
        return True
    except Exception:  # it was killed: removing it is what is left to do
        _log.debug("tfenv: no exit code of the killed container %s", container.id)
        return True
    return code == 137


# -- staging mounts (the broker: root, CAP_SYS_ADMIN, the engine's mount namespace) ------


class StagingError(TFEnvError):
    """The broker cannot bind-mount a checked folder by descriptor (see StagedMounts)."""

    http_status = 500


_LIBC: list[Any] = []
_STAGING_LOCK = threading.Lock()


def _libc() -> Any:
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    if _libc().mount(src, target.encode(), None, ctypes.c_ulong(flags), None) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), target)


def _umount(target: str) -> None:
    if _libc().umount2(target.encode(), MNT_DETACH) != 0:
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOENT):  # not (or no longer) a mount point
            raise OSError(code, os.strerror(code), target)


def _mount_fields(path: str) -> list[str] | None:
    """The optional fields (``shared:N``…) of the top mount at ``path``; None if none."""
    found = None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) > 6 and fields[4] == path:
                    found = fields[6 : fields.index("-")]
    except (OSError, ValueError):
        return None
    return found


def _root_folder(path: str, mode: int | None) -> None:
    """``path``: a real folder of root that nobody else can write (created ``mode``, or
    0755; given ``mode`` when that is not None)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode or 0o755)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise StagingError(
            f"The broker's staging folder {path} must be a folder of root that nobody else "
            "can write; remove it (the broker creates it again)."
        )
    if mode is not None and stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


#: Staging folders older than this are left over from a broker that died mid-start.
STAGING_STALE_SECONDS = 600.0
_SWEPT: set[str] = set()


def _private_root(root: str) -> None:
    """Make ``root`` root's 0700 folder and a private mount: mounts below it propagate
    to no other mount namespace. Once per process, staging mounts that a broker which
    died mid-start left behind are detached (never removed recursively)."""
    with _STAGING_LOCK:
        _root_folder(os.path.dirname(root), None)
        _root_folder(root, 0o700)
        fields = _mount_fields(root)
        if fields is None:
            _mount(root, root, MS_BIND)
            fields = ["shared"]
        if any(f.startswith(("shared", "master")) for f in fields):
            _mount(None, root, MS_PRIVATE)
        if root not in _SWEPT:
            _SWEPT.add(root)
            _detach_stale(root)


def _detach_stale(root: str) -> None:
    now = time.time()
    for name in os.listdir(root):
        folder = os.path.join(root, name)
        try:
            if now - os.lstat(folder).st_mtime < STAGING_STALE_SECONDS:
                continue
            for child in os.listdir(folder):
                _umount(os.path.join(folder, child))
                os.rmdir(os.path.join(folder, child))  # empty once detached, else EBUSY
            os.rmdir(folder)
        except OSError as err:
            _log.warning("tfenv: could not clear the stale staging folder %s: %s", folder, err)


def staging_problem(err: OSError, path: str) -> StagingError:
    return StagingError(
        f"The broker could not bind-mount {path} for the kernel by its descriptor "
        f"(mount(2): {err.strerror or err}). The broker must run as root with "
        "CAP_SYS_ADMIN in the Docker engine's mount namespace (on the host, not in a "
        "container; no PrivateMounts=, ProtectSystem= or similar sandboxing in its systemd "
        "unit), so that the folder it checked is the one the kernel gets. Fix the broker's "
        "service, then start the kernel again."
    )


class StagedMounts:
    """The checked folders of one kernel start, bind-mounted by descriptor for Docker.

    :meth:`stage` opens a :class:`CheckedFolder` again (:func:`open_checked`: no symlink,
    the same ``st_dev``/``st_ino``) and bind-mounts that descriptor onto
    ``<root>/<random>/<n>``, a private mount; Docker gets that path as the bind source.
    :meth:`release` detaches and removes them all: call it once the container has
    started (its mount namespace keeps its own copy) and on every failure path. Blocking.
    """

    def __init__(self, root: str | None = None) -> None:
        self.root = root or STAGING_ROOT
        self.folder: str | None = None
        self.paths: list[str] = []

    def stage(self, folder: CheckedFolder) -> str:
        """The staging path whose mount is ``folder`` as it was checked."""
        if self.folder is None:
            try:
                _private_root(self.root)
                path = os.path.join(self.root, secrets.token_hex(8))
                os.mkdir(path, 0o700)
            except OSError as err:
                raise staging_problem(err, folder.host_path) from err
            self.folder = path
        fd = open_checked(folder)
        try:
            target = os.path.join(self.folder, str(len(self.paths)))
            os.mkdir(target, 0o700)
            self.paths.append(target)
            _mount(f"/proc/self/fd/{fd}", target, MS_BIND | MS_REC)
            _mount(None, target, MS_PRIVATE | MS_REC)
        except OSError as err:
            raise staging_problem(err, folder.host_path) from err
        finally:
            os.close(fd)
        return target

    def release(self) -> None:
        """Detach every staging mount and remove the folders (idempotent)."""
        problems = []
        for target in reversed(self.paths):
            try:
                _umount(target)
                os.rmdir(target)
            except FileNotFoundError:
                pass
            except OSError as err:
                problems.append(f"{target}: {err.strerror or err}")
        self.paths.clear()
        if problems:
            _log.error("tfenv: staging mounts left behind: %s", "; ".join(problems))
        elif self.folder is not None:
            with contextlib.suppress(FileNotFoundError):
                os.rmdir(self.folder)
            self.folder = None


def from_staging(mounts: Iterable[Any], sources: dict[str, str]) -> list[Any]:
    """``mounts`` (docker ``Mount``\\ s) with the bind source of each target in ``sources``
    (target → staging path) replaced by its staging path."""
    out = []
    for mount in mounts:
        target = mount.get("Target")
        if mount.get("Type") == "bind" and target in sources:
            read_only = bool(mount.get("ReadOnly"))
            out.append(Mount(target, sources[target], type="bind", read_only=read_only))
        else:
            out.append(mount)
    return out
