"""The TensorBoard proxy over TCP (a Kubernetes TensorBoard pod at ``<pod ip>:6006``,
issue 23 item 4): ``socket_of`` answers ``tcp:<ip>:<port>`` instead of a socket path.

A stand-in TensorBoard listens on a real loopback TCP port and answers in two chunks; a
tornado app forwards to it with :class:`TensorBoardProxy`, as the server's handler does.
What reaches the stand-in is checked (the path without the prefix, no token, no
Authorization), and a port nobody listens on is the proxy's clear 'did not answer'.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from tornado import httpserver, netutil, web
from tornado.httpclient import AsyncHTTPClient

from jupyter_tfenv.tensorboard.proxy import (
    TensorBoardProxy,
    TensorBoardUnreachable,
    address_of,
    tcp_target,
)


def test_address_of_a_target() -> None:
    assert address_of("/run/tb/tb.sock") == (socket.AF_UNIX, "/run/tb/tb.sock")
    assert address_of(tcp_target("10.1.2.3", 6006)) == (socket.AF_INET, ("10.1.2.3", 6006))
    assert tcp_target("fd00::7", 6006) == "tcp:[fd00::7]:6006"
    assert address_of(tcp_target("fd00::7", 6006)) == (socket.AF_INET6, ("fd00::7", 6006, 0, 0))
    for bad in ("tcp:example.org:6006", "tcp:10.1.2.3:http", "tcp:10.1.2.3"):
        with pytest.raises(OSError, match="not a TensorBoard address"):
            address_of(bad)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def through_proxy(target: str, path: str, headers: dict[str, str]) -> Any:
    proxy = TensorBoardProxy(lambda name: target)

    class Forward(web.RequestHandler):
        async def get(self, rest: str) -> None:
            try:
                await proxy.forward(self, "env-tf220", "/" + rest)
            except TensorBoardUnreachable as err:
                self.set_status(502)
                self.finish(err.message)

    sockets = netutil.bind_sockets(0, "127.0.0.1")
    server = httpserver.HTTPServer(web.Application([(r"/tb/(.*)", Forward)]))
    server.add_sockets(sockets)
    port = sockets[0].getsockname()[1]
    client = AsyncHTTPClient(force_instance=True)
    try:
        return await client.fetch(
            f"http://127.0.0.1:{port}/tb/{path}",
            headers=headers,
            raise_error=False,
            request_timeout=60,
        )
    finally:
        client.close()
        server.stop()
        proxy.close()


def test_the_proxy_reaches_a_tensorboard_over_tcp() -> None:
    seen: dict[str, Any] = {}

    async def stand_in(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen["request_line"], *lines = head.strip().split("\r\n")
        seen["headers"] = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Transfer-Encoding: chunked\r\n\r\n4\r\n["ru\r\n6\r\nn1/tra\r\n'
        )
        await writer.drain()
        writer.write(b'4\r\nin"]\r\n0\r\n\r\n')
        await writer.drain()
        writer.close()

    async def main() -> Any:
        upstream = await asyncio.start_server(stand_in, "127.0.0.1", 0)
        port = upstream.sockets[0].getsockname()[1]
        try:
            return await through_proxy(
                tcp_target("127.0.0.1", port),
                "data/runs?token=secret&experiment=1",
                {"Authorization": "token secret"},
            )
        finally:
            upstream.close()

    response = asyncio.run(main())
    assert response.code == 200, f"the proxy did not reach the TCP TensorBoard: {response.body!r}"
    assert response.body == b'["run1/train"]'
    assert seen["request_line"] == "GET /data/runs?experiment=1 HTTP/1.1", seen
    assert "authorization" not in seen["headers"], "the Jupyter token went to TensorBoard"


def test_a_pod_that_does_not_answer_is_said() -> None:
    response = asyncio.run(through_proxy(tcp_target("127.0.0.1", free_port()), "data/runs", {}))
    assert response.code == 502
    assert b"did not answer" in response.body and b"open it again" in response.body


def test_the_server_proxies_a_pods_address_and_refuses_anything_else() -> None:
    """Broker mode on Kubernetes: the broker's answer names ``address`` (the pod IP over
    TCP), which the server gives the proxy; an address that is no IP is refused (502)."""
    from jupyter_tfenv.backends.broker import BrokerClient
    from jupyter_tfenv.tensorboard.brokered import BrokeredTensorBoards, TensorBoardSocketRefused

    boards = BrokeredTensorBoards(BrokerClient("http://127.0.0.1:9/", "t"))
    data = {"name": "env-tf220", "view": "environment", "environment": "tf220", "state": "running"}
    boards._keep({**data, "address": "tcp:10.42.0.7:6006"})
    assert boards.ready_socket("env-tf220") == "tcp:10.42.0.7:6006"
    boards._keep({**data, "address": "tcp:metadata.internal:80"})
    with pytest.raises(TensorBoardSocketRefused, match="not a TensorBoard address") as err:
        boards.ready_socket("env-tf220")
    assert err.value.http_status == 502
    boards._keep({**data, "address": "/run/other-user/tb.sock"})
    with pytest.raises(TensorBoardSocketRefused, match="no tcp:<pod ip>:<port>"):
        boards.ready_socket("env-tf220")
