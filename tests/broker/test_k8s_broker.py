"""The broker's Kubernetes mode end to end (issue 11), tier 3 (scripted API).

A single-user server in broker mode (jupyter_server, broker_url set) starts, restarts,
interrupts and shuts down kernels through the real tfenv broker with
``backend = "kubernetes"``. The broker loads a kubeconfig and drives the real
``kubernetes`` client against tests/support/k8s_api.py, the scripted API server, whose node
(DockerKubelet) runs each pod's kernel container for real from its image, as the pod's
uid, with the Secret's file mounted read-only, on a loopback address of its own for the
pod IP. The server reaches the kernel over TCP at that IP with the key it sent. The hub's
token check is a stand-in, as in tests/broker/test_broker_e2e.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpclient import HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from jupyter_tfenv.backends.kubernetes import manifests as m
from tests.broker.test_broker_e2e import StandInHubAuth
from tests.conftest import TF220, interrupt_a_sleep, run_code, start_kernel
from tests.support.k8s_api import (
    DockerKubelet,
    ScriptedAPI,
    ScriptedKubelet,
    make_root,
    remove_root,
)

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

NS = "tfenv-kernels"
TOKEN = "k8s-user-token"
SERVICE = "tfenv-broker-k8s"
SCOPE = f"access:services!service={SERVICE}"
POD_UID, POD_GID = 43210, 43210
USER = "ada"

K8S_CATALOG = [
    {"id": "tf220", "image": TF220, "tensorflow": "2.20.0", "resources": {"memory": "2g"}},
    {"id": "gpu1", "image": TF220, "gpus": 1, "display_name": "One GPU"},
]


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": K8S_CATALOG}))
    return path


class Cluster:
    """The scripted API server, its node, and a broker in Kubernetes mode on loopback."""

    def __init__(self, catalog_path: Path, tmp_path: Path, docker_client: Any) -> None:
        from jupyter_tfenv.broker.app import TFEnvBroker

        self.api = ScriptedAPI(NS)
        self.api.start()
        self.root = make_root()
        self.node = DockerKubelet(self.root, docker_client)
        self.api.kubelet = self.node
        self.app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            backend="kubernetes",
            kubernetes_namespace=NS,
            kubernetes_server_namespace="jhub",
            kubernetes_config=str(self.api.kubeconfig(tmp_path)),
            kubernetes_uid=POD_UID,
            kubernetes_gid=POD_GID,
            kubernetes_schedule_timeout=0.5,
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog_path)]}}),
        )
        self.app.init_catalog()
        self.app.hub_auth = StandInHubAuth(
            {TOKEN: {"kind": "user", "name": USER, "scopes": [SCOPE], "groups": []}}
        )
        self.socket, self.port = bind_unused_port()
        self.server = HTTPServer(self.app.make_web_app())
        self.server.add_sockets([self.socket])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/{SERVICE}/"

    def pods(self) -> list[dict[str, Any]]:
        return self.api.all("pods")

    def close(self) -> list[str]:
        self.server.stop()
        self.socket.close()
        left = [p["metadata"]["name"] for p in self.pods()]
        self.api.stop()
        remove_root(self.root)
        return left


@pytest.fixture
def cluster(catalog_path: Path, tmp_path: Path, images: Any) -> Iterator[Cluster]:
    pytest.importorskip("jupyterhub")
    running = Cluster(catalog_path, tmp_path, images)
    yield running
    assert not running.close(), "the test left kernel pods behind"


@pytest.fixture
def jp_server_config(jp_server_config: Config, cluster: Cluster) -> Config:
    jp_server_config.DockerKernelProvisioner.broker_url = cluster.url
    jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    return jp_server_config


FACTS = (
    "import os, json, tensorflow as tf\n"
    "key = json.load(open('/tfenv/connection/kernel.json'))['key']\n"
    "try:\n"
    "    open('/tfenv/connection/kernel.json', 'a').close(); writable = True\n"
    "except OSError:\n"
    "    writable = False\n"
    "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'tf': tf.__version__,\n"
    "  'key_in_env': any(key in v for v in os.environ.values()), 'writable': writable,\n"
    "  'ckpt': os.environ['TFENV_CHECKPOINT_DIR'], 'cwd': os.getcwd(),\n"
    "  'env': sorted(k for k in os.environ if 'TOKEN' in k or k.startswith('JUPYTERHUB'))}))\n"
)


async def test_kernel_pod_lifecycle_through_the_broker(jp_fetch, jp_serverapp, cluster):
    """scripted API: start, facts from inside the pod, restart, interrupt, shutdown."""
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
    [pod] = cluster.pods()
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    ip = cluster.node.ip_of[pod["metadata"]["name"]]
    # The server reaches the kernel at the pod's IP, on the fixed ports, with its key.
    assert km.ip == ip and km.transport == "tcp"
    assert km.shell_port == m.KernelPorts().shell
    secret = cluster.api.get("secrets", NS, m.kernel_secret_name(USER, kernel_id))
    assert secret is not None and secret["immutable"] is True
    assert pod["metadata"]["annotations"][m.LABEL_OWNER] == USER

    facts = json.loads(await run_code(jp_serverapp, kernel_id, FACTS))
    assert (facts["uid"], facts["gid"]) == (POD_UID, POD_GID)
    assert facts["tf"] == "2.20.0"
    assert facts["key_in_env"] is False and facts["writable"] is False
    assert facts["ckpt"] == "/tfenv/checkpoints"
    assert facts["cwd"] == "/tmp"
    assert facts["env"] == []

    # The broker's view, as the panel's endpoint shows it.
    info = json.loads((await jp_fetch("tfenv", "kernels", kernel_id)).body)
    assert info["container_id"] == pod["metadata"]["name"]
    assert info["live"]["running"] is True and info["live"]["status"] == "running"
    limit = pod["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert info["live"]["memory_limit"] == int(limit) > 0

    # A checkpoint written now is on the user's claim after the pod is gone.
    await run_code(
        jp_serverapp,
        kernel_id,
        "open('/tfenv/checkpoints/ckpt-1.index', 'w').write('saved')",
    )

    # Restart: a new pod (new uid, new IP) for the same kernel id; the state is new.
    await run_code(jp_serverapp, kernel_id, "x = 41")
    response = await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    assert response.code == 200
    [again] = cluster.pods()
    assert again["metadata"]["uid"] != pod["metadata"]["uid"]
    assert km.ip == cluster.node.ip_of[again["metadata"]["name"]] != ip
    out = await run_code(
        jp_serverapp,
        kernel_id,
        "import os; print('x' in globals(), sorted(os.listdir('/tfenv/checkpoints')))",
    )
    assert out.strip() == "False ['ckpt-1.index']"

    # Interrupt: the kernel's interrupt_request message (no signal crosses the API).
    await interrupt_a_sleep(jp_fetch, km, kernel_id)

    # Shutdown: pod, Secret and policy gone, the server's connection folder too; the
    # claim stays.
    rundir = Path(km.provisioner.runtime_dir)
    assert (rundir / "kernel.json").is_file()
    response = await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert response.code == 204
    assert cluster.pods() == []
    assert cluster.api.get("secrets", NS, m.kernel_secret_name(USER, kernel_id)) is None
    assert cluster.api.all("networkpolicies") == []
    assert not rundir.exists()
    [claim] = cluster.api.all("persistentvolumeclaims")
    saved = cluster.node.claim_dir(claim["metadata"]["name"]) / "checkpoints" / "ckpt-1.index"
    assert saved.read_text() == "saved"


async def test_the_checkpoint_panel_lists_and_deletes_on_the_claim(jp_fetch, jp_serverapp, cluster):
    """scripted API: the server cannot read the claim; the broker lists it with a short
    helper pod (read-only) and deletes with another; the panel's API shows the result."""
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
    try:
        await _checkpoints_on_the_claim(jp_fetch, jp_serverapp, cluster, kernel_id)
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")


async def _checkpoints_on_the_claim(jp_fetch, jp_serverapp, cluster, kernel_id):
    await run_code(
        jp_serverapp,
        kernel_id,
        "import tensorflow as tf\n"
        "ckpt = tf.train.Checkpoint(step=tf.Variable(7))\n"
        "manager = tf.train.CheckpointManager(ckpt, '/tfenv/checkpoints/run', max_to_keep=2)\n"
        "manager.save(); manager.save()\n",
    )
    overview = json.loads((await jp_fetch("tfenv", "checkpoints")).body)
    assert overview["storage"]["mode"] == "kubernetes"
    views = {v["environment"]: v for v in overview["environments"]}
    assert views["tf220"]["exists"] is True and views["gpu1"]["exists"] is False
    claim = m.claim_name(USER, "tf220")
    assert views["tf220"]["location"] == f"claim {NS}/{claim}, checkpoints/"
    [item] = views["tf220"]["checkpoints"]
    assert item["kind"] == "tf_checkpoint_set" and item["name"] == "run/checkpoint"
    # Helper pods went when done; the kernel pod is the only one.
    assert [p["metadata"]["name"] for p in cluster.pods()] == [m.kernel_pod_name(USER, kernel_id)]
    helpers = [p for meth, p in cluster.api.requests if meth == "POST" and p.endswith("/pods")]
    assert len(helpers) == 2  # the kernel and one reader

    response = await jp_fetch(
        "tfenv",
        "checkpoints",
        "tf220",
        "run/checkpoint",
        method="DELETE",
        headers={"If-Match": f'"{item["etag"]}"'},
    )
    result = json.loads(response.body)
    assert "run/checkpoint" in result["removed"]
    assert any(p.startswith("run/ckpt-2") for p in result["removed"])
    folder = cluster.node.claim_dir(claim) / "checkpoints"
    assert folder.is_dir() and not list(folder.rglob("ckpt-*"))
    again = json.loads((await jp_fetch("tfenv", "checkpoints", "tf220")).body)
    assert again["checkpoints"] == []


async def test_the_environment_probe_runs_as_a_pod(jp_fetch, cluster):
    """scripted API: the panel's probe (POST /tfenv/environments/<id>/probe) is a short
    pod of the environment's image; its TensorFlow and build facts come back, cached."""
    before = json.loads((await jp_fetch("tfenv", "environments", "tf220", "probe")).body)
    assert before["state"] == "not_probed"
    response = await jp_fetch("tfenv", "environments", "tf220", "probe", method="POST", body="")
    probe = json.loads(response.body)
    assert probe["state"] == "ok"
    assert probe["tensorflow"] == "2.20.0"
    assert probe["build"]["is_cuda_build"] is False  # the test image is tensorflow-cpu
    assert probe["gpu_state"]["state"] == "not_requested"
    assert probe["image_id"] == TF220
    # The probe pod is gone; the GET now answers from the cache without a pod.
    assert cluster.pods() == []
    posts = len([p for meth, p in cluster.api.requests if meth == "POST"])
    cached = json.loads((await jp_fetch("tfenv", "environments", "tf220", "probe")).body)
    assert cached["state"] == "ok" and cached["tensorflow"] == "2.20.0"
    assert len([p for meth, p in cluster.api.requests if meth == "POST"]) == posts


async def test_a_restarted_server_removes_the_pods_its_predecessor_left(
    jp_serverapp, cluster, monkeypatch
):
    """scripted API: kernel pods started for this hub server name by a server that died
    are removed when the next one starts (the labels and annotations find them); a pod of
    the user's other named server stays."""
    from jupyter_tfenv.backends.broker import BrokerClient

    client = BrokerClient(cluster.url, TOKEN)
    ids = {
        "": "0d1e2f3a-0000-4000-8000-0000000000a1",
        "big": "0d1e2f3a-0000-4000-8000-0000000000b2",
    }
    for server, kid in ids.items():
        await client.prepare_runtime(kid, restart=False)
        body = {"kernel_id": kid, "environment": "tf220", "cwd": "/tmp", "server": server}
        await client.start_kernel({**body, "key": "k" * 32}, timeout=120)
    try:
        assert len(cluster.pods()) == 2
        monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "")
        await jp_serverapp.extension_manager.start_all_extensions()
        (tfenv_app,) = jp_serverapp.extension_manager.extension_apps["jupyter_tfenv"]
        await tfenv_app._reap()
        left = [p["metadata"]["name"] for p in cluster.pods()]
        assert left == [m.kernel_pod_name(USER, ids["big"])]
    finally:
        for kid in ids.values():
            await client.delete_kernel(kid)


async def test_no_free_gpu_reaches_the_kernel_error_dialog(jp_fetch, cluster):
    """scripted API: FailedScheduling's reason and the pod's events in the dialog."""
    reason = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    cluster.api.kubelet = ScriptedKubelet(
        [
            (
                0.05,
                {
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": reason,
                        }
                    ]
                },
                [("FailedScheduling", reason, "Warning")],
            )
        ]
    )
    body = json.dumps({"name": "tfenv-gpu1", "path": "nb.ipynb"})
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=body)
    assert info.value.code == 503
    message = json.loads(info.value.response.body)["message"]
    assert "No node can run the kernel of 'gpu1' now" in message
    assert "Insufficient nvidia.com/gpu" in message
    assert "Events of the kernel pod:\nWarning FailedScheduling" in message
    assert cluster.pods() == []


async def test_the_broker_refuses_a_start_without_key_in_kubernetes_mode(cluster):
    """scripted API: the key is required, and only the broker's fields are accepted."""
    from jupyter_tfenv.backends.broker import BrokerClient, BrokerError

    client = BrokerClient(cluster.url, TOKEN)
    kid = "0c9a1f3e-0000-4000-8000-00000000abcd"
    answer = await client.prepare_runtime(kid, restart=False)
    assert answer == {
        "backend": "kubernetes",
        "transport": "tcp",
        "ports": m.KernelPorts().by_name(),
    }
    body = {"kernel_id": kid, "environment": "tf220", "cwd": "/home/ada"}
    with pytest.raises(BrokerError, match=r"'key'.*is required in Kubernetes mode"):
        await client.start_kernel(body, timeout=30)
    with pytest.raises(BrokerError, match="'image' is not accepted"):
        await client.start_kernel({**body, "key": "k" * 32, "image": "evil:1"}, timeout=30)
    assert cluster.pods() == []
    me = await client.me()
    assert (me["uid"], me["gid"]) == (POD_UID, POD_GID)


def test_docs_name_every_kubernetes_trait():
    """Every kubernetes_* setting of the broker is in docs/kubernetes.md."""
    from jupyter_tfenv.broker.app import TFEnvBroker

    text = (Path(__file__).parents[2] / "docs" / "kubernetes.md").read_text()
    names = [n for n in TFEnvBroker.class_trait_names(config=True) if n.startswith("kubernetes_")]
    assert names
    missing = [n for n in names if n not in text]
    assert not missing, f"docs/kubernetes.md does not describe {missing}"
