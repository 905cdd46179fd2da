"""The one interface between "a kernel" and "where it runs": :class:`KernelBackend`.

Three peers implement it (docs/ARCHITECTURE.md draws them):

- ``jupyter_tfenv.backends.docker.DockerBackend``: containers on a Docker engine. A local
  Jupyter server holds one in-process; the broker holds one for all hub users.
- ``jupyter_tfenv.backends.kubernetes.KubernetesBackend``: pods, for the broker. It is
  given its settings, never the broker.
- ``jupyter_tfenv.backends.broker.BrokerBackend``: the broker's REST API, for a
  single-user server on a hub (the broker answers with one of the two above).

The kernel provisioner, the server's REST service and the broker each hold one backend and
never ask which one it is. A feature a backend lacks is said by :meth:`KernelBackend.supports`
and, if called anyway, by :class:`UnsupportedByBackend` (a message, HTTP 501), never by an
``if`` on the mode.

Every method takes the :class:`~jupyter_tfenv.core.caller.Caller` it acts for: a backend
only ever sees and touches that caller's kernels. The result types are small dataclasses
whose ``to_dict()`` is the broker's REST shape (docs/broker.md), so the broker serves them
as they are and :class:`BrokerBackend` reads them back.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from jupyter_tfenv.catalog import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.errors import NotFoundError, TFEnvError

#: What a backend may or may not do; ``supports()`` answers for each.
FEATURES = (
    "adopt",  # find a running kernel again after the server restarted (keep_kernels_on_stop)
    "pool",  # kernels started ahead for no notebook yet (catalog pool_size)
    "live",  # live CPU, memory and GPU readings of a kernel
    "gpu_allocation",  # devices handed out by tfenv (else: by the scheduler, or none)
    "runtime_dirs",  # connection folders on a host path the server can read
)


class UnsupportedByBackend(TFEnvError):
    """A backend was asked for something it does not do: says which, and where it is done."""

    http_status = 501

    def __init__(self, backend: str, feature: str, hint: str = "") -> None:
        message = f"The {backend} backend does not support {feature}."
        super().__init__(f"{message} {hint}".strip())
        self.backend = backend
        self.feature = feature


class KernelNotFound(NotFoundError):
    """No kernel of that id belongs to the caller (the same answer whether it exists for
    someone else or not at all)."""

    def __init__(self, kernel_id: str) -> None:
        super().__init__(f"No kernel {kernel_id} of yours.")
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> KernelInfo:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


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
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class ImageStatus:
    """Whether an environment's image is where kernels start (``present`` None: unknown)."""

    present: bool | None
    image_id: str | None = None
    repo_digests: tuple[str, ...] = ()
    size: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["repo_digests"] = list(self.repo_digests)
        if self.error is None:
            del data["error"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageStatus:
        return cls(
            present=data.get("present"),
            image_id=data.get("image_id"),
            repo_digests=tuple(data.get("repo_digests") or ()),
            size=data.get("size"),
            error=data.get("error"),
        )


class KernelBackend(abc.ABC):
    """Where kernels run. Subclasses set :attr:`name` and :attr:`features`."""

    #: "docker", "kubernetes" or "broker": for messages and ``GET /me``.
    name: ClassVar[str] = ""
    #: The :data:`FEATURES` this backend has.
    features: ClassVar[frozenset[str]] = frozenset()

    def supports(self, feature: str) -> bool:
        if feature not in FEATURES:
            raise ValueError(f"unknown backend feature {feature!r}")
        return feature in self.features

    def unsupported(self, feature: str, hint: str = "") -> UnsupportedByBackend:
        return UnsupportedByBackend(self.name, feature, hint)

    # -- kernels ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def start(self, caller: Caller, request: KernelStart) -> dict[str, Any]:
        """Start the kernel; its connection info and where it runs (the broker's
        ``POST /api/kernels`` answer). Raises a :class:`TFEnvError` that says why not."""

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
        self, caller: Caller, env: Environment, *, refresh: bool = False
    ) -> dict[str, Any]:
        """What the image really has (Python, TensorFlow, CUDA, GPUs): the probe's JSON."""

    async def gpus(self, caller: Caller) -> dict[str, Any]:
        """Each device kernels may get and who holds it (others without names)."""
        raise self.unsupported("GPU allocation")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Let go of clients and tasks (server or broker shutdown)."""
