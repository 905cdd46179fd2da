"""What the Docker engine says of itself (``docker info``): reachable, version, live-restore.

One function for ``jupyter tfenv check`` (``cli_checks.py``) and the panel's admin line
(``GET /tfenv/environments`` → ``engine``, issue 24): with live-restore off, an engine
restart or upgrade stops every kernel container. Blocking: async callers run it in a thread.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import docker
import requests
from docker.errors import DockerException

from jupyter_tfenv.backends.docker.engine import connect
from jupyter_tfenv.errors import TFEnvError, engine_unreachable, unreachable_error

DEFAULT_HOST = "unix:///var/run/docker.sock"


def public_host(host: str) -> str:
    """``host`` without the user and password a URL may carry (``tcp://u:p@h:2376`` →
    ``tcp://h:2376``): the address is shown in the panel and printed by ``check``."""
    try:
        parts = urlsplit(host)
    except ValueError:
        return host.rpartition("@")[2] if "@" in host else host
    if "@" not in parts.netloc:
        return host
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def engine_state(
    client: docker.DockerClient | None = None, *, timeout: float = 60.0
) -> tuple[dict[str, Any], docker.DockerClient | None]:
    """``{host, reachable, live_restore, version, error}`` of the engine at
    ``$DOCKER_HOST`` (``client``'s, when given, else a new pinged one), and the client
    when the engine answered. Never raises for an engine that cannot be asked."""
    host = public_host(os.environ.get("DOCKER_HOST", DEFAULT_HOST))
    state: dict[str, Any] = {
        "host": host,
        "reachable": False,
        "live_restore": None,
        "version": None,
        "error": None,
    }
    try:
        if client is None:
            client = connect(timeout)
        info = client.info()
    except TFEnvError as err:
        state["error"] = str(err)
        return state, None
    except (DockerException, requests.exceptions.RequestException) as err:
        state["error"] = (
            unreachable_error(err, host).message
            if engine_unreachable(err)
            else f"The Docker engine at {host} did not say how it runs (docker info): {err}"
        )
        return state, None
    state.update(
        reachable=True,
        live_restore=bool(info.get("LiveRestoreEnabled")),
        version=info.get("ServerVersion"),
    )
    return state, client


def panel_engine(state: dict[str, Any]) -> dict[str, Any] | None:
    """What the REST reply says of the engine: ``{host, version, live_restore}``, or None
    when it did not answer (the panel's engine-unreachable state says that already)."""
    if not state.get("reachable"):
        return None
    return {
        "host": state["host"],
        "version": state["version"],
        "live_restore": state["live_restore"],
    }
