"""The warm pool on Kubernetes (issue 22 item 4), tier 3 (scripted API, Docker node).

A single-user server in broker mode with an environment whose catalog entry sets
``pool_size`` starts its pool at start-up: pool kernels are pods started through the real
broker in Kubernetes mode, as the user, counted in ``GET /api/me``. A notebook's kernel
start takes one: the same adoption as a kept pod's (the provisioner's attach: the pod's
IP, the key the server sent), under the notebook's kernel id, in the same pod; the pool
refills. A start refused by the quota while the pool holds a pod makes the pool give it
up; a pool fill beyond the quota is refused and fails no start. Another user's pods are
never handed out, and a server stop removes the pool pods no notebook took. With the
home claim: tests/broker/test_k8s_pool_home.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.kernels import pools
from tests.broker.test_k8s_adopt import tfenv_app, with_eve
from tests.broker.test_k8s_broker import NS, TOKEN, USER, cluster, jp_server_config
from tests.conftest import PY_IMAGE, run_code, start_kernel

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

__all__ = ["cluster", "jp_server_config"]  # fixtures

POOL_SIZE = 2
ENVIRONMENTS = [
    {"id": "pooled", "image": PY_IMAGE, "display_name": "Pooled", "pool_size": POOL_SIZE},
    {"id": "plain", "image": PY_IMAGE, "display_name": "Not pooled"},
]


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    """The server's and the broker's catalog: one pooled environment, one not."""
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": ENVIRONMENTS}))
    return path


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def pool_log(jp_serverapp: Any) -> Iterator[LogLines]:
    handler = LogLines()
    log = tfenv_app(jp_serverapp).log
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)


async def wait_for(what: str, check: Any, timeout: float = 180.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (see the server's log)")


def pool_of(jp_serverapp: Any) -> Any:
    pool = tfenv_app(jp_serverapp)._pool
    assert pool is not None and pools.current_pool() is pool, (
        "the server started no warm pool: pool_size is refused or ignored in Kubernetes mode"
    )
    return pool


async def full_pool(jp_serverapp: Any, env_id: str, size: int) -> list[Any]:
    """The pool's ready kernels of ``env_id`` once it holds ``size``. The server starts its
    pool in its start-up task (TFEnvApp._adopt_then_reap), which the test server's fixture
    does not run: it is run here, the same code."""
    app = tfenv_app(jp_serverapp)
    if app._pool is None:
        await app._adopt_then_reap()
    pool = pool_of(jp_serverapp)
    return list(
        await wait_for(
            f"{size} pool pods of '{env_id}' ready",
            lambda: len(pool.ready.get(env_id, [])) >= size and pool.ready[env_id],
        )
    )


def pod_names(cluster: Any) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods()}


def owner_of(cluster: Any, name: str) -> str:
    (pod,) = [p for p in cluster.pods() if p["metadata"]["name"] == name]
    return str(pod["metadata"]["annotations"][m.LABEL_OWNER])


async def stop_server_pool(jp_serverapp: Any) -> None:
    """What a server stop does (TFEnvApp.stop_extension): the pool shuts down."""
    await tfenv_app(jp_serverapp).stop_extension()


async def test_a_start_takes_a_pool_pod_and_the_pool_refills(
    jp_fetch, jp_serverapp, jp_root_dir, cluster
):
    from jupyter_tfenv.backends.broker import BrokerClient, BrokerNotFoundError

    me = BrokerClient(cluster.url, TOKEN)
    ready = await full_pool(jp_serverapp, "pooled", POOL_SIZE)
    assert pod_names(cluster) == {k.container_id for k in ready}, "pool kernels are not pods"
    assert all(owner_of(cluster, k.container_id) == USER for k in ready)
    usage = (await me.me())["usage"]
    assert usage["kernels"] == POOL_SIZE, f"pool pods are not counted as the user's: {usage}"

    # Another user sees none of them, and cannot take one over.
    eve = with_eve(cluster)
    for attempt in (eve.kernel, eve.adopt_kernel):
        with pytest.raises(BrokerNotFoundError):
            await attempt(ready[0].kernel_id)
    assert (await eve.me())["usage"]["kernels"] == 0

    (jp_root_dir / "sub").mkdir()
    first = ready[0]
    kernel_id = await start_kernel(jp_fetch, "tfenv-pooled", "sub/nb.ipynb")
    manager = jp_serverapp.kernel_manager
    try:
        km = manager.get_kernel(kernel_id)
        prov = km.provisioner
        assert kernel_id != first.kernel_id, "the notebook's kernel runs under the pool's id"
        assert prov.container_id == first.container_id, (
            f"the start did not take pool pod {first.container_id}: it runs in {prov.container_id}"
        )
        assert prov.container_kernel_id == first.kernel_id  # the broker's name for it
        assert km.ip == cluster.node.ip_of[first.container_id] and km.transport == "tcp"
        assert pool_of(jp_serverapp).taken == {first.container_id}
        # No home claim: the pod runs in its /tmp, as a new kernel pod would.
        cwd = await run_code(jp_serverapp, kernel_id, "import os\nprint(os.getcwd())")
        assert cwd.strip() == "/tmp", cwd
        assert (await run_code(jp_serverapp, kernel_id, "x = 42\nprint(x)")).strip() == "42"

        # The pool refills: a new pod, the taken one still runs for the notebook.
        refilled = await full_pool(jp_serverapp, "pooled", POOL_SIZE)
        assert first not in refilled
        assert first.container_id in pod_names(cluster)
        assert len(pod_names(cluster)) == POOL_SIZE + 1
        assert (await me.me())["usage"]["kernels"] == POOL_SIZE + 1
        # The kernel answers interrupts and a shutdown by the pool pod's id at the broker.
        await manager.interrupt_kernel(kernel_id)
        assert (await run_code(jp_serverapp, kernel_id, "print(x)")).strip() == "42"
        await manager.shutdown_kernel(kernel_id, now=True)
        assert first.container_id not in pod_names(cluster), "the taken pod outlived its kernel"
        assert len(pod_names(cluster)) == POOL_SIZE
    finally:
        if kernel_id in manager.list_kernel_ids():
            await manager.shutdown_kernel(kernel_id, now=True)
        # A server stop removes the pool pods no notebook took.
        await stop_server_pool(jp_serverapp)
    assert cluster.pods() == [], "the server stopped and left its pool pods running"


async def test_the_quota_refuses_pool_fills_not_user_starts(
    jp_fetch, jp_serverapp, cluster, pool_log
):
    from jupyter_tfenv.backends.broker import BrokerClient

    cluster.app.max_kernels_per_user = POOL_SIZE
    me = BrokerClient(cluster.url, TOKEN)
    ready = await full_pool(jp_serverapp, "pooled", POOL_SIZE)
    manager = jp_serverapp.kernel_manager
    started: list[str] = []
    try:
        # Takes a pool pod; the refill would be a third kernel: refused by the quota.
        started.append(await start_kernel(jp_fetch, "tfenv-pooled", "a.ipynb"))
        assert manager.get_kernel(started[0]).provisioner.container_id == ready[0].container_id
        refusal = await wait_for(
            "the pool's refill refused by the quota",
            lambda: [line for line in pool_log.lines if "did not start" in line],
        )
        assert "max_kernels_per_user" in refusal[0], refusal
        assert len(cluster.pods()) == POOL_SIZE
        assert (await me.me())["usage"]["kernels"] == POOL_SIZE

        # A start of another environment: the quota is full (the notebook's kernel and a
        # pool pod); the pool gives its pod up and the start goes through.
        started.append(await start_kernel(jp_fetch, "tfenv-plain", "b.ipynb"))
        plain = manager.get_kernel(started[1]).provisioner
        assert plain.container_id not in {k.container_id for k in ready}
        assert pod_names(cluster) == {ready[0].container_id, plain.container_id}, (
            "the pool did not give its pod up for the refused start"
        )
        assert any("gives its place" in line for line in pool_log.lines)
        assert (await run_code(jp_serverapp, started[1], "print(6 * 7)")).strip() == "42"
        # The user's own two kernels fill the quota: now a start is refused, clearly.
        body = json.dumps({"name": "tfenv-plain", "path": "c.ipynb"})
        from tornado.httpclient import HTTPClientError

        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("api", "kernels", method="POST", body=body)
        assert info.value.code == 429, info.value.response.body
        assert "max_kernels_per_user" in json.loads(info.value.response.body)["message"]
    finally:
        for kernel_id in started:
            await manager.shutdown_kernel(kernel_id, now=True)
        await stop_server_pool(jp_serverapp)
    assert cluster.pods() == []


async def test_another_users_pods_are_never_taken(jp_fetch, jp_serverapp, jp_root_dir, cluster):
    """Eve's kernel pod of the same environment (as her own pool would start it) stays
    hers: ada's start takes ada's pool pod, and eve's pod is left as it was."""
    from jupyter_tfenv.backends.broker import BrokerClient, BrokerNotFoundError

    eve = with_eve(cluster)
    eve_kid = str(uuid.uuid4())
    await eve.prepare_runtime(eve_kid, restart=False)
    body = {
        "kernel_id": eve_kid,
        "environment": "pooled",
        "cwd": str(jp_root_dir),
        "env": {},
        "server": "",
        "key": uuid.uuid4().hex,
    }
    eve_pod = (await eve.start_kernel(body, timeout=180))["name"]
    manager = jp_serverapp.kernel_manager
    kernel_id = ""
    try:
        ready = await full_pool(jp_serverapp, "pooled", POOL_SIZE)
        kernel_id = await start_kernel(jp_fetch, "tfenv-pooled", "nb.ipynb")
        taken = manager.get_kernel(kernel_id).provisioner.container_id
        assert taken == ready[0].container_id and owner_of(cluster, taken) == USER
        assert owner_of(cluster, eve_pod) == "eve"
        assert eve_pod not in {k.container_id for k in pool_of(jp_serverapp).ready["pooled"]}
        # Asked for eve's pod by its id, the broker answers ada's server as for none.
        with pytest.raises(BrokerNotFoundError):
            await BrokerClient(cluster.url, TOKEN).adopt_kernel(eve_kid)
        state = await eve.kernel(eve_kid)
        assert state["running"] and state["name"] == eve_pod
    finally:
        if kernel_id:
            await manager.shutdown_kernel(kernel_id, now=True)
        await stop_server_pool(jp_serverapp)
        await eve.delete_kernel(eve_kid)
    assert cluster.pods() == []


async def test_a_kept_pool_pod_is_adopted_under_the_notebooks_kernel_id(
    jp_fetch, jp_serverapp, cluster, monkeypatch
):
    """keep_kernels_on_stop and a kernel taken from the pool: the broker knows the pod by
    the pool kernel's id, the notebook by its own; the stopping server tells the broker
    (held_as), and the next server adopts the pod under the notebook's id."""
    from jupyter_tfenv.backends.kubernetes.keep import HELD_AS, KEPT_AT
    from jupyter_tfenv.lifecycle.keep import detach_kernels
    from tests.broker.test_k8s_adopt import adopt_as_next_server

    ready = await full_pool(jp_serverapp, "pooled", POOL_SIZE)
    manager = jp_serverapp.kernel_manager
    kernel_id = await start_kernel(jp_fetch, "tfenv-pooled", "nb.ipynb")
    pod = ready[0].container_id
    try:
        assert manager.get_kernel(kernel_id).provisioner.container_id == pod
        assert (await run_code(jp_serverapp, kernel_id, "x = 42\nprint(x)")).strip() == "42"
        rundir = Path(manager.get_kernel(kernel_id).provisioner.runtime_dir)
        # The server stops keeping its kernels; its pool goes (server stop).
        assert await detach_kernels(manager, lambda env_id: True, logging.getLogger()) == [
            kernel_id
        ]
        await stop_server_pool(jp_serverapp)
        annotations = next(
            p["metadata"]["annotations"] for p in cluster.pods() if p["metadata"]["name"] == pod
        )
        assert KEPT_AT in annotations and annotations.get(HELD_AS) == kernel_id, annotations
        assert pod_names(cluster) == {pod}, "the pool's untaken pods outlived the server stop"
        shutil.rmtree(rundir)  # the next server has none of this one's folders

        await adopt_as_next_server(jp_serverapp, monkeypatch)
        assert kernel_id in manager.list_kernel_ids(), (
            "the kept pool pod was not adopted under the notebook's kernel id "
            f"(kernels: {manager.list_kernel_ids()})"
        )
        prov = manager.get_kernel(kernel_id).provisioner
        assert prov.container_id == pod and prov.container_kernel_id == ready[0].kernel_id
        assert (await run_code(jp_serverapp, kernel_id, "print(x)")).strip() == "42"
    finally:
        if kernel_id in manager.list_kernel_ids():
            await manager.shutdown_kernel(kernel_id, now=True)
        else:
            from jupyter_tfenv.backends.broker import BrokerClient

            with contextlib.suppress(Exception):
                await BrokerClient(cluster.url, TOKEN).delete_kernel(ready[0].kernel_id)
        await stop_server_pool(jp_serverapp)
    assert cluster.pods() == []


async def test_keep_refuses_a_held_as_that_is_no_kernel_id(cluster):
    """POST /api/kernels/<id>/keep takes {} or {"held_as": <a kernel id>}: anything else is
    a 400 that says what to send (before the pod is even looked up)."""
    from jupyter_tfenv.backends.broker import BrokerClient, BrokerError

    client = BrokerClient(cluster.url, TOKEN)
    for body in ({"held_as": "../etc"}, {"held_as": 7}, {"held_as": "a" * 65}, {"other": 1}):
        with pytest.raises(BrokerError) as info:
            await client.request("POST", f"api/kernels/{uuid.uuid4()}/keep", body)
        assert info.value.http_status == 400, (body, info.value)
        assert "held_as" in info.value.message, info.value.message


async def test_a_pod_being_deleted_counts_against_no_quota(cluster, tmp_path):
    """A pool pod that gave a refused start its place is deleted with a grace period, in
    which the API server still shows it Running (with ``metadata.deletionTimestamp``):
    the quota no longer counts it, so the start asked again is not refused for it."""
    from jupyter_tfenv.backends.broker import BrokerClient

    client = BrokerClient(cluster.url, TOKEN)
    kernel_id = str(uuid.uuid4())
    await client.prepare_runtime(kernel_id, restart=False)
    body = {
        "kernel_id": kernel_id,
        "environment": "plain",
        "cwd": str(tmp_path),
        "env": {},
        "server": "",
        "key": uuid.uuid4().hex,
    }
    name = (await client.start_kernel(body, timeout=180))["name"]
    try:
        assert (await client.me())["usage"]["kernels"] == 1
        pod = cluster.api.objects[("pods", NS, name)]
        pod["metadata"]["deletionTimestamp"] = "2026-12-07T13:00:00Z"
        assert (await client.kernel(kernel_id))["running"], "the pod in its grace period runs"
        usage = (await client.me())["usage"]
        assert usage["kernels"] == 0, f"a pod being deleted still counts: {usage}"
    finally:
        await client.delete_kernel(kernel_id)
