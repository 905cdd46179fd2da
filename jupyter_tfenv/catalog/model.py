"""The catalog model: an environment as the catalog declares it, once validated.

:class:`Environment` (one entry, with its image reference, resources, mounts and
settings), :class:`Mount` (an extra mount), :class:`CatalogProblem` (why an entry or a file
was left out), and the small parsers the entries use (:func:`parse_size`,
:func:`infer_tensorflow_version`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.catalog.images import ImageRef
from jupyter_tfenv.errors import CatalogError

if TYPE_CHECKING:
    from jupyter_tfenv.catalog.choices import Choices
    from jupyter_tfenv.catalog.derived import Derived

KERNEL_PREFIX = "tfenv-"
_SIZE_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([bkmgt]?)$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_TF_TAG_RE = re.compile(r"^v?([0-9]+\.[0-9]+(?:\.[0-9]+)?(?:rc[0-9]+)?)")


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
    #: Resources a user may choose at launch (jupyter_tfenv.catalog.choices), or None.
    choices: Choices | None = None
    #: What this start chose (``apply_choices``): one value per offered resource.
    chosen: dict[str, Any] = field(default_factory=dict)
    #: A derived environment's base and pins (jupyter_tfenv.catalog.derived), or None.
    derived: Derived | None = None

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
        if self.choices is not None:
            data["choices"] = self.choices.to_config()
        if self.derived is not None:
            # The base as an image (no catalog to look an id up in): the same tag results.
            data["base"] = self.derived.base_image
            data["pip"] = [pin.line() for pin in self.derived.pins]
            data["repository"] = self.derived.repository
            if self.derived.resolution is not None:
                data["resolved"] = self.derived.resolution.to_dict()
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
            "choices": self.choices.summary() if self.choices is not None else None,
            "derived": self.derived.summary() if self.derived is not None else None,
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
