"""``GET /tfenv/environments`` → ``engine``: the engine's live-restore for the panel (issue 24).

Real engines, no mock: the main test engine runs without live-restore (Docker's default),
a dockerd of this module's own (tests/support/gpu_engine.py's TestEngine) with it; the
server is pointed at either through DOCKER_HOST and must say what ``docker info`` says.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from traitlets.config import Config

from jupyter_tfenv.backends.docker.engine_info import panel_engine, public_host
from jupyter_tfenv.server.service import TFEnvService
from tests.support.gpu_engine import TestEngine

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def live_restore_engine(images: docker.DockerClient) -> Iterator[TestEngine]:
    """A dockerd started with ``--live-restore`` (no images needed: only its info is read)."""
    engine = TestEngine(live_restore=True)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


@pytest.fixture(params=["main", "live-restore"])
def engine_under_test(request: pytest.FixtureRequest) -> TestEngine | None:
    """None: the main test engine; else the live-restore one."""
    if request.param == "main":
        return None
    engine: TestEngine = request.getfixturevalue("live_restore_engine")
    return engine


@pytest.fixture
def jp_server_config(
    jp_server_config: Config,
    engine_under_test: TestEngine | None,
    monkeypatch: pytest.MonkeyPatch,
) -> Config:
    if engine_under_test is not None:
        monkeypatch.setenv("DOCKER_HOST", engine_under_test.url)
    return jp_server_config


async def environments(jp_fetch: Any) -> dict[str, Any]:
    response = await jp_fetch("tfenv", "environments")
    assert response.code == 200
    reply: dict[str, Any] = json.loads(response.body)
    return reply


async def test_the_reply_says_the_engines_live_restore(
    jp_fetch: Any, engine_under_test: TestEngine | None, docker_engine: docker.DockerClient
) -> None:
    client = engine_under_test.client if engine_under_test is not None else docker_engine
    assert client is not None
    info = client.info()
    reply = await environments(jp_fetch)
    assert reply["engine"] == {
        "host": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
        "version": info["ServerVersion"],
        "live_restore": info["LiveRestoreEnabled"],
    }
    # The two engines differ: the main one runs with Docker's default, the other not.
    assert info["LiveRestoreEnabled"] is (engine_under_test is not None)


async def test_the_engine_is_read_once_then_kept(
    jp_fetch: Any,
    engine_under_test: TestEngine | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The panel polls; ``docker info`` is not asked on every poll. An engine that went
    away is null (never an error), and is read again once it answers."""
    if engine_under_test is None:
        pytest.skip("the main engine is not stopped by tests")
    monkeypatch.setattr(TFEnvService, "ENGINE_TTL", 3600.0)
    monkeypatch.setattr(TFEnvService, "ENGINE_AWAY_TTL", 0.0)
    first = (await environments(jp_fetch))["engine"]
    assert first["live_restore"] is True
    engine_under_test.stop_daemon()
    try:
        # Kept: the answer of the engine that went away is still the one read before.
        assert (await environments(jp_fetch))["engine"] == first
        monkeypatch.setattr(TFEnvService, "ENGINE_TTL", 0.0)
        reply = await environments(jp_fetch)
        assert reply["engine"] is None
        assert reply["environments"]  # the catalog is still listed
    finally:
        engine_under_test.start()
    assert (await environments(jp_fetch))["engine"] == first


def test_the_host_shown_has_no_credentials() -> None:
    assert public_host("tcp://admin:s3cret@docker.example:2376") == "tcp://docker.example:2376"
    assert public_host("ssh://admin@gpu-host") == "ssh://gpu-host"
    assert public_host("unix:///var/run/docker.sock") == "unix:///var/run/docker.sock"
    assert public_host("tcp://10.0.0.5:2375") == "tcp://10.0.0.5:2375"


def test_an_engine_that_did_not_answer_is_null() -> None:
    state = {"host": "unix:///x", "reachable": False, "live_restore": None, "version": None}
    assert panel_engine(state) is None
    state.update(reachable=True, live_restore=False, version="20.10.24")
    assert panel_engine(state) == {
        "host": "unix:///x",
        "version": "20.10.24",
        "live_restore": False,
    }
