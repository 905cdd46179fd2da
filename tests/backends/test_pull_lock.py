"""Pulls, lock files and cancellation against a real registry on loopback.

Images go to Debian's docker-registry on 127.0.0.1 (``tests/support/registry.py``), under a
per-session prefix, and come back through the product's :class:`PullManager`. Everything a
test tags, pushes or pulls is removed afterwards; the ``tfenv-test/*`` originals stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import docker
import pytest
from docker.errors import ImageNotFound

from jupyter_tfenv.backends.docker.pulls import Pull, PullManager, pull_blocking
from jupyter_tfenv.catalog.lock import (
    LockFile,
    LockMismatchError,
    check_lock,
    local_digests,
    lock_environments,
    lock_status,
    resolve_digest,
)
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.errors import TFEnvError
from tests.conftest import PY_IMAGE, PY_NO_KERNEL_IMAGE
from tests.support.registry import (  # noqa: F401
    Registry,
    RegistryCleanup,
    build_image,
    registry,
    registry_cleanup,
)
from tests.support.server_process import free_port

pytestmark = pytest.mark.docker

MiB = 1 << 20


def env_for(ref: str, env_id: str = "py") -> Environment:
    return environment_from_dict({"id": env_id, "image": ref})


def forget_locally(client: docker.DockerClient, reg: Registry, image_id: str) -> None:
    """Remove this session's references to ``image_id`` (the image goes if only ours held it)."""
    image = client.images.get(image_id)
    refs = [
        r
        for r in (image.attrs.get("RepoTags") or []) + (image.attrs.get("RepoDigests") or [])
        if reg.owns(r)
    ]
    for ref in sorted(refs, key=lambda r: "@" in r):
        with contextlib.suppress(ImageNotFound):
            client.images.remove(ref)


def absent(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except ImageNotFound:
        return True
    return False


async def collect(pull: Pull) -> list[dict[str, Any]]:
    return [event async for event in pull.events()]


async def test_pull_streams_layer_progress_and_ends_with_the_pushed_digest(
    images: docker.DockerClient,
    registry: Registry,  # noqa: F811
    registry_cleanup: RegistryCleanup,  # noqa: F811
) -> None:
    client = images
    repo = registry.repo("py")
    # The python image plus a layer of its own: the base layers are on this engine
    # already ("Already exists"), the new one really downloads.
    built = build_image(client, f"{repo}:build", PY_IMAGE, [8 * MiB])
    pushed = registry_cleanup.push(f"{repo}:build", f"{repo}:1.0")
    forget_locally(client, registry, built.id)
    assert absent(client, f"{repo}:1.0")

    env = env_for(f"{repo}:1.0")
    manager = PullManager(client)
    pull = await manager.start(env)
    assert await manager.start(env) is pull, "a second start joins the running pull"
    events = await collect(pull)

    assert [e["seq"] for e in events[1:]] == sorted(e["seq"] for e in events[1:])
    assert events[0]["type"] == "snapshot"
    assert events[-1]["type"] == "done", events[-1]
    kinds = [e["type"] for e in events]
    assert kinds.count("done") == 1
    layer_events = [e for e in events if e["type"] == "layer"]
    statuses = {e["status"] for e in layer_events}
    assert {"Pulling fs layer", "Download complete", "Pull complete"} <= statuses, statuses
    assert "Already exists" in statuses, statuses
    downloading = [e for e in layer_events if e["status"] == "Downloading"]
    assert downloading, "no download progress"
    assert all(0 < e["current"] <= e["total"] for e in downloading)
    assert any(e["progress"]["total"] > 0 for e in downloading)

    done = events[-1]
    assert done["state"] == "done"
    assert done["digest"] == pushed
    assert done["percent"] == 100.0
    assert done["image_id"] == built.id
    assert pull.state == "done" and pull.digest == pushed and pull.finished is not None
    assert pull.layers and all(
        v["status"] in ("Pull complete", "Already exists") for v in pull.layers.values()
    )
    assert client.images.get(f"{repo}:1.0").id == built.id
    assert local_digests(client, env) == [pushed]

    # A late subscriber gets the final snapshot and the terminal event.
    late = await collect(pull)
    assert [e["type"] for e in late] == ["snapshot", "done"]
    assert late[0]["state"] == "done"
    assert manager.get(pull.id) is pull and manager.active(env.image) is None
    # Pulling again: nothing to download, still done with the same digest.
    again = await (await manager.start(env)).wait()
    assert again is not pull and again.state == "done" and again.digest == pushed


async def test_pull_errors_say_what_is_wrong(
    images: docker.DockerClient,
    registry: Registry,  # noqa: F811
    registry_cleanup: RegistryCleanup,  # noqa: F811
) -> None:
    client = images
    finished: list[Pull] = []
    manager = PullManager(client, on_finish=finished.append)

    missing = env_for(registry.repo("py") + ":9.9.9", "ghost")
    pull = await manager.start(missing)
    events = await collect(pull)
    assert events[-1]["type"] == "error" and pull.state == "error"
    assert "has no such image" in pull.message
    assert "tag does not exist" in pull.message
    assert "'ghost'" in pull.message and "manifest unknown" in pull.message
    assert pull.digest is None and pull.image_id is None
    assert finished == [pull]
    with pytest.raises(TFEnvError, match="the tag does not exist there"):
        resolve_digest(client, missing)

    port = free_port()
    unreachable = env_for(f"127.0.0.1:{port}/nowhere/py:1.0", "offline")
    pull = await (await manager.start(unreachable)).wait()
    assert pull.state == "error"
    assert f"cannot reach the registry 127.0.0.1:{port}" in pull.message
    assert "connection refused" in pull.message
    with pytest.raises(TFEnvError, match="Cannot reach the registry"):
        resolve_digest(client, unreachable)

    # An error is not "done": the CLI's blocking pull raises the same message.
    with pytest.raises(TFEnvError, match="has no such image"):
        await asyncio.to_thread(pull_blocking, client, missing)


async def test_lock_pins_a_tag_and_pull_restores_the_locked_digest(
    images: docker.DockerClient,
    registry: Registry,  # noqa: F811
    registry_cleanup: RegistryCleanup,  # noqa: F811
    tmp_path: Path,
) -> None:
    client = images
    repo = registry.repo("tf")
    ref = f"{repo}:2.20.0-jupyter"
    env = env_for(ref)
    locked_digest = registry_cleanup.push(PY_IMAGE, ref)
    locked_image = client.images.get(PY_IMAGE).id

    # Lock the tag: the lock file holds the registry's digest.
    lock_path = tmp_path / "tfenv-lock.json"
    lock = LockFile.load(lock_path)
    assert len(lock) == 0
    assert lock_status(client, env, lock)["matches"] is None
    check_lock(client, env, lock)  # nothing locked: passes
    changes = lock_environments(client, [env], lock)
    assert [(c.env_id, c.old, c.new, c.changed) for c in changes] == [
        ("py", None, locked_digest, True)
    ]
    lock.save()
    data = json.loads(lock_path.read_text())
    assert data["version"] == 1
    assert data["images"][ref]["digest"] == locked_digest
    assert data["images"][ref]["repository"] == repo
    assert data["images"][ref]["locked_at"].endswith("Z")
    lock = LockFile.load(lock_path)
    assert lock.get(ref) == locked_digest
    check_lock(client, env, lock)
    assert lock_status(client, env, lock)["matches"] is True

    # Someone re-points the tag in the registry, and it gets pulled here.
    moved_digest = registry_cleanup.push(PY_NO_KERNEL_IMAGE, ref)
    assert moved_digest != locked_digest
    assert resolve_digest(client, env) == moved_digest
    result = await asyncio.to_thread(pull_blocking, client, env)
    assert result.digest == moved_digest
    assert client.images.get(ref).id == client.images.get(PY_NO_KERNEL_IMAGE).id

    with pytest.raises(LockMismatchError) as info:
        check_lock(client, env, lock)
    message = str(info.value)
    assert locked_digest in message and moved_digest in message
    assert "`jupyter tfenv pull py`" in message and "`jupyter tfenv lock py`" in message
    assert f"{repo}@{locked_digest}" in message
    assert info.value.locked == locked_digest and info.value.local == [moved_digest]
    status = lock_status(client, env, lock)
    assert status == {
        "locked": locked_digest,
        "local": [moved_digest],
        "present": True,
        "matches": False,
        "pinned_by_digest": False,
        "policy": "enforce",
        "lock_file": str(lock.path),
        "lock_file_exists": True,
        "refused": True,
    }

    # Pulling with the lock fetches the locked digest again and puts the tag on it.
    manager = PullManager(client)
    pull = await (await manager.start(env, lock=lock)).wait()
    assert pull.state == "done", pull.message
    assert pull.reference == f"{repo}@{locked_digest}"
    assert pull.digest == locked_digest and pull.locked == locked_digest
    assert client.images.get(ref).id == locked_image
    check_lock(client, env, lock)
    assert lock_status(client, env, lock)["matches"] is True

    # Locking from the local image keeps the locked digest; locking from the registry
    # deliberately accepts the moved tag.
    assert not lock_environments(client, [env], lock, from_local=True)[0].changed
    change = lock_environments(client, [env], lock)[0]
    assert (change.old, change.new, change.changed) == (locked_digest, moved_digest, True)
    with pytest.raises(LockMismatchError):
        check_lock(client, env, lock)

    # A reference pinned by digest is its own lock.
    pinned = env_for(f"{repo}@{locked_digest}", "pinned")
    check_lock(client, pinned, LockFile.load(tmp_path / "none.json"))
    assert lock_environments(client, [pinned], lock) == []
    assert lock_status(client, pinned, lock)["matches"] is True


async def test_cancel_stops_the_transfer_and_leaves_no_image(
    images: docker.DockerClient,
    registry: Registry,  # noqa: F811
    registry_cleanup: RegistryCleanup,  # noqa: F811
) -> None:
    client = images
    repo = registry.repo("big")
    built = build_image(client, f"{repo}:build", "scratch", [1 * MiB, 96 * MiB, 96 * MiB, 96 * MiB])
    registry_cleanup.push(f"{repo}:build", f"{repo}:1.0")
    layers = registry.manifest_layers(repo, "1.0")
    forget_locally(client, registry, built.id)
    env = env_for(f"{repo}:1.0", "big")

    finished: list[Pull] = []
    manager = PullManager(client, on_finish=finished.append)
    pull = await manager.start(env)
    events = []
    cancelled_at = None
    async for event in pull.events():
        events.append(event)
        if (
            cancelled_at is None
            and event["type"] == "layer"
            and event["status"] == "Downloading"
            and event["total"] > 50 * MiB
        ):
            cancelled_at = event
            request = pull.cancel()
            assert request, "the pull was running"
            # Awaiting the request waits for the pull's final state (the DELETE handler).
            assert await request is pull and pull.state == "cancelled"
    assert cancelled_at is not None, [e.get("status") for e in events]
    assert events[-1]["type"] == "cancelled", events[-1]
    assert pull.state == "cancelled" and "cancelled" in pull.message
    assert pull.digest is None and pull.image_id is None
    assert not pull.cancel(), "a finished pull cannot be cancelled again"
    assert finished == [pull]
    assert manager.active(env.image) is None

    # Not present as done, and it does not turn up later either: the engine stopped.
    for _ in range(6):
        assert absent(client, env.image)
        await asyncio.sleep(0.5)
    if registry.log is not None:
        big = [layer for layer in layers if layer["size"] > 50 * MiB]
        served = {layer["digest"]: registry.blob_bytes_served(layer["digest"]) for layer in big}
        assert any(
            sizes and max(sizes) < layer["size"]
            for layer, sizes in zip(big, served.values(), strict=True)
        ), f"every big blob was served in full after the cancel: {served}"

    # The next pull starts over and completes.
    again = await (await manager.start(env)).wait()
    assert again.state == "done", again.message
    assert client.images.get(env.image).id == built.id
