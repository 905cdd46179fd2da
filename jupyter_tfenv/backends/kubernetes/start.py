"""What one kernel start is made of (:class:`KernelStart`, its ports and storage options),
and the constants every Kubernetes object of tfenv shares (labels, in-pod paths)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.errors import TFEnvError

if TYPE_CHECKING:
    from jupyter_tfenv.backends.kubernetes.homes import HomeMount
    from jupyter_tfenv.kernels.curve import CurveKeys

#: The recommended labels every tfenv object carries: what finds them all.
MANAGED_BY = {"app.kubernetes.io/managed-by": "jupyter-tfenv"}
COMPONENT_LABEL = "app.kubernetes.io/component"

#: Where the connection file appears in the kernel container (a read-only Secret volume).
CONNECTION_DIR = "/tfenv/connection"
CONNECTION_FILE = "kernel.json"
CONNECTION_PATH = f"{CONNECTION_DIR}/{CONNECTION_FILE}"
#: On an encrypted kernel's pod and Secret: "curve" (kernels/curve.py); absent: in clear.
ENCRYPTION_ANNOTATION = "org.jupyter.tfenv.encryption"
#: The kernel container's name in the pod.
KERNEL_CONTAINER = "kernel"
#: The resource a GPU count asks for (the NVIDIA device plugin's).
GPU_RESOURCE = "nvidia.com/gpu"
#: Sub-folders of the checkpoint claim, one per mount.
CHECKPOINT_SUBPATH = "checkpoints"
LOG_SUBPATH = "logs"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_MAX_LABEL = 63
#: The kernel binds every address of its pod: the pod IP is what the server connects to.
ALL_ADDRESSES = "0.0.0.0"  # noqa: S104
#: Hex digits of the hash in names and label values: 128 bits (no chosen-name collisions).
_HASH_LEN = 32
#: Before issue 17, names and label values carried 40 bits (10 hex digits): what objects
#: made then are found by (:func:`legacy_claim_name`, :func:`legacy_kernel_pod_name`).
_LEGACY_HASH_LEN = 10


class KubernetesManifestError(TFEnvError):
    """An environment or a start request cannot be expressed as a Kubernetes pod."""

    http_status = 400


@dataclass(frozen=True)
class KernelPorts:
    """The kernel's five ZMQ ports: fixed, since every pod has its own IP address."""

    shell: int = 52000
    iopub: int = 52001
    stdin: int = 52002
    control: int = 52003
    hb: int = 52004

    def __post_init__(self) -> None:
        ports = list(self.by_name().values())
        if len(set(ports)) != len(ports):
            raise KubernetesManifestError(f"kernel ports must be five different ports: {ports}.")
        for name, port in self.by_name().items():
            if not isinstance(port, int) or not 1024 <= port <= 65535:
                raise KubernetesManifestError(
                    f"kernel port {name}={port!r}: use an unprivileged port (1024-65535); "
                    "the kernel runs without capabilities."
                )

    def by_name(self) -> dict[str, int]:
        """``{"shell": 52000, …}``: also the containerPort names."""
        return {
            "shell": self.shell,
            "iopub": self.iopub,
            "stdin": self.stdin,
            "control": self.control,
            "hb": self.hb,
        }


@dataclass(frozen=True)
class StorageOptions:
    """The checkpoint claim: its storage class (None: the cluster's default), size, modes."""

    storage_class: str | None = None
    size: str = "10Gi"
    #: ReadWriteOnce binds the volume to one node at a time: two kernels of one user and
    #: environment on two nodes need ReadWriteMany (NFS, CephFS, …).
    access_modes: tuple[str, ...] = ("ReadWriteOnce",)


@dataclass(frozen=True)
class KernelStart:
    """Everything one kernel start needs to know to build its objects."""

    env: Environment
    #: The hub user (their name, exactly as JupyterHub spells it).
    username: str
    uid: int
    gid: int
    kernel_id: str
    namespace: str
    #: The hub's server name ("" for the default server).
    server_name: str = ""
    ports: KernelPorts = field(default_factory=KernelPorts)
    #: The lock file's digest for the environment's tag: the pod then runs image@digest.
    digest: str | None = None
    #: Refuse to build a pod that would run an image by tag only.
    require_digest: bool = False
    storage: StorageOptions = field(default_factory=StorageOptions)
    #: Used where the catalog entry sets no memory (bytes) or cpus.
    default_memory: int | None = None
    default_cpus: float | None = None
    gpu_resource: str = GPU_RESOURCE
    #: Extra variables for the kernel (the server's allow-list: USER, LANG, …).
    environment: Mapping[str, str] = field(default_factory=dict)
    #: The checkpoint claim's name when it is not :func:`claim_name`'s (a claim made
    #: before issue 17, found and checked by the backend).
    claim: str | None = None
    #: nodeSelectorTerms the GPU compatibility check requires (``gpu.required_terms``):
    #: joined with the catalog's node affinity; () requires nothing.
    node_terms: tuple[Mapping[str, Any], ...] = ()
    #: The user's home claim to mount, the notebook's folder to run in (homes.py); None:
    #: the kernel starts in /tmp with its checkpoint claim only.
    home: HomeMount | None = None
    #: The kernel's CurveZMQ server key pair (kernels/curve.py): the Secret carries it and
    #: the launcher that encrypts in front of ipykernel; None: the kernel talks in clear.
    curve: CurveKeys | None = None
