"""Broker mode of the server extension against a scripted broker (docs/broker.md's API).

The broker here is a small tornado app in the test's loop that records every request and
answers what a test tells it to; the real broker and JupyterHub are exercised end to end
in tests/hub/. These tests check the single-user side: what is sent (and what is not),
how refusals reach the kernel error dialog, clean-up after failed or cancelled starts,
and that the server never makes a Docker client.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado import web
from tornado.httpclient import HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from jupyter_tfenv.backends.broker import BrokerClient, BrokerError, BrokerUnavailableError
from jupyter_tfenv.server.service import PULL_BY_ADMIN

TOKEN = "broker-test-token"
QUOTA = (
    "You already run 2 tfenv kernels, the most one user may run here "
    "(c.TFEnvBroker.max_kernels_per_user = 2): shut one down first."
)


class FakeBroker:
    """Records requests; ``answers[(method, route)]`` scripts the reply."""

    def __init__(self, runtime_root: str) -> None:
        self.runtime_root = runtime_root
        self.requests: list[tuple[str, str, dict[str, Any] | None, str]] = []
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        #: Seconds a route waits before it answers.
        self.delays: dict[tuple[str, str], float] = {}
        #: When each request of ``requests`` arrived (monotonic).
        self.arrived: list[float] = []
        self.socket, self.port = bind_unused_port()
        self.server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/tfenv-broker/"

    def start(self) -> None:
        broker = self

        class Handler(web.RequestHandler):
            def check_xsrf_cookie(self) -> None:
                return

            async def _any(self, route: str, *args: str) -> None:
                raw = self.request.body
                body = json.loads(raw) if raw else None
                auth = self.request.headers.get("Authorization", "")
                broker.requests.append((self.request.method or "", self.request.uri, body, auth))
                broker.arrived.append(time.monotonic())
                await asyncio.sleep(broker.delays.get((self.request.method or "", route), 0))
                if auth != f"token {TOKEN}":
                    self.set_status(403)
                    self.finish({"message": "no valid token", "reason": "no user"})
                    return
                status, answer = broker.answer(self.request.method or "", route, args, body)
                self.set_status(status)
                if answer is None:
                    self.finish()
                else:
                    self.set_header("Content-Type", "application/json")
                    self.finish(json.dumps(answer))

        def route(name: str) -> type[web.RequestHandler]:
            async def method(self: Any, *args: str) -> None:
                await self._any(name, *args)

            return type(
                f"H_{name}",
                (Handler,),
                {"get": method, "post": method, "delete": method},
            )

        prefix = "/services/tfenv-broker/api"
        app = web.Application(
            [
                (prefix + r"/environments", route("environments")),
                (prefix + r"/environments/([^/]+)/probe", route("probe")),
                (prefix + r"/kernels", route("kernels")),
                (prefix + r"/kernels/([^/]+)/runtime", route("runtime")),
                (prefix + r"/kernels/([^/]+)/logs", route("logs")),
                (prefix + r"/kernels/([^/]+)/live", route("live")),
                (prefix + r"/kernels/([^/]+)/signal", route("signal")),
                (prefix + r"/kernels/([^/]+)", route("kernel")),
            ]
        )
        self.server = HTTPServer(app)
        self.server.add_sockets([self.socket])

    def answer(self, method: str, route: str, args: tuple[str, ...], body: Any) -> tuple[int, Any]:
        scripted = self.answers.get((method, route))
        if scripted is not None:
            return scripted
        if (method, route) == ("POST", "runtime"):
            path = Path(self.runtime_root) / args[0].replace("-", "")[:12]
            path.mkdir(mode=0o700, exist_ok=True)
            return 200, {"runtime_dir": str(path)}
        if (method, route) == ("GET", "environments"):
            return 200, {
                "environments": [
                    {
                        "id": "py",
                        "allowed": True,
                        "image": {"present": True, "image_id": "sha256:abc", "size": 123},
                    },
                    {
                        "id": "tf220",
                        "allowed": False,
                        "reason": "only for the tfenv-gpu group",
                        "image": {"present": False, "image_id": None},
                    },
                ]
            }
        if (method, route) == ("GET", "logs"):
            return 200, {"logs": "boom: the kernel fell over\n"}
        if method == "DELETE":
            return 204, None
        return 404, {"message": "no such kernel of yours", "reason": "no such kernel"}

    def calls(self, method: str, fragment: str) -> list[tuple[str, str, Any, str]]:
        return [r for r in self.requests if r[0] == method and fragment in r[1]]

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.socket.close()


@pytest.fixture
def broker(runtime_root: str) -> Iterator[FakeBroker]:
    fake = FakeBroker(runtime_root)
    yield fake
    fake.stop()


@pytest.fixture
def provisioner_extra() -> dict[str, Any]:
    return {}


@pytest.fixture
def jp_server_config(
    jp_server_config: Config, broker: FakeBroker, provisioner_extra: dict[str, Any]
) -> Config:
    jp_server_config.DockerKernelProvisioner.broker_url = broker.url
    jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    for key, value in provisioner_extra.items():
        jp_server_config.DockerKernelProvisioner[key] = value
    return jp_server_config


def starts(broker: FakeBroker) -> list[tuple[str, str, Any, str]]:
    return [r for r in broker.requests if r[0] == "POST" and r[1].endswith("/api/kernels")]


async def start_error(jp_fetch: Any, name: str, path: str | None = None) -> tuple[int, str]:
    body = {"name": name} if path is None else {"name": name, "path": path}
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=json.dumps(body))
    response = info.value.response
    assert response is not None
    return info.value.code, str(json.loads(response.body)["message"])


def kernel_id_of(broker: FakeBroker) -> str:
    return str(broker.calls("POST", "/runtime")[0][1].split("/")[-2])


async def test_quota_refusal_reaches_the_dialog_unchanged(
    jp_fetch, jp_serverapp, jp_root_dir, broker
):
    broker.start()
    broker.answers[("POST", "kernels")] = (429, {"message": QUOTA, "reason": "kernel quota"})
    (jp_root_dir / "sub").mkdir()
    code, message = await start_error(jp_fetch, "tfenv-py", "sub/train.ipynb")
    assert (code, message) == (429, QUOTA)
    kid = kernel_id_of(broker)
    [(_, _, body, auth)] = starts(broker)
    assert auth == f"token {TOKEN}"
    # Only what the contract names; the notebook folder as in local mode; no secrets.
    assert set(body) == {"kernel_id", "environment", "cwd", "mount", "env", "server"}
    assert body["server"] == os.environ.get("JUPYTERHUB_SERVER_NAME", "")
    assert body["kernel_id"] == kid and body["environment"] == "py"
    assert body["mount"] == os.path.realpath(jp_root_dir)
    assert body["cwd"] == os.path.realpath(jp_root_dir / "sub")
    assert set(body["env"]) <= {"LANG", "LC_ALL", "LC_CTYPE", "TZ", "JPY_SESSION_NAME"}
    assert TOKEN not in json.dumps(body)
    # The connection file was written into the broker's folder, and the failed start
    # was deleted at the broker (container and folder).
    folder = Path(broker.runtime_root) / kid.replace("-", "")[:12]
    runtime = json.loads((folder / "kernel.json").read_text())
    assert runtime["transport"] == "ipc"
    assert broker.calls("DELETE", f"/api/kernels/{kid}")
    assert kid not in jp_serverapp.kernel_manager.list_kernel_ids()
    # The server never made a Docker client.
    assert jp_serverapp.web_app.settings["tfenv"]._client is None


async def test_policy_refusal_of_the_runtime_folder(jp_fetch, broker):
    broker.start()
    refusal = "Environment 'py' is only for members of tfenv-gpu."
    broker.answers[("POST", "runtime")] = (403, {"message": refusal, "reason": "x"})
    assert await start_error(jp_fetch, "tfenv-py") == (403, refusal)
    assert not starts(broker)


async def test_early_exit_reports_the_logs_and_deletes(jp_fetch, broker):
    broker.start()
    broker.answers[("POST", "kernels")] = (201, {"kernel_id": "k", "container_id": "c" * 64})
    broker.answers[("GET", "kernel")] = (
        200,
        {"running": False, "status": "exited", "exit_code": 3, "oom_killed": False},
    )
    code, message = await start_error(jp_fetch, "tfenv-py")
    assert code == 500
    assert "exited with code 3 while starting" in message
    assert "boom: the kernel fell over" in message
    kid = kernel_id_of(broker)
    assert broker.calls("GET", f"/api/kernels/{kid}/logs")
    assert broker.calls("DELETE", f"/api/kernels/{kid}")


async def test_a_broker_that_does_not_answer(jp_fetch, broker):
    broker.socket.close()  # nothing listens there
    code, message = await start_error(jp_fetch, "tfenv-py")
    assert code == 503
    assert f"The tfenv broker at {broker.url} does not answer" in message
    assert "ask your JupyterHub admin" in message


@pytest.mark.parametrize("provisioner_extra", [{"transport": "tcp"}])
async def test_tcp_is_refused_in_broker_mode(jp_fetch, broker):
    broker.start()
    code, message = await start_error(jp_fetch, "tfenv-py")
    assert code == 400 and "IPC sockets only" in message
    assert not broker.requests


async def test_rest_api_in_broker_mode(jp_fetch, jp_serverapp, broker):
    broker.start()
    body = json.loads((await jp_fetch("tfenv", "environments")).body)
    status = {e["id"]: e["image_status"] for e in body["environments"]}
    assert status["py"] == {"present": True, "image_id": "sha256:abc", "size": 123}
    assert status["tf220"]["allowed"] is False
    # The Lab hides its Pull buttons and says who pulls instead.
    assert body["pulls"]["allowed"] is False
    assert body["pulls"]["message"] == PULL_BY_ADMIN.format(env="<environment>")
    image = json.loads((await jp_fetch("tfenv", "environments", "py", "image")).body)
    assert image["present"] is True and image["image_id"] == "sha256:abc"
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfenv", "environments", "py", "pull", method="POST", body="")
    assert info.value.code == 403
    assert json.loads(info.value.response.body)["message"] == PULL_BY_ADMIN.format(env="py")
    gpus = json.loads((await jp_fetch("tfenv", "gpus")).body)
    assert gpus["runtime"] is None and "state" in gpus
    assert jp_serverapp.web_app.settings["tfenv"]._client is None
    # Started: orphans are looked for through the broker (no Docker), and environments the broker
    # does not allow this user leave the kernel picker.
    await jp_serverapp.extension_manager.start_all_extensions()
    for _ in range(100):
        specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
        if "tfenv-tf220" not in specs:
            break
        await asyncio.sleep(0.1)
    assert "tfenv-tf220" not in specs and "tfenv-py" in specs
    assert jp_serverapp.web_app.settings["tfenv"]._client is None


async def test_client_errors(broker):
    broker.start()
    client = BrokerClient(broker.url, TOKEN)
    with pytest.raises(BrokerError) as info:
        await client.kernel("nope")
    assert info.value.http_status == 404 and info.value.message == "no such kernel of yours"
    await client.delete_kernel("nope")  # already gone: no error
    no_token = BrokerClient(broker.url, "")
    with pytest.raises(BrokerError, match="No token for the tfenv broker"):
        await no_token.environments()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(BrokerUnavailableError) as down:
        await BrokerClient(f"http://127.0.0.1:{port}", TOKEN).environments()
    assert down.value.http_status == 503


async def test_a_cancelled_start_deletes_the_kernel_at_the_broker(jp_serverapp, broker):
    broker.start()
    broker.delays[("POST", "kernels")] = 1.0
    broker.answers[("POST", "kernels")] = (201, {"kernel_id": "k", "container_id": "c" * 64})
    km = jp_serverapp.kernel_manager
    start = asyncio.ensure_future(km.start_kernel(kernel_name="tfenv-py"))
    for _ in range(100):
        if starts(broker):
            break
        await asyncio.sleep(0.05)
    assert starts(broker), "the start never reached the broker"
    start.cancel()
    with pytest.raises(asyncio.CancelledError):
        await start
    kid = kernel_id_of(broker)
    # The broker's answer came after the cancel: the kernel it made is deleted anyway,
    # after that answer (not while the broker was still making it).
    [delete] = [i for i, r in enumerate(broker.requests) if r[0] == "DELETE"]
    posted = broker.requests.index(starts(broker)[0])
    assert broker.arrived[delete] - broker.arrived[posted] >= 0.9
    assert kid not in km.list_kernel_ids()
