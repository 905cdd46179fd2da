"""The broker's policy: who the caller is, what a kernel request may say, which folders,
environments and how many kernels and GPUs a caller gets.

Pure logic and plain filesystem calls (no Docker, no HTTP), so that every rule can be
unit-tested. Every refusal is a :class:`BrokerError` whose message says what is wrong and
what to do; the handlers turn it into ``{"message", "reason"}`` with its status.

The broker runs as root: every path check here uses ``lstat`` and refuses symlinks, so a
user cannot point the broker at a folder that is not theirs.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_tfenv.checkpoints.mountcheck import CheckedFolder
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.paths import SOCKET_PATH_MAX
from jupyter_tfenv.errors import TFEnvError

#: The only fields ``POST /api/kernels`` accepts; everything else the broker decides.
START_FIELDS = ("kernel_id", "environment", "cwd", "mount", "env", "server", "gpu_devices")
#: A GPU device id as Docker and NVML name it (index, GPU-…/MIG-… UUID).
GPU_DEVICE_RE = re.compile(r"^[A-Za-z0-9:_/-]{1,128}$")
#: Kernel ids: what jupyter_client makes (uuid4), no path characters.
KERNEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A JupyterHub server name ("" is the default server): a label value, no paths.
SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9._~-]{0,255}$")
CONNECTION_FILE = "kernel.json"
#: A connection file is a few hundred bytes; anything big is not one.
CONNECTION_FILE_LIMIT = 64 * 1024
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


class BrokerError(TFEnvError):
    """A refused or failed request: ``status`` and ``reason`` go into the HTTP answer."""

    def __init__(
        self, message: str, *, status: int = 400, reason: str = "", logs: str = ""
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.reason = reason or _REASONS.get(status, "error")
        self.logs = logs


_REASONS = {
    400: "bad request",
    403: "forbidden",
    404: "not found",
    409: "conflict",
    429: "quota exceeded",
    500: "internal error",
    503: "docker unavailable",
}


# -- the caller ----------------------------------------------------------------------------


def unix_groups(name: str, gid: int) -> set[str]:
    """Names of the Unix groups of ``name`` (primary and supplementary)."""
    try:
        gids = os.getgrouplist(name, gid)
    except OSError:
        gids = [gid]
    names = set()
    for number in gids:
        try:
            names.add(grp.getgrgid(number).gr_name)
        except KeyError:
            names.add(str(number))  # a gid without a name still counts by number
    return names


#: The lowest uid that is a caller by default (c.TFEnvBroker.min_uid): below it are the
#: system accounts (daemon, postgres, nobody's neighbours), whose homes and files belong
#: to services. uid 0 is refused whatever the setting says.
DEFAULT_MIN_UID = 1000


def caller_from_model(
    model: Mapping[str, Any] | None,
    *,
    scope_ok: bool,
    min_uid: int = DEFAULT_MIN_UID,
    account: tuple[int, int] | None = None,
) -> Caller:
    """The hub's model of a token → the :class:`Caller`, or a 403 saying why not.

    ``scope_ok`` is whether the token carries the broker's access scope (the handler
    asks HubAuth). Only a hub *user* with a Unix account of the same name, whose uid is
    neither 0 nor below ``min_uid``, is a caller: every request is refused before the
    broker touches any storage of a system account.
    """
    if not model:
        raise BrokerError(
            "No valid JupyterHub token: send 'Authorization: token <your JupyterHub API "
            "token>' (a single-user server has it in $JUPYTERHUB_API_TOKEN).",
            status=403,
            reason="no user",
        )
    kind = model.get("kind", "user")
    name = model.get("name")
    if kind != "user" or not isinstance(name, str) or not name:
        raise BrokerError(
            f"The token belongs to a JupyterHub {kind}, not to a user: the tfenv broker "
            "starts kernels for hub users only.",
            status=403,
            reason="not a user",
        )
    if not scope_ok:
        raise BrokerError(
            f"The token of '{name}' does not carry the scope to use the tfenv broker "
            "(access:services!service=<broker name>). Ask an admin to grant it to users' "
            "servers (c.Spawner.server_token_scopes or a role).",
            status=403,
            reason="missing scope",
        )
    if account is not None:  # Kubernetes mode: one uid/gid for every user's pods
        uid, gid = account
        check_account_uid(name, uid, gid, min_uid)
        groups = {str(g) for g in model.get("groups") or [] if isinstance(g, str)}
        return Caller(name=name, uid=uid, gid=gid, home="/tmp", groups=frozenset(groups))  # noqa: S108
    try:
        unix = pwd.getpwnam(name)
    except KeyError:
        raise BrokerError(
            f"The hub user '{name}' has no Unix account on the broker's host, so there is "
            "no uid to run kernels as. Ask an admin to create the account.",
            status=403,
            reason="no unix account",
        ) from None
    check_account_uid(unix.pw_name, unix.pw_uid, unix.pw_gid, min_uid)
    groups = unix_groups(unix.pw_name, unix.pw_gid)
    hub_groups = model.get("groups")
    if isinstance(hub_groups, list):
        groups |= {str(g) for g in hub_groups}
    return Caller(
        name=unix.pw_name,
        uid=unix.pw_uid,
        gid=unix.pw_gid,
        home=unix.pw_dir,
        groups=frozenset(groups),
    )


#: uids and gids refused whatever c.TFEnvBroker.min_uid says: root, and nobody/nogroup
#: (the overflow id that NFS root squashing and user namespaces map unknown ids to).
NEVER_IDS = {0: "root", 65534: "nobody/nogroup, the overflow id"}


def check_account_uid(name: str, uid: int, gid: int, min_uid: int) -> None:
    """Refuse (403) the Unix account ``name`` when its uid is below ``min_uid``, or its
    uid or primary gid is one of :data:`NEVER_IDS` (0: root, 65534: nobody)."""
    for kind, number in (("uid", uid), ("primary gid", gid)):
        if number in NEVER_IDS:
            raise BrokerError(
                f"The hub user '{name}' is the Unix account '{name}' with {kind} {number} "
                f"({NEVER_IDS[number]}): the tfenv broker never starts kernels or makes "
                "folders for it, whatever c.TFEnvBroker.min_uid says. Log in to the hub as "
                "an ordinary user.",
                status=403,
                reason="system account",
            )
    if uid < min_uid:
        raise BrokerError(
            f"The hub user '{name}' is the Unix account '{name}' with uid {uid}, below the "
            f"broker's minimum uid {min_uid} (c.TFEnvBroker.min_uid): system accounts get no "
            "kernels and no storage. Log in as an ordinary user, or ask an admin to lower "
            "c.TFEnvBroker.min_uid if this host's user accounts start below it.",
            status=403,
            reason="system account",
        )


# -- the start request -----------------------------------------------------------------------


@dataclass(frozen=True)
class StartRequest:
    """A validated ``POST /api/kernels`` body (paths are checked separately)."""

    kernel_id: str
    environment: str
    cwd: str
    mount: str
    env: dict[str, str]
    #: The caller's JupyterHub server name ("" for the default server): which of the
    #: user's servers owns the kernel, so that a restarted server can remove the kernels
    #: its killed predecessor left (``GET /api/kernels`` shows it as ``server``).
    server: str = ""
    #: The devices the kernel held before a restart: kept when still free (the broker
    #: checks them as any other; a hint, never a claim).
    gpu_devices: tuple[str, ...] = ()


def check_kernel_id(kernel_id: Any) -> str:
    if not isinstance(kernel_id, str) or not KERNEL_ID_RE.match(kernel_id):
        raise BrokerError(
            f"'kernel_id' must be a kernel id (8 to 64 letters, digits, '-' or '_'), "
            f"not {str(kernel_id)[:80]!r}.",
        )
    return kernel_id


def parse_json_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as err:
        raise BrokerError(f"The request body is not valid JSON: {err}.") from err
    if not isinstance(body, dict):
        raise BrokerError("The request body must be a JSON object.")
    return body


def validate_start_body(body: Mapping[str, Any], env_allowlist: Iterable[str]) -> StartRequest:
    """Check the shape of a start request: only the accepted fields, with the right types.

    Any other field (image, cmd, uid, privileged, mounts, network, …) is refused: the
    broker decides those, and a client that tries to set them is told so instead of being
    silently ignored.
    """
    extra = [key for key in body if key not in START_FIELDS]
    if extra:
        names = ", ".join(f"'{k}'" for k in sorted(extra))
        noun = "field" if len(extra) == 1 else "fields"
        verb = "is" if len(extra) == 1 else "are"
        raise BrokerError(
            f"{noun} {names} {verb} not accepted: the broker decides the image, command, "
            "uid/gid, privileges, capabilities, network, mounts and checkpoint storage from "
            "its catalog and policy. Send only " + ", ".join(START_FIELDS) + ".",
            reason="field not accepted",
        )
    kernel_id = check_kernel_id(body.get("kernel_id"))
    environment = body.get("environment")
    if not isinstance(environment, str) or not environment:
        raise BrokerError("'environment' (a catalog environment id) is required.")
    cwd = body.get("cwd")
    if not isinstance(cwd, str) or not cwd:
        raise BrokerError("'cwd' (the notebook's folder, an absolute path) is required.")
    mount = body.get("mount")
    if mount is None:
        mount = cwd
    if not isinstance(mount, str) or not mount:
        raise BrokerError("'mount' must be an absolute path (or left out: then it is 'cwd').")
    env = check_env(body.get("env") or {}, env_allowlist)
    server = body.get("server") or ""
    if not isinstance(server, str) or not SERVER_NAME_RE.match(server):
        raise BrokerError(
            "'server' must be the JupyterHub server name ($JUPYTERHUB_SERVER_NAME: letters, "
            "digits, '.', '_', '~', '-'; empty for the default server)."
        )
    gpus = body.get("gpu_devices") or []
    if (
        not isinstance(gpus, list)
        or len(gpus) > 64
        or not all(isinstance(g, str) and GPU_DEVICE_RE.match(g) for g in gpus)
    ):
        raise BrokerError(
            "'gpu_devices' must be a list of GPU device ids (the devices a restarted kernel "
            "held before)."
        )
    return StartRequest(kernel_id, environment, cwd, mount, env, server, tuple(gpus))


def check_env(env: Any, allowlist: Iterable[str]) -> dict[str, str]:
    """Environment variables from the client: only allow-listed names, string values."""
    if not isinstance(env, dict):
        raise BrokerError("'env' must be an object of variable names to string values.")
    allowed = set(allowlist)
    refused = sorted(str(k) for k in env if k not in allowed)
    if refused:
        raise BrokerError(
            "environment variables not accepted: "
            + ", ".join(refused)
            + ". Kernels get only "
            + (", ".join(sorted(allowed)) or "none")
            + " from the client (c.TFEnvBroker.env_allowlist); tokens and JUPYTERHUB_* "
            "never reach a kernel container.",
            reason="env not accepted",
        )
    bad = sorted(str(k) for k, v in env.items() if not isinstance(v, str) or "\0" in v)
    if bad:
        raise BrokerError(f"environment variables must be strings: {', '.join(bad)}.")
    return {str(k): str(v) for k, v in env.items()}


# -- folders ---------------------------------------------------------------------------------


def render_roots(templates: Iterable[str], caller: Caller) -> list[str]:
    """``allowed_mount_roots`` for one caller: '{home}' and '{username}' filled in,
    resolved (a root that is itself behind a symlink is compared by its real path).

    Resolving as root is safe here: the templates and homes are the admin's, and a user
    name is put in only as one whole path component (a template with '{username}' is left
    out for a name that is empty, '.', '..' or has a '/' or NUL in it, so no name widens
    or moves a root).
    """
    roots = []
    for template in templates:
        text = template.replace("{home}", caller.home).replace("{username}", caller.name)
        if not os.path.isabs(text) or "\0" in text:
            continue
        bad_name = caller.name in ("", ".", "..") or "/" in caller.name or "\0" in caller.name
        if "{username}" in template and bad_name:
            continue
        real = os.path.realpath(text)
        if real != "/" and real not in roots:
            roots.append(real)
    return roots


def inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


#: How every component of a folder to check is opened: never through a symlink.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _normalized(path: str) -> str:
    """``path`` with '.', '..', repeated and trailing slashes resolved *textually*
    (``os.path.normpath`` keeps a leading '//', which POSIX leaves open)."""
    text = os.path.normpath(path)
    if text.startswith("//"):
        text = "/" + text.lstrip("/")
    return text


def _can_search(info: os.stat_result, uid: int, gids: set[int]) -> bool:
    """Whether uid (with groups gids) may pass through the folder ``info`` (its x bit)."""
    mode = info.st_mode
    if info.st_uid == uid:
        return bool(mode & stat.S_IXUSR)
    if info.st_gid in gids:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def _caller_gids(caller: Caller) -> set[int]:
    try:
        return set(os.getgrouplist(caller.name, caller.gid))
    except OSError:
        return {caller.gid}


def check_folder(
    path: str,
    caller: Caller,
    roots: list[str],
    what: str,
    seen: dict[str, CheckedFolder] | None = None,
) -> str:
    """A folder the caller may mount or work in, or a :class:`BrokerError`.

    The broker runs as root, so nothing outside the caller's roots is ever looked at:

    1. textually: absolute, normalized ('..', '.', '//' refused rather than resolved),
       not '/', inside one of ``roots``; refused without touching the filesystem (a
       path such as ``/proc/<pid>/cwd``, or one on a dead NFS mount, is never resolved);
    2. then one descriptor per component, from the root down, each opened with
       ``O_NOFOLLOW|O_DIRECTORY`` relative to its parent: a symlink anywhere is refused,
       never followed; below the root each folder must be searchable by the caller (its
       uid and groups, as the kernel would need), so the broker answers nothing about
       folders the caller could not reach themselves;
    3. the folder itself: a directory owned by the caller.

    Messages name only the path as sent (and its own components), never what a
    symlink points to. ``seen`` gets the folder's identity as checked, for
    :func:`~jupyter_tfenv.checkpoints.mountcheck.verify_mounts` once the container runs (Docker
    resolves the path again when it mounts it).
    """
    if not isinstance(path, str) or not os.path.isabs(path) or "\0" in path:
        shown = path[:200] if isinstance(path, str) else path
        raise BrokerError(f"'{what}' must be an absolute path, not {shown!r}.")
    sent = path
    if path != "/" and path.endswith("/"):
        path = path.rstrip("/") or "/"
    if path == "/":
        raise BrokerError(f"'{what}' is '/': the host's root is never mounted.", status=403)
    if _normalized(path) != path:
        raise BrokerError(
            f"'{what}' {sent} is not its own real path: the broker mounts only paths without "
            "'..', '.', '//' or symlinks. Send the real path.",
            status=403,
            reason="symlink",
        )
    root = next((r for r in roots if inside(path, r)), None)
    if root is None:
        raise BrokerError(
            f"'{what}' {sent} is outside the folders you may mount ("
            + (", ".join(roots) or "none are configured")
            + "; c.TFEnvBroker.allowed_mount_roots).",
            status=403,
            reason="outside allowed roots",
        )
    info = _walk(path, root, caller, what)
    if not stat.S_ISDIR(info.st_mode):
        raise BrokerError(f"'{what}' {path} is not a folder.")
    if info.st_uid != caller.uid:
        raise BrokerError(
            f"'{what}' {path} belongs to uid {info.st_uid}, not to you (uid {caller.uid}): "
            "kernels mount only their user's own folders.",
            status=403,
            reason="not owner",
        )
    if seen is not None:
        seen[path] = CheckedFolder.of(path, info)
    return path


def _walk(path: str, root: str, caller: Caller, what: str) -> os.stat_result:
    """``fstat`` of the folder ``path`` (normalized, inside ``root``), reached one
    ``O_NOFOLLOW`` descriptor at a time; below ``root`` only through folders the caller
    may search. Every failure is a 400/403 that names ``path`` or one of its prefixes."""
    gids = _caller_gids(caller)
    parts = [p for p in path.split("/") if p]
    depth_of_root = len([p for p in root.split("/") if p])
    current = "/"
    try:
        fd = os.open("/", _DIR_FLAGS)
    except OSError as err:  # pragma: no cover - '/' is always there
        raise BrokerError(f"'{what}' {path} cannot be checked: {err.strerror}.") from err
    try:
        for depth, part in enumerate(parts):
            if depth >= depth_of_root and not _can_search(os.fstat(fd), caller.uid, gids):
                raise BrokerError(
                    f"'{what}' {path}: you (uid {caller.uid}) may not enter {current}, so "
                    "the broker does not look into it either. Pick a folder you can open.",
                    status=403,
                    reason="permission denied",
                )
            current = os.path.join(current, part)
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as err:
                raise _walk_error(err, fd, part, current=current, path=path, what=what) from None
            os.close(fd)
            fd = child
        return os.fstat(fd)
    finally:
        os.close(fd)


def _walk_error(
    err: OSError, parent_fd: int, part: str, *, current: str, path: str, what: str
) -> BrokerError:
    """The refusal for a component that could not be opened (never a 500)."""
    if err.errno == errno.ENOENT:
        return BrokerError(f"'{what}' {path} does not exist.")
    if err.errno in (errno.ELOOP, errno.ENOTDIR):
        # O_NOFOLLOW|O_DIRECTORY answers ENOTDIR for a symlink, as for a file: which is it?
        try:
            is_link = stat.S_ISLNK(os.stat(part, dir_fd=parent_fd, follow_symlinks=False).st_mode)
        except OSError:
            is_link = err.errno == errno.ELOOP
        if is_link:
            return BrokerError(
                f"'{what}' {path} is not its own real path: {current} is a symlink, and the "
                "broker mounts only paths without symlinks. Send the real path.",
                status=403,
                reason="symlink",
            )
        return BrokerError(f"'{what}' {path} is not a folder ({current} is not one).")
    if err.errno in (errno.EACCES, errno.EPERM):
        return BrokerError(
            f"'{what}' {path} cannot be opened by the broker ({current}: permission denied).",
            status=403,
            reason="permission denied",
        )
    return BrokerError(
        f"'{what}' {path} cannot be checked ({current}: {err.strerror}).",
        reason="unreadable folder",
    )


def check_folders(
    req: StartRequest,
    caller: Caller,
    roots: list[str],
    seen: dict[str, CheckedFolder] | None = None,
) -> tuple[str, str]:
    """``(cwd, mount)`` of a start request, both checked; ``cwd`` must be inside ``mount``.

    ``seen``: as :func:`check_folder`'s (the mounted folder is ``seen[mount]``).
    """
    mount = check_folder(req.mount, caller, roots, "mount", seen)
    cwd = check_folder(req.cwd, caller, roots, "cwd", seen)
    if not inside(cwd, mount):
        raise BrokerError(
            f"'cwd' {cwd} is not inside 'mount' {mount}: the kernel's working folder must be "
            "in the folder that is mounted.",
        )
    return cwd, mount


# -- runtime folders -------------------------------------------------------------------------


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
        raise BrokerError(
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
        raise BrokerError(
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
            raise BrokerError(
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
        raise BrokerError(
            f"Kernel {kernel_id} has no runtime folder: POST /api/kernels/{kernel_id}/runtime "
            "first and write the connection file (kernel.json) into the folder it names.",
            reason="no runtime folder",
        ) from None
    if not _is_users_runtime(info, caller):
        raise BrokerError(
            f"The runtime folder {rundir} is not a 0700 folder of uid {caller.uid}; ask for a "
            f"new one (POST /api/kernels/{kernel_id}/runtime).",
            status=403,
            reason="runtime folder",
        )
    path = os.path.join(rundir, CONNECTION_FILE)
    try:
        conn = os.lstat(path)
    except FileNotFoundError:
        raise BrokerError(
            f"No connection file in {rundir}: write {CONNECTION_FILE} (0600) there before "
            "starting the kernel.",
            reason="no connection file",
        ) from None
    if not stat.S_ISREG(conn.st_mode) or conn.st_uid != caller.uid:
        raise BrokerError(
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
            raise BrokerError(f"{path} is a symlink.", status=403) from err
        raise BrokerError(f"Cannot read {path}: {err.strerror}.") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != caller.uid:
            raise BrokerError(f"{path} must be a regular file of uid {caller.uid}.", status=403)
        raw = os.read(fd, CONNECTION_FILE_LIMIT + 1)
    finally:
        os.close(fd)
    if len(raw) > CONNECTION_FILE_LIMIT:
        raise BrokerError(f"{path} is too large for a connection file.")
    try:
        info_json = json.loads(raw)
    except ValueError as err:
        raise BrokerError(f"{path} is not valid JSON: {err}.") from err
    if not isinstance(info_json, dict):
        raise BrokerError(f"{path} is not a connection file (a JSON object).")
    check_connection_info(info_json, rundir)
    return info_json


def check_connection_info(info: Mapping[str, Any], rundir: str) -> None:
    """Kernels of the broker talk over IPC sockets in their runtime folder, nothing else."""
    if info.get("transport") != "ipc":
        raise BrokerError(
            "The connection file must use transport 'ipc' (ZeroMQ over Unix sockets in the "
            f"runtime folder), not {info.get('transport')!r}: broker kernels are on no network.",
        )
    ip = info.get("ip")
    if not isinstance(ip, str) or os.path.normpath(ip) != ip or os.path.dirname(ip) != rundir:
        raise BrokerError(
            f"The connection file's 'ip' must be a socket path prefix in {rundir} "
            f"(e.g. {rundir}/k), not {str(ip)[:200]!r}.",
        )
    for channel in CHANNELS:
        port = info.get(f"{channel}_port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise BrokerError(f"The connection file has no valid '{channel}_port'.")


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


# -- environments and groups -----------------------------------------------------------------


def environment_allowed(
    env_id: str, groups: Iterable[str], environment_groups: Mapping[str, Iterable[str]]
) -> tuple[bool, str | None]:
    """``(allowed, reason)``: an environment without an entry in ``environment_groups`` is
    open to every caller; one with an entry only to members of one of its groups."""
    if env_id not in environment_groups:
        return True, None
    wanted = sorted(set(environment_groups[env_id]))
    if set(groups) & set(wanted):
        return True, None
    return False, (
        f"Environment '{env_id}' is for members of "
        + (", ".join(wanted) if wanted else "no group")
        + " (c.TFEnvBroker.environment_groups); you are in "
        + (", ".join(sorted(groups)) or "no group")
        + "."
    )


# -- quotas ----------------------------------------------------------------------------------


def gpu_count(gpus: Any, host_gpus: int | None) -> int:
    """How many GPUs a kernel of an environment with catalog ``gpus`` holds.

    'all' counts as every GPU of the host (1 when the host's GPUs are unknown).
    """
    if gpus in (None, "none"):
        return 0
    if gpus == "all":
        return host_gpus if host_gpus and host_gpus > 0 else 1
    if isinstance(gpus, bool):
        return int(gpus)
    if isinstance(gpus, int):
        return max(gpus, 0)
    if isinstance(gpus, (list, tuple)):
        return len(gpus)
    if isinstance(gpus, str) and gpus.strip().isdigit():
        return int(gpus)
    return 1


@dataclass(frozen=True)
class Usage:
    kernels: int = 0
    gpus: int = 0
    #: Environment probes the broker runs for the caller now: each counts as a kernel
    #: (and holds its GPUs) while it runs.
    probes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"kernels": self.kernels, "gpus": self.gpus, "probes": self.probes}


def usage_of(gpu_counts: Iterable[int], probe_gpus: Iterable[int] = ()) -> Usage:
    """Usage from the GPU counts of the caller's running kernels (one entry per kernel)
    and of the probes running for them (one entry per probe)."""
    counts = list(gpu_counts)
    probes = list(probe_gpus)
    return Usage(kernels=len(counts), gpus=sum(counts) + sum(probes), probes=len(probes))


def limit_value(limit: int | None) -> int | None:
    """A configured limit as the API shows it: None (or a negative number) is unlimited."""
    if limit is None or limit < 0:
        return None
    return limit


def check_quota(
    caller: Caller,
    usage: Usage,
    new_gpus: int,
    *,
    max_kernels: int | None,
    max_gpus: int | None,
    probe: bool = False,
) -> None:
    """Refuse (429) the kernel (or, ``probe``, the environment probe) that would take
    ``caller`` beyond a limit. Running probes count as kernels."""
    kernels_limit = limit_value(max_kernels)
    what = "environment probe" if probe else "kernel"
    if kernels_limit is not None and usage.kernels + usage.probes + 1 > kernels_limit:
        if kernels_limit == 0:
            message = (
                f"{caller.name} may run no tfenv kernels: the limit per user is 0 "
                "(c.TFEnvBroker.max_kernels_per_user)."
            )
        elif not usage.probes:
            message = (
                f"{caller.name} already runs {usage.kernels} tfenv "
                f"kernel{'s' if usage.kernels != 1 else ''}; the limit per user is "
                f"{kernels_limit} (c.TFEnvBroker.max_kernels_per_user). Shut one down "
                f"(Kernel > Shut Down Kernel, or the Running tab) and start this "
                f"{'environment probe' if probe else 'one'} again."
            )
        else:
            message = (
                f"{caller.name} already runs {usage.kernels} tfenv "
                f"kernel{'s' if usage.kernels != 1 else ''} and {usage.probes} environment "
                f"probe{'s' if usage.probes != 1 else ''} (a probe counts as a kernel while it "
                f"runs); the limit per user is {kernels_limit} "
                "(c.TFEnvBroker.max_kernels_per_user). Wait for the probe to finish, or shut "
                f"a kernel down, and start this {what} again."
            )
        raise BrokerError(message, status=429, reason="kernel quota")
    gpus_limit = limit_value(max_gpus)
    if new_gpus and gpus_limit is not None and usage.gpus + new_gpus > gpus_limit:
        raise BrokerError(
            f"{caller.name} holds {usage.gpus} GPU{'s' if usage.gpus != 1 else ''} in "
            f"running tfenv kernels and probes and this {what} needs {new_gpus} more; the "
            f"limit per user is {gpus_limit} (c.TFEnvBroker.max_gpus_per_user). Shut down a GPU "
            "kernel, or pick an environment with fewer GPUs.",
            status=429,
            reason="gpu quota",
        )


def check_signal(body: Mapping[str, Any]) -> int:
    extra = [k for k in body if k != "signal"]
    if extra:
        raise BrokerError(
            f"field {', '.join(repr(k) for k in sorted(extra))} is not accepted: send only "
            "'signal'.",
            reason="field not accepted",
        )
    signum = body.get("signal")
    if not isinstance(signum, int) or isinstance(signum, bool) or not 0 < signum < 65:
        raise BrokerError("'signal' must be a signal number from 1 to 64.")
    return signum
