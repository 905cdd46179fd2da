"""A TensorBoard's container: its name, its log mounts, its hardened spec, and finding it.

The pure parts (:func:`tensorboard_name`, :func:`newest_environment`, :func:`log_mounts`,
:func:`container_spec`) say every hardening default in one place and are unit-tested; the
functions that call the docker SDK are blocking and run in a thread by their callers.

A TensorBoard runs in a container of an environment's own image (TensorBoard comes with
every TensorFlow pip install, so the version that reads the logs is the one that wrote
them), hardened like a kernel: the user's uid, no capabilities, no privilege escalation,
``network_mode: none``, the log folder(s) mounted read-only and nothing else of the host
but its runtime folder (the bridge's Unix socket) and the bridge itself (read-only).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docker.types import Mount

from jupyter_tfenv.backends.docker.engine import list_containers, safe_name, server_alive
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints.browser import bind_folder
from jupyter_tfenv.checkpoints.layout import (
    Location,
    StorageConfig,
    escape_path_component,
    locate,
    unescape_path_component,
)
from jupyter_tfenv.core.containers import hardening, remove_quietly, server_labels
from jupyter_tfenv.core.labels import (
    LABEL_ENVIRONMENT,
    LABEL_IMAGE_ID,
    LABEL_IMAGE_REF,
    LABEL_OWNER,
    LABEL_RUNTIME_DIR,
    LABEL_SERVER_PID,
    LABEL_STORAGE_ENV,
    LABEL_STORAGE_KIND,
    LABEL_TENSORBOARD,
)
from jupyter_tfenv.core.paths import CONTAINER_LOG_DIR, CONTAINER_TENSORBOARD_BRIDGE

BRIDGE_PATH = Path(__file__).with_name("bridge.py")
#: TensorBoard's port on the container's own loopback (nothing is published).
TENSORBOARD_PORT = 6006
#: The bridge's socket in the TensorBoard's runtime folder.
SOCKET_NAME = "tb.sock"
#: The two views: one environment's logs, or all of the user's log folders.
VIEWS = ("environment", "compare")
COMPARE = "compare"
_NAME_RE = re.compile(r"^(compare|env-[a-z0-9][a-z0-9._-]{0,62})$")


def tensorboard_name(view: str, environment: str | None) -> str:
    """``env-<id>`` for an environment's view, ``compare`` for the comparison: one
    TensorBoard per (user, view), so the name is the key a server reuses it by."""
    if view == COMPARE:
        return COMPARE
    if not environment:
        raise ValueError("an environment view needs the environment")
    return f"env-{environment}"


def valid_name(name: str) -> bool:
    """Whether ``name`` is one :func:`tensorboard_name` can give (catalog ids are
    ``[a-z0-9][a-z0-9._-]{0,62}``): anything else in a URL is a plain 404."""
    return bool(_NAME_RE.match(name))


def _version_key(env: Environment) -> tuple[int, ...]:
    parts = []
    for piece in (env.tensorflow or "").split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def newest_environment(envs: Iterable[Environment]) -> Environment | None:
    """The environment the comparison view runs in when none is configured: the newest
    TensorFlow by version (a CPU one before a GPU one of the same version: TensorBoard
    needs no GPU), ties by id; None when no environment says its TensorFlow version."""
    candidates = [e for e in envs if _version_key(e)]
    if not candidates:
        return None
    return max(candidates, key=lambda e: (_version_key(e), not e.wants_gpu, _neg(e.id)))


def _neg(text: str) -> tuple[int, ...]:
    """A key that sorts ``text`` backwards (``max`` then prefers the smallest id)."""
    return tuple(-ord(c) for c in text)


# -- log folders ---------------------------------------------------------------------------


def read_only(loc: Location, target: str) -> Mount:
    """The location (folder or volume) mounted read-only at ``target``."""
    if loc.is_volume:
        return Mount(target, loc.volume, type="volume", read_only=True)
    return Mount(target, loc.host_path, type="bind", read_only=True)


def compare_target(environment: str) -> str:
    """Where an environment's log folder appears in the comparison view: a top-level
    folder of TensorBoard's logdir, so its runs are the run group ``<environment>/…``."""
    return f"{CONTAINER_LOG_DIR}/{escape_path_component(environment)}"


def log_mounts(
    config: StorageConfig, owner: str, view: str, environments: Iterable[str]
) -> list[Mount]:
    """The read-only log mounts of a TensorBoard: the environment's folder at
    ``/tfenv/logs``, or (compare) each environment's at ``/tfenv/logs/<id>``."""
    if config.mode == "off":
        return []
    envs = list(environments)
    if view != COMPARE:
        return [
            read_only(locate(config, "logs", owner, env), CONTAINER_LOG_DIR) for env in envs[:1]
        ]
    return [read_only(locate(config, "logs", owner, env), compare_target(env)) for env in envs]


def environments_with_logs(client: Any, config: StorageConfig, owner: str) -> list[str]:
    """The environments that have a log folder (bind: a real folder, no symlink) or a log
    volume (labelled with the owner and kind, named as the template says) of ``owner``.
    BLOCKING."""
    if config.mode == "off":
        return []
    if config.mode == "volume":
        volumes = client.volumes.list(
            filters={"label": [f"{LABEL_OWNER}={owner}", f"{LABEL_STORAGE_KIND}=logs"]}
        )
        found = []
        for volume in volumes:
            env = (volume.attrs.get("Labels") or {}).get(LABEL_STORAGE_ENV)
            if env and locate(config, "logs", owner, env).volume == volume.name:
                found.append(env)
        return sorted(found)
    user_dir = locate(config, "logs", owner, "x").user_dir
    assert user_dir is not None
    if os.path.realpath(user_dir) != os.path.normpath(user_dir) or not os.path.isdir(user_dir):
        return []
    found = []
    with os.scandir(user_dir) as entries:
        for entry in entries:
            name = unescape_path_component(entry.name)
            if name is None or not entry.is_dir(follow_symlinks=False):
                continue
            if bind_folder(locate(config, "logs", owner, name)) is not None:
                found.append(name)
    return sorted(found)


# -- the container -------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorBoardRequest:
    """Everything one TensorBoard container is made of."""

    name: str
    view: str
    #: The environment whose image runs it (for the comparison: the configured or newest).
    image_env: Environment
    image_id: str
    #: The environment of the view, or None for the comparison.
    environment: str | None
    owner: str
    uid: int
    gid: int
    runtime_dir: str
    log_mounts: tuple[Mount, ...]
    read_only_rootfs: bool = False
    memory: int | None = None
    pids: int | None = None
    #: More labels (the broker's: its scope label and the user's uid).
    extra_labels: tuple[tuple[str, str], ...] = ()


def socket_path(runtime_dir: str) -> str:
    return os.path.join(runtime_dir, SOCKET_NAME)


def tensorboard_command(python: str, runtime_dir: str) -> list[str]:
    """The bridge (which binds the socket once TensorBoard answers), and TensorBoard run
    by the bridge's ``--run-tensorboard`` (no ``--path_prefix``: TensorBoard's pages use
    relative URLs, so the server proxies it under any base URL by stripping its prefix)."""
    bridge = [python, "-I", CONTAINER_TENSORBOARD_BRIDGE]
    return [
        *bridge,
        "--socket",
        socket_path(runtime_dir),
        "--port",
        str(TENSORBOARD_PORT),
        "--",
        *bridge,
        "--run-tensorboard",
        "--logdir",
        CONTAINER_LOG_DIR,
        "--host",
        "127.0.0.1",
        "--port",
        str(TENSORBOARD_PORT),
    ]


def container_labels(req: TensorBoardRequest) -> dict[str, str]:
    labels = {
        LABEL_TENSORBOARD: req.name,
        LABEL_OWNER: req.owner,
        **server_labels(),
        LABEL_IMAGE_ID: req.image_id,
        LABEL_IMAGE_REF: req.image_env.image,
        LABEL_RUNTIME_DIR: req.runtime_dir,
        **dict(req.extra_labels),
    }
    if req.environment:
        labels[LABEL_ENVIRONMENT] = req.environment
    return labels


def container_spec(req: TensorBoardRequest) -> dict[str, Any]:
    """Keyword arguments for ``client.containers.run``: the hardened TensorBoard container.

    As a kernel's (backends/docker/engine.py): non-root, no capabilities, no privilege
    escalation, docker-init, pids and memory limits, no restart policy; and more strictly:
    always ``network_mode: none`` (whatever the entry's network), no GPU (CPU only: the
    GPUs stay for kernels), no notebook folder, the log folders read-only.
    """
    if req.uid == 0:
        raise ValueError("a TensorBoard never runs as root")
    mounts = [
        Mount(req.runtime_dir, req.runtime_dir, type="bind", read_only=False),
        Mount(CONTAINER_TENSORBOARD_BRIDGE, str(BRIDGE_PATH), type="bind", read_only=True),
        *req.log_mounts,
    ]
    spec: dict[str, Any] = {
        "image": req.image_id,
        "command": tensorboard_command(req.image_env.python, req.runtime_dir),
        "name": f"tfenv-tb-{safe_name(req.owner, 24)}-{safe_name(req.name, 40)}-"
        f"{secrets.token_hex(3)}",
        "hostname": "tfenv-tensorboard",
        "user": f"{req.uid}:{req.gid}",
        "working_dir": "/tmp",  # noqa: S108 - inside the container
        "environment": {
            "HOME": "/tmp",  # noqa: S108 - inside the container
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "NVIDIA_VISIBLE_DEVICES": "void",
            "CUDA_VISIBLE_DEVICES": "",
        },
        "labels": container_labels(req),
        "mounts": mounts,
        "network_mode": "none",
        **hardening(),
        "pids_limit": req.pids,
        "detach": True,
        "stdin_open": False,
        "tty": False,
        "read_only": req.read_only_rootfs,
    }
    if req.read_only_rootfs:
        # TensorBoard writes its instance file under /tmp; a tmpfs is not the host's.
        spec["tmpfs"] = {"/tmp": "rw,nosuid,nodev,size=64m"}  # noqa: S108
    if req.memory:
        spec["mem_limit"] = req.memory
        spec["memswap_limit"] = req.memory
    return spec


# -- finding them ----------------------------------------------------------------------------


def tensorboard_containers(client: Any, owner: str | None = None) -> list[Any]:
    """TensorBoard containers (of ``owner``). BLOCKING."""
    labels = [LABEL_TENSORBOARD]
    if owner is not None:
        labels.append(f"{LABEL_OWNER}={owner}")
    return list_containers(client, labels)


@dataclass(frozen=True)
class ReapedTensorBoard:
    name: str
    tensorboard: str
    reason: str


def reap_tensorboards(
    client: Any,
    owner: str | None,
    *,
    runtime_roots: Iterable[str] = (),
    dry_run: bool = False,
) -> list[ReapedTensorBoard]:
    """Remove TensorBoard containers whose server is gone, and their runtime folders
    (``jupyter tfenv gc`` and a server's start-up). BLOCKING."""
    roots = [os.path.realpath(r) for r in runtime_roots]
    reaped = []
    for container in tensorboard_containers(client, owner):
        labels = container.labels or {}
        if server_alive(labels):
            continue
        reaped.append(
            ReapedTensorBoard(
                name=container.name,
                tensorboard=labels.get(LABEL_TENSORBOARD, ""),
                reason=f"server pid {labels.get(LABEL_SERVER_PID, '?')} is gone",
            )
        )
        if dry_run:
            continue
        remove_quietly(container)
        remove_runtime_dir(labels.get(LABEL_RUNTIME_DIR, ""), roots)
    return reaped


def remove_runtime_dir(path: str, roots: Iterable[str]) -> None:
    """Remove a TensorBoard's runtime folder when it is one below one of ``roots``."""
    rundir = os.path.realpath(path or "/nonexistent")
    for root in roots:
        real = os.path.realpath(root)
        if os.path.commonpath([rundir, real]) == real and rundir != real:
            shutil.rmtree(rundir, ignore_errors=True)
            return
