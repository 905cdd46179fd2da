"""Kept kernel pods on a real cluster (issue 22 item 2): what tests/broker/test_k8s_adopt.py
and test_broker_sweep_k8s.py show on the scripted API, shown by a cluster's API server
(the merge patch of the kept annotation, the Secret's data as the kubelet-facing API
serves it) and a real kernel. Skipped without ``KUBECONFIG``, as the rest of
tests/k8s_cluster (settings: test_cluster.py's docstring).

A kernel pod of the throwaway user runs ``x = 42``; the backend keeps it (the annotation
with the time), lists it among the kept kernels, refuses another user's adoption (404),
adopts it for its owner: the answer's key, read from the kernel's Secret, reaches the
kernel, which still has ``x``; the mark is gone. Kept again with a time older than
``adopt_timeout``, the broker's sweep removes the pod.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from jupyter_tfenv.backends.base import KernelNotFound
from jupyter_tfenv.backends.kubernetes import KubernetesBackend, KubernetesSettings
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.keep import KEPT_AT
from jupyter_tfenv.broker.sweep import KeptSweep
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.core.caller import Caller

from .conftest import GID, UID, Kernels, Settings, gone, raw
from .test_cluster import cpu_entry

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="needs a real Kubernetes cluster: set KUBECONFIG (docs/kubernetes.md)",
    ),
    pytest.mark.timeout(3600),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


def backend_of(settings: Settings, tmp_path: Any) -> KubernetesBackend:
    """The broker's KubernetesBackend with a catalog of the CPU entry."""
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": [cpu_entry(settings)]}))
    catalog = TFEnvCatalog(config=Config({"TFEnvCatalog": {"catalog_files": [str(path)]}}))
    catalog.refresh()
    return KubernetesBackend(
        KubernetesSettings(
            namespace=settings.namespace, config=settings.kubeconfig, uid=UID, gid=GID
        ),
        catalog=lambda: catalog,
    )


def pod_annotations(kernels: Kernels, pod: str) -> dict[str, str]:
    meta = raw(kernels.core.read_namespaced_pod, pod, kernels.namespace)["metadata"]
    return dict(meta.get("annotations") or {})


async def test_a_kept_pod_is_adopted_with_the_key_from_its_secret_then_swept(
    settings: Settings, kernels: Kernels, user: str, reach: str, tmp_path: Any
) -> None:
    start = kernels.start_of(cpu_entry(settings))
    pod = await kernels.start(kernels.backend(), start)
    await kernels.run(await kernels.connect(start, pod), "x = 42")
    kernels.stop_forwards()

    backend = backend_of(settings, tmp_path)
    owner = Caller(name=user, uid=UID, gid=GID, home="/")
    other = Caller(name=f"{user}-other", uid=UID, gid=GID, home="/")
    try:
        await backend.keep(owner, start.kernel_id, now=time.time())
        assert KEPT_AT in pod_annotations(kernels, pod.name), "the kept annotation was not set"
        kept = [k.kernel_id for k in await backend.kept_kernels()]
        assert start.kernel_id in kept

        with pytest.raises(KernelNotFound):
            await backend.adopt(other, start.kernel_id)
        assert KEPT_AT in pod_annotations(kernels, pod.name), "another user's request changed it"

        info = await backend.adopt(owner, start.kernel_id)
        assert info.extra["key"] == kernels.key, "the key is not the kernel Secret's"
        assert info.extra["ports"] == start.ports.by_name()
        assert info.extra["ip"] == pod.ip
        assert KEPT_AT not in pod_annotations(kernels, pod.name), "the adopted pod is still kept"
        # The kernel answers a client that has only what the adoption answered.
        adopted = dict(await kernels.connect(start, pod), key=info.extra["key"])
        assert (await kernels.run(adopted, "print(x)")).strip() == "42"
        kernels.stop_forwards()

        # Kept two hours ago, nobody came back: the sweep removes the pod.
        await backend.keep(owner, start.kernel_id, now=time.time() - 7200)
        removed = await KeptSweep(backend, 3600.0, logging.getLogger("tests")).run()
        assert start.kernel_id in [k.kernel_id for k in removed]
        assert await gone(kernels.core.read_namespaced_pod, pod.name, kernels.namespace)
        assert await gone(
            kernels.core.read_namespaced_secret, m.secret_name(start), kernels.namespace
        )
    finally:
        await backend.close()
