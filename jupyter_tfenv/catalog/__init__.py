"""The environment catalog: what a team declares once, validated, with problems reported.

Environments come from two places, merged in this order:

1. ``c.TFEnvCatalog.environments`` in a Jupyter config file (a list of dicts);
2. team catalog files (YAML or JSON, the shape of ``schema/catalog.schema.json``) named in
   ``c.TFEnvCatalog.catalog_files`` or in the ``JUPYTER_TFENV_CATALOG`` environment
   variable (paths separated by ``os.pathsep``). Such a file can live in a repository.

An invalid entry is reported with its file, entry and field, and left out; the other
entries keep working. Files are re-read when they change, so a catalog edit shows up in
the kernel picker without a server restart.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from traitlets import Enum, List, Unicode, default
from traitlets.config import LoggingConfigurable

from jupyter_tfenv.catalog.images import PINNING_POLICIES, ImageRef, check_pinned
from jupyter_tfenv.errors import CatalogError, UnknownEnvironmentError

CATALOG_ENV_VAR = "JUPYTER_TFENV_CATALOG"
LOCK_ENV_VAR = "JUPYTER_TFENV_LOCK"
KERNEL_PREFIX = "tfenv-"
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
_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([bkmgt]?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_TF_TAG_RE = re.compile(r"^v?([0-9]+\.[0-9]+(?:\.[0-9]+)?(?:rc[0-9]+)?)")


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


def parse_size(value: int | str | None) -> int | None:
    """``"8g"`` → bytes; ints pass through; ``None`` stays ``None``."""
    if value is None or isinstance(value, int):
        return value
    match = _SIZE_RE.match(value.strip())
    if not match:
        raise CatalogError(f"'{value}' is not a size: use a number with k, m, g or t, e.g. 8g.")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class Mount:
    """An extra mount declared by the catalog (data sets, caches)."""

    source: str
    target: str
    type: str = "bind"
    read_only: bool = True


@dataclass(frozen=True)
class Environment:
    """One validated catalog entry."""

    id: str
    image: str
    image_ref: ImageRef
    display_name: str
    description: str = ""
    tensorflow: str | None = None
    python: str = "python3"
    gpus: str | int | tuple[str, ...] = "none"
    #: ``exclusive`` or ``shared`` (jupyter_tfenv.backends.docker.gpu_alloc), and the shared limit.
    gpu_sharing: str = "exclusive"
    gpu_kernels_per_device: int | None = None
    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None
    shm_size: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    network: str = "none"
    #: Seconds a kernel may stay idle before it is culled (None: the server's default).
    idle_timeout: float | None = None
    #: Kernels started ahead (jupyter_tfenv.lifecycle.pool); preimport: they imported TensorFlow.
    pool_size: int = 0
    preimport: bool = False
    #: Pod placement on Kubernetes (``node_selector``, ``tolerations``, ``affinity``, as
    #: the catalog wrote them). The Docker backend ignores it;
    #: jupyter_tfenv.backends.kubernetes reads it.
    kubernetes: dict[str, Any] = field(default_factory=dict)
    source: str = "config"

    @property
    def kernel_name(self) -> str:
        return f"{KERNEL_PREFIX}{self.id}"

    @property
    def wants_gpu(self) -> bool:
        return self.gpus != "none"

    @property
    def gpu_label(self) -> str:
        """``CPU``, ``all GPUs``, ``2 GPUs``, ``GPU 0,1``: for display names and the UI."""
        if self.gpus == "none":
            return "CPU"
        if self.gpus == "all":
            return "all GPUs"
        if isinstance(self.gpus, int):
            return "1 GPU" if self.gpus == 1 else f"{self.gpus} GPUs"
        return "GPU " + ",".join(self.gpus)

    def to_config(self) -> dict[str, Any]:
        """A JSON-able dict that round-trips through :func:`environment_from_dict`.

        This is what a kernelspec carries, so that a kernelspec written to disk runs the
        same container without the catalog (nbclient, papermill, jupyter console).
        """
        data: dict[str, Any] = {
            "id": self.id,
            "image": self.image,
            "display_name": self.display_name,
            "python": self.python,
            "gpus": list(self.gpus) if isinstance(self.gpus, tuple) else self.gpus,
            "network": self.network,
        }
        if self.description:
            data["description"] = self.description
        if self.gpu_sharing != "exclusive":
            data["gpu_sharing"] = self.gpu_sharing
        if self.gpu_kernels_per_device is not None:
            data["gpu_kernels_per_device"] = self.gpu_kernels_per_device
        if self.tensorflow:
            data["tensorflow"] = self.tensorflow
        if self.idle_timeout is not None:
            data["idle_timeout"] = self.idle_timeout
        if self.pool_size:
            data["pool_size"] = self.pool_size
        if self.preimport:
            data["preimport"] = True
        resources = {
            k: v
            for k, v in (
                ("memory", self.memory),
                ("cpus", self.cpus),
                ("pids", self.pids),
                ("shm_size", self.shm_size),
            )
            if v is not None
        }
        if resources:
            data["resources"] = resources
        if self.env:
            data["env"] = dict(self.env)
        if self.mounts:
            data["mounts"] = [
                {"type": m.type, "source": m.source, "target": m.target, "read_only": m.read_only}
                for m in self.mounts
            ]
        if self.kubernetes:
            data["kubernetes"] = copy.deepcopy(self.kubernetes)
        return data

    def summary(self) -> dict[str, Any]:
        """The facts the frontend and the CLI show."""
        return {
            "id": self.id,
            "kernel_name": self.kernel_name,
            "display_name": self.display_name,
            "description": self.description,
            "image": self.image,
            "digest": self.image_ref.digest,
            "tensorflow": self.tensorflow,
            "gpus": list(self.gpus) if isinstance(self.gpus, tuple) else self.gpus,
            "gpu_label": self.gpu_label,
            "gpu_sharing": self.gpu_sharing,
            "gpu_kernels_per_device": self.gpu_kernels_per_device,
            "network": self.network,
            "idle_timeout": self.idle_timeout,
            "pool_size": self.pool_size,
            "preimport": self.preimport,
            "source": self.source,
        }


@dataclass(frozen=True)
class CatalogProblem:
    """Why one entry (or a whole file) was left out."""

    source: str
    entry: str
    field: str
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.entry:
            where += f": environment {self.entry}"
        if self.field:
            where += f": {self.field}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {
            "source": self.source,
            "entry": self.entry,
            "field": self.field,
            "message": self.message,
        }


def infer_tensorflow_version(ref: ImageRef) -> str | None:
    """``tensorflow/tensorflow:2.20.0-gpu-jupyter`` → ``2.20.0``; others → None."""
    if ref.tag and "tensorflow" in ref.repository.rsplit("/", 1)[-1]:
        match = _TF_TAG_RE.match(ref.tag)
        if match:
            return match.group(1)
    return None


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


def environment_from_dict(
    raw: dict[str, Any], *, pinning: str = "tags", source: str = "config"
) -> Environment:
    """Validate one entry (schema, pinning, mounts) and build its :class:`Environment`.

    Raises ``CatalogError`` with the offending field in the message.
    """
    _check_safety(raw)
    validator = Draft202012Validator(
        {"$defs": catalog_schema()["$defs"], "$ref": "#/$defs/environment"}
    )
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path) or "(entry)"
        raise CatalogError(f"{path}: {err.message}")
    try:
        ref = check_pinned(raw["image"], pinning)
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
    )


def read_catalog_file(path: str) -> list[Any]:
    """Read a catalog file's ``environments`` list; raise ``CatalogError`` when unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise CatalogError(f"cannot read the catalog file: {err.strerror or err}") from err
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise CatalogError(
            f"not valid {'JSON' if path.endswith('.json') else 'YAML'}: {err}"
        ) from err
    if not isinstance(data, dict) or not isinstance(data.get("environments"), list):
        raise CatalogError("expected a mapping with an 'environments' list at the top.")
    extra = set(data) - {"version", "environments"}
    if extra:
        raise CatalogError(f"unknown top-level keys: {', '.join(sorted(extra))}.")
    if data.get("version", 1) != 1:
        raise CatalogError(f"catalog version {data['version']!r} is not supported; use 1.")
    return data["environments"]


def _bind_sources(sources: list[tuple[str, list[Any]]]) -> tuple[str, ...]:
    """The absolute bind sources named by any entry (valid or not) of ``sources``."""
    found: dict[str, None] = {}
    for _, entries in sources:
        for raw in entries:
            mounts = raw.get("mounts") if isinstance(raw, dict) else None
            for mount in mounts if isinstance(mounts, list) else []:
                if not isinstance(mount, dict) or mount.get("type", "bind") != "bind":
                    continue
                src = mount.get("source")
                if isinstance(src, str) and os.path.isabs(src):
                    found.setdefault(src, None)
    return tuple(found)


class TFEnvCatalog(LoggingConfigurable):
    """The team's environments, from config and catalog files, re-read when files change."""

    environments: List[Any] = List(
        help="""Environments declared in Jupyter config, each a dict shaped like an entry of
        schema/catalog.schema.json, e.g.
        {"id": "tf220", "image": "tensorflow/tensorflow:2.20.0-jupyter"}.""",
    ).tag(config=True)

    catalog_files = List(
        Unicode(),
        help=f"""Team catalog files (YAML or JSON). Paths in ${CATALOG_ENV_VAR}
        (separated by '{os.pathsep}') are added to these.""",
    ).tag(config=True)

    pinning = Enum(
        list(PINNING_POLICIES),
        default_value="tags",
        help="""How strictly images must be pinned: 'tags' refuses floating tags such as
        ':latest' (default), 'digests' accepts only repo@sha256:… references, 'any' accepts
        everything (not recommended: the same name can run different bits tomorrow).""",
    ).tag(config=True)

    lock_file = Unicode(
        help=f"""The lock file recording the digest each tag resolved to
        (`jupyter tfenv lock` writes it). Default: ${LOCK_ENV_VAR}, else tfenv-lock.json
        beside the first catalog file.""",
    ).tag(config=True)

    lock_policy = Enum(
        ["enforce", "strict", "warn", "off"],
        default_value="enforce",
        help="""What a kernel start does with the lock file. 'enforce' (default) refuses a
        kernel whose local image no longer carries the locked digest of its tag (the tag
        was re-pointed); it checks only tags that have an entry: an environment missing
        from the lock file, or a missing lock file, still starts. 'strict' refuses those
        too (run `jupyter tfenv lock <id>`); references pinned by digest need no entry.
        'warn' logs a mismatch and starts, 'off' ignores the lock.""",
    ).tag(config=True)

    @default("lock_file")
    def _default_lock_file(self) -> str:
        return os.environ.get(LOCK_ENV_VAR, "")

    def lock_path(self) -> Path | None:
        """Where the lock file is (or would be written), None when there is no catalog file."""
        if self.lock_file:
            return Path(self.lock_file).expanduser().resolve()
        files = self.files()
        return Path(files[0]).parent / "tfenv-lock.json" if files else None

    @default("catalog_files")
    def _default_catalog_files(self) -> list[str]:
        return []

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._stamp: tuple[Any, ...] | None = None
        self._envs: dict[str, Environment] = {}
        self._problems: list[CatalogProblem] = []
        #: Bind sources of the last load: where they resolve to is part of the stamp, so
        #: that a symlink re-pointed at a refused path takes its entry out at once.
        self._bind_sources: tuple[str, ...] = ()

    def files(self) -> list[str]:
        extra = [p for p in os.environ.get(CATALOG_ENV_VAR, "").split(os.pathsep) if p]
        seen: dict[str, None] = {}
        for path in [*self.catalog_files, *extra]:
            seen.setdefault(os.path.abspath(os.path.expanduser(path)), None)
        return list(seen)

    def _current_stamp(self) -> tuple[Any, ...]:
        stamp: list[Any] = [
            json.dumps(self.environments, sort_keys=True, default=str),
            self.pinning,
        ]
        for path in self.files():
            try:
                st = os.stat(path)
                stamp.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                stamp.append((path, None, None))
        return tuple(stamp)

    def _bind_stamp(self) -> tuple[tuple[str, str], ...]:
        return tuple((src, _realpath(src) or "") for src in self._bind_sources)

    def refresh(self, *, force: bool = False) -> None:
        """Reload when config or any catalog file changed since the last load."""
        base = self._current_stamp()
        stamp = (base, self._bind_stamp())
        if not force and stamp == self._stamp:
            return
        envs: dict[str, Environment] = {}
        problems: list[CatalogProblem] = []
        sources: list[tuple[str, list[Any]]] = [
            ("Jupyter config (TFEnvCatalog.environments)", list(self.environments))
        ]
        for path in self.files():
            try:
                sources.append((path, read_catalog_file(path)))
            except CatalogError as err:
                problems.append(CatalogProblem(path, "", "", err.message))
        self._bind_sources = _bind_sources(sources)
        for source, entries in sources:
            for index, raw in enumerate(entries):
                label = f"#{index + 1}"
                if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                    label = f"'{raw['id']}'"
                if not isinstance(raw, dict):
                    problems.append(
                        CatalogProblem(source, label, "", "an entry must be a mapping.")
                    )
                    continue
                try:
                    env = environment_from_dict(raw, pinning=self.pinning, source=source)
                except CatalogError as err:
                    fld, _, msg = err.message.partition(": ")
                    problems.append(CatalogProblem(source, label, fld, msg or fld))
                    continue
                if env.id in envs:
                    problems.append(
                        CatalogProblem(
                            source,
                            label,
                            "id",
                            f"duplicate id: already defined in {envs[env.id].source}; "
                            "ids must be unique across all catalog sources.",
                        )
                    )
                    continue
                envs[env.id] = env
        for problem in problems:
            if problem not in self._problems:
                self.log.warning("tfenv catalog: %s (entry left out)", problem)
        self._envs, self._problems = envs, problems
        self._stamp = (base, self._bind_stamp())

    def all(self) -> list[Environment]:
        self.refresh()
        return list(self._envs.values())

    def problems(self) -> list[CatalogProblem]:
        self.refresh()
        return list(self._problems)

    def get(self, env_id: str) -> Environment:
        self.refresh()
        try:
            return self._envs[env_id]
        except KeyError:
            known = ", ".join(sorted(self._envs)) or "none"
            raise UnknownEnvironmentError(
                f"No environment '{env_id}' in the tfenv catalog (known: {known}). "
                "Check the id, or `jupyter tfenv check` for entries that were left out."
            ) from None

    def by_kernel_name(self, kernel_name: str) -> Environment | None:
        if not kernel_name.startswith(KERNEL_PREFIX):
            return None
        self.refresh()
        return self._envs.get(kernel_name[len(KERNEL_PREFIX) :])
