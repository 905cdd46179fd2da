"""The Docker engine goes away under a running kernel (issue 24, item 1).

Real fault injection: a dockerd of this module's own (tests/support/gpu_engine.py's TestEngine,
own data root and socket, ``--live-restore`` so that the kernel container outlives it),
a real jupyter_server with the tfenv extension pointed at it through DOCKER_HOST, a
running kernel of the small python image; then the engine is stopped with SIGTERM, as a
daemon upgrade does. During the outage no /tfenv endpoint answers 500, the kernel ones
answer 503 naming the engine, and ``is_alive()`` raises nothing and says alive (the
kernel's IPC sockets never pass through dockerd: it still computes). Started again, the
endpoints recover by themselves.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import write_connection_file
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from jupyter_tfenv.backends.broker import BrokerClient, BrokerError
from tests.conftest import REPO, run_code, start_error, start_kernel
from tests.support.broker_process import UnixUser, UnixUsers
from tests.support.gpu_engine import TestEngine
from tests.support.outage import answer, engine_kernels


@pytest.fixture
def jp_server_config(
    jp_server_config: Config, outage_engine: TestEngine, monkeypatch: pytest.MonkeyPatch
) -> Config:
    """The server's engine (server, provisioner, service: all read DOCKER_HOST) is the
    outage engine."""
    monkeypatch.setenv("DOCKER_HOST", outage_engine.url)
    return jp_server_config


async def test_an_engine_outage_answers_503_and_keeps_the_kernel(
    jp_fetch: Any, jp_serverapp: Any, outage_engine: TestEngine, caplog: pytest.LogCaptureFixture
) -> None:
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
    try:
        assert await run_code(jp_serverapp, kernel_id, "x = 42; print(x)") == "42\n"
        [container] = engine_kernels(outage_engine)
        code, before = await answer(jp_fetch, "tfenv", "kernels", kernel_id)
        assert code == 200 and before["live"]["running"] is True, before

        outage_engine.stop_daemon()
        assert not outage_engine.socket.exists()
        # The image list is kept for 2 s: ask the engine, not that cache.
        jp_serverapp.web_app.settings["tfenv"].images_changed()
        caplog.clear()

        reads = [
            ("tfenv", "environments"),
            ("tfenv", "environments", "py"),
            ("tfenv", "environments", "py", "image"),
            ("tfenv", "environments", "py", "probe"),
            ("tfenv", "kernels"),
            ("tfenv", "kernels", kernel_id),
            ("tfenv", "gpus"),
            ("tfenv", "checkpoints"),
        ]
        answers = {"/".join(path): await answer(jp_fetch, *path) for path in reads}
        answers["POST pull"] = await answer(
            jp_fetch, "tfenv", "environments", "py", "pull", method="POST"
        )
        answers["POST probe"] = await answer(
            jp_fetch, "tfenv", "environments", "py", "probe", method="POST"
        )
        assert all(code != 500 for code, _ in answers.values()), answers
        # Every status is one the OpenAPI document names for that operation.
        spec = yaml.safe_load((REPO / "jupyter_tfenv" / "openapi.yaml").read_text())["paths"]
        for what, (code, _) in answers.items():
            method, _, path = what.rpartition(" ") if " " in what else ("GET", "", what)
            if method == "POST":
                path = f"tfenv/environments/py/{path}"
            template = "/" + path.replace(kernel_id, "{kernel_id}").replace("/py", "/{env_id}")
            documented = spec[template][method.lower()]["responses"]
            assert str(code) in documented, (what, code, sorted(documented))
        for what in (f"tfenv/kernels/{kernel_id}", "tfenv/environments/py/image", "POST pull"):
            code, data = answers[what]
            assert code == 503, (what, code, data)
            assert "Cannot reach the Docker engine" in data["message"], data
            assert "systemctl start docker" in data["message"], data
        code, listing = answers["tfenv/environments"]
        assert code == 200 and listing["environments"], listing
        py = next(e for e in listing["environments"] if e["id"] == "py")
        assert py["image_status"]["present"] is None
        assert "Cannot reach the Docker engine" in py["image_status"]["error"]
        code, kernels = answers["tfenv/kernels"]
        assert code == 200 and [k["kernel_id"] for k in kernels["kernels"]] == [kernel_id]
        # One log line per refusal, no traceback.
        assert not [r for r in caplog.records if r.exc_info], [
            r.getMessage() for r in caplog.records if r.exc_info
        ]

        # The kernel does not depend on dockerd: alive, and it computes.
        km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        assert await km.is_alive() is True
        assert await run_code(jp_serverapp, kernel_id, "print(x + 1)") == "43\n"
        assert await km.is_alive() is True

        # Back: the same container (live-restore), every endpoint answers again.
        outage_engine.start()
        assert [c.id for c in engine_kernels(outage_engine)] == [container.id]
        code, after = await answer(jp_fetch, "tfenv", "kernels", kernel_id)
        assert code == 200 and after["live"]["running"] is True, after
        code, image = await answer(jp_fetch, "tfenv", "environments", "py", "image")
        assert code == 200 and image["present"] is True, image
        assert await run_code(jp_serverapp, kernel_id, "print(x)") == "42\n"
    finally:
        if outage_engine.client is None:
            outage_engine.start()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)
    assert engine_kernels(outage_engine) == []


@pytest.fixture(autouse=True)
def _logs(server_logs_propagate: None) -> None:
    """caplog sees the server's records (tests/conftest.py)."""


async def test_a_start_while_the_engine_is_away_fails_cleanly(
    jp_fetch: Any, jp_serverapp: Any, outage_engine: TestEngine, runtime_root: str
) -> None:
    """Issue 24, item 4: a 503 that names the engine, no runtime folder, no container, no
    kernel left in the server; once the engine is back the same start works."""
    # The server has talked to the engine before (its Docker client is made and kept).
    code, _ = await answer(jp_fetch, "tfenv", "environments", "py", "image")
    assert code == 200
    outage_engine.stop_daemon()
    try:
        code, message = await start_error(jp_fetch, "tfenv-py")
        assert code == 503, message
        assert "Cannot reach the Docker engine" in message
        assert "systemctl start docker" in message
        assert os.listdir(runtime_root) == []
        assert jp_serverapp.kernel_manager.list_kernel_ids() == []
    finally:
        outage_engine.start()
    assert engine_kernels(outage_engine) == []
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
    try:
        assert await run_code(jp_serverapp, kernel_id, "print(6 * 7)") == "42\n"
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert engine_kernels(outage_engine) == []
    assert os.listdir(runtime_root) == []


async def test_a_kernel_that_dies_during_an_outage_is_dead(
    jp_fetch: Any, jp_serverapp: Any, outage_engine: TestEngine
) -> None:
    """poll() says dead only when the kernel is really gone: its processes are killed
    while the engine cannot be asked, and is_alive() says False (without raising)."""
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
    try:
        [container] = engine_kernels(outage_engine)
        assert outage_engine.client is not None
        pid = int(outage_engine.client.api.inspect_container(container.id)["State"]["Pid"])
        km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        km.autorestart = False  # what is asked here is poll(), not the restarter
        outage_engine.stop_daemon()
        assert await km.is_alive() is True
        os.kill(pid, signal.SIGKILL)  # the container's init: the kernel goes with it
        deadline = time.monotonic() + 120
        alive = True
        while alive and time.monotonic() < deadline:
            await asyncio.sleep(0.5)  # the kernel's processes are reaped by its shim
            alive = await km.is_alive()
        assert alive is False
    finally:
        if outage_engine.client is None:
            outage_engine.start()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE", raise_error=False)
    assert engine_kernels(outage_engine) == []


# -- the broker on the same engine ------------------------------------------------------

SERVICE = "tfenv-broker-outage"
SCOPE = f"access:services!service={SERVICE}"


@pytest.fixture
def outage_broker(
    catalog_path: Path,
    outage_engine: TestEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, UnixUser]]:
    """The real broker in the test's loop, its engine the outage engine, for one user."""
    pytest.importorskip("jupyterhub")
    from jupyter_tfenv.broker.app import TFEnvBroker
    from tests.broker.test_broker_e2e import StandInHubAuth

    # The broker reconnects through DOCKER_HOST after it lost its engine.
    monkeypatch.setenv("DOCKER_HOST", outage_engine.url)
    users = UnixUsers()
    runtime_root = tempfile.mkdtemp(prefix="tfo-", dir="/tmp")
    sock, port = bind_unused_port()
    server: HTTPServer | None = None
    try:
        ann = users.make("tfoutann")
        app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            runtime_root=runtime_root,
            checkpoint_root=str(tmp_path / "broker-ck"),
            log_root=str(tmp_path / "broker-logs"),
            max_kernels_per_user=None,
            start_timeout=240.0,
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog_path)]}}),
        )
        app.init_catalog()
        app.hub_auth = StandInHubAuth(
            {f"token-{ann.name}": {"kind": "user", "name": ann.name, "scopes": [SCOPE]}}
        )
        server = HTTPServer(app.make_web_app())
        server.add_sockets([sock])
        yield f"http://127.0.0.1:{port}/services/{SERVICE}/", ann
    finally:
        if outage_engine.client is None:
            outage_engine.start()
        for container in outage_engine.containers():
            container.remove(force=True)
        if server is not None:
            server.stop()
        sock.close()
        shutil.rmtree(runtime_root, ignore_errors=True)
        users.remove()


async def test_the_broker_answers_503_during_an_outage(
    outage_broker: tuple[str, UnixUser],
    outage_engine: TestEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, ann = outage_broker
    client = BrokerClient(url, f"token-{ann.name}", timeout=300)
    kernel_id = str(uuid.uuid4())
    rundir = (await client.prepare_runtime(kernel_id, restart=False))["runtime_dir"]
    path = os.path.join(rundir, "kernel.json")
    write_connection_file(path, transport="ipc", ip=os.path.join(rundir, "k"), key=b"x" * 32)
    os.chown(path, ann.uid, ann.gid)
    body = {
        "kernel_id": kernel_id,
        "environment": "py",
        "cwd": str(ann.home),
        "mount": str(ann.home),
        "env": {},
        "server": "",
    }
    await client.start_kernel(body, timeout=300)
    assert (await client.kernel(kernel_id))["running"] is True

    outage_engine.stop_daemon()
    caplog.clear()
    calls = {
        "kernels": client.kernels(),
        "kernel": client.kernel(kernel_id),
        "live": client.live(kernel_id),
        "environments": client.environments(),
        "gpus": client.gpus(),
        "signal": client.signal(kernel_id, signal.SIGINT),
    }
    answers: dict[str, Any] = {}
    for name, call in calls.items():
        try:
            answers[name] = ("ok", await call)
        except BrokerError as err:
            answers[name] = (err.http_status, err.message)
    assert all(status != 500 for status, _ in answers.values()), answers
    for name in ("kernels", "kernel", "live", "signal"):
        status, message = answers[name]
        assert status == 503 and "Docker engine" in message, (name, answers[name])
    # One log line per refusal: no traceback of the SDK's connection error.
    noisy = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not noisy, [r.getMessage() for r in noisy]

    outage_engine.start()
    assert (await client.kernel(kernel_id))["running"] is True
    await client.delete_kernel(kernel_id)
    assert engine_kernels(outage_engine) == []


async def start_broker_kernel(client: BrokerClient, user: UnixUser) -> tuple[str, str]:
    """A kernel of ``py`` through the broker, with a connection file of the test's own
    (IPC sockets in the broker's runtime folder); its id and the file's path."""
    kernel_id = str(uuid.uuid4())
    rundir = (await client.prepare_runtime(kernel_id, restart=False))["runtime_dir"]
    path = os.path.join(rundir, "kernel.json")
    write_connection_file(path, transport="ipc", ip=os.path.join(rundir, "k"), key=b"x" * 32)
    os.chown(path, user.uid, user.gid)
    body = {
        "kernel_id": kernel_id,
        "environment": "py",
        "cwd": str(user.home),
        "mount": str(user.home),
        "env": {},
        "server": "",
    }
    await client.start_kernel(body, timeout=300)
    return kernel_id, path


async def execute(kc: AsyncKernelClient, code: str) -> str:
    """Run ``code`` over the kernel's own sockets; its stdout (fails on an error reply)."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("ERROR: " + "\n".join(msg["content"]["traceback"]))

    reply = await kc.execute_interactive(code, output_hook=hook, timeout=120)
    assert reply["content"]["status"] == "ok", "".join(out)
    return "".join(out)


async def test_a_broker_kernel_keeps_its_state_through_an_engine_restart(
    outage_broker: tuple[str, UnixUser], outage_engine: TestEngine
) -> None:
    """Issue 24, item 2 through the broker: with live-restore the kernel keeps its
    variables through the engine's stop and start, computes meanwhile (its sockets never
    pass through dockerd), and the broker's status and live readings answer again after."""
    url, ann = outage_broker
    client = BrokerClient(url, f"token-{ann.name}", timeout=300)
    kernel_id, path = await start_broker_kernel(client, ann)
    kc = AsyncKernelClient()
    kc.load_connection_file(path)
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        assert await execute(kc, "x = 42; print(x)") == "42\n"
        [container] = engine_kernels(outage_engine)
        before = await client.live(kernel_id)
        assert before["running"] is True and before["container_id"] == container.id

        outage_engine.stop_daemon()
        with pytest.raises(BrokerError) as away:
            await client.live(kernel_id)
        assert away.value.http_status == 503, away.value.message
        assert await execute(kc, "print(x + 1)") == "43\n"

        outage_engine.start()
        # The same container (live-restore), the same variables.
        assert [c.id for c in engine_kernels(outage_engine)] == [container.id]
        assert await execute(kc, "print(x)") == "42\n"
        # The broker answers for it again: its status and its live readings.
        kernel = await client.kernel(kernel_id)
        assert kernel["running"] is True and kernel["container_id"] == container.id, kernel
        after = await client.live(kernel_id)
        assert after["running"] is True and after["container_id"] == container.id, after
        assert after["started_at"] == before["started_at"], (before, after)
        assert isinstance(after["memory_used"], int) and after["memory_used"] > 0, after
    finally:
        kc.stop_channels()
        if outage_engine.client is None:
            outage_engine.start()
        await client.delete_kernel(kernel_id)
    assert engine_kernels(outage_engine) == []
