"""The probe's GPU view on Kubernetes (issue 22): with ``kubernetes_probe_gpu`` a GPU
environment's probe pod gets one GPU, so the panel says which GPUs TensorFlow sees
instead of "unknown"; without the setting, with the user's GPU limit reached, or with no
GPU free, the probe runs without one and says why.

The real broker in Kubernetes mode (HTTP, the hub's token check a stand-in) drives the
real ``kubernetes`` client against tests/support/k8s_api.py; the node is a script
(:class:`GpuNode`): a probe pod that asks for ``nvidia.com/gpu`` runs while the node has
a GPU free and prints the probe output of tensorflow/tensorflow:2.20.0-gpu-jupyter with
the GPU TensorFlow sees, or stays Pending with the scheduler's Unschedulable condition; a
probe pod without a GPU prints the same image's output with no GPU. The pods the broker
made are validated strictly against the 1.30 and 1.33 schemas and the restricted checker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from jupyter_tfenv.backends.broker import BrokerClient, BrokerError
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.pss import check_pod
from tests.backends.test_k8s_manifests import K8S_VERSIONS
from tests.kernels.test_compat import TF220_GPU
from tests.support.k8s_api import Kubelet, RunningKubelet, ScriptedAPI, container, now_iso

pytestmark = pytest.mark.scripted_api

NS = "tfenv-kernels"
SERVICE = "tfenv-broker-k8s-probe-gpu"
USER, TOKEN = "ada", "ada-token"
GPU_IMAGE = "tensorflow/tensorflow:2.20.0-gpu-jupyter"
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
CATALOG = [
    {
        "id": "gpu",
        "image": GPU_IMAGE,
        "gpus": 1,
        "kubernetes": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [TOLERATION],
        },
    },
    {"id": "cpu", "image": "tensorflow/tensorflow:2.20.0-jupyter"},
]
H100 = {"name": "NVIDIA H100 80GB HBM3", "device": "/physical_device:GPU:0",
        "compute_capability": "9.0"}  # fmt: skip
UNSCHEDULABLE = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."


def probe_stdout(gpus: list[dict[str, Any]]) -> str:
    facts = {k: TF220_GPU[k] for k in ("python", "tensorflow", "build", "errors")}
    return json.dumps({**facts, "gpus": gpus})


def gpus_of(pod: dict[str, Any]) -> int:
    (kernel,) = pod["spec"]["containers"]
    return int(((kernel.get("resources") or {}).get("limits") or {}).get(m.GPU_RESOURCE, 0))


class GpuNode(Kubelet):
    """One node with ``free`` GPUs; probe pods as the module docstring says; kernel pods
    run at once. Every probe pod is kept in ``probes`` as the broker submitted it."""

    def __init__(self, free: int = 1) -> None:
        self.free = free
        self.lock = threading.Lock()
        self.probes: list[dict[str, Any]] = []

    def created(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if pod["metadata"]["labels"].get(m.COMPONENT_LABEL) != "probe":
            RunningKubelet.report_running(api, pod, "10.244.0.9", "gpu-node-1")
            return
        with self.lock:
            self.probes.append(pod)
            fits = gpus_of(pod) <= self.free
        if not fits:
            waiting = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": UNSCHEDULABLE,
                        "lastTransitionTime": now_iso(),
                    }
                ],
            }
            event = ("FailedScheduling", UNSCHEDULABLE, "Warning")
            api.call_soon(lambda: api.update_pod(ns, name, waiting, [event]))
            return
        done = {
            "phase": "Succeeded",
            **container({"terminated": {"exitCode": 0, "reason": "Completed"}}, GPU_IMAGE),
        }
        api.call_soon(lambda: api.update_pod(ns, name, done, []))

    def log(self, api: ScriptedAPI, pod: dict[str, Any]) -> str:
        return f"a warning of TensorFlow's\n{probe_stdout([H100] if gpus_of(pod) else [])}\n"


class Cluster:
    def __init__(self, tmp_path: Path, node: GpuNode, **traits: Any) -> None:
        from jupyter_tfenv.broker.app import TFEnvBroker
        from tests.broker.test_broker_e2e import StandInHubAuth

        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
        self.api = ScriptedAPI(NS)
        self.api.start()
        self.node = node
        self.api.kubelet = node
        self.app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            backend="kubernetes",
            kubernetes_namespace=NS,
            kubernetes_server_namespace="jhub",
            kubernetes_config=str(self.api.kubeconfig(tmp_path)),
            kubernetes_uid=43210,
            kubernetes_gid=43210,
            kubernetes_schedule_timeout=0.5,
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog)]}}),
            **traits,
        )
        self.app.init_catalog()
        scope = f"access:services!service={SERVICE}"
        self.app.hub_auth = StandInHubAuth(
            {TOKEN: {"kind": "user", "name": USER, "scopes": [scope], "groups": []}}
        )
        self.socket, self.port = bind_unused_port()
        self.server = HTTPServer(self.app.make_web_app())
        self.server.add_sockets([self.socket])
        self.client = BrokerClient(f"http://127.0.0.1:{self.port}/services/{SERVICE}/", TOKEN)

    def close(self) -> None:
        self.server.stop()
        self.socket.close()
        self.api.stop()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Any]:
    pytest.importorskip("jupyterhub")
    made: list[Cluster] = []

    def make(free: int = 1, **traits: Any) -> Cluster:
        cluster = Cluster(tmp_path, GpuNode(free), **traits)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


def visible_devices(pod: dict[str, Any]) -> list[str]:
    (kernel,) = pod["spec"]["containers"]
    return [e["value"] for e in kernel.get("env") or [] if e["name"] == "NVIDIA_VISIBLE_DEVICES"]


async def test_a_gpu_probe_pod_holds_one_gpu_and_says_what_tensorflow_sees(make_cluster):
    cluster = make_cluster(kubernetes_probe_gpu=True)
    probe = await cluster.client.probe("gpu")
    state = probe["gpu_state"]
    assert state["state"] == "ok", state
    assert state["message"] == (
        "TensorFlow sees 1 GPU(s) in a probe pod given 1: NVIDIA H100 80GB HBM3."
    )
    assert [g["compute_capability"] for g in probe["gpus"]] == ["9.0"]

    [pod] = cluster.node.probes
    (kernel,) = pod["spec"]["containers"]
    resources = kernel["resources"]
    assert resources["limits"][m.GPU_RESOURCE] == resources["requests"][m.GPU_RESOURCE] == "1"
    assert visible_devices(pod) == []  # the device plugin's GPU, not "void"
    # The entry's placement, as its kernels get it: the GPU nodes and their taint.
    assert pod["spec"]["tolerations"] == [TOLERATION]
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert check_pod(pod) == []
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)

    # A CPU environment's probe never holds a GPU.
    cpu = await cluster.client.probe("cpu")
    assert cpu["gpu_state"]["state"] == "not_requested"
    assert gpus_of(cluster.node.probes[-1]) == 0


async def test_without_the_setting_the_probe_has_no_gpu_and_says_how_to_get_one(make_cluster):
    cluster = make_cluster()
    probe = await cluster.client.probe("gpu")
    [pod] = cluster.node.probes
    assert gpus_of(pod) == 0 and visible_devices(pod) == ["void"]
    assert "tolerations" not in pod["spec"]
    assert probe["gpu_state"]["state"] == "unknown"
    assert "kubernetes_probe_gpu = True" in probe["gpu_state"]["message"]


async def test_with_no_gpu_free_the_probe_runs_without_one_and_says_why(make_cluster):
    cluster = make_cluster(free=0, kubernetes_probe_gpu=True)
    probe = await cluster.client.probe("gpu")
    first, second = cluster.node.probes
    assert (gpus_of(first), gpus_of(second)) == (1, 0)
    # The pod that waited for a GPU is gone; the probe's facts came from the second.
    assert cluster.api.get("pods", NS, first["metadata"]["name"]) is None
    assert probe["build"]["cuda_version"] == "12.5.1"
    state = probe["gpu_state"]
    assert state["state"] == "unknown", state
    assert state["message"].startswith(
        f"This probe ran without a GPU: no GPU was free within 0.5 s ({UNSCHEDULABLE})"
    ), state["message"]


async def test_at_the_users_gpu_limit_the_probe_runs_without_one(make_cluster):
    cluster = make_cluster(kubernetes_probe_gpu=True, max_gpus_per_user=1)
    kid = "9b0be000-0000-4000-8000-000000000001"
    await cluster.client.prepare_runtime(kid, restart=False)
    body = {"kernel_id": kid, "environment": "gpu", "cwd": "/tmp", "key": "k" * 32}
    await cluster.client.start_kernel(body, timeout=60)

    probe = await cluster.client.probe("gpu")
    [pod] = cluster.node.probes
    assert gpus_of(pod) == 0
    message = probe["gpu_state"]["message"]
    assert message.startswith("This probe ran without a GPU: the user's GPU limit leaves none")
    assert "max_gpus_per_user" in message

    # The kernel limit still holds for the probe itself.
    cluster.app.max_kernels_per_user = 1
    with pytest.raises(BrokerError) as refused:
        await cluster.client.probe("gpu", refresh=True)
    assert refused.value.http_status == 429
