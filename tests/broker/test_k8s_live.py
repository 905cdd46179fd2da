"""Live readings of kernel pods (issue 22, item 3) through the real broker in Kubernetes mode.

The broker (HTTP, the hub's token check a stand-in) drives the real ``kubernetes`` client
against tests/support/k8s_api.py, the scripted API server, whose node is the script of
tests/backends/test_k8s_isolation.py (kernel pods run at once; nothing runs for real, so
no Docker or image is needed). The scripted API serves the resource metrics API
(``metrics.k8s.io``) as metrics-server does, or answers as a cluster without it; a DCGM
exporter stand-in (:class:`Exporter`, a small HTTP server) serves Prometheus text in the
exporter's format with pod mapping labels. What the tests read is what a user's server
gets and passes to the panel: ``GET /api/kernels/<id>/live`` through
:class:`~jupyter_tfenv.backends.broker.BrokerClient`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from jupyter_tfenv.backends.broker import BrokerClient
from tests.backends.test_k8s_isolation import IMAGE, KEY, SCOPE, SERVICE, Node
from tests.support.k8s_api import ScriptedAPI

pytestmark = pytest.mark.scripted_api

NS = "tfenv-kernels"
USER, TOKEN = "alice", "alice-token"
CATALOG = [
    {"id": "cpu", "image": IMAGE, "resources": {"memory": "2g", "cpus": 1.5}},
    {"id": "gpu", "image": IMAGE.replace("-jupyter", "-gpu-jupyter"), "gpus": 1},
]
MIB = 2**20
#: Framebuffer memory per GPU (MiB): free, used, reserved.
FB_FREE = [61000, 11, 81000, 81000]
FB_USED = [20000, 80990, 0, 0]
FB_RES = [559, 559, 559, 559]


def exporter_text(pods: dict[str, tuple[int, str]]) -> str:
    """A DCGM exporter's /metrics with pod mapping, in its format: HELP/TYPE lines, the
    labels it sets (``gpu``, ``UUID``, ``pci_bus_id``, ``device``, ``modelName``,
    ``Hostname``, then ``container``, ``namespace``, ``pod``), other counters around.
    ``pods``: pod name → (GPU index, namespace); GPU 3 is held by nobody."""
    holders = {index: (pod, ns) for pod, (index, ns) in pods.items()}
    values = {
        "DCGM_FI_DEV_SM_CLOCK": ("gauge", "SM clock frequency (in MHz).", [1980, 1755, 210, 210]),
        "DCGM_FI_DEV_GPU_TEMP": ("gauge", "GPU temperature (in C).", [61, 55, 30, 29]),
        "DCGM_FI_DEV_GPU_UTIL": ("gauge", "GPU utilization (in %).", [37, 88, 0, 0]),
        "DCGM_FI_DEV_FB_FREE": ("gauge", "Framebuffer memory free (in MiB).", FB_FREE),
        "DCGM_FI_DEV_FB_USED": ("gauge", "Framebuffer memory used (in MiB).", FB_USED),
        "DCGM_FI_DEV_FB_RESERVED": ("gauge", "Framebuffer memory reserved (in MiB).", FB_RES),
    }
    lines = []
    for name, (kind, text, per_gpu) in values.items():
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for index, value in enumerate(per_gpu):
            pod, ns = holders.get(index, ("", ""))
            container = "kernel" if pod else ""
            lines.append(
                f'{name}{{gpu="{index}",UUID="GPU-5c0e5d1a-0000-4000-8000-00000000000{index}",'
                f'pci_bus_id="00000000:{index + 0x18:02X}:00.0",device="nvidia{index}",'
                f'modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-1",'
                f'container="{container}",namespace="{ns}",pod="{pod}"}} {value}'
            )
    return "\n".join(lines) + "\n"


class Exporter:
    """A DCGM exporter stand-in: ``GET /metrics`` answers ``text`` (``status``); each
    request's path is kept in ``paths``."""

    def __init__(self) -> None:
        self.text = ""
        self.status = 200
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                body = owner.text.encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Cluster:
    """The scripted API, its scripted node and a broker in Kubernetes mode on loopback."""

    def __init__(self, tmp_path: Path, **traits: Any) -> None:
        from jupyter_tfenv.broker.app import TFEnvBroker
        from tests.broker.test_broker_e2e import StandInHubAuth

        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
        self.api = ScriptedAPI(NS)
        self.api.start()
        self.api.kubelet = Node()
        self.app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            backend="kubernetes",
            kubernetes_namespace=NS,
            kubernetes_server_namespace="jhub",
            kubernetes_config=str(self.api.kubeconfig(tmp_path)),
            kubernetes_uid=43210,
            kubernetes_gid=43210,
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog)]}}),
            **traits,
        )
        self.app.init_catalog()
        self.app.hub_auth = StandInHubAuth(
            {TOKEN: {"kind": "user", "name": USER, "scopes": [SCOPE], "groups": []}}
        )
        self.socket, self.port = bind_unused_port()
        self.server = HTTPServer(self.app.make_web_app())
        self.server.add_sockets([self.socket])
        self.client = BrokerClient(f"http://127.0.0.1:{self.port}/services/{SERVICE}/", TOKEN)

    async def start(self, kernel_id: str, env: str) -> dict[str, Any]:
        await self.client.prepare_runtime(kernel_id, restart=False)
        body = {"kernel_id": kernel_id, "environment": env, "cwd": "/tmp", "key": KEY}
        return await self.client.start_kernel(body, timeout=60)

    def serve_metrics(self, pod: str, cpu: str, memory: str) -> None:
        """metrics-server's PodMetrics of ``pod``: the kernel container's usage."""
        found = dict(self.api.pod_metrics or {})
        found[(NS, pod)] = {
            "kind": "PodMetrics",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": pod, "namespace": NS, "creationTimestamp": "2026-12-07T07:30:02Z"},
            "timestamp": "2026-12-07T07:29:51Z",
            "window": "15.042s",
            "containers": [{"name": "kernel", "usage": {"cpu": cpu, "memory": memory}}],
        }
        self.api.pod_metrics = found

    def close(self) -> None:
        self.server.stop()
        self.socket.close()
        self.api.stop()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    made = Exporter()
    yield made
    made.close()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Any]:
    pytest.importorskip("jupyterhub")
    made: list[Cluster] = []

    def make(**traits: Any) -> Cluster:
        cluster = Cluster(tmp_path, **traits)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


KID = "11fe0000-0000-4000-8000-000000000001"
OTHER_KID = "11fe0000-0000-4000-8000-000000000002"


def reasons(live: dict[str, Any]) -> dict[str, str]:
    return {m["kind"]: m["message"] for m in live["missing_readings"]}


async def test_cpu_memory_and_gpu_use_reach_the_live_status(make_cluster, exporter):
    """scripted API + DCGM stand-in: the metrics API's usage of the kernel container and
    the exporter's GPU the pod holds become the live status a user's server shows, in the
    Docker backend's fields; another pod's GPU is not shown; nothing is said missing."""
    cluster = make_cluster(
        kubernetes_dcgm_exporter_url=f"http://127.0.0.1:{exporter.port}/metrics?at={{host_ip}}"
    )
    pod = (await cluster.start(KID, "gpu"))["name"]
    other = (await cluster.start(OTHER_KID, "gpu"))["name"]
    exporter.text = exporter_text({pod: (1, NS), other: (0, NS), "someone": (2, "elsewhere")})
    cluster.serve_metrics(pod, cpu="1503000000n", memory="524288Ki")

    live = await cluster.client.live(KID)

    assert live["missing_readings"] == [], live["missing_readings"]
    assert live["running"] is True and live["status"] == "running"
    assert live["cpu_percent"] == 150.3  # 1.503 cores, Docker's percent (100 = one core)
    assert live["memory_used"] == 512 * MIB  # the working set
    assert live["read_at"] == "2026-12-07T07:29:51Z"
    # The metrics API was asked exactly where the Role's new rule allows it.
    assert ("GET", f"/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods/{pod}") in (
        cluster.api.requests
    )
    gpu = live["gpu"]
    assert gpu["state"] == "ok" and gpu["requested"][0]["count"] == 1
    assert gpu["devices"] == [
        {
            "index": 1,
            "uuid": "GPU-5c0e5d1a-0000-4000-8000-000000000001",
            "name": "NVIDIA H100 80GB HBM3",
            "used_memory": 80990 * MIB,
            "memory_used": 80990 * MIB,
            "memory_total": (80990 + 11 + 559) * MIB,
            "utilization_gpu": 88.0,
            "pids": [],
        }
    ]
    # {host_ip} became the pod's node address (the scripted node's 10.0.0.1).
    assert exporter.paths and exporter.paths[-1] == "/metrics?at=10.0.0.1"


async def test_a_cpu_kernel_shows_its_limits_and_no_gpu(make_cluster, exporter):
    """scripted API: a CPU kernel's live status has the pod's limits beside the readings,
    no GPU requested, and asks the exporter nothing."""
    cluster = make_cluster(kubernetes_dcgm_exporter_url=f"http://127.0.0.1:{exporter.port}/metrics")
    pod = (await cluster.start(KID, "cpu"))["name"]
    cluster.serve_metrics(pod, cpu="250m", memory="1Gi")
    live = await cluster.client.live(KID)
    assert live["missing_readings"] == []
    assert (live["cpu_percent"], live["cpu_limit"]) == (25.0, 1.5)
    assert (live["memory_used"], live["memory_limit"]) == (2**30, 2 * 2**30)
    assert live["gpu"] == {"requested": [], "state": None, "message": None, "devices": []}
    assert exporter.paths == []


async def test_without_the_metrics_api_or_an_exporter_the_panel_is_told_which(make_cluster):
    """scripted API without metrics.k8s.io (the API server's 404) and no exporter URL: no
    readings, the limits still there, and one reason for each, naming what to install or
    set."""
    cluster = make_cluster()
    await cluster.start(KID, "gpu")
    live = await cluster.client.live(KID)
    assert live["running"] is True
    assert live["cpu_percent"] is None and live["memory_used"] is None
    why = reasons(live)
    assert set(why) == {"cpu_memory", "gpu"}, why
    assert "does not serve the metrics API" in why["cpu_memory"]
    assert "metrics-server" in why["cpu_memory"]
    assert "kubernetes_dcgm_exporter_url" in why["gpu"]
    assert live["gpu"]["devices"] == [] and live["gpu"]["requested"][0]["count"] == 1


async def test_each_way_a_reading_can_be_missing_is_said(make_cluster, exporter):
    """scripted API + DCGM stand-in: metrics-server has no reading of the pod yet; the Role
    lacks the metrics rule (RBAC's 403); the exporter answers 503, is gone, or runs without
    pod mapping. Each gives its own reason, never an error answer."""
    cluster = make_cluster(kubernetes_dcgm_exporter_url=f"http://127.0.0.1:{exporter.port}/metrics")
    cluster.app.kernel_backend._exporter.ttl = 0  # each poll reads the exporter anew
    pod = (await cluster.start(KID, "gpu"))["name"]

    cluster.api.pod_metrics = {}  # served, but no reading of this pod yet
    exporter.text = exporter_text({})  # no pod mapping for this pod
    why = reasons(await cluster.client.live(KID))
    assert f"no reading of pod {NS}/{pod} yet" in why["cpu_memory"], why
    assert f"maps no GPU to pod {NS}/{pod}" in why["gpu"], why
    assert "pod mapping" in why["gpu"]

    cluster.api.metrics_forbidden = True
    exporter.status = 503
    why = reasons(await cluster.client.live(KID))
    assert "give its Role `get` on `pods` in the API group `metrics.k8s.io`" in why["cpu_memory"]
    assert "answered 503" in why["gpu"], why

    cluster.api.metrics_forbidden = False
    cluster.serve_metrics(pod, cpu="0", memory="300Mi")
    exporter.close()
    live = await cluster.client.live(KID)
    why = reasons(live)
    assert set(why) == {"gpu"} and "does not answer" in why["gpu"], why
    assert live["cpu_percent"] == 0.0 and live["memory_used"] == 300 * MIB
