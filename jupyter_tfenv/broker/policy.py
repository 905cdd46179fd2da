"""The broker's policy: who the caller is, what a kernel request may say, which folders,
environments and how many kernels and GPUs a caller gets.

Pure logic and plain filesystem calls (no Docker, no HTTP), so that every rule can be
unit-tested. Every refusal is a :class:`BrokerError` whose message says what is wrong and
what to do; the handlers turn it into ``{"message", "reason"}`` with its status.

The broker runs as root: every path check here uses ``lstat`` and refuses symlinks, so a
user cannot point the broker at a folder that is not theirs.
"""

# Longer than 600 lines: the whole request policy in one place (caller, start body,
# folders, groups, quotas), each rule a pure function tested beside the others; the
# connection-folder rules already moved to kernels/connection.py.

from __future__ import annotations

import errno
import grp
import json
import os
import pwd
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jupyter_tfenv.backends.base import BackendError, Usage, gpu_count, usage_of
from jupyter_tfenv.catalog.choices import ChoiceError, apply_choices
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints.mountcheck import CheckedFolder
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.kernels import curve
from jupyter_tfenv.kernels.connection import (
    CHANNELS,
    CONNECTION_FILE,
    CONNECTION_FILE_LIMIT,
    KERNEL_ID_RE,
    RUNTIME_NAME_MAX,
    SOCKET_TAIL,
    check_connection_info,
    check_kernel_id,
    prepare_runtime_dir,
    read_connection_file,
    remove_runtime_dir,
    remove_stale_runtime_dirs,
    runtime_dir_for,
    runtime_name,
    runtime_uids,
    socket_paths,
    sockets_bound,
    stale_runtime_dirs,
    verify_runtime_dir,
)

#: Names that moved to backends/base.py and kernels/connection.py stay importable from
#: here (this module's own names are public too).
__all__ = [
    "CHANNELS",
    "CONNECTION_FILE",
    "CONNECTION_FILE_LIMIT",
    "KERNEL_ID_RE",
    "RUNTIME_NAME_MAX",
    "SOCKET_TAIL",
    "Usage",
    "check_connection_info",
    "check_kernel_id",
    "gpu_count",
    "prepare_runtime_dir",
    "read_connection_file",
    "remove_runtime_dir",
    "remove_stale_runtime_dirs",
    "runtime_dir_for",
    "runtime_name",
    "runtime_uids",
    "socket_paths",
    "sockets_bound",
    "stale_runtime_dirs",
    "usage_of",
    "verify_runtime_dir",
]

#: The only fields ``POST /api/kernels`` accepts; everything else the broker decides.
START_FIELDS = (
    "kernel_id",
    "environment",
    "cwd",
    "mount",
    "env",
    "server",
    "gpu_devices",
    "choices",
)
#: A GPU device id as Docker and NVML name it (index, GPU-…/MIG-… UUID).
GPU_DEVICE_RE = re.compile(r"^[A-Za-z0-9:_/-]{1,128}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A JupyterHub server name ("" is the default server): a label value, no paths.
SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9._~-]{0,255}$")


#: A refused or failed request (``status``, ``reason``, ``logs`` go into the HTTP answer):
#: the backends raise the same class, so the handlers map one error model.
BrokerError = BackendError


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
    #: The resources the user chose (docs/choices.md), checked against the catalog entry
    #: (``apply_choices``) and the quotas by the broker.
    choices: dict[str, Any] = field(default_factory=dict)


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


def curve_keys(offered: Any, runtime_dirs: bool) -> curve.CurveKeys | None:
    """A start's ``curve`` field: the kernel pod's CurveZMQ key pair (kernels/curve.py),
    checked; refused where the backend lends runtime folders (Docker: Unix sockets)."""
    if offered is None:
        return None
    if runtime_dirs:
        raise BrokerError(
            "field 'curve' is not accepted: in Docker mode kernels talk over Unix sockets "
            "in their runtime folder, which cross no network (nothing to encrypt).",
            reason="field not accepted",
        )
    try:
        return curve.keys_from_request(offered)
    except ValueError as err:
        raise BrokerError(str(err), reason="bad curve keys") from err


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
    choices = body.get("choices") or {}
    if not isinstance(choices, dict):
        raise BrokerError(
            '\'choices\' must be an object of resource to value, e.g. {"memory": "16g"}.'
        )
    return StartRequest(kernel_id, environment, cwd, mount, env, server, tuple(gpus), choices)


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


def chosen(env: Environment, values: Mapping[str, Any]) -> Environment:
    """``env`` with the resources the caller chose (docs/choices.md); a value the entry does
    not offer is refused (400, with the allowed values). The quotas then count what was
    chosen: the backend's admit gets the chosen GPU count."""
    try:
        return apply_choices(env, values)
    except ChoiceError as err:
        raise BrokerError(str(err), status=400, reason="choice not offered") from err


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
