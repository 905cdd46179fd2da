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

The builders live by concern in sibling modules, all re-exported here (``manifests.X`` is
the public spelling): :mod:`.start` (``KernelStart``, ports, storage options, shared
constants), :mod:`.names` (names and labels), :mod:`.pods` (image, resources, Secret,
claim, kernel and helper pods), :mod:`.servers` (server pod labels and selectors),
:mod:`.network` (NetworkPolicies, owner references). This module assembles one start's
objects (:func:`kernel_objects`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jupyter_tfenv.backends.kubernetes.names import (
    claim_name,
    claim_owned_by,
    dns_label,
    kernel_annotations,
    kernel_labels,
    kernel_pod_name,
    kernel_secret_name,
    kernel_selector,
    label_value,
    legacy_claim_name,
    legacy_kernel_pod_name,
    legacy_label_value,
    network_policy_name,
    pod_name,
    pvc_name,
    secret_name,
)
from jupyter_tfenv.backends.kubernetes.network import (
    DNS_NAMESPACE,
    NON_PUBLIC_V4,
    NON_PUBLIC_V6,
    default_deny_policy,
    egress_allow_rule,
    egress_rules,
    kernel_network_policy,
    owner_reference,
    public_egress_rules,
    with_owner,
)
from jupyter_tfenv.backends.kubernetes.pods import (
    checkpoint_pvc,
    connection_info,
    connection_secret,
    gpu_count,
    helper_pod,
    image_reference,
    kernel_command,
    kernel_env,
    kernel_pod,
    placement,
    pod_image,
    pod_resources,
)
from jupyter_tfenv.backends.kubernetes.servers import (
    SERVER_LABEL_SCHEMES,
    default_server_selector,
    escape_label,
    kubespawner_label,
    server_label,
    server_label_problem,
    server_selector_from,
)
from jupyter_tfenv.backends.kubernetes.start import (
    ALL_ADDRESSES,
    CHECKPOINT_SUBPATH,
    COMPONENT_LABEL,
    CONNECTION_DIR,
    CONNECTION_FILE,
    CONNECTION_PATH,
    ENCRYPTION_ANNOTATION,
    GPU_RESOURCE,
    KERNEL_CONTAINER,
    LOG_SUBPATH,
    MANAGED_BY,
    KernelPorts,
    KernelStart,
    KubernetesManifestError,
    StorageOptions,
)
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

__all__ = [
    "ALL_ADDRESSES",
    "CHECKPOINT_DIR_VAR",
    "CHECKPOINT_SUBPATH",
    "COMPONENT_LABEL",
    "CONNECTION_DIR",
    "CONNECTION_FILE",
    "CONNECTION_PATH",
    "CONTAINER_CHECKPOINT_DIR",
    "CONTAINER_LOG_DIR",
    "DNS_NAMESPACE",
    "ENCRYPTION_ANNOTATION",
    "GPU_RESOURCE",
    "KERNEL_CONTAINER",
    "LABEL_ENVIRONMENT",
    "LABEL_HUB_SERVER",
    "LABEL_IMAGE_REF",
    "LABEL_KERNEL_ID",
    "LABEL_OWNER",
    "LABEL_UID",
    "LOG_DIR_VAR",
    "LOG_SUBPATH",
    "MANAGED_BY",
    "NON_PUBLIC_V4",
    "NON_PUBLIC_V6",
    "SERVER_LABEL_SCHEMES",
    "KernelObjects",
    "KernelPorts",
    "KernelStart",
    "KubernetesManifestError",
    "StorageOptions",
    "checkpoint_pvc",
    "claim_name",
    "claim_owned_by",
    "connection_info",
    "connection_secret",
    "default_deny_policy",
    "default_server_selector",
    "dns_label",
    "egress_allow_rule",
    "egress_rules",
    "escape_label",
    "gpu_count",
    "helper_pod",
    "image_reference",
    "kernel_annotations",
    "kernel_command",
    "kernel_env",
    "kernel_labels",
    "kernel_network_policy",
    "kernel_objects",
    "kernel_pod",
    "kernel_pod_name",
    "kernel_secret_name",
    "kernel_selector",
    "kubespawner_label",
    "label_value",
    "legacy_claim_name",
    "legacy_kernel_pod_name",
    "legacy_label_value",
    "network_policy_name",
    "owner_reference",
    "placement",
    "pod_image",
    "pod_name",
    "pod_resources",
    "public_egress_rules",
    "pvc_name",
    "secret_name",
    "server_label",
    "server_label_problem",
    "server_selector_from",
    "with_owner",
]


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
