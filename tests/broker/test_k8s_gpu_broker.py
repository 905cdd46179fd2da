"""GPU compatibility and resources chosen at launch on Kubernetes (issue 20 item 4), end to
end through the real tfenv broker, tier 3 (scripted API).

The broker runs with ``backend = "kubernetes"`` and the real ``kubernetes`` client against
tests/support/k8s_api.py, the scripted API server: it validates every object strictly
against the Kubernetes schemas and the restricted Pod Security Standard, and answers
``GET /api/v1/nodes`` with the nodes each test gives it (NVIDIA GPU feature discovery's
labels), or 403 as RBAC does for the broker's namespaced Role. Its node is a script: a
probe pod prints the probe output of the real tensorflow/tensorflow:2.20.0-gpu-jupyter
(tests/kernels/test_compat.py) and succeeds; a kernel pod runs with an IP. No kernel is
reached here (tests/broker/test_k8s_broker.py runs real kernel pods); what is checked is
what the broker asks of the cluster, and what it refuses before asking anything.

The requests are the single-user server's (BrokerClient, as provisioning/brokered.py sends
them: the chosen values in ``choices``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from tests.backends.test_k8s_gpu_compat import A100, BARE, CPU, H100, T4, selects
from tests.broker.test_broker_e2e import StandInHubAuth
from tests.conftest import TF220
from tests.kernels.test_compat import TF220_GPU
from tests.support.k8s_api import Kubelet, RunningKubelet, ScriptedAPI

pytestmark = [pytest.mark.scripted_api]

NS = "tfenv-kernels"
TOKEN = "k8s-gpu-user-token"
SERVICE = "tfenv-broker-k8s-gpu"
USER = "grace"
GPU_ENTRY: dict[str, Any] = {
    "id": "gpu220",
    "image": "tensorflow/tensorflow:2.20.0-gpu-jupyter",
    "gpus": 1,
    "resources": {"memory": "8g", "shm_size": "1g"},
    "choices": {
        "gpus": [1, 2],
        "memory": ["8g", "16g"],
        "cpus": [2, 4],
        "shm_size": ["1g", "2g"],
        "default": {"cpus": 2},
    },
}
CPU_ENTRY: dict[str, Any] = {"id": "cpu220", "image": TF220, "resources": {"memory": "2g"}}
#: What the probe script prints in the GPU image (its facts; the broker adds the rest).
PROBE_STDOUT = json.dumps(
    {k: TF220_GPU[k] for k in ("python", "tensorflow", "build", "gpus", "errors")}
)


class ScriptedNode(Kubelet):
    """Probe pods print the GPU image's probe output and succeed; kernel pods run."""

    def created(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        component = pod["metadata"]["labels"].get("app.kubernetes.io/component")
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if component == "probe":
            done = {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": "kernel",
                        "image": pod["spec"]["containers"][0]["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    }
                ],
            }
            api.call_soon(lambda: api.update_pod(ns, name, done, []))
            return
        RunningKubelet.report_running(api, pod, "127.0.0.77", "gpu-h100")

    def log(self, api: ScriptedAPI, pod: dict[str, Any]) -> str:
        return f"some warning of TensorFlow's\n{PROBE_STDOUT}\n"


class Cluster:
    """The scripted API server, its scripted node, and a broker in Kubernetes mode."""

    def __init__(self, tmp_path: Path, **traits: Any) -> None:
        from jupyter_tfenv.backends.broker import BrokerClient
        from jupyter_tfenv.broker.app import TFEnvBroker

        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(yaml.safe_dump({"version": 1, "environments": [GPU_ENTRY, CPU_ENTRY]}))
        self.api = ScriptedAPI(NS)
        self.api.start()
        self.api.kubelet = ScriptedNode()
        self.app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            backend="kubernetes",
            kubernetes_namespace=NS,
            kubernetes_config=str(self.api.kubeconfig(tmp_path)),
            kubernetes_uid=43210,
            kubernetes_gid=43210,
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog)]}}),
            **traits,
        )
        self.app.init_catalog()
        self.app.hub_auth = StandInHubAuth(
            {
                TOKEN: {
                    "kind": "user",
                    "name": USER,
                    "scopes": [f"access:services!service={SERVICE}"],
                    "groups": [],
                }
            }
        )
        self.socket, port = bind_unused_port()
        self.server = HTTPServer(self.app.make_web_app())
        self.server.add_sockets([self.socket])
        self.client = BrokerClient(f"http://127.0.0.1:{port}/services/{SERVICE}/", TOKEN)

    def kernel_pods(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self.api.all("pods")
            if p["metadata"]["labels"].get("app.kubernetes.io/component") == "kernel"
        ]

    def posts(self, path_end: str) -> int:
        return len([p for meth, p in self.api.requests if meth == "POST" and p.endswith(path_end)])

    async def start(self, env_id: str, **fields: Any) -> dict[str, Any]:
        kid = str(uuid.uuid4())
        await self.client.prepare_runtime(kid, restart=False)
        body = {"kernel_id": kid, "environment": env_id, "cwd": "/home/grace", **fields}
        return dict(await self.client.start_kernel({**body, "key": "k" * 32}, timeout=60))

    async def compatibility(self, env_id: str) -> dict[str, Any]:
        found = {e["id"]: e for e in await self.client.environments()}
        return dict(found[env_id]["compatibility"])

    def close(self) -> None:
        self.server.stop()
        self.socket.close()
        self.api.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    pytest.importorskip("jupyterhub")
    running = Cluster(tmp_path)
    yield running
    running.close()


async def test_no_node_can_run_it_refused_before_any_pod_with_what_to_do(cluster):
    """scripted API: every GPU node has a driver too old for the image's CUDA 12.5: the
    listing marks it incompatible and a start is refused (409) with the message, before
    any kernel object exists."""
    cluster.api.nodes = [T4, CPU]
    assert (await cluster.compatibility("gpu220"))["state"] == "unknown", "never probed"
    probe = await cluster.client.probe("gpu220")
    assert probe["build"]["cuda_version"] == "12.5.1"
    verdict = await cluster.compatibility("gpu220")
    assert verdict["state"] == "incompatible", verdict
    assert "No GPU node of the cluster can run TensorFlow in 'gpu220'" in verdict["message"]
    assert (await cluster.compatibility("cpu220"))["state"] == "not_applicable"

    from jupyter_tfenv.backends.broker import BrokerError

    with pytest.raises(BrokerError) as info:
        await cluster.start("gpu220")
    assert info.value.http_status == 409
    assert info.value.reason == "incompatible"
    message = str(info.value)
    assert "Node gpu-t4: TensorFlow in 'gpu220' was built for CUDA 12.5" in message
    assert "the node's driver 470.182.03 supports CUDA up to 11.4" in message
    assert "Install an NVIDIA driver >= 555.42.02 (CUDA 12.5)" in message
    assert cluster.posts("/secrets") == 0 and cluster.kernel_pods() == []
    # A CPU kernel of the same cluster is not concerned.
    started = await cluster.start("cpu220")
    assert started["ip"] == "127.0.0.77"
    await cluster.client.delete_kernel(started["kernel_id"])


async def test_the_admin_may_allow_incompatible_starts(tmp_path):
    """scripted API: allow_incompatible_gpus (the Docker setting) starts it anyway, with
    no node affinity of ours."""
    pytest.importorskip("jupyterhub")
    cluster = Cluster(tmp_path, allow_incompatible_gpus=True)
    try:
        cluster.api.nodes = [T4]
        await cluster.client.probe("gpu220")
        started = await cluster.start("gpu220")
        (pod,) = cluster.kernel_pods()
        assert "affinity" not in pod["spec"]
        await cluster.client.delete_kernel(started["kernel_id"])
    finally:
        cluster.close()


async def test_chosen_resources_reach_the_pod_kept_to_compatible_nodes(cluster):
    """scripted API: a choice within the entry's choices becomes the pod's requests and
    limits (nvidia.com/gpu, memory, cpu) and /dev/shm, is recorded in its annotation,
    and the pod requires the nodes whose labels were judged compatible."""
    cluster.api.nodes = [T4, H100, A100, BARE, CPU]
    await cluster.client.probe("gpu220")
    verdict = await cluster.compatibility("gpu220")
    assert verdict["state"] == "ok", verdict
    assert "runs on 2 of the cluster's 4 GPU node(s) (gpu-h100, gpu-a100)" in verdict["message"]
    chosen = {"gpus": 2, "memory": "16g", "cpus": 4, "shm_size": "2g"}
    started = await cluster.start("gpu220", choices=chosen)
    (pod,) = cluster.kernel_pods()
    kernel = next(c for c in pod["spec"]["containers"] if c["name"] == "kernel")
    limits = {"memory": str(16 * 1024**3), "cpu": "4", "nvidia.com/gpu": "2"}
    assert kernel["resources"] == {"limits": limits, "requests": limits}
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": str(2 * 1024**3)}
    assert json.loads(pod["metadata"]["annotations"]["org.jupyter.tfenv.choices"]) == chosen
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert selects(terms, H100) and selects(terms, A100) and selects(terms, BARE)
    assert not selects(terms, T4), "the pod may land on the node with the old driver"
    # The broker's kernel state reports the choice, as for a Docker container's label.
    assert (await cluster.client.kernel(started["kernel_id"]))["choices"] == chosen
    await cluster.client.delete_kernel(started["kernel_id"])

    # The defaults where nothing is chosen: the entry's values and default cpus.
    started = await cluster.start("gpu220")
    (pod,) = cluster.kernel_pods()
    kernel = next(c for c in pod["spec"]["containers"] if c["name"] == "kernel")
    assert kernel["resources"]["limits"] == {
        "memory": str(8 * 1024**3),
        "cpu": "2",
        "nvidia.com/gpu": "1",
    }
    assert json.loads(pod["metadata"]["annotations"]["org.jupyter.tfenv.choices"]) == {
        "cpus": 2,
        "gpus": 1,
        "memory": "8g",
        "shm_size": "1g",
    }
    await cluster.client.delete_kernel(started["kernel_id"])


async def test_a_choice_outside_the_entry_is_refused_before_any_pod(cluster):
    """scripted API: 400 with the allowed values; nothing is asked of the cluster."""
    from jupyter_tfenv.backends.broker import BrokerError

    cluster.api.nodes = [H100]
    for choice, allowed in (
        ({"memory": "64g"}, "choose one of 8g, 16g"),
        ({"gpus": 4}, "choose one of 1, 2"),
        ({"privileged": True}, "'privileged' cannot be chosen"),
    ):
        with pytest.raises(BrokerError) as info:
            await cluster.start("gpu220", choices=choice)
        assert info.value.http_status == 400, (choice, info.value)
        assert allowed in str(info.value), str(info.value)
    assert cluster.posts("/pods") == 0 and cluster.posts("/secrets") == 0
    assert not [p for _, p in cluster.api.requests if p.startswith("/api/v1/nodes")]


async def test_unreadable_nodes_are_unknown_and_never_refuse(cluster):
    """scripted API: the broker's Role may not list nodes (403): unknown, with what to
    grant; the start goes ahead without node affinity of ours."""
    cluster.api.nodes = None
    await cluster.client.probe("gpu220")
    verdict = await cluster.compatibility("gpu220")
    assert verdict["state"] == "unknown"
    assert "the broker may not list the cluster's nodes" in verdict["message"]
    assert 'cannot list resource "nodes"' in verdict["message"], "the API's reason"
    assert "`list` on nodes" in verdict["message"]
    started = await cluster.start("gpu220")
    (pod,) = cluster.kernel_pods()
    assert "affinity" not in pod["spec"]
    await cluster.client.delete_kernel(started["kernel_id"])
