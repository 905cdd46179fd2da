"""Kernels that outlive the user's server on JupyterHub (``keep_kernels_on_stop``).

Through the real hub, proxy and broker: alice's kernel sets ``x = 42`` and starts a loop
that prints; her server is killed (SIGKILL) or stopped by the hub ("Stop My Server":
SIGINT, no tty) and spawned again; the kernel is listed under its id, the loop's output
goes on and ``x`` is 42. Bob's server, restarted while alice's kernel waits for hers,
never sees or adopts it. At the end nothing is left: no container, no runtime folder.

The servers get ``--TFEnvApp.keep_kernels_on_stop=all`` for this module only
(HubHarness.set_server_args); the documented example config keeps the default, off.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import MAX_KERNELS
from .harness import ALICE, BOB, KERNEL_LABEL, HubHarness, tfenv_containers
from .test_hub_orphans import running_containers_of, server_pids

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from kernel_ws import watch_output

pytestmark = [pytest.mark.docker, pytest.mark.slow]

KEEP = ["--TFEnvApp.keep_kernels_on_stop=all"]
RUNTIME_LABEL = "org.jupyter.tfenv.runtime-dir"
#: A cell that runs for a while and says how far it got.
LOOP = (
    "import time\nfor i in range(600):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)\n"
)


def ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"tick (\d+)", text)]


def ws(hub: HubHarness, owner: str, kernel_id: str) -> str:
    return f"ws://127.0.0.1:{hub.proxy_port}/user/{owner}/api/kernels/{kernel_id}/channels"


def restart_server(hub: HubHarness, name: str) -> None:
    hub.stop_server(name)
    hub.start_server(name)


def adoption_runs(hub: HubHarness, name: str) -> int:
    """How often a server of ``name`` has looked for kernels to adopt (hub log)."""
    return hub.log_tail(100000).count(f"tfenv: looked for kernels of {name} to adopt")


def wait_for_adoption_run(hub: HubHarness, name: str, before: int) -> None:
    hub.wait_for(lambda: adoption_runs(hub, name) > before, 60, f"{name}'s server to adopt")


@pytest.fixture(scope="module")
def keeping(hub: HubHarness) -> Iterator[None]:
    """alice's and bob's servers keep their kernels when they stop; afterwards they run
    with the example config's arguments again."""
    for name in (ALICE, BOB):
        hub.set_server_args(name, KEEP)
        restart_server(hub, name)
    try:
        yield
    finally:
        for name in (ALICE, BOB):
            hub.set_server_args(name, [])
            # Kernels a failed test left: not kept by this stop (the kernels fixture
            # shut its own down already).
            with contextlib.suppress(Exception):
                for kernel in hub.list_kernels(name):
                    hub.shutdown_kernel(name, kernel["id"])
            restart_server(hub, name)


def prepare(hub: HubHarness, start: Callable[..., str]) -> tuple[str, int]:
    """alice's kernel with ``x = 42`` and the loop running; (kernel id, last tick seen)."""
    kernel_id = start(ALICE, "py")
    hub.run_code(ALICE, kernel_id, "x = 42")
    seen = watch_output(
        ws(hub, ALICE, kernel_id), hub.token(ALICE), lambda t: len(ticks(t)) >= 2, code=LOOP
    )
    return kernel_id, max(ticks(seen))


def runtime_dir_of(hub: HubHarness, kernel_id: str) -> Path:
    (container,) = [c for c in tfenv_containers(hub.users) if c.labels[KERNEL_LABEL] == kernel_id]
    return Path(container.labels[RUNTIME_LABEL])


def check_adopted(hub: HubHarness, kernel_id: str, last_tick: int) -> None:
    """alice's new server has her kernel, with its state and its running loop."""
    hub.wait_for(
        lambda: kernel_id in [k["id"] for k in hub.list_kernels(ALICE)],
        60,
        f"alice's server to adopt kernel {kernel_id}",
    )
    later = watch_output(
        ws(hub, ALICE, kernel_id), hub.token(ALICE), lambda t: bool(ticks(t)), timeout=60
    )
    assert min(ticks(later)) > last_tick, (last_tick, later)
    assert f"adopted kernel {kernel_id}" in hub.log_tail(100000)
    answer = hub.user_request("POST", ALICE, f"api/kernels/{kernel_id}/interrupt", hub.token(ALICE))
    assert answer.status_code == 204, answer.text
    # Requests that reach the kernel while the interrupted cell unwinds are aborted.
    for _ in range(20):
        result = hub.execute(ALICE, kernel_id, "print(x)")
        if result.status != "aborted":
            break
        time.sleep(0.5)
    assert result.ok, result
    assert result.stdout.strip() == "42"
    status = hub.user_request("GET", ALICE, f"tfenv/kernels/{kernel_id}", hub.token(ALICE))
    assert status.status_code == 200, status.text
    assert status.json()["live"]["running"] is True
    assert status.json()["environment"]["id"] == "py"


def test_a_killed_server_loses_no_kernel_and_bob_never_adopts_it(
    hub: HubHarness, keeping: None, kernels: Callable[..., str]
) -> None:
    kernel_id, last_tick = prepare(hub, kernels)
    pids = server_pids(ALICE)
    assert pids, f"alice's server process was not found; hub log:\n{hub.log_tail(40)}"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    hub.stop_server(ALICE)  # the hub notices the dead server
    assert running_containers_of(hub, kernel_id)

    # Bob's server starts while alice's kernel waits for hers: the broker lists only
    # bob's own kernels, so his server neither adopts nor removes hers.
    before = adoption_runs(hub, BOB)
    restart_server(hub, BOB)
    wait_for_adoption_run(hub, BOB, before)
    assert kernel_id not in [k["id"] for k in hub.list_kernels(BOB)]
    listed = hub.broker("GET", "/api/kernels", hub.token(BOB)).json()["kernels"]
    assert kernel_id not in [k["kernel_id"] for k in listed]
    assert hub.broker("GET", f"/api/kernels/{kernel_id}", hub.token(BOB)).status_code == 404
    assert running_containers_of(hub, kernel_id), "bob's server removed alice's kernel"

    hub.start_server(ALICE)
    check_adopted(hub, kernel_id, last_tick)
    # The adopted kernel counts against alice's quota as any other.
    for _ in range(MAX_KERNELS - 1):
        kernels(ALICE, "py")
    refused = hub.start_kernel(ALICE, "py")
    assert refused.status_code == 429, f"{refused.status_code} {refused.text}"


def test_a_server_stopped_by_the_hub_keeps_its_kernel(
    hub: HubHarness, keeping: None, kernels: Callable[..., str]
) -> None:
    kernel_id, last_tick = prepare(hub, kernels)
    rundir = runtime_dir_of(hub, kernel_id)
    hub.stop_server(ALICE)  # "Stop My Server": SIGINT, no tty
    assert running_containers_of(hub, kernel_id), f"not kept:\n{hub.log_tail(40)}"
    kept = json.loads((rundir / "tfenv-kept.json").read_text())
    assert time.time() - kept["kept_at"] < 600
    assert (rundir / "kernel.json").is_file()
    # What alice's next server attaches to: the folder and the working directory.
    info = hub.broker("GET", f"/api/kernels/{kernel_id}", hub.token(ALICE)).json()
    assert info["runtime_dir"] == str(rundir)
    assert info["workdir"] == str(hub.users[ALICE].home)

    hub.start_server(ALICE)
    check_adopted(hub, kernel_id, last_tick)
    assert not (rundir / "tfenv-kept.json").exists()

    # Shut down through the server as usual: nothing is left.
    assert hub.shutdown_kernel(ALICE, kernel_id).status_code == 204
    assert [c.name for c in tfenv_containers(hub.users)] == []
    assert not rundir.exists()
    assert hub.paths is not None
    for name in (ALICE, BOB):
        user_root = hub.paths.runtime_root / str(hub.users[name].uid)
        assert not user_root.exists() or list(user_root.iterdir()) == []
