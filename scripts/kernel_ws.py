"""Run code on a Jupyter kernel over jupyter_server's kernel websocket, as JupyterLab does.

Used by ``scripts/demo.sh --check`` and the JupyterHub test harness: one
``execute_request`` on ``/api/kernels/<id>/channels``, collecting stdout, stderr, the
error and the reply until the kernel is idle again. tornado runs in a worker thread, so
that no caller's event loop is involved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any


@dataclass
class Execution:
    """What one execute_request produced."""

    status: str
    stdout: str
    stderr: str
    error: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def __str__(self) -> str:
        text = f"status={self.status}\nstdout={self.stdout!r}\nstderr={self.stderr!r}"
        if self.error:
            text += "\n" + "\n".join(self.error.get("traceback", []))
        return text


def _message(msg_type: str, content: dict[str, Any], session: str, channel: str) -> dict[str, Any]:
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "tfenv",
            "session": session,
            "date": datetime.now(timezone.utc).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": channel,
        "buffers": [],
    }


def _execute_request(code: str) -> dict[str, Any]:
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    return _message("execute_request", content, uuid.uuid4().hex, "shell")


async def _execute(
    url: str,
    token: str,
    code: str,
    timeout: float,
    on_busy: Callable[[], None] | None,
) -> Execution:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest(url, headers={"Authorization": f"token {token}"}, request_timeout=timeout)
    conn = await asyncio.wait_for(websocket_connect(request), timeout)
    try:
        msg = _execute_request(code)
        msg_id = msg["header"]["msg_id"]
        await conn.write_message(json.dumps(msg))
        deadline = time.monotonic() + timeout
        stdout: list[str] = []
        stderr: list[str] = []
        error: dict[str, Any] | None = None
        reply: dict[str, Any] | None = None
        idle = False
        busy_seen = False
        while reply is None or not idle:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete reply within {timeout} s; stdout so far: {stdout}")
            raw = await asyncio.wait_for(conn.read_message(), left)
            if raw is None:
                raise ConnectionError(
                    f"the kernel websocket closed ({conn.close_code} {conn.close_reason})"
                )
            data = json.loads(raw)
            if data.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = data["header"]["msg_type"]
            content = data["content"]
            if kind == "stream":
                (stdout if content["name"] == "stdout" else stderr).append(content["text"])
            elif kind == "error":
                error = content
            elif kind == "status":
                if content["execution_state"] == "busy" and not busy_seen:
                    busy_seen = True
                    if on_busy is not None:
                        await asyncio.to_thread(on_busy)
                elif content["execution_state"] == "idle":
                    idle = True
            elif kind == "execute_reply":
                reply = content
                if content.get("status") == "error" and error is None:
                    error = content
        return Execution(reply["status"], "".join(stdout), "".join(stderr), error)
    finally:
        conn.close()


def execute(
    ws_url: str,
    token: str,
    code: str,
    timeout: float = 120.0,
    on_busy: Callable[[], None] | None = None,
) -> Execution:
    """Run ``code`` on the kernel behind ``ws_url`` (a /channels URL); ``on_busy`` is
    called (in a thread) once the kernel reports busy with this request."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _execute(ws_url, token, code, timeout, on_busy)).result()


async def _start_and_watch(
    url: str, token: str, code: str | None, until: Callable[[str], bool], timeout: float
) -> str:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest(url, headers={"Authorization": f"token {token}"}, request_timeout=timeout)
    conn = await asyncio.wait_for(websocket_connect(request), timeout)
    try:
        if code is not None:
            await conn.write_message(json.dumps(_execute_request(code)))
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while not until("".join(seen)):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"not seen within {timeout} s; stdout so far: {seen}")
            raw = await asyncio.wait_for(conn.read_message(), left)
            if raw is None:
                raise ConnectionError(f"the kernel websocket closed ({conn.close_code})")
            data = json.loads(raw)
            if data["header"]["msg_type"] == "stream" and data["content"]["name"] == "stdout":
                seen.append(data["content"]["text"])
        return "".join(seen)
    finally:
        conn.close()


def watch_output(
    ws_url: str,
    token: str,
    until: Callable[[str], bool],
    *,
    code: str | None = None,
    timeout: float = 120.0,
) -> str:
    """Send ``code`` (if any) without waiting for its reply, then collect the kernel's
    stdout (of any request, also one sent by an earlier connection) until ``until(text)``
    is true; the websocket is then closed and the code goes on running."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(
            asyncio.run, _start_and_watch(ws_url, token, code, until, timeout)
        ).result()
