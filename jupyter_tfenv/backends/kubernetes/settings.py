"""What :class:`~jupyter_tfenv.backends.kubernetes.backend.KubernetesBackend` is given:
:class:`KubernetesSettings`, plain values (no broker, no traitlets).

The broker's ``kubernetes_*`` traits (docs/kubernetes.md) are their source:
:meth:`KubernetesSettings.from_config` reads them from any object that has them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The labels of a user's server pods (KubeSpawner's), as the broker's trait defaults them.
DEFAULT_SERVER_SELECTOR: Mapping[str, str] = {
    "component": "singleuser-server",
    "hub.jupyter.org/username": "{username}",
    "hub.jupyter.org/servername": "{servername}",
}


@dataclass(frozen=True)
class KubernetesSettings:
    """Where and how kernel pods run. Each field is the broker trait ``kubernetes_<field>``
    unless said otherwise (docs/kubernetes.md explains them)."""

    #: Namespace of the kernel pods, their Secrets, claims and NetworkPolicies.
    namespace: str = "tfenv-kernels"
    #: Namespace of the users' servers, which the kernels' NetworkPolicy lets in
    #: ("": the kernels' own).
    server_namespace: str = ""
    #: The labels of a user's server pods ({username}, {servername} filled in).
    server_selector: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_SERVER_SELECTOR)
    )
    #: How the server pods' labels spell names: "safe" or "escape".
    server_label_scheme: str = "safe"
    accept_hashed_server_labels: bool = False
    #: Egress a networked kernel pod gets beyond public addresses: "CIDR", "CIDR:PORT",
    #: "CIDR:PORT/UDP" or NetworkPolicy egress rule dicts.
    egress_allow: tuple[str | Mapping[str, Any], ...] = ()
    #: A kubeconfig file and its context ("": in-cluster, $KUBECONFIG or ~/.kube/config).
    config: str = ""
    context: str = ""
    #: The checkpoint claims: storage class ("": the cluster's default), size, modes.
    storage_class: str = ""
    storage_size: str = "10Gi"
    storage_access_modes: tuple[str, ...] = ("ReadWriteOnce",)
    #: The account every kernel pod runs as (users are kept apart by claims, not uids).
    uid: int = 1000
    gid: int = 100
    #: Seconds a pod may take to run (pulls not counted), to pull, to stay unschedulable.
    start_timeout: float = 120.0
    pull_timeout: float = 1800.0
    schedule_timeout: float = 10.0
    #: Checkpoint helper pods one user may run at a time (a request beyond waits).
    helper_pods_per_user: int = 1
    #: The notebook's folder in the kernel pod (homes.py): mount the user's home claim
    #: (``home_claim``, named as the server labels are), the server's folder at the same
    #: path as under ``home_path`` on the server, and run in the notebook's folder.
    mount_home: bool = False
    home_claim: str = "claim-{username}"
    home_path: str = "/home/jovyan"
    #: Memory limit in bytes of environments that set none (broker's ``default_memory``;
    #: None: no limit).
    default_memory: int | None = None
    #: Seconds one environment probe pod may take (broker's ``probe_timeout``).
    probe_timeout: float = 180.0
    #: Start GPU kernels of environments no GPU node can run (broker's
    #: ``allow_incompatible_gpus``, as on Docker; docs/gpus.md).
    allow_incompatible_gpus: bool = False
    #: A DCGM exporter's /metrics URL for the GPUs' live use ("": none); ``{node}`` and
    #: ``{host_ip}`` become the kernel pod's node name and address.
    dcgm_exporter_url: str = ""
    #: Give a GPU environment's probe pod one GPU (it holds it for its seconds), so the
    #: probe says which GPUs TensorFlow sees.
    probe_gpu: bool = False
    #: CurveZMQ between servers and kernel pods: "prefer", "require" or "off"
    #: (kernels/curve.py).
    kernel_encryption: str = "prefer"

    @classmethod
    def from_config(cls, obj: Any) -> KubernetesSettings:
        """The settings from an object with the broker's traits (``TFEnvBroker``): its
        ``kubernetes_*`` values, ``default_memory`` and ``probe_timeout``."""
        return cls(
            namespace=obj.kubernetes_namespace,
            server_namespace=obj.kubernetes_server_namespace or "",
            server_selector=dict(obj.kubernetes_server_selector),
            server_label_scheme=obj.kubernetes_server_label_scheme,
            accept_hashed_server_labels=bool(obj.kubernetes_accept_hashed_server_labels),
            egress_allow=tuple(obj.kubernetes_egress_allow),
            config=obj.kubernetes_config,
            context=obj.kubernetes_context,
            storage_class=obj.kubernetes_storage_class or "",
            storage_size=obj.kubernetes_storage_size,
            storage_access_modes=tuple(obj.kubernetes_storage_access_modes),
            uid=int(obj.kubernetes_uid),
            gid=int(obj.kubernetes_gid),
            start_timeout=float(obj.kubernetes_start_timeout),
            pull_timeout=float(obj.kubernetes_pull_timeout),
            schedule_timeout=float(obj.kubernetes_schedule_timeout),
            helper_pods_per_user=int(obj.kubernetes_helper_pods_per_user),
            mount_home=bool(getattr(obj, "kubernetes_mount_home", False)),
            home_claim=str(getattr(obj, "kubernetes_home_claim", "claim-{username}")),
            home_path=str(getattr(obj, "kubernetes_home_path", "/home/jovyan")),
            default_memory=obj.default_memory or None,
            probe_timeout=float(obj.probe_timeout),
            allow_incompatible_gpus=bool(getattr(obj, "allow_incompatible_gpus", False)),
            dcgm_exporter_url=str(getattr(obj, "kubernetes_dcgm_exporter_url", "") or ""),
            probe_gpu=bool(getattr(obj, "kubernetes_probe_gpu", False)),
            kernel_encryption=str(getattr(obj, "kubernetes_kernel_encryption", "prefer")),
        )
