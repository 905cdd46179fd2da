"""TensorBoard through the real server: a real TF 2.20 kernel writes the logs, the
TensorBoard container of the same image serves them through the server's proxy.

One server, in order: a kernel trains a tiny Keras model for two epochs with the
TensorBoard callback into ``$TFENV_LOG_DIR``; ``POST /tfenv/tensorboards`` starts the
environment's TensorBoard (202), polled until it runs; ``data/runs`` through the proxy
lists the run, the scalars' tags have ``epoch_loss``; a request without the token gets
no data; a second POST reuses the container (200); ``docker inspect``: no network,
read-only log mount, no other host mount, the kernel user, no capabilities; the idle
sweep removes it; DELETE removes another; the comparison view shows two environments
as run groups; the server's stop removes what runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from tornado.httpclient import HTTPClientError

from jupyter_tfenv.core.labels import LABEL_TENSORBOARD
from jupyter_tfenv.tensorboard.container import BRIDGE_PATH
from tests.conftest import KERNEL_GID, KERNEL_UID, run_code, start_kernel

#: This module's own owner label: its TensorBoard containers are found (and removed) by it.
TB_OWNER = "tfenv-pytest-tensorboard"

TRAIN = r"""
import json, os
import numpy as np
import keras

logdir = os.path.join(os.environ["TFENV_LOG_DIR"], "run1")
x = np.random.RandomState(0).rand(64, 4).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
model.fit(x, y, epochs=2, batch_size=16, verbose=0,
          callbacks=[keras.callbacks.TensorBoard(logdir)])
print(json.dumps(sorted(os.listdir(logdir))))
"""

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def provisioner_config(provisioner_config: dict[str, Any]) -> dict[str, Any]:
    return {**provisioner_config, "owner": TB_OWNER}


def my_tensorboards(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(
        all=True, filters={"label": [LABEL_TENSORBOARD, f"org.jupyter.tfenv.owner={TB_OWNER}"]}
    )


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    for container in my_tensorboards(client):  # whatever a failed test left
        container.remove(force=True)


async def get_json(jp_fetch: Any, *path: str, **kwargs: Any) -> Any:
    response = await jp_fetch(*path, **kwargs)
    return json.loads(response.body)


async def open_board(jp_fetch: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = await jp_fetch("tfenv", "tensorboards", method="POST", body=json.dumps(body))
    return response.code, json.loads(response.body)


async def until_running(jp_fetch: Any, name: str) -> dict[str, Any]:
    """Poll as the frontend does (bounded, so a hang fails with the last state)."""
    board: dict[str, Any] = {}
    for _ in range(720):
        board = await get_json(jp_fetch, "tfenv", "tensorboards", name)
        if board["state"] != "starting":
            break
        await asyncio.sleep(0.25)
    assert board["state"] == "running", f"TensorBoard {name} did not come up: {board}"
    return board


async def proxied_json(jp_fetch: Any, name: str, *path: str) -> Any:
    return await get_json(jp_fetch, "tfenv", "tensorboard", name, *path)


async def test_a_trained_environment_in_its_tensorboard(
    jp_fetch, jp_serverapp, jp_base_url, checkpoint_root, engine
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220")
    try:
        written = await run_code(jp_serverapp, kernel_id, TRAIN, timeout=240)
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert "train" in written, f"the TensorBoard callback wrote no run: {written}"
    log_folder = checkpoint_root.parent / "logs" / TB_OWNER / "tf220"

    code, board = await open_board(jp_fetch, {"environment": "tf220"})
    assert code == 202 and board["state"] == "starting", board
    assert board["name"] == "env-tf220" and board["view"] == "environment"
    assert board["url"] == f"{jp_base_url}tfenv/tensorboard/env-tf220/"
    assert board["environment"] == "tf220" and board["image"].endswith("2.20.0-jupyter")
    await until_running(jp_fetch, "env-tf220")

    # TensorBoard's own page and its data, through the server's proxy.
    page = await jp_fetch("tfenv", "tensorboard", "env-tf220/")
    assert page.code == 200 and b"<title>TensorBoard</title>" in page.body
    runs = await proxied_json(jp_fetch, "env-tf220", "data", "runs")
    assert "run1/train" in runs, runs
    tags = await proxied_json(jp_fetch, "env-tf220", "data", "plugin", "scalars", "tags")
    assert "epoch_loss" in tags.get("run1/train", {}), tags
    scalars = await get_json(
        jp_fetch,
        "tfenv",
        "tensorboard",
        "env-tf220",
        "data",
        "plugin",
        "scalars",
        "scalars",
        params={"run": "run1/train", "tag": "epoch_loss"},
    )
    assert len(scalars) == 2, f"two epochs, two points: {scalars}"

    # Without the token: refused, and none of the data.
    anonymous = await jp_fetch(
        "tfenv",
        "tensorboard",
        "env-tf220",
        "data",
        "runs",
        headers={"Authorization": ""},
        follow_redirects=False,
        raise_error=False,
    )
    assert anonymous.code in (302, 401, 403), anonymous.code
    assert b"run1" not in (anonymous.body or b"")

    # The second open reuses the container.
    (container,) = my_tensorboards(engine)
    code, again = await open_board(jp_fetch, {"environment": "tf220"})
    assert code == 200 and again["state"] == "running"
    assert [c.id for c in my_tensorboards(engine)] == [container.id]
    listed = await get_json(jp_fetch, "tfenv", "tensorboards")
    assert [b["name"] for b in listed["tensorboards"]] == ["env-tf220"]

    # Hardened like a kernel.
    container.reload()
    host = container.attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"]
    assert container.attrs["Config"]["User"] == f"{KERNEL_UID}:{KERNEL_GID}"
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/tfenv/logs"]["RW"] is False
    assert mounts["/tfenv/logs"]["Source"] == str(log_folder)
    assert mounts["/opt/tfenv/tensorboard_bridge.py"]["RW"] is False
    assert mounts["/opt/tfenv/tensorboard_bridge.py"]["Source"] == str(BRIDGE_PATH)
    (runtime,) = [d for d in mounts if d not in ("/tfenv/logs", "/opt/tfenv/tensorboard_bridge.py")]
    assert mounts[runtime]["RW"] is True and os.path.dirname(runtime) == os.path.realpath(
        jp_serverapp.config.DockerKernelProvisioner.runtime_root
    ), mounts

    # Idle: the sweep (with a small idle timeout) removes it.
    manager = jp_serverapp.web_app.settings["tfenv_tensorboards"]
    manager.settings = dataclasses.replace(manager.settings, idle_timeout=5)
    assert await manager.sweep(now=time.time() + 1) == []  # still fresh
    assert await manager.sweep(now=time.time() + 10) == ["env-tf220"]
    assert my_tensorboards(engine) == []
    assert not os.path.exists(runtime)
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfenv", "tensorboards", "env-tf220")
    assert info.value.code == 404

    # DELETE removes it.
    code, _ = await open_board(jp_fetch, {"environment": "tf220"})
    assert code == 202
    await until_running(jp_fetch, "env-tf220")
    deleted = await jp_fetch("tfenv", "tensorboards", "env-tf220", method="DELETE")
    assert deleted.code == 204 and my_tensorboards(engine) == []

    # The comparison: each environment a run group (tf219's folder holds a copy of the
    # events TF 2.20 wrote, as a user's second environment would).
    other = log_folder.parent / "tf219"
    shutil.copytree(log_folder, other)
    for path in [other, *other.rglob("*")]:
        os.chown(path, KERNEL_UID, KERNEL_GID)
    code, board = await open_board(jp_fetch, {"view": "compare"})
    assert code == 202 and board["name"] == "compare" and board["environment"] is None
    await until_running(jp_fetch, "compare")
    runs = await proxied_json(jp_fetch, "compare", "data", "runs")
    assert {"tf219/run1/train", "tf220/run1/train"} <= set(runs), runs
    (compare,) = my_tensorboards(engine)
    compare.reload()
    logs = {
        m["Destination"]: m["RW"]
        for m in compare.attrs["Mounts"]
        if "/tfenv/logs" in m["Destination"]
    }
    assert logs == {"/tfenv/logs/tf219": False, "/tfenv/logs/tf220": False}

    # The server's stop removes what runs.
    code, _ = await open_board(jp_fetch, {"environment": "tf220"})
    assert code == 202 and len(my_tensorboards(engine)) == 2
    (extension,) = jp_serverapp.extension_manager.extension_apps["jupyter_tfenv"]
    await extension.stop_tensorboards(extension.settings)
    assert my_tensorboards(engine) == []


async def test_refusals_say_what_to_do(jp_fetch, engine, checkpoint_root):
    # A log folder of another user (uid 2000) is not handed to this one.
    taken = checkpoint_root.parent / "logs" / TB_OWNER / "tf219"
    taken.mkdir(parents=True)
    os.chown(taken, 2000, 2000)
    for body, status, words in (
        ({"environment": "no-such-env"}, 404, "known:"),
        ({"environment": "missing"}, 409, "jupyter tfenv pull missing"),
        ({"view": "other"}, 400, '"view": "compare"'),
        ({"environment": "tf219"}, 409, "chown -R 1000"),
    ):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("tfenv", "tensorboards", method="POST", body=json.dumps(body))
        assert info.value.code == status, (body, info.value)
        assert info.value.response is not None
        assert words in json.loads(info.value.response.body)["message"]
    for path in (
        ("tfenv", "tensorboards", "env-tf220"),
        ("tfenv", "tensorboard", "compare", "data", "runs"),
    ):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(*path)
        assert info.value.code == 404
        assert "POST /tfenv/tensorboards" in json.loads(info.value.response.body)["message"]
    assert my_tensorboards(engine) == []

    # An image without TensorBoard: the start ends in 'error' with why, and no container.
    code, board = await open_board(jp_fetch, {"environment": "py"})
    assert code == 202
    for _ in range(240):
        board = await get_json(jp_fetch, "tfenv", "tensorboards", "env-py")
        if board["state"] != "starting":
            break
        await asyncio.sleep(0.25)
    assert board["state"] == "error" and "has no TensorBoard" in board["message"], board
    assert my_tensorboards(engine) == []


async def test_an_engine_that_does_not_answer_is_503_with_what_to_do(jp_fetch, monkeypatch):
    # The server connects on first use: from now on it looks for an engine that is not there.
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/tfenv-tensorboard-no-engine.sock")
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(
            "tfenv", "tensorboards", method="POST", body=json.dumps({"environment": "tf220"})
        )
    assert info.value.code == 503
    assert info.value.response is not None
    message = json.loads(info.value.response.body)["message"]
    assert "Cannot reach the Docker engine" in message, message
