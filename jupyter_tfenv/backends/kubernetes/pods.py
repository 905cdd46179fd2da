"""The kernel's pod and what it mounts: image reference, resources, placement, the
connection Secret, the checkpoint claim, the kernel Pod, and the short helper pods
(environment probes, checkpoint helpers)."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from jupyter_tfenv.backends.kubernetes.gpu import merge_required
from jupyter_tfenv.backends.kubernetes.homes import pod_affinity_term, with_pod_affinity
from jupyter_tfenv.backends.kubernetes.names import (
    _check_namespace,
    _metadata,
    kernel_annotations,
    kernel_labels,
    label_value,
    pod_name,
    pvc_name,
    secret_name,
)
from jupyter_tfenv.backends.kubernetes.start import (
    _DIGEST_RE,
    ALL_ADDRESSES,
    CHECKPOINT_SUBPATH,
    COMPONENT_LABEL,
    CONNECTION_DIR,
    CONNECTION_FILE,
    CONNECTION_PATH,
    GPU_RESOURCE,
    KERNEL_CONTAINER,
    LOG_SUBPATH,
    MANAGED_BY,
    KernelStart,
    KubernetesManifestError,
)
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.labels import (
    LABEL_ENVIRONMENT,
    LABEL_OWNER,
)
from jupyter_tfenv.core.paths import (
    CHECKPOINT_DIR_VAR,
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_LOG_DIR,
    LOG_DIR_VAR,
)
from jupyter_tfenv.kernels import curve

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
        **(start.curve.connection_fields() if start.curve is not None else {}),
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
        "data": {
            name: base64.b64encode(content.encode("utf-8")).decode("ascii")
            for name, content in secret_files(start, text).items()
        },
    }


def secret_files(start: KernelStart, connection: str) -> dict[str, str]:
    """The Secret's files: the connection file, and for an encrypted kernel the launcher
    that binds its CurveZMQ ports (curve_launch.py; code, not a secret, but where the
    pod reads its connection file: no other object, no other permission)."""
    files = {CONNECTION_FILE: connection}
    if start.curve is not None:
        files[curve.LAUNCHER_FILE] = curve.launcher_source()
    return files


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
    """ipykernel from the image, on TCP, all the pod's addresses, the mounted file; an
    encrypted kernel's through the Secret's launcher (its CurveZMQ ports in front)."""
    launcher = (
        [f"{CONNECTION_DIR}/{curve.LAUNCHER_FILE}"]
        if start.curve is not None
        else ["-m", "ipykernel_launcher"]
    )
    return [
        start.env.python,
        *launcher,
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
                "items": [{"key": name, "path": name} for name in secret_files(start, "")],
                # root:fsGroup 0440: the kernel reads it through its group, nobody writes.
                "defaultMode": 0o440,
            },
        },
        {"name": "storage", "persistentVolumeClaim": {"claimName": pvc_name(start)}},
    ]
    home = start.home
    if home is not None:  # the notebook's folder, from the user's home claim (homes.py)
        mounts.append(
            {
                "name": "home",
                "mountPath": home.mount_path,
                **({"subPath": home.sub_path} if home.sub_path else {}),
            }
        )
        volumes.append({"name": "home", "persistentVolumeClaim": {"claimName": home.claim}})
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
        # The notebook's folder where the home is mounted; else writable for any uid.
        "workingDir": home.working_dir if home is not None else "/tmp",  # noqa: S108
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
    if start.node_terms:  # the GPU nodes that can run it (gpu.required_terms)
        spec["affinity"] = merge_required(spec.get("affinity"), [dict(t) for t in start.node_terms])
    if home is not None and home.server_labels is not None:  # ReadWriteOnce: beside the server
        spec["affinity"] = with_pod_affinity(
            spec.get("affinity"), pod_affinity_term(home.server_labels, home.server_namespace)
        )
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
    gpus: int = 0,
    env: Environment | None = None,
) -> dict[str, Any]:
    """A short pod that runs ``command`` with each claim's checkpoint folder at /v/<i>
    (the checkpoint listing and deletion of Kubernetes mode): restricted like a kernel,
    no network use, small limits, never restarted. ``node`` pins it where a running
    kernel holds a ReadWriteOnce claim. ``gpus`` (an environment probe that may hold a
    GPU, ``kubernetes_probe_gpu``): that many ``nvidia.com/gpu``, the memory a GPU
    TensorFlow needs to start, and ``env``'s placement (its GPU nodes' selector,
    tolerations, affinity)."""
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
    if gpus:
        kernel = spec["containers"][0]
        # The device plugin's GPUs, not NVIDIA_VISIBLE_DEVICES=void; CUDA's start needs
        # more than the CPU probe's 256Mi (Docker's probe gets 4 GiB).
        kernel["env"] = [e for e in kernel["env"] if e["name"] != "NVIDIA_VISIBLE_DEVICES"]
        kernel["resources"] = {
            "limits": {"cpu": "1", "memory": "4Gi", GPU_RESOURCE: str(gpus)},
            "requests": {"cpu": "250m", "memory": "1Gi", GPU_RESOURCE: str(gpus)},
        }
        if env is not None and not node:
            spec.update(placement(env))
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
