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
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from jupyter_tfenv.broker.sweep import KeptSweep, start_sweeps
from jupyter_tfenv.kernels import markers
from jupyter_tfenv.lifecycle.keep import detach_kernels
from tests.broker.test_broker_e2e import StandInHubAuth, kernel_user
from tests.conftest import run_code, start_kernel

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the broker runs as root"),
]

TOKEN = "sweep-user-token"
SERVICE = "tfenv-broker-sweep-test"
SCOPE = f"access:services!service={SERVICE}"
log = logging.getLogger("tests.broker_sweep")


class SweepBroker:
    def __init__(self, catalog_path: Path, root: Path, tmp_path: Path) -> None:
        from jupyter_tfenv.broker.app import TFEnvBroker

        self.runtime_root = tempfile.mkdtemp(prefix="tfs-", dir="/tmp")  # short socket paths
        self.app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            runtime_root=self.runtime_root,
            allowed_mount_roots=[str(root)],
            checkpoint_root=str(tmp_path / "broker-ck"),
            log_root=str(tmp_path / "broker-logs"),
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog_path)]}}),
        )
        self.app.init_catalog()
        self.app.hub_auth = StandInHubAuth(
            {TOKEN: {"kind": "user", "name": kernel_user(), "scopes": [SCOPE], "groups": []}}
        )
        self.socket, self.port = bind_unused_port()
        self.server = HTTPServer(self.app.make_web_app())
        self.server.add_sockets([self.socket])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/{SERVICE}/"

    def containers(self, kernel_id: str | None = None) -> list[Any]:
        labels = [f"org.jupyter.tfenv.broker={SERVICE}"]
        if kernel_id:
            labels.append(f"org.jupyter.tfenv.kernel-id={kernel_id}")
        client = docker.from_env(timeout=60)
        try:
            return list(client.containers.list(all=True, filters={"label": labels}))
        finally:
            client.close()

    def close(self) -> list[str]:
        self.server.stop()
        self.socket.close()
        left = self.containers()
        for container in left:  # this module's broker's only (its own service name)
            container.remove(force=True)
        shutil.rmtree(self.runtime_root, ignore_errors=True)
        return [c.name for c in left]


@pytest.fixture
def broker(catalog_path: Path, jp_root_dir: Path, tmp_path: Path) -> Iterator[SweepBroker]:
    pytest.importorskip("jupyterhub")
    running = SweepBroker(catalog_path, jp_root_dir, tmp_path)
    yield running
    assert not running.close(), "the test left broker kernel containers behind"


@pytest.fixture
def jp_server_config(jp_server_config: Config, broker: SweepBroker) -> Config:
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
    """kept_sweep_interval and adopt_timeout: 0 turns the kept kernels' sweep off."""
    app = broker.app
    for interval, timeout, expected in ((300.0, 3600.0, 2), (0.0, 3600.0, 1), (300.0, 0.0, 1)):
        app.kept_sweep_interval, app.adopt_timeout = interval, timeout
        sweeps = start_sweeps(app)
        try:
            assert len(sweeps) == expected, (interval, timeout)
        finally:
            for sweep in sweeps:
                sweep.stop()
