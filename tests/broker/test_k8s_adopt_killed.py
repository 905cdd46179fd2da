"""A kernel pod outlives a SIGKILLed server process (issue 22 item 2), tier 3 (scripted API
with the Docker node, the real broker in Kubernetes mode, as tests/broker/test_k8s_adopt.py).

Here the servers are real processes (``python -m jupyter_server``, as
tests/lifecycle/test_adopt.py runs them in Docker mode): the first starts a kernel pod
through the broker, sets ``x = 42`` and starts a loop that prints; it is killed with
SIGKILL, so nothing is marked and its connection folder is gone with its runtime folder.
The user's next server adopts the pod at start-up with the key the broker reads from the
kernel's Secret: the loop's output reaches it, ``x == 42``, the panel says "adopted".

The broker runs in the test's event loop, so every blocking step (the server processes,
their HTTP and websocket clients) runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest

from jupyter_tfenv.backends.kubernetes.keep import KEPT_AT
from tests.broker.test_k8s_broker import TOKEN as BROKER_TOKEN
from tests.broker.test_k8s_broker import catalog_path, cluster
from tests.conftest import KERNEL_GID, KERNEL_UID
from tests.lifecycle.test_adopt import TOKEN, check_adopted, prepare_kernel
from tests.support.server_process import ServerProcess, start_tfenv_server

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

__all__ = ["catalog_path", "cluster"]  # fixtures


def start_server(
    cluster: Any, catalog: Path, base: Path, runtime_root: str, n: int
) -> ServerProcess:
    """A single-user server in broker mode (the cluster's broker) that keeps its kernels."""
    notebooks = base / "notebooks"
    notebooks.mkdir(exist_ok=True)
    return start_tfenv_server(
        base / f"server{n}",
        token=TOKEN,
        catalog=catalog,
        root_dir=notebooks,
        kernel_uid=KERNEL_UID,
        kernel_gid=KERNEL_GID,
        owner="tfenv-k8s-adopt-killed",
        runtime_root=runtime_root,
        name=f"server{n}",
        reap_orphans=n > 0,
        extra_args=[
            f"--DockerKernelProvisioner.broker_url={cluster.url}",
            f"--DockerKernelProvisioner.broker_token={BROKER_TOKEN}",
            "--TFEnvApp.keep_kernels_on_stop=all",
        ],
    )


async def test_a_pod_outlives_a_sigkilled_server_process(
    cluster: Any, catalog_path: Path, tmp_path: Path
) -> None:
    runtime_root = tempfile.mkdtemp(prefix="tfka-", dir="/tmp")  # short socket paths
    os.chmod(runtime_root, 0o711)
    servers: list[ServerProcess] = []
    kernel_id = ""
    try:
        first = await asyncio.to_thread(
            start_server, cluster, catalog_path, tmp_path, runtime_root, 0
        )
        servers.append(first)
        kernel_id, last_tick = await asyncio.to_thread(prepare_kernel, first, "tfenv-tf220")
        first.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.proc.wait, 30)
        [pod] = cluster.pods()
        assert KEPT_AT not in (pod["metadata"].get("annotations") or {}), (
            "a killed server marks nothing"
        )
        assert pod["status"]["phase"] == "Running"

        second = await asyncio.to_thread(
            start_server, cluster, catalog_path, tmp_path, runtime_root, 1
        )
        servers.append(second)
        await asyncio.to_thread(check_adopted, second, kernel_id, last_tick, "tf220")
        answer = await asyncio.to_thread(second.request, "DELETE", f"/api/kernels/{kernel_id}")
        assert answer.status_code == 204, answer.text
        kernel_id = ""
        assert await asyncio.to_thread(second.stop) == 0, second.log_tail()
        assert cluster.pods() == []
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.kill()
                await asyncio.to_thread(server.proc.wait, 30)
        if kernel_id:
            from jupyter_tfenv.backends.broker import BrokerClient

            await BrokerClient(cluster.url, BROKER_TOKEN).delete_kernel(kernel_id)
        shutil.rmtree(runtime_root, ignore_errors=True)
