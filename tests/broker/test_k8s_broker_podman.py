"""The broker's Kubernetes mode with a real pod: tier 3 scripted API + tier 2 real pod.

A single-user server in broker mode starts a TensorFlow kernel through the real tfenv
broker with ``backend = "kubernetes"``; the broker's real ``kubernetes`` client talks to
tests/support/k8s_api.py (the scripted API), whose node is tests/support/k8s_podman_node.py's
:class:`PodmanKubelet`: the pod, its Secret and its claim, as the API stored them, are
played under ``podman kube play`` by the tier-2 harness (tests/support/podman.py) on a podman
bridge network. The server then reaches the kernel at the podman pod's own IP (not a
loopback stand-in) with the key the broker put in the Secret. Deleting the kernel through
the server's REST API deletes the pod in the API, and the node takes the podman pod down.

Skipped where podman cannot run pods (tests/support/podman.py's ``unusable_reason``), except in CI
(``CI`` set), where that is a failure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from tests.broker.test_k8s_broker import K8S_CATALOG, POD_GID, POD_UID, TOKEN, Cluster
from tests.conftest import run_code, start_kernel
from tests.support import podman as pm
from tests.support.k8s_podman_node import PodmanKubelet

pytestmark = [pytest.mark.docker, pytest.mark.scripted_api]


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": K8S_CATALOG}))
    return path


def podman_or_skip() -> None:
    reason = pm.unusable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"tier 2 must run in CI: {reason}")
        pytest.skip(reason)


@pytest.fixture
def cluster(catalog_path: Path, tmp_path: Path, images: Any) -> Iterator[Cluster]:
    """test_k8s_broker's Cluster (scripted API + broker), its node a PodmanKubelet."""
    pytest.importorskip("jupyterhub")
    podman_or_skip()
    pm.ensure_image(pm.TF_IMAGE)
    running = Cluster(catalog_path, tmp_path, images)
    (tmp_path / "podman").mkdir()
    node = PodmanKubelet(tmp_path / "podman")
    running.node = node  # type: ignore[assignment]
    running.api.kubelet = node
    try:
        yield running
    finally:
        left = running.close()
        problems = node.stop()
    assert not left, f"the test left kernel pods behind in the API: {left}"
    assert not problems, f"podman objects left behind: {problems}"


@pytest.fixture
def jp_server_config(jp_server_config: Config, cluster: Cluster) -> Config:
    jp_server_config.DockerKernelProvisioner.broker_url = cluster.url
    jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    return jp_server_config


def podman_pods_on(network: str) -> list[str]:
    out = pm.podman("pod", "ps", "--filter", f"network={network}", "--format", "{{.Name}}")
    return out.stdout.split()


async def test_a_tf_kernel_runs_in_a_real_pod_through_the_broker(jp_fetch, jp_serverapp, cluster):
    """scripted API + podman: start, code at the pod's real IP, restart, DELETE: pod gone."""
    node: PodmanKubelet = cluster.node  # type: ignore[assignment]
    assert node.network in pm.podman("network", "ls", "--format", "{{.Name}}").stdout.split()
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
    [pod] = cluster.pods()
    name = pod["metadata"]["name"]
    played = node.pods[name]
    assert pod["status"]["podIP"] == played.ip
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    # The server reaches the kernel at the podman pod's address on the bridge network.
    assert km.ip == played.ip and km.transport == "tcp"
    assert not km.ip.startswith("127.")
    assert podman_pods_on(node.network) == [name]

    out = await run_code(
        jp_serverapp,
        kernel_id,
        "import os, json, tensorflow as tf\n"
        "print(json.dumps([tf.__version__, os.getuid(), os.getgid()]))",
    )
    assert json.loads(out.strip().splitlines()[-1]) == ["2.20.0", POD_UID, POD_GID]
    assert cluster.app.kubernetes_uid == POD_UID

    await run_code(jp_serverapp, kernel_id, "x = 41")
    # Restart: a new pod of the same name (new uid), played again; the server follows it.
    response = await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    assert response.code == 200
    [again] = cluster.pods()
    assert again["metadata"]["name"] == name and again["metadata"]["uid"] != pod["metadata"]["uid"]
    assert km.ip == node.pods[name].ip == again["status"]["podIP"]
    assert podman_pods_on(node.network) == [name]
    out = await run_code(jp_serverapp, kernel_id, "print('x' in globals())")
    assert out.strip() == "False"

    response = await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert response.code == 204
    assert cluster.pods() == []
    assert name not in node.pods
    assert pm.podman("pod", "exists", name, check=False).returncode == 1
    assert podman_pods_on(node.network) == []
    assert cluster.api.all("secrets") == []
