"""Quotas, culling of idle kernels, and a broker restart with kernels running."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from .conftest import CULL_INTERVAL, IDLE_TIMEOUT, MAX_KERNELS
from .harness import ALICE, KERNEL_LABEL, HubHarness, tfenv_containers
from .test_hub_isolation import message_of

pytestmark = [pytest.mark.docker]


def containers_of(hub: HubHarness, kernel_id: str) -> list[str]:
    return [c.name for c in tfenv_containers(hub.users) if c.labels.get(KERNEL_LABEL) == kernel_id]


def test_kernel_quota(hub: HubHarness, alice_server: str, kernels: Callable[..., str]) -> None:
    assert hub.list_kernels(ALICE) == [], "an earlier test left kernels running"
    first = kernels(ALICE, "py")
    for _ in range(MAX_KERNELS - 1):
        kernels(ALICE, "py")
    response = hub.start_kernel(ALICE, "py")
    message = message_of(response)
    assert response.status_code == 429, f"{response.status_code} {response.text}"
    # The message JupyterLab shows names the limit.
    assert f"limit per user is {MAX_KERNELS}" in message or str(MAX_KERNELS) in message, message
    assert "max_kernels_per_user" in message, message
    assert len(hub.list_kernels(ALICE)) == MAX_KERNELS
    # One shut down: the next start fits again.
    assert hub.shutdown_kernel(ALICE, first).status_code == 204
    kernels(ALICE, "py")


def test_idle_kernel_is_culled(
    hub: HubHarness, alice_server: str, kernels: Callable[..., str]
) -> None:
    kernel_id = kernels(ALICE, "quick-cull")
    assert containers_of(hub, kernel_id)
    deadline = time.monotonic() + IDLE_TIMEOUT + CULL_INTERVAL + 40
    while time.monotonic() < deadline:
        listed = [k["id"] for k in hub.list_kernels(ALICE)]
        if kernel_id not in listed and not containers_of(hub, kernel_id):
            break
        time.sleep(1)
    else:
        pytest.fail(
            f"the idle kernel {kernel_id} (idle_timeout {IDLE_TIMEOUT} s, cull_interval "
            f"{CULL_INTERVAL} s) still runs after {IDLE_TIMEOUT + CULL_INTERVAL + 40} s: "
            f"listed={kernel_id in listed}, containers={containers_of(hub, kernel_id)}"
        )


def test_kernels_survive_a_broker_restart(
    hub: HubHarness, alice_server: str, kernels: Callable[..., str]
) -> None:
    token = hub.token(ALICE)
    kernel_id = kernels(ALICE, "py")
    assert hub.run_code(ALICE, kernel_id, "x = 41; print(x + 1)").strip() == "42"

    old = hub.broker_pids()
    assert len(old) == 1, f"broker processes: {old}"
    os.kill(old[0], signal.SIGTERM)
    hub.progress("broker stopped; waiting for JupyterHub to start it again (poll: ~30 s)")

    def restarted() -> bool:
        pids = hub.broker_pids()
        return bool(pids) and old[0] not in pids and hub._broker_answers()

    hub.wait_for(restarted, 75, "JupyterHub to restart the broker")
    hub.progress("broker restarted")

    # The kernel kept running, and the new broker knows it as Alice's.
    assert hub.run_code(ALICE, kernel_id, "print(x)").strip() == "41"
    state = hub.broker("GET", f"/api/kernels/{kernel_id}", token)
    assert state.status_code == 200, state.text
    assert state.json().get("running") is True, state.text

    # It can be interrupted (the signal goes through the new broker) ...
    def interrupt() -> None:
        time.sleep(1.0)
        response = hub.user_request("POST", ALICE, f"api/kernels/{kernel_id}/interrupt", token)
        assert response.status_code == 204, response.text

    started = time.monotonic()
    result = hub.execute(
        ALICE, kernel_id, "import time; time.sleep(60); print('not interrupted')", on_busy=interrupt
    )
    assert not result.ok and result.error is not None, str(result)
    assert result.error.get("ename") == "KeyboardInterrupt", str(result)
    assert time.monotonic() - started < 30
    assert hub.run_code(ALICE, kernel_id, "print(x + 1)").strip() == "42"

    # ... and shut down: the container goes.
    assert hub.shutdown_kernel(ALICE, kernel_id).status_code == 204
    assert containers_of(hub, kernel_id) == []
    assert kernel_id not in [k["id"] for k in hub.list_kernels(ALICE)]


def test_stopping_a_server_removes_its_kernels(
    hub: HubHarness, alice_server: str, kernels: Callable[..., str]
) -> None:
    kernel_id = kernels(ALICE, "py")
    assert containers_of(hub, kernel_id)
    hub.stop_server(ALICE)
    try:
        deadline = time.monotonic() + 20
        while containers_of(hub, kernel_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert containers_of(hub, kernel_id) == [], "a stopped server left its kernel running"
        left = hub.broker("GET", "/api/kernels", hub.token(ALICE))
        assert left.status_code == 200 and left.json()["kernels"] == [], left.text
    finally:
        hub.start_server(ALICE)  # for any test after this one
