"""GPU compatibility before start (issue 20 item 2), end to end through a real server.

A local server on the stand-in GPU engine (tests/support/gpu_engine.py: Docker's NVIDIA
device driver is real, the devices are not); the host's NVML facts come from the stand-in
``pynvml`` of tests/support/fake_nvml.py (driver 470.82.01: CUDA up to 11.4, one A100), put
in place of the module ``gpu_overview`` imports; the environment's image has a cached probe
of TensorFlow 2.20's CUDA 12.5 build, written as `jupyter tfenv probe` writes it. Without
the stand-in (this machine has no NVML) the verdict is ``unknown`` and starts go on.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

from jupyter_tfenv.backends.docker.probe import PROBE_VERSION, probe_cache_dir, probe_cache_path
from jupyter_tfenv.catalog.validation import environment_from_dict
from tests.conftest import CATALOG, PY_IMAGE, start_kernel
from tests.kernels.test_compat import TF220_GPU
from tests.support.fake_nvml import FAKE_PYNVML, fake_pynvml
from tests.support.gpu_engine import GpuEngine, visible_devices

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="a second dockerd runs as root"),
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="dockerd is not installed"),
]

GPU_ENV = {"id": "gpu1", "image": PY_IMAGE, "gpus": 1}
REFUSAL = (
    "TensorFlow in 'gpu1' was built for CUDA 12.5, but the host's driver 470.82.01 supports "
    "CUDA up to 11.4. Install an NVIDIA driver >= 555.42.02 (CUDA 12.5); at least >= "
    "525.60.13 (CUDA 12.0), enough through CUDA minor-version compatibility when every GPU "
    "has native code in the build, or use an image built for CUDA 11.4 or older."
)


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": [*CATALOG, GPU_ENV]}))
    return path


@pytest.fixture
def allow_incompatible() -> bool:
    return False


@pytest.fixture
def gpu_devices() -> list[str]:
    """The server's ``gpu_devices``: the stand-in devices its kernels may get."""
    return ["0"]


@pytest.fixture
def server_probe_dir() -> Path | None:
    """``TFEnvApp.probe_cache_dir`` of the server (None: the default cache)."""
    return None


@pytest.fixture
def jp_server_config(
    jp_server_config: Config,
    gpu_engine: GpuEngine,
    monkeypatch: pytest.MonkeyPatch,
    allow_incompatible: bool,
    server_probe_dir: Path | None,
    gpu_devices: list[str],
    request: pytest.FixtureRequest,
) -> Config:
    """A local server whose Docker engine is the GPU engine, with ``gpu_devices``; with the
    ``broker`` fixture, ann's server in broker mode."""
    if "broker" in request.fixturenames:
        running = request.getfixturevalue("broker")
        jp_server_config.DockerKernelProvisioner.broker_url = running.url
        jp_server_config.DockerKernelProvisioner.broker_token = f"token-{running.ann.name}"
        return jp_server_config
    monkeypatch.setenv("DOCKER_HOST", gpu_engine.url)
    jp_server_config.DockerKernelProvisioner.gpu_devices = gpu_devices
    jp_server_config.DockerKernelProvisioner.allow_incompatible_gpus = allow_incompatible
    if server_probe_dir is not None:
        jp_server_config.TFEnvApp.probe_cache_dir = str(server_probe_dir)
    return jp_server_config


@pytest.fixture
def old_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML answers as the stand-in pynvml: driver 470.82.01 (CUDA 11.4), one A100."""
    module = types.ModuleType("pynvml")
    exec(FAKE_PYNVML, module.__dict__)
    monkeypatch.setitem(sys.modules, "pynvml", module)


@pytest.fixture
def mixed_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML answers for a host whose GPUs differ: GPU 0 a Tesla K80 (compute capability
    3.7, older than anything TF 2.20 has code for), GPU 1 an A100; driver 560.35.03 (CUDA
    12.6, enough for the CUDA 12.5 build)."""
    source = fake_pynvml(
        [("Tesla K80", "GPU-k80", (3, 7)), ("NVIDIA A100-SXM4-40GB", "GPU-a100", (8, 0))],
        driver="560.35.03",
        cuda=12060,
    )
    module = types.ModuleType("pynvml")
    exec(source, module.__dict__)
    monkeypatch.setitem(sys.modules, "pynvml", module)


def cache_cuda12_probe(engine: GpuEngine, cache_dir: Path | None = None) -> None:
    """A cached probe of TF 2.20's CUDA 12.5 build for the 'gpu1' environment's image, where
    the server and its kernels' backend read probes (the Jupyter data dir's cache, or the
    server's ``TFEnvApp.probe_cache_dir``)."""
    assert engine.client is not None
    env = environment_from_dict(GPU_ENV)
    image_id = engine.client.images.get(PY_IMAGE).id
    path = probe_cache_path(cache_dir or probe_cache_dir(), image_id, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {**TF220_GPU, "environment": "gpu1", "image": PY_IMAGE, "image_id": image_id}
    path.write_text(json.dumps({**stored, "probe_version": PROBE_VERSION}))


async def listing(jp_fetch: Any) -> dict[str, dict[str, Any]]:
    body = json.loads((await jp_fetch("tfenv", "environments")).body)
    return {env["id"]: env["compatibility"] for env in body["environments"]}


async def start_refusal(jp_fetch: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "tfenv-gpu1"}))
    assert info.value.response is not None
    return info.value.code, json.loads(info.value.response.body)


def clean(engine: GpuEngine) -> None:
    for container in engine.containers():
        container.remove(force=True)


async def test_an_incompatible_gpu_environment_is_marked_and_refused(
    jp_fetch, jp_serverapp, gpu_engine, old_driver
):
    cache_cuda12_probe(gpu_engine)
    try:
        verdicts = await listing(jp_fetch)
        assert verdicts["gpu1"] == {"state": "incompatible", "message": REFUSAL}
        assert verdicts["py"] == {"state": "not_applicable", "message": ""}
        one = json.loads((await jp_fetch("tfenv", "environments", "gpu1")).body)["compatibility"]
        assert one["state"] == "incompatible" and one["message"] == REFUSAL
        assert one["details"]["host"]["cuda_driver_version"] == "11.4"

        code, body = await start_refusal(jp_fetch)
        assert code == 409, body
        assert body["message"] == REFUSAL
        assert gpu_engine.containers() == []  # refused before any container
        # A CPU environment on the same host starts as always.
        await start_kernel(jp_fetch, "tfenv-py")
    finally:
        clean(gpu_engine)


@pytest.mark.parametrize(
    "server_probe_dir", [Path(tempfile.gettempdir()) / "tfenv-probes-of-server"]
)
async def test_the_start_check_reads_the_servers_probe_cache(
    jp_fetch, jp_serverapp, gpu_engine, old_driver, server_probe_dir
):
    """With TFEnvApp.probe_cache_dir set, the listing and the kernels' start check read the
    same probes: the start is refused, not left to fail at Docker's device driver."""
    shutil.rmtree(server_probe_dir, ignore_errors=True)
    cache_cuda12_probe(gpu_engine, server_probe_dir)
    try:
        assert (await listing(jp_fetch))["gpu1"] == {"state": "incompatible", "message": REFUSAL}
        code, body = await start_refusal(jp_fetch)
        assert code == 409, body
        assert body["message"] == REFUSAL
        assert gpu_engine.containers() == []
    finally:
        clean(gpu_engine)
        shutil.rmtree(server_probe_dir, ignore_errors=True)


@pytest.mark.parametrize("allow_incompatible", [True])
async def test_the_admin_may_allow_an_incompatible_start(
    jp_fetch, jp_serverapp, gpu_engine, old_driver, allow_incompatible
):
    cache_cuda12_probe(gpu_engine)
    try:
        assert (await listing(jp_fetch))["gpu1"]["state"] == "incompatible"  # still marked
        kernel_id = await start_kernel(jp_fetch, "tfenv-gpu1")
        [container] = [c for c in gpu_engine.containers() if kernel_id in str(c.labels)]
        assert container.status in ("created", "running")
    finally:
        clean(gpu_engine)


@pytest.mark.parametrize("gpu_devices", [["0", "1"]])
async def test_a_mixed_host_allocates_only_the_gpus_the_build_runs_on(
    jp_fetch, jp_serverapp, gpu_engine, mixed_host, gpu_devices
):
    """The verdict is ok (GPU 1 runs it) and says where it does not; a 1-GPU start gets
    GPU 1, not the first free device in inventory order; the next one is refused, naming
    the K80 as not counted."""
    cache_cuda12_probe(gpu_engine)
    try:
        verdict = (await listing(jp_fetch))["gpu1"]
        assert verdict["state"] == "ok", verdict
        assert "runs on GPU 1" in verdict["message"], verdict
        assert "Not on: GPU 0" in verdict["message"], verdict
        kernel_id = await start_kernel(jp_fetch, "tfenv-gpu1")
        [container] = [c for c in gpu_engine.containers() if kernel_id in str(c.labels)]
        assert gpu_engine.client is not None
        assert visible_devices(gpu_engine.client, container.id) == "1"
        code, body = await start_refusal(jp_fetch)
        assert code == 409, body
        message = body["message"]
        assert message.startswith(
            "No free GPU for 'gpu1' (it needs 1 GPU, exclusive): 1 of "
            "the 1 GPUs kernels may use are held."
        ), message
        assert "(Not counted, its TensorFlow build cannot run there: GPU 0 (Tesla K80): " in (
            message
        )
    finally:
        clean(gpu_engine)


async def test_without_nvml_gpu_environments_are_unknown_and_start(
    jp_fetch, jp_serverapp, gpu_engine
):
    from jupyter_tfenv.backends.docker.gpu import gpu_overview

    if gpu_overview()["state"] == "ok":
        pytest.skip("this host has NVML: its verdict is a real one")
    try:
        never = (await listing(jp_fetch))["gpu1"]
        assert never["state"] == "unknown"
        assert "has not been probed" in never["message"]
        cache_cuda12_probe(gpu_engine)
        probed = (await listing(jp_fetch))["gpu1"]
        assert probed["state"] == "unknown"
        assert probed["message"].startswith(
            "Cannot read the host's driver, so whether CUDA 12.5.1 runs here is unknown: "
        )
        await start_kernel(jp_fetch, "tfenv-gpu1")  # unknown never refuses
    finally:
        clean(gpu_engine)


# -- the broker (JupyterHub): its listing and its refusal, and a broker-mode server --------


@pytest.fixture
def broker(catalog_path: Path, gpu_engine: GpuEngine, tmp_path: Path) -> Iterator[Any]:
    pytest.importorskip("jupyterhub")
    from tests.backends.test_gpu_allocation import GpuBroker

    running = GpuBroker(catalog_path, gpu_engine, tmp_path)
    running.app.probe_cache_dir = str(tmp_path / "broker-probes")
    running.app.kernel_backend.probe_cache_dir = running.app.probe_cache_dir
    try:
        yield running
    finally:
        clean(gpu_engine)
        running.close()


def cache_on_broker(broker: Any, engine: GpuEngine) -> None:
    assert engine.client is not None
    env = environment_from_dict(GPU_ENV)
    image_id = engine.client.images.get(PY_IMAGE).id
    path = probe_cache_path(Path(broker.app.probe_cache_dir), image_id, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {**TF220_GPU, "environment": "gpu1", "image": PY_IMAGE, "image_id": image_id}
    path.write_text(json.dumps({**stored, "probe_version": PROBE_VERSION}))


async def test_the_broker_marks_and_refuses_and_a_hub_server_shows_it(
    jp_fetch, broker, gpu_engine, old_driver
):
    from jupyter_tfenv.backends.broker import BrokerError
    from tests.backends.test_gpu_allocation import start

    cache_on_broker(broker, gpu_engine)
    envs = {e["id"]: e for e in await broker.client(broker.ann).environments()}
    assert envs["gpu1"]["compatibility"] == {"state": "incompatible", "message": REFUSAL}
    assert envs["py"]["compatibility"] == {"state": "not_applicable", "message": ""}
    with pytest.raises(BrokerError) as info:
        await start(broker, broker.ann, "gpu1")
    assert info.value.http_status == 409 and info.value.reason == "incompatible"
    assert str(info.value) == REFUSAL
    assert gpu_engine.containers() == []
    # ann's server in broker mode shows the broker's verdict (its host runs the kernels).
    verdicts = await listing(jp_fetch)
    assert verdicts["gpu1"] == {"state": "incompatible", "message": REFUSAL}
    assert verdicts["py"] == {"state": "not_applicable", "message": ""}
