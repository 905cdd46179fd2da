"""Kubernetes kernels (issue 11) against a real cluster: what tests/backends/test_k8s_backend.py
shows against the scripted API, shown by a cluster's API server, scheduler and kubelets.

Run it (Kubernetes 1.30+, the kernels' namespace made by
``kubectl apply -f examples/kubernetes/namespace.yaml``)::

    KUBECONFIG=~/.kube/config bash scripts/test.sh tests/k8s_cluster

Every test is skipped when ``KUBECONFIG`` is unset, names a file that cannot be loaded,
or its API server does not answer ``GET /version`` within seconds. Settings, from the
environment:

``KUBECONFIG``
    the cluster and identity (its current context). The identity needs the broker's
    permissions in the namespace (docs/kubernetes.md, "Security"), plus ``delete`` on
    persistentvolumeclaims (cleanup), ``get`` on the namespace (else the label test is
    skipped) and ``list`` on nodes (else the GPU test is skipped).
``TFENV_K8S_NAMESPACE``
    the kernels' namespace, default ``tfenv-kernels``; it must exist and be labelled
    ``pod-security.kubernetes.io/enforce=restricted``.
``TFENV_K8S_IMAGE``
    the CPU kernel image, default ``tensorflow/tensorflow:2.20.0-jupyter`` (it must have
    TensorFlow and ipykernel, and ``python3`` on PATH).
``TFENV_K8S_GPU_IMAGE``
    the GPU kernel image, default ``tensorflow/tensorflow:2.20.0-gpu-jupyter``.
``TFENV_K8S_STORAGE_CLASS``
    the checkpoint claims' StorageClass, default the cluster's default class.
``TFENV_K8S_REACH``
    how the tests reach kernels: ``port-forward`` (default) runs ``kubectl port-forward
    pod/<name> 52000 52001 52002 52003 52004`` to 127.0.0.1 (kubectl on PATH, those local
    ports free; skipped without kubectl); ``direct`` connects to the pod IP, for a runner
    on the pod network (in a pod on the cluster).
``TFENV_K8S_RUNNER_LABELS``, ``TFENV_K8S_RUNNER_NAMESPACE``
    with ``direct`` only: the kernels' NetworkPolicies admit the runner's pod, selected
    by these labels (``key=value,...``, default
    ``app.kubernetes.io/name=tfenv-cluster-test``) in this namespace (default the
    runner's own, from its ServiceAccount, else the kernels'); label the runner's pod so.

Each test uses a throwaway user ``tfenv-cluster-test-<random>`` and removes, also when it
fails, the pods, Secrets and NetworkPolicies it made and that user's checkpoint claims.
Image pulls are allowed 30 minutes (``pull_timeout``), the rest of a start 10 minutes.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.api import PodStartError

from .conftest import DEFAULT_IMAGE, UID, Kernels, Settings, gone, raw

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="needs a real Kubernetes cluster: set KUBECONFIG (docs/kubernetes.md)",
    ),
    # Pulls of multi-GB images, twice the start timeout in the checkpoint test.
    pytest.mark.timeout(3600),
    # Kubeconfigs of test clusters often skip TLS verification.
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
MISSING_IMAGE = "registry.invalid/tfenv/none:1"
GPU_TOLERATION = {"key": m.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def cpu_entry(settings: Settings, **extra: Any) -> dict[str, Any]:
    """A catalog entry of the CPU image."""
    return {
        "id": "tf-cluster-test",
        "image": settings.image,
        "resources": {"memory": "2g", "cpus": 1},
        **extra,
    }


def test_the_namespace_enforces_the_restricted_standard(settings: Settings, namespace: Any) -> None:
    if namespace is None:
        pytest.skip(
            f"the kubeconfig's identity may not get the namespace '{settings.namespace}'; "
            "the admission test still shows whether it enforces"
        )
    labels = namespace["metadata"].get("labels") or {}
    assert labels.get(ENFORCE_LABEL) == "restricted", (
        f"The namespace '{settings.namespace}' is not labelled {ENFORCE_LABEL}=restricted "
        f"(its labels: {labels}): kubectl apply -f examples/kubernetes/namespace.yaml"
    )


async def test_a_kernel_pod_runs_tensorflow_as_the_user_and_its_secret_goes_with_it(
    settings: Settings, kernels: Kernels, reach: str
) -> None:
    backend = kernels.backend()
    start = kernels.start_of(cpu_entry(settings))
    pod = await kernels.start(backend, start)
    assert pod.ip and pod.ports == start.ports.by_name()

    out = await kernels.run(
        await kernels.connect(start, pod),
        "import tensorflow as tf, os; print(tf.__version__, os.getuid())",
    )
    version, uid = out.split()
    assert uid == str(UID)
    if settings.image == DEFAULT_IMAGE:
        assert version == "2.20.0"

    ns = settings.namespace
    pod_uid = raw(kernels.core.read_namespaced_pod, pod.name, ns)["metadata"]["uid"]
    secret = raw(kernels.core.read_namespaced_secret, m.secret_name(start), ns)
    assert secret.get("immutable") is True
    owners = secret["metadata"].get("ownerReferences") or []
    assert [(r["kind"], r["name"], r["uid"]) for r in owners] == [("Pod", pod.name, pod_uid)]
    policy = raw(kernels.net.read_namespaced_network_policy, m.network_policy_name(start), ns)
    assert [r["uid"] for r in policy["metadata"].get("ownerReferences") or []] == [pod_uid]

    kernels.stop_forwards()
    # No secret= here: the garbage collector removes the Secret, as its owner is gone.
    assert await backend.delete(pod.name, wait=True)
    assert await backend.state(pod.name) is None
    assert await gone(kernels.core.read_namespaced_secret, m.secret_name(start), ns), (
        "the Secret is still there 60 s after its owner pod went (garbage collector?)"
    )
    # The checkpoint claim outlives the pod.
    raw(kernels.core.read_namespaced_persistent_volume_claim, m.pvc_name(start), ns)


def test_the_namespace_refuses_a_privileged_kernel_pod(
    settings: Settings, kernels: Kernels
) -> None:
    """Pod Security admission itself, not the broker's check_pod: the API server refuses."""
    start = kernels.start_of(cpu_entry(settings))
    pod: Any = copy.deepcopy(m.kernel_pod(start))
    (kernel,) = [c for c in pod["spec"]["containers"] if c["name"] == m.KERNEL_CONTAINER]
    context = kernel["securityContext"]
    context["privileged"] = True
    # privileged with allowPrivilegeEscalation: false is invalid (422) before admission.
    del context["allowPrivilegeEscalation"]
    kernels.track(start)  # should the namespace not enforce, the pod goes after the test
    with pytest.raises(ApiException) as err:
        raw(kernels.core.create_namespaced_pod, settings.namespace, pod)
    body = str(err.value.body)
    assert err.value.status == 403, body
    assert "PodSecurity" in body, body


async def test_checkpoints_outlive_the_kernel_pod(
    settings: Settings, kernels: Kernels, reach: str
) -> None:
    backend = kernels.backend()
    entry = cpu_entry(settings)
    first_start = kernels.start_of(entry)
    first = await kernels.start(backend, first_start)
    name = f"step-{secrets.token_hex(4)}.txt"
    await kernels.run(
        await kernels.connect(first_start, first),
        f"open('/tfenv/checkpoints/{name}', 'w').write('weights')",
    )
    kernels.stop_forwards()
    assert await backend.delete(first.name, secret=m.secret_name(first_start), wait=True)
    assert await backend.state(first.name) is None

    # Same user and environment, another kernel: another pod on the same claim.
    second_start = kernels.start_of(entry)
    assert m.pvc_name(second_start) == m.pvc_name(first_start)
    second = await kernels.start(backend, second_start)
    assert second.name != first.name
    out = await kernels.run(
        await kernels.connect(second_start, second),
        "import os, json; d = '/tfenv/checkpoints'; "
        "print(json.dumps({n: open(os.path.join(d, n)).read() for n in os.listdir(d)}))",
    )
    assert json.loads(out) == {name: "weights"}


async def test_a_kernel_no_node_can_hold_says_so_with_the_schedulers_reason(
    settings: Settings, kernels: Kernels
) -> None:
    backend = kernels.backend(schedule_timeout=5)
    start = kernels.start_of(cpu_entry(settings, id="tf-cluster-test-64gpus", gpus=64))
    with pytest.raises(PodStartError) as err:
        await kernels.start(backend, start)
    message, events = err.value.message, err.value.events
    assert message.startswith("No node can run the kernel"), (message, events)
    # Without the device plugin no node has nvidia.com/gpu at all: the same words, or the
    # scheduler's own reason (an unbound claim, taints) where another filter came first.
    assert "Insufficient nvidia.com/gpu" in message or "nodes are available" in message, message
    assert "FailedScheduling" in events, events
    assert await gone(kernels.core.read_namespaced_pod, m.pod_name(start), start.namespace)


async def test_an_image_that_does_not_exist_says_it_could_not_be_pulled(
    settings: Settings, kernels: Kernels
) -> None:
    backend = kernels.backend()
    start = kernels.start_of(cpu_entry(settings, id="tf-cluster-test-missing", image=MISSING_IMAGE))
    with pytest.raises(PodStartError) as err:
        await kernels.start(backend, start)
    assert "could not be pulled" in err.value.message, (err.value.message, err.value.events)
    assert await gone(kernels.core.read_namespaced_pod, m.pod_name(start), start.namespace)


def _allocatable_gpus(node: dict[str, Any]) -> int:
    try:
        return int(((node.get("status") or {}).get("allocatable") or {}).get(m.GPU_RESOURCE, "0"))
    except (TypeError, ValueError):
        return 0


async def test_a_gpu_kernel_sees_its_gpu(settings: Settings, kernels: Kernels, reach: str) -> None:
    try:
        nodes = raw(kernels.core.list_node).get("items") or []
    except ApiException as err:
        if err.status == 403:
            pytest.skip(
                "the kubeconfig's identity may not list nodes (the broker's Role cannot "
                "either): cannot tell whether a node has a GPU"
            )
        raise
    if not any(_allocatable_gpus(node) >= 1 for node in nodes):
        pytest.skip(f"no node has allocatable {m.GPU_RESOURCE} (NVIDIA device plugin)")
    backend = kernels.backend()
    entry = {
        "id": "tf-cluster-test-gpu",
        "image": settings.gpu_image,
        "gpus": 1,
        "resources": {"memory": "4g", "cpus": 1},
        "kubernetes": {"tolerations": [GPU_TOLERATION]},
    }
    start = kernels.start_of(entry)
    pod = await kernels.start(backend, start)
    out = await kernels.run(
        await kernels.connect(start, pod),
        "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))",
    )
    assert out.strip() == "1"
