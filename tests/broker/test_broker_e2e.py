"""A single-user server in broker mode against the real tfenv broker, without JupyterHub.

The broker runs in the test's loop with a stand-in for the hub's token check; the server
(jupyter_server, broker_url set) starts, restarts, interrupts and shuts down a real kernel
container through it. The whole JupyterHub deployment is tested in tests/hub/.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from tests.conftest import KERNEL_UID, interrupt_a_sleep, run_code, start_kernel

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the broker runs as root"),
]

TOKEN = "e2e-user-token"
SERVICE = "tfenv-broker-pytest"
SCOPE = f"access:services!service={SERVICE}"


def kernel_user() -> str:
    try:
        return pwd.getpwuid(KERNEL_UID).pw_name
    except KeyError:
        pytest.skip(f"no Unix account with uid {KERNEL_UID} for the broker's caller")


class StandInHubAuth:
    """The hub's token check (HubAuth.user_for_token), from a dict."""

    api_token = "broker-token"

    def __init__(self, models: dict[str, dict[str, Any]]) -> None:
        self.models = models

    async def user_for_token(
        self, token: str, use_cache: bool = True, sync: bool = True
    ) -> dict[str, Any] | None:
        return self.models.get(token)

    def check_scopes(self, required: set[str], model: dict[str, Any]) -> set[str]:
        from jupyterhub.services.auth import check_scopes

        return set(check_scopes(required, set(model.get("scopes") or [])))


class Broker:
    """The real broker in the test's loop, with a stand-in hub; its kernel containers are
    told apart by its service name (``service``: a module's own)."""

    def __init__(
        self,
        catalog_path: Path,
        root: Path,
        tmp_path: Path,
        *,
        service: str = SERVICE,
        token: str = TOKEN,
    ) -> None:
        from jupyter_tfenv.broker.app import TFEnvBroker

        self.user = kernel_user()
        self.service = service
        self.runtime_root = tempfile.mkdtemp(prefix="tfb-", dir="/tmp")  # short socket paths
        self.app = TFEnvBroker(
            service_name=service,
            service_prefix=f"/services/{service}/",
            runtime_root=self.runtime_root,
            allowed_mount_roots=[str(root)],
            checkpoint_root=str(tmp_path / "broker-ck"),
            log_root=str(tmp_path / "broker-logs"),
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog_path)]}}),
        )
        self.app.init_catalog()
        scope = f"access:services!service={service}"
        self.app.hub_auth = StandInHubAuth(
            {token: {"kind": "user", "name": self.user, "scopes": [scope], "groups": []}}
        )
        self.socket, self.port = bind_unused_port()
        self.server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/{self.service}/"

    def start(self) -> None:
        self.server = HTTPServer(self.app.make_web_app())
        self.server.add_sockets([self.socket])

    def containers(self, kernel_id: str | None = None) -> list[Any]:
        labels = [f"org.jupyter.tfenv.broker={self.service}"]
        if kernel_id:
            labels.append(f"org.jupyter.tfenv.kernel-id={kernel_id}")
        client = docker.from_env(timeout=60)
        try:
            return list(client.containers.list(all=True, filters={"label": labels}))
        finally:
            client.close()

    def close(self) -> list[str]:
        if self.server is not None:
            self.server.stop()
        self.socket.close()
        left = self.containers()
        for container in left:
            container.remove(force=True)
        shutil.rmtree(self.runtime_root, ignore_errors=True)
        return [c.name for c in left]


@pytest.fixture
def broker(catalog_path: Path, jp_root_dir: Path, tmp_path: Path) -> Iterator[Broker]:
    pytest.importorskip("jupyterhub")
    running = Broker(catalog_path, jp_root_dir, tmp_path)
    yield running
    assert not running.close(), "the test left broker kernel containers behind"


@pytest.fixture
def jp_server_config(jp_server_config: Config, broker: Broker) -> Config:
    jp_server_config.DockerKernelProvisioner.broker_url = broker.url
    jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    return jp_server_config


PROBE = (
    "import os, json\n"
    "print(json.dumps({'uid': os.getuid(), 'cwd': os.getcwd(), 'env': sorted(os.environ)}))\n"
)


async def test_kernel_lifecycle_through_the_broker(jp_fetch, jp_serverapp, jp_root_dir, broker):
    broker.start()
    (jp_root_dir / "work").mkdir()
    os.chown(jp_root_dir / "work", KERNEL_UID, KERNEL_UID)
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "work/nb.ipynb")
    [container] = broker.containers(kernel_id)
    facts = json.loads(await run_code(jp_serverapp, kernel_id, PROBE))
    assert facts["uid"] == KERNEL_UID
    assert facts["cwd"] == str(jp_root_dir / "work")
    assert not [k for k in facts["env"] if "TOKEN" in k or k.startswith("JUPYTERHUB")]
    # Live status and the kernel list come from the broker; no Docker client here.
    live = json.loads((await jp_fetch("tfenv", "kernels", kernel_id)).body)
    assert live["container_id"] == container.id
    assert live["live"]["status"] == "running"
    assert jp_serverapp.web_app.settings["tfenv"]._client is None

    # Restart: a new container on the same runtime folder (same socket paths).
    await run_code(jp_serverapp, kernel_id, "x = 41")
    response = await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
    assert response.code == 200
    [again] = broker.containers(kernel_id)
    assert again.id != container.id
    out = await run_code(jp_serverapp, kernel_id, "print('x' in globals())")
    assert out.strip() == "False"

    # Interrupt reaches the kernel through the broker's signal call.
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    await interrupt_a_sleep(jp_fetch, km, kernel_id)

    # Shutdown: container and runtime folder gone.
    rundir = Path(km.provisioner.runtime_dir)
    assert rundir.is_dir()
    response = await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert response.code == 204
    assert not broker.containers(kernel_id)
    assert not rundir.exists()


async def test_a_kernel_that_exits_at_start_reports_its_logs(jp_fetch, jp_root_dir, broker):
    broker.start()
    from tornado.httpclient import HTTPClientError

    body = json.dumps({"name": "tfenv-exits", "path": "nb.ipynb"})
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=body)
    message = json.loads(info.value.response.body)["message"]
    # The image's /bin/sh runs the launcher script as a shell script and fails.
    assert "The kernel container of 'exits' exited with code" in message
    assert "Last lines of the container's log" in message
    assert not broker.containers()


async def test_a_container_removed_while_it_starts_is_a_409(jp_fetch, jp_root_dir, broker):
    # `docker rm -f` by someone else before the kernel answers: the broker said 500
    # (NullResource) and left the server's start to guess.
    broker.start()
    from tornado.httpclient import HTTPClientError

    async def start() -> HTTPClientError:
        body = json.dumps({"name": "tfenv-tf220", "path": "nb.ipynb"})
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("api", "kernels", method="POST", body=body)
        return info.value

    starting = asyncio.ensure_future(start())
    found: list[Any] = []
    for _ in range(1200):
        found = await asyncio.to_thread(broker.containers)
        if found or starting.done():
            break
        await asyncio.sleep(0.05)
    assert found, "the kernel's container never appeared"
    await asyncio.to_thread(found[0].remove, force=True)
    error = await starting
    assert error.response is not None
    message = json.loads(error.response.body)["message"]
    assert error.code == 409, message
    assert "while the kernel started, by something other than" in message
    assert not broker.containers()
