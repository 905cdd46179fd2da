"""Resources chosen at launch through a real server and real containers (docs/choices.md).

POST /tfenv/choices checks a notebook's choice (400 with the allowed values) and keeps it
for the notebook's next kernel start; the container gets what was chosen (docker inspect:
HostConfig.Memory, NanoCpus, ShmSize), a restart keeps it, a start without a choice gets
the entry's defaults, and a notebook file's recorded choice is taken when nothing was sent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpclient import HTTPClientError

from tests.conftest import CATALOG, KERNEL_GID, KERNEL_UID, PY_IMAGE, kernel_containers

pytestmark = pytest.mark.docker

MIB = 1024**2
#: A CPU entry offering memory, CPUs and /dev/shm; and a GPU entry offering counts.
CHOICES_ENTRY: dict[str, Any] = {
    "id": "py-choices",
    "image": PY_IMAGE,
    "display_name": "Python with choices (test)",
    "resources": {"memory": "256m"},
    "choices": {
        "memory": ["256m", "512m"],
        "cpus": [1, 2],
        "shm_size": ["64m", "128m"],
    },
}


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": [*CATALOG, CHOICES_ENTRY]}))
    return path


def notebook(root: Path, name: str, metadata: dict[str, Any] | None = None) -> str:
    path = root / name
    path.write_text(
        json.dumps({"cells": [], "metadata": metadata or {}, "nbformat": 4, "nbformat_minor": 5})
    )
    os.chown(path, KERNEL_UID, KERNEL_GID)
    return name


async def post_choices(jp_fetch: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    try:
        response = await jp_fetch("tfenv", "choices", method="POST", body=json.dumps(body))
    except HTTPClientError as err:
        assert err.response is not None
        return err.code, json.loads(err.response.body)
    return response.code, json.loads(response.body)


async def start_session(jp_fetch: Any, path: str, kernel: str) -> tuple[str, str]:
    body = {"path": path, "name": path, "type": "notebook", "kernel": {"name": kernel}}
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(body))
    model = json.loads(response.body)
    return model["id"], model["kernel"]["id"]


def host_config(docker_engine: Any, kernel_id: str) -> dict[str, Any]:
    (container,) = kernel_containers(docker_engine, kernel_id)
    container.reload()
    return dict(container.attrs["HostConfig"])


async def test_a_choice_outside_the_entry_is_refused_with_the_allowed_values(jp_fetch, jp_root_dir):
    path = notebook(jp_root_dir, "nb.ipynb")
    code, body = await post_choices(
        jp_fetch, {"path": path, "environment": "py-choices", "choices": {"memory": "1g"}}
    )
    assert code == 400
    assert "choose one of 256m, 512m" in body["message"]
    code, body = await post_choices(
        jp_fetch, {"path": path, "environment": "py-choices", "choices": {"gpus": 1}}
    )
    assert code == 400 and "'gpus' cannot be chosen" in body["message"]
    code, body = await post_choices(
        jp_fetch, {"path": path, "environment": "py", "choices": {"memory": "1g"}}
    )
    assert code == 400 and "offers no choices" in body["message"]
    code, body = await post_choices(jp_fetch, {"path": path, "environment": "nope"})
    assert code == 404
    for bad in (
        {"path": "../outside.ipynb", "environment": "py-choices"},
        {"path": "nb.txt", "environment": "py-choices"},
        {"path": path, "environment": "py-choices", "choices": ["512m"]},
    ):
        code, _ = await post_choices(jp_fetch, bad)
        assert code == 400, bad


async def test_the_chosen_resources_are_what_the_container_gets(
    jp_fetch, jp_root_dir, docker_engine
):
    path = notebook(jp_root_dir, "chosen.ipynb")
    code, body = await post_choices(
        jp_fetch,
        {"path": path, "environment": "py-choices", "choices": {"memory": "512M", "cpus": 2}},
    )
    assert code == 200
    assert body["choices"] == {"memory": "512m", "cpus": 2, "shm_size": "64m"}
    session_id, kernel_id = await start_session(jp_fetch, path, "tfenv-py-choices")
    try:
        host = host_config(docker_engine, kernel_id)
        assert host["Memory"] == 512 * MIB
        assert host["NanoCpus"] == 2 * 10**9
        assert host["ShmSize"] == 64 * MIB
        # A restart keeps the choice of its start.
        await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="")
        assert host_config(docker_engine, kernel_id)["Memory"] == 512 * MIB
    finally:
        await jp_fetch("api", "sessions", session_id, method="DELETE")


async def test_a_start_without_a_choice_gets_the_defaults(jp_fetch, docker_engine):
    # The REST kernel start of a script or a headless client: no dialog, no notebook.
    response = await jp_fetch(
        "api", "kernels", method="POST", body=json.dumps({"name": "tfenv-py-choices"})
    )
    kernel_id = json.loads(response.body)["id"]
    try:
        host = host_config(docker_engine, kernel_id)
        assert host["Memory"] == 256 * MIB  # the entry's own resources.memory
        assert host["NanoCpus"] == 1 * 10**9  # the first choice
        assert host["ShmSize"] == 64 * MIB
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")


async def test_the_notebook_files_recorded_choice_is_taken(jp_fetch, jp_root_dir, docker_engine):
    recorded = {"choices": {"environment": "py-choices", "values": {"shm_size": "128m"}}}
    path = notebook(jp_root_dir, "recorded.ipynb", {"tfenv": recorded})
    session_id, kernel_id = await start_session(jp_fetch, path, "tfenv-py-choices")
    try:
        host = host_config(docker_engine, kernel_id)
        assert host["ShmSize"] == 128 * MIB and host["Memory"] == 256 * MIB
    finally:
        await jp_fetch("api", "sessions", session_id, method="DELETE")


async def test_start_kernel_takes_tfenv_choices_and_refuses_what_is_not_offered(
    jp_serverapp, docker_engine
):
    # What nbclient's execute(tfenv_choices=...) passes to start_kernel.
    km = jp_serverapp.kernel_manager
    kernel_id = await km.start_kernel(
        kernel_name="tfenv-py-choices", tfenv_choices={"memory": "512m"}
    )
    try:
        assert host_config(docker_engine, kernel_id)["Memory"] == 512 * MIB
    finally:
        await km.shutdown_kernel(kernel_id)
    with pytest.raises(Exception, match="choose one of 256m, 512m"):
        await km.start_kernel(kernel_name="tfenv-py-choices", tfenv_choices={"memory": "2g"})
    assert not kernel_containers(docker_engine)
