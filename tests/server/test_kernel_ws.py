"""The pure parts of jupyter_tfenv/server/kernel_ws.py: which IOPub messages are a
kernel's ``starting`` status, in both websocket protocols, and where the connection class
is installed. (Its effect, with a real server and kernel: tests/kernels/
test_auto_restart_reconnect.py and, in Chromium, tests/ui/test_auto_restart_ui.py.)"""

from __future__ import annotations

from typing import Any

from jupyter_client.session import Session
from jupyter_server.gateway.connections import GatewayWebSocketConnection
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

from jupyter_tfenv.server.kernel_ws import (
    RestartStatusConnection,
    install_connection_class,
    is_starting_status,
    told_restarting,
)


def wire_parts(session: Session, msg: dict[str, Any]) -> list[bytes]:
    """A message's parts as the v1 protocol handler gets them: after the signature."""
    parts = session.serialize(msg)
    return [bytes(p) for p in parts[2:]]  # [DELIM, signature, header, parent, meta, content]


def test_a_kernels_starting_status_is_recognised_in_both_protocols() -> None:
    session = Session()
    starting = session.msg("status", {"execution_state": "starting"})
    assert is_starting_status(session.unpack, starting)
    assert is_starting_status(session.unpack, wire_parts(session, starting))


def test_other_iopub_messages_are_not_a_start() -> None:
    session = Session()
    others = [
        session.msg("status", {"execution_state": "idle"}),
        session.msg("status", {"execution_state": "busy"}),
        session.msg("stream", {"name": "stdout", "text": "starting status"}),
        session.msg("execute_result", {"data": {"text/plain": "'starting'"}}),
    ]
    for msg in others:
        assert not is_starting_status(session.unpack, msg), msg["header"]["msg_type"]
        parts = wire_parts(session, msg)
        assert not is_starting_status(session.unpack, parts), msg["header"]["msg_type"]
    assert not is_starting_status(session.unpack, [b"{}"]), "a short message is not one"


def test_installed_only_over_jupyter_servers_default_class() -> None:
    settings: dict[str, Any] = {"kernel_websocket_connection_class": ZMQChannelsWebsocketConnection}
    assert install_connection_class(settings)
    assert settings["kernel_websocket_connection_class"] is RestartStatusConnection

    class Custom(ZMQChannelsWebsocketConnection):
        pass

    for configured in (GatewayWebSocketConnection, Custom):
        settings = {"kernel_websocket_connection_class": configured}
        assert not install_connection_class(settings), configured
        assert settings["kernel_websocket_connection_class"] is configured
    assert not install_connection_class({}), "no class set: jupyter_server's own choice"


def test_the_sessions_told_restarting_are_kept_on_the_kernel_manager() -> None:
    class Manager:
        pass

    km = Manager()
    told_restarting(km).add("k:s1")
    assert told_restarting(km) == {"k:s1"}
    assert told_restarting(Manager()) == set()
