"""The Kubernetes objects of one kernel start, as plain dicts (no client calls).

For one kernel (:class:`KernelStart`) a backend creates, in the kernels' namespace:

* the **connection Secret** (:func:`connection_secret`): the kernel's connection file, HMAC
  key included, immutable. Once the pod exists, :func:`with_owner` adds the pod as its
  owner (metadata stays writable on an immutable Secret), so that it goes with the pod;
* the **checkpoint claim** (:func:`checkpoint_pvc`): one PersistentVolumeClaim per user
  and environment, never owned by a pod, mounted at ``/tfenv/checkpoints`` and
  ``/tfenv/logs`` (two subPaths of the one volume);
* the **kernel Pod** (:func:`kernel_pod`): the environment's pinned image, its resources
  (``nvidia.com/gpu`` = the GPU count, requests == limits), its placement from the
  catalog's ``kubernetes`` field, the user's numeric uid/gid and the restricted Pod
  Security Standard; the kernel listens on fixed TCP ports on all the pod's addresses,
  with the connection file mounted read-only from the Secret;
* the **NetworkPolicy** (:func:`kernel_network_policy`): only the owning user's server
  pod may reach the kernel pod, and only on its five ZMQ ports. An environment whose
  catalog ``network`` is ``none`` (the default) gets no egress at all, as on Docker.

Labels are the Docker backend's (``org.jupyter.tfenv.owner``, ``.kernel-id``,
``.environment``, ``.hub-server``) with values made valid label values
(:func:`label_value`); the exact values are also kept in annotations of the same names.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..catalog import Environment
from ..checkpoints import (
    CHECKPOINT_DIR_VAR,
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_LOG_DIR,
    LOG_DIR_VAR,
)
from ..docker_runtime import (
    LABEL_ENVIRONMENT,
    LABEL_IMAGE_REF,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_PREFIX,
    LABEL_UID,
)
from ..errors import TFEnvError

#: The broker's label for the hub server a kernel belongs to (jupyter_tfenv.broker.app has
#: the same name; importing it here would pull in the whole broker).
LABEL_HUB_SERVER = f"{LABEL_PREFIX}.hub-server"
#: The recommended labels every tfenv object carries: what finds them all.
MANAGED_BY = {"app.kubernetes.io/managed-by": "jupyter-tfenv"}
COMPONENT_LABEL = "app.kubernetes.io/component"

#: Where the connection file appears in the kernel container (a read-only Secret volume).
CONNECTION_DIR = "/tfenv/connection"
CONNECTION_FILE = "kernel.json"
CONNECTION_PATH = f"{CONNECTION_DIR}/{CONNECTION_FILE}"
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
_HASH_LEN = 10


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


# --- names and labels ------------------------------------------------------------------


def _digest_of(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:_HASH_LEN]


def label_value(value: str) -> str:
    """``value`` as a valid label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric ends).

    Values that already are valid stay as they are; any other gets a hash of the original
    appended, so that two different names never share a label value ("a@b" and "a-b").
    """
    if len(value) <= _MAX_LABEL and _LABEL_VALUE_RE.match(value):
        return value
    body = re.sub(r"[^A-Za-z0-9._-]+", "-", value)
    body = body[: _MAX_LABEL - _HASH_LEN - 1]
    body = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", body)
    tag = _digest_of(value)
    return f"{body}-{tag}" if body else tag


def dns_label(prefix: str, *parts: str, always_hash: bool = False) -> str:
    """A DNS label (object name, at most 63 characters) from a fixed prefix and free parts.

    Parts are lower-cased and stripped of anything but ``[a-z0-9-]``; when that changed
    them (or ``always_hash``), a hash of the original parts is appended, so different
    parts never give one name.
    """
    cleaned = [re.sub(r"[^a-z0-9-]+", "-", p.lower()).strip("-") for p in parts]
    name = "-".join([prefix, *[c for c in cleaned if c]])
    if not always_hash and cleaned == list(parts) and all(parts) and len(name) <= _MAX_LABEL:
        return name
    tag = _digest_of(*parts)
    head = name[: _MAX_LABEL - _HASH_LEN - 1].rstrip("-")
    return f"{head}-{tag}"


def kernel_labels(start: KernelStart) -> dict[str, str]:
    """The labels of a kernel pod (and its Secret and NetworkPolicy): owner, kernel, …"""
    return {
        **MANAGED_BY,
        COMPONENT_LABEL: "kernel",
        LABEL_OWNER: label_value(start.username),
        LABEL_KERNEL_ID: label_value(start.kernel_id),
        LABEL_ENVIRONMENT: label_value(start.env.id),
        LABEL_HUB_SERVER: label_value(start.server_name),
        LABEL_UID: str(start.uid),
    }


def kernel_annotations(start: KernelStart) -> dict[str, str]:
    """The exact values behind the (possibly escaped) labels, and the image as pinned."""
    return {
        LABEL_OWNER: start.username,
        LABEL_KERNEL_ID: start.kernel_id,
        LABEL_ENVIRONMENT: start.env.id,
        LABEL_HUB_SERVER: start.server_name,
        LABEL_IMAGE_REF: start.env.image,
    }


def kernel_selector(start: KernelStart) -> dict[str, str]:
    """matchLabels that select this kernel's pod and no other."""
    return {
        LABEL_KERNEL_ID: label_value(start.kernel_id),
        LABEL_OWNER: label_value(start.username),
    }


def kernel_pod_name(kernel_id: str) -> str:
    return dns_label("tfenv-kernel", kernel_id)


def kernel_secret_name(kernel_id: str) -> str:
    return dns_label("tfenv-connection", kernel_id)


def pod_name(start: KernelStart) -> str:
    return kernel_pod_name(start.kernel_id)


def secret_name(start: KernelStart) -> str:
    return kernel_secret_name(start.kernel_id)


def network_policy_name(start: KernelStart) -> str:
    return dns_label("tfenv-kernel", start.kernel_id)


def claim_name(username: str, env_id: str) -> str:
    """One name per (user, environment), always with a hash: names never collide."""
    return dns_label("tfenv-storage", username, env_id, always_hash=True)


def pvc_name(start: KernelStart) -> str:
    return claim_name(start.username, start.env.id)


def _check_namespace(namespace: str) -> str:
    if not _DNS_LABEL_RE.match(namespace) or len(namespace) > _MAX_LABEL:
        raise KubernetesManifestError(
            f"namespace '{namespace}' is not a Kubernetes namespace name "
            "(lower case letters, digits and '-', at most 63)."
        )
    return namespace


def _metadata(start: KernelStart, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": _check_namespace(start.namespace), "labels": labels}


# --- image, resources, placement -------------------------------------------------------


def pod_image(start: KernelStart) -> str:
    """The image the pod runs: ``repository@sha256:…`` whenever a digest is known."""
    return image_reference(start.env, start.digest, require_digest=start.require_digest)


def image_reference(env: Environment, digest: str | None, *, require_digest: bool) -> str:
    """``env``'s image as pods run it, given the lock file's ``digest`` of its tag."""
    ref = env.image_ref
    if digest is not None and not _DIGEST_RE.match(digest):
        raise KubernetesManifestError(
            f"locked digest '{digest}' for '{env.id}' is malformed: expected "
            "'sha256:' and 64 lower-case hex digits."
        )
    if ref.digest:
        if digest and digest != ref.digest:
            raise KubernetesManifestError(
                f"Environment '{env.id}' pins {ref.digest} in the catalog, but the lock "
                f"says {digest}; fix one of them (`jupyter tfenv lock {env.id}`)."
            )
        return f"{ref.repository}@{ref.digest}"
    if digest:
        return f"{ref.repository}@{digest}"
    if require_digest:
        raise KubernetesManifestError(
            f"Environment '{env.id}' runs '{env.image}' by tag and has no locked digest: "
            f"run `jupyter tfenv lock {env.id}` (nodes must run the locked bits)."
        )
    return env.image


def gpu_count(env: Environment) -> int:
    """The environment's GPU count; ``all`` and device lists cannot be said on Kubernetes."""
    if env.gpus == "none":
        return 0
    if isinstance(env.gpus, int):
        return env.gpus
    if env.gpus == "all":
        raise KubernetesManifestError(
            f"Environment '{env.id}' asks for gpus: all, which Kubernetes cannot express "
            "(a pod asks for a number of nvidia.com/gpu and the scheduler picks a node that "
            "has them). Set gpus to a count in the catalog, e.g. gpus: 1."
        )
    raise KubernetesManifestError(
        f"Environment '{env.id}' asks for the GPUs {', '.join(env.gpus)} by device id; on "
        "Kubernetes the device plugin picks the devices of the node the pod lands on. "
        f"Set gpus to a count in the catalog, e.g. gpus: {len(env.gpus)}."
    )


def _cpu_quantity(cpus: float) -> str:
    millis = round(cpus * 1000)
    if millis < 1:
        raise KubernetesManifestError(f"cpus {cpus} is below the 1m Kubernetes can express.")
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def pod_resources(start: KernelStart) -> dict[str, dict[str, str]]:
    """limits (memory, cpu, GPUs) and requests equal to them: what is asked is guaranteed."""
    env = start.env
    limits: dict[str, str] = {}
    memory = env.memory or start.default_memory
    if memory:
        limits["memory"] = str(memory)
    cpus = env.cpus or start.default_cpus
    if cpus:
        limits["cpu"] = _cpu_quantity(cpus)
    gpus = gpu_count(env)
    if gpus:
        limits[start.gpu_resource] = str(gpus)
    if not limits:
        return {}
    return {"limits": limits, "requests": dict(limits)}


def placement(env: Environment) -> dict[str, Any]:
    """nodeSelector, tolerations and affinity from the catalog's ``kubernetes`` field."""
    spec: dict[str, Any] = {}
    k8s = copy.deepcopy(env.kubernetes)
    if k8s.get("node_selector"):
        spec["nodeSelector"] = dict(k8s["node_selector"])
    if k8s.get("tolerations"):
        spec["tolerations"] = list(k8s["tolerations"])
    if k8s.get("affinity"):
        spec["affinity"] = dict(k8s["affinity"])
    return spec


# --- the objects -----------------------------------------------------------------------


def connection_info(
    start: KernelStart, key: str, *, ip: str = ALL_ADDRESSES, signature_scheme: str = "hmac-sha256"
) -> dict[str, Any]:
    """The connection file: the kernel's (``ip`` 0.0.0.0) or, with the pod IP, the client's."""
    if not key:
        raise KubernetesManifestError("a kernel's connection file needs a non-empty key.")
    return {
        "transport": "tcp",
        "ip": ip,
        **{f"{name}_port": port for name, port in start.ports.by_name().items()},
        "key": key,
        "signature_scheme": signature_scheme,
        "kernel_name": start.env.kernel_name,
    }


def connection_secret(start: KernelStart, key: str) -> dict[str, Any]:
    """The immutable Secret that holds the connection file (mounted as a file, read-only)."""
    text = json.dumps(connection_info(start, key), indent=1, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            **_metadata(start, secret_name(start), kernel_labels(start)),
            "annotations": kernel_annotations(start),
        },
        "type": "Opaque",
        "immutable": True,
        "data": {CONNECTION_FILE: base64.b64encode(text.encode("utf-8")).decode("ascii")},
    }


def checkpoint_pvc(start: KernelStart) -> dict[str, Any]:
    """The user's claim for this environment: checkpoints and logs; it outlives pods."""
    storage = start.storage
    labels = {
        **MANAGED_BY,
        COMPONENT_LABEL: "checkpoints",
        LABEL_OWNER: label_value(start.username),
        LABEL_ENVIRONMENT: label_value(start.env.id),
    }
    spec: dict[str, Any] = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class is not None:
        spec["storageClassName"] = storage.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            **_metadata(start, pvc_name(start), labels),
            "annotations": {LABEL_OWNER: start.username, LABEL_ENVIRONMENT: start.env.id},
        },
        "spec": spec,
    }


def _security_context() -> dict[str, Any]:
    """Each container's: the restricted Pod Security Standard, stated where it applies."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def kernel_env(start: KernelStart) -> list[dict[str, str]]:
    """The kernel's variables (the catalog's, tfenv's): plain values, never the key."""
    env = start.env
    values = dict(start.environment)
    values.update(env.env)
    values.update(
        {
            "HOME": "/tmp",  # noqa: S108 -- the image's HOME is rarely the user's
            "TFENV_ENVIRONMENT": env.id,
            "TFENV_IMAGE": env.image,
            "TFENV_KERNEL_ID": start.kernel_id,
            CHECKPOINT_DIR_VAR: CONTAINER_CHECKPOINT_DIR,
            LOG_DIR_VAR: CONTAINER_LOG_DIR,
        }
    )
    if not env.wants_gpu:
        # Nodes whose default runtime is NVIDIA's would otherwise give every GPU to
        # CPU pods of -gpu images (they set NVIDIA_VISIBLE_DEVICES=all).
        values["NVIDIA_VISIBLE_DEVICES"] = "void"
        values["CUDA_VISIBLE_DEVICES"] = ""
    return [{"name": k, "value": v} for k, v in sorted(values.items())]


def kernel_command(start: KernelStart) -> list[str]:
    """ipykernel from the image, on TCP, all the pod's addresses, the mounted file."""
    return [
        start.env.python,
        "-m",
        "ipykernel_launcher",
        "-f",
        CONNECTION_PATH,
        f"--ip={ALL_ADDRESSES}",
        "--transport=tcp",
    ]


def kernel_pod(start: KernelStart) -> dict[str, Any]:
    """The kernel Pod (submit it after the Secret and the claim exist, or it waits)."""
    env = start.env
    if start.uid == 0:
        raise KubernetesManifestError(
            "Refusing a kernel pod that runs as root (uid 0): the restricted Pod Security "
            "Standard forbids it. Give the user a non-zero uid."
        )
    if start.uid < 0 or start.gid < 0:
        raise KubernetesManifestError(f"uid {start.uid} / gid {start.gid} must be >= 0.")
    if env.mounts:
        raise KubernetesManifestError(
            f"Environment '{env.id}' has mounts ({', '.join(m.source for m in env.mounts)}): "
            "host folders and Docker volumes cannot be mounted into a restricted pod "
            "(no hostPath). Remove them from the entry to run it on Kubernetes."
        )
    image = pod_image(start)
    mounts = [
        {"name": "connection", "mountPath": CONNECTION_DIR, "readOnly": True},
        {"name": "storage", "mountPath": CONTAINER_CHECKPOINT_DIR, "subPath": CHECKPOINT_SUBPATH},
        {"name": "storage", "mountPath": CONTAINER_LOG_DIR, "subPath": LOG_SUBPATH},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "connection",
            "secret": {
                "secretName": secret_name(start),
                "items": [{"key": CONNECTION_FILE, "path": CONNECTION_FILE}],
                # root:fsGroup 0440: the kernel reads it through its group, nobody writes.
                "defaultMode": 0o440,
            },
        },
        {"name": "storage", "persistentVolumeClaim": {"claimName": pvc_name(start)}},
    ]
    if env.shm_size:
        mounts.append({"name": "shm", "mountPath": "/dev/shm"})  # noqa: S108
        volumes.append(
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": str(env.shm_size)}}
        )
    kernel: dict[str, Any] = {
        "name": KERNEL_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": kernel_command(start),
        # Writable for any uid, like HOME: the notebook's folder is not in the pod.
        "workingDir": "/tmp",  # noqa: S108
        "env": kernel_env(start),
        "ports": [
            {"name": name, "containerPort": port, "protocol": "TCP"}
            for name, port in start.ports.by_name().items()
        ],
        "securityContext": _security_context(),
        "volumeMounts": mounts,
        "stdin": False,
        "tty": False,
    }
    resources = pod_resources(start)
    if resources:
        kernel["resources"] = resources
    # The subPaths must exist and be the user's before the kernel mounts them (kubelet
    # would create missing ones as root): a short container of the same image, as the user.
    prepare = {
        "name": "prepare-storage",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": [
            env.python,
            "-c",
            "import os\nfor d in ('checkpoints', 'logs'):\n"
            "    os.makedirs(os.path.join('/tfenv/storage', d), exist_ok=True)",
        ],
        # No GPU, even where the node's default runtime is NVIDIA's.
        "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}],
        "securityContext": _security_context(),
        "volumeMounts": [{"name": "storage", "mountPath": "/tfenv/storage"}],
        "resources": {
            "limits": {"cpu": "100m", "memory": "128Mi"},
            "requests": {"cpu": "100m", "memory": "128Mi"},
        },
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "terminationGracePeriodSeconds": 15,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": start.uid,
            "runAsGroup": start.gid,
            "fsGroup": start.gid,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [prepare],
        "containers": [kernel],
        "volumes": volumes,
        **placement(env),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **_metadata(start, pod_name(start), kernel_labels(start)),
            "annotations": kernel_annotations(start),
        },
        "spec": spec,
    }


def helper_pod(
    *,
    name: str,
    namespace: str,
    image: str,
    command: list[str],
    claims: list[str],
    uid: int,
    gid: int,
    username: str,
    read_only: bool,
    node: str | None = None,
    scratch: str | None = None,
    component: str = "checkpoint-helper",
) -> dict[str, Any]:
    """A short pod that runs ``command`` with each claim's checkpoint folder at /v/<i>
    (the checkpoint listing and deletion of Kubernetes mode): restricted like a kernel,
    no network use, small limits, never restarted. ``node`` pins it where a running
    kernel holds a ReadWriteOnce claim."""
    if uid == 0:
        raise KubernetesManifestError("Refusing a helper pod that runs as root (uid 0).")
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "activeDeadlineSeconds": 300,
        "terminationGracePeriodSeconds": 0,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "fsGroup": gid,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": KERNEL_CONTAINER,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": command,
                "env": [
                    {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                    {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},
                ],
                "securityContext": {**_security_context(), "readOnlyRootFilesystem": True},
                "resources": {
                    "limits": {"cpu": "250m", "memory": "256Mi"},
                    "requests": {"cpu": "250m", "memory": "256Mi"},
                },
                "volumeMounts": [
                    {
                        "name": f"claim-{i}",
                        "mountPath": f"/v/{i}",
                        "subPath": CHECKPOINT_SUBPATH,
                        "readOnly": read_only,
                    }
                    for i in range(len(claims))
                ],
            }
        ],
        "volumes": [
            {
                "name": f"claim-{i}",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only},
            }
            for i, claim in enumerate(claims)
        ],
    }
    if scratch:  # a small writable folder (the root filesystem is read-only)
        spec["containers"][0]["volumeMounts"].append({"name": "scratch", "mountPath": scratch})
        spec["volumes"].append({"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}})
    if node:
        spec["nodeName"] = node
    labels = {
        **MANAGED_BY,
        COMPONENT_LABEL: component,
        LABEL_OWNER: label_value(username),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": _check_namespace(namespace),
            "labels": labels,
            "annotations": {LABEL_OWNER: username},
        },
        "spec": spec,
    }


_KS_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_KS_HASH_LEN = 8
_KS_MAX = 32


def kubespawner_label(name: str) -> str:
    """The label value KubeSpawner 7 (z2jh 4) gives a user or server name.

    Its documented "safe" scheme: a name that already is a valid label value (and has no
    ``--``) stays as it is; any other becomes a lower-case slug of at most 21 characters
    (runs of anything but ``[a-z0-9]`` become ``-``, it starts with a letter, else ``x-``
    is put in front), then ``---`` and the first 8 hex digits of the name's SHA-256: 32
    characters at most. The server's NetworkPolicy must select exactly this value.
    """
    if not name:
        return ""
    if "--" not in name and len(name) <= _MAX_LABEL and _KS_LABEL_RE.match(name):
        return name
    room = _KS_MAX - _KS_HASH_LEN - 3
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).lstrip("-")[:room].rstrip("-")
    if slug and not slug[0].isalpha():
        slug = "x-" + slug[: room - 2]
    tag = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_KS_HASH_LEN]
    return f"{slug or 'x'}---{tag}"


def default_server_selector(username: str, server_name: str = "") -> dict[str, str]:
    """matchLabels of a user's server pod as KubeSpawner 7 labels it (z2jh 4's defaults):
    ``component: singleuser-server`` and the user (and server) names as
    :func:`kubespawner_label` makes them.

    A deployment that labels server pods differently passes its own selector to
    :func:`kernel_network_policy`.
    """
    labels = {
        "component": "singleuser-server",
        "hub.jupyter.org/username": kubespawner_label(username),
    }
    if server_name:
        labels["hub.jupyter.org/servername"] = kubespawner_label(server_name)
    return labels


def kernel_network_policy(
    start: KernelStart,
    server_selector: Mapping[str, str] | None = None,
    *,
    server_namespace: str | None = None,
) -> dict[str, Any]:
    """Only the owning user's server pod reaches the kernel pod, on its five ports.

    ``server_namespace``: where server pods run when that is not the kernels' namespace
    (the peer then names both the namespace and the pods). Policies add up: the
    namespace needs a default deny (:func:`default_deny_policy`) for this one to be the
    only way in.
    """
    if server_selector is None:
        server_selector = default_server_selector(start.username, start.server_name)
    selector = dict(server_selector)
    if not selector:
        raise KubernetesManifestError("the server pod selector may not be empty (every pod).")
    peer: dict[str, Any] = {"podSelector": {"matchLabels": selector}}
    if server_namespace is not None and server_namespace != start.namespace:
        peer["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": server_namespace}
        }
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": kernel_selector(start)},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [peer],
                "ports": [
                    {"protocol": "TCP", "port": port} for port in start.ports.by_name().values()
                ],
            }
        ],
    }
    if start.env.network == "none":
        # The Docker backend's default: no network. Replies on the ingress connections
        # still flow (policies are stateful); nothing new goes out.
        spec["policyTypes"].append("Egress")
        spec["egress"] = []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(start, network_policy_name(start), kernel_labels(start)),
        "spec": spec,
    }


def default_deny_policy(namespace: str) -> dict[str, Any]:
    """No ingress to any tfenv kernel pod of ``namespace`` but what a kernel's policy allows."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "tfenv-kernels-default-deny",
            "namespace": _check_namespace(namespace),
            "labels": dict(MANAGED_BY),
        },
        "spec": {
            "podSelector": {"matchLabels": {**MANAGED_BY, COMPONENT_LABEL: "kernel"}},
            "policyTypes": ["Ingress"],
        },
    }


def owner_reference(pod: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to ``pod`` as the API server returned it (with its uid)."""
    meta = pod.get("metadata") or {}
    if pod.get("kind") != "Pod" or not meta.get("name") or not meta.get("uid"):
        raise KubernetesManifestError(
            "an owner reference needs the created pod (kind Pod, metadata.name and .uid)."
        )
    return {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}


def with_owner(obj: Mapping[str, Any], pod: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` owned by ``pod``: deleted with it by the garbage collector."""
    ref = owner_reference(pod)
    out = copy.deepcopy(dict(obj))
    meta = out.setdefault("metadata", {})
    if meta.get("namespace") != (pod.get("metadata") or {}).get("namespace"):
        raise KubernetesManifestError(
            "an owner must be in the same namespace as what it owns "
            f"({meta.get('namespace')!r} vs {pod['metadata'].get('namespace')!r})."
        )
    refs = [r for r in meta.get("ownerReferences", []) if r.get("uid") != ref["uid"]]
    meta["ownerReferences"] = [*refs, ref]
    return out


@dataclass(frozen=True)
class KernelObjects:
    """What one kernel start submits, in order: secret, claim (if missing), pod, policy."""

    secret: dict[str, Any]
    pvc: dict[str, Any]
    pod: dict[str, Any]
    network_policy: dict[str, Any]

    def all(self) -> list[dict[str, Any]]:
        return [self.secret, self.pvc, self.pod, self.network_policy]


def kernel_objects(
    start: KernelStart,
    key: str,
    *,
    server_selector: Mapping[str, str] | None = None,
    server_namespace: str | None = None,
) -> KernelObjects:
    return KernelObjects(
        secret=connection_secret(start, key),
        pvc=checkpoint_pvc(start),
        pod=kernel_pod(start),
        network_policy=kernel_network_policy(
            start, server_selector, server_namespace=server_namespace
        ),
    )
