"""TensorBoards at a broker in Kubernetes mode (issue 23 item 4), tier 3 (scripted API).

The real ``TFEnvBroker`` with ``backend = "kubernetes"`` (tests/broker/test_k8s_broker.py's
Cluster: the scripted API and its Docker node) and :class:`PodTensorBoardsAtBroker` over
it: real TensorFlow writes two epochs of events into ada's log claim, her TensorBoard pod
starts, and the server's proxy (``TensorBoardProxy``) reaches it at the ``address`` the
answer names (the pod IP over TCP) and lists the run. Reuse, the per-user limit, another
user's 404s and the idle sweep are checked on the same pod. The broker's HTTP routes do
not call this object yet (docs/kubernetes.md, Limits).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.broker.pod_tensorboards import PodTensorBoardsAtBroker
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.labels import LABEL_OWNER
from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.tensorboard.proxy import tcp_target
from tests.backends.test_k8s_tensorboard import TRAIN
from tests.broker.test_k8s_broker import K8S_CATALOG, NS, POD_GID, POD_UID, TOKEN, USER, Cluster
from tests.support.k8s_api import DockerKubelet
from tests.tensorboard.test_tensorboard_proxy_tcp import through_proxy

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

ADA = Caller(name=USER, uid=POD_UID, gid=POD_GID, home="/")
BOB = Caller(name="bob", uid=POD_UID, gid=POD_GID, home="/")


@pytest.fixture
def cluster(tmp_path: Path, images: Any) -> Iterator[Cluster]:
    pytest.importorskip("jupyterhub")
    catalog_path = tmp_path / "catalog.yaml"
    catalog_path.write_text(yaml.safe_dump({"version": 1, "environments": K8S_CATALOG}))
    running = Cluster(catalog_path, tmp_path, images)
    yield running
    assert not running.close(), "the test left pods behind"


def log_two_epochs(cluster: Cluster, images: Any, env: Any) -> None:
    """ada's claim of tf220, as a kernel start makes it, with two epochs of real
    TensorFlow events in its logs folder (written with no network)."""
    claim = m.claim_name(USER, "tf220")
    cluster.api.store(
        "persistentvolumeclaims",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": claim,
                "namespace": NS,
                "annotations": {LABEL_OWNER: USER, m.LABEL_ENVIRONMENT: "tf220"},
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    logs = cluster.node.claim_dir(claim) / m.LOG_SUBPATH
    logs.mkdir(parents=True)
    os.chown(logs, POD_UID, POD_GID)
    images.containers.run(
        env.image,
        [env.python, "-c", TRAIN],
        user=f"{POD_UID}:{POD_GID}",
        network_mode="none",
        volumes=[f"{logs}:/logs:rw"],
        environment={"HOME": "/tmp", "TF_CPP_MIN_LOG_LEVEL": "2"},
        labels={DockerKubelet.LABEL: cluster.node.node_id},
        remove=True,
    )


def test_a_tensorboard_pod_through_the_broker(cluster: Cluster, images: Any) -> None:
    boards = PodTensorBoardsAtBroker(cluster.app, max_per_user=1, idle_timeout=3600)
    env = cluster.app.get_catalog().get("tf220")

    async def main() -> None:
        # No claim yet: nothing was logged (404, what to do).
        with pytest.raises(TFEnvError, match="write to TFENV_LOG_DIR") as none:
            await boards.open(ADA, {"environment": "tf220"})
        assert none.value.http_status == 404
        await asyncio.to_thread(log_two_epochs, cluster, images, env)

        answer, started = await boards.open(ADA, {"environment": "tf220"})
        assert started and answer["name"] == "env-tf220" and answer["state"] == "running"
        [pod] = [p["metadata"]["name"] for p in cluster.pods()]
        assert answer["address"] == tcp_target(cluster.node.ip_of[pod], 6006), answer
        runs: Any = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            response = await through_proxy(answer["address"], "data/runs", {})
            runs = json.loads(response.body) if response.code == 200 else response.body
            if isinstance(runs, list) and any(r.startswith("run1") for r in runs):
                break
            await asyncio.sleep(1)
        assert isinstance(runs, list) and any(r.startswith("run1") for r in runs), (
            f"the proxy to the pod's address lists no run1 within 120 s: {runs!r}"
        )

        again, started = await boards.open(ADA, {"environment": "tf220"})
        assert not started and again["address"] == answer["address"], "reused"
        with pytest.raises(TFEnvError, match="max_tensorboards_per_user = 1") as limit:
            await boards.open(ADA, {"view": "compare"})
        assert limit.value.http_status == 429
        listed = await boards.listing(ADA)
        assert [b["name"] for b in listed["tensorboards"]] == ["env-tf220"]

        # bob: nothing of ada's, in any call.
        assert (await boards.listing(BOB))["tensorboards"] == []
        for call in (boards.get(BOB, "env-tf220"), boards.stop(BOB, "env-tf220")):
            with pytest.raises(TFEnvError, match="no TensorBoard 'env-tf220'") as other:
                await call
            assert other.value.http_status == 404
        assert cluster.pods(), "bob's stop removed ada's pod"

        # The idle sweep removes what no server asked for within the timeout.
        assert (await boards.get(ADA, "env-tf220"))["state"] == "running"
        assert await boards.sweep() == [], "a TensorBoard just asked for was swept"
        # A restarted broker knows nothing of the pod: its first sweep adopts it (timed
        # from then), a later one removes it once idle.
        restarted = PodTensorBoardsAtBroker(cluster.app, max_per_user=1, idle_timeout=0.5)
        assert await restarted.sweep() == [], "a pod found by the sweep was removed at once"
        assert cluster.pods(), "the adopting sweep removed the pod"
        await asyncio.sleep(0.6)
        assert await restarted.sweep() == [(USER, "env-tf220")]
        assert cluster.pods() == [] and cluster.api.all("networkpolicies") == []
        with pytest.raises(TFEnvError, match="no TensorBoard") as gone:
            await boards.get(ADA, "env-tf220")
        assert gone.value.http_status == 404

    asyncio.run(main())


@pytest.fixture
def jp_server_config(jp_server_config: Config, cluster: Cluster) -> Config:
    jp_server_config.DockerKernelProvisioner.broker_url = cluster.url
    jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    return jp_server_config


async def test_a_tensorboard_pod_through_the_server_and_the_broker(
    jp_fetch: Any, jp_serverapp: Any, cluster: Cluster, images: Any
) -> None:
    """A single-user server in broker mode, the real broker with backend kubernetes: POST
    /tfenv/tensorboards starts ada's pod, the server's proxy reaches it at the pod IP and
    lists the run, DELETE removes pod and policy."""
    await asyncio.to_thread(log_two_epochs, cluster, images, cluster.app.get_catalog().get("tf220"))
    response = await jp_fetch(
        "tfenv", "tensorboards", method="POST", body=json.dumps({"environment": "tf220"})
    )
    board = json.loads(response.body)
    assert response.code in (200, 202) and board["name"] == "env-tf220", board
    runs: Any = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        got = await jp_fetch("tfenv", "tensorboard", "env-tf220", "data", "runs", raise_error=False)
        runs = json.loads(got.body) if got.code == 200 else (got.code, got.body[:300])
        if isinstance(runs, list) and any(r.startswith("run1") for r in runs):
            break
        await asyncio.sleep(1)
    assert isinstance(runs, list) and any(r.startswith("run1") for r in runs), (
        f"the server's proxy to ada's TensorBoard pod lists no run1 within 120 s: {runs!r}"
    )
    listed = json.loads((await jp_fetch("tfenv", "tensorboards")).body)
    assert [b["name"] for b in listed["tensorboards"]] == ["env-tf220"], listed
    response = await jp_fetch("tfenv", "tensorboards", "env-tf220", method="DELETE")
    assert response.code == 204
    assert cluster.pods() == [] and cluster.api.all("networkpolicies") == []
