"""The notebook's folder in the kernel pod (issue 22 item 1) against a real cluster: what
tests/backends/test_k8s_home_backend.py shows on the scripted API, shown by a cluster's
scheduler (pod affinity), kubelet (subPath, fsGroup) and storage.

A stand-in "server" pod (restricted, the kernel image, the server labels of z2jh for the
throwaway user) mounts a fresh home claim ``claim-<user>`` at /home/jovyan, writes
``work/data.csv`` and waits for ``work/result.txt``, which it prints; the kernel pod mounts
the same claim through ``homes.resolve_home`` (the claim's real access modes, the server
pod read from the API) and runs in /home/jovyan/work. Skipped without ``KUBECONFIG``, as
the rest of tests/k8s_cluster (its module docstring has the settings); the claim's class
is ``TFENV_K8S_STORAGE_CLASS`` (ReadWriteOnce: the kernel must land beside the server).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import replace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from jupyter_tfenv.backends.kubernetes import homes
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.api import NodesUnreadableError

from .conftest import GID, UID, Kernels, Settings, _ignore_missing, raw

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="needs a real Kubernetes cluster: set KUBECONFIG (docs/kubernetes.md)",
    ),
    pytest.mark.timeout(3600),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

SERVER_SCRIPT = """
import os, sys, time
os.makedirs('/home/jovyan/work', exist_ok=True)
open('/home/jovyan/work/data.csv', 'w').write('a,b\\n1,2\\n')
print('SERVER-READY', flush=True)
deadline = time.time() + 900
while time.time() < deadline:
    p = '/home/jovyan/work/result.txt'
    if os.path.exists(p):
        st = os.stat(p)
        print('SERVER-SAW', open(p).read(), st.st_uid, st.st_gid, flush=True)
        time.sleep(3600)
    time.sleep(1)
sys.exit(1)
"""


def home_claim(name: str, settings: Settings) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    if settings.storage_class:
        spec["storageClassName"] = settings.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "tfenv-cluster-test"}},
        "spec": spec,
    }


def server_pod(name: str, claim: str, labels: dict[str, str], image: str) -> dict[str, Any]:
    restricted = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": GID,
                "fsGroup": GID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "notebook",
                    "image": image,
                    "command": ["python3", "-c", SERVER_SCRIPT],
                    "env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"}],
                    "securityContext": restricted,
                    "resources": {
                        "limits": {"cpu": "100m", "memory": "128Mi"},
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                    },
                    "volumeMounts": [{"name": "home", "mountPath": "/home/jovyan"}],
                }
            ],
            "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }


async def server_log(kernels: Kernels, name: str, word: str, timeout: float) -> str:
    """The server pod's log once it holds ``word`` (fails after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        try:
            log = await asyncio.to_thread(
                kernels.core.read_namespaced_pod_log, name, kernels.namespace
            )
        except ApiException:  # not started yet
            log = ""
        if word in log:
            return str(log)
        await asyncio.sleep(2)
    raise AssertionError(f"the server pod {name} did not print {word} in {timeout:.0f} s: {log}")


async def test_kernel_and_server_share_the_notebook_folder(
    settings: Settings, kernels: Kernels, user: str, reach: str
) -> None:
    ns = settings.namespace
    claim = f"claim-{user}"
    server = f"tfenv-home-server-{secrets.token_hex(4)}"
    labels = {"component": "singleuser-server", "hub.jupyter.org/username": user}
    raw(kernels.core.create_namespaced_persistent_volume_claim, ns, home_claim(claim, settings))
    try:
        raw(
            kernels.core.create_namespaced_pod,
            ns,
            server_pod(server, claim, labels, settings.image),
        )
        await server_log(kernels, server, "SERVER-READY", 1800)
        backend = kernels.backend()

        async def nodes() -> list[dict[str, Any]] | str:
            try:
                return await backend.nodes()
            except NodesUnreadableError as err:
                return err.message

        home = await homes.resolve_home(
            options=homes.HomeOptions(),
            username=user,
            server_name="",
            cwd="/home/jovyan/work",
            mount="/home/jovyan",
            namespace=ns,
            server_namespace=ns,
            server_labels=labels,
            read_claim=backend.read_claim,
            server_pods=backend.server_pods,
            nodes=nodes,
        )
        assert home.claim == claim and home.access == homes.RWO
        start = replace(
            kernels.start_of({"id": "tf-cluster-test", "image": settings.image}), home=home
        )
        pod = await kernels.start(backend, start)
        server_node = raw(kernels.core.read_namespaced_pod, server, ns)["spec"]["nodeName"]
        assert pod.node == server_node, "the pod affinity put the kernel beside its server"
        out = await kernels.run(
            await kernels.connect(start, pod),
            "import os\nprint(os.getcwd())\nprint(open('data.csv').read().strip())\n"
            "open('result.txt', 'w').write('from-kernel')\n",
        )
        assert out.splitlines() == ["/home/jovyan/work", "a,b", "1,2"], out
        log = await server_log(kernels, server, "SERVER-SAW", 120)
        assert f"SERVER-SAW from-kernel {UID} {GID}" in log, log
        assert m.pod_name(start) == pod.name
    finally:
        _ignore_missing(kernels.core.delete_namespaced_pod, server, ns)
        kernels.cleanup()
        _ignore_missing(kernels.core.delete_namespaced_persistent_volume_claim, claim, ns)


async def test_a_missing_home_claim_is_refused_before_any_pod(
    settings: Settings, kernels: Kernels, user: str
) -> None:
    backend = kernels.backend()
    with pytest.raises(homes.HomeError) as err:
        await homes.resolve_home(
            options=homes.HomeOptions(),
            username=user,
            server_name="",
            cwd="/home/jovyan/work",
            mount="/home/jovyan",
            namespace=settings.namespace,
            server_namespace=settings.namespace,
            server_labels={"hub.jupyter.org/username": user},
            read_claim=backend.read_claim,
            server_pods=backend.server_pods,
            nodes=backend.nodes,
        )
    assert f"{settings.namespace}/claim-{user} does not exist" in err.value.message
