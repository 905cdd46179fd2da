"""An adopted kernel keeps the resources its start chose (docs/choices.md).

A real server starts a notebook's kernel with a non-default choice, is killed with
``keep_kernels_on_stop``; the next server adopts the running container and reads the
choice back from its label (``org.jupyter.tfenv.choices``), so that a restart of the
kernel gets the chosen memory again, not the entry's default (docker inspect).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from jupyter_tfenv.backends.docker.engine import list_containers
from jupyter_tfenv.core.labels import LABEL_CHOICES
from tests.conftest import KERNEL_GID, KERNEL_UID, PY_IMAGE
from tests.lifecycle.test_adopt import TOKEN, listed
from tests.support.server_process import ServerProcess, ServerStartError, start_tfenv_server

pytestmark = [pytest.mark.docker, pytest.mark.slow]

#: Its own owner: test_adopt's fixture removes every container of its owner.
OWNER = "tfenv-adopt-choices-test"

MIB = 1024**2
SIZED = {
    "id": "sized",
    "image": PY_IMAGE,
    "display_name": "Sized (test)",
    "resources": {"memory": "256m"},
    "choices": {"memory": ["256m", "512m"]},
}


def notebook(choice: dict[str, Any] | None) -> dict[str, Any]:
    tfenv = {"choices": {"environment": "sized", "values": choice}} if choice else {}
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "tfenv-sized", "display_name": "Sized (test)"}}
        | ({"tfenv": tfenv} if tfenv else {}),
        "cells": [],
    }


def containers(client: docker.DockerClient) -> list[Any]:
    return list_containers(client, [f"org.jupyter.tfenv.owner={OWNER}"])


def memory_of(client: docker.DockerClient) -> int:
    found = containers(client)
    assert len(found) == 1, f"expected the kernel's one container: {[c.name for c in found]}"
    return int(found[0].attrs["HostConfig"]["Memory"])


class Servers:
    """Servers started in turn on one notebook folder, catalog and runtime root."""

    def __init__(self, base: Path, runtime_root: str) -> None:
        self.base, self.runtime_root = base, runtime_root
        self.notebooks = base / "notebooks"
        self.notebooks.mkdir()
        os.chown(self.notebooks, KERNEL_UID, KERNEL_GID)
        self.catalog = base / "catalog.yaml"
        self.catalog.write_text(yaml.safe_dump({"version": 1, "environments": [SIZED]}))
        self.started: list[ServerProcess] = []

    def start(self, *, reap: bool = False) -> ServerProcess:
        try:
            server = start_tfenv_server(
                self.base / f"server{len(self.started)}",
                token=TOKEN,
                catalog=self.catalog,
                root_dir=self.notebooks,
                kernel_uid=KERNEL_UID,
                kernel_gid=KERNEL_GID,
                owner=OWNER,
                runtime_root=self.runtime_root,
                name=f"server{len(self.started)}",
                extra_args=["--TFEnvApp.keep_kernels_on_stop=all"],
                reap_orphans=reap,
            )
        except ServerStartError as err:
            pytest.fail(str(err))
        self.started.append(server)
        return server


@pytest.fixture
def servers(images: docker.DockerClient, tmp_path: Path) -> Iterator[Servers]:
    runtime_root = tempfile.mkdtemp(prefix="tfac-", dir="/tmp")  # short: IPC socket paths
    os.chmod(runtime_root, 0o711)
    here = Servers(tmp_path, runtime_root)
    try:
        yield here
    finally:
        for server in here.started:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(30)
        for container in containers(images):
            container.remove(force=True)
        subprocess.run(["rm", "-rf", runtime_root], check=False)


def test_a_restart_of_an_adopted_kernel_keeps_its_choice(
    servers: Servers, images: docker.DockerClient
) -> None:
    path = servers.notebooks / "sized.ipynb"
    path.write_text(json.dumps(notebook({"memory": "512m"})))
    first = servers.start()
    answer = first.request(
        "POST",
        "/api/sessions",
        json={
            "path": "sized.ipynb",
            "name": "sized.ipynb",
            "type": "notebook",
            "kernel": {"name": "tfenv-sized"},
        },
    )
    assert answer.status_code == 201, answer.text
    kernel_id = answer.json()["kernel"]["id"]
    assert memory_of(images) == 512 * MIB, "the notebook's recorded choice was not applied"
    (container,) = containers(images)
    assert json.loads(container.labels[LABEL_CHOICES]) == {"memory": "512m"}

    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(30)
    # From now on only the container's label knows the choice: the notebook records none.
    path.write_text(json.dumps(notebook(None)))
    second = servers.start(reap=True)
    deadline = time.monotonic() + 60
    while kernel_id not in listed(second) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert kernel_id in listed(second), f"not adopted: {second.log_tail()}"

    answer = second.request("POST", f"/api/kernels/{kernel_id}/restart")
    assert answer.status_code == 200, answer.text
    assert memory_of(images) == 512 * MIB, (
        f"the restart of the adopted kernel did not keep its choice (512m): {second.log_tail()}"
    )
    (container,) = containers(images)
    assert json.loads(container.labels[LABEL_CHOICES]) == {"memory": "512m"}
    answer = second.request("DELETE", f"/api/kernels/{kernel_id}")
    assert answer.status_code == 204, answer.text
    assert second.stop() == 0, second.log_tail()
    assert containers(images) == []
