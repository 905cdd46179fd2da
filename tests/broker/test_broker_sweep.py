"""The broker's sweep of kept kernels, Docker mode (issue 22 item 2): a kernel container
started through the broker whose server stopped keeping it (``keep_kernels_on_stop``) and
never came back is removed once it was kept longer than ``adopt_timeout``; one adopted by
the next server, and one never kept, stay.

The broker runs in the test's loop with a stand-in hub (as tests/broker/test_broker_e2e.py)
under a service name of this module's own, so that its containers are never confused with
another test's. The sweep is run at a chosen "now" (``KeptSweep.run(now=…)``): no waiting.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from traitlets.config import Config

from jupyter_tfenv.broker.sweep import KeptSweep, start_sweeps
from jupyter_tfenv.kernels import markers
from jupyter_tfenv.lifecycle.keep import detach_kernels
from tests.broker.test_broker_e2e import Broker
from tests.conftest import run_code, start_kernel

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the broker runs as root"),
]

TOKEN = "sweep-user-token"
SERVICE = "tfenv-broker-sweep-test"
log = logging.getLogger("tests.broker_sweep")


@pytest.fixture
def broker(catalog_path: Path, jp_root_dir: Path, tmp_path: Path) -> Iterator[Broker]:
    pytest.importorskip("jupyterhub")
    running = Broker(catalog_path, jp_root_dir, tmp_path, service=SERVICE, token=TOKEN)
    running.start()
    yield running
    assert not running.close(), "the test left broker kernel containers behind"


@pytest.fixture
def jp_server_config(jp_server_config: Config, broker: Broker) -> Config:
    jp_server_config.DockerKernelProvisioner.broker_url = broker.url
    jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    return jp_server_config


async def test_the_sweep_removes_a_kept_kernel_whose_user_never_came_back(
    jp_fetch, jp_serverapp, broker, monkeypatch
):
    manager = jp_serverapp.kernel_manager
    # Two of the user's hub servers: 'lab' never starts again, the default one does.
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "lab")
    gone = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "")
    adopted = await start_kernel(jp_fetch, "tfenv-py", "nb2.ipynb")
    await run_code(jp_serverapp, adopted, "x = 42")
    rundirs = {k: manager.get_kernel(k).provisioner.runtime_dir for k in (gone, adopted)}
    # The servers stop keeping their kernels: the runtime folders get their kept markers.
    assert set(await detach_kernels(manager, lambda env_id: True, log)) == {gone, adopted}
    for rundir in rundirs.values():
        assert markers.kept_since(rundir) is not None, f"{rundir} has no kept marker"
    # The default server starts again and adopts its kernel (the marker goes).
    (app,) = jp_serverapp.extension_manager.extension_apps["jupyter_tfenv"]
    app.keep_kernels_on_stop = "all"
    await app._adopt_then_reap()
    assert manager.list_kernel_ids() == [adopted], "the kept kernel was not adopted"
    assert markers.kept_since(rundirs[adopted]) is None, "adoption left the kept marker"
    # And starts another one, which it holds (never kept: no marker).
    running = await start_kernel(jp_fetch, "tfenv-py", "nb3.ipynb")
    try:
        sweep = KeptSweep(broker.app.kernel_backend, 3600.0, log)
        assert await sweep.run(now=time.time() + 60) == [], "a kernel kept 1 min ago was removed"
        assert len(broker.containers()) == 3
        removed = await sweep.run(now=time.time() + 7200)
        assert [k.kernel_id for k in removed] == [gone], "the sweep removed the wrong kernels"
        assert broker.containers(gone) == [], "the kept kernel's container is still there"
        assert not Path(rundirs[gone]).exists(), "its runtime folder is still there"
        left = {c.labels["org.jupyter.tfenv.kernel-id"] for c in broker.containers()}
        assert left == {adopted, running}, "the sweep removed a held kernel"
        assert (await run_code(jp_serverapp, adopted, "print(x)")).strip() == "42"
    finally:
        for kernel_id in (adopted, running):
            await manager.shutdown_kernel(kernel_id, now=True)


def test_the_sweep_runs_only_where_configured(broker):
    """kept_sweep_interval and adopt_timeout: 0 turns the kept kernels' sweep off;
    tensorboard_idle_timeout 0 the TensorBoards' idle sweep."""
    app = broker.app
    for interval, timeout, idle, expected in (
        (300.0, 3600.0, 0.0, 2),
        (0.0, 3600.0, 0.0, 1),
        (300.0, 0.0, 0.0, 1),
        (300.0, 3600.0, 1800.0, 3),
        (0.0, 0.0, 1800.0, 2),
    ):
        app.kept_sweep_interval, app.adopt_timeout = interval, timeout
        app.tensorboard_idle_timeout = idle
        sweeps = start_sweeps(app)
        try:
            assert len(sweeps) == expected, (interval, timeout, idle)
        finally:
            for sweep in sweeps:
                sweep.stop()
