"""Checkpoints that survive the kernel: storage per user and environment, and browsing it.

Every tfenv kernel gets two folders outside its container, one per user and environment:

* checkpoints, mounted at :data:`CONTAINER_CHECKPOINT_DIR` (``/tfenv/checkpoints``) and
  announced in ``$TFENV_CHECKPOINT_DIR``;
* TensorBoard logs, mounted at :data:`CONTAINER_LOG_DIR` (``/tfenv/logs``) and announced in
  ``$TFENV_LOG_DIR``.

They are either folders under a host root, bind-mounted (``checkpoint_storage = "bind"``,
the default: ``~/tfenv/checkpoints/<user>/<environment>`` and ``~/tfenv/logs/…``), or one
named Docker volume per user, environment and kind (``"volume"``, which also covers NFS
and other drivers through driver options). Either way the folder belongs to the kernel's
uid:gid before the kernel starts: a root-owned mount point is the classic failure here.

Names are escaped so that no two users or environments ever share a folder: path
components keep ``[A-Za-z0-9._-]`` and percent-escape everything else (``a/b`` →
``a%2Fb``, ``a_b`` stays; a leading ``.`` is ``%2E`` so no name is ``.`` or ``..``);
volume names keep ``[A-Za-z0-9]`` and write every other byte as ``_xx``.

Browsing never follows a symlink and never opens a path a request names: the folder is
walked (:func:`_inventory`), its files are grouped into checkpoints (:func:`classify`),
and a request can only pick one of those by its exact name. Anything else is a
:class:`CheckpointNotFound` with one fixed message, so that a refused path and a missing
one look the same. The user is the server's kernel owner, never a request field.

For volumes the walk (and a delete) runs in a short-lived container of an environment's
image, as the kernel's uid, with the volume mounted and nothing else: the server may not
be able to read a volume's data itself (NFS, other hosts). The functions shipped into
that container (:data:`_SHIPPED`) use Python 3.6 syntax and the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import inspect
import json
import os
import re
import stat
import string
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Mount

from jupyter_tfenv.backends.docker.engine import remove_quietly, server_labels, tail_logs
from jupyter_tfenv.checkpoints.mountcheck import CheckedFolder, stat_nofollow
from jupyter_tfenv.core.labels import (
    LABEL_HELPER,
    LABEL_OWNER,
    LABEL_STORAGE_ENV,
    LABEL_STORAGE_KIND,
)
from jupyter_tfenv.core.paths import (
    CHECKPOINT_DIR_VAR,
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_LOG_DIR,
    CONTAINER_OTHERS_DIR,
    LOG_DIR_VAR,
    OTHERS_DIR_VAR,
)
from jupyter_tfenv.errors import NotFoundError, TFEnvError

KINDS = ("checkpoints", "logs")
STORAGE_MODES = ("bind", "volume", "off")
USER_PLACEHOLDER = "{username}"
ENV_PLACEHOLDER = "{environment}"


#: The one message of every refused or missing checkpoint path: it must not tell a
#: folder that exists outside the user's storage from one that does not.
NOT_FOUND_MESSAGE = "No such checkpoint or environment in your checkpoint storage."

HELPER_TIMEOUT = 120.0
HELPER_MEMORY = 512 * 1024**2
HELPER_PIDS = 64

_VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PATH_SAFE = frozenset(string.ascii_letters + string.digits + "._-")
_VOLUME_SAFE = frozenset(string.ascii_letters + string.digits)
_STEP_RE = re.compile(r"(?:^|[-_.])(\d+)$")
_DATA_SHARD_RE = re.compile(r"^(?P<prefix>.+)\.data-(?P<shard>\d{5})-of-(?P<total>\d{5})$")
_TEMP_FILE_RE = re.compile(r"(\.tmp[0-9a-f]*$|\.tempstate\d*$|\.tmp\.)")
_STATE_LINE_RE = re.compile(r'^\s*(\w+)\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')


# -- errors -----------------------------------------------------------------------------


class CheckpointNotFound(NotFoundError):
    """A checkpoint or environment the request names is not in the user's storage.

    Always the same message, whatever the reason (missing, outside the root, a symlink,
    another user's), so that a refusal reveals nothing.
    """

    def __init__(self) -> None:
        super().__init__(NOT_FOUND_MESSAGE)


class CheckpointPreconditionRequired(TFEnvError):
    """A delete without the checkpoint's ETag in ``If-Match`` (the confirmation)."""

    http_status = 428


class CheckpointChanged(TFEnvError):
    """The checkpoint changed since it was listed: its ETag no longer matches."""

    http_status = 412


class CheckpointStorageError(TFEnvError):
    """The checkpoint storage is misconfigured or cannot be prepared or read."""

    http_status = 500


# -- names ------------------------------------------------------------------------------


def escape_path_component(value: str) -> str:
    """``value`` as one path component; injective, never ``.``, ``..``, empty or with ``/``.

    Keeps ``[A-Za-z0-9._-]`` (a leading ``.`` excepted) and percent-escapes every other
    UTF-8 byte, ``%`` included, so that ``a/b`` (``a%2Fb``), ``a_b`` and ``a%2Fb``
    (``a%252Fb``) stay three different folders.
    """
    if not value:
        raise CheckpointStorageError("An empty user or environment name has no folder.")
    out = []
    for index, char in enumerate(value):
        if char in _PATH_SAFE and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    text = "".join(out)
    if len(text) > 255:
        raise CheckpointStorageError(f"The name '{value[:40]}…' is too long for a folder name.")
    return text


def unescape_path_component(text: str) -> str | None:
    """The name a canonical :func:`escape_path_component` result stands for, else None."""
    try:
        value = urllib.parse.unquote(text, errors="strict")
    except UnicodeDecodeError:
        return None
    try:
        return value if value and escape_path_component(value) == text else None
    except CheckpointStorageError:
        return None


def escape_volume_part(value: str) -> str:
    """``value`` for a Docker volume name: ``[A-Za-z0-9]`` kept, every other byte ``_xx``.

    Injective (``_`` always starts an escape), and never contains ``-`` or ``.``, so the
    separators of a volume template cannot be forged by a user or environment name.
    """
    if not value:
        raise CheckpointStorageError("An empty user or environment name has no volume.")
    out = []
    for char in value:
        if char in _VOLUME_SAFE:
            out.append(char)
        else:
            out.extend(f"_{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def check_subpath_template(template: str) -> list[str]:
    """Validate a ``checkpoint_subpath`` template; return its components.

    Relative, no ``.``/``..``/empty components, ``{environment}`` as the whole last
    component and ``{username}`` in an earlier one: then the folder above the
    environments belongs to one user (listing all of a user's environments looks there
    and nowhere else), and no user's folder can hold another user's.
    """
    parts = template.split("/")
    problem = ""
    if template.startswith("/"):
        problem = "must be relative to the root"
    elif any(p in ("", ".", "..") for p in parts):
        problem = "must not have empty, '.' or '..' components"
    elif parts[-1] != ENV_PLACEHOLDER:
        problem = f"must end with the component '{ENV_PLACEHOLDER}'"
    elif not any(USER_PLACEHOLDER in p for p in parts[:-1]):
        problem = f"needs '{USER_PLACEHOLDER}' in a component before '{ENV_PLACEHOLDER}'"
    else:
        rest = template.replace(USER_PLACEHOLDER, "").replace(ENV_PLACEHOLDER, "")
        if "{" in rest or "}" in rest or template.count(ENV_PLACEHOLDER) != 1:
            problem = f"may only use {USER_PLACEHOLDER} and {ENV_PLACEHOLDER} (once)"
    if problem:
        raise CheckpointStorageError(
            f"c.DockerKernelProvisioner.checkpoint_subpath = {template!r} {problem}; "
            f"the default is '{USER_PLACEHOLDER}/{ENV_PLACEHOLDER}'."
        )
    return parts


def check_volume_template(template: str, trait: str) -> None:
    """A volume name template: both placeholders once, told apart by a ``-`` or ``.``."""
    problem = ""
    if template.count(USER_PLACEHOLDER) != 1 or template.count(ENV_PLACEHOLDER) != 1:
        problem = f"needs {USER_PLACEHOLDER} and {ENV_PLACEHOLDER}, once each"
    else:
        rest = template.replace(USER_PLACEHOLDER, "").replace(ENV_PLACEHOLDER, "")
        first, second = sorted([template.index(USER_PLACEHOLDER), template.index(ENV_PLACEHOLDER)])
        between = template[first:second].split("}", 1)[1]
        if "{" in rest or "}" in rest:
            problem = f"may only use {USER_PLACEHOLDER} and {ENV_PLACEHOLDER}"
        elif not set(between) & set("-."):
            problem = "needs a '-' or '.' between the two placeholders"
        elif not template[:1].isalnum():
            problem = "must start with a letter or digit"
        elif not _VOLUME_NAME_RE.match(rest):
            problem = "may only hold letters, digits, '_', '.' and '-' besides the placeholders"
    if problem:
        raise CheckpointStorageError(
            f"c.DockerKernelProvisioner.{trait} = {template!r} {problem}, e.g. "
            "'tfenv-checkpoints-{username}-{environment}'."
        )


def is_inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both already resolved).

    ``commonpath``, not a string prefix: ``/data/alice2`` is not inside ``/data/alice``.
    """
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def _step_of(stem: str) -> int | None:
    match = _STEP_RE.search(stem)
    return int(match.group(1)) if match else None


def _iso(mtime_ns: int | None) -> str | None:
    if mtime_ns is None:
        return None
    return datetime.fromtimestamp(mtime_ns / 1e9, timezone.utc).isoformat()


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class StorageConfig:
    """The storage traits of :class:`~jupyter_tfenv.kernels.provisioner.DockerKernelProvisioner`."""

    mode: str = "bind"
    checkpoint_root: str = "~/tfenv/checkpoints"
    log_root: str = "~/tfenv/logs"
    subpath: str = f"{USER_PLACEHOLDER}/{ENV_PLACEHOLDER}"
    checkpoint_volume: str = "tfenv-checkpoints-{username}-{environment}"
    log_volume: str = "tfenv-logs-{username}-{environment}"
    volume_driver: str = "local"
    volume_options: dict[str, str] = field(default_factory=dict)
    helper_image: str = ""

    @classmethod
    def from_provisioner(cls, prov: Any) -> StorageConfig:
        config = cls(
            mode=prov.checkpoint_storage,
            checkpoint_root=prov.checkpoint_root,
            log_root=prov.log_root,
            subpath=prov.checkpoint_subpath,
            checkpoint_volume=prov.checkpoint_volume,
            log_volume=prov.log_volume,
            volume_driver=prov.checkpoint_volume_driver,
            volume_options=dict(prov.checkpoint_volume_options),
            helper_image=prov.checkpoint_helper_image,
        )
        config.validate()
        return config

    def validate(self) -> None:
        if self.mode not in STORAGE_MODES:
            raise CheckpointStorageError(
                f"checkpoint_storage must be one of {', '.join(STORAGE_MODES)}."
            )
        if self.mode == "bind":
            check_subpath_template(self.subpath)
            for trait, root in (
                ("checkpoint_root", self.checkpoint_root),
                ("log_root", self.log_root),
            ):
                if not os.path.isabs(os.path.expanduser(root)):
                    raise CheckpointStorageError(
                        f"c.DockerKernelProvisioner.{trait} = {root!r} must be an absolute "
                        "host path (or start with ~)."
                    )
            if self.root("checkpoints") == self.root("logs"):
                raise CheckpointStorageError(
                    "checkpoint_root and log_root must be different folders."
                )
        elif self.mode == "volume":
            check_volume_template(self.checkpoint_volume, "checkpoint_volume")
            check_volume_template(self.log_volume, "log_volume")
            if self.checkpoint_volume == self.log_volume:
                raise CheckpointStorageError(
                    "checkpoint_volume and log_volume must be different templates."
                )

    def root(self, kind: str) -> str:
        raw = self.checkpoint_root if kind == "checkpoints" else self.log_root
        return os.path.abspath(os.path.expanduser(raw))

    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mode": self.mode,
            "container_paths": {"checkpoints": CONTAINER_CHECKPOINT_DIR, "logs": CONTAINER_LOG_DIR},
            "variables": {"checkpoints": CHECKPOINT_DIR_VAR, "logs": LOG_DIR_VAR},
        }
        if self.mode == "bind":
            data.update(roots={k: self.root(k) for k in KINDS}, subpath=self.subpath)
        elif self.mode == "volume":
            data.update(
                volumes={"checkpoints": self.checkpoint_volume, "logs": self.log_volume},
                driver=self.volume_driver,
            )
        return data


@dataclass(frozen=True)
class Location:
    """One kind of storage (checkpoints or logs) of one user and environment."""

    kind: str
    username: str
    environment: str
    container_path: str
    #: bind: the storage root (resolved), the user's folder and the environment's folder,
    #: and how many folders below the root are shared (above the user's first one)
    base: str | None = None
    user_dir: str | None = None
    host_path: str | None = None
    shared_depth: int = 0
    #: volume: its name, driver and (rendered) driver options
    volume: str | None = None
    driver: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    #: Kubernetes mode: the user's claim for the environment, "namespace/name"
    claim: str | None = None

    @property
    def is_volume(self) -> bool:
        return self.volume is not None

    def describe(self) -> str:
        if self.claim is not None:
            return f"claim {self.claim}, {self.kind}/"
        return f"volume {self.volume}" if self.is_volume else str(self.host_path)

    def mount(self) -> Mount:
        if self.is_volume:
            return Mount(self.container_path, self.volume, type="volume", read_only=False)
        return Mount(self.container_path, self.host_path, type="bind", read_only=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "container_path": self.container_path,
            "storage": "volume" if self.is_volume else "bind",
        }
        if self.is_volume:
            data["volume"] = self.volume
        else:
            data["host_path"] = self.host_path
        return data


def locate(config: StorageConfig, kind: str, username: str, environment: str) -> Location:
    """Where ``kind`` of ``username`` in ``environment`` lives (nothing is created)."""
    container_path = CONTAINER_CHECKPOINT_DIR if kind == "checkpoints" else CONTAINER_LOG_DIR
    if config.mode == "volume":
        template = config.checkpoint_volume if kind == "checkpoints" else config.log_volume
        name = template.replace(USER_PLACEHOLDER, escape_volume_part(username)).replace(
            ENV_PLACEHOLDER, escape_volume_part(environment)
        )
        if not _VOLUME_NAME_RE.match(name) or len(name) > 255:
            raise CheckpointStorageError(f"'{name[:60]}…' is too long for a volume name.")
        values = {
            USER_PLACEHOLDER: escape_path_component(username),
            ENV_PLACEHOLDER: escape_path_component(environment),
            "{kind}": kind,
        }
        options = {}
        for key, raw in config.volume_options.items():
            text = str(raw)
            for placeholder, value in values.items():
                text = text.replace(placeholder, value)
            options[key] = text
        return Location(
            kind,
            username,
            environment,
            container_path,
            volume=name,
            driver=config.volume_driver,
            options=options,
        )
    parts = check_subpath_template(config.subpath)
    user = escape_path_component(username)
    rendered = [
        p.replace(USER_PLACEHOLDER, user).replace(
            ENV_PLACEHOLDER, escape_path_component(environment)
        )
        for p in parts
    ]
    base = os.path.realpath(config.root(kind))
    user_dir = os.path.join(base, *rendered[:-1])
    return Location(
        kind,
        username,
        environment,
        container_path,
        base=base,
        user_dir=user_dir,
        host_path=os.path.join(user_dir, rendered[-1]),
        shared_depth=next(i for i, p in enumerate(parts) if USER_PLACEHOLDER in p),
    )


def kernel_locations(config: StorageConfig, username: str, environment: str) -> list[Location]:
    if config.mode == "off":
        return []
    return [locate(config, kind, username, environment) for kind in KINDS]


def kernel_environment(locations: list[Location]) -> dict[str, str]:
    """The variables that tell a kernel where its folders are."""
    names = {"checkpoints": CHECKPOINT_DIR_VAR, "logs": LOG_DIR_VAR}
    return {names[loc.kind]: loc.container_path for loc in locations}


# -- preparing the folders (blocking) -----------------------------------------------------


def _owner_problem(path: str, owner: int, uid: int) -> CheckpointStorageError:
    return CheckpointStorageError(
        f"The checkpoint folder {path} belongs to uid {owner}, not to the kernel's uid {uid}, "
        f"so the kernel could not write there. Give it to the kernel's user (`chown -R "
        f"{uid} {path}`) or point c.DockerKernelProvisioner.checkpoint_root elsewhere."
    )


@dataclass(frozen=True)
class KernelStorage:
    """A kernel's prepared checkpoint and log storage: what its container gets."""

    mounts: list[Any]
    environment: dict[str, str]
    #: For the REST API: ``{"mode", "checkpoints": {...}, "logs": {...}}``.
    info: dict[str, Any]
    #: The bind folders as prepared, for :func:`~jupyter_tfenv.checkpoints.mountcheck.verify_mounts`
    #: once the container runs (volumes are Docker's own: nothing to swap).
    checked: list[CheckedFolder] = field(default_factory=list)


def prepare_kernel_storage(
    client: Any,
    config: StorageConfig,
    owner: str,
    env: Any,
    *,
    uid: int,
    gid: int,
    image_id: str,
    helper_image: str = "",
) -> KernelStorage:
    """Create ``owner``'s checkpoint and log folders (or volumes) for ``env``; blocking.

    They belong to ``uid:gid`` before the container starts. Volumes are prepared by a
    short-lived container of ``helper_image`` (default: the environment's own image).
    The result's ``checked`` is what to pass to
    :func:`~jupyter_tfenv.checkpoints.mountcheck.verify_mounts` once the container runs.
    Raises :class:`CheckpointStorageError`.
    """
    locations = kernel_locations(config, owner, env.id)
    checked: list[CheckedFolder] = []
    for loc in locations:
        if loc.is_volume:
            prepare_volume(
                client,
                loc,
                uid=uid,
                gid=gid,
                image=helper_image or image_id,
                python="python3" if helper_image else env.python,
            )
        else:
            folder = prepare_bind(loc, uid, gid)
            checked.append(CheckedFolder.of(str(loc.host_path), folder, loc.container_path))
    mounts = [loc.mount() for loc in locations]
    variables = kernel_environment(locations)
    info: dict[str, Any] = {"mode": "off"}
    if locations:
        others = other_environments(client, config, owner, env.id, uid=uid)
        mounts += [other.mount for other in others]
        checked += [other.checked for other in others if other.checked is not None]
        variables[OTHERS_DIR_VAR] = CONTAINER_OTHERS_DIR
        info = {
            "mode": config.mode,
            **{loc.kind: loc.to_dict() for loc in locations},
            "others_dir": CONTAINER_OTHERS_DIR,
            "others": [other.to_dict() for other in others],
        }
    return KernelStorage(mounts, variables, info, checked)


@dataclass(frozen=True)
class OtherCheckpoints:
    """The checkpoint folder (or volume) of another environment of the same user, as a
    kernel mounts it: read-only, at ``/tfenv/checkpoints-of/<environment>``."""

    location: Location
    mount: Mount
    #: bind: the folder as it was checked (for mountcheck: staged and verified as the
    #: kernel's own folders are); None for a volume
    checked: CheckedFolder | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.location.environment,
            **self.location.to_dict(),
            "container_path": self.mount["Target"],
            "read_only": True,
        }


def other_environments(
    client: Any, config: StorageConfig, owner: str, environment: str, *, uid: int
) -> list[OtherCheckpoints]:
    """The checkpoint storage of ``owner``'s environments other than ``environment`` that
    exists, to be mounted read-only (so that a notebook switched from 2.19 to 2.20 can
    restore what it saved in 2.19); blocking.

    Nothing is created for them. bind: the environment folders found in the user's folder
    (:func:`discover_bind`), each reached again from ``/`` without following a symlink
    (:func:`~jupyter_tfenv.checkpoints.mountcheck.stat_nofollow`) and taken only when it is a real
    folder of the kernel's ``uid``; its identity goes into ``checked``, so that the broker
    stages it (mounts the checked folder by descriptor) and checks it after the start, as
    it does the kernel's own folders. volume: the user's labelled checkpoint volumes
    whose name is the template's (:func:`discover_volumes`).
    """
    found: list[OtherCheckpoints] = []
    if config.mode == "bind":
        for name in discover_bind(config, owner):
            if name == environment:
                continue
            loc = locate(config, "checkpoints", owner, name)
            assert loc.host_path is not None
            try:
                info = stat_nofollow(loc.host_path)
            except OSError:
                continue  # gone, a symlink somewhere, or not a folder: not mounted
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid:
                continue
            target = f"{CONTAINER_OTHERS_DIR}/{escape_path_component(name)}"
            found.append(
                OtherCheckpoints(
                    loc,
                    Mount(target, loc.host_path, type="bind", read_only=True),
                    CheckedFolder.of(loc.host_path, info, target),
                )
            )
    elif config.mode == "volume":
        for name in discover_volumes(client, config, owner):
            if name == environment:
                continue
            loc = locate(config, "checkpoints", owner, name)
            target = f"{CONTAINER_OTHERS_DIR}/{escape_path_component(name)}"
            found.append(
                OtherCheckpoints(
                    loc, Mount(target, loc.volume, type="volume", read_only=True), None
                )
            )
    return found


#: How every folder of a bind location is opened: never through a symlink, only folders.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_symlink(parent_fd: int | None, name: str) -> bool:
    """For messages only: whether ``name`` is a symlink (O_DIRECTORY says ENOTDIR too)."""
    try:
        info = os.lstat(name) if parent_fd is None else os.lstat(name, dir_fd=parent_fd)
    except OSError:
        return False
    return stat.S_ISLNK(info.st_mode)


def _open_component(parent_fd: int | None, name: str, path: str) -> int:
    """``name`` opened as a folder below ``parent_fd`` (a path when None), never following.

    A symlink (ELOOP) or anything but a folder (ENOTDIR) is refused with what to do.
    """
    try:
        if parent_fd is None:
            return os.open(name, _DIR_FLAGS)
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            what = "a symlink" if _is_symlink(parent_fd, name) else "not a folder"
            raise CheckpointStorageError(
                f"{path} is {what}; checkpoint folders must be real folders under the "
                "checkpoint root (a symlink could lead anywhere, so nothing is created or "
                f"handed over through it). Remove {path}, then start the kernel again; or "
                "choose another root."
            ) from err
        raise CheckpointStorageError(
            f"Cannot open the checkpoint folder {path}: {err.strerror or err}."
        ) from err


def _take_back(fd: int, info: os.stat_result, path: str, uid: int, gid: int) -> None:
    """The user's folder above an environment's: root's, group ``gid``, 0750 (by
    descriptor). The user's own (an older version made it) is taken back; another
    user's is refused."""
    if info.st_uid not in (0, uid):
        raise _owner_problem(path, info.st_uid, uid)
    if (info.st_uid, info.st_gid) != (0, gid):
        os.fchown(fd, 0, gid)
    if stat.S_IMODE(info.st_mode) != 0o750:
        os.fchmod(fd, 0o750)


def prepare_bind(loc: Location, uid: int, gid: int) -> os.stat_result:
    """Create the location's folder, owned by ``uid:gid`` (0700 for what is created).

    The root and the template's shared folders above the user's are the server's
    (created 0755). When the server runs as the kernel's own user (local mode) every
    folder from the user's folder down belongs to that user, as before. When it runs as
    root for another uid (the broker; a root server with ``uid`` set), only the
    environment's folder is the user's: the user's folders above it (``<root>/<user>``)
    are root's, group ``gid``, 0750 (the user's own server can still list their
    environments), so the user can neither rename nor replace the folder that is
    mounted (defence in depth beside mountcheck.StagedMounts); such a folder that the
    user owns (made by an older version) is taken back, by descriptor. A missing
    environment folder is created and handed over, a root-owned one is handed over,
    another user's is refused with what to do, and a symlink anywhere is refused (it
    could lead anywhere).

    No step goes through a path string below the root: each folder is opened with
    ``O_NOFOLLOW|O_DIRECTORY`` relative to its parent's descriptor, created with
    ``mkdir(dir_fd=…)``, and its owner and mode are read and set on that descriptor
    (``fstat``/``fchown``/``fchmod``). A user who swaps a folder for a symlink between
    two steps (the broker runs as root) makes the start fail; nothing outside the root
    is ever changed. Returns the ``fstat`` of the location's own folder: its
    ``st_dev``/``st_ino`` are what :mod:`jupyter_tfenv.checkpoints.mountcheck` compares the
    container's mount with.
    """
    assert loc.base is not None and loc.host_path is not None
    base = loc.base
    try:
        os.makedirs(base, mode=0o755, exist_ok=True)
    except OSError as err:
        raise CheckpointStorageError(
            f"Cannot create the checkpoint root {base}: {err.strerror or err}."
        ) from err
    fd = _open_component(None, base, base)
    # Root for another uid: the folders above the environment's stay root's.
    keep = os.geteuid() == 0 and uid != 0
    try:
        current = base
        info = os.fstat(fd)
        parts = os.path.relpath(loc.host_path, base).split(os.sep)
        for index, part in enumerate(parts):
            current = os.path.join(current, part)
            users = index >= loc.shared_depth
            above = users and keep and index < len(parts) - 1
            mode = 0o750 if above else 0o700 if users else 0o755
            created = False
            try:
                os.mkdir(part, mode, dir_fd=fd)
                created = True
            except FileExistsError:
                pass
            except OSError as err:
                raise CheckpointStorageError(
                    f"Cannot create the checkpoint folder {current}: {err.strerror or err}."
                ) from err
            child = _open_component(fd, part, current)
            os.close(fd)
            fd = child
            info = os.fstat(fd)
            if created and stat.S_IMODE(info.st_mode) != mode:
                os.fchmod(fd, mode)  # the umask may have taken bits away
            if above:
                _take_back(fd, info, current, uid, gid)
                info = os.fstat(fd)
                continue
            if not users or info.st_uid == uid:
                continue
            if not created and info.st_uid != 0:
                raise _owner_problem(current, info.st_uid, uid)
            try:
                os.fchown(fd, uid, gid)
            except PermissionError as err:
                raise CheckpointStorageError(
                    f"The server runs as uid {os.getuid()} and cannot hand the checkpoint "
                    f"folder {current} to the kernel's uid {uid}. Run kernels as the server's "
                    "own user (unset c.DockerKernelProvisioner.uid), or create the folder for "
                    "that user."
                ) from err
            info = os.fstat(fd)
        return info
    finally:
        os.close(fd)


_PREPARED_VOLUMES: dict[tuple[str, str, int, int], float] = {}


def _volume_labels(loc: Location) -> dict[str, str]:
    return {
        LABEL_OWNER: loc.username,
        LABEL_STORAGE_KIND: loc.kind,
        LABEL_STORAGE_ENV: loc.environment,
    }


def ensure_volume(client: Any, loc: Location) -> Any:
    """The location's volume, created (with driver, options and labels) when missing."""
    assert loc.volume is not None
    try:
        return client.volumes.get(loc.volume)
    except NotFound:
        pass
    try:
        return client.volumes.create(
            name=loc.volume,
            driver=loc.driver or "local",
            driver_opts=loc.options or None,
            labels=_volume_labels(loc),
        )
    except APIError as err:
        raise CheckpointStorageError(
            f"Docker could not create the checkpoint volume {loc.volume} (driver "
            f"{loc.driver}): {err.explanation or err}. Check "
            "c.DockerKernelProvisioner.checkpoint_volume_driver and _options."
        ) from err


def prepare_volume(
    client: Any, loc: Location, *, uid: int, gid: int, image: str, python: str
) -> None:
    """Create the volume if needed and make its root the kernel user's.

    A fresh local volume's root is root:root 0755, which a non-root kernel cannot write.
    A short-lived container of the environment's image (root, only CAP_CHOWN, no
    network, only this volume mounted) hands a root-owned root to ``uid:gid``; a root
    owned by another non-root uid is refused: it is somebody else's.
    """
    volume = ensure_volume(client, loc)
    created = str(volume.attrs.get("CreatedAt", ""))
    key = (str(loc.volume), created, uid, gid)
    if key in _PREPARED_VOLUMES:
        return
    result = run_helper(
        client,
        image=image,
        python=python,
        volumes=[str(loc.volume)],
        call="_prepare_root",
        args={"root": "/v/0", "uid": uid, "gid": gid},
        user="0:0",
        read_only=False,
        cap_add=["CHOWN"],
        owner=loc.username,
    )
    if result.get("error") == "owner":
        raise CheckpointStorageError(
            f"The checkpoint volume {loc.volume} belongs to uid {result.get('uid')}, not to "
            f"the kernel's uid {uid}, so the kernel could not write there. Remove the volume "
            "(`docker volume rm`) if it is stale, or give its files to the kernel's user."
        )
    if result.get("error"):
        raise CheckpointStorageError(
            f"Could not prepare the checkpoint volume {loc.volume}: {result['error']}. With "
            "NFS and root_squash, create the export folder owned by the kernel's uid."
        )
    _PREPARED_VOLUMES[key] = time.time()


# -- shipped into helper containers: Python 3.6, standard library only ------------------
# These functions are also what the server runs itself for bind roots, so that both ways
# of reading a folder are the same code.


def _prepare_root(root, uid, gid):
    """Hand a root-owned volume root to the kernel user; refuse another user's.

    What is changed is one descriptor, opened without following a symlink, and checked
    again: what is checked is what is changed. (The helper has no CAP_DAC_OVERRIDE: a
    root that is already the user's is only looked at, never opened.)
    """
    info = os.lstat(root)
    if info.st_uid == uid and stat.S_ISDIR(info.st_mode):
        return {"ok": True}
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(root, flags | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        return {"error": "cannot open the volume root: " + str(err)}
    try:
        info = os.fstat(fd)
        if info.st_uid == uid:
            return {"ok": True}
        if info.st_uid != 0:
            return {"error": "owner", "uid": info.st_uid}
        try:
            os.fchmod(fd, 0o700)  # first: once it is the user's, root may no longer chmod
            os.fchown(fd, uid, gid)
        except OSError as err:
            return {"error": "cannot chown the volume root: " + str(err)}
        return {"ok": True, "changed": True}
    finally:
        os.close(fd)


def _open_dir(name, dir_fd=None):
    """A folder opened without following a symlink: ``name`` below ``dir_fd``, or, with
    no ``dir_fd``, an absolute path walked from ``/`` one component at a time (a symlink
    anywhere in it is refused: ELOOP or ENOTDIR). The caller closes it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    if dir_fd is not None:
        return os.open(name, flags, dir_fd=dir_fd)
    fd = os.open("/", flags)
    try:
        for part in name.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise OSError(errno.EINVAL, "'..' in a checkpoint root", name)
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_file(name, dir_fd):
    """A regular file below ``dir_fd`` for reading, never through a symlink (and never
    blocking on a FIFO put in its place); None when it is not a regular file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(name, flags, dir_fd=dir_fd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def _zip_complete(source):
    """A zip (.keras) is complete when its end-of-central-directory record is there.

    ``source``: a path, or a file opened for binary reading (read, not closed).
    """

    if isinstance(source, str):
        with open(source, "rb") as handle:
            return _zip_complete(handle)
    size = os.fstat(source.fileno()).st_size
    if size < 22:
        return False
    source.seek(max(0, size - 65557))
    tail = source.read()
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return False
    record = tail[pos : pos + 22]
    cd_size = int.from_bytes(record[12:16], "little")
    cd_offset = int.from_bytes(record[16:20], "little")
    if cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        return True  # zip64: the record is there, good enough
    return cd_offset + cd_size <= size - len(tail) + pos


def _h5_complete(source):
    """An HDF5 file is complete when it is at least as long as its superblock says.

    None when the superblock is of a kind this does not read. ``source``: a path, or a
    file opened for binary reading (read, not closed).
    """

    if isinstance(source, str):
        with open(source, "rb") as handle:
            return _h5_complete(handle)
    size = os.fstat(source.fileno()).st_size
    source.seek(0)
    head = source.read(128)
    if head[:8] != b"\x89HDF\r\n\x1a\n":
        return False
    version = head[8]
    if version in (0, 1):
        offsets = head[13]
        start = 24 if version == 0 else 28
        base_at, eof_at = start, start + 2 * offsets
    elif version in (2, 3):
        offsets = head[9]
        if version == 3 and head[11] & 0x01:
            return False  # still open for writing (or its writer died)
        base_at, eof_at = 12, 12 + 2 * offsets
    else:
        return None
    if offsets not in (2, 4, 8) or eof_at + offsets > len(head):
        return None
    base = int.from_bytes(head[base_at : base_at + offsets], "little")
    eof = int.from_bytes(head[eof_at : eof_at + offsets], "little")
    return base + eof <= size


def _inventory(root, max_entries=100000, max_depth=32):
    """Every entry under ``root`` (no symlink followed), state files, completeness checks.

    ``entries``: [relative path, "f" | "d" | "l" | "o", size, mtime_ns]. ``state``: the
    text of each file named ``checkpoint`` (TF's state file, up to 64 KiB). ``checks``:
    whether each .keras / .h5 / .hdf5 file looks complete (None: cannot tell).

    Read by descriptor all the way down: ``root`` is walked from ``/`` without following
    a symlink, and every folder and file below is opened relative to its parent's
    descriptor with O_NOFOLLOW, so a folder swapped for a symlink while the walk runs
    leads nowhere else (at most one descriptor per level is open).
    """
    result = {
        "exists": False,
        "entries": [],
        "state": {},
        "checks": {},
        "truncated": False,
    }  # type: dict[str, Any]
    try:
        root_fd = _open_dir(root)
    except OSError:
        return result
    result["exists"] = True

    def walk(fd, rel, depth):
        try:
            names = sorted(os.listdir(fd))
        except OSError:
            return True
        for name in names:
            if len(result["entries"]) >= max_entries:
                result["truncated"] = True
                return False
            path = rel + "/" + name if rel else name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                kind = "l"
            elif stat.S_ISDIR(st.st_mode):
                kind = "d"
            elif stat.S_ISREG(st.st_mode):
                kind = "f"
            else:
                kind = "o"
            result["entries"].append([path, kind, st.st_size, st.st_mtime_ns])
            if kind == "d":
                if depth + 1 >= max_depth:
                    result["truncated"] = True
                    continue
                try:
                    child = _open_dir(name, fd)
                except OSError:
                    continue
                try:
                    if not walk(child, path, depth + 1):
                        return False
                finally:
                    os.close(child)
            elif kind == "f":
                lower = name.lower()
                wanted = name == "checkpoint" and st.st_size <= 65536
                if not (wanted or lower.endswith((".keras", ".h5", ".hdf5"))):
                    continue
                try:
                    handle = _open_file(name, fd)
                    if handle is None:
                        continue
                    with handle:
                        if wanted:
                            text = handle.read(65537).decode("utf-8", "replace")
                            result["state"][path] = text
                        elif lower.endswith(".keras"):
                            result["checks"][path] = _zip_complete(handle)
                        else:
                            result["checks"][path] = _h5_complete(handle)
                except OSError:
                    if not wanted:
                        result["checks"][path] = None
        return True

    try:
        walk(root_fd, "", 0)
    finally:
        os.close(root_fd)
    return result


def _remove_tree(parent_fd, name, depth=0):
    """Remove the folder ``name`` below ``parent_fd`` and everything in it, by descriptor.

    Each folder is opened with O_NOFOLLOW relative to its parent and emptied through
    that descriptor (``unlink``/``rmdir`` with ``dir_fd``), so a folder swapped for a
    symlink meanwhile is either refused (the open fails) or left as it is: nothing
    outside the tree is ever removed. (``shutil.rmtree`` has no ``dir_fd`` before 3.11.)
    """
    if depth > 256:
        raise OSError(errno.ELOOP, "folders nested too deep", name)
    fd = _open_dir(name, parent_fd)
    try:
        for entry in os.listdir(fd):
            st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                _remove_tree(fd, entry, depth + 1)
            else:
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)  # a symlink put in its place: ENOTDIR, left alone


def _delete(root, paths):
    """Remove ``paths`` (relative, files or folders) under ``root``; never through a link.

    By descriptor all the way down: ``root`` is walked from ``/`` without following a
    symlink, each parent is opened component by component with O_NOFOLLOW from it, and
    files and folders are removed relative to their parent's descriptor
    (:func:`_remove_tree`), so a folder swapped for a symlink after the listing, or
    while the removal runs, cannot redirect it.
    """
    removed, failed = [], []  # type: list[str], list[list[str]]
    root_fd = _open_dir(root)
    try:
        for rel in sorted(paths, key=lambda p: -p.count("/")):
            parts = rel.split("/")
            if not rel or any(p in ("", ".", "..") for p in parts) or "\0" in rel:
                failed.append([rel, "refused"])
                continue
            fds = [root_fd]
            try:
                for part in parts[:-1]:
                    fds.append(_open_dir(part, fds[-1]))
                parent = fds[-1]
                try:
                    info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
                except FileNotFoundError:
                    removed.append(rel)  # already gone: nothing left to remove
                    continue
                if stat.S_ISDIR(info.st_mode):
                    _remove_tree(parent, parts[-1])
                else:
                    os.unlink(parts[-1], dir_fd=parent)
                removed.append(rel)
            except OSError as err:
                code = errno.errorcode.get(err.errno or 0, "error")
                failed.append([rel, code])
            finally:
                for fd in fds[1:]:
                    os.close(fd)
        # Folders that the removal left empty go too (never the root itself).
        parents = sorted(
            {"/".join(p.split("/")[:i]) for p in removed for i in range(1, p.count("/") + 1)},
            key=lambda p: -p.count("/"),
        )
        for rel in parents:
            parts = rel.split("/")
            fds = [root_fd]
            try:
                for part in parts[:-1]:
                    fds.append(_open_dir(part, fds[-1]))
                os.rmdir(parts[-1], dir_fd=fds[-1])
            except OSError:
                pass
            finally:
                for fd in fds[1:]:
                    os.close(fd)
    finally:
        os.close(root_fd)
    return {"removed": removed, "failed": failed}


_SHIPPED = (
    _open_dir,
    _open_file,
    _prepare_root,
    _zip_complete,
    _h5_complete,
    _inventory,
    _remove_tree,
    _delete,
)


def _helper_script() -> str:
    # Read once, when the module is imported (below): the source file may be replaced
    # while the server runs (an upgrade), and then it would no longer match the code.
    functions = "\n\n".join(inspect.getsource(f) for f in _SHIPPED)
    names = ", ".join(f.__name__ for f in _SHIPPED)
    return (
        "import contextlib, errno, json, os, shutil, stat, sys\n\n"
        + functions
        + "\n\nargs = json.loads(sys.argv[1])\n"
        + "call = {f.__name__: f for f in ("
        + names
        + ")}[args.pop('call')]\n"
        + "if 'roots' in args:\n"
        + "    roots = args.pop('roots')\n"
        + "    out = [call(r, **args) for r in roots]\n"
        + "else:\n"
        + "    out = call(**args)\n"
        + "sys.stdout.write('TFENV-HELPER ' + json.dumps(out) + '\\n')\n"
    )


_HELPER_SCRIPT = _helper_script()


def run_helper(
    client: Any,
    *,
    image: str,
    python: str,
    volumes: list[str],
    call: str,
    args: dict[str, Any],
    user: str,
    read_only: bool,
    owner: str,
    cap_add: list[str] | None = None,
    timeout: float = HELPER_TIMEOUT,
) -> Any:
    """Run one shipped function in a throwaway container with ``volumes`` at /v/<i>.

    No network, all capabilities dropped (but ``cap_add``), no privilege escalation, a
    read-only root filesystem, small limits, labelled, always removed.
    """
    mounts = [
        Mount(f"/v/{i}", name, type="volume", read_only=read_only) for i, name in enumerate(volumes)
    ]
    spec: dict[str, Any] = {
        "image": image,
        "entrypoint": [python],
        "command": ["-c", _HELPER_SCRIPT, json.dumps({"call": call, **args})],
        "user": user,
        "working_dir": "/",
        "environment": {"PYTHONDONTWRITEBYTECODE": "1"},
        "labels": {
            LABEL_HELPER: call.strip("_"),
            LABEL_OWNER: owner,
            **server_labels(),
        },
        "mounts": mounts,
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "cap_add": cap_add or None,
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "mem_limit": HELPER_MEMORY,
        "pids_limit": HELPER_PIDS,
        "detach": True,
    }
    try:
        container = client.containers.create(**spec)
    except ImageNotFound as err:
        raise CheckpointStorageError(
            f"The image {image} for reading checkpoint volumes is not on this Docker engine; "
            "pull it, or set c.DockerKernelProvisioner.checkpoint_helper_image."
        ) from err
    except APIError as err:
        raise CheckpointStorageError(
            f"Docker refused the checkpoint helper container: {err.explanation or err}."
        ) from err
    try:
        container.start()
        try:
            status = container.wait(timeout=timeout)
        except requests.exceptions.RequestException as err:
            raise CheckpointStorageError(
                f"Reading the checkpoint volume took longer than {timeout:g} s."
            ) from err
        out = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
        for line in reversed(out.splitlines()):
            if line.startswith("TFENV-HELPER "):
                return json.loads(line[len("TFENV-HELPER ") :])
        raise CheckpointStorageError(
            f"The checkpoint helper ({image}, '{python}') exited with code "
            f"{status.get('StatusCode')} and no result: {tail_logs(container, 10).strip()}"
        )
    except (APIError, DockerException) as err:
        raise CheckpointStorageError(
            f"The checkpoint helper container failed: {getattr(err, 'explanation', err)}."
        ) from err
    finally:
        with contextlib.suppress(APIError, DockerException):
            remove_quietly(container)


# -- classifying a folder -----------------------------------------------------------------


@dataclass
class _File:
    path: str
    kind: str
    size: int
    mtime_ns: int


def parse_state(text: str) -> dict[str, Any] | None:
    """TF's ``checkpoint`` state file (a text proto) → latest and all kept prefixes."""
    latest: str | None = None
    kept: list[str] = []
    for line in text.splitlines():
        match = _STATE_LINE_RE.match(line)
        if not match:
            continue
        key, raw = match.groups()
        value = re.sub(r"\\(.)", r"\1", raw)
        if key == "model_checkpoint_path":
            latest = value
        elif key == "all_model_checkpoint_paths":
            kept.append(value)
    if latest is None:
        return None
    if latest not in kept:
        kept.append(latest)
    return {"latest": latest, "kept": kept}


def _prefix_rel(state_dir: str, prefix: str, host_root: str | None) -> str:
    """A prefix from a state file → path relative to the walked root.

    Relative prefixes are relative to the state file's folder (what CheckpointManager
    writes). Absolute ones were written inside a container (``/tfenv/checkpoints/…``) or
    through the notebook mount (the host path): both are mapped back; anything else is
    taken by its file name in the state file's folder, as TF does when a folder moved.
    """
    if not prefix.startswith("/"):
        joined = os.path.normpath(os.path.join(state_dir, prefix)) if state_dir else prefix
        return os.path.normpath(joined)
    for mount in (CONTAINER_CHECKPOINT_DIR, CONTAINER_LOG_DIR, host_root):
        if mount and is_inside(os.path.normpath(prefix), mount) and prefix != mount:
            return os.path.relpath(os.path.normpath(prefix), mount)
    base = prefix.rsplit("/", 1)[-1]
    return f"{state_dir}/{base}" if state_dir else base


def _etag(files: list[_File]) -> str:
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f.path):
        digest.update(f"{item.path}\0{item.kind}\0{item.size}\0{item.mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def _summarize(files: list[_File]) -> tuple[int, int | None]:
    size = sum(f.size for f in files if f.kind == "f")
    mtime = max((f.mtime_ns for f in files), default=None)
    return size, mtime


def _under(path: str, folder: str) -> bool:
    """Whether relative ``path`` is ``folder`` or below it ("" is the walked root)."""
    return not folder or path == folder or path.startswith(folder + "/")


def _dirname(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _series(prefix: str) -> str:
    """``run/ckpt-12`` → ``ckpt``: the name a CheckpointManager numbers its saves under."""
    return re.sub(r"-\d+$", "", _basename(prefix))


def _partial(path: str, files: list[_File]) -> dict[str, Any]:
    size, mtime = _summarize(files)
    return {"prefix": path, "complete": False, "partial": True, "size": size, "mtime": _iso(mtime)}


def classify(inv: dict[str, Any], *, host_root: str | None = None) -> list[dict[str, Any]]:
    """Group an :func:`_inventory` into checkpoints (each a dict the API returns).

    Kinds: ``tf_checkpoint_set`` (a folder with TF's ``checkpoint`` state file: latest
    and every kept checkpoint, step, size, time), ``tf_checkpoint`` (``.index`` +
    ``.data-*`` not named by a state file), ``saved_model``, ``keras``, ``keras_weights``
    (``.weights.h5``), ``keras_h5`` (other ``.h5``), and ``partial`` (temporary files of an
    interrupted save). ``complete`` is False for a save that did not finish.

    An item's ``name`` is the path of the file that defines it (the state file, the
    ``.index``, ``saved_model.pb``, the Keras file, the temporary folder); ``path`` is what
    to show. ``etag`` changes whenever any of its files does. Symlinks are never part of
    an item.
    """
    entries = {e[0]: _File(e[0], e[1], int(e[2]), int(e[3])) for e in inv.get("entries", [])}
    checks: dict[str, bool | None] = inv.get("checks", {})
    claimed_files: set[str] = set()
    claimed_dirs: list[str] = []
    items: list[dict[str, Any]] = []

    def below(folder: str) -> list[_File]:
        return [f for p, f in entries.items() if p != folder and _under(p, folder)]

    def free(path: str) -> bool:
        return path not in claimed_files and not any(_under(path, d) for d in claimed_dirs)

    def claim(files: list[_File], dirs: tuple[str, ...] = ()) -> None:
        claimed_files.update(f.path for f in files)
        claimed_dirs.extend(dirs)

    # Temporary folders of interrupted TF saves (``ckpt-3_temp/part-…``).
    temp_dirs = sorted(p for p, f in entries.items() if f.kind == "d" and p.endswith("_temp"))

    def in_temp(path: str) -> bool:
        return any(path != t and _under(path, t) for t in temp_dirs)

    # SavedModel folders own everything below them (their variables/ is a TF checkpoint).
    for path, entry in sorted(entries.items(), key=lambda kv: kv[0].count("/")):
        if entry.kind != "f" or _basename(path) not in ("saved_model.pb", "saved_model.pbtxt"):
            continue
        if not free(path):
            continue
        folder = _dirname(path)
        files = below(folder)
        has_data = any(_DATA_SHARD_RE.match(_basename(f.path)) for f in files)
        index = f"{folder}/variables/variables.index" if folder else "variables/variables.index"
        size, mtime = _summarize(files)
        items.append(
            {
                "name": path,
                "kind": "saved_model",
                "path": folder,
                "complete": not has_data or index in entries,
                "size": size,
                "mtime": _iso(mtime),
                "step": _step_of(_basename(folder)) if folder else None,
                "_files": files,
                "_remove": [folder] if folder else [f.path for f in files if "/" not in f.path],
            }
        )
        claim(files, (folder,))

    # TF files grouped by prefix.
    prefixes: dict[str, dict[str, Any]] = {}
    for path, entry in entries.items():
        if entry.kind != "f" or not free(path) or in_temp(path):
            continue
        if path.endswith(".index"):
            prefixes.setdefault(path[: -len(".index")], {"index": None, "shards": {}})
            prefixes[path[: -len(".index")]]["index"] = entry
            continue
        match = _DATA_SHARD_RE.match(path)
        if match:
            group = prefixes.setdefault(match["prefix"], {"index": None, "shards": {}})
            group["shards"][int(match["shard"])] = entry
            group["total"] = int(match["total"])

    def prefix_info(prefix: str) -> dict[str, Any]:
        group = prefixes.get(prefix, {"index": None, "shards": {}})
        files = ([group["index"]] if group["index"] else []) + list(group["shards"].values())
        total = group.get("total")
        # Complete: the index and every data shard it was written with. An index without
        # data, or data without an index, is a save that did not finish.
        complete = bool(group["index"]) and total is not None and len(group["shards"]) == total
        size, mtime = _summarize(files)
        return {
            "prefix": prefix,
            "step": _step_of(_basename(prefix)),
            "complete": complete,
            "size": size,
            "mtime": _iso(mtime),
            "shards": {"present": len(group["shards"]), "expected": total},
            "_files": files,
        }

    # Checkpoint sets: one per state file.
    for state_path, text in sorted(inv.get("state", {}).items()):
        state_file = entries.get(state_path)
        if (
            state_file is None
            or state_file.kind != "f"
            or not free(state_path)
            or in_temp(state_path)
        ):
            continue
        state = parse_state(text)
        if state is None:
            continue
        folder = _dirname(state_path)
        kept = list(dict.fromkeys(_prefix_rel(folder, p, host_root) for p in state["kept"]))
        latest = _prefix_rel(folder, state["latest"], host_root)
        infos = sorted(
            (prefix_info(p) for p in kept),
            key=lambda i: (i["step"] is None, i["step"] or 0, i["prefix"]),
        )
        series = {_series(p) for p in kept}
        files = [state_file]
        remove = [state_path]
        for info in infos:
            files += info["_files"]
            remove += [f.path for f in info["_files"]]
        # Leftovers of this set's interrupted saves: prefixes of the same series that the
        # state file does not list, their temporary folders, a half-written state file.
        leftovers = []
        for prefix in sorted(prefixes):
            if prefix not in kept and _dirname(prefix) == folder and _series(prefix) in series:
                info = prefix_info(prefix)
                if all(free(f.path) for f in info["_files"]):
                    leftovers.append(info)
                    files += info["_files"]
                    remove += [f.path for f in info["_files"]]
        for temp in temp_dirs:
            if _dirname(temp) == folder and _series(temp[: -len("_temp")]) in series:
                temp_files = [entries[temp], *below(temp)]
                leftovers.append(_partial(temp, temp_files))
                files += temp_files
                remove.append(temp)
        for path, other in sorted(entries.items()):
            if (
                other.kind == "f"
                and _dirname(path) == folder
                and _basename(path).startswith("checkpoint.tmp")
            ):
                leftovers.append(_partial(path, [other]))
                files.append(other)
                remove.append(path)
        latest_info = next((i for i in infos if i["prefix"] == latest), None)
        size, mtime = _summarize(files)
        items.append(
            {
                "name": state_path,
                "kind": "tf_checkpoint_set",
                "path": folder,
                "complete": bool(latest_info and latest_info["complete"]),
                "size": size,
                "mtime": _iso(mtime),
                "step": latest_info["step"] if latest_info else None,
                "latest": _public(latest_info) if latest_info else None,
                "checkpoints": [_public(i) for i in infos],
                "leftovers": [_public(i) for i in leftovers],
                "_files": files,
                "_remove": remove,
            }
        )
        claim(files, tuple(t for t in temp_dirs if t in remove))

    # TF checkpoints no state file names (Checkpoint.write, or a set's state file is gone).
    for prefix in sorted(prefixes):
        info = prefix_info(prefix)
        if not info["_files"] or not all(free(f.path) for f in info["_files"]):
            continue
        name = f"{prefix}.index" if prefixes[prefix]["index"] else info["_files"][0].path
        files = list(info["_files"])
        remove = [f.path for f in files]
        temp = f"{prefix}_temp"
        if temp in entries and free(temp):
            files += [entries[temp], *below(temp)]
            remove.append(temp)
        size, mtime = _summarize(files)
        items.append(
            {
                "name": name,
                "kind": "tf_checkpoint",
                **_public(info),
                "path": prefix,
                "size": size,
                "mtime": _iso(mtime),
                "_files": files,
                "_remove": remove,
            }
        )
        claim(files, (temp,) if temp in remove else ())

    # Keras files.
    for path, entry in sorted(entries.items()):
        if entry.kind != "f" or not free(path) or in_temp(path):
            continue
        lower = path.lower()
        if lower.endswith(".keras"):
            kind, stem = "keras", _basename(path)[: -len(".keras")]
        elif lower.endswith(".weights.h5"):
            kind, stem = "keras_weights", _basename(path)[: -len(".weights.h5")]
        elif lower.endswith((".h5", ".hdf5")):
            kind, stem = "keras_h5", _basename(path).rsplit(".", 1)[0]
        else:
            continue
        items.append(
            {
                "name": path,
                "kind": kind,
                "path": path,
                "complete": checks.get(path),
                "size": entry.size,
                "mtime": _iso(entry.mtime_ns),
                "step": _step_of(stem),
                "_files": [entry],
                "_remove": [path],
            }
        )
        claim([entry])

    # Whatever an interrupted save left that nothing above claimed.
    for path, entry in sorted(entries.items()):
        if not free(path) or in_temp(path):
            continue
        if (entry.kind == "d" and path in temp_dirs) or (
            entry.kind == "f" and _TEMP_FILE_RE.search(_basename(path))
        ):
            files = [entry, *below(path)] if entry.kind == "d" else [entry]
            size, mtime = _summarize(files)
            items.append(
                {
                    "name": path,
                    "kind": "partial",
                    "path": path,
                    "complete": False,
                    "size": size,
                    "mtime": _iso(mtime),
                    "step": None,
                    "_files": files,
                    "_remove": [path],
                }
            )
            claim(files, (path,) if entry.kind == "d" else ())

    for item in items:
        item["etag"] = _etag(item["_files"])
        item["files"] = len([f for f in item["_files"] if f.kind == "f"])
    items.sort(key=lambda i: i["name"])
    return items


def _public(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in info.items() if not k.startswith("_")}


def public_item(item: dict[str, Any], *, detail: bool = False) -> dict[str, Any]:
    """An item as the API shows it (with its file list when ``detail``)."""
    data = _public(item)
    if detail:
        data["file_list"] = [
            {"path": f.path, "size": f.size if f.kind == "f" else None, "mtime": _iso(f.mtime_ns)}
            for f in sorted(item["_files"], key=lambda f: f.path)
        ]
    return data


def check_item_name(name: str) -> None:
    """Refuse names that could only point outside (with the one not-found answer)."""
    if (
        not name
        or "\0" in name
        or name.startswith("/")
        or any(p in ("", ".", "..") for p in name.split("/"))
    ):
        raise CheckpointNotFound()


def check_environment_name(name: str) -> None:
    if not name or "\0" in name or "/" in name or len(name) > 200:
        raise CheckpointNotFound()


# -- reading a bind location (blocking) ---------------------------------------------------


def bind_folder(loc: Location) -> str | None:
    """The location's folder when it exists as a real folder inside the user's storage.

    None when it is missing, or reached through a symlink anywhere below the root (or is
    one): such a folder could be anywhere, so it is treated as absent.
    """
    assert loc.host_path is not None and loc.user_dir is not None
    path = loc.host_path
    real = os.path.realpath(path)
    if real != os.path.normpath(path) or not is_inside(real, loc.user_dir):
        return None
    return real if os.path.isdir(real) else None


def scan_bind(loc: Location) -> dict[str, Any]:
    folder = bind_folder(loc)
    if folder is None:
        return {"exists": False, "entries": [], "state": {}, "checks": {}, "truncated": False}
    return dict(_inventory(folder))


def discover_bind(config: StorageConfig, username: str) -> list[str]:
    """Environments with a checkpoint folder of this user (real folders, canonical names)."""
    loc = locate(config, "checkpoints", username, "x")
    assert loc.user_dir is not None and loc.base is not None
    user_dir = loc.user_dir
    real = os.path.realpath(user_dir)
    if real != os.path.normpath(user_dir) or not os.path.isdir(real):
        return []
    found = []
    try:
        with os.scandir(real) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    name = unescape_path_component(entry.name)
                    if name is not None:
                        found.append(name)
    except OSError:
        return []
    return sorted(found)


def discover_volumes(client: Any, config: StorageConfig, username: str) -> list[str]:
    """Environments with a checkpoint volume of this user: volumes labelled with the user
    and kind whose name is what the template gives for their environment label."""
    volumes = client.volumes.list(
        filters={"label": [f"{LABEL_OWNER}={username}", f"{LABEL_STORAGE_KIND}=checkpoints"]},
    )
    names = []
    for volume in volumes:
        env = (volume.attrs.get("Labels") or {}).get(LABEL_STORAGE_ENV)
        # Only a volume whose name is what the template gives for that label counts.
        if env and locate(config, "checkpoints", username, env).volume == volume.name:
            names.append(env)
    return sorted(names)


# -- the browser the REST API uses ----------------------------------------------------------


class RemoteCheckpoints(Protocol):
    """Checkpoints kept where this server cannot read them (the broker's Kubernetes
    claims): listed and deleted by the broker."""

    async def inventories(self, envs: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """``{env: ("namespace/claim", inventory)}``, as :func:`_inventory` makes them."""
        ...

    async def delete(self, env: str, paths: list[str]) -> dict[str, Any]:
        """``{"removed": [...], "failed": [[path, why], ...]}`` as :func:`_delete`."""
        ...


class CheckpointBrowser:
    """List and delete one user's checkpoints; the user is fixed when it is built.

    ``owner`` is the kernel owner of this server (the same name its kernels' folders are
    made for), never anything a request says. ``helper_images`` returns, per environment
    id, ``(image, python)`` of a local image that can run the volume helper.
    """

    def __init__(
        self,
        config: StorageConfig,
        *,
        owner: str,
        uid: int,
        gid: int,
        catalog_ids: Callable[[], list[str]],
        helper_images: Callable[[], Awaitable[dict[str, tuple[str, str]]]],
        docker: Callable[[], Awaitable[Any]],
        remote: Callable[[], Awaitable[RemoteCheckpoints | None]] | None = None,
    ) -> None:
        self.config = config
        self._remote = remote
        self.owner = owner
        self.uid = uid
        self.gid = gid
        self._catalog_ids = catalog_ids
        self._helper_images = helper_images
        self._docker = docker
        self._reads: dict[tuple[str, ...], asyncio.Future[list[dict[str, Any]]]] = {}

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off"

    def summary(self) -> dict[str, Any]:
        return {"user": self.owner, **self.config.summary()}

    # -- which environments ------------------------------------------------------------

    async def environment_names(self) -> list[str]:
        names = set(self._catalog_ids())
        if await self.remote() is not None:
            return sorted(names)  # the broker's claims: one per catalog environment
        if self.config.mode == "bind":
            names.update(await asyncio.to_thread(discover_bind, self.config, self.owner))
        elif self.config.mode == "volume":
            names.update(await self._discover_volumes())
        return sorted(names)

    async def _discover_volumes(self) -> list[str]:
        client = await self._docker()
        return await asyncio.to_thread(discover_volumes, client, self.config, self.owner)

    # -- reading -----------------------------------------------------------------------

    async def remote(self) -> RemoteCheckpoints | None:
        return await self._remote() if self._remote is not None else None

    async def _scan(self, envs: list[str]) -> dict[str, tuple[Location, dict[str, Any]]]:
        remote = await self.remote()
        if remote is not None:
            got = await remote.inventories(envs)
            empty: dict[str, Any] = {"exists": False, "entries": [], "state": {}, "checks": {}}
            return {
                env: (
                    self._claim_location(env, got[env][0] if env in got else "", "checkpoints"),
                    got[env][1] if env in got else empty,
                )
                for env in envs
            }
        locs = {env: locate(self.config, "checkpoints", self.owner, env) for env in envs}
        if self.config.mode == "bind":
            results = await asyncio.gather(
                *(asyncio.to_thread(scan_bind, loc) for loc in locs.values())
            )
            return {env: (locs[env], inv) for env, inv in zip(locs, results, strict=True)}
        return await self._scan_volumes(locs)

    async def _scan_volumes(
        self, locs: dict[str, Location]
    ) -> dict[str, tuple[Location, dict[str, Any]]]:
        client = await self._docker()
        existing = {
            v.name for v in await asyncio.to_thread(client.volumes.list) if v.name is not None
        }
        out: dict[str, tuple[Location, dict[str, Any]]] = {}
        present = {}
        for env, loc in locs.items():
            if loc.volume in existing:
                present[env] = loc
            else:
                out[env] = (loc, {"exists": False, "entries": [], "state": {}, "checks": {}})
        if present:
            names = tuple(str(loc.volume) for loc in present.values())
            # Each read costs a container start: requests for the same volumes that come
            # in while one runs share its result; nothing is kept once it is done.
            running = self._reads.get(names)
            if running is None:
                running = asyncio.ensure_future(self._read_volumes(client, names, list(present)))
                self._reads[names] = running
                running.add_done_callback(lambda _: self._reads.pop(names, None))
            results = await asyncio.shield(running)
            for (env, loc), inv in zip(present.items(), results, strict=True):
                out[env] = (loc, inv)
        return out

    async def _read_volumes(
        self, client: Any, names: tuple[str, ...], envs: list[str]
    ) -> list[dict[str, Any]]:
        image, python = await self._helper_for(envs)
        return list(
            await asyncio.to_thread(
                run_helper,
                client,
                image=image,
                python=python,
                volumes=list(names),
                call="_inventory",
                args={"roots": [f"/v/{i}" for i in range(len(names))]},
                user=f"{self.uid}:{self.gid}",
                read_only=True,
                owner=self.owner,
            )
        )

    async def _helper_for(self, envs: list[str]) -> tuple[str, str]:
        if self.config.helper_image:
            return self.config.helper_image, "python3"
        images = await self._helper_images()
        for env in envs:
            if env in images:
                return images[env]
        if images:
            return next(iter(images.values()))
        raise CheckpointStorageError(
            "Reading checkpoint volumes needs a local image with Python: pull an "
            "environment's image, or set c.DockerKernelProvisioner.checkpoint_helper_image."
        )

    def _claim_location(self, env: str, claim: str, kind: str) -> Location:
        path = CONTAINER_CHECKPOINT_DIR if kind == "checkpoints" else CONTAINER_LOG_DIR
        return Location(kind, self.owner, env, path, claim=claim)

    def _environment_view(
        self, env: str, loc: Location, inv: dict[str, Any], in_catalog: bool
    ) -> dict[str, Any]:
        host_root = loc.host_path
        items = classify(inv, host_root=host_root) if inv.get("exists") else []
        if loc.claim is not None:
            logs = self._claim_location(env, loc.claim, "logs").describe()
        else:
            logs = locate(self.config, "logs", self.owner, env).describe()
        return {
            "environment": env,
            "in_catalog": in_catalog,
            "exists": bool(inv.get("exists")),
            "location": loc.describe(),
            "container_path": loc.container_path,
            "log_location": logs,
            "log_container_path": CONTAINER_LOG_DIR,
            "truncated": bool(inv.get("truncated")),
            "checkpoints": items,
        }

    async def overview(self) -> dict[str, Any]:
        """Every environment of the user: the catalog's, and any with a folder or volume."""
        if not self.enabled:
            return {"storage": self.summary(), "environments": []}
        envs = await self.environment_names()
        catalog = set(self._catalog_ids())
        scanned = await self._scan(envs)
        views = []
        for env in envs:
            loc, inv = scanned[env]
            view = self._environment_view(env, loc, inv, env in catalog)
            view["checkpoints"] = [public_item(i) for i in view["checkpoints"]]
            views.append(view)
        storage = self.summary()
        if await self.remote() is not None:
            storage = {
                "user": self.owner,
                "mode": "kubernetes",
                "container_paths": storage["container_paths"],
                "variables": storage["variables"],
            }
        return {"storage": storage, "environments": views}

    async def _environment(self, env: str) -> dict[str, Any]:
        if not self.enabled:
            raise CheckpointNotFound()
        check_environment_name(env)
        try:
            locate(self.config, "checkpoints", self.owner, env)
        except CheckpointStorageError:
            raise CheckpointNotFound() from None
        in_catalog = env in self._catalog_ids()
        scanned = await self._scan([env])
        loc, inv = scanned[env]
        if not in_catalog and not inv.get("exists"):
            raise CheckpointNotFound()
        return self._environment_view(env, loc, inv, in_catalog)

    async def environment(self, env: str) -> dict[str, Any]:
        view = await self._environment(env)
        view["checkpoints"] = [public_item(i) for i in view["checkpoints"]]
        return view

    async def _item(self, env: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        check_item_name(name)
        view = await self._environment(env)
        for item in view["checkpoints"]:
            if item["name"] == name:
                return view, item
        raise CheckpointNotFound()

    async def item(self, env: str, name: str) -> dict[str, Any]:
        _, item = await self._item(env, name)
        return public_item(item, detail=True)

    async def delete(self, env: str, name: str, if_match: str | None) -> dict[str, Any]:
        """Delete one checkpoint (a whole set, with its leftovers), confirmed by its ETag.

        ``if_match`` is the ``If-Match`` header: the item's ETag as listed. None → 428,
        another value → 412 (it changed since the user looked at it).
        """
        view, item = await self._item(env, name)
        tags = [t.strip().strip('"').removeprefix('W/"') for t in (if_match or "").split(",")]
        tags = [t for t in tags if t]
        if not tags:
            raise CheckpointPreconditionRequired(
                "Deleting a checkpoint needs its ETag from the listing in an If-Match header: "
                "that is the confirmation that this, as listed, is what to delete."
            )
        if item["etag"] not in tags:
            raise CheckpointChanged(
                f"The checkpoint '{name}' changed since it was listed (a save may be running); "
                "list it again and confirm the new state."
            )
        loc = locate(self.config, "checkpoints", self.owner, env)
        remove = list(item["_remove"])
        remote = await self.remote()
        if remote is not None:
            result = await remote.delete(env, remove)
        elif loc.is_volume:
            client = await self._docker()
            image, python = await self._helper_for([env])
            result = await asyncio.to_thread(
                run_helper,
                client,
                image=image,
                python=python,
                volumes=[str(loc.volume)],
                call="_delete",
                args={"root": "/v/0", "paths": remove},
                user=f"{self.uid}:{self.gid}",
                read_only=False,
                owner=self.owner,
            )
        else:
            folder = await asyncio.to_thread(bind_folder, loc)
            if folder is None:
                raise CheckpointNotFound()
            result = await asyncio.to_thread(_delete, folder, remove)
        if result["failed"]:
            raise CheckpointStorageError(
                f"Could not delete every file of '{name}': "
                + ", ".join(f"{p} ({why})" for p, why in result["failed"][:5])
            )
        return {
            "environment": view["environment"],
            "deleted": public_item(item),
            "removed": sorted(result["removed"]),
        }
