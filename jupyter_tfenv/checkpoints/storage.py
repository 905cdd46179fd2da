"""Preparing a kernel's checkpoint and log storage before it starts (blocking).

Either way (bind folder or named volume) the folder belongs to the kernel's uid:gid
before the kernel starts: a root-owned mount point is the classic failure here. Bind
folders are created and handed over one component at a time through descriptors opened
without following a symlink (:func:`prepare_bind`); a volume's root is handed over by
the helper container (:func:`prepare_volume`, :mod:`jupyter_tfenv.checkpoints.helper`).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from docker.errors import APIError, NotFound
from docker.types import Mount

from jupyter_tfenv.checkpoints.browser import discover_bind, discover_volumes
from jupyter_tfenv.checkpoints.helper import run_helper
from jupyter_tfenv.checkpoints.layout import (
    CheckpointStorageError,
    Location,
    StorageConfig,
    escape_path_component,
    kernel_environment,
    kernel_locations,
    locate,
)
from jupyter_tfenv.checkpoints.mountcheck import CheckedFolder, stat_nofollow
from jupyter_tfenv.core.labels import (
    LABEL_OWNER,
    LABEL_STORAGE_ENV,
    LABEL_STORAGE_KIND,
)
from jupyter_tfenv.core.paths import (
    CONTAINER_OTHERS_DIR,
    OTHERS_DIR_VAR,
)

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
