"""After an automatic restart, a page's kernel websocket reaches the new kernel.

jupyter's restarter starts a kernel again when its process dies (``os._exit(1)`` in a
cell, a crash, an engine restart). The server then sends a ``restarting`` status on every
kernel websocket; JupyterLab closes its websocket and opens it again with the *same*
``session_id``. jupyter_server answers that reconnection from the ZeroMQ channels it kept
for that session ("Restoring connection"): it makes new ones only when the kernel's
ports changed. A tfenv kernel's IPC sockets have the same paths after a restart, so the
kept channels, connected to the dead kernel, would be reused: the status stayed
"starting" and nothing ran until the page was reloaded (docs/operations.md).

Real parts: the in-process jupyter_server with the tfenv extension, a real kernel
container, tornado's websocket client speaking JupyterLab's JSON protocol.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from tests.conftest import kernel_containers, start_kernel

pytestmark = pytest.mark.docker

#: Seconds to wait for one expected message (the restart starts a container).
WAIT = 90.0


def message(msg_type: str, content: dict[str, Any], session: str) -> dict[str, Any]:
    """A shell message as JupyterLab writes it on the websocket."""
    return {
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "username": "tfenv-test",
            "session": session,
            "date": datetime.now(timezone.utc).isoformat(),
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "channel": "shell",
        "buffers": [],
    }


def execute(code: str, session: str) -> dict[str, Any]:
    return message(
        "execute_request",
        {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
        session,
    )


class Page:
    """A kernel websocket read as JupyterLab reads it: its kernel status is the last IOPub
    ``status`` whose parent is not one of the server's untracked message types."""

    def __init__(self, ws: Any, untracked: list[str]) -> None:
        self.ws = ws
        self.untracked = set(untracked)
        self.status = "unknown"
        self.seen: list[str] = []

    async def read_until(
        self, wanted: Any, what: str, timeout: float | None = None
    ) -> dict[str, Any] | None:
        """The first message for which ``wanted(msg)`` is true (None when ``timeout``
        seconds pass first; without ``timeout``, WAIT seconds fail the test)."""
        deadline = time.monotonic() + (WAIT if timeout is None else timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0 and timeout is not None:
                return None
            if left <= 0:
                raise AssertionError(
                    f"No {what} on the kernel websocket within {WAIT:.0f} s; the page's "
                    f"kernel status is {self.status!r}. Messages read (channel:type state "
                    f"<parent>): {self.seen[-25:]}. The page does not get back to the "
                    "restarted kernel: see jupyter_tfenv/server/kernel_ws.py."
                )
            try:
                raw = await asyncio.wait_for(self.ws.read_message(), left)
            except asyncio.TimeoutError:
                continue
            if raw is None:
                raise AssertionError(
                    f"The kernel websocket closed ({self.ws.close_code} "
                    f"{self.ws.close_reason}) while waiting for {what}; read: {self.seen[-25:]}"
                )
            msg = json.loads(raw)
            kind = msg["header"]["msg_type"]
            parent = (msg.get("parent_header") or {}).get("msg_type")
            state = msg.get("content", {}).get("execution_state", "")
            self.seen.append(f"{msg.get('channel')}:{kind} {state} <{parent or ''}>")
            if kind == "status" and parent not in self.untracked:
                self.status = state
            if wanted(msg):
                return dict(msg)

    async def until_status(self, state: str, what: str) -> None:
        if self.status != state:
            await self.read_until(lambda _: self.status == state, what)


def replies_to(request: dict[str, Any], msg_type: str) -> Any:
    msg_id = request["header"]["msg_id"]
    return lambda msg: (
        msg["header"]["msg_type"] == msg_type
        and msg.get("parent_header", {}).get("msg_id") == msg_id
    )


async def server_state(jp_fetch: Any, kernel_id: str) -> str:
    """The kernel's execution_state in ``GET /api/kernels/<id>``, once it is not 'starting'
    (the server's activity stream reads IOPub beside the page's; up to 10 s)."""
    state = "starting"
    for _ in range(40):
        response = await jp_fetch("api", "kernels", kernel_id)
        state = json.loads(response.body)["execution_state"]
        if state not in ("starting", "busy"):
            break
        await asyncio.sleep(0.25)
    return str(state)


async def run_on(page: Page, code: str, session: str) -> tuple[dict[str, Any], str]:
    """Run ``code``; its execute_reply and stdout (all of it: IOPub's stream may come after
    the shell's reply, up to the request's own 'idle'), once the page's status is idle."""
    request = execute(code, session)
    await page.ws.write_message(json.dumps(request))
    out: list[str] = []
    replies: list[dict[str, Any]] = []
    idle: list[bool] = []

    def done(msg: dict[str, Any]) -> bool:
        mine = msg.get("parent_header", {}).get("msg_id") == request["header"]["msg_id"]
        kind = msg["header"]["msg_type"]
        if mine and kind == "stream":
            out.append(msg["content"]["text"])
        elif mine and kind == "execute_reply":
            replies.append(msg)
        elif mine and kind == "status" and msg["content"].get("execution_state") == "idle":
            idle.append(True)  # IOPub's idle and the shell's reply come in either order
        return bool(replies) and bool(idle)

    await page.read_until(done, f"reply to {code!r} and its 'idle'")
    await page.until_status("idle", f"'idle' status after {code!r}")
    return replies[0], "".join(out)


async def test_reconnect_with_same_session_reaches_the_restarted_kernel(
    jp_fetch, jp_ws_fetch, jp_serverapp, docker_engine
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    untracked = list(jp_serverapp.kernel_manager.untracked_message_types)
    session = uuid.uuid4().hex
    params = {"session_id": session}
    try:
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", params=params)
        page = Page(ws, untracked)
        reply, _ = await run_on(page, "x = 41", session)
        assert reply["content"]["status"] == "ok", reply["content"]
        (first,) = kernel_containers(docker_engine, kernel_id)

        # The kernel process dies; jupyter's restarter starts it again in a new container.
        await ws.write_message(json.dumps(execute("import os; os._exit(1)", session)))
        await page.read_until(
            lambda msg: (
                msg["header"]["msg_type"] == "status"
                and msg["content"].get("execution_state") == "restarting"
            ),
            "'restarting' status",
        )
        # The dead process's last state was 'busy' (the cell that exited). The server's
        # activity stream sets it back only if it catches the new kernel's 'starting'
        # broadcast, which it missed 1 run in 3 here: make that the case every run (once
        # the broadcast, if it comes, has been read).
        km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        for _ in range(40):
            if km.execution_state != "busy":
                break
            await asyncio.sleep(0.25)
        km.execution_state = "busy"
        # As JupyterLab does: it reconnects at once, with the same session id, asks for
        # kernel_info, and waits for the kernel status to become idle.
        ws.close()
        ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels", params=params)
        page = Page(ws, untracked)
        info = message("kernel_info_request", {}, session)
        await ws.write_message(json.dumps(info))
        await page.read_until(replies_to(info, "kernel_info_reply"), "kernel_info_reply")
        await page.until_status("idle", "kernel status 'idle' after the restart")
        # The kernel list agrees (a 'busy' kernel is not nudged, and not culled as idle).
        listed = await server_state(jp_fetch, kernel_id)
        assert listed == "idle", f"GET /api/kernels says {listed!r} after the restart"

        # The first request after the reconnection, with no kernel_info dance first: its
        # output arrives (a connection that was not nudged lost it).
        reply, out = await run_on(page, "print('x' in globals())", session)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert out.strip() == "False", f"the restarted kernel should be a new one: {out!r}"
        ws.close()
        (second,) = kernel_containers(docker_engine, kernel_id)
        assert second.id != first.id, "the restarted kernel should run in a new container"
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert kernel_containers(docker_engine, kernel_id) == []
