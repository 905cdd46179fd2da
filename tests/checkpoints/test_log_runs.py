"""TensorBoard log runs through the REST API: real server, real Docker, real TensorFlow.

A TF 2.20 kernel trains a tiny Keras model for two epochs with the TensorBoard callback
into ``$TFENV_LOG_DIR/run1``; ``GET /tfenv/logs/tf220`` lists the run; deleting it with a
wrong ``If-Match`` is 412 and leaves it, without one 428, with the listed ETag removes
it. Names that could lead out of the log folder are 400. The same with named volumes
(the helper container reads and deletes). The grouping itself is unit-tested too.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from jupyter_tfenv.checkpoints.browser import CheckpointBrowser
from jupyter_tfenv.checkpoints.layout import StorageConfig
from jupyter_tfenv.checkpoints.logruns import (
    TOP_RUN,
    LogRuns,
    LogsNotFound,
    LogsUnsupported,
    group_runs,
)
from tests.conftest import OWNER, run_code, start_kernel

#: The event files of a run as TensorFlow names them.
EVENTS = "events.out.tfevents."

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
with open(os.path.join(os.environ["TFENV_LOG_DIR"], "notes.txt"), "w") as handle:
    handle.write("top-level file")
found = sorted(os.path.relpath(os.path.join(d, f), logdir)
               for d, _, files in os.walk(logdir) for f in files)
print(json.dumps(found))
"""

WRITE_FILES = r"""
import os
root = os.environ["TFENV_LOG_DIR"]
os.makedirs(os.path.join(root, "run-a", "train"))
with open(os.path.join(root, "run-a", "train", "events.out.tfevents.1.x"), "wb") as f:
    f.write(b"e" * 300)
with open(os.path.join(root, "events.out.tfevents.2.x"), "wb") as f:
    f.write(b"t" * 40)
print("ok")
"""


# -- the grouping (pure) ------------------------------------------------------------------


def test_runs_are_the_top_level_folders_and_the_top_files_are_one_run():
    inv = {
        "exists": True,
        "entries": [
            ["events.out.tfevents.1", "f", 40, 3_000_000_000],
            ["run1", "d", 4096, 1_000_000_000],
            ["run1/train", "d", 4096, 1_000_000_000],
            ["run1/train/events.out.tfevents.2", "f", 300, 5_000_000_000],
            ["run1/validation/events.out.tfevents.3", "f", 100, 2_000_000_000],
            ["run2", "d", 4096, 7_000_000_000],
        ],
    }
    runs = {r["name"]: r for r in group_runs(inv)}
    assert set(runs) == {TOP_RUN, "run1", "run2"}, runs
    assert runs["run1"]["size"] == 400 and runs["run1"]["files"] == 2
    assert runs["run1"]["last_write"].startswith("1970-01-01T00:00:05")
    assert runs["run1"]["_remove"] == ["run1"]
    assert runs[TOP_RUN]["_remove"] == ["events.out.tfevents.1"] and runs[TOP_RUN]["size"] == 40
    assert runs["run2"]["size"] == 0 and runs["run2"]["files"] == 0
    # The ETag follows any file of the run, and only of that run.
    changed = json.loads(json.dumps(inv))
    changed["entries"][3][2] = 301
    again = {r["name"]: r for r in group_runs(changed)}
    assert again["run1"]["etag"] != runs["run1"]["etag"]
    assert again["run2"]["etag"] == runs["run2"]["etag"]
    assert again[TOP_RUN]["etag"] == runs[TOP_RUN]["etag"]


def browser_for(tmp_path: Path, mode: str = "bind", remote: Any = None) -> CheckpointBrowser:
    """A checkpoint browser of user ``alice`` on roots under ``tmp_path``; ``remote`` is
    what the broker's claims would be (Kubernetes mode)."""

    async def no_images() -> dict[str, tuple[str, str]]:
        return {}

    async def no_docker() -> Any:
        raise AssertionError("no Docker call expected here")

    async def remote_of() -> Any:
        return remote

    config = StorageConfig(
        mode=mode,
        checkpoint_root=str(tmp_path / "checkpoints"),
        log_root=str(tmp_path / "logs"),
    )
    return CheckpointBrowser(
        config,
        owner="alice",
        uid=os.getuid(),
        gid=os.getgid(),
        catalog_ids=lambda: ["tf220"],
        helper_images=no_images,
        docker=no_docker,
        remote=remote_of,
    )


async def test_log_runs_say_why_where_they_cannot_be_read(tmp_path):
    # The broker's Kubernetes claims: not this server's to read: 501 with the reason.
    runs = LogRuns(browser_for(tmp_path, remote=object()))
    with pytest.raises(LogsUnsupported) as info:
        await runs.list("tf220")
    assert info.value.http_status == 501 and "Kubernetes" in info.value.message
    # Storage off: 404 saying so.
    runs = LogRuns(browser_for(tmp_path, mode="off"))
    with pytest.raises(LogsNotFound) as missing:
        await runs.list("tf220")
    assert "checkpoint_storage = 'off'" in missing.value.message
    # Bind mode, a catalog environment without a folder yet: an empty listing.
    listing = await LogRuns(browser_for(tmp_path)).list("tf220")
    assert listing["exists"] is False and listing["runs"] == []
    assert listing["location"] == str(tmp_path / "logs" / "alice" / "tf220")


# -- through the server ------------------------------------------------------------------


@pytest.fixture
def storage() -> dict[str, Any]:
    return {"mode": "bind"}


@pytest.fixture
def volume_token() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def jp_server_config(
    jp_server_config: Config, storage: dict[str, Any], volume_token: str, tmp_path: Path
) -> Config:
    jp_server_config.TFEnvApp.probe_cache_dir = str(tmp_path / "probes")
    prov = jp_server_config.DockerKernelProvisioner
    prov.checkpoint_storage = storage["mode"]
    if storage["mode"] == "volume":
        prov.checkpoint_volume = f"tfenv-t{volume_token}-ckpt-{{username}}-{{environment}}"
        prov.log_volume = f"tfenv-t{volume_token}-logs-{{username}}-{{environment}}"
    return jp_server_config


@pytest.fixture
def test_volumes(docker_engine: docker.DockerClient, volume_token: str) -> Iterator[None]:
    """Removes this test's volumes afterwards (their names carry the test's token)."""
    yield
    for volume in docker_engine.volumes.list():
        if f"tfenv-t{volume_token}-" in volume.name:
            volume.remove(force=True)


async def get_json(jp_fetch: Any, *path: str, **kwargs: Any) -> Any:
    return json.loads((await jp_fetch(*path, **kwargs)).body)


async def error_of(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*path, **kwargs)
    assert info.value.response is not None
    return info.value.code, json.loads(info.value.response.body)


def runs_of(listing: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {run["name"]: run for run in listing["runs"]}


async def delete_run(jp_fetch: Any, env: str, run: str, etag: str | None) -> Any:
    headers = {"If-Match": f'"{etag}"'} if etag is not None else {}
    return await jp_fetch(
        "tfenv", "logs", env, method="DELETE", params={"run": run}, headers=headers
    )


@pytest.mark.docker
async def test_a_trained_models_run_is_listed_and_deleted_with_its_etag(
    jp_fetch, jp_serverapp, checkpoint_root
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220")
    try:
        written = json.loads(
            (await run_code(jp_serverapp, kernel_id, TRAIN, timeout=240)).strip().splitlines()[-1]
        )
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert any(EVENTS in path for path in written), f"TensorBoard wrote no events: {written}"
    folder = checkpoint_root.parent / "logs" / OWNER / "tf220"

    listing = await get_json(jp_fetch, "tfenv", "logs", "tf220")
    assert listing["environment"] == "tf220" and listing["exists"] is True
    assert listing["location"] == str(folder)
    runs = runs_of(listing)
    assert set(runs) == {"run1", TOP_RUN}, runs
    on_disk = sum(p.stat().st_size for p in (folder / "run1").rglob("*") if p.is_file())
    assert runs["run1"]["size"] == on_disk > 0
    assert runs["run1"]["files"] == len(written)
    assert runs["run1"]["last_write"].endswith("+00:00")

    code, body = await error_of(
        jp_fetch, "tfenv", "logs", "tf220", method="DELETE", params={"run": "run1"}
    )
    assert code == 428 and "If-Match" in body["message"], body
    with pytest.raises(HTTPClientError) as info:
        await delete_run(jp_fetch, "tf220", "run1", "0" * 32)
    assert info.value.code == 412, info.value
    assert (folder / "run1").is_dir(), "a refused delete removed the run"
    # A write that lands after the listing changes the ETag: 412 again.
    (folder / "run1" / "extra.txt").write_text("late")
    with pytest.raises(HTTPClientError) as info:
        await delete_run(jp_fetch, "tf220", "run1", runs["run1"]["etag"])
    assert info.value.code == 412

    runs = runs_of(await get_json(jp_fetch, "tfenv", "logs", "tf220"))
    result = json.loads((await delete_run(jp_fetch, "tf220", "run1", runs["run1"]["etag"])).body)
    assert result["deleted"]["name"] == "run1" and result["removed"] == ["run1"]
    assert not (folder / "run1").exists()
    assert (folder / "notes.txt").is_file(), "deleting run1 touched the top-level files"
    assert set(runs_of(await get_json(jp_fetch, "tfenv", "logs", "tf220"))) == {TOP_RUN}

    # The top-level files are the run '.', deleted the same way (never the folder).
    top = runs_of(await get_json(jp_fetch, "tfenv", "logs", "tf220"))[TOP_RUN]
    await delete_run(jp_fetch, "tf220", TOP_RUN, top["etag"])
    assert folder.is_dir() and list(folder.iterdir()) == []
    code, body = await error_of(
        jp_fetch,
        "tfenv",
        "logs",
        "tf220",
        method="DELETE",
        params={"run": "run1"},
        headers={"If-Match": '"x"'},
    )
    assert code == 404 and "run1" in body["message"]


ESCAPING = ["..", "../tf219", "run1/../..", "/etc", "a/b", "..\\x", "%2e%2e/x"]


async def test_names_that_leave_the_log_folder_are_refused(jp_fetch, checkpoint_root, tmp_path):
    logs = checkpoint_root.parent / "logs" / OWNER
    (logs / "py" / "run1").mkdir(parents=True)
    (logs / "py" / "run1" / "events.out.tfevents.1").write_bytes(b"x")
    (logs / "tf219" / "keep").mkdir(parents=True)
    (logs / "tf219" / "keep" / "events.out.tfevents.1").write_bytes(b"y")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "file").write_text("s")
    (logs / "py" / "out").symlink_to(secret)
    listing = await get_json(jp_fetch, "tfenv", "logs", "py")
    runs = runs_of(listing)
    # A symlink is never a run, nor followed.
    assert set(runs) == {"run1", TOP_RUN}, runs
    for name in ESCAPING:
        code, body = await error_of(
            jp_fetch,
            "tfenv",
            "logs",
            "py",
            method="DELETE",
            params={"run": name},
            headers={"If-Match": f'"{runs["run1"]["etag"]}"'},
        )
        assert code == 400, (name, code, body)
        assert "not a log run" in body["message"], body
    code, body = await error_of(
        jp_fetch, "tfenv", "logs", "py", method="DELETE", headers={"If-Match": '"x"'}
    )
    assert code == 400 and "?run=" in body["message"], body
    # The symlink at the top is in '.', and deleting '.' removes the link, not its target.
    await delete_run(jp_fetch, "py", TOP_RUN, runs[TOP_RUN]["etag"])
    assert not (logs / "py" / "out").is_symlink() and (secret / "file").is_file()
    assert (logs / "tf219" / "keep" / "events.out.tfevents.1").is_file()
    assert (logs / "py" / "run1").is_dir()
    # Unknown environments and environment names that leave are 404 with a message.
    for env in ("nope", "..", "%2e%2e"):
        code, body = await error_of(jp_fetch, "tfenv", "logs", env)
        assert code == 404 and "log folder" in body["message"], (env, body)


class ReadOnlyTFEnv(Authorizer):
    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "tfenv" or action == "read"


@pytest.mark.parametrize("tfenv_authorizer", [ReadOnlyTFEnv])
async def test_read_only_users_list_but_cannot_delete(jp_fetch, checkpoint_root):
    run = checkpoint_root.parent / "logs" / OWNER / "py" / "run1"
    run.mkdir(parents=True)
    (run / "events.out.tfevents.1").write_bytes(b"x")
    runs = runs_of(await get_json(jp_fetch, "tfenv", "logs", "py"))
    with pytest.raises(HTTPClientError) as info:
        await delete_run(jp_fetch, "py", "run1", runs["run1"]["etag"])
    assert info.value.code == 403 and run.is_dir()
    code, _ = await error_of(jp_fetch, "tfenv", "logs", "py", headers={"Authorization": ""})
    assert code == 403


@pytest.mark.docker
@pytest.mark.parametrize("storage", [pytest.param({"mode": "volume"}, id="volume")])
async def test_runs_in_a_log_volume_are_listed_and_deleted(
    jp_fetch, jp_serverapp, storage, test_volumes
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    try:
        await run_code(jp_serverapp, kernel_id, WRITE_FILES)
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    listing = await get_json(jp_fetch, "tfenv", "logs", "py")
    assert listing["location"].startswith("volume tfenv-t"), listing
    runs = runs_of(listing)
    assert set(runs) == {"run-a", TOP_RUN}, runs
    assert runs["run-a"]["size"] == 300 and runs[TOP_RUN]["size"] == 40
    with pytest.raises(HTTPClientError) as info:
        await delete_run(jp_fetch, "py", "run-a", runs[TOP_RUN]["etag"])
    assert info.value.code == 412
    await delete_run(jp_fetch, "py", "run-a", runs["run-a"]["etag"])
    assert set(runs_of(await get_json(jp_fetch, "tfenv", "logs", "py"))) == {TOP_RUN}
