"""GPU allocation end to end, on a Docker engine whose NVIDIA device driver is real.

The engine is the test's own (tests/support/gpu_engine.py: a stand-in nvidia-container-runtime-hook
on its dockerd's PATH), with 4 stand-in devices given by ``gpu_devices``. What a kernel
got is what Docker put into its init process's ``NVIDIA_VISIBLE_DEVICES`` (read from the
host's /proc), the value the real hook acts on. Through the real broker (its HTTP API, two
Unix users) and through a local server (the provisioner).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker.types import DeviceRequest
from jupyter_client.connect import write_connection_file
from tornado.httpclient import HTTPClientError
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from jupyter_tfenv.backends.broker import BrokerClient, BrokerError
from jupyter_tfenv.core.labels import LABEL_GPU_DEVICES
from tests.broker.test_broker_e2e import StandInHubAuth
from tests.conftest import CATALOG, KERNEL_LABEL, PY_IMAGE, start_kernel
from tests.support.broker_process import UnixUser, UnixUsers
from tests.support.gpu_engine import GpuEngine, visible_devices

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the broker and a second dockerd run as root"),
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="dockerd is not installed"),
]

SERVICE = "tfenv-broker-gpualloc"
SCOPE = f"access:services!service={SERVICE}"
DEVICES = ["0", "1", "2", "3"]
GPU_ENVS = [
    {"id": "gpu1", "image": PY_IMAGE, "gpus": 1},
    {
        "id": "gpu1-shared",
        "image": PY_IMAGE,
        "gpus": 1,
        "gpu_sharing": "shared",
        "gpu_kernels_per_device": 2,
    },
]


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": [*CATALOG, *GPU_ENVS]}))
    return path


class GpuBroker:
    """The real broker in the test's loop, on the GPU engine, for two Unix users."""

    def __init__(self, catalog_path: Path, engine: GpuEngine, tmp_path: Path) -> None:
        from jupyter_tfenv.broker.app import TFEnvBroker

        self.users = UnixUsers()
        self.ann = self.users.make("tfgpuann")
        self.bob = self.users.make("tfgpubob")
        self.runtime_root = tempfile.mkdtemp(prefix="tfg-", dir="/tmp")
        self.app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            runtime_root=self.runtime_root,
            checkpoint_root=str(tmp_path / "broker-ck"),
            log_root=str(tmp_path / "broker-logs"),
            max_kernels_per_user=None,
            # Eight kernels start at once on a loaded 2-core machine: generous.
            start_timeout=240.0,
            gpu_devices=DEVICES,
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog_path)]}}),
        )
        self.app.init_catalog()
        self.app.kernel_backend._client = engine.client  # the GPU engine, not DOCKER_HOST's
        self.app.hub_auth = StandInHubAuth(
            {
                f"token-{u.name}": {"kind": "user", "name": u.name, "scopes": [SCOPE], "groups": []}
                for u in (self.ann, self.bob)
            }
        )
        self.socket, self.port = bind_unused_port()
        self.server = HTTPServer(self.app.make_web_app())
        self.server.add_sockets([self.socket])
        self.url = f"http://127.0.0.1:{self.port}/services/{SERVICE}/"

    def client(self, user: UnixUser) -> BrokerClient:
        return BrokerClient(self.url, f"token-{user.name}", timeout=300)

    def close(self) -> None:
        self.server.stop()
        self.socket.close()
        shutil.rmtree(self.runtime_root, ignore_errors=True)
        self.users.remove()


@pytest.fixture
def broker(catalog_path: Path, gpu_engine: GpuEngine, tmp_path: Path) -> Iterator[GpuBroker]:
    pytest.importorskip("jupyterhub")
    running = GpuBroker(catalog_path, gpu_engine, tmp_path)
    try:
        yield running
    finally:
        for container in gpu_engine.containers():
            container.remove(force=True)
        running.close()


async def start(
    broker: GpuBroker, user: UnixUser, env: str, restart: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Start a kernel through the broker's API as the user's server does (runtime folder,
    connection file of the user's, start request); a restart when ``kernel_id`` is given."""
    client = broker.client(user)
    kernel_id = restart["kernel_id"] if restart else str(uuid.uuid4())
    body: dict[str, Any] = {
        "kernel_id": kernel_id,
        "environment": env,
        "cwd": str(user.home),
        "mount": str(user.home),
        "env": {},
        "server": "",
    }
    if restart:
        # As the provisioner restarts: the container goes, the folder stays, and the start
        # names the devices the kernel held.
        body["gpu_devices"] = restart["gpu_devices"]
        await client.delete_kernel(kernel_id, restart=True)
    rundir = (await client.prepare_runtime(kernel_id, restart=bool(restart)))["runtime_dir"]
    path = os.path.join(rundir, "kernel.json")
    if not restart:
        write_connection_file(path, transport="ipc", ip=os.path.join(rundir, "k"), key=b"x" * 32)
        os.chown(path, user.uid, user.gid)
    answer = await client.start_kernel(body, timeout=300)
    return {**answer, "owner": user.name, "kernel_id": kernel_id}


def devices_of(engine: GpuEngine, answers: list[dict[str, Any]]) -> dict[str, str]:
    """kernel id → NVIDIA_VISIBLE_DEVICES of its container, from the host's /proc."""
    assert engine.client is not None
    return {a["kernel_id"]: visible_devices(engine.client, a["container_id"]) for a in answers}


async def test_broker_gives_each_kernel_its_own_gpu_and_refuses_the_fifth(broker, gpu_engine):
    ann, bob = broker.ann, broker.bob
    who = [ann, bob, ann, bob, ann]
    results = await asyncio.gather(
        *(start(broker, user, "gpu1") for user in who), return_exceptions=True
    )
    started = [r for r in results if isinstance(r, dict)]
    refused = [(who[n], r) for n, r in enumerate(results) if isinstance(r, BaseException)]
    assert len(started) == 4 and len(refused) == 1, results
    seen = devices_of(gpu_engine, started)
    assert sorted(seen.values()) == DEVICES  # four distinct devices, by id, never a count
    for answer in started:
        assert answer["gpu_devices"] == [seen[answer["kernel_id"]]]

    # The fifth: refused (409) with the holders; its user's own kernels by name, the
    # other user's as a count.
    user, err = refused[0]
    assert isinstance(err, BrokerError) and err.http_status == 409, err
    mine = [a for a in started if a["owner"] == user.name]
    others = [a for a in started if a["owner"] != user.name]
    message = str(err)
    assert "No free GPU for 'gpu1'" in message and "4 of the 4 GPUs" in message, message
    for answer in mine:
        device = seen[answer["kernel_id"]]
        assert f"kernel {answer['kernel_id'][:8]} (gpu1) on GPU {device}" in message, message
    for answer in others:
        assert answer["kernel_id"][:8] not in message
    count = len(others)
    assert f"Other users: {count} kernel{'s' if count != 1 else ''} of 1 user." in message
    assert (ann.name if user is bob else bob.name) not in message

    # Shutdown frees the device: the refused user gets exactly it now.
    gone = others[0]
    await broker.client(ann if gone["owner"] == ann.name else bob).delete_kernel(gone["kernel_id"])
    again = await start(broker, user, "gpu1")
    assert devices_of(gpu_engine, [again])[again["kernel_id"]] == seen[gone["kernel_id"]]

    # A restart keeps its device (a new container, same NVIDIA_VISIBLE_DEVICES).
    kept = next(a for a in started if a is not gone)
    before = devices_of(gpu_engine, [kept])[kept["kernel_id"]]
    owner = ann if kept["owner"] == ann.name else bob
    restarted = await start(broker, owner, "gpu1", restart=kept)
    assert restarted["container_id"] != kept["container_id"]
    assert devices_of(gpu_engine, [restarted])[kept["kernel_id"]] == before

    # GET /api/gpus: each device with its holders; the caller's kernels by id, others not.
    answer = await broker.client(ann).gpus()
    rows = {row["id"]: row["holders"] for row in answer["allocation"]}
    assert sorted(rows) == DEVICES and all(len(h) == 1 for h in rows.values())
    holders = [h for hs in rows.values() for h in hs]
    ann_kernels = {h["kernel_id"] for h in holders if h["owner"] == ann.name}
    assert ann_kernels == {
        k["kernel_id"] for k in await broker.client(ann).kernels() if k.get("status") == "running"
    }
    assert all(
        h["kernel_id"] is None and h["owner"] is None for h in holders if h["owner"] != ann.name
    )
    assert bob.name not in json.dumps(answer)

    # A broker that restarts sees the same picture: it keeps no state, labels are it.
    assert gpu_engine.client is not None
    held = sorted(
        c.labels[LABEL_GPU_DEVICES]
        for c in gpu_engine.client.containers.list(filters={"label": LABEL_GPU_DEVICES})
    )
    assert held == DEVICES


async def test_shared_gpus_take_two_kernels_each(broker, gpu_engine):
    who = [broker.ann, broker.bob] * 4
    started = await asyncio.gather(*(start(broker, user, "gpu1-shared") for user in who))
    seen = devices_of(gpu_engine, list(started))
    assert Counter(seen.values()) == dict.fromkeys(DEVICES, 2)
    with pytest.raises(BrokerError) as info:
        await start(broker, broker.ann, "gpu1-shared")
    assert info.value.http_status == 409
    assert "shared, 2 kernels per GPU" in str(info.value)
    # An exclusive kernel never joins shared ones.
    with pytest.raises(BrokerError) as info:
        await start(broker, broker.bob, "gpu1")
    assert info.value.http_status == 409

    # With gpu_wait_timeout, a start waits for a device instead: a kernel shut down
    # meanwhile (by another user) lets it in, on the device that kernel left.
    broker.app.gpu_wait_timeout = 120.0
    waiting = asyncio.ensure_future(start(broker, broker.ann, "gpu1-shared"))
    gone = next(a for a in started if a["owner"] == broker.bob.name)
    await broker.client(broker.bob).delete_kernel(gone["kernel_id"])
    late = await waiting
    assert devices_of(gpu_engine, [late])[late["kernel_id"]] == seen[gone["kernel_id"]]


async def test_the_later_of_two_colliding_starts_backs_out(gpu_engine):
    """Another process (a second server or broker on the same engine) picked GPU 0 at the
    same moment: the engine's labels show it after the start, and the later claim goes."""
    from jupyter_tfenv.backends.docker import gpu_alloc
    from jupyter_tfenv.backends.docker.engine import run_with_gpus
    from jupyter_tfenv.catalog.validation import environment_from_dict

    client = gpu_engine.client
    assert client is not None
    env = environment_from_dict({"id": "gpu1", "image": PY_IMAGE, "gpus": 1})
    base = {
        "image": PY_IMAGE,
        "command": ["sleep", "300"],
        "detach": True,
        "network_mode": "none",
        "init": True,
    }
    rivals: list[Any] = []

    async def run(spec: dict[str, Any]) -> Any:
        if not rivals:  # the other process's container, with an earlier claim on GPU 0
            labels = {
                KERNEL_LABEL: "rival-kernel",
                **gpu_alloc.labels_for(["0"], gpu_alloc.Policy(), 1),
            }
            request = DeviceRequest(device_ids=["0"], capabilities=[["gpu"]])
            rivals.append(client.containers.run(**base, labels=labels, device_requests=[request]))
        return client.containers.run(**spec)

    spec = {**base, "labels": {KERNEL_LABEL: "my-kernel"}}
    config = {"configured": DEVICES, "viewer": None, "placement": "pack"}
    try:
        with pytest.raises(gpu_alloc.GpuUnavailableError) as info:
            await run_with_gpus(client, env, spec, run, **config)
        assert "GPU 0 was given to another kernel at the same moment" in info.value.message
        assert info.value.status == 409
        left = client.containers.list(all=True, filters={"label": f"{KERNEL_LABEL}=my-kernel"})
        assert left == []  # the later start removed its own container
        # Started again (or waiting, gpu_wait_timeout): the next free device.
        container, devices = await run_with_gpus(client, env, spec, run, wait=30, **config)
        assert devices == ("1",) and visible_devices(client, container.id) == "1"
        assert visible_devices(client, rivals[0].id) == "0"
    finally:
        for container in gpu_engine.containers():
            container.remove(force=True)


# -- the local server (DockerKernelProvisioner) on the same engine, or in broker mode ---


@pytest.fixture
def jp_server_config(
    jp_server_config: Config,
    gpu_engine: GpuEngine,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Config:
    """A local server whose Docker engine is the GPU engine, with two of its devices; with
    the ``broker`` fixture, ann's server in broker mode."""
    if "broker" in request.fixturenames:
        running = request.getfixturevalue("broker")
        jp_server_config.DockerKernelProvisioner.broker_url = running.url
        jp_server_config.DockerKernelProvisioner.broker_token = f"token-{running.ann.name}"
        return jp_server_config
    monkeypatch.setenv("DOCKER_HOST", gpu_engine.url)
    jp_server_config.DockerKernelProvisioner.gpu_devices = ["2", "3"]
    return jp_server_config


async def test_a_broker_mode_server_shows_the_holders(jp_fetch, broker, gpu_engine):
    mine = await start(broker, broker.ann, "gpu1")
    await start(broker, broker.bob, "gpu1")
    overview = json.loads((await jp_fetch("tfenv", "gpus")).body)
    holders = {row["id"]: row["holders"] for row in overview["allocation"]}
    assert sorted(holders) == DEVICES
    [own_device] = mine["gpu_devices"]
    assert [h["kernel_id"] for h in holders[own_device]] == [mine["kernel_id"]]
    others = [h for d, hs in holders.items() if d != own_device for h in hs]
    assert len(others) == 1 and others[0]["kernel_id"] is None


def local_kernels(engine: GpuEngine) -> dict[str, Any]:
    assert engine.client is not None
    return {
        c.labels[KERNEL_LABEL]: c
        for c in engine.client.containers.list(filters={"label": KERNEL_LABEL})
    }


async def test_local_server_allocates_and_keeps_devices(jp_fetch, jp_serverapp, gpu_engine):
    try:
        first = await start_kernel(jp_fetch, "tfenv-gpu1", "nb.ipynb")
        second = await start_kernel(jp_fetch, "tfenv-gpu1", "nb2.ipynb")
        containers = local_kernels(gpu_engine)
        assert gpu_engine.client is not None
        got = {k: visible_devices(gpu_engine.client, c.id) for k, c in containers.items()}
        assert sorted(got.values()) == ["2", "3"] and set(got) == {first, second}

        # The third is refused, naming the holders (all this server's user's).
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "tfenv-gpu1"}))
        assert info.value.code == 409
        message = json.loads(info.value.response.body)["message"]
        assert "No free GPU for 'gpu1'" in message and "2 of the 2 GPUs" in message, message
        assert f"kernel {first[:8]} (gpu1) on GPU {got[first]}" in message

        # GET /tfenv/gpus: which kernel holds which device.
        overview = json.loads((await jp_fetch("tfenv", "gpus")).body)
        holders = {
            row["id"]: [h["kernel_id"] for h in row["holders"]] for row in overview["allocation"]
        }
        assert holders == {got[first]: [first], got[second]: [second]}

        # Restart keeps the device; shutdown frees it for the next kernel.
        response = await jp_fetch("api", "kernels", first, "restart", method="POST", body="")
        assert response.code == 200
        after = local_kernels(gpu_engine)[first]
        assert after.id != containers[first].id
        assert visible_devices(gpu_engine.client, after.id) == got[first]
        await jp_fetch("api", "kernels", second, method="DELETE")
        third = await start_kernel(jp_fetch, "tfenv-gpu1", "nb3.ipynb")
        assert (
            visible_devices(gpu_engine.client, local_kernels(gpu_engine)[third].id) == got[second]
        )
    finally:
        for container in gpu_engine.containers():
            container.remove(force=True)
