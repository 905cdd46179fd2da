"""The Docker engine goes away in the middle of a kernel start, of a pull, and under the
warm pool (issue 24, item 4).

The engine is tests/support/gpu_engine.py's TestEngine of tests/conftest.py's
``outage_engine`` (own data root and socket, ``--live-restore``), stopped with SIGTERM as a
daemon upgrade does. The moments are made, not guessed:

- *during a start*: the environment's interpreter is a wrapper in the notebook folder
  (mounted into the container at the same path) that says it runs, then waits for a gate
  file before it execs the image's python; the engine is stopped once it ran, while the
  server waits for the kernel's sockets;
- *during a pull*: the image comes from the test registry through a loopback proxy that
  passes each connection's first bytes and then holds the rest; the engine is stopped
  once the pull reports its layers;
- *the pool*: its fills fail while the engine is away (the retry delay shortened), and it
  fills up once the engine is back.

After every failure: a 503 naming the engine and what to do (never a 500, never the SDK's
words), no container left on the engine, no runtime folder, no kernel in the server's
kernel manager, no pool slot lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from jupyter_client.connect import write_connection_file
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from jupyter_tfenv.backends.broker import BrokerClient, BrokerError
from jupyter_tfenv.kernels import pools
from jupyter_tfenv.lifecycle.pool import KernelPool
from tests.conftest import (
    CATALOG,
    KERNEL_GID,
    KERNEL_UID,
    PY_IMAGE,
    run_code,
    start_kernel,
)
from tests.support.broker_process import UnixUser, UnixUsers
from tests.support.gpu_engine import TestEngine
from tests.support.outage import answer, engine_kernels
from tests.support.registry import (  # noqa: F401
    Registry,
    RegistryCleanup,
    build_image,
    registry,
    registry_cleanup,
)

pytestmark = pytest.mark.docker

MiB = 1 << 20

#: The interpreter of the ``gated`` environment: says it runs, waits for the gate.
GATED_PYTHON = """#!/bin/sh
here=$(dirname "$0")
touch "$here/started"
while [ ! -e "$here/open" ]; do sleep 0.1; done
exec python3 "$@"
"""


@pytest.fixture
def gate(jp_root_dir: Path) -> Iterator[Path]:
    """The folder of the gated interpreter (in the notebook folder, so in the container);
    opened at the end, so that nothing waits on it after the test."""
    folder = jp_root_dir / ".gate"
    folder.mkdir()
    wrapper = folder / "python"
    wrapper.write_text(GATED_PYTHON)
    wrapper.chmod(0o755)
    os.chown(folder, KERNEL_UID, KERNEL_GID)
    yield folder
    (folder / "open").touch()


@pytest.fixture
def extra_environments() -> list[dict[str, Any]]:
    """Catalog entries a test adds (parametrized by the pool test)."""
    return []


@pytest.fixture
def catalog_path(
    tmp_path: Path, jp_root_dir: Path, extra_environments: list[dict[str, Any]]
) -> Path:
    gated = {"id": "gated", "image": PY_IMAGE, "python": str(jp_root_dir / ".gate" / "python")}
    path = tmp_path / "catalog.yaml"
    envs = [*CATALOG, gated, *extra_environments]
    path.write_text(yaml.safe_dump({"version": 1, "environments": envs}))
    return path


@pytest.fixture
def jp_server_config(
    jp_server_config: Config, outage_engine: TestEngine, monkeypatch: pytest.MonkeyPatch
) -> Config:
    """The server's engine (server, provisioner, service: all read DOCKER_HOST) is the
    outage engine."""
    monkeypatch.setenv("DOCKER_HOST", outage_engine.url)
    return jp_server_config


@pytest.fixture(autouse=True)
def _logs(server_logs_propagate: None) -> None:
    """caplog sees the server's records (tests/conftest.py)."""


@pytest.fixture
def engine_back(outage_engine: TestEngine) -> Iterator[TestEngine]:
    """The outage engine, running again after the test whatever happened, with no kernel
    container left (a leftover fails the test: it is what these tests look for)."""
    yield outage_engine
    if outage_engine.client is None:
        outage_engine.start()
    left = engine_kernels(outage_engine)
    for container in left:
        container.remove(force=True)
    assert not left, [c.name for c in left]


class Records(logging.Handler):
    """A handler that keeps what reaches it (as a server's log handler would write it)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def until(what: str, check: Callable[[], Any], timeout: float = 240.0) -> Any:
    """Wait (without blocking the server's loop) until ``check()`` is true; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.1)


async def start_error(jp_fetch: Any, name: str, path: str = "nb.ipynb") -> tuple[int, str]:
    """Start a kernel for a notebook in the server's root (mounted into its container)
    that must fail; the HTTP status and the server's message."""
    response = await jp_fetch(
        "api",
        "kernels",
        method="POST",
        body=json.dumps({"name": name, "path": path}),
        raise_error=False,
    )
    assert response.code != 201, response.body
    return response.code, str(json.loads(response.body)["message"])


def assert_engine_message(message: str) -> None:
    """The one message of an unreachable engine: which engine, what to do; no SDK words."""
    assert "Docker engine" in message, message
    assert "systemctl start docker" in message, message
    for raw in ("Traceback", "urllib3", "HTTPConnectionPool", "Max retries", "object at 0x"):
        assert raw not in message, message


# -- a kernel start ----------------------------------------------------------------------


async def test_an_engine_outage_during_a_start_fails_it_cleanly(
    jp_fetch: Any,
    jp_serverapp: Any,
    engine_back: TestEngine,
    runtime_root: str,
    gate: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The container exists and the server waits for the kernel's sockets when the engine
    stops: the start answers 503 naming the engine, its runtime folder is gone, the
    server holds no kernel, and the container (left running by live-restore: it could not
    be removed while the engine was away) is removed once the engine is back."""
    engine = engine_back
    starting = asyncio.ensure_future(start_error(jp_fetch, "tfenv-gated"))
    try:
        await until(
            "the gated interpreter to run",
            lambda: (gate / "started").exists() or starting.done(),
        )
        assert not starting.done(), starting.result()
        [container] = engine_kernels(engine)
        caplog.clear()
        server_log = Records()
        jp_serverapp.log.addHandler(server_log)
        try:
            await asyncio.to_thread(engine.stop_daemon)
            code, message = await starting
        finally:
            jp_serverapp.log.removeHandler(server_log)
    finally:
        if not starting.done():
            starting.cancel()
    assert code == 503, message
    assert "did not start" in message and "gated" in message, message
    assert_engine_message(message)
    assert os.listdir(runtime_root) == []
    assert jp_serverapp.kernel_manager.list_kernel_ids() == []
    noisy = [r for r in caplog.records if r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
    # The raw exception is not in the message; it is in the server's own log, at debug.
    raw = [r for r in server_log.records if r.name.startswith("jupyter_tfenv")]
    assert any("is unreachable" in r.getMessage() for r in raw), [r.name for r in raw]
    assert all(r.levelno == logging.DEBUG for r in raw), [r.getMessage() for r in raw]

    engine.start()
    # The container of the failed start goes once the engine answers again.
    await until("the failed start's container to go", lambda: not engine_kernels(engine))
    with pytest.raises(docker.errors.NotFound):
        assert engine.client is not None
        engine.client.containers.get(container.id)

    # And a start works again.
    (gate / "open").touch()
    kernel_id = await start_kernel(jp_fetch, "tfenv-gated", "nb.ipynb")
    try:
        assert await run_code(jp_serverapp, kernel_id, "print(6 * 7)") == "42\n"
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert os.listdir(runtime_root) == []


# -- a pull ------------------------------------------------------------------------------


class HoldingProxy:
    """A TCP proxy on 127.0.0.1 to ``target``: each connection's answer passes up to
    ``limit`` bytes, then waits until :meth:`release` (a registry's manifests pass, a
    layer's blob is held mid-way)."""

    def __init__(self, target: tuple[str, int], limit: int) -> None:
        self.target = target
        self.limit = limit
        self.released = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        self.held = threading.Event()  # set once some answer was held back
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=30)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, self.limit), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        passed = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None and passed + len(data) > limit:
                    sink.sendall(data[: max(0, limit - passed)])
                    passed = limit
                    self.held.set()
                    self.released.wait()
                    return  # the rest is never sent: the transfer stays incomplete
                sink.sendall(data)
                passed += len(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.released.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def slow_image(
    images: docker.DockerClient,
    registry: Registry,  # noqa: F811
    registry_cleanup: RegistryCleanup,  # noqa: F811
) -> Iterator[tuple[str, HoldingProxy]]:
    """An image in the test registry (the python image plus 8 MiB that do not compress),
    and a holding proxy to it; the image's reference through the proxy."""
    repo = registry.repo("outage")
    build_image(images, f"{repo}:build", PY_IMAGE, [8 * MiB])
    registry_cleanup.push(f"{repo}:build", f"{repo}:1.0")
    host, port = registry.host.rsplit(":", 1)
    proxy = HoldingProxy((host, int(port)), limit=256 * 1024)
    try:
        yield f"127.0.0.1:{proxy.port}/{registry.prefix}/outage:1.0", proxy
    finally:
        proxy.close()


@pytest.fixture
def pulled_environment(
    slow_image: tuple[str, HoldingProxy], catalog_path: Path
) -> Iterator[tuple[str, HoldingProxy]]:
    """The catalog gets ``slow``, whose image comes through the holding proxy."""
    reference, proxy = slow_image
    data = yaml.safe_load(catalog_path.read_text())
    data["environments"].append({"id": "slow", "image": reference})
    catalog_path.write_text(yaml.safe_dump(data))
    yield reference, proxy


async def test_an_engine_outage_during_a_pull_ends_it_with_an_error(
    pulled_environment: tuple[str, HoldingProxy],
    jp_fetch: Any,
    jp_serverapp: Any,
    engine_back: TestEngine,
) -> None:
    """The pull ends in 'error' with a message that names the engine and what to do (it
    never hangs), and the same pull works once the engine is back."""
    reference, proxy = pulled_environment
    engine = engine_back
    service = jp_serverapp.web_app.settings["tfenv"]
    service.catalog.refresh()
    code, started = await answer(jp_fetch, "tfenv", "environments", "slow", "pull", method="POST")
    assert code in (200, 201, 202), started
    pull_id = started["id"]

    async def state() -> dict[str, Any]:
        code, data = await answer(jp_fetch, "tfenv", "pulls", pull_id)
        assert code == 200, data
        return data

    # The engine has the manifest and fetches the layer the proxy holds.
    await until("the pull to fetch its layer", proxy.held.is_set)
    assert (await state())["state"] == "pulling"
    await asyncio.to_thread(engine.stop_daemon)
    proxy.released.set()

    deadline = time.monotonic() + 240
    while (current := await state())["state"] == "pulling":
        assert time.monotonic() < deadline, current
        await asyncio.sleep(0.2)
    assert current["state"] == "error", current
    assert reference in current["message"], current
    assert_engine_message(current["message"])
    assert "pull" in current["message"].lower(), current

    # A pull while the engine is away is refused at once.
    code, refused = await answer(jp_fetch, "tfenv", "environments", "slow", "pull", method="POST")
    assert code == 503, refused
    assert_engine_message(refused["message"])

    engine.start()
    proxy.limit = 1 << 40  # nothing held any more
    code, again = await answer(jp_fetch, "tfenv", "environments", "slow", "pull", method="POST")
    assert code in (200, 201, 202), again
    deadline = time.monotonic() + 240
    while True:
        code, data = await answer(jp_fetch, "tfenv", "pulls", again["id"])
        if data.get("state") != "pulling":
            break
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.2)
    assert data["state"] == "done", data
    assert engine.client is not None
    engine.client.images.remove(reference)


# -- the warm pool -----------------------------------------------------------------------


@pytest.fixture
def pool(jp_serverapp: Any, jp_asyncio_loop: Any) -> Iterator[KernelPool]:
    """The server's warm pool (an in-process server does not start its extension's
    tasks), retrying a failed fill after 0.2 s instead of 30."""
    service = jp_serverapp.web_app.settings["tfenv"]
    made = KernelPool(jp_serverapp.kernel_manager, service.catalog, jp_serverapp.log)
    made.retry_delay = 0.2
    pools.set_pool(made)
    try:
        yield made
    finally:
        pools.set_pool(None)
        jp_asyncio_loop.run_until_complete(made.close())


def pool_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "pool kernel of 'pooled' did not start" in r.getMessage()]


@pytest.mark.parametrize(
    "extra_environments", [[{"id": "pooled", "image": PY_IMAGE, "pool_size": 1}]]
)
async def test_the_pool_refills_once_the_engine_is_back(
    jp_fetch: Any,
    jp_serverapp: Any,
    engine_back: TestEngine,
    runtime_root: str,
    pool: KernelPool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fills fail while the engine is away (one log line each, naming the engine, nothing
    left behind); once it is back the pool fills up. A start while the engine is away
    does not use up the pool kernel: it fails with the 503, and the pool kernel serves
    the next start once the engine is back."""
    engine = engine_back
    code, _ = await answer(jp_fetch, "tfenv", "environments", "py", "image")
    assert code == 200  # the server has talked to the engine
    engine.stop_daemon()
    caplog.clear()
    pool.start()
    await until("two failed fills", lambda: len(pool_failures(caplog)) >= 2)
    for record in pool_failures(caplog):
        assert record.exc_info is None
        assert_engine_message(record.getMessage())
    assert pool.ready.get("pooled", []) == []

    engine.start()
    [ready] = await until("the pool to fill", lambda: pool.ready.get("pooled"))
    assert [c.id for c in engine_kernels(engine)] == [ready.container_id]
    assert os.listdir(runtime_root) == [os.path.basename(ready.runtime_dir)]

    # The engine goes away again: a start fails, and the pool keeps its kernel.
    engine.stop_daemon()
    code, message = await start_error(jp_fetch, "tfenv-pooled")
    assert code == 503, message
    assert_engine_message(message)
    assert [k.kernel_id for k in pool.ready.get("pooled", [])] == [ready.kernel_id]
    assert os.listdir(runtime_root) == [os.path.basename(ready.runtime_dir)]
    assert jp_serverapp.kernel_manager.list_kernel_ids() == []

    engine.start()
    kernel_id = await start_kernel(jp_fetch, "tfenv-pooled", "nb.ipynb")
    try:
        code, status = await answer(jp_fetch, "tfenv", "kernels", kernel_id)
        assert code == 200 and status["container_id"] == ready.container_id, status
        assert await run_code(jp_serverapp, kernel_id, "print(6 * 7)") == "42\n"
        # The pool fills again behind the taken kernel.
        await until("the pool to refill", lambda: pool.ready.get("pooled"))
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")


@pytest.mark.parametrize(
    "extra_environments", [[{"id": "pooled", "image": PY_IMAGE, "pool_size": 1}]]
)
async def test_a_pool_kernel_handed_out_as_the_engine_goes_away_is_not_orphaned(
    jp_fetch: Any,
    jp_serverapp: Any,
    engine_back: TestEngine,
    runtime_root: str,
    pool: KernelPool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine goes away between the pool's hand-out and the adoption (injected: the
    engine is stopped right after the pool hands its kernel out). The start fails with
    the 503, and the handed-out kernel's container is removed once the engine is back:
    it used to run on, orphaned, without its runtime folder."""
    engine = engine_back
    pool.start()
    [ready] = await until("the pool to fill", lambda: pool.ready.get("pooled"))
    taken = pool.take

    async def take_then_stop(env_id: str, cwd: str) -> dict[str, Any] | None:
        handed_out = await taken(env_id, cwd)
        await asyncio.to_thread(engine.stop_daemon)
        return handed_out

    monkeypatch.setattr(pool, "take", take_then_stop)
    code, message = await start_error(jp_fetch, "tfenv-pooled")
    monkeypatch.setattr(pool, "take", taken)
    assert code == 503, message
    assert_engine_message(message)
    assert jp_serverapp.kernel_manager.list_kernel_ids() == []

    engine.start()
    # The handed-out kernel's container goes; the pool fills again with a new one.
    await until(
        "the handed-out container to be removed",
        lambda: ready.container_id not in [c.id for c in engine_kernels(engine)],
    )
    await until("the pool to refill", lambda: pool.ready.get("pooled"))
    assert ready.runtime_dir not in [
        os.path.join(runtime_root, n) for n in os.listdir(runtime_root)
    ]


# -- a start through the broker ----------------------------------------------------------

SERVICE = "tfenv-broker-outage-start"


@pytest.fixture
def gated_broker(
    outage_engine: TestEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[BrokerClient, UnixUser, Path, str]]:
    """The real broker in the test's loop on the outage engine, for one user whose home
    holds the gated interpreter of its ``gated`` environment; the user's client, the
    user, the gate folder and the broker's runtime root."""
    pytest.importorskip("jupyterhub")
    from jupyter_tfenv.broker.app import TFEnvBroker
    from tests.broker.test_broker_e2e import StandInHubAuth

    monkeypatch.setenv("DOCKER_HOST", outage_engine.url)
    users = UnixUsers()
    runtime_root = tempfile.mkdtemp(prefix="tfs-", dir="/tmp")
    sock, port = bind_unused_port()
    server: HTTPServer | None = None
    gate: Path | None = None
    try:
        user = users.make("tfoutgate")
        gate = user.home / ".gate"
        gate.mkdir()
        (gate / "python").write_text(GATED_PYTHON)
        (gate / "python").chmod(0o755)
        os.chown(gate, user.uid, user.gid)
        catalog = tmp_path / "broker-catalog.yaml"
        gated = {"id": "gated", "image": PY_IMAGE, "python": str(gate / "python")}
        catalog.write_text(yaml.safe_dump({"version": 1, "environments": [gated]}))
        app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            runtime_root=runtime_root,
            checkpoint_root=str(tmp_path / "broker-ck"),
            log_root=str(tmp_path / "broker-logs"),
            max_kernels_per_user=None,
            start_timeout=240.0,
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog)]}}),
        )
        app.init_catalog()
        scope = f"access:services!service={SERVICE}"
        app.hub_auth = StandInHubAuth(
            {f"token-{user.name}": {"kind": "user", "name": user.name, "scopes": [scope]}}
        )
        server = HTTPServer(app.make_web_app())
        server.add_sockets([sock])
        url = f"http://127.0.0.1:{port}/services/{SERVICE}/"
        yield BrokerClient(url, f"token-{user.name}", timeout=300), user, gate, runtime_root
    finally:
        if gate is not None:
            (gate / "open").touch()
        if outage_engine.client is None:
            outage_engine.start()
        for container in engine_kernels(outage_engine):
            container.remove(force=True)
        if server is not None:
            server.stop()
        sock.close()
        shutil.rmtree(runtime_root, ignore_errors=True)
        users.remove()


async def test_an_engine_outage_during_a_broker_start_fails_it_cleanly(
    gated_broker: tuple[BrokerClient, UnixUser, Path, str],
    engine_back: TestEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker waits for the kernel's sockets when its engine stops: the start answers
    503 naming the engine (no traceback in the broker's log), and the container, which
    could not be removed while the engine was away, is removed once it is back; the
    runtime folder goes with the server's DELETE, as after any failed start."""
    client, user, gate, runtime_root = gated_broker
    engine = engine_back
    kernel_id = str(uuid.uuid4())
    rundir = (await client.prepare_runtime(kernel_id, restart=False))["runtime_dir"]
    path = os.path.join(rundir, "kernel.json")
    write_connection_file(path, transport="ipc", ip=os.path.join(rundir, "k"), key=b"x" * 32)
    os.chown(path, user.uid, user.gid)
    body = {
        "kernel_id": kernel_id,
        "environment": "gated",
        "cwd": str(user.home),
        "mount": str(user.home),
        "env": {},
        "server": "",
    }
    starting = asyncio.ensure_future(client.start_kernel(body, timeout=300))
    try:
        await until(
            "the gated interpreter to run",
            lambda: (gate / "started").exists() or starting.done(),
        )
        assert not starting.done(), starting.result()
        assert len(engine_kernels(engine)) == 1
        caplog.clear()
        await asyncio.to_thread(engine.stop_daemon)
        with pytest.raises(BrokerError) as failed:
            await starting
    finally:
        if not starting.done():
            starting.cancel()
    assert failed.value.http_status == 503, failed.value.message
    assert_engine_message(failed.value.message)
    noisy = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not noisy, [r.getMessage() for r in noisy]

    engine.start()
    await until("the failed start's container to go", lambda: not engine_kernels(engine))
    await client.delete_kernel(kernel_id)  # what the server's failed start asks
    assert not os.path.exists(rundir)
    assert os.listdir(os.path.join(runtime_root, str(user.uid))) == []
