"""The Docker engine restarts under a kernel without live-restore (issue 24, item 3).

Real fault injection on a dockerd of this module's own (tests/support/gpu_engine.py's
TestEngine, own data root and socket, *without* ``--live-restore``: Docker's default), a
real jupyter_server with the tfenv extension pointed at it through DOCKER_HOST. The engine
is stopped with SIGTERM (it stops every kernel container first) and started again; the
server's kernel restarter then starts the kernel again, under the same id, in a new
container. The restart is not silent: ``GET /tfenv/kernels/<id>`` has ``last_restart``
with the message, and the server log has it as a warning.

Two ways the restart is seen: a restart quicker than any poll (the test's event loop is
blocked while the engine stops and starts: nothing of the server saw it away, the engine
has no record of the container's death), and an outage the restarter polls through.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

import pytest
from traitlets.config import Config

from jupyter_tfenv.provisioning.engine_restart import (
    ENGINE_RESTART,
    death_forgotten,
    parse_docker_time,
    restart_message,
)
from tests.conftest import KERNEL_LABEL, PY_IMAGE, run_code, start_kernel
from tests.support.gpu_engine import TestEngine

pytestmark = pytest.mark.docker


@pytest.fixture
def jp_server_config(
    jp_server_config: Config, restart_engine: TestEngine, monkeypatch: pytest.MonkeyPatch
) -> Config:
    """The server's engine (server, provisioner, service) is the restart engine."""
    monkeypatch.setenv("DOCKER_HOST", restart_engine.url)
    return jp_server_config


@pytest.fixture(autouse=True)
def _logs(server_logs_propagate: None) -> None:
    """caplog sees the server's records (tests/conftest.py)."""


def kernel_containers(engine: TestEngine) -> list[Any]:
    assert engine.client is not None
    return list(engine.client.containers.list(all=True, filters={"label": KERNEL_LABEL}))


async def status(jp_fetch: Any, kernel_id: str) -> tuple[int, dict[str, Any]]:
    response = await jp_fetch("tfenv", "kernels", kernel_id, raise_error=False)
    return response.code, json.loads(response.body or b"{}")


async def restarted(
    jp_fetch: Any, jp_serverapp: Any, kernel_id: str, old: str, timeout: float = 300
) -> dict[str, Any]:
    """The kernel's status once its restart is done, in a container other than ``old``."""
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    deadline = time.monotonic() + timeout
    seen: tuple[int, dict[str, Any]] = (0, {})
    while time.monotonic() < deadline:
        seen = await status(jp_fetch, kernel_id)
        code, data = seen
        if (
            code == 200
            and data.get("container_id") not in (None, old)
            and data["live"].get("running") is True
            and km.ready.done()
        ):
            return data
        await asyncio.sleep(1)
    raise AssertionError(f"kernel {kernel_id} was not restarted in a new container: {seen}")


def check_record(record: Any) -> None:
    assert record is not None, "no last_restart"
    assert record["reason"] == ENGINE_RESTART
    message = record["message"]
    assert re.search(r"restarted at \d\d:\d\d", message), message
    for words in (
        "the kernel was restarted in a new container",
        "variables are lost",
        "checkpoints in $TFENV_CHECKPOINT_DIR are kept",
        "live-restore",
    ):
        assert words in message, (words, message)
    assert parse_docker_time(record["at"]) is not None, record


def warnings_of(caplog: pytest.LogCaptureFixture, kernel_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and kernel_id in r.getMessage()
        and "the kernel was restarted in a new container" in r.getMessage()
    ]


async def check_restarted_fresh(
    jp_fetch: Any, jp_serverapp: Any, kernel_id: str, old_id: str, caplog: Any
) -> None:
    """The kernel runs again in a new container, says why (``last_restart``), has lost
    its variables (``x``) and the server logged the reason once."""
    after = await restarted(jp_fetch, jp_serverapp, kernel_id, old_id)
    check_record(after["last_restart"])
    code = "try:\n    x\nexcept NameError:\n    print('gone')\n"
    assert await run_code(jp_serverapp, kernel_id, code) == "gone\n"
    assert len(warnings_of(caplog, kernel_id)) == 1, [r.getMessage() for r in caplog.records]


async def test_a_quick_engine_restart_is_said(
    jp_fetch: Any, jp_serverapp: Any, restart_engine: TestEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped and started while the server's loop waits: no poll saw the engine away;
    the engine's own event log, which it lost, tells it."""
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
    try:
        assert await run_code(jp_serverapp, kernel_id, "x = 42; print(x)") == "42\n"
        [old] = kernel_containers(restart_engine)
        code, before = await status(jp_fetch, kernel_id)
        assert code == 200 and before["last_restart"] is None, before

        restart_engine.stop_daemon()  # SIGTERM: it stops the kernel's container
        restart_engine.start()
        assert restart_engine.client is not None
        assert restart_engine.client.containers.get(old.id).status == "exited"

        await check_restarted_fresh(jp_fetch, jp_serverapp, kernel_id, old.id, caplog)
        assert jp_serverapp.kernel_manager.list_kernel_ids() == [kernel_id]
    finally:
        if restart_engine.client is None:
            restart_engine.start()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)
    assert kernel_containers(restart_engine) == []


async def test_an_outage_the_restarter_polls_through_is_said(
    jp_fetch: Any, jp_serverapp: Any, restart_engine: TestEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine stays away until the restarter found the kernel gone (and failed to
    start it while the engine was away); once it is back the restart works and says why."""
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
    try:
        assert await run_code(jp_serverapp, kernel_id, "x = 42; print(x)") == "42\n"
        [old] = kernel_containers(restart_engine)
        caplog.clear()
        await asyncio.to_thread(restart_engine.stop_daemon)
        deadline = time.monotonic() + 120
        while not [r for r in caplog.records if "no longer listens" in r.getMessage()]:
            assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
            await asyncio.sleep(0.5)
        await asyncio.to_thread(restart_engine.start)

        await check_restarted_fresh(jp_fetch, jp_serverapp, kernel_id, old.id, caplog)
    finally:
        if restart_engine.client is None:
            restart_engine.start()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)
        # The dead container the restart could not remove while the engine was away.
        for container in kernel_containers(restart_engine):
            container.remove(force=True)


def test_a_kernel_that_exits_by_itself_is_not_an_engine_restart(
    restart_engine: TestEngine,
) -> None:
    """The engine recorded the death: not forgotten (the check the quick case relies on)."""
    client = restart_engine.client
    assert client is not None
    container = client.containers.run(
        PY_IMAGE, ["python3", "-c", "pass"], detach=True, network_mode="none"
    )
    try:
        container.wait(timeout=120)
        assert death_forgotten(client, container.id) is None
    finally:
        container.remove(force=True)


def test_the_message_names_the_time_in_the_servers_zone() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 12, 7, 3, 38, 11, tzinfo=UTC)
    message = restart_message(at)
    assert f"restarted at {at.astimezone():%H:%M}" in message
    assert parse_docker_time("2026-12-07T03:38:11.01161857Z") == datetime(
        2026, 12, 7, 3, 38, 11, 11618, tzinfo=UTC
    )
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
