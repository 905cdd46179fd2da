"""The broker's Docker engine restarts under a hub user's kernel without live-restore
(issue 24 item 3, broker mode).

A single-user server in broker mode (jupyter_server, broker_url set) against the real
broker (tests/broker/test_broker_e2e.py's ``Broker``, in the test's loop), whose engine is
the module's own dockerd *without* ``--live-restore`` (tests/conftest.py
``restart_engine``). The engine is stopped with SIGTERM (it stops the kernel's container)
and started again while the test's loop is blocked: nothing saw it away, and only the
broker can tell from its engine's lost event log (broker/deaths.py: ``engine_death`` in its
``GET /api/kernels/<id>`` answer). jupyter's restarter starts the kernel again through
the broker, and ``GET /tfenv/kernels/<id>`` has ``last_restart`` as in local mode. A kernel
that exits by itself is restarted without one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from tests.backends.test_engine_restart import check_restarted_fresh, restarted, status
from tests.broker.test_broker_e2e import Broker
from tests.conftest import KERNEL_UID, run_code, start_kernel
from tests.support.gpu_engine import TestEngine

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the broker runs as root"),
]

TOKEN = "restart-user-token"
SERVICE = "tfenv-broker-restart"


@pytest.fixture(autouse=True)
def _logs(server_logs_propagate: None) -> None:
    """caplog sees the server's records (tests/conftest.py)."""


@pytest.fixture
def broker(
    catalog_path: Path,
    jp_root_dir: Path,
    tmp_path: Path,
    restart_engine: TestEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Broker]:
    """The real broker; its engine (and ``Broker.containers``) is the restart engine."""
    pytest.importorskip("jupyterhub")
    monkeypatch.setenv("DOCKER_HOST", restart_engine.url)
    running = Broker(catalog_path, jp_root_dir, tmp_path, service=SERVICE, token=TOKEN)
    running.start()
    yield running
    if restart_engine.client is None:
        restart_engine.start()
    assert not running.close(), "the test left broker kernel containers behind"


@pytest.fixture
def jp_server_config(jp_server_config: Config, broker: Broker) -> Config:
    jp_server_config.DockerKernelProvisioner.broker_url = broker.url
    jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    return jp_server_config


async def start_in_work(jp_fetch: Any, jp_root_dir: Path) -> str:
    """A kernel of the small python image in a folder the kernel's uid owns."""
    (jp_root_dir / "work").mkdir(exist_ok=True)
    os.chown(jp_root_dir / "work", KERNEL_UID, KERNEL_UID)
    return await start_kernel(jp_fetch, "tfenv-py", "work/nb.ipynb")


async def test_an_engine_restart_under_a_broker_kernel_is_said(
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_root_dir: Path,
    broker: Broker,
    restart_engine: TestEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel_id = await start_in_work(jp_fetch, jp_root_dir)
    try:
        assert await run_code(jp_serverapp, kernel_id, "x = 42; print(x)") == "42\n"
        [old] = broker.containers(kernel_id)
        code, before = await status(jp_fetch, kernel_id)
        assert code == 200 and before["last_restart"] is None, before

        restart_engine.stop_daemon()  # SIGTERM: it stops the kernel's container
        restart_engine.start()
        assert restart_engine.client is not None
        assert restart_engine.client.containers.get(old.id).status == "exited"

        await check_restarted_fresh(jp_fetch, jp_serverapp, kernel_id, old.id, caplog)
    finally:
        if restart_engine.client is None:
            restart_engine.start()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)


async def test_a_broker_kernel_that_exits_by_itself_gets_no_reason(
    jp_fetch: Any, jp_serverapp: Any, jp_root_dir: Path, broker: Broker
) -> None:
    kernel_id = await start_in_work(jp_fetch, jp_root_dir)
    try:
        [old] = broker.containers(kernel_id)
        client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
        client.start_channels()
        try:
            await client.wait_for_ready(timeout=120)
            client.execute("import os; os._exit(1)")
        finally:
            client.stop_channels()
        after = await restarted(jp_fetch, jp_serverapp, kernel_id, old.id)
        assert after["last_restart"] is None, (
            f"a kernel that exited by itself was given a restart reason: {after['last_restart']}"
        )
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)


async def test_a_restart_that_finds_the_brokers_engine_away_waits_and_is_said(
    jp_fetch: Any,
    jp_serverapp: Any,
    jp_root_dir: Path,
    broker: Broker,
    restart_engine: TestEngine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stopping engine stops its containers while it still answers (their deaths are in
    its event log), then goes: the server's poll finds the kernel dead, and its restart
    finds the broker answering 503 for the engine. The restart waits for the engine and
    says why. The engine's stop is pinned right after that poll (the poll itself is the
    real one), so the order does not depend on timing."""
    from jupyter_tfenv.provisioning.brokered_deaths import BrokeredDeaths

    real_dead = BrokeredDeaths.dead
    stopped: list[bool] = []

    def dead_then_engine_gone(self: BrokeredDeaths, info: Any) -> None:
        real_dead(self, info)
        if not stopped:  # once: the shutdown at the end finds the new container dead too
            stopped.append(True)
            restart_engine.stop_daemon()

    monkeypatch.setattr(BrokeredDeaths, "dead", dead_then_engine_gone)
    kernel_id = await start_in_work(jp_fetch, jp_root_dir)
    try:
        assert await run_code(jp_serverapp, kernel_id, "x = 42; print(x)") == "42\n"
        [old] = broker.containers(kernel_id)
        caplog.clear()
        old.kill()  # as the stopping engine does, while it still answers
        deadline = asyncio.get_running_loop().time() + 120
        while not [r for r in caplog.records if "waiting up to" in r.getMessage()]:
            assert asyncio.get_running_loop().time() < deadline, [
                r.getMessage() for r in caplog.records
            ]
            await asyncio.sleep(0.5)
        assert restart_engine.client is None, "the engine was not stopped after the poll"
        await asyncio.to_thread(restart_engine.start)

        await check_restarted_fresh(jp_fetch, jp_serverapp, kernel_id, old.id, caplog)
    finally:
        if restart_engine.client is None:
            restart_engine.start()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)
