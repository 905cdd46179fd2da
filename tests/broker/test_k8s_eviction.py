"""A kernel pod the cluster ends is restarted, and the user is told why (scripted API).

A single-user server in broker mode against the real broker in Kubernetes mode, on the
scripted API server whose node runs each pod's kernel container for real
(tests/broker/test_k8s_broker.py's cluster). The node evicts the pod as a kubelet under
memory pressure does: the kernel container is killed, the pod becomes phase Failed,
reason Evicted, with the kubelet's message. jupyter's restarter starts a new pod, and
``GET /tfenv/kernels/<id>`` has ``last_restart`` with the reason ``pod-evicted`` and the
cluster's words; a kernel that exits by itself is restarted without one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import pytest

from tests.broker.test_k8s_broker import NS, Cluster, catalog_path, cluster, jp_server_config
from tests.conftest import run_code, start_kernel
from tests.support.k8s_api import container

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

__all__ = ["catalog_path", "cluster", "jp_server_config"]  # fixtures

LOW_MEMORY = "The node was low on resource: memory."


@pytest.fixture(autouse=True)
def _logs(server_logs_propagate: None) -> None:
    """caplog sees the server's records (tests/conftest.py)."""


def evict(cluster: Cluster, name: str) -> None:
    """What a kubelet under memory pressure does: kill the pod's containers and mark the
    pod Failed, reason Evicted (the container's own exit is not reported as the end)."""
    box = cluster.node.containers.pop(name)
    box.kill()
    status = {
        "phase": "Failed",
        "reason": "Evicted",
        "message": LOW_MEMORY,
        **container({"terminated": {"exitCode": 137, "reason": "Error"}}),
    }
    cluster.api.update_pod(NS, name, status, [("Evicted", LOW_MEMORY, "Warning")])


async def restarted(
    jp_fetch: Any, jp_serverapp: Any, cluster: Cluster, kernel_id: str, old_uid: str
) -> dict[str, Any]:
    """The kernel's status once the restarter started it in a new pod (the pod's name is
    the kernel's: a new uid tells the new pod)."""
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    deadline = time.monotonic() + 240
    seen: tuple[int, Any] = (0, {})
    while time.monotonic() < deadline:
        response = await jp_fetch("tfenv", "kernels", kernel_id, raise_error=False)
        seen = (response.code, json.loads(response.body or b"{}"))
        uids = [p["metadata"]["uid"] for p in cluster.pods()]
        if (
            response.code == 200
            and len(uids) == 1
            and uids[0] != old_uid
            and (seen[1].get("live") or {}).get("running") is True
            and km.ready.done()
        ):
            return dict(seen[1])
        await asyncio.sleep(1)
    raise AssertionError(f"kernel {kernel_id} was not restarted in a new pod: {seen}")


async def test_an_evicted_pod_is_restarted_and_said(
    jp_fetch: Any, jp_serverapp: Any, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
    try:
        assert await run_code(jp_serverapp, kernel_id, "x = 42; print(x)") == "42\n"
        [pod] = cluster.pods()
        name = pod["metadata"]["name"]
        before = json.loads((await jp_fetch("tfenv", "kernels", kernel_id)).body)
        assert before["last_restart"] is None, before

        evict(cluster, name)
        after = await restarted(jp_fetch, jp_serverapp, cluster, kernel_id, pod["metadata"]["uid"])
        record = after["last_restart"]
        assert record is not None, f"the evicted kernel was restarted without a reason: {after}"
        assert record["reason"] == "pod-evicted", record
        message = record["message"]
        for words in (
            "evicted the kernel's pod",
            f"Evicted: {LOW_MEMORY}",
            "the kernel was restarted in a new pod",
            "variables are lost",
            "checkpoints on its checkpoint claim ($TFENV_CHECKPOINT_DIR) are kept",
        ):
            assert words in message, (words, message)
        assert record["at"].endswith("+00:00"), record
        # The new pod is a fresh kernel.
        code = "try:\n    x\nexcept NameError:\n    print('gone')\n"
        assert await run_code(jp_serverapp, kernel_id, code) == "gone\n"
        warned = [
            r.getMessage()
            for r in caplog.records
            if r.levelno == logging.WARNING
            and kernel_id in r.getMessage()
            and "evicted the kernel's pod" in r.getMessage()
        ]
        assert len(warned) == 1, [r.getMessage() for r in caplog.records]
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)


async def test_a_kernel_that_exits_by_itself_gets_no_reason(
    jp_fetch: Any, jp_serverapp: Any, cluster: Cluster
) -> None:
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
    try:
        [pod] = cluster.pods()
        client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=120)
            client.execute("import os; os._exit(1)")
        finally:
            client.stop_channels()
        after = await restarted(jp_fetch, jp_serverapp, cluster, kernel_id, pod["metadata"]["uid"])
        assert after["last_restart"] is None, (
            f"a kernel that exited by itself was given a restart reason: {after['last_restart']}"
        )
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)


async def test_a_pod_deleted_by_someone_else_is_said(
    jp_fetch: Any, jp_serverapp: Any, cluster: Cluster
) -> None:
    """The pod vanishes (a drain, an admin's kubectl delete, the pod garbage collector
    after its node was lost) while this server never asked the broker to delete it."""
    from kubernetes import client as k8s

    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
    try:
        [pod] = cluster.pods()
        core = k8s.CoreV1Api(cluster.api.api_client())
        name = pod["metadata"]["name"]
        # The scripted API answers a Status, as a real one does for a finished deletion.
        await asyncio.to_thread(core.delete_namespaced_pod, name, NS, _preload_content=False)
        after = await restarted(jp_fetch, jp_serverapp, cluster, kernel_id, pod["metadata"]["uid"])
        record = after["last_restart"]
        assert record is not None and record["reason"] == "pod-deleted", after
        assert "deleted the kernel's pod (not this server" in record["message"], record
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)
