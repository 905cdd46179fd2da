"""Validating one catalog entry: the JSON Schema, then the safety rules.

:func:`environment_from_dict` turns a raw entry into an
:class:`~jupyter_tfenv.catalog.model.Environment` or raises ``CatalogError`` naming the
field. Beyond the schema, the rules keep an entry from reaching what it must not:
reserved and system mount targets, protected host paths and container engine sockets as
bind sources (after ``realpath``), tfenv's own volumes, refused ``env`` variables,
networks.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from jupyter_tfenv.catalog.choices import parse_choices
from jupyter_tfenv.catalog.derived import DERIVED_KEYS, Derived, derive, display_name, merged_entry
from jupyter_tfenv.catalog.images import check_pinned
from jupyter_tfenv.catalog.model import Environment, Mount, infer_tensorflow_version, parse_size
from jupyter_tfenv.errors import CatalogError

#: Paths in the container that belong to jupyter_tfenv; catalog mounts may not use them.
RESERVED_TARGETS = ("/opt/tfenv", "/tfenv")
#: Kernel interfaces in the container that Docker sets up (and masks); no mount goes there.
SYSTEM_TARGETS = ("/proc", "/sys", "/dev")
#: Host paths a bind mount may not be, lie under or contain (after ``os.path.realpath``):
#: engine sockets and state, kernel interfaces, devices, the host's configuration.
PROTECTED_HOST_PATHS = (
    "/var/run",
    "/run",
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/containers",
)
#: File names of container engine sockets (Docker, containerd, Podman, BuildKit, CRI-O).
ENGINE_SOCKET_NAMES = frozenset(
    {
        "docker.sock",
        "containerd.sock",
        "containerd.sock.ttrpc",
        "podman.sock",
        "buildkitd.sock",
        "crio.sock",
        "dockershim.sock",
    }
)
#: Volume names that belong to tfenv: the default checkpoint and log volume templates
#: (``tfenv-checkpoints-{username}-{environment}``, ``tfenv-logs-…``) start so.
TFENV_VOLUME_RE = re.compile(r"^tfenv[-_.]", re.IGNORECASE)
_VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NETWORK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Variables a catalog ``env`` may not set (matched case-insensitively): the hub's secrets,
#: tfenv's own, what the dynamic loader and Python read before any code runs, and the
#: NVIDIA runtime's device list (GPUs come from ``gpus``, which quotas count).
_REFUSED_ENV_PREFIXES = ("JUPYTERHUB_", "TFENV_", "LD_", "PYTHON")
_REFUSED_ENV_NAMES = ("JPY_API_TOKEN", "NVIDIA_VISIBLE_DEVICES")


@functools.cache
def catalog_schema() -> dict[str, Any]:
    """The catalog JSON Schema (shipped in the wheel, read from ``schema/`` in a checkout)."""
    here = Path(__file__).parents[1]
    for candidate in (
        here / "_schema" / "catalog.schema.json",
        here.parent / "schema" / "catalog.schema.json",
    ):
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    raise CatalogError("jupyter_tfenv is installed without its catalog schema; reinstall it.")


def _is_within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or below it (both absolute and normalized)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def _engine_socket_paths() -> set[str]:
    """Unix socket paths of the engines this process talks to ($DOCKER_HOST, $CONTAINER_HOST)."""
    found = set()
    for var in ("DOCKER_HOST", "CONTAINER_HOST"):
        value = os.environ.get(var, "")
        if value.startswith("unix://"):
            path = value[len("unix://") :]
            found.update({os.path.normpath(path), os.path.realpath(path)})
    return found


def _is_engine_socket(path: str, sockets: set[str]) -> bool:
    return os.path.basename(path) in ENGINE_SOCKET_NAMES or path in sockets


def check_network(value: str) -> None:
    """Refuse network modes that share a namespace: ``host``, ``container:<id>``, ``ns:…``."""
    if value.lower() == "host":
        raise CatalogError(
            f"network: '{value}' shares the host's network namespace (every port of the host, "
            "its loopback services included) with the kernel; it is refused. Use none "
            "(the default), bridge or a named Docker network."
        )
    if ":" in value:
        mode = value.split(":", 1)[0]
        raise CatalogError(
            f"network: '{value}' joins the namespace of something else ({mode}:…); "
            "that is refused. Use none (the default), bridge or a named Docker network."
        )
    if not _NETWORK_NAME_RE.match(value):
        raise CatalogError(
            f"network: '{value}' is not a Docker network name (letters, digits, '_', '.' "
            "and '-'). Use none (the default), bridge or a named Docker network."
        )


def check_env_name(name: str) -> None:
    """Refuse variables a catalog may not set (see ``_REFUSED_ENV_PREFIXES``)."""
    upper = name.upper()
    if upper in _REFUSED_ENV_NAMES or upper.startswith(("JUPYTERHUB_", "TFENV_")):
        raise CatalogError(
            f"env: {name} is refused: it belongs to JupyterHub, tfenv or the GPU allocation "
            "(use 'gpus' for GPUs). Remove it from the entry."
        )
    if upper.startswith(("LD_", "PYTHON")):
        raise CatalogError(
            f"env: {name} is refused: LD_* and PYTHON* variables choose the code the loader "
            "and the interpreter run before the kernel starts (LD_PRELOAD, PYTHONPATH, "
            "PYTHONSTARTUP, …). Build them into the image instead."
        )


def _check_bind_source(source: str) -> None:
    if not os.path.isabs(source):
        raise CatalogError(f"bind source '{source}' must be an absolute host path.")
    written = os.path.normpath(source)
    sockets = _engine_socket_paths()
    _check_bind_path(written, f"'{source}'", sockets)
    resolved = _realpath(source)
    if resolved is None:
        raise CatalogError(
            f"bind source '{source}' cannot be resolved (a link in it cannot be read); it "
            "is refused. Mount a folder the server can resolve."
        )
    shown = f"'{source}'" + (f" (resolves to '{resolved}')" if resolved != written else "")
    if resolved != written:
        _check_bind_path(resolved, shown, sockets)
    # A folder that holds an engine socket (rootless engines put theirs in odd places);
    # one lstat per name, not a listing (data folders can hold millions of files).
    held = [n for n in sorted(ENGINE_SOCKET_NAMES) if os.path.lexists(os.path.join(resolved, n))]
    if held:
        raise CatalogError(
            f"bind source {shown} holds the container engine socket {held[0]}; it is "
            "refused. Mount a folder without engine sockets."
        )


def _realpath(path: str) -> str | None:
    try:
        return os.path.realpath(path)
    except OSError:
        return None


def _check_bind_path(path: str, shown: str, sockets: set[str]) -> None:
    """Refuse ``path`` (a bind source as written and normalized, or resolved)."""
    if path == "/":
        raise CatalogError(f"bind source {shown}: mounting the host's / is refused.")
    if _is_engine_socket(path, sockets):
        raise CatalogError(
            f"bind source {shown} is the Docker socket or another container engine's "
            "socket; mounting it into a kernel is refused: it is root on the host."
        )
    for protected in PROTECTED_HOST_PATHS:
        for root in dict.fromkeys((protected, _realpath(protected) or protected)):
            if _is_within(path, root):
                raise CatalogError(
                    f"bind source {shown} is the host's system folder {root} or lies "
                    "under it (engine sockets, devices, kernel interfaces, host "
                    "configuration); it is refused. Mount a data folder instead."
                )
            if _is_within(root, path):
                raise CatalogError(
                    f"bind source {shown} contains the host's system folder {root}; "
                    "it is refused. Mount the data folder itself instead."
                )
    for socket in sockets:
        if _is_within(socket, path):
            raise CatalogError(
                f"bind source {shown} contains the engine socket {socket}; it is "
                "refused. Mount the data folder itself instead."
            )


def _check_mount(raw: dict[str, Any]) -> Mount:
    mount = Mount(
        source=raw["source"],
        target=raw["target"],
        type=raw.get("type", "bind"),
        read_only=raw.get("read_only", True),
    )
    target = os.path.normpath(mount.target)
    if target == "/" or any(_is_within(target, r) for r in RESERVED_TARGETS):
        raise CatalogError(f"target '{mount.target}' is reserved; mount somewhere else.")
    if any(_is_within(target, r) for r in SYSTEM_TARGETS):
        raise CatalogError(
            f"target '{mount.target}' is one of the container's kernel interfaces "
            f"({', '.join(SYSTEM_TARGETS)}), which Docker sets up and masks; mount somewhere "
            "else."
        )
    if mount.type == "bind":
        _check_bind_source(mount.source)
    elif mount.type == "volume":
        if not _VOLUME_NAME_RE.match(mount.source):
            raise CatalogError(
                f"volume source '{mount.source}' is not a Docker volume name (letters, "
                "digits, '_', '.' and '-'); use type bind for host folders."
            )
        if TFENV_VOLUME_RE.match(mount.source) and not mount.read_only:
            raise CatalogError(
                f"volume '{mount.source}': names starting with 'tfenv-' are tfenv's own "
                "checkpoint and log volumes (one per user and environment); mounting one "
                "read-write into every user's kernel is refused. Set read_only: true, or "
                "use a volume of another name."
            )
    return mount


def _check_safety(raw: dict[str, Any]) -> None:
    """The checks that need no file system, run first so that their message wins."""
    network = raw.get("network")
    if isinstance(network, str) and network:
        check_network(network)
    env = raw.get("env")
    if isinstance(env, dict):
        for name in env:
            if isinstance(name, str):
                check_env_name(name)
    mounts = raw.get("mounts")
    for number, item in enumerate(mounts if isinstance(mounts, list) else [], 1):
        if (
            isinstance(item, dict)
            and isinstance(item.get("source"), str)
            and isinstance(item.get("target"), str)
            and item.get("type", "bind") in ("bind", "volume")
            and isinstance(item.get("read_only", True), bool)
        ):
            try:
                _check_mount(item)
            except CatalogError as err:
                raise CatalogError(f"mounts: mount #{number}: {err}") from err


def _check_schema(raw: dict[str, Any]) -> None:
    validator = Draft202012Validator(
        {"$defs": catalog_schema()["$defs"], "$ref": "#/$defs/environment"}
    )
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path) or "(entry)"
        raise CatalogError(f"{path}: {err.message}")


def _derived_entry(
    raw: dict[str, Any], pinning: str, bases: Mapping[str, Environment], source: str
) -> tuple[dict[str, Any], Derived, tuple[str, int] | None]:
    """A derived entry (``base``, ``pip``): its merged settings, its :class:`Derived`, and
    the display name of the first plain base entry with the count of packages the chain's
    derived bases add (None when the base is an image)."""
    base = raw["base"]
    base_env = bases.get(base)
    if base_env is None and not any(ch in base for ch in ":/@"):
        known = ", ".join(sorted(bases)) or "none"
        raise CatalogError(
            f"base: '{base}' is neither an entry of the catalog (known: {known}) nor an "
            "image reference (repo:version-tag or repo@sha256:…)."
        )
    base_tf = None
    if base_env is None:
        try:
            base_tf = infer_tensorflow_version(check_pinned(base, pinning))
        except CatalogError as err:
            raise CatalogError(f"base: {err}") from err
    base_raw = base_env.to_config() if base_env is not None else None
    base_image = base_env.image if base_env is not None else base
    parent = base_env.id if base_env is not None and base_env.derived is not None else None
    derived = derive({**raw, "_source": source}, base_raw, base_image, parent)
    if "image" in raw and raw["image"] != derived.image:
        raise CatalogError(
            f"image: a derived environment's image is named by its content "
            f"('{derived.image}'): remove 'image' from the entry (set 'repository' to "
            "choose where it is tagged)."
        )
    merged = {k: v for k, v in merged_entry(raw, base_raw).items() if k not in DERIVED_KEYS}
    merged["image"] = derived.image
    if base_tf and "tensorflow" not in merged:
        merged["tensorflow"] = base_tf
    # A chain counts every level's packages on the first plain base's name.
    root, inherited = base_env, 0
    while root is not None and root.derived is not None:
        inherited += len(root.derived.pins)
        root = bases.get(root.derived.base)
    if root is None and base_env is not None:
        return merged, derived, None
    display = root.display_name if root is not None else None
    return merged, derived, (display, inherited) if display else None


def environment_from_dict(
    raw: dict[str, Any],
    *,
    pinning: str = "tags",
    source: str = "config",
    bases: Mapping[str, Environment] | None = None,
) -> Environment:
    """Validate one entry (schema, pinning, mounts) and build its :class:`Environment`.

    A derived entry (``base``) names its base by id among ``bases`` (the entries loaded
    before it) or by image. Raises ``CatalogError`` with the offending field in the message.
    """
    _check_safety(raw)
    _check_schema(raw)
    derived: Derived | None = None
    if "base" in raw:
        raw, derived, base_display = _derived_entry(raw, pinning, bases or {}, source)
        _check_safety(raw)
        _check_schema(raw)
        if not raw.get("display_name") and base_display:
            raw["display_name"] = display_name(base_display[0], derived.pins, base_display[1])
    try:
        # A derived image's tag is its content: pinned by construction.
        ref = check_pinned(raw["image"], "any" if derived else pinning)
    except CatalogError as err:
        raise CatalogError(f"image: {err}") from err
    mounts = []
    for number, item in enumerate(raw.get("mounts", []), 1):
        try:
            mounts.append(_check_mount(item))
        except CatalogError as err:
            raise CatalogError(f"mounts: mount #{number}: {err}") from err
    resources = raw.get("resources", {})
    tensorflow = raw.get("tensorflow") or infer_tensorflow_version(ref)
    gpus = raw.get("gpus", "none")
    if isinstance(gpus, list):
        gpus = tuple(gpus)
    sharing = raw.get("gpu_sharing", "exclusive")
    per_device = raw.get("gpu_kernels_per_device")
    if per_device is not None and sharing != "shared":
        raise CatalogError(
            "gpu_kernels_per_device: only means something with gpu_sharing: shared; set "
            "that too, or remove it."
        )
    if "gpu_sharing" in raw and gpus in ("none", "all"):
        raise CatalogError(
            f"gpu_sharing: applies to GPUs given by count or by id, not to gpus: {gpus}."
        )
    choices = parse_choices(raw.get("choices"), raw)
    partial = Environment(
        id=raw["id"],
        image=raw["image"],
        image_ref=ref,
        display_name="",
        tensorflow=tensorflow,
        gpus=gpus,
    )
    display = raw.get("display_name") or (
        f"TensorFlow {tensorflow} ({partial.gpu_label})" if tensorflow else raw["id"]
    )
    if derived is not None and not raw.get("display_name"):
        display = display_name(display, derived.pins)
    return Environment(
        id=raw["id"],
        image=raw["image"],
        image_ref=ref,
        display_name=display,
        description=raw.get("description", ""),
        tensorflow=tensorflow,
        python=raw.get("python", "python3"),
        gpus=gpus,
        gpu_sharing=sharing,
        gpu_kernels_per_device=per_device,
        memory=parse_size(resources.get("memory")),
        cpus=resources.get("cpus"),
        pids=resources.get("pids"),
        shm_size=parse_size(resources.get("shm_size")),
        env=dict(raw.get("env", {})),
        mounts=tuple(mounts),
        network=raw.get("network", "none"),
        idle_timeout=raw.get("idle_timeout"),
        pool_size=int(raw.get("pool_size", 0)),
        preimport=bool(raw.get("preimport", False)),
        kubernetes=copy.deepcopy(raw.get("kubernetes", {})),
        source=source,
        choices=choices,
        derived=derived,
    )
