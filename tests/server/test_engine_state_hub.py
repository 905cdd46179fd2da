"""In a JupyterHub (broker mode) ``GET /tfenv/environments`` says nothing of the engine.

The main test engine runs without live-restore, so a server that asked it would say
``live_restore: false``; a server in broker mode asks no engine (server/sources.py
``BrokerSource.engine``: the broker host's admin checks it, hub users cannot act on it).
The broker here does not answer at all: the listing still comes, with ``engine`` null.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.testing import bind_unused_port
from traitlets.config import Config

pytestmark = pytest.mark.docker


@pytest.fixture
def jp_server_config(jp_server_config: Config) -> Config:
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there: a broker that is away
    jp_server_config.DockerKernelProvisioner.broker_url = f"http://127.0.0.1:{port}/"
    jp_server_config.DockerKernelProvisioner.broker_token = "token-of-a-hub-user"
    return jp_server_config


async def test_a_hub_users_server_gives_no_engine(jp_fetch: Any) -> None:
    response = await jp_fetch("tfenv", "environments")
    assert response.code == 200
    reply = json.loads(response.body)
    assert reply["engine"] is None
    assert reply["environments"]
    assert reply["pulls"]["allowed"] is False  # broker mode indeed
