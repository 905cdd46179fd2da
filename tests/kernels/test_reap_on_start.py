"""A server that starts removes the kernel containers a dead server left behind."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from traitlets.config import Config

from jupyter_tfenv.backends.docker.engine import SERVER_HOST
from jupyter_tfenv.core.labels import (
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_SERVER_HOST,
    LABEL_SERVER_PID,
    LABEL_SERVER_START,
)
from tests.conftest import OWNER, PY_IMAGE

pytestmark = pytest.mark.docker


@pytest.fixture
def orphan(images: docker.DockerClient) -> Iterator[Any]:
    dead = subprocess.Popen(["true"])
    dead.wait()
    container = images.containers.run(
        PY_IMAGE,
        ["sleep", "600"],
        detach=True,
        network_mode="none",
        labels={
            LABEL_OWNER: OWNER,
            LABEL_KERNEL_ID: "left-behind",
            LABEL_SERVER_HOST: SERVER_HOST,
            LABEL_SERVER_PID: str(dead.pid),
            LABEL_SERVER_START: "1",
        },
    )
    yield container
    with contextlib.suppress(docker.errors.NotFound):
        container.remove(force=True)


@pytest.fixture
def jp_server_config(jp_server_config: Config, orphan: Any) -> Config:
    jp_server_config.TFEnvApp.reap_orphans_on_start = True
    return jp_server_config


async def test_orphans_are_removed_when_the_server_starts(jp_serverapp, orphan, docker_engine):
    # What a starting server runs once its loop is up (pytest-jupyter does not start the
    # loop the way `jupyter lab` does).
    await jp_serverapp.extension_manager.start_all_extensions()
    (tfenv_app,) = jp_serverapp.extension_manager.extension_apps["jupyter_tfenv"]
    await asyncio.wait_for(tfenv_app._reap_task, 60)
    with pytest.raises(docker.errors.NotFound):
        docker_engine.containers.get(orphan.id)
