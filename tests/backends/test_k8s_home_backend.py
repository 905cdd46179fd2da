"""The notebook's folder in the kernel pod (issue 22 item 1), tier 3: the backend against
the scripted API, whose node runs the kernel for real in Docker.

A host folder stands for the user's home claim ``claim-alice`` (as the checkpoint claim's
folder does in tests/backends/test_k8s_backend.py): the "server" side is that folder, which
the test writes and reads as the server would; the kernel pod mounts the same claim with a
subPath and runs in the notebook's folder. The "server" pod is an object in the scripted
API (labels, node, phase) and the nodes are the API's node list, so the placement checks
see what a cluster would answer. ``KubernetesBackend`` is built from ``KubernetesSettings``
as the broker builds it (``kubernetes_mount_home`` on).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from jupyter_tfenv.backends.base import BackendError, KernelStart
from jupyter_tfenv.backends.kubernetes import KubernetesBackend, KubernetesSettings
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.core.caller import Caller
from tests.backends.test_k8s_backend import execute
from tests.conftest import PY_IMAGE
from tests.support.k8s_api import DockerKubelet, ScriptedAPI, make_root, remove_root

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.usefixtures("images"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

#: Kernels beside the servers: a pod mounts only claims of its own namespace.
NS = "jhub"
UID, GID = 1000, 100  # z2jh's jovyan: the server's and the kernel's
ALICE = Caller(name="alice", uid=UID, gid=GID, home="/")
CLAIM = "claim-alice"
SERVER_LABELS = {"component": "singleuser-server", "hub.jupyter.org/username": "alice"}
CATALOG = [
    {"id": "py", "image": PY_IMAGE},
    {"id": "py-gpu", "image": PY_IMAGE, "gpus": 1},
]


class Home:
    """The scripted API, its Docker node, the backend, and alice's home claim folder."""

    def __init__(self, tmp_path: Path, images: Any) -> None:
        path = tmp_path / "catalog.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
        self.catalog = TFEnvCatalog(config=Config({"TFEnvCatalog": {"catalog_files": [str(path)]}}))
        self.catalog.refresh()
        self.api = ScriptedAPI(NS)
        self.api.start()
        self.root = make_root()
        self.node = DockerKubelet(self.root, images)
        self.api.kubelet = self.node
        self.api.nodes = [node("node-1", gpus=0), node("gpu-node", gpus=4)]
        self.backend = KubernetesBackend(
            KubernetesSettings(
                namespace=NS,
                server_namespace=NS,
                config=str(self.api.kubeconfig(tmp_path)),
                uid=UID,
                gid=GID,
                schedule_timeout=0.5,
                mount_home=True,
                # The GPU refusal below is the home's, not the GPU compatibility check's.
                allow_incompatible_gpus=True,
            ),
            catalog=lambda: self.catalog,
        )
        #: What the server sees at /home/jovyan: the claim's folder on the "node".
        self.folder = self.node.claim_dir(CLAIM)

    def claim(self, *modes: str, owner: str = "alice") -> None:
        """alice's home claim as KubeSpawner makes it (its annotation names the user)."""
        self.api.store(
            "persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": CLAIM,
                    "namespace": NS,
                    "labels": {"hub.jupyter.org/username": owner},
                    "annotations": {"hub.jupyter.org/username": owner},
                },
                "spec": {"accessModes": list(modes), "resources": {"requests": {"storage": "1Gi"}}},
                "status": {"phase": "Bound", "accessModes": list(modes)},
            },
        )
        work = self.folder / "work"
        work.mkdir(parents=True, exist_ok=True)
        (work / "data.csv").write_text("a,b\n1,2\n")
        for p in (self.folder, work, work / "data.csv"):
            os.chown(p, UID, GID)

    def server(self, node_name: str = "node-1", phase: str = "Running") -> None:
        self.api.store(
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "jupyter-alice", "namespace": NS, "labels": SERVER_LABELS},
                "spec": {"nodeName": node_name, "containers": [{"name": "notebook", "image": "x"}]},
                "status": {"phase": phase},
            },
        )

    def request(self, cwd: str = "/home/jovyan/work", mount: str = "/home/jovyan") -> KernelStart:
        # What alice's server sends: the notebook's folder and its root folder, its key.
        return KernelStart(
            kernel_id=str(uuid.uuid4()),
            environment="py",
            cwd=cwd,
            mount=mount,
            key=uuid.uuid4().hex,
        )

    def kernel_pods(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self.api.all("pods")
            if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "kernel"
        ]

    def close(self) -> None:
        self.api.stop()
        self.node.stop()
        remove_root(self.root)


def node(name: str, *, gpus: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": str(gpus)}},
    }


@pytest.fixture
def home(tmp_path: Path, images: Any) -> Iterator[Home]:
    made = Home(tmp_path, images)
    try:
        yield made
    finally:
        made.close()


def connection(answer: dict[str, Any], key: str) -> dict[str, Any]:
    return {
        "transport": "tcp",
        "ip": answer["ip"],
        **{f"{k}_port": v for k, v in answer["ports"].items()},
        "key": key,
        "signature_scheme": "hmac-sha256",
    }


async def refused(home: Home, request: KernelStart, env_id: str = "py") -> BackendError:
    with pytest.raises(BackendError) as err:
        await home.backend.start(ALICE, request, home.catalog.get(env_id))
    assert home.kernel_pods() == [], "a refused start must make no pod"
    return err.value


# -- the kernel and the server share the notebook's folder --------------------------------


async def test_rwo_kernel_runs_in_the_notebook_folder_beside_the_server(home: Home) -> None:
    home.claim("ReadWriteOnce")
    home.server("node-1")
    request = home.request()
    answer = await home.backend.start(ALICE, request, home.catalog.get("py"))
    try:
        (pod,) = home.kernel_pods()
        spec = pod["spec"]
        (box,) = spec["containers"]
        assert box["workingDir"] == "/home/jovyan/work"
        assert {"name": "home", "mountPath": "/home/jovyan"} in box["volumeMounts"]
        assert {"name": "home", "persistentVolumeClaim": {"claimName": CLAIM}} in spec["volumes"]
        (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["labelSelector"]["matchLabels"] == SERVER_LABELS
        assert term["topologyKey"] == "kubernetes.io/hostname" and term["namespaces"] == [NS]

        out = await execute(
            connection(answer, str(request.key)),
            "import os\n"
            "print(os.getcwd(), os.getuid(), os.getgid())\n"
            "print(open('data.csv').read().strip())\n"
            "open('result.txt', 'w').write('written by the kernel')\n",
        )
        assert "error" not in out, out
        lines = out["stdout"].splitlines()
        assert lines[0] == f"/home/jovyan/work {UID} {GID}", out
        assert lines[1:] == ["a,b", "1,2"], out
        # The server's side sees the kernel's file, owned by the shared uid.
        written = home.folder / "work" / "result.txt"
        assert written.read_text() == "written by the kernel"
        assert (written.stat().st_uid, written.stat().st_gid) == (UID, GID)
        # And the kernel sees what the server writes beside the notebook, now.
        (home.folder / "work" / "later.txt").write_text("from the server")
        os.chown(home.folder / "work" / "later.txt", UID, GID)
        out = await execute(connection(answer, str(request.key)), "print(open('later.txt').read())")
        assert out["stdout"].strip() == "from the server", out
    finally:
        await home.backend.remove(ALICE, request.kernel_id)


async def test_rwx_kernel_mounts_the_notebook_folder_on_any_node(home: Home) -> None:
    # No server pod in the API at all: ReadWriteMany needs none.
    home.claim("ReadWriteMany")
    request = home.request(cwd="/home/jovyan/work", mount="/home/jovyan/work")
    answer = await home.backend.start(ALICE, request, home.catalog.get("py"))
    try:
        (pod,) = home.kernel_pods()
        (box,) = pod["spec"]["containers"]
        assert "affinity" not in pod["spec"]
        assert {
            "name": "home",
            "mountPath": "/home/jovyan/work",
            "subPath": "work",
        } in box["volumeMounts"]
        out = await execute(
            connection(answer, str(request.key)),
            "import os\nprint(sorted(os.listdir('.')))\nopen('rwx.txt', 'w').write('ok')\n",
        )
        assert out["stdout"].strip() == "['data.csv']", out
        assert (home.folder / "work" / "rwx.txt").read_text() == "ok"
    finally:
        await home.backend.remove(ALICE, request.kernel_id)


# -- refusals, each before any pod is made ------------------------------------------------------


async def test_a_missing_home_claim_is_refused_with_what_to_set(home: Home) -> None:
    home.server()
    err = await refused(home, home.request())
    assert err.http_status == 409 and err.reason == "home not shared"
    assert f"{NS}/{CLAIM} does not exist" in err.message
    assert "kubernetes_home_claim" in err.message


async def test_a_notebook_outside_the_home_is_refused(home: Home) -> None:
    home.claim("ReadWriteOnce")
    home.server()
    err = await refused(home, home.request(cwd="/home/jovyan/../../etc", mount="/etc"))
    assert err.http_status == 409
    assert "outside the home /home/jovyan" in err.message and "kubernetes_home_path" in err.message


async def test_a_claim_that_admits_one_pod_only_is_refused(home: Home) -> None:
    home.claim("ReadWriteOncePod")
    home.server()
    err = await refused(home, home.request())
    assert "ReadWriteOncePod" in err.message and "cannot share it" in err.message


async def test_rwo_without_the_server_pod_names_the_labels_to_set(home: Home) -> None:
    home.claim("ReadWriteOnce")
    home.server(phase="Succeeded")  # a server pod that is gone
    err = await refused(home, home.request())
    assert "no running pod in 'jhub' has the labels" in err.message
    assert "hub.jupyter.org/username=alice" in err.message
    assert "kubernetes_server_selector" in err.message


async def test_a_gpu_kernel_whose_server_node_has_no_gpu_needs_rwx(home: Home) -> None:
    home.claim("ReadWriteOnce")
    home.server("node-1")  # no GPU there; gpu-node has 4
    err = await refused(home, home.request(), "py-gpu")
    assert err.http_status == 409
    assert "your server runs on node node-1, which has 0" in err.message
    assert "ReadWriteMany" in err.message


async def test_a_claim_of_that_name_annotated_for_another_user_is_never_mounted(
    home: Home,
) -> None:
    home.claim("ReadWriteMany", owner="alic")  # e.g. 'alic' + server 'e' under a template
    err = await refused(home, home.request())
    assert "hub.jupyter.org/username='alic', not 'alice'" in err.message
