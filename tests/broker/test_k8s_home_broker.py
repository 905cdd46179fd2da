"""The notebook's folder in the kernel pod (issue 22 item 1) end to end, tier 3 (scripted API).

A single-user server in broker mode opens a notebook in ``work/``; the real broker in
Kubernetes mode (``kubernetes_mount_home``) starts its kernel pod through the scripted
API, whose Docker node runs it. The server's root folder *is* the home claim's folder on
the node (``DockerKubelet.claim_dir("claim-ada")``): what the server's contents API writes
is what the claim holds, as on z2jh where the server mounts ``claim-<user>`` at its home.
So the server's own file API shows the kernel's file, and the kernel reads the file the
server saved beside the notebook. The "server" pod the kernel must be placed beside is an
object of the scripted API (labels, node); the hub's token check is a stand-in, as in
tests/broker/test_k8s_broker.py.
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

from tests.broker.test_broker_e2e import StandInHubAuth
from tests.conftest import PY_IMAGE, run_code, start_kernel
from tests.support.k8s_api import DockerKubelet, ScriptedAPI, make_root, remove_root

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

#: Kernels beside the servers: a pod mounts only claims of its own namespace.
NS = "jhub"
TOKEN = "k8s-home-user-token"
SERVICE = "tfenv-broker-k8s-home"
SCOPE = f"access:services!service={SERVICE}"
UID, GID = 43211, 43211
USER = "ada"
CLAIM = "claim-ada"
SERVER_LABELS = {"component": "singleuser-server", "hub.jupyter.org/username": USER}


class HomeCluster:
    """The scripted API, its Docker node, ada's home claim and server pod, the broker."""

    def __init__(self, tmp_path: Path, docker_client: Any) -> None:
        from jupyter_tfenv.broker.app import TFEnvBroker

        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(
            yaml.safe_dump({"version": 1, "environments": [{"id": "py", "image": PY_IMAGE}]})
        )
        self.api = ScriptedAPI(NS)
        self.api.start()
        self.root = make_root()
        self.node = DockerKubelet(self.root, docker_client)
        self.api.kubelet = self.node
        #: The server's root folder and the claim's folder on the node: one folder.
        self.home = self.node.claim_dir(CLAIM)
        (self.home / "work").mkdir(parents=True)
        for p in (self.home, self.home / "work"):
            os.chown(p, UID, GID)
        self.api.store(
            "persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": CLAIM, "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"]},
                "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"]},
            },
        )
        self.api.store(
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"jupyter-{USER}", "namespace": NS, "labels": SERVER_LABELS},
                "spec": {"nodeName": "node-1", "containers": [{"name": "notebook", "image": "x"}]},
                "status": {"phase": "Running"},
            },
        )
        self.app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            backend="kubernetes",
            kubernetes_namespace=NS,
            kubernetes_server_namespace=NS,
            kubernetes_config=str(self.api.kubeconfig(tmp_path)),
            kubernetes_uid=UID,
            kubernetes_gid=GID,
            kubernetes_schedule_timeout=0.5,
            kubernetes_mount_home=True,
            kubernetes_home_path=str(self.home),
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog)]}}),
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

    def kernel_pods(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self.api.all("pods")
            if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "kernel"
        ]

    def close(self) -> list[str]:
        self.server.stop()
        self.socket.close()
        left = [p["metadata"]["name"] for p in self.kernel_pods()]
        self.api.stop()
        self.node.stop()
        remove_root(self.root)
        return left


@pytest.fixture
def cluster(tmp_path: Path, images: Any) -> Iterator[HomeCluster]:
    pytest.importorskip("jupyterhub")
    running = HomeCluster(tmp_path, images)
    yield running
    assert not running.close(), "the test left kernel pods behind"


@pytest.fixture
def jp_root_dir(cluster: HomeCluster) -> Path:
    """The server's root folder: the home claim's folder (z2jh: /home/jovyan)."""
    return cluster.home


@pytest.fixture
def jp_server_config(jp_server_config: Config, cluster: HomeCluster) -> Config:
    jp_server_config.DockerKernelProvisioner.broker_url = cluster.url
    jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    return jp_server_config


async def put_file(jp_fetch: Any, path: str, text: str) -> None:
    body = json.dumps({"type": "file", "format": "text", "content": text})
    response = await jp_fetch("api", "contents", *path.split("/"), method="PUT", body=body)
    assert response.code in (200, 201)


async def get_file(jp_fetch: Any, path: str) -> str:
    response = await jp_fetch("api", "contents", *path.split("/"), params={"content": "1"})
    return str(json.loads(response.body)["content"])


async def test_the_kernel_works_in_the_notebooks_folder_of_the_server(
    jp_fetch, jp_serverapp, cluster
):
    # The server saves a file beside the notebook; the kernel starts from the notebook.
    await put_file(jp_fetch, "work/data.csv", "a,b\n1,2\n")
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "work/nb.ipynb")
    [pod] = cluster.kernel_pods()
    (box,) = pod["spec"]["containers"]
    work = str(cluster.home / "work")
    assert box["workingDir"] == work
    (term,) = pod["spec"]["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["labelSelector"]["matchLabels"] == SERVER_LABELS

    out = await run_code(
        jp_serverapp,
        kernel_id,
        "import os\nprint(os.getcwd())\nprint(open('data.csv').read().strip())\n"
        "open('result.txt', 'w').write('written by the kernel')\n",
    )
    assert out.splitlines() == [work, "a,b", "1,2"], out
    # The server's file API shows what the kernel wrote, as the file browser would.
    assert await get_file(jp_fetch, "work/result.txt") == "written by the kernel"

    response = await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert response.code == 204
    assert cluster.kernel_pods() == []


async def test_a_missing_home_claim_reaches_the_kernel_error_dialog(jp_fetch, cluster):
    cluster.api.objects.pop(("persistentvolumeclaims", NS, CLAIM))
    body = json.dumps({"name": "tfenv-py", "path": "work/nb.ipynb"})
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=body)
    assert info.value.code == 409, info.value.response.body
    message = json.loads(info.value.response.body)["message"]
    assert f"{NS}/{CLAIM} does not exist" in message
    assert "kubernetes_home_claim" in message
    assert cluster.kernel_pods() == []
