"""The proxy against a stand-in TensorBoard on a real Unix socket, through the real server.

The stand-in answers in two chunks and sends the second only once the browser side has
received the first: a proxy that buffered the answer would never deliver it (the request
would run into its timeout). It also records what reached it: the path without the
server's prefix, no Jupyter token, no cookie or Authorization header.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Any

import pytest

from jupyter_tfenv.tensorboard.container import SOCKET_NAME
from jupyter_tfenv.tensorboard.manager import TensorBoard

pytestmark = pytest.mark.docker  # the server fixture's catalog needs the test images


async def test_answers_stream_and_credentials_stay_behind(jp_fetch, jp_serverapp):
    seen: dict[str, Any] = {}
    first_arrived = asyncio.Event()

    async def stand_in(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        seen["request_line"], *lines = head.strip().split("\r\n")
        seen["headers"] = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            b"X-From-TensorBoard: yes\r\n\r\n5\r\nfirst\r\n"
        )
        await writer.drain()
        await asyncio.wait_for(first_arrived.wait(), 60)
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    folder = tempfile.mkdtemp(prefix="tbp-", dir="/tmp")
    server = await asyncio.start_unix_server(stand_in, path=os.path.join(folder, SOCKET_NAME))
    manager = jp_serverapp.web_app.settings["tfenv_tensorboards"]
    board = TensorBoard("env-tf220", "environment", "tf220", "x", folder, state="running")
    manager._boards[board.name] = board
    chunks: list[bytes] = []

    def on_chunk(chunk: bytes) -> None:
        chunks.append(chunk)
        if b"first" in b"".join(chunks):
            first_arrived.set()

    try:
        before = board.last_activity
        response = await jp_fetch(
            "tfenv",
            "tensorboard",
            "env-tf220",
            "data",
            "runs",
            params={"token": jp_serverapp.identity_provider.token, "experiment": "1"},
            headers={"Cookie": "session=secret"},
            streaming_callback=on_chunk,
            request_timeout=120,
        )
    finally:
        del manager._boards[board.name]
        server.close()
    assert response.code == 200 and b"".join(chunks) == b"firstsecond"
    assert response.headers["X-From-TensorBoard"] == "yes"
    assert seen["request_line"] == "GET /data/runs?experiment=1 HTTP/1.1", seen
    assert "authorization" not in seen["headers"] and "cookie" not in seen["headers"]
    assert board.last_activity >= before  # a proxied request is activity
    os.unlink(os.path.join(folder, SOCKET_NAME))
    os.rmdir(folder)
