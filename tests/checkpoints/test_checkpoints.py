"""Checkpoints outside the container, end to end: real server, real Docker, real TensorFlow.

A kernel trains a small Keras model with a ``tf.train.CheckpointManager`` and a
``ModelCheckpoint`` callback writing to ``$TFENV_CHECKPOINT_DIR``; its container is
killed; a new kernel of the same environment restores the same weights. With a bind root
and with named volumes; across TensorFlow versions; with a container killed in the middle
of a save; on a full (tmpfs) volume. Then the REST API: listing, delete with its ETag
confirmation, and a corpus of traversal attempts that must all get the same 404.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from jupyter_tfenv.checkpoints.layout import NOT_FOUND_MESSAGE
from tests.conftest import KERNEL_GID, KERNEL_UID, OWNER, kernel_containers, run_code, start_kernel

pytestmark = pytest.mark.docker

#: This user's folders below the test's roots (conftest's ``checkpoint_root``).
CKPT = ("checkpoints", OWNER)
LOGS = ("logs", OWNER)

BUILD = r"""
import json, os
import numpy as np
import tensorflow as tf
import keras

ckdir = os.environ["TFENV_CHECKPOINT_DIR"]
x = np.random.RandomState(0).rand(64, 4).astype("float32")
y = x.sum(axis=1, keepdims=True)


def build():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


def weights(model):
    return [w.tolist() for w in model.get_weights()]
"""

TRAIN = (
    BUILD
    + r"""
keras.utils.set_random_seed(1)
model = build()
ckpt = tf.train.Checkpoint(model=model)
manager = tf.train.CheckpointManager(ckpt, os.path.join(ckdir, "tf"), max_to_keep=3)
save_each_epoch = keras.callbacks.LambdaCallback(
    on_epoch_end=lambda epoch, logs: manager.save(checkpoint_number=epoch + 1)
)
keep_weights = keras.callbacks.ModelCheckpoint(
    os.path.join(ckdir, "keras", "epoch-{epoch:02d}.weights.h5"), save_weights_only=True
)
model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[save_each_epoch, keep_weights])
print(json.dumps({"weights": weights(model), "tf": tf.__version__}))
"""
)

RESTORE = (
    BUILD
    + r"""
model = build()
ckpt = tf.train.Checkpoint(model=model)
manager = tf.train.CheckpointManager(ckpt, os.path.join(ckdir, "tf"), max_to_keep=3)
ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
other = build()
other.load_weights(os.path.join(ckdir, "keras", "epoch-02.weights.h5"))
print(json.dumps({
    "latest": manager.latest_checkpoint,
    "tf": weights(model),
    "h5": weights(other),
    "version": tf.__version__,
}))
"""
)

STORAGE_PROBE = r"""
import json, os
out = {}
for var in ("TFENV_CHECKPOINT_DIR", "TFENV_LOG_DIR"):
    path = os.environ.get(var)
    st = os.stat(path)
    probe = os.path.join(path, "written-by-kernel.txt")
    with open(probe, "w") as handle:
        handle.write("hello")
    out[var] = {"path": path, "uid": st.st_uid, "gid": st.st_gid, "mode": st.st_mode & 0o777}
print(json.dumps(out))
"""


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def storage() -> dict[str, Any]:
    """How the server stores checkpoints; tests parametrize this (indirectly)."""
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
        if storage.get("options"):
            prov.checkpoint_volume_options = storage["options"]
    return jp_server_config


@pytest.fixture
def test_volumes(docker_engine: docker.DockerClient, volume_token: str) -> Iterator[list[str]]:
    """Removes this test's volumes afterwards (their names carry the test's token)."""
    names: list[str] = []
    yield names
    for volume in docker_engine.volumes.list():
        if f"tfenv-t{volume_token}-" in volume.name:
            names.append(volume.name)
            volume.remove(force=True)


def volume_dir(client: docker.DockerClient, name: str) -> Path:
    """The host folder of a local volume (the tests run as root, so it can be read)."""
    return Path(client.volumes.get(name).attrs["Mountpoint"])


async def shutdown(jp_fetch: Any, kernel_id: str) -> None:
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")


def no_auto_restart(jp_serverapp: Any, kernel_id: str) -> None:
    """Stop the kernel's restarter: a container killed on purpose stays dead (else a
    restart races the test's own shutdown)."""
    jp_serverapp.kernel_manager.get_kernel(kernel_id).stop_restarter()


async def kill_and_forget(
    jp_fetch: Any, jp_serverapp: Any, client: docker.DockerClient, kernel_id: str
) -> None:
    """``docker kill`` the kernel's container (no clean exit), then drop the dead kernel."""
    no_auto_restart(jp_serverapp, kernel_id)
    (container,) = kernel_containers(client, kernel_id)
    container.kill()
    container.reload()
    assert container.status != "running"
    await shutdown(jp_fetch, kernel_id)
    assert kernel_containers(client, kernel_id) == []


async def execute(
    jp_serverapp: Any, kernel_id: str, code: str, timeout: float = 180
) -> tuple[dict[str, Any], str]:
    """Run ``code``; return the execute reply's content and the stdout (errors allowed)."""
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=timeout)
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])

        reply = await client.execute_interactive(code, output_hook=hook, timeout=timeout)
        return reply["content"], "".join(out)
    finally:
        client.stop_channels()


def last_json(out: str) -> Any:
    return json.loads(out.strip().splitlines()[-1])


def owners(folder: Path) -> set[tuple[int, int]]:
    found = {(folder.stat().st_uid, folder.stat().st_gid)}
    for path in folder.rglob("*"):
        info = path.lstat()
        found.add((info.st_uid, info.st_gid))
    return found


async def get_json(jp_fetch: Any, *path: str, **kwargs: Any) -> Any:
    return json.loads((await jp_fetch(*path, **kwargs)).body)


def items_by_name(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in view["checkpoints"]}


VOLUME = pytest.param({"mode": "volume"}, id="volume")
BIND = pytest.param({"mode": "bind"}, id="bind")


# -- the kernel's folders ------------------------------------------------------------------


@pytest.mark.parametrize("storage", [BIND, VOLUME])
async def test_kernel_folders_belong_to_the_notebook_user(
    jp_fetch, jp_serverapp, checkpoint_root, docker_engine, storage, volume_token, test_volumes
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    try:
        facts = last_json(await run_code(jp_serverapp, kernel_id, STORAGE_PROBE))
        assert facts["TFENV_CHECKPOINT_DIR"]["path"] == "/tfenv/checkpoints"
        assert facts["TFENV_LOG_DIR"]["path"] == "/tfenv/logs"
        for var in ("TFENV_CHECKPOINT_DIR", "TFENV_LOG_DIR"):
            # The mount point is the kernel user's, not root's: it could write the probe file.
            assert (facts[var]["uid"], facts[var]["gid"]) == (KERNEL_UID, KERNEL_GID)
        (container,) = kernel_containers(docker_engine, kernel_id)
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        kernel = await get_json(jp_fetch, "tfenv", "kernels", kernel_id)
        info = kernel["checkpoints"]
        assert info["mode"] == storage["mode"]
        assert info["checkpoints"]["container_path"] == "/tfenv/checkpoints"
        assert info["logs"]["container_path"] == "/tfenv/logs"
        if storage["mode"] == "bind":
            ckpt_dir = checkpoint_root.parent.joinpath(*CKPT, "py")
            log_dir = checkpoint_root.parent.joinpath(*LOGS, "py")
            assert mounts["/tfenv/checkpoints"]["Source"] == str(ckpt_dir)
            assert mounts["/tfenv/logs"]["Source"] == str(log_dir)
            assert info["checkpoints"]["host_path"] == str(ckpt_dir)
            # The environment's folder is the kernel user's, 0700; the user's folder
            # above it (a root server for another uid) root's, group, 0750: no other
            # user can read them, and the user cannot replace the mounted folder.
            assert ckpt_dir.stat().st_mode & 0o777 == 0o700
            assert ckpt_dir.stat().st_uid == KERNEL_UID
            parent = ckpt_dir.parent.stat()
            if os.geteuid() == 0:
                assert (parent.st_uid, parent.st_mode & 0o777) == (0, 0o750)
            else:
                assert (parent.st_uid, parent.st_mode & 0o777) == (KERNEL_UID, 0o700)
        else:
            ckpt_volume = f"tfenv-t{volume_token}-ckpt-tfenv_2dpytest-py"
            assert mounts["/tfenv/checkpoints"]["Type"] == "volume"
            assert mounts["/tfenv/checkpoints"]["Name"] == ckpt_volume
            assert info["checkpoints"]["volume"] == ckpt_volume
            labels = docker_engine.volumes.get(ckpt_volume).attrs["Labels"]
            assert labels["org.jupyter.tfenv.owner"] == OWNER
            assert labels["org.jupyter.tfenv.storage-environment"] == "py"
            ckpt_dir = volume_dir(docker_engine, ckpt_volume)
            log_dir = volume_dir(docker_engine, f"tfenv-t{volume_token}-logs-tfenv_2dpytest-py")
        for folder in (ckpt_dir, log_dir):
            assert (folder / "written-by-kernel.txt").read_text() == "hello"
            assert owners(folder) == {(KERNEL_UID, KERNEL_GID)}
        listing = await get_json(jp_fetch, "tfenv", "checkpoints", "py")
        assert listing["exists"] is True and listing["checkpoints"] == []
        assert listing["container_path"] == "/tfenv/checkpoints"

        # Something to list and delete, written by the kernel (read back through a helper
        # container for volumes).
        await run_code(
            jp_serverapp,
            kernel_id,
            "import os\nd = os.environ['TFENV_CHECKPOINT_DIR']\n"
            "os.makedirs(d + '/keras')\nopen(d + '/keras/model-03.keras', 'wb').write(b'PK')\n",
        )
        overview = await get_json(jp_fetch, "tfenv", "checkpoints")
        envs = {view["environment"]: view for view in overview["environments"]}
        assert overview["storage"]["mode"] == storage["mode"]
        assert envs["py"]["exists"] is True and envs["tf220"]["exists"] is False
        item = items_by_name(envs["py"])["keras/model-03.keras"]
        assert (item["kind"], item["complete"], item["step"]) == ("keras", False, 3)
        result = await get_json(
            jp_fetch,
            "tfenv",
            "checkpoints",
            "py",
            "keras/model-03.keras",
            method="DELETE",
            headers={"If-Match": f'"{item["etag"]}"'},
        )
        assert result["removed"] == ["keras/model-03.keras"]
        assert not (ckpt_dir / "keras").exists()
        assert (ckpt_dir / "written-by-kernel.txt").exists()
    finally:
        await shutdown(jp_fetch, kernel_id)
    if storage["mode"] == "volume":
        # A volume of an environment no longer in the catalog is still this user's.
        gone = docker_engine.volumes.create(
            name=f"tfenv-t{volume_token}-ckpt-tfenv_2dpytest-gone",
            labels={
                "org.jupyter.tfenv.owner": OWNER,
                "org.jupyter.tfenv.storage-kind": "checkpoints",
                "org.jupyter.tfenv.storage-environment": "gone",
            },
        )
        # Another user's volume (by its labels) is not.
        docker_engine.volumes.create(
            name=f"tfenv-t{volume_token}-ckpt-alice-py",
            labels={
                "org.jupyter.tfenv.owner": "alice",
                "org.jupyter.tfenv.storage-kind": "checkpoints",
                "org.jupyter.tfenv.storage-environment": "py",
            },
        )
        overview = await get_json(jp_fetch, "tfenv", "checkpoints")
        envs = {view["environment"]: view for view in overview["environments"]}
        assert envs["gone"]["in_catalog"] is False and envs["gone"]["exists"] is True
        assert envs["gone"]["location"] == f"volume {gone.name}"
        assert envs["py"]["location"] == f"volume tfenv-t{volume_token}-ckpt-tfenv_2dpytest-py"


@pytest.mark.parametrize("storage", [BIND])
async def test_a_root_owned_user_folder_is_handed_to_the_kernel_user(
    jp_fetch, jp_serverapp, checkpoint_root, storage
):
    """The classic pain: a checkpoint folder made by root that the kernel cannot write."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a root-owned folder")
    folder = checkpoint_root.parent.joinpath(*CKPT, "py")
    folder.mkdir(parents=True)
    os.chmod(folder.parent, 0o755)
    assert folder.stat().st_uid == 0
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    try:
        facts = last_json(await run_code(jp_serverapp, kernel_id, STORAGE_PROBE))
        assert facts["TFENV_CHECKPOINT_DIR"]["uid"] == KERNEL_UID
        assert folder.stat().st_uid == KERNEL_UID and folder.parent.stat().st_uid == 0
    finally:
        await shutdown(jp_fetch, kernel_id)
    # A folder of another (non-root) user is refused, with what to do.
    other = checkpoint_root.parent.joinpath(*CKPT, "tf219")
    other.mkdir()
    os.chown(other, KERNEL_UID + 1, KERNEL_GID + 1)
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "tfenv-tf219"}))
    message = json.loads(info.value.response.body)["message"]
    assert f"belongs to uid {KERNEL_UID + 1}" in message and "chown" in message


# -- train, kill, restore ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("storage", [BIND, VOLUME])
async def test_checkpoints_survive_a_killed_container(
    jp_fetch, jp_serverapp, checkpoint_root, docker_engine, storage, volume_token, test_volumes
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220")
    try:
        trained = last_json(await run_code(jp_serverapp, kernel_id, TRAIN))
    finally:
        await kill_and_forget(jp_fetch, jp_serverapp, docker_engine, kernel_id)

    # The files are outside the container, complete, and the notebook user's.
    if storage["mode"] == "bind":
        folder = checkpoint_root.parent.joinpath(*CKPT, "tf220")
    else:
        folder = volume_dir(docker_engine, f"tfenv-t{volume_token}-ckpt-tfenv_2dpytest-tf220")
    assert (folder / "tf" / "checkpoint").is_file()
    assert owners(folder) == {(KERNEL_UID, KERNEL_GID)}

    listing = await get_json(jp_fetch, "tfenv", "checkpoints", "tf220")
    items = items_by_name(listing)
    assert set(items) == {
        "tf/checkpoint",
        "keras/epoch-01.weights.h5",
        "keras/epoch-02.weights.h5",
    }
    tf_set = items["tf/checkpoint"]
    assert tf_set["kind"] == "tf_checkpoint_set" and tf_set["complete"] is True
    assert tf_set["step"] == 2 and tf_set["latest"]["prefix"] == "tf/ckpt-2"
    assert [c["step"] for c in tf_set["checkpoints"]] == [1, 2]
    on_disk = sum(p.stat().st_size for p in (folder / "tf").iterdir())
    assert tf_set["size"] == on_disk
    assert items["keras/epoch-02.weights.h5"]["kind"] == "keras_weights"
    assert items["keras/epoch-02.weights.h5"]["complete"] is True
    assert items["keras/epoch-02.weights.h5"]["step"] == 2

    # A new kernel of the same environment gets the same weights back.
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220")
    try:
        restored = last_json(await run_code(jp_serverapp, kernel_id, RESTORE))
    finally:
        await shutdown(jp_fetch, kernel_id)
    assert restored["latest"] == "/tfenv/checkpoints/tf/ckpt-2"
    assert restored["tf"] == trained["weights"]
    assert restored["h5"] == trained["weights"]


@pytest.mark.slow
async def test_tensorflow_versions_keep_their_checkpoints_apart(
    jp_fetch, jp_serverapp, checkpoint_root
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220")
    try:
        trained = last_json(await run_code(jp_serverapp, kernel_id, TRAIN))
    finally:
        await shutdown(jp_fetch, kernel_id)
    assert trained["tf"] == "2.20.0"
    tf220 = checkpoint_root.parent.joinpath(*CKPT, "tf220")
    tf219 = checkpoint_root.parent.joinpath(*CKPT, "tf219")

    code = "import os; print(sorted(os.listdir(os.environ['TFENV_CHECKPOINT_DIR'])))"
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf219")
    try:
        # Same container path, another folder: 2.19 does not see what 2.20 wrote.
        assert (await run_code(jp_serverapp, kernel_id, code)).strip() == "[]"
        # Both formats are stable across these versions: 2.19 restores what 2.20 wrote.
        shutil.copytree(tf220, tf219, dirs_exist_ok=True)
        for path in [tf219, *tf219.rglob("*")]:
            os.chown(path, KERNEL_UID, KERNEL_GID)
        restored = last_json(await run_code(jp_serverapp, kernel_id, RESTORE))
    finally:
        await shutdown(jp_fetch, kernel_id)
    assert restored["version"] == "2.19.0"
    assert restored["tf"] == trained["weights"] == restored["h5"]

    overview = await get_json(jp_fetch, "tfenv", "checkpoints")
    envs = {view["environment"]: view for view in overview["environments"]}
    assert overview["storage"]["user"] == OWNER
    assert envs["tf220"]["location"] == str(tf220) and envs["tf219"]["location"] == str(tf219)
    assert "tf/checkpoint" in items_by_name(envs["tf220"])
    assert "tf/checkpoint" in items_by_name(envs["tf219"])
    assert envs["py"]["exists"] is False and envs["py"]["checkpoints"] == []


#: "Train in 2.19, continue in 2.20": the 2.20 kernel restores the 2.19 kernel's latest
#: checkpoint from the read-only folder of 2.19, and cannot write there.
CONTINUE_FROM_OTHER = (
    BUILD
    + r"""
import errno
others = os.environ["TFENV_CHECKPOINTS_OF_DIR"]
source = os.path.join(others, "tf219")
model = build()
ckpt = tf.train.Checkpoint(model=model)
latest = tf.train.latest_checkpoint(os.path.join(source, "tf"))
ckpt.restore(latest).assert_existing_objects_matched()
h5 = build()
h5.load_weights(os.path.join(source, "keras", "epoch-02.weights.h5"))
try:
    open(os.path.join(source, "written-by-2.20.txt"), "w").close()
    write = "written"
except OSError as err:
    write = errno.errorcode.get(err.errno, str(err.errno))
try:
    tf.train.CheckpointManager(ckpt, os.path.join(source, "tf"), max_to_keep=3).save()
    save = "saved"
except Exception as err:
    save = type(err).__name__
# The kernel's own folder is where it goes on: writable, empty at first.
manager = tf.train.CheckpointManager(ckpt, os.path.join(ckdir, "tf"), max_to_keep=3)
own = manager.save()
print(json.dumps({
    "others": others,
    "listed": sorted(os.listdir(others)),
    "latest": latest,
    "tf": weights(model),
    "h5": weights(h5),
    "write": write,
    "save": save,
    "own": own,
    "version": tf.__version__,
}))
"""
)


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and mtime (to see that nothing changed)."""
    return {
        str(path.relative_to(folder)): (path.lstat().st_size, path.lstat().st_mtime_ns)
        for path in folder.rglob("*")
    }


@pytest.mark.slow
@pytest.mark.parametrize("storage", [BIND, VOLUME])
async def test_a_switched_notebook_restores_the_other_environments_checkpoint_read_only(
    jp_fetch,
    jp_serverapp,
    checkpoint_root,
    docker_engine,
    storage,
    volume_token,
    test_volumes,
    tmp_path,
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf219")
    try:
        trained = last_json(await run_code(jp_serverapp, kernel_id, TRAIN))
    finally:
        await shutdown(jp_fetch, kernel_id)
    assert trained["tf"] == "2.19.0"
    user_dir = checkpoint_root.parent.joinpath(*CKPT)
    if storage["mode"] == "bind":
        source = user_dir / "tf219"
        # Never mounted: a symlink to a folder (even the user's own), another uid's folder.
        (user_dir / "linked").symlink_to(source)
        foreign = user_dir / "foreign"
        foreign.mkdir()
        os.chown(foreign, KERNEL_UID + 4242, KERNEL_GID)
        (foreign / "secret").write_text("not for this user")
    else:
        source = volume_dir(docker_engine, f"tfenv-t{volume_token}-ckpt-tfenv_2dpytest-tf219")
    before = tree(source)
    assert "tf/checkpoint" in before

    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220")
    try:
        got = last_json(await run_code(jp_serverapp, kernel_id, CONTINUE_FROM_OTHER))
        kernel = await get_json(jp_fetch, "tfenv", "kernels", kernel_id)
        (container,) = kernel_containers(docker_engine, kernel_id)
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    finally:
        await shutdown(jp_fetch, kernel_id)
    assert got["version"] == "2.20.0"
    assert got["others"] == "/tfenv/checkpoints-of"
    # Only the environments with storage: not the symlink, not another uid's folder, and
    # nothing for the catalog's other environments.
    assert got["listed"] == ["tf219"]
    assert got["latest"] == "/tfenv/checkpoints-of/tf219/tf/ckpt-2"
    assert got["tf"] == trained["weights"] == got["h5"]
    assert got["write"] == "EROFS"
    assert got["save"] != "saved"
    # Its own folder, numbered on from the restored save counter.
    assert got["own"].startswith("/tfenv/checkpoints/tf/ckpt-"), got["own"]
    assert tree(source) == before

    mount = mounts["/tfenv/checkpoints-of/tf219"]
    assert mount["RW"] is False
    others = kernel["checkpoints"]["others"]
    assert [(o["environment"], o["container_path"], o["read_only"]) for o in others] == [
        ("tf219", "/tfenv/checkpoints-of/tf219", True)
    ]
    assert kernel["checkpoints"]["others_dir"] == "/tfenv/checkpoints-of"
    if storage["mode"] == "bind":
        assert mount["Source"] == str(source) == others[0]["host_path"]
        # No folder was made for an environment that has none.
        assert sorted(p.name for p in user_dir.iterdir()) == [
            "foreign",
            "linked",
            "tf219",
            "tf220",
        ]
    else:
        assert mount["Name"] == others[0]["volume"]
        names = {v.name for v in docker_engine.volumes.list() if volume_token in v.name}
        assert not any(name.endswith(("-py", "-gpu")) for name in names), names


@pytest.mark.slow
async def test_a_container_killed_in_the_middle_of_a_save_leaves_the_previous_checkpoint(
    jp_fetch, jp_serverapp, checkpoint_root, docker_engine
):
    setup = r"""
import os, tensorflow as tf
big = tf.Variable(tf.fill([64 * 1024 * 1024], 1.0))  # 256 MiB: a save takes a while
ckpt = tf.train.Checkpoint(big=big)
manager = tf.train.CheckpointManager(
    ckpt, os.path.join(os.environ["TFENV_CHECKPOINT_DIR"], "big"), max_to_keep=2
)
print(manager.save())
big.assign(tf.fill([64 * 1024 * 1024], 2.0))
"""
    folder = checkpoint_root.parent.joinpath(*CKPT, "tf220", "big")
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220")
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    try:
        out = await run_code(jp_serverapp, kernel_id, setup)
        assert out.strip().endswith("/tfenv/checkpoints/big/ckpt-1")
        (container,) = kernel_containers(docker_engine, kernel_id)
        pids = [int(row[1]) for row in container.top()["Processes"]]
        no_auto_restart(jp_serverapp, kernel_id)
        client = km.client()
        client.start_channels()
        try:
            client.execute("manager.save()")
            # The moment TF starts writing the new checkpoint's shards, stop everything in
            # the container (SIGSTOP is immediate), then kill it.
            deadline = time.monotonic() + 60
            temp = folder / "ckpt-2_temp"
            while not temp.exists():
                assert time.monotonic() < deadline, "the second save never started"
                await asyncio.sleep(0.001)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            container.kill()
        finally:
            client.stop_channels()
    finally:
        await shutdown(jp_fetch, kernel_id)

    state = (folder / "checkpoint").read_text()
    assert 'model_checkpoint_path: "ckpt-1"' in state
    listing = await get_json(jp_fetch, "tfenv", "checkpoints", "tf220")
    tf_set = items_by_name(listing)["big/checkpoint"]
    assert tf_set["latest"]["prefix"] == "big/ckpt-1" and tf_set["complete"] is True
    assert [c["prefix"] for c in tf_set["checkpoints"]] == ["big/ckpt-1"]
    # What the killed save left is shown as such, never as a checkpoint.
    assert tf_set["leftovers"] and all(not x["complete"] for x in tf_set["leftovers"])

    restore = r"""
import os, tensorflow as tf
big = tf.Variable(tf.zeros([64 * 1024 * 1024]))
ckpt = tf.train.Checkpoint(big=big)
manager = tf.train.CheckpointManager(
    ckpt, os.path.join(os.environ["TFENV_CHECKPOINT_DIR"], "big"), max_to_keep=2
)
ckpt.restore(manager.latest_checkpoint).assert_consumed()
print(manager.latest_checkpoint, float(tf.reduce_min(big)), float(tf.reduce_max(big)))
"""
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220")
    try:
        out = await run_code(jp_serverapp, kernel_id, restore)
    finally:
        await shutdown(jp_fetch, kernel_id)
    assert out.split() == ["/tfenv/checkpoints/big/ckpt-1", "1.0", "1.0"]


TMPFS = pytest.param(
    {
        "mode": "volume",
        "options": {"type": "tmpfs", "device": "tmpfs", "o": "size=4m,uid=1000,gid=1000"},
    },
    id="tmpfs-4m",
)


@pytest.mark.slow
@pytest.mark.parametrize("storage", [TMPFS])
async def test_a_full_disk_reports_tensorflows_error_and_keeps_the_last_checkpoint(
    jp_fetch, jp_serverapp, storage, test_volumes
):
    first = r"""
import os, tensorflow as tf
small = tf.Variable(tf.ones([1000]))
ckpt = tf.train.Checkpoint(small=small)
manager = tf.train.CheckpointManager(
    ckpt, os.path.join(os.environ["TFENV_CHECKPOINT_DIR"], "run"), max_to_keep=3
)
print(manager.save())
ckpt.big = tf.Variable(tf.zeros([2 * 1024 * 1024]))  # 8 MiB: more than the 4 MiB volume
"""
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220")
    try:
        out = await run_code(jp_serverapp, kernel_id, first)
        assert out.strip() == "/tfenv/checkpoints/run/ckpt-1"
        reply, _ = await execute(jp_serverapp, kernel_id, "manager.save()")
        # TensorFlow's own error reaches the notebook.
        assert reply["status"] == "error"
        said = f"{reply['ename']}: {reply['evalue']}"
        assert "No space left on device" in said or "ResourceExhausted" in said, said
        # The last complete checkpoint is still the latest, and restores.
        check = r"""
fresh = tf.train.Checkpoint(small=tf.Variable(tf.zeros([1000])))
fresh.restore(manager.latest_checkpoint).assert_consumed()
print(manager.latest_checkpoint, float(tf.reduce_sum(fresh.small)))
"""
        out = await run_code(jp_serverapp, kernel_id, check)
        assert out.split() == ["/tfenv/checkpoints/run/ckpt-1", "1000.0"]
        # A tmpfs volume lives only while mounted: list it while the kernel holds it.
        listing = await get_json(jp_fetch, "tfenv", "checkpoints", "tf220")
        tf_set = items_by_name(listing)["run/checkpoint"]
        assert tf_set["latest"]["prefix"] == "run/ckpt-1" and tf_set["complete"] is True
        assert [c["prefix"] for c in tf_set["checkpoints"]] == ["run/ckpt-1"]
        # The failed save's temporary shard is shown as a leftover of the set, incomplete.
        assert [x["prefix"] for x in tf_set["leftovers"]] == ["run/ckpt-2_temp"]
        assert not tf_set["leftovers"][0]["complete"]
    finally:
        await shutdown(jp_fetch, kernel_id)


# -- the REST API on prepared folders ----------------------------------------------------------


def write_set(folder: Path, steps: tuple[int, ...] = (1, 2), name: str = "ckpt") -> None:
    """A TF checkpoint set as CheckpointManager leaves it (content does not matter here)."""
    folder.mkdir(parents=True, exist_ok=True)
    for step in steps:
        (folder / f"{name}-{step}.index").write_bytes(b"i" * 10)
        (folder / f"{name}-{step}.data-00000-of-00001").write_bytes(b"d" * 100)
    lines = [f'model_checkpoint_path: "{name}-{steps[-1]}"']
    lines += [f'all_model_checkpoint_paths: "{name}-{s}"' for s in steps]
    (folder / "checkpoint").write_text("\n".join(lines) + "\n")


@pytest.fixture
def prepared(checkpoint_root: Path, tmp_path: Path) -> dict[str, Path]:
    """This user's storage with one set, and valid-looking sets where it must not reach."""
    base = checkpoint_root
    mine = base / OWNER / "py"
    write_set(mine / "ok")
    (mine / "model.keras").write_bytes(b"not a zip")  # an incomplete Keras file
    # A sibling whose name starts with this user's, another user, a folder outside.
    write_set(base / f"{OWNER}2" / "py" / "ok")
    write_set(base / "alice" / "py" / "ok")
    write_set(tmp_path / "secret")
    # Symlinks that leave: inside an environment, and as an environment folder.
    (mine / "link").symlink_to(tmp_path / "secret")
    (base / OWNER / "linkenv").symlink_to(base / "alice" / "py")
    return {"base": base, "mine": mine, "home": tmp_path}


async def raw(
    http_server_client: Any,
    jp_base_url: str,
    jp_auth_header: dict[str, str],
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """A request with ``path`` sent exactly as written (jp_fetch would escape it)."""
    response = await http_server_client.fetch(
        jp_base_url + path,
        method=method,
        headers={**jp_auth_header, **(headers or {})},
        raise_error=False,
        allow_nonstandard_methods=True,
    )
    return response.code, response.body


TRAVERSAL_ENVIRONMENTS = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".",
    "..%2F..%2Falice",
    "..%2Falice%2Fpy",
    "alice",
    f"..%2F{OWNER}2%2Fpy",
    f"{OWNER}2",
    "linkenv",
    "%00",
    "py%00",
    "%2Fetc",
    "%252e%252e",
    "nope",
]

TRAVERSAL_ITEMS = [
    "../../alice/py/ok/checkpoint",
    "..%2F..%2Falice%2Fpy%2Fok%2Fcheckpoint",
    "%2e%2e/%2e%2e/alice/py/ok/checkpoint",
    "%2e%2e%2f%2e%2e%2falice%2fpy%2fok%2fcheckpoint",
    "%252e%252e%252f%252e%252e%252falice%252fpy%252fok%252fcheckpoint",
    f"../../{OWNER}2/py/ok/checkpoint",
    f"..%2F..%2F{OWNER}2%2Fpy%2Fok%2Fcheckpoint",
    "../../../../secret/checkpoint",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "%2F" + "%2F".join(["tmp", "x"]),
    "link/checkpoint",
    "link",
    "link/ckpt-2.index",
    "ok/checkpoint%00",
    "ok%00/checkpoint",
    "%00",
    "ok/../ok/checkpoint",
    "./ok/checkpoint",
    "ok//checkpoint",
    "ok/ckpt-1.index",
    "ok",
    "missing/checkpoint",
]


async def test_traversal_attempts_are_all_the_same_404(
    http_server_client, jp_base_url, jp_auth_header, prepared
):
    outside = [
        p
        for root in (
            prepared["base"] / f"{OWNER}2",
            prepared["base"] / "alice",
            prepared["home"] / "secret",
        )
        for p in sorted(root.rglob("*"))
    ]
    before = {p: p.read_bytes() for p in outside if p.is_file()}
    answers: dict[str, tuple[int, bytes]] = {}
    for env in TRAVERSAL_ENVIRONMENTS:
        answers[f"GET {env}"] = await raw(
            http_server_client, jp_base_url, jp_auth_header, f"tfenv/checkpoints/{env}"
        )
        answers[f"GET {env}/ok/checkpoint"] = await raw(
            http_server_client,
            jp_base_url,
            jp_auth_header,
            f"tfenv/checkpoints/{env}/ok/checkpoint",
        )
    for name in TRAVERSAL_ITEMS:
        path = f"tfenv/checkpoints/py/{name}"
        answers[f"GET py/{name}"] = await raw(http_server_client, jp_base_url, jp_auth_header, path)
        answers[f"DELETE py/{name}"] = await raw(
            http_server_client,
            jp_base_url,
            jp_auth_header,
            path,
            method="DELETE",
            headers={"If-Match": "*"},
        )
    expected = json.dumps({"message": NOT_FOUND_MESSAGE, "reason": "CheckpointNotFound"}).encode()
    wrong = {k: v for k, v in answers.items() if v != (404, expected)}
    assert not wrong, wrong
    # Nothing outside was touched, and the user's own set is still there.
    assert {p: p.read_bytes() for p in before} == before
    assert (prepared["mine"] / "ok" / "checkpoint").is_file()


async def test_listing_shows_only_the_users_own_real_folders(jp_fetch, prepared):
    overview = await get_json(jp_fetch, "tfenv", "checkpoints")
    envs = {view["environment"]: view for view in overview["environments"]}
    # The catalog's environments, and nothing reached through the symlinked folder.
    assert "linkenv" not in envs and "alice" not in envs
    view = envs["py"]
    assert view["location"] == str(prepared["mine"])
    items = items_by_name(view)
    assert set(items) == {"model.keras", "ok/checkpoint"}
    assert items["model.keras"]["complete"] is False
    assert items["ok/checkpoint"]["checkpoints"][-1]["prefix"] == "ok/ckpt-2"
    # A folder of an environment no longer in the catalog is still listed.
    write_set(prepared["base"] / OWNER / "old%2Fenv" / "run")
    overview = await get_json(jp_fetch, "tfenv", "checkpoints")
    envs = {view["environment"]: view for view in overview["environments"]}
    assert envs["old/env"]["in_catalog"] is False
    assert list(items_by_name(envs["old/env"])) == ["run/checkpoint"]


async def error_of(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*path, **kwargs)
    assert info.value.response is not None
    return info.value.code, json.loads(info.value.response.body)


async def test_delete_needs_the_listed_etag(jp_fetch, prepared):
    mine = prepared["mine"]
    (mine / "ok" / "ckpt-3_temp").mkdir()
    (
        mine / "ok" / "ckpt-3_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate1"
    ).write_bytes(b"x")
    response = await jp_fetch("tfenv", "checkpoints", "py", "ok/checkpoint")
    item = json.loads(response.body)
    assert response.headers["ETag"] == f'"{item["etag"]}"'
    assert {f["path"] for f in item["file_list"]} >= {
        "ok/checkpoint",
        "ok/ckpt-1.index",
        "ok/ckpt-2.data-00000-of-00001",
        "ok/ckpt-3_temp",
    }
    assert item["leftovers"][0]["prefix"] == "ok/ckpt-3_temp"

    path = ("tfenv", "checkpoints", "py", "ok/checkpoint")
    code, body = await error_of(jp_fetch, *path, method="DELETE")
    assert code == 428 and "If-Match" in body["message"]
    code, body = await error_of(jp_fetch, *path, method="DELETE", headers={"If-Match": '"0"'})
    assert code == 412 and "changed since it was listed" in body["message"]
    # A save that lands between listing and deleting changes the ETag: 412, nothing deleted.
    (mine / "ok" / "ckpt-2.index").write_bytes(b"changed!!!")
    code, _ = await error_of(
        jp_fetch, *path, method="DELETE", headers={"If-Match": f'"{item["etag"]}"'}
    )
    assert code == 412 and (mine / "ok" / "checkpoint").exists()

    item = json.loads((await jp_fetch(*path)).body)
    result = await get_json(
        jp_fetch, *path, method="DELETE", headers={"If-Match": f'"{item["etag"]}"'}
    )
    assert result["deleted"]["name"] == "ok/checkpoint"
    assert "ok/ckpt-3_temp" in result["removed"]
    assert not (mine / "ok").exists()  # emptied, so removed too
    assert (mine / "model.keras").exists()
    assert (prepared["base"] / "alice" / "py" / "ok" / "checkpoint").exists()
    listing = await get_json(jp_fetch, "tfenv", "checkpoints", "py")
    assert list(items_by_name(listing)) == ["model.keras"]
    code, body = await error_of(jp_fetch, *path)
    assert code == 404 and body["message"] == NOT_FOUND_MESSAGE


class ReadOnlyTFEnv(Authorizer):
    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != "tfenv" or action == "read"


@pytest.mark.parametrize("tfenv_authorizer", [ReadOnlyTFEnv])
async def test_read_only_users_cannot_delete(jp_fetch, prepared):
    item = await get_json(jp_fetch, "tfenv", "checkpoints", "py", "ok/checkpoint")
    code, _ = await error_of(
        jp_fetch,
        "tfenv",
        "checkpoints",
        "py",
        "ok/checkpoint",
        method="DELETE",
        headers={"If-Match": f'"{item["etag"]}"'},
    )
    assert code == 403
    assert (prepared["mine"] / "ok" / "checkpoint").exists()


async def test_unauthenticated_requests_are_refused(jp_fetch, prepared):
    for path in (("tfenv", "checkpoints"), ("tfenv", "checkpoints", "py")):
        code, _ = await error_of(jp_fetch, *path, headers={"Authorization": ""})
        assert code == 403


@pytest.mark.parametrize("storage", [pytest.param({"mode": "off"}, id="off")])
async def test_storage_off_mounts_nothing(jp_fetch, jp_serverapp, docker_engine, storage):
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    try:
        out = await run_code(
            jp_serverapp, kernel_id, "import os; print(os.environ.get('TFENV_CHECKPOINT_DIR'))"
        )
        assert out.strip() == "None"
        (container,) = kernel_containers(docker_engine, kernel_id)
        assert not [m for m in container.attrs["Mounts"] if m["Destination"].startswith("/tfenv")]
    finally:
        await shutdown(jp_fetch, kernel_id)
    assert (await get_json(jp_fetch, "tfenv", "checkpoints"))["environments"] == []
