"""Kept kernel pods adopted by the owner's next server (issue 22 item 2), tier 3 (scripted API).

A single-user server in broker mode starts a kernel pod through the real broker with
``backend = "kubernetes"`` (tests/support/k8s_api.py with the Docker node: the pod's
kernel container runs for real), sets ``x = 42`` and runs a loop. The server then stops
as a server with ``keep_kernels_on_stop`` does (its kernels leave the kernel manager, the
pod is marked kept at the broker) or is killed (nothing marked), and the next server's
start-up adoption (``TFEnvApp._adopt_then_reap``, the same code a new process runs) takes
the pod over: its connection folder is gone, so the key can only come from the broker,
which reads it from the kernel's Secret for its owner. The loop's output goes on and
``x == 42``. Another user cannot adopt, keep or even see the pod (404).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.keep import KEPT_AT
from jupyter_tfenv.lifecycle.keep import detach_kernels, release
from tests.broker.test_broker_e2e import StandInHubAuth
from tests.broker.test_k8s_broker import (
    NS,
    SCOPE,
    TOKEN,
    USER,
    catalog_path,
    cluster,
    jp_server_config,
)
from tests.conftest import run_code, start_kernel

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.skipif(
        __import__("os").geteuid() != 0, reason="the scripted node chowns the pod's folders"
    ),
]

__all__ = ["catalog_path", "cluster", "jp_server_config"]  # fixtures

EVE_TOKEN = "k8s-other-user-token"
LOOP = (
    "import time\nfor i in range(600):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.3)\n"
)
log = logging.getLogger("tests.k8s_adopt")


def ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"tick (\d+)", text)]


async def read_ticks(km: Any, after: int, *, code: str = "", timeout: float = 60) -> list[int]:
    """The loop's ticks on the kernel's iopub until one after ``after`` arrives (``code``:
    run it first, from the same client, so that no output is missed)."""
    client = km.client()
    client.start_channels(stdin=False, hb=False, control=False)
    seen: list[int] = []
    try:
        if code:
            await client.wait_for_ready(timeout=timeout)
            client.execute(code)
        deadline = asyncio.get_running_loop().time() + timeout
        while not any(t > after for t in seen):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(
                    f"the kernel's loop printed no tick after {after} within {timeout:.0f} s "
                    f"(seen: {seen}): its output does not reach this server"
                )
            try:
                msg = await client.get_iopub_msg(timeout=left)
            except Exception:
                continue
            if msg["msg_type"] == "stream":
                seen += ticks(msg["content"]["text"])
        return seen
    finally:
        client.stop_channels()


def tfenv_app(jp_serverapp: Any) -> Any:
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_tfenv"]
    return app


def with_eve(cluster: Any) -> Any:
    """A second hub user (eve) for the broker; her client."""
    from jupyter_tfenv.backends.broker import BrokerClient

    cluster.app.hub_auth = StandInHubAuth(
        {
            TOKEN: {"kind": "user", "name": USER, "scopes": [SCOPE], "groups": []},
            EVE_TOKEN: {"kind": "user", "name": "eve", "scopes": [SCOPE], "groups": []},
        }
    )
    return BrokerClient(cluster.url, EVE_TOKEN)


async def start_with_loop(jp_fetch: Any, jp_serverapp: Any) -> tuple[str, int]:
    """A kernel pod with ``x = 42`` and the loop running; (kernel id, last tick seen)."""
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
    manager = jp_serverapp.kernel_manager
    try:
        await run_code(jp_serverapp, kernel_id, "x = 42")
        seen = await read_ticks(manager.get_kernel(kernel_id), after=1, code=LOOP)
    except BaseException:
        await manager.shutdown_kernel(kernel_id, now=True)
        raise
    return kernel_id, max(seen)


async def adopt_as_next_server(jp_serverapp: Any, monkeypatch: Any) -> None:
    """The next server's start-up: adopt kept kernels of this hub server name, then reap."""
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "")
    app = tfenv_app(jp_serverapp)
    app.keep_kernels_on_stop = "all"
    app.reap_orphans_on_start = True
    await app._adopt_then_reap()


async def check_adopted(jp_serverapp: Any, cluster: Any, kernel_id: str, last: int) -> None:
    manager = jp_serverapp.kernel_manager
    assert kernel_id in manager.list_kernel_ids(), "the kept kernel pod was not adopted"
    [pod] = cluster.pods()
    assert KEPT_AT not in (pod["metadata"].get("annotations") or {}), (
        "the adopted pod is still marked kept: the broker's sweep would remove it"
    )
    km = manager.get_kernel(kernel_id)
    assert km.ip == cluster.node.ip_of[pod["metadata"]["name"]] and km.transport == "tcp"
    # The loop started before the server went on: its output reaches the new holder.
    later = await read_ticks(km, after=last)
    assert max(later) > last
    # Stop it (interrupt_request on the control channel), then the state is there.
    await manager.interrupt_kernel(kernel_id)
    assert (await run_code(jp_serverapp, kernel_id, "print(x)")).strip() == "42"
    # The checkpoint panel's view of it: the user's claim, as at a first start.
    prov = km.provisioner
    assert prov.checkpoint_info is not None, "the adopted kernel shows no checkpoints"
    assert prov.checkpoint_info["claim"] == m.claim_name(USER, "tf220")


async def shut_down(manager: Any, cluster: Any, kernel_id: str) -> None:
    """The kernel gone, whether this server holds it or not (then through the broker)."""
    if kernel_id in manager.list_kernel_ids():
        await manager.shutdown_kernel(kernel_id, now=True)
    else:
        from jupyter_tfenv.backends.broker import BrokerClient

        await BrokerClient(cluster.url, TOKEN).delete_kernel(kernel_id)


async def test_a_kept_pod_is_adopted_by_the_next_server(
    jp_fetch, jp_serverapp, cluster, monkeypatch
):
    from jupyter_tfenv.backends.broker import BrokerNotFoundError

    kernel_id, last = await start_with_loop(jp_fetch, jp_serverapp)
    manager = jp_serverapp.kernel_manager
    rundir = Path(manager.get_kernel(kernel_id).provisioner.runtime_dir)
    try:
        # The server stops keeping its kernels: they leave it, the pod is marked kept.
        kept = await detach_kernels(manager, lambda env_id: True, log)
        assert kept == [kernel_id]
        [pod] = cluster.pods()
        assert KEPT_AT in pod["metadata"]["annotations"], "the kept pod carries no kept time"
        # Nothing of the old server's connection folder is needed: the key comes from the
        # broker (the kernel's Secret).
        shutil.rmtree(rundir)

        # Another user can neither take it over nor mark it, nor see it.
        eve = with_eve(cluster)
        for attempt in (eve.adopt_kernel, eve.keep_kernel, eve.kernel):
            with pytest.raises(BrokerNotFoundError):
                await attempt(kernel_id)
        assert await eve.kernels() == []
        [pod] = cluster.pods()
        assert KEPT_AT in pod["metadata"]["annotations"], "another user's request changed it"

        await adopt_as_next_server(jp_serverapp, monkeypatch)
        await check_adopted(jp_serverapp, cluster, kernel_id, last)
    finally:
        await shut_down(manager, cluster, kernel_id)
    assert cluster.pods() == []
    assert cluster.api.get("secrets", NS, m.kernel_secret_name(USER, kernel_id)) is None


async def test_the_pod_of_a_killed_server_is_adopted(jp_fetch, jp_serverapp, cluster, monkeypatch):
    """SIGKILL: the server marks nothing; the next one adopts the pod all the same."""
    kernel_id, last = await start_with_loop(jp_fetch, jp_serverapp)
    manager = jp_serverapp.kernel_manager
    try:
        # What a killed server leaves: the kernel runs on, no one holds it, nothing kept.
        km = manager.get_kernel(kernel_id)
        shutil.rmtree(km.provisioner.runtime_dir)
        release(km)
        manager.remove_kernel(kernel_id)
        [pod] = cluster.pods()
        assert KEPT_AT not in pod["metadata"]["annotations"]

        await adopt_as_next_server(jp_serverapp, monkeypatch)
        await check_adopted(jp_serverapp, cluster, kernel_id, last)
    finally:
        await shut_down(manager, cluster, kernel_id)
    assert cluster.pods() == []
