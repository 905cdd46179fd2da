"""A server killed with its kernels running: they are removed when it starts again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from .harness import ALICE, KERNEL_LABEL, HubHarness, tfenv_containers

pytestmark = [pytest.mark.docker]


def running_containers_of(hub: HubHarness, kernel_id: str) -> list[str]:
    return [
        c.name
        for c in tfenv_containers(hub.users)
        if c.labels.get(KERNEL_LABEL) == kernel_id and c.status == "running"
    ]


def server_pids(user: str) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-u", user, "-f", "jupyterhub-singleuser"],
        capture_output=True,
        text=True,
        check=False,
    )
    return [int(pid) for pid in found.stdout.split()]


def test_a_killed_servers_kernels_are_removed_when_it_starts_again(
    hub: HubHarness, alice_server: str, kernels: Callable[..., str]
) -> None:
    kernel_id = kernels(ALICE, "py")
    assert running_containers_of(hub, kernel_id)
    pids = server_pids(ALICE)
    assert pids, f"alice's server process was not found; hub log:\n{hub.log_tail(40)}"
    try:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # Nobody shut the kernel down: it still runs, and counts against alice's quota.
        time.sleep(1)
        assert running_containers_of(hub, kernel_id), "SIGKILL cannot have shut it down"
        listed = hub.broker("GET", "/api/kernels", hub.token(ALICE)).json()["kernels"]
        assert kernel_id in [k["kernel_id"] for k in listed]
    finally:
        hub.stop_server(ALICE)  # the hub notices the dead server
        hub.start_server(ALICE)
    deadline = time.monotonic() + 30
    while running_containers_of(hub, kernel_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running_containers_of(hub, kernel_id) == [], (
        f"the orphaned kernel still runs; hub log:\n{hub.log_tail(60)}"
    )
    listed = hub.broker("GET", "/api/kernels", hub.token(ALICE)).json()["kernels"]
    assert kernel_id not in [k["kernel_id"] for k in listed]
    assert kernel_id not in [k["id"] for k in hub.list_kernels(ALICE)]
