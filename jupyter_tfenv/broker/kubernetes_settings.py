"""The broker's Kubernetes settings (``backend = "kubernetes"``, docs/kubernetes.md): a
mixin of :class:`~jupyter_tfenv.broker.app.TFEnvBroker`, so they stay
``c.TFEnvBroker.kubernetes_*``; ``KubernetesSettings.from_config`` reads them.
"""

from __future__ import annotations

from pathlib import Path

from traitlets import Bool, Dict, Enum, Float, HasTraits, Integer, List, Unicode, Union, default

#: Where a pod's ServiceAccount namespace is mounted (in-cluster).
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class KubernetesBrokerSettings(HasTraits):
    """Where and how the broker makes kernel pods."""

    kubernetes_namespace = Unicode(
        "tfenv-kernels",
        help="""Namespace of the kernel pods, their Secrets, checkpoint claims and
        NetworkPolicies. Label it pod-security.kubernetes.io/enforce=restricted; the
        broker's Role is in this namespace only.""",
    ).tag(config=True)

    kubernetes_server_namespace = Unicode(
        help="""Namespace of the users' servers, which the kernels' NetworkPolicy lets in.
        Default: the broker's own (its ServiceAccount's namespace), else the kernels'.""",
    ).tag(config=True)

    @default("kubernetes_server_namespace")
    def _default_kubernetes_server_namespace(self) -> str:
        try:
            return Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
        except OSError:
            return ""

    kubernetes_config = Unicode(
        "",
        help="""A kubeconfig file. Default '': in-cluster credentials when the broker runs
        in a pod, else $KUBECONFIG or ~/.kube/config.""",
    ).tag(config=True)

    kubernetes_context = Unicode("", help="The kubeconfig context ('' : its current one).").tag(
        config=True
    )

    kubernetes_storage_class = Unicode(
        "",
        help="""Storage class of the checkpoint claims ('' : the cluster's default). One
        claim per user and environment; it outlives the pods.""",
    ).tag(config=True)

    kubernetes_storage_size = Unicode("10Gi", help="Size of each checkpoint claim.").tag(
        config=True
    )

    kubernetes_storage_access_modes = List(
        Unicode(),
        default_value=["ReadWriteOnce"],
        help="""Access modes of the checkpoint claims. ReadWriteOnce binds a claim to one
        node at a time: two kernels of one user and environment on two nodes need
        ReadWriteMany (NFS, CephFS, ...).""",
    ).tag(config=True)

    kubernetes_uid = Integer(
        1000,
        help="""uid the kernel pods run as (users are kept apart by their own claims,
        Secrets and policies, not by uids). Not 0: the restricted standard forbids it.""",
    ).tag(config=True)

    kubernetes_gid = Integer(100, help="gid (and fsGroup) of the kernel pods.").tag(config=True)

    kubernetes_start_timeout = Float(
        120.0,
        help="""Seconds a kernel pod may take to run, image pulls not counted (they have
        kubernetes_pull_timeout).""",
    ).tag(config=True)

    kubernetes_pull_timeout = Float(
        1800.0,
        help="""Seconds a node may spend pulling a kernel image during one start
        (pre-pull big images with a DaemonSet: docs/kubernetes.md).""",
    ).tag(config=True)

    kubernetes_schedule_timeout = Float(
        10.0,
        help="""Seconds a kernel pod may stay unschedulable (no node with a free GPU, ...)
        before the start fails with the scheduler's reason. Raise it where a cluster
        autoscaler adds nodes.""",
    ).tag(config=True)

    kubernetes_egress_allow = List(
        Union([Unicode(), Dict()]),
        default_value=[],
        help="""Egress a networked kernel pod (catalog network other than 'none') gets
        beyond public addresses and the cluster DNS: 'CIDR' (every port), 'CIDR:PORT'
        (TCP), 'CIDR:PORT/UDP', or a NetworkPolicy egress rule dict ({'to': [...],
        'ports': [...]}). Private, link-local (the cloud metadata server) and in-cluster
        addresses are closed unless listed here (docs/kubernetes.md).""",
    ).tag(config=True)

    kubernetes_server_selector = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        default_value={
            "component": "singleuser-server",
            "hub.jupyter.org/username": "{username}",
            "hub.jupyter.org/servername": "{servername}",
        },
        help="""The labels of a user's server pods, which a kernel's NetworkPolicy admits:
        {username} and {servername} become the names' label values under
        kubernetes_server_label_scheme; a label that renders empty (the default server's
        name) is left out. One value must hold {username}.""",
    ).tag(config=True)

    kubernetes_server_label_scheme = Enum(
        ["safe", "escape"],
        default_value="safe",
        help="""How the server pods' labels spell names: 'safe' (KubeSpawner 7, z2jh 4)
        or 'escape' (KubeSpawner before 7, or slug_scheme='escape'). Names whose label
        value another name could share are refused (docs/kubernetes.md).""",
    ).tag(config=True)

    kubernetes_accept_hashed_server_labels = Bool(
        False,
        help="""Under the 'safe' scheme, accept user and server names that KubeSpawner
        labels with a 32-bit hash (e-mail addresses, ...): another name could be chosen to
        share the label and reach the user's kernel ports. Set it only where users cannot
        choose their hub names.""",
    ).tag(config=True)

    kubernetes_helper_pods_per_user = Integer(
        1,
        help="""Checkpoint helper pods (listing, deletion) one user may run at a time; a
        request beyond waits for a slot. Each holds 250m CPU and 256Mi.""",
    ).tag(config=True)

    kubernetes_mount_home = Bool(
        False,
        help="""Mount the user's home claim (kubernetes_home_claim) into each kernel pod: the
        server's folder at the same path, the notebook's folder as the working directory,
        so files beside the notebook are the kernel's. ReadWriteOnce claims put the kernel
        on its server's node (pod affinity to kubernetes_server_selector's labels);
        ReadWriteMany claims any node. The claim must be in kubernetes_namespace
        (docs/kubernetes.md, "The notebook's folder"). Off: kernels start in /tmp.""",
    ).tag(config=True)

    kubernetes_home_claim = Unicode(
        "claim-{username}",
        help="""The name of a user's home claim, as the servers' (z2jh:
        singleuser.storage.dynamic.pvcNameTemplate): {username} and {servername} spelled
        as kubernetes_server_label_scheme says.""",
    ).tag(config=True)

    kubernetes_home_path = Unicode(
        "/home/jovyan",
        help="""Where the servers mount the home claim (z2jh: singleuser.storage.homeMountPath):
        the notebook's folder must be inside it, and is mounted relative to it.""",
    ).tag(config=True)

    kubernetes_dcgm_exporter_url = Unicode(
        "",
        help="""The /metrics URL of an NVIDIA DCGM exporter run with pod mapping, for the
        GPU use of kernel pods in the panel ('' : none, the panel says so). {node} and
        {host_ip} become the kernel pod's node name and address, for one exporter per node
        (e.g. 'http://{host_ip}:9400/metrics' with a hostPort). docs/kubernetes.md,
        "Live readings".""",
    ).tag(config=True)

    kubernetes_kernel_encryption = Enum(
        ["prefer", "require", "off"],
        "prefer",
        help="""CurveZMQ encryption of the ZeroMQ traffic between users' servers and kernel
        pods (docs/kubernetes.md, "Encrypted kernel traffic"). 'prefer': encrypted where
        the user's server offers keys (jupyter_client 8.10 or later, pyzmq with CurveZMQ)
        and the image's pyzmq is not known to lack CurveZMQ; otherwise in clear, with a
        WARNING here and encryption 'none' in the kernel's status. 'require': such a start
        is refused (409) with what is missing. 'off': never encrypted.""",
    ).tag(config=True)

    kubernetes_probe_gpu = Bool(
        False,
        help="""Give a GPU environment's probe pod one GPU (nvidia.com/gpu: 1, the entry's
        node selector, tolerations and affinity), so that the probe says which GPUs
        TensorFlow sees. It holds a GPU for the probe's seconds, counted against the user's
        GPU limit; where that limit leaves none, or no GPU is free within
        kubernetes_schedule_timeout, the probe runs without one and says why.""",
    ).tag(config=True)
