"""The one interface between "a kernel" and "where it runs": :class:`KernelBackend`.

Three peers implement it (docs/ARCHITECTURE.md draws them):

- ``jupyter_tfenv.backends.docker.backend.DockerBackend``: containers on a Docker engine,
  found by their labels; the broker holds one for all hub users, and a local server's
  provisioner one for its kernel (provisioning/local.py ``local_backend``).
- ``jupyter_tfenv.backends.kubernetes.backend.KubernetesBackend``: pods, for the broker.
  It is given its settings, never the broker.
- ``jupyter_tfenv.backends.broker.BrokerBackend``: the broker's REST API, for a
  single-user server on a hub (the broker answers with one of the two above).

The broker holds one backend (``TFEnvBroker.kernel_backend``) and never asks which one it
is. A single-user server chooses once between its local engine and the broker: the
provisioner's runner (provisioning/local.py over a ``DockerBackend`` built for the local
server, provisioning/brokered.py over ``BrokerBackend``) and the REST service's source
(server/sources.py). A feature a backend lacks is said by
:meth:`KernelBackend.supports` and, if called anyway, by :class:`UnsupportedByBackend` (a
message, HTTP 501), never by an ``if`` on the mode.

Every method takes the :class:`~jupyter_tfenv.core.caller.Caller` it acts for: a backend
only ever sees and touches that caller's kernels. The result types are small dataclasses
whose ``to_dict()`` is the broker's REST shape (docs/broker.md), so the broker serves them
as they are and :class:`BrokerBackend` reads them back.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.errors import BackendError, NotFoundError, TFEnvError

#: What a backend may or may not do; ``supports()`` answers for each.
FEATURES = (
    "adopt",  # find a running kernel again after the server restarted (keep_kernels_on_stop)
    "pool",  # kernels started ahead for no notebook yet (catalog pool_size)
    "live",  # live CPU, memory and GPU readings of a kernel
    "gpu_allocation",  # devices handed out by tfenv (else: by the scheduler, or none)
    "runtime_dirs",  # connection (and notebook) folders on host paths, checked by the caller
    "checkpoints",  # checkpoints read and deleted through the backend (else: by the server)
)


@dataclass(frozen=True)
class Usage:
    """What a caller holds now, for quotas: running kernels, their GPUs, and probes."""

    kernels: int = 0
    gpus: int = 0
    #: Environment probes run for the caller now: each counts as a kernel (and holds its
    #: GPUs) while it runs.
    probes: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"kernels": self.kernels, "gpus": self.gpus, "probes": self.probes}


def usage_of(gpu_counts: Iterable[int], probe_gpus: Iterable[int] = ()) -> Usage:
    """Usage from the GPU counts of the caller's running kernels (one entry per kernel)
    and of the probes running for them (one entry per probe)."""
    counts = list(gpu_counts)
    probes = list(probe_gpus)
    return Usage(kernels=len(counts), gpus=sum(counts) + sum(probes), probes=len(probes))


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


#: A kernel's states (``KernelInfo.status``) while it runs or may still bind its sockets.
RUNNING_STATES = ("created", "running", "restarting")

#: The exit state of a starting kernel whose container is no longer there (removed by
#: someone else): what ``exit_state`` answers, for ``explain_start_exit``.
GONE: dict[str, Any] = {"exit_code": None, "oom_killed": False, "removed": True}


#: A quota check a backend calls under the caller's lock, just before it makes a kernel
#: (or a probe): the caller's usage without this kernel, and the GPUs the new one takes.
#: It raises (a 429 :class:`BackendError`) to refuse.
Admit = Callable[[Usage, int], None]


class UnsupportedByBackend(TFEnvError):
    """A backend was asked for something it does not do: says which, and where it is done."""

    http_status = 501

    def __init__(self, backend: str, feature: str, hint: str = "") -> None:
        message = f"The {backend} backend does not support {feature}."
        super().__init__(f"{message} {hint}".strip())
        self.backend = backend
        self.feature = feature


class KernelNotFound(BackendError, NotFoundError):
    """No kernel of that id belongs to the caller (the same answer whether it exists for
    someone else or not at all): 404, reason "no such kernel"."""

    def __init__(self, kernel_id: str) -> None:
        super().__init__(f"No kernel {kernel_id} of yours.", status=404, reason="no such kernel")
        self.kernel_id = kernel_id


@dataclass(frozen=True)
class KernelStart:
    """What a start asks for, before any backend turned it into a container or a pod."""

    kernel_id: str
    environment: str
    #: The notebook's folder, as the asking server sees it.
    cwd: str
    #: The folder mounted into the kernel (cwd or one of its parents).
    mount: str
    #: Variables for the kernel (jupyter_client's, filtered; never secrets).
    env: Mapping[str, str] = field(default_factory=dict)
    #: The hub server name that owns the kernel ("" for the default server, or local).
    server: str = ""
    #: Devices the kernel held before a restart: kept when still free (a hint).
    gpu_devices: tuple[str, ...] = ()
    restart: bool = False
    #: The connection folder the caller filled (backends with "runtime_dirs"), else "".
    runtime_dir: str = ""
    #: The connection key, where the backend hands it to the kernel itself (no folder);
    #: None when the request had none.
    key: str | None = None
    #: The folders the caller's policy checked (``mountcheck.CheckedFolder``, by mount
    #: target): a backend that mounts them mounts exactly those (by descriptor).
    checked: tuple[Any, ...] = ()
    #: The kernel's command, where the caller made it (a local server: jupyter_client's,
    #: from the kernelspec); () for the launcher reading the connection file.
    cmd: tuple[str, ...] = ()
    #: How the kernel's sockets are reached: "ipc" (in runtime_dir) or "tcp" (a local
    #: server's transport trait: 127.0.0.1 of the host's network).
    transport: str = "ipc"
    #: Labels of the caller's own on the kernel (a local server's warm-pool label).
    labels: Mapping[str, str] = field(default_factory=dict)
    #: The resources the user chose ({"memory": "16g", …}; {}: the entry's defaults):
    #: checked against the environment's choices by whoever applies them
    #: (``catalog.choices.apply_choices``; docs/choices.md).
    choices: Mapping[str, Any] = field(default_factory=dict)
    #: The kernel's CurveZMQ server key pair the caller offers (``kernels.curve.CurveKeys``)
    #: where the backend reaches the kernel over a network (Kubernetes); None: none.
    curve: Any = None


@dataclass(frozen=True)
class KernelInfo:
    """One kernel as its backend sees it now (``GET /api/kernels/<id>`` of the broker)."""

    kernel_id: str
    container_id: str
    name: str
    status: str | None
    running: bool
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: str | None = None
    environment: str | None = None
    image_id: str | None = None
    #: For adoption: the kernel's working directory and connection folder ("" if none).
    workdir: str = ""
    runtime_dir: str = ""
    #: The resources its start chose (docs/choices.md; {}: the defaults), kept by adoption.
    choices: Mapping[str, Any] = field(default_factory=dict)
    #: What only this backend knows (a pod's ip, its reason): served beside the rest.
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data.update(extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelInfo:
        names = cls.__dataclass_fields__
        known = {k: v for k, v in data.items() if k in names and k != "extra"}
        return cls(
            **{"kernel_id": "", "container_id": "", "name": "", "status": None, "running": False}
            | known,
            extra={k: v for k, v in data.items() if k not in names},
        )


@dataclass(frozen=True)
class KernelSummary:
    """A row of the caller's kernels (``GET /api/kernels`` of the broker)."""

    kernel_id: str | None
    container_id: str | None
    name: str
    environment: str | None
    status: str | None
    started_at: str | None
    gpus: int = 0
    server: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelSummary:
        """A row as a broker sends it (an older one may leave fields out: None)."""
        names = cls.__dataclass_fields__
        required: dict[str, Any] = {"name": ""} | dict.fromkeys(
            ("kernel_id", "container_id", "environment", "status", "started_at")
        )
        return cls(**(required | {k: v for k, v in data.items() if k in names}))


@dataclass(frozen=True)
class ImageStatus:
    """Whether an environment's image is where kernels start (``present`` None: unknown)."""

    present: bool | None
    image_id: str | None = None
    repo_digests: tuple[str, ...] = ()
    size: int | None = None
    error: str | None = None
    #: Where the image comes from when the backend cannot see it (Kubernetes: the nodes).
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None and self.image_id is None:
            return {"present": self.present, "error": self.error}
        data = asdict(self)
        data["repo_digests"] = list(self.repo_digests)
        for key in ("error", "note"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageStatus:
        return cls(
            present=data.get("present"),
            image_id=data.get("image_id"),
            repo_digests=tuple(data.get("repo_digests") or ()),
            size=data.get("size"),
            error=data.get("error"),
            note=data.get("note"),
        )


class KernelBackend(abc.ABC):
    """Where kernels run. Subclasses set :attr:`name` and :attr:`features`."""

    #: "docker", "kubernetes" or "broker": for messages and ``GET /me``.
    name: ClassVar[str] = ""
    #: The :data:`FEATURES` this backend has (an instance may narrow them once it knows
    #: more, e.g. the broker client once it asked which backend the broker has).
    features: frozenset[str] = frozenset()
    #: The (uid, gid) every kernel runs as when the backend fixes it (Kubernetes pods),
    #: else None: each caller's own.
    account: tuple[int, int] | None = None

    def supports(self, feature: str) -> bool:
        if feature not in FEATURES:
            raise ValueError(f"unknown backend feature {feature!r}")
        return feature in self.features

    def unsupported(self, feature: str, hint: str = "") -> UnsupportedByBackend:
        return UnsupportedByBackend(self.name, feature, hint)

    # -- kernels ---------------------------------------------------------------------------

    async def prepare_connection(
        self, caller: Caller, kernel_id: str, restart: bool
    ) -> dict[str, Any]:
        """Before a start: where the kernel's connection comes from (the broker's
        ``POST /api/kernels/<id>/runtime`` answer): ``{"runtime_dir"}``, a folder made for
        the caller to write the connection file into ("runtime_dirs"), or ``{"transport",
        "ports", ...}`` for a kernel reached over TCP."""
        raise self.unsupported("connection folders")

    @abc.abstractmethod
    async def start(
        self,
        caller: Caller,
        request: KernelStart,
        env: Environment,
        *,
        admit: Admit | None = None,
    ) -> dict[str, Any]:
        """Start the kernel of the (resolved, allowed) ``env``; its connection info and
        where it runs (the broker's ``POST /api/kernels`` answer). ``admit`` is called
        under the caller's lock before anything is made (quotas). Raises a
        :class:`TFEnvError` that says why not."""

    async def usage(self, caller: Caller, *, exclude: str | None = None) -> Usage:
        """What the caller holds now (running kernels but ``exclude``, probes)."""
        raise self.unsupported("usage counts")

    @abc.abstractmethod
    async def find(self, caller: Caller, kernel_id: str) -> KernelInfo | None:
        """The caller's kernel of that id, or None."""

    async def state(self, caller: Caller, kernel_id: str) -> KernelInfo:
        """The caller's kernel of that id, or :class:`KernelNotFound`."""
        info = await self.find(caller, kernel_id)
        if info is None:
            raise KernelNotFound(kernel_id)
        return info

    @abc.abstractmethod
    async def list_kernels(self, caller: Caller) -> list[KernelSummary]:
        """The caller's kernels, running or not."""

    @abc.abstractmethod
    async def logs(self, caller: Caller, kernel_id: str, tail: int = 30) -> str:
        """The last ``tail`` lines the kernel printed."""

    @abc.abstractmethod
    async def signal(self, caller: Caller, kernel_id: str, signum: int) -> None:
        """Send ``signum`` to the kernel (nothing if it no longer runs)."""

    @abc.abstractmethod
    async def remove(self, caller: Caller, kernel_id: str, *, keep_runtime: bool = False) -> None:
        """Stop and remove the kernel (its connection folder too unless ``keep_runtime``)."""

    async def live(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        """Live readings: status, CPU, memory, pids, GPUs (jupyter_tfenv.backends.docker.live)."""
        raise self.unsupported("live readings")

    async def adopt(self, caller: Caller, kernel_id: str) -> KernelInfo:
        """A kernel a previous server left running, for this server to take over."""
        raise self.unsupported("adopting running kernels")

    # -- environments ----------------------------------------------------------------------

    @abc.abstractmethod
    async def image_status(self, envs: list[Environment]) -> dict[str, ImageStatus]:
        """Each environment's image status, by environment id (one engine call for all)."""

    @abc.abstractmethod
    async def probe(
        self,
        caller: Caller,
        env: Environment,
        *,
        refresh: bool = False,
        admit: Admit | None = None,
    ) -> dict[str, Any]:
        """What the image really has (Python, TensorFlow, CUDA, GPUs): the probe's JSON.
        A probe that runs a container counts as a kernel: ``admit`` as for :meth:`start`."""

    async def compatibility(
        self, envs: list[Environment], images: Mapping[str, ImageStatus]
    ) -> dict[str, dict[str, str]]:
        """Each environment's GPU compatibility where this backend runs kernels
        (``{state, message}``, the environments listing's field; docs/gpus.md): Docker
        from NVML, Kubernetes from the nodes' labels, both from cached probes only (never a
        probe container or pod). {}: this backend cannot judge (the field is left out)."""
        return {}

    async def gpus(self, caller: Caller) -> dict[str, Any]:
        """Each device kernels may get and who holds it (others without names)."""
        raise self.unsupported("GPU allocation")

    async def checkpoints(self, caller: Caller, env_ids: list[str]) -> dict[str, Any]:
        """The caller's checkpoints per environment, read by the backend ("checkpoints")."""
        raise self.unsupported("checkpoints")

    async def delete_checkpoint(
        self, caller: Caller, env: Environment, paths: list[str]
    ) -> dict[str, Any]:
        """Delete checkpoint entries of the caller's ``env`` ("checkpoints")."""
        raise self.unsupported("checkpoints")

    async def sweep(self) -> None:  # noqa: B027 - optional hook
        """Periodic housekeeping (connection folders of kernels that never started)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Let go of clients and tasks (server or broker shutdown)."""
