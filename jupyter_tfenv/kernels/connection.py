"""Connection folders: where a kernel's connection file and IPC sockets live.

A local server keeps them under its own runtime root (:func:`prepare_runtime_root`); the
broker makes ``{runtime_root}/{uid}/{kernel}`` under root-owned 0711 parents and lends the
last one to the user (:func:`prepare_runtime_dir`, checked again before a start by
:func:`verify_runtime_dir`). Either way a start is ready when the kernel's sockets are
bound (:func:`socket_paths`, :func:`sockets_bound`). Pure filesystem calls, no Docker, no
HTTP: the provisioner, :class:`~jupyter_tfenv.backends.docker.backend.DockerBackend` and
the broker's policy all use them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterable, Mapping
from typing import Any

from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.paths import SOCKET_PATH_MAX
from jupyter_tfenv.errors import BackendError, KernelStartError

#: Kernel ids: what jupyter_client makes (uuid4), no path characters.
KERNEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")
CONNECTION_FILE = "kernel.json"
#: A connection file is a few hundred bytes; anything big is not one.
CONNECTION_FILE_LIMIT = 64 * 1024
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


def check_kernel_id(kernel_id: Any) -> str:
    if not isinstance(kernel_id, str) or not KERNEL_ID_RE.match(kernel_id):
        raise BackendError(
            f"'kernel_id' must be a kernel id (8 to 64 letters, digits, '-' or '_'), "
            f"not {str(kernel_id)[:80]!r}.",
        )
    return kernel_id


# -- a local server's runtime root ----------------------------------------------------------

#: What a kernel adds below its runtime root: its folder and the longest socket name.
_SOCKET_TAIL = len("/0123456789ab/k-65535")


def _private_folder(path: str, uid: int) -> bool:
    """Whether ``path`` is a real folder (not a symlink) of ``uid`` that only it may use."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    private = stat.S_IMODE(info.st_mode) & 0o077 == 0
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and private


def default_runtime_root(environ: Mapping[str, str] | None = None) -> str:
    """``$XDG_RUNTIME_DIR/tfenv`` when ``$XDG_RUNTIME_DIR`` is a private folder of this
    process's uid and short enough for socket paths, else ``/tmp/tfenv-<uid>`` (checked,
    and refused when another user made it, by :func:`prepare_runtime_root`)."""
    xdg = (os.environ if environ is None else environ).get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg):
        xdg = os.path.normpath(xdg)
        candidate = os.path.join(xdg, "tfenv")
        short = len(candidate.encode()) + _SOCKET_TAIL <= SOCKET_PATH_MAX
        if short and _private_folder(xdg, os.getuid()):
            return candidate
    return f"/tmp/tfenv-{os.getuid()}"  # noqa: S108 - checked by prepare_runtime_root


def _runtime_root_problem(root: str, info: os.stat_result, uid: int) -> str:
    """What is wrong with the runtime root ``root`` (its ``lstat``), or ''."""
    if stat.S_ISLNK(info.st_mode):
        return f"is a symlink (to {os.readlink(root)})"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if info.st_uid != uid:
        return f"belongs to uid {info.st_uid}, not to this server's uid {uid}"
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        return f"is writable by other users (mode {mode:04o})"
    parent = os.path.dirname(root)
    above = os.stat(parent)
    if above.st_mode & 0o002 and not above.st_mode & stat.S_ISVTX:
        return (
            f"is in {parent}, which every user may write to and which has no sticky bit, so "
            "another user can replace it"
        )
    return ""


def prepare_runtime_root(path: str) -> str:
    """The kernels' runtime root ``path``, made (atomically, 0711) or checked; blocking.

    Kernels' connection files and sockets live in it, so it must be this server's own:
    a real folder (``lstat``: no symlink), owned by the server's uid, not writable by
    group or others, in a parent where no other user can swap it (a sticky or private
    parent). Anything else is refused with what to do: in a shared /tmp another user may
    have made ``/tmp/tfenv-<uid>`` first, to read or replace what kernels put there.
    Mode 0711: not listable by others (each kernel's own folder in it is 0700, of the
    kernel's uid, which a root server may set to another user's: the uid trait).
    """
    root = os.path.abspath(path)
    uid = os.getuid()
    parent = os.path.dirname(root)
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(root, 0o711)  # atomic: ours, or whatever was there is checked below
    info = os.lstat(root)
    problem = _runtime_root_problem(root, info, uid)
    if not problem:
        # The mode is fixed through a descriptor of the folder just checked, never by path.
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as err:
            problem = f"cannot be opened ({err.strerror})"
        else:
            try:
                now = os.fstat(fd)
                if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                    problem = "was replaced while it was checked"
                elif stat.S_IMODE(now.st_mode) != 0o711:
                    os.fchmod(fd, 0o711)
            finally:
                os.close(fd)
    if problem:
        raise KernelStartError(
            f"The kernels' runtime folder {root} {problem}. It holds the kernels' connection "
            "files and sockets, so tfenv uses only a folder of the server's own user that "
            "nobody else can write to. Remove it if you do not know who made it (another "
            f"user may have made it first: `ls -ld {root}`), or set "
            "c.DockerKernelProvisioner.runtime_root to a short path of a folder of your own "
            "(e.g. under $XDG_RUNTIME_DIR).",
            status_code=500,
        )
    return root


# -- the broker's runtime folders -------------------------------------------------------------


#: What the longest socket name adds to the kernel's runtime folder ("/k-65535").
SOCKET_TAIL = len("/k-65535")
#: Kernel ids up to this length name their runtime folder themselves (jupyter_client's
#: uuid4 ids have 36 characters); longer ones are hashed, to keep socket paths short.
RUNTIME_NAME_MAX = 36


def runtime_name(kernel_id: str) -> str:
    """The kernel's folder name below ``{runtime_root}/{uid}``: one folder per kernel id.

    The id itself when it has at most :data:`RUNTIME_NAME_MAX` characters (ids have no
    path characters); else ``_`` and 32 hex digits of its SHA-256, which no id can be
    (ids start with a letter or digit). Short either way: Unix socket paths are limited
    to 107 bytes. Never a truncation: two ids with the same prefix get two folders.
    """
    kernel_id = check_kernel_id(kernel_id)
    if len(kernel_id) <= RUNTIME_NAME_MAX:
        return kernel_id
    return "_" + hashlib.sha256(kernel_id.encode()).hexdigest()[:32]


def runtime_dir_for(runtime_root: str, uid: int, kernel_id: str) -> str:
    return os.path.join(runtime_root, str(uid), runtime_name(kernel_id))


def _root_folder(path: str, what: str) -> None:
    """Make ``path`` a real, root-owned 0711 folder (create it, fix its mode)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o711)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise BackendError(
            f"The broker's {what} {path} is not a folder of the broker's own user "
            f"(uid {os.getuid()}); remove it or set c.TFEnvBroker.runtime_root elsewhere.",
            status=500,
            reason="runtime folder",
        )
    if stat.S_IMODE(info.st_mode) != 0o711:
        os.chmod(path, 0o711)  # noqa: S103 - traversable, not listable: see the docstring


def prepare_runtime_dir(
    runtime_root: str,
    caller: Caller,
    kernel_id: str,
    *,
    restart: bool = False,
    max_dirs: int | None = None,
) -> str:
    """Create the kernel's runtime folder, owned by the caller, 0700; blocking.

    ``{runtime_root}`` and ``{runtime_root}/{uid}`` belong to the broker (0711), so the
    user cannot rename or replace the kernel's folder. ``restart`` keeps an existing
    folder (and its connection file) but removes its socket files, which would look like
    a ready kernel; otherwise a leftover folder is replaced by a fresh one.

    ``max_dirs``: how many runtime folders the caller may have at once (``None``: no
    limit); a new folder beyond it is refused with 429 (folders of kernels that never
    started are removed before, by :func:`remove_stale_runtime_dirs`).
    """
    root = os.path.abspath(runtime_root)
    longest = len(runtime_dir_for(root, caller.uid, kernel_id).encode()) + SOCKET_TAIL
    if longest > SOCKET_PATH_MAX:
        raise BackendError(
            f"The kernel's socket paths below c.TFEnvBroker.runtime_root {root} would have "
            f"{longest} bytes, more than Unix sockets allow ({SOCKET_PATH_MAX}). Ask an admin "
            "to set a shorter runtime_root (the default is /run/tfenv-broker).",
            status=500,
            reason="runtime folder",
        )
    os.makedirs(os.path.dirname(root), mode=0o755, exist_ok=True)
    _root_folder(root, "runtime_root")
    user_root = os.path.join(root, str(caller.uid))
    _root_folder(user_root, "per-user runtime folder")
    rundir = os.path.join(user_root, runtime_name(kernel_id))
    try:
        info: os.stat_result | None = os.lstat(rundir)
    except FileNotFoundError:
        info = None
    if info is None and max_dirs is not None:
        have = len(os.listdir(user_root))
        if have >= max_dirs:
            raise BackendError(
                f"{caller.name} already has {have} kernel runtime folders; the limit per user "
                f"is {max_dirs} (c.TFEnvBroker.max_runtime_dirs_per_user). Shut a kernel down "
                "(folders of kernels that never started are removed after "
                "c.TFEnvBroker.runtime_dir_stale_seconds), then start this one again.",
                status=429,
                reason="runtime folder quota",
            )
    if info is not None and restart and _is_users_runtime(info, caller):
        with os.scandir(rundir) as entries:
            for entry in entries:
                if stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode):
                    os.unlink(entry.path)
        return rundir
    if info is not None:
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(rundir)
        else:
            os.unlink(rundir)
    os.mkdir(rundir, 0o700)
    os.chown(rundir, caller.uid, caller.gid)
    os.chmod(rundir, 0o700)
    return rundir


def stale_runtime_dirs(
    runtime_root: str, caller: Caller, *, older_than: float, keep: Iterable[str] = ()
) -> list[str]:
    """The caller's runtime folders last changed more than ``older_than`` seconds ago
    (their own mtime: writing the connection file or binding a socket renews it), except
    those named in ``keep`` (folder names, :func:`runtime_name`). Whether a kernel still
    uses one is for the caller of this function to say (its container's label): see
    :func:`remove_stale_runtime_dirs`."""
    user_root = os.path.join(os.path.abspath(runtime_root), str(caller.uid))
    cutoff = time.time() - older_than
    kept = set(keep)
    stale = []
    try:
        entries = list(os.scandir(user_root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if entry.name not in kept and info.st_mtime < cutoff:
            stale.append(entry.path)
    return sorted(stale)


def runtime_uids(runtime_root: str) -> list[int]:
    """The uids with a per-uid folder under ``runtime_root``."""
    try:
        names = os.listdir(os.path.abspath(runtime_root))
    except OSError:
        return []
    return sorted(int(name) for name in names if name.isdigit())


def remove_stale_runtime_dirs(
    runtime_root: str, caller: Caller, paths: Iterable[str], in_use: Iterable[str]
) -> list[str]:
    """Remove those of ``paths`` (from :func:`stale_runtime_dirs`) that no container
    uses (``in_use``: the runtime folders named by the caller's containers); the removed.
    Only entries directly below the caller's own per-uid folder are touched."""
    user_root = os.path.join(os.path.abspath(runtime_root), str(caller.uid))
    used = set(in_use)
    removed = []
    for path in paths:
        if path in used or os.path.dirname(path) != user_root:
            continue
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        removed.append(path)
    return removed


def _is_users_runtime(info: os.stat_result, caller: Caller) -> bool:
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == caller.uid
        # The permission bits: jupyter_client's write_connection_file adds the sticky bit.
        and stat.S_IMODE(info.st_mode) & 0o777 == 0o700
    )


def verify_runtime_dir(runtime_root: str, caller: Caller, kernel_id: str) -> str:
    """The kernel's runtime folder as the broker made it, checked again (lstat) before it
    is mounted: a real folder of the caller, 0700, with a regular ``kernel.json`` of theirs.
    """
    rundir = runtime_dir_for(os.path.abspath(runtime_root), caller.uid, kernel_id)
    try:
        info = os.lstat(rundir)
    except FileNotFoundError:
        raise BackendError(
            f"Kernel {kernel_id} has no runtime folder: POST /api/kernels/{kernel_id}/runtime "
            "first and write the connection file (kernel.json) into the folder it names.",
            reason="no runtime folder",
        ) from None
    if not _is_users_runtime(info, caller):
        raise BackendError(
            f"The runtime folder {rundir} is not a 0700 folder of uid {caller.uid}; ask for a "
            f"new one (POST /api/kernels/{kernel_id}/runtime).",
            status=403,
            reason="runtime folder",
        )
    path = os.path.join(rundir, CONNECTION_FILE)
    try:
        conn = os.lstat(path)
    except FileNotFoundError:
        raise BackendError(
            f"No connection file in {rundir}: write {CONNECTION_FILE} (0600) there before "
            "starting the kernel.",
            reason="no connection file",
        ) from None
    if not stat.S_ISREG(conn.st_mode) or conn.st_uid != caller.uid:
        raise BackendError(
            f"{path} must be a regular file of uid {caller.uid} (no symlink).",
            status=403,
            reason="connection file",
        )
    return rundir


def read_connection_file(rundir: str, caller: Caller) -> dict[str, Any]:
    """The connection file's content (read without following symlinks), checked to be an
    IPC connection whose sockets lie in the kernel's runtime folder."""
    path = os.path.join(rundir, CONNECTION_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise BackendError(f"{path} is a symlink.", status=403) from err
        raise BackendError(f"Cannot read {path}: {err.strerror}.") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != caller.uid:
            raise BackendError(f"{path} must be a regular file of uid {caller.uid}.", status=403)
        raw = os.read(fd, CONNECTION_FILE_LIMIT + 1)
    finally:
        os.close(fd)
    if len(raw) > CONNECTION_FILE_LIMIT:
        raise BackendError(f"{path} is too large for a connection file.")
    try:
        info_json = json.loads(raw)
    except ValueError as err:
        raise BackendError(f"{path} is not valid JSON: {err}.") from err
    if not isinstance(info_json, dict):
        raise BackendError(f"{path} is not a connection file (a JSON object).")
    check_connection_info(info_json, rundir)
    return info_json


def check_connection_info(info: Mapping[str, Any], rundir: str) -> None:
    """Kernels of the broker talk over IPC sockets in their runtime folder, nothing else."""
    if info.get("transport") != "ipc":
        raise BackendError(
            "The connection file must use transport 'ipc' (ZeroMQ over Unix sockets in the "
            f"runtime folder), not {info.get('transport')!r}: broker kernels are on no network.",
        )
    ip = info.get("ip")
    if not isinstance(ip, str) or os.path.normpath(ip) != ip or os.path.dirname(ip) != rundir:
        raise BackendError(
            f"The connection file's 'ip' must be a socket path prefix in {rundir} "
            f"(e.g. {rundir}/k), not {str(ip)[:200]!r}.",
        )
    for channel in CHANNELS:
        port = info.get(f"{channel}_port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise BackendError(f"The connection file has no valid '{channel}_port'.")


def socket_paths(info: Mapping[str, Any]) -> list[str]:
    return [f"{info['ip']}-{info[f'{ch}_port']}" for ch in CHANNELS]


def sockets_bound(paths: Iterable[str], rundir: str) -> bool:
    """Whether the kernel bound all its IPC sockets: each path a real socket (``lstat``,
    no symlink followed) directly in the kernel's runtime folder ``rundir``.

    The broker runs as root and the folder is the user's: a symlink there must not make
    the broker look at (and so reveal the existence of) any path outside it.
    """
    for path in paths:
        if os.path.normpath(path) != path or os.path.dirname(path) != rundir:
            return False
        try:
            info = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISSOCK(info.st_mode):
            return False
    return True


def remove_runtime_dir(runtime_root: str, caller: Caller, kernel_id: str) -> bool:
    """Remove the kernel's runtime folder (only below the caller's own runtime folder)."""
    rundir = runtime_dir_for(os.path.abspath(runtime_root), caller.uid, kernel_id)
    try:
        info = os.lstat(rundir)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(rundir, ignore_errors=True)
    else:
        os.unlink(rundir)
    return True
