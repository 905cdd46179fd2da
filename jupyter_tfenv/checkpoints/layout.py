"""Where a kernel's checkpoints and logs live: the storage configuration and its layout.

Every tfenv kernel gets two folders outside its container, one per user and environment:
checkpoints, mounted at :data:`CONTAINER_CHECKPOINT_DIR` (``/tfenv/checkpoints``) and
announced in ``$TFENV_CHECKPOINT_DIR``, and TensorBoard logs, mounted at
:data:`CONTAINER_LOG_DIR` (``/tfenv/logs``) and announced in ``$TFENV_LOG_DIR``. They are
either folders under a host root, bind-mounted (``checkpoint_storage = "bind"``, the
default: ``~/tfenv/checkpoints/<user>/<environment>`` and ``~/tfenv/logs/…``), or one named
Docker volume per user, environment and kind (``"volume"``, which also covers NFS and other
drivers through driver options). :class:`StorageConfig` says which; :func:`locate` turns a
user, an environment and a kind into a :class:`Location`.

Names are escaped so that no two users or environments ever share a folder: path
components keep ``[A-Za-z0-9._-]`` and percent-escape everything else (``a/b`` →
``a%2Fb``, ``a_b`` stays; a leading ``.`` is ``%2E`` so no name is ``.`` or ``..``);
volume names keep ``[A-Za-z0-9]`` and write every other byte as ``_xx``.

A refused path and a missing one look the same: both are a :class:`CheckpointNotFound`
with one fixed message (:data:`NOT_FOUND_MESSAGE`).
"""

from __future__ import annotations

import os
import re
import string
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from docker.types import Mount

from jupyter_tfenv.core.paths import (
    CHECKPOINT_DIR_VAR,
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_LOG_DIR,
    LOG_DIR_VAR,
)
from jupyter_tfenv.errors import NotFoundError, TFEnvError

KINDS = ("checkpoints", "logs")
STORAGE_MODES = ("bind", "volume", "off")
USER_PLACEHOLDER = "{username}"
ENV_PLACEHOLDER = "{environment}"


#: The one message of every refused or missing checkpoint path: it must not tell a
#: folder that exists outside the user's storage from one that does not.
NOT_FOUND_MESSAGE = "No such checkpoint or environment in your checkpoint storage."

_VOLUME_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PATH_SAFE = frozenset(string.ascii_letters + string.digits + "._-")
_VOLUME_SAFE = frozenset(string.ascii_letters + string.digits)


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


# -- configuration ----------------------------------------------------------------------


@dataclass(frozen=True)
class StorageConfig:
    """The storage traits of the provisioner
    (:class:`~jupyter_tfenv.provisioning.provisioner.TFEnvKernelProvisioner`) and the broker."""

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


# -- names a request gives -------------------------------------------------------------


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
