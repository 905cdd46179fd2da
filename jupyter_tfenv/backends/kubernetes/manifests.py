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
  pod may reach the kernel pod, and only on its five ZMQ ports. Egress is always
  restricted: an environment whose catalog ``network`` is ``none`` (the default) gets
  none at all, as on Docker; any other gets public addresses and the cluster's DNS, never
  private, link-local (cloud metadata) or in-cluster addresses, unless the broker's
  ``kubernetes_egress_allow`` opens more (:func:`egress_rules`).

Labels are the Docker backend's (``org.jupyter.tfenv.owner``, ``.kernel-id``,
``.environment``, ``.hub-server``) with values made valid label values
(:func:`label_value`); the exact values are also kept in annotations of the same names.

Object names of a user's things derive from the owner and what they name (the kernel id,
the environment) with a 128-bit hash: two users' objects never share a name, whatever
names they choose (``tests/test_k8s_names.py`` checks it over arbitrary names).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.labels import (
    LABEL_ENVIRONMENT,
    LABEL_HUB_SERVER,
    LABEL_IMAGE_REF,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_UID,
)
from jupyter_tfenv.core.paths import (
    CHECKPOINT_DIR_VAR,
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_LOG_DIR,
    LOG_DIR_VAR,
)
from jupyter_tfenv.errors import TFEnvError

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


# --- names and labels ------------------------------------------------------------------


def _digest_of(*parts: str) -> str:
    """128 bits of SHA-256 over the parts as a JSON list (unambiguous for any strings)."""
    return hashlib.sha256(json.dumps(list(parts)).encode("utf-8")).hexdigest()[:_HASH_LEN]


def _legacy_digest_of(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:_LEGACY_HASH_LEN]


def label_value(value: str) -> str:
    """``value`` as a valid label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric ends).

    Values that already are valid (and hold no ``--``) stay as they are; any other becomes
    a readable slug, ``---`` and 128 bits of a hash of the original. A kept value never
    holds ``--`` and an escaped one always holds ``---``, so no name's label value equals
    another's, even a name chosen to look like an escaped one.
    """
    if "--" not in value and len(value) <= _MAX_LABEL and _LABEL_VALUE_RE.match(value):
        return value
    body = re.sub(r"[^A-Za-z0-9._]+", "-", value)
    body = body[: _MAX_LABEL - _HASH_LEN - 3]
    body = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", body)
    return f"{body or 'x'}---{_digest_of(value)}"


def legacy_label_value(value: str) -> str:
    """The label value objects made before issue 17 carry (a 40-bit hash): what finds them."""
    if len(value) <= _MAX_LABEL and _LABEL_VALUE_RE.match(value):
        return value
    body = re.sub(r"[^A-Za-z0-9._-]+", "-", value)
    body = body[: _MAX_LABEL - _LEGACY_HASH_LEN - 1]
    body = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", body)
    tag = _legacy_digest_of(value)
    return f"{body}-{tag}" if body else tag


def dns_label(prefix: str, *parts: str, always_hash: bool = False) -> str:
    """A DNS label (object name, at most 63 characters) from a fixed prefix and free parts.

    Parts are lower-cased and stripped of anything but ``[a-z0-9-]`` for readability; a
    128-bit hash of the original parts is appended (after ``--``) whenever there is more
    than one part, cleaning changed them, or ``always_hash``: different parts never give
    one name. A name without a hash never holds ``--`` (prefixes hold none), one with a
    hash always does, so the two kinds never meet.
    """
    cleaned = [re.sub(r"[^a-z0-9-]+", "-", p.lower()).strip("-") for p in parts]
    name = "-".join([prefix, *[c for c in cleaned if c]])
    if (
        not always_hash
        and len(parts) == 1
        and cleaned == list(parts)
        and all(parts)
        and "--" not in parts[0]
        and len(name) <= _MAX_LABEL - _HASH_LEN - 3
    ):
        return name
    tag = _digest_of(*parts)
    head = re.sub(r"-+", "-", name[: _MAX_LABEL - _HASH_LEN - 3]).rstrip("-")
    return f"{head}--{tag}"


def _legacy_dns_label(prefix: str, *parts: str, always_hash: bool = False) -> str:
    """:func:`dns_label` as it was before issue 17 (40-bit hash): names of old objects."""
    cleaned = [re.sub(r"[^a-z0-9-]+", "-", p.lower()).strip("-") for p in parts]
    name = "-".join([prefix, *[c for c in cleaned if c]])
    if not always_hash and cleaned == list(parts) and all(parts) and len(name) <= _MAX_LABEL:
        return name
    tag = _legacy_digest_of(*parts)
    head = name[: _MAX_LABEL - _LEGACY_HASH_LEN - 1].rstrip("-")
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
    """matchLabels that select this kernel's pod and no other (label values are injective,
    and a user's kernel ids are theirs)."""
    return {
        LABEL_KERNEL_ID: label_value(start.kernel_id),
        LABEL_OWNER: label_value(start.username),
    }


def kernel_pod_name(username: str, kernel_id: str) -> str:
    """The pod (and NetworkPolicy) of ``username``'s kernel ``kernel_id``: another user's
    kernel of the same id has another name, so a start can never replace theirs."""
    return dns_label("tfenv-kernel", username, kernel_id)


def kernel_secret_name(username: str, kernel_id: str) -> str:
    return dns_label("tfenv-connection", username, kernel_id)


def legacy_kernel_pod_name(kernel_id: str) -> str:
    """The name pods had before issue 17 (the kernel id only)."""
    return _legacy_dns_label("tfenv-kernel", kernel_id)


def pod_name(start: KernelStart) -> str:
    return kernel_pod_name(start.username, start.kernel_id)


def secret_name(start: KernelStart) -> str:
    return kernel_secret_name(start.username, start.kernel_id)


def network_policy_name(start: KernelStart) -> str:
    return kernel_pod_name(start.username, start.kernel_id)


def claim_name(username: str, env_id: str) -> str:
    """One name per (user, environment), with a 128-bit hash: names never collide, even
    for names chosen to collide (the claim is mounted read-write)."""
    return dns_label("tfenv-storage", username, env_id, always_hash=True)


def legacy_claim_name(username: str, env_id: str) -> str:
    """The claim name before issue 17 (a 40-bit hash): still used when such a claim exists
    and its annotations name this user and environment (the backend checks them)."""
    return _legacy_dns_label("tfenv-storage", username, env_id, always_hash=True)


def pvc_name(start: KernelStart) -> str:
    return start.claim or claim_name(start.username, start.env.id)


def claim_owned_by(claim: Mapping[str, Any], username: str, env_id: str) -> bool:
    """Whether a claim's annotations name this user and environment exactly."""
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    return annotations.get(LABEL_OWNER) == username and (
        annotations.get(LABEL_ENVIRONMENT) == env_id
    )


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


_ESCAPE_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
#: How server pods' labels spell names (c.TFEnvBroker.kubernetes_server_label_scheme).
SERVER_LABEL_SCHEMES = ("safe", "escape")


def escape_label(name: str) -> str:
    """The label value KubeSpawner before 7 (and 7 with ``slug_scheme = "escape"``) gives a
    name: escapism with ``-`` as the escape character (each byte of anything but
    ``[a-z0-9]`` as ``-XX``), lower-cased. ``-`` itself is escaped, so the mapping is
    injective ("bob.x" is "bob-2ex", "bob-2ex" is "bob-2d2ex"); names longer than a label
    value allows are refused by :func:`server_label_problem`."""
    out: list[str] = []
    for ch in name:
        if ch in _ESCAPE_SAFE:
            out.append(ch)
        else:
            out.extend(f"-{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out).lower()


def server_label(name: str, scheme: str = "safe") -> str:
    """``name`` (a user's or server's) as the server pod's label value under ``scheme``."""
    if scheme == "safe":
        return kubespawner_label(name)
    if scheme == "escape":
        return escape_label(name)
    raise KubernetesManifestError(
        f"kubernetes_server_label_scheme '{scheme}' is not one of "
        f"{', '.join(SERVER_LABEL_SCHEMES)}."
    )


def server_label_problem(name: str, scheme: str = "safe", *, accept_hashed: bool = False) -> str:
    """Why ``name`` cannot be told apart from another name by its server label value under
    ``scheme`` ('' when it can). The kernel's NetworkPolicy admits the server pods whose
    label equals this value: a value two names share would admit the other's server."""
    if not name:
        return ""
    label = server_label(name, scheme)
    if len(label) > _MAX_LABEL or not _LABEL_VALUE_RE.match(label):
        return (
            f"'{name}' is too long for a label value under the '{scheme}' scheme ('{label}' "
            "has more than 63 characters): server pods could not be told apart by it."
        )
    if scheme == "safe" and label != name and not accept_hashed:
        return (
            f"'{name}' is not a valid label value as it is, so KubeSpawner labels its server "
            f"'{label}', which carries a 32-bit hash: another name chosen to match it would be "
            "admitted to this user's kernels. Ask an admin for a name of letters, digits, "
            "'.', '_' and single '-', or (where users cannot choose their names) to set "
            "c.TFEnvBroker.kubernetes_accept_hashed_server_labels = True."
        )
    return ""


def server_selector_from(
    template: Mapping[str, str], scheme: str = "safe", *, accept_hashed: bool = False
) -> Callable[[str, str], dict[str, str]]:
    """A server selector (user, server name) -> matchLabels from a template such as
    ``{"component": "singleuser-server", "hub.jupyter.org/username": "{username}",
    "hub.jupyter.org/servername": "{servername}"}``: ``{username}`` and ``{servername}``
    become the names' label values under ``scheme``; a label whose value renders empty
    (the default server's name) is left out. A name whose label value is ambiguous
    (:func:`server_label_problem`) is refused with the reason."""
    if scheme not in SERVER_LABEL_SCHEMES:
        raise KubernetesManifestError(
            f"kubernetes_server_label_scheme '{scheme}' is not one of "
            f"{', '.join(SERVER_LABEL_SCHEMES)}."
        )
    if not any("{username}" in str(v) for v in template.values()):
        raise KubernetesManifestError(
            "c.TFEnvBroker.kubernetes_server_selector must select the user: one of its "
            "values must hold '{username}' (else every user's server reaches every kernel)."
        )

    def selector(username: str, server_name: str = "") -> dict[str, str]:
        for what, name in (("user name", username), ("server name", server_name)):
            problem = server_label_problem(name, scheme, accept_hashed=accept_hashed)
            if problem:
                raise KubernetesManifestError(f"The {what} {problem}")
        labels: dict[str, str] = {}
        for key, value in template.items():
            try:
                rendered = str(value).format(
                    username=server_label(username, scheme),
                    servername=server_label(server_name, scheme) if server_name else "",
                )
            except (KeyError, IndexError, ValueError) as err:
                raise KubernetesManifestError(
                    f"c.TFEnvBroker.kubernetes_server_selector['{key}'] = {value!r}: only "
                    f"{{username}} and {{servername}} may appear ({err})."
                ) from err
            if rendered:
                labels[key] = rendered
        return labels

    return selector


#: Addresses a networked kernel never reaches (unless kubernetes_egress_allow opens them):
#: private ranges (in-cluster services, the nodes), carrier-grade NAT, link-local (the
#: cloud metadata server 169.254.169.254), loopback, multicast, reserved. As z2jh's
#: egressAllowRules.nonPrivateIPs, with more ranges.
NON_PUBLIC_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
NON_PUBLIC_V6 = ("::1/128", "::ffff:0:0/96", "64:ff9b::/96", "fc00::/7", "fe80::/10", "ff00::/8")
#: Where a networked kernel resolves names: the cluster DNS in kube-system.
DNS_NAMESPACE = "kube-system"

_ALLOW_RE = re.compile(
    r"^(?P<net>[0-9A-Fa-f:.]+/\d{1,3})(?::(?P<port>\d{1,5})(?:/(?P<proto>TCP|UDP|SCTP))?)?$"
)


def public_egress_rules() -> list[dict[str, Any]]:
    """The egress every networked kernel gets: public addresses, and DNS (53, UDP and TCP)
    to the cluster's DNS pods in kube-system."""
    return [
        {
            "to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(NON_PUBLIC_V4)}},
                {"ipBlock": {"cidr": "::/0", "except": list(NON_PUBLIC_V6)}},
            ]
        },
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": DNS_NAMESPACE}
                    }
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
    ]


def egress_allow_rule(item: str | Mapping[str, Any]) -> dict[str, Any]:
    """One entry of c.TFEnvBroker.kubernetes_egress_allow as a NetworkPolicy egress rule:
    ``"10.20.0.0/16"`` (every port), ``"10.20.0.5/32:5432"`` (TCP), ``"10.0.0.10/32:53/UDP"``,
    or a NetworkPolicyEgressRule dict (``to``, ``ports``) taken as it is."""
    if isinstance(item, Mapping):
        extra = sorted(set(item) - {"to", "ports"})
        if extra or not item:
            raise KubernetesManifestError(
                f"kubernetes_egress_allow entry {dict(item)!r}: a NetworkPolicy egress rule "
                f"has only 'to' and 'ports'{f', not {extra}' if extra else ''}."
            )
        return copy.deepcopy(dict(item))
    match = _ALLOW_RE.match(str(item).strip())
    if match is None:
        raise KubernetesManifestError(
            f"kubernetes_egress_allow entry {item!r}: expected 'CIDR', 'CIDR:PORT' or "
            "'CIDR:PORT/UDP' (e.g. '10.20.0.5/32:5432'), or an egress rule dict."
        )
    try:
        net = ipaddress.ip_network(match["net"], strict=True)
    except ValueError as err:
        raise KubernetesManifestError(f"kubernetes_egress_allow entry {item!r}: {err}.") from err
    rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": str(net)}}]}
    if match["port"]:
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise KubernetesManifestError(f"kubernetes_egress_allow entry {item!r}: bad port.")
        rule["ports"] = [{"protocol": match["proto"] or "TCP", "port": port}]
    return rule


def egress_rules(
    network: str, allow: Sequence[str | Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """A kernel's egress rules: none for ``network: none``; else public addresses, DNS and
    what the admin opened on purpose (``allow``)."""
    if network == "none":
        return []
    return [*public_egress_rules(), *(egress_allow_rule(a) for a in allow)]


def kernel_network_policy(
    start: KernelStart,
    server_selector: Mapping[str, str] | None = None,
    *,
    server_namespace: str | None = None,
    egress_allow: Sequence[str | Mapping[str, Any]] = (),
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
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [peer],
                "ports": [
                    {"protocol": "TCP", "port": port} for port in start.ports.by_name().values()
                ],
            }
        ],
        # Always stated: ``network: none`` (the Docker backend's default) lets nothing new
        # out (replies on the ingress connections still flow: policies are stateful); any
        # other network reaches public addresses and DNS only, never the cluster's
        # services or the cloud metadata server (as z2jh's servers).
        "egress": egress_rules(start.env.network, egress_allow),
    }
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
    egress_allow: Sequence[str | Mapping[str, Any]] = (),
) -> KernelObjects:
    return KernelObjects(
        secret=connection_secret(start, key),
        pvc=checkpoint_pvc(start),
        pod=kernel_pod(start),
        network_policy=kernel_network_policy(
            start, server_selector, server_namespace=server_namespace, egress_allow=egress_allow
        ),
    )
