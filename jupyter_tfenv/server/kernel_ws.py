"""The kernel websocket of a tfenv server: the page's kernel status after an automatic
restart (a kernel that crashed, ``os._exit(1)``, a Docker engine restart).

JupyterLab takes a kernel's status only from IOPub ``status`` messages whose parent is not
one of the server's ``untracked_message_types`` (kernel_info, debug, completion, ...). On
the server's ``restarting`` status it reconnects its websocket, with the same session id,
and sends only such untracked requests, so nothing it gets after the restart can set the
status back to idle: it stays *unknown*, or *starting* where the new kernel's ``starting``
broadcast reached it. A tfenv kernel's sockets keep their IPC paths across a restart, so
jupyter_server reuses the channels it kept for that session, and those catch the new
kernel's ``starting`` (docs/operations.md had "reload the page"). A plain ipykernel can
end the same way; JupyterLab's own fix would be to ask for a tracked status itself.

:class:`RestartStatusConnection` is jupyter_server's own connection with two additions,
each a server ``status`` message like the ``restarting`` one it already sends:

* a session that was told ``restarting`` gets ``idle`` once its reconnection reaches the
  new kernel (the kernel answered kernel_info; nothing of the page's runs yet);
* a kernel's ``starting`` broadcast (sent once, when its process starts) is followed by
  ``idle``: it has started, and a request it then takes says ``busy`` again;
* a restarted kernel is never left ``busy`` (:func:`forget_dead_busy`), so the page's
  reconnection is nudged and its IOPub reaches the new kernel before its first request.

``TFEnvApp`` installs it where the server uses jupyter_server's default connection class
(``ServerApp.kernel_websocket_connection_class``), never over one configured otherwise.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from jupyter_client.jsonutil import json_default
from jupyter_server.services.kernels.connection.base import serialize_msg_to_ws_v1
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

#: The kernel manager's attribute: the session keys told ``restarting``, not yet back.
TOLD_RESTARTING = "_tfenv_told_restarting"

V1 = "v1.kernel.websocket.jupyter.org"


def told_restarting(kernel_manager: Any) -> set[str]:
    """The session keys of a kernel that were told ``restarting`` (kept on its manager,
    which outlives the websocket connections)."""
    told = getattr(kernel_manager, TOLD_RESTARTING, None)
    if not isinstance(told, set):
        told = set()
        setattr(kernel_manager, TOLD_RESTARTING, told)
    return told


def forget_dead_busy(kernel_manager: Any) -> None:
    """A restarted kernel is not busy: ``busy`` is the dead process's last state (a cell
    that ran ``os._exit(1)``), kept where the server's activity stream missed the new
    kernel's ``starting`` broadcast. jupyter_server does not nudge a busy kernel's new
    connection, so a page reconnecting then lost the new kernel's first IOPub messages,
    and ``GET /api/kernels`` said busy until the next cell ran. ``starting`` is what
    jupyter_server itself sets at a start: its next status makes it ``idle``."""
    if getattr(kernel_manager, "execution_state", None) == "busy":
        kernel_manager.execution_state = "starting"


def is_starting_status(unpack: Any, msg: Any) -> bool:
    """Whether an IOPub message is a kernel's ``starting`` status: ``msg`` is the
    deserialized message (JSON protocol) or its parts after the signature (v1 protocol:
    header, parent header, metadata, content, buffers)."""
    if isinstance(msg, dict):
        header, content = msg.get("header") or {}, msg.get("content") or {}
    else:
        if len(msg) < 4:
            return False
        head = bytes(msg[0])
        if b"status" not in head:  # cheap: most IOPub messages are not
            return False
        header, content = unpack(head), unpack(bytes(msg[3]))
    return bool(
        header.get("msg_type") == "status"
        and isinstance(content, dict)
        and content.get("execution_state") == "starting"
    )


class RestartStatusConnection(ZMQChannelsWebsocketConnection):
    """jupyter_server's kernel websocket connection, telling the page ``idle`` after an
    automatic restart (see the module's docstring)."""

    def on_kernel_restarted(self) -> None:
        told_restarting(self.kernel_manager).add(self.session_key)
        forget_dead_busy(self.kernel_manager)
        super().on_kernel_restarted()

    def connect(self) -> asyncio.Future[None] | None:  # type: ignore[override]
        told = told_restarting(self.kernel_manager)
        restarted = self.session_key in told
        told.discard(self.session_key)
        if restarted:
            forget_dead_busy(self.kernel_manager)
        connected: asyncio.Future[None] | None = super().connect()
        if connected is not None and restarted:
            # After jupyter_server's own callbacks: the replay, then the subscription.
            connected.add_done_callback(lambda _: self.send_status("idle"))
        return connected

    def _on_zmq_reply(self, stream: Any, msg_list: Any) -> None:
        super()._on_zmq_reply(stream, msg_list)
        iopub = getattr(stream, "channel", None) == "iopub" and not stream.closed()
        if iopub and is_starting_status(self.session.unpack, msg_list):
            self.send_status("idle")

    def send_status(self, state: str) -> None:
        """Write a server ``status`` message (no parent) to the page, as jupyter_server's
        ``restarting`` one is written; nothing when the websocket is gone."""
        handler = self.websocket_handler
        if handler is None or handler.ws_connection is None or handler.ws_connection.is_closing():
            return
        msg = self.session.msg("status", {"execution_state": state})
        if self.subprotocol == V1:
            self.write_message(serialize_msg_to_ws_v1(msg, "iopub", self.session.pack), binary=True)
        else:
            msg["channel"] = "iopub"
            self.write_message(json.dumps(msg, default=json_default))


def install_connection_class(settings: dict[str, Any]) -> bool:
    """Make the web app's kernel websockets :class:`RestartStatusConnection` where they are
    jupyter_server's default class (not a gateway's, not one configured); True if so."""
    key = "kernel_websocket_connection_class"
    if settings.get(key) is not ZMQChannelsWebsocketConnection:
        return False
    settings[key] = RestartStatusConnection
    return True
