"""Live readings of kernel pods on a real cluster (issue 22, item 3): the metrics API's
CPU and memory of a busy kernel pod, and, where a DCGM exporter is named, a GPU kernel's
GPU use. Skipped without ``KUBECONFIG`` (settings: test_cluster.py's docstring), and:

- the metrics test when the cluster does not serve ``metrics.k8s.io`` (no metrics-server)
  or the kubeconfig's identity may not read it (the reason is the product's own words);
- the GPU test without ``TFENV_K8S_DCGM_URL`` (the exporter's /metrics URL, as
  ``kubernetes_dcgm_exporter_url``: ``{node}``/``{host_ip}`` filled in) or a node with
  allocatable ``nvidia.com/gpu``;
- the GPU probe test (``kubernetes_probe_gpu``) without a node with allocatable
  ``nvidia.com/gpu``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from traitlets.config import Config

from jupyter_tfenv.backends.kubernetes import KubernetesBackend, KubernetesSettings, metrics
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.core.caller import Caller

from .conftest import GID, UID, Kernels, Settings, raw
from .test_cluster import GPU_TOLERATION, _allocatable_gpus, cpu_entry

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="needs a real Kubernetes cluster: set KUBECONFIG (docs/kubernetes.md)",
    ),
    pytest.mark.timeout(3600),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

#: metrics-server scrapes every 15 s by default (--metric-resolution); a new pod's
#: first reading can take two rounds.
READING_WAIT = 120.0
BUSY = (
    "import threading, time\n"
    "def spin():\n"
    "    end = time.time() + 600\n"
    "    while time.time() < end: pass\n"
    "threading.Thread(target=spin, daemon=True).start()\n"
    "blob = bytearray(300 * 2**20)  # 300 MiB held\n"
    "print('busy')"
)


async def _reading(api: Any, name: str) -> dict[str, Any]:
    """The pod's CPU and memory once the metrics API has them; skips where it is not
    served or not readable, fails when no reading comes in READING_WAIT seconds."""
    deadline = time.monotonic() + READING_WAIT
    while True:
        readings, missing = await metrics.cpu_memory(api, name)
        if missing is None and readings.get("cpu_percent"):
            return readings
        if missing is not None and "yet" not in missing["message"]:
            pytest.skip(f"no CPU and memory readings on this cluster: {missing['message']}")
        if time.monotonic() > deadline:
            pytest.fail(
                f"the metrics API gave no non-zero reading of pod {name} in {READING_WAIT:.0f} s "
                f"({missing['message'] if missing else readings}): is metrics-server scraping "
                "the pod's node (kubectl top pod)?"
            )
        await asyncio.sleep(5)


async def test_a_busy_kernel_pods_cpu_and_memory_are_read(
    settings: Settings, kernels: Kernels, reach: str
) -> None:
    backend = kernels.backend()
    start = kernels.start_of(cpu_entry(settings))
    pod = await kernels.start(backend, start)
    assert await kernels.run(await kernels.connect(start, pod), BUSY) == "busy"

    readings = await _reading(backend, pod.name)
    # One spinning thread under a 1-CPU limit: a good share of a core, not more than it.
    assert 20.0 <= readings["cpu_percent"] <= 110.0, readings
    # The 300 MiB held, under the 2 GB limit.
    assert 300 * 2**20 <= readings["memory_used"] <= 2 * 2**30, readings
    assert readings["read_at"]


async def test_a_gpu_kernels_use_comes_from_the_dcgm_exporter(
    settings: Settings, kernels: Kernels, reach: str
) -> None:
    url = os.environ.get("TFENV_K8S_DCGM_URL", "")
    if not url:
        pytest.skip("set TFENV_K8S_DCGM_URL to a DCGM exporter's /metrics URL (pod mapping on)")
    _require_gpu_node(kernels)
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
        "import tensorflow as tf\n"
        "x = tf.random.normal([4096, 4096])\n"  # memory held on the GPU while the kernel lives
        "print(len(tf.config.list_physical_devices('GPU')))",
    )
    assert out.strip() == "1"
    state = await backend.state(pod.name)
    assert state is not None
    reader = metrics.ExporterReader(ttl=0)
    deadline = time.monotonic() + READING_WAIT
    while True:
        section, missing = await metrics.gpu_section(
            reader,
            url,
            namespace=settings.namespace,
            pod=pod.name,
            node=state.node,
            host_ip=state.host_ip,
            gpus=1,
        )
        if missing is None:
            break
        assert time.monotonic() < deadline, missing["message"]
        await asyncio.sleep(5)
    [device] = section["devices"]
    assert device["memory_used"] and device["memory_used"] > 64 * 2**20, device
    assert device["memory_total"] and device["memory_total"] > device["memory_used"], device
    assert device["utilization_gpu"] is not None and device["name"], device


def _require_gpu_node(kernels: Kernels) -> None:
    try:
        nodes = raw(kernels.core.list_node).get("items") or []
    except ApiException as err:
        if err.status == 403:
            pytest.skip("the kubeconfig's identity may not list nodes: no GPU node known")
        raise
    if not any(_allocatable_gpus(node) >= 1 for node in nodes):
        pytest.skip(f"no node has allocatable {m.GPU_RESOURCE} (NVIDIA device plugin)")


async def test_a_gpu_probe_pod_sees_its_gpu(
    settings: Settings, kernels: Kernels, user: str, tmp_path: Any
) -> None:
    """kubernetes_probe_gpu on a cluster: the GPU image's probe pod gets one GPU through
    the device plugin and TensorFlow sees it (the panel no longer says "unknown")."""
    _require_gpu_node(kernels)
    path = tmp_path / "catalog.yaml"
    entry = {
        "id": "tf-cluster-test-gpu",
        "image": settings.gpu_image,
        "gpus": 1,
        "kubernetes": {"tolerations": [GPU_TOLERATION]},
    }
    path.write_text(yaml.safe_dump({"version": 1, "environments": [entry]}))
    catalog = TFEnvCatalog(config=Config({"TFEnvCatalog": {"catalog_files": [str(path)]}}))
    catalog.refresh()
    backend = KubernetesBackend(
        KubernetesSettings(
            namespace=settings.namespace,
            config=settings.kubeconfig,
            uid=UID,
            gid=GID,
            probe_gpu=True,
            schedule_timeout=300.0,  # an autoscaler may add the GPU node
            probe_timeout=1800.0,  # the GPU image may be pulled first
        ),
        catalog=lambda: catalog,
    )
    try:
        probe = await backend.probe(
            Caller(name=user, uid=UID, gid=GID, home="/"), catalog.get("tf-cluster-test-gpu")
        )
    finally:
        await backend.close()
    state = probe["gpu_state"]
    assert state["state"] == "ok", state
    assert len(probe["gpus"]) == 1 and probe["gpus"][0]["compute_capability"], probe["gpus"]
