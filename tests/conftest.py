"""Test harness: a real Docker engine, real images, a real jupyter_server.

- ``docker_engine`` (session): answers when a Docker engine does; starts ``dockerd`` (loopback
  only: no bridge, no iptables) when none answers, and stops only the one it started.
- ``images`` (session): builds the local test images (cached by recipe hash).
- Every test that uses the server gets a catalog file of the test images, kernels that run
  as a non-root uid, a short runtime folder, and a check that it left no container behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest
import yaml
from traitlets.config import Config

from tests.support.gpu_engine import GpuEngine, TestEngine

pytest_plugins = ["pytest_jupyter.jupyter_server"]

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

# A suite started in the background of a non-interactive shell (`bash .ci/run &`, nohup)
# inherits SIGINT ignored, and so would every server it starts: a SIGINT-stopped server
# (JupyterHub's "Stop My Server") then never stops, and tests of it hang (a fresh-clone run
# started so failed five of them). A hub's own servers start with SIGINT at its default; a
# Python handler here makes every child exec with the default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

KERNEL_UID = 1000
KERNEL_GID = 1000
OWNER = "tfenv-pytest"
KERNEL_LABEL = "org.jupyter.tfenv.kernel-id"
OWNER_LABEL = "org.jupyter.tfenv.owner"
SERVER_PID_LABEL = "org.jupyter.tfenv.server-pid"

PY_IMAGE = "tfenv-test/python:3.11-jupyter"
PY_NO_KERNEL_IMAGE = "tfenv-test/python:3.11"
NOPY_IMAGE = "tfenv-test/nopython:1"
TF220 = "tfenv-test/tensorflow:2.20.0-jupyter"
TF219 = "tfenv-test/tensorflow:2.19.0-jupyter"
TF220_NO_KERNEL = "tfenv-test/tensorflow:2.20.0"

#: The catalog every server test starts with. ``network: none``: tests stay off networks.
CATALOG: list[dict[str, Any]] = [
    {"id": "py", "image": PY_IMAGE, "display_name": "Python 3.11 (test)"},
    {"id": "tf220", "image": TF220, "tensorflow": "2.20.0"},
    {"id": "tf219", "image": TF219, "tensorflow": "2.19.0"},
    {"id": "tf220-nokernel", "image": TF220_NO_KERNEL, "tensorflow": "2.20.0"},
    {"id": "py-nokernel", "image": PY_NO_KERNEL_IMAGE},
    {"id": "nopython", "image": NOPY_IMAGE},
    {"id": "gpu", "image": PY_IMAGE, "gpus": "all", "display_name": "GPU (test)"},
    {"id": "missing", "image": "tfenv-test/not-built:9.9.9"},
    {"id": "exits", "image": PY_IMAGE, "python": "/bin/sh"},
    {"id": "floating", "image": "tensorflow/tensorflow:latest"},
]


def run_tfenv_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``jupyter tfenv ARGS`` with this venv's Python (``env`` adds variables)."""
    return subprocess.run(
        [sys.executable, "-m", "jupyter_tfenv.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


def _ping() -> bool:
    try:
        docker.from_env(timeout=5).ping()
    except docker.errors.DockerException:
        return False
    return True


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[docker.DockerClient]:
    started: subprocess.Popen[bytes] | None = None
    if not _ping():
        if shutil.which("dockerd") is None:
            pytest.fail(
                "No Docker engine answers and dockerd is not installed: run scripts/setup.sh"
            )
        log = open(os.path.join(tempfile.gettempdir(), "tfenv-test-dockerd.log"), "wb")  # noqa: SIM115
        started = subprocess.Popen(
            ["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(120):
            if _ping():
                break
            time.sleep(0.5)
        else:
            started.terminate()
            pytest.fail("dockerd did not answer within 60 s; see /tmp/tfenv-test-dockerd.log")
    client = docker.from_env(timeout=120)
    yield client
    # Only this process's containers: another suite may share the engine.
    leftovers = client.containers.list(
        all=True,
        filters={"label": [f"{OWNER_LABEL}={OWNER}", f"{SERVER_PID_LABEL}={os.getpid()}"]},
    )
    for container in leftovers:
        container.remove(force=True)
    client.close()
    if started is not None:
        started.terminate()
        started.wait(30)
    assert not leftovers, f"tests left kernel containers behind: {[c.name for c in leftovers]}"


@pytest.fixture(scope="session")
def images(docker_engine: docker.DockerClient) -> docker.DockerClient:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_test_images.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"building the test images failed:\n{result.stdout}\n{result.stderr}")
    return docker_engine


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The sdist and wheel that ``python -m build`` makes of a fresh clone of this tree
    (tests/support/dist.py): the wheel as users get it."""
    from tests.support.dist import DistError, build_dists, fresh_tree

    root = tmp_path_factory.mktemp("dists")
    try:
        return build_dists(fresh_tree(root / "clone"), root / "dist")
    except DistError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="session")
def ipykernel_wheels() -> Path:
    import build_test_images

    found = sorted((build_test_images.cache_dir() / "wheels").glob("ipykernel-*"))
    if not found:
        pytest.fail("the ipykernel wheel cache is missing: run scripts/build_test_images.py")
    return found[-1]


@pytest.fixture(scope="session")
def kernel_runtimes(ipykernel_wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runtimes folder with a cp311 ipykernel runtime, built offline from cached wheels."""
    from jupyter_tfenv.kernels.runtimes import build_runtime

    root = tmp_path_factory.mktemp("runtimes")
    build_runtime("3.11", runtimes_dir=root, find_links=[str(ipykernel_wheels)], no_index=True)
    return root


@pytest.fixture
def runtime_root() -> Iterator[str]:
    # Short: Unix socket paths must stay under 107 bytes.
    path = tempfile.mkdtemp(prefix="tfr-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def checkpoint_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Checkpoint and log roots of this test only (also for kernels started by subprocesses).

    Without it kernels would use ~/tfenv of the machine, shared with every other run.
    """
    monkeypatch.setenv("JUPYTER_TFENV_CHECKPOINT_ROOT", str(tmp_path / "tfenv" / "checkpoints"))
    monkeypatch.setenv("JUPYTER_TFENV_LOG_ROOT", str(tmp_path / "tfenv" / "logs"))
    return tmp_path / "tfenv" / "checkpoints"


@pytest.fixture
def server_logs_propagate() -> Iterator[None]:
    """caplog sees the server's records (ServerApp's logger does not propagate)."""
    logger = logging.getLogger("ServerApp")
    before = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = before


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
    return path


@pytest.fixture
def jp_root_dir(tmp_path: Path) -> Path:
    """The notebook folder, owned by the kernel user as a user's home would be."""
    root = tmp_path / "notebooks"
    root.mkdir()
    os.chown(root, KERNEL_UID, KERNEL_GID)
    # pytest's tmp folders are 0700 root; the server (root) walks them, the container
    # never sees them (the notebook folder is mounted at the same path).
    return root


@pytest.fixture
def provisioner_config(runtime_root: str, kernel_runtimes: Path) -> dict[str, Any]:
    return {
        "uid": KERNEL_UID,
        "gid": KERNEL_GID,
        "owner": OWNER,
        "runtime_root": runtime_root,
        "runtimes_dir": str(kernel_runtimes),
        "start_timeout": 60.0,
    }


@pytest.fixture
def tfenv_authorizer() -> type | None:
    """An Authorizer class for the server; tests parametrize this fixture to change it."""
    return None


@pytest.fixture
def jp_server_config(
    catalog_path: Path,
    provisioner_config: dict[str, Any],
    images: Any,
    tfenv_authorizer: type | None,
) -> Config:
    server: dict[str, Any] = {"jpserver_extensions": {"jupyter_tfenv": True}}
    if tfenv_authorizer is not None:
        server["authorizer_class"] = tfenv_authorizer
    return Config(
        {
            "ServerApp": server,
            "TFEnvCatalog": {"catalog_files": [str(catalog_path)]},
            "DockerKernelProvisioner": provisioner_config,
            "TFEnvApp": {"reap_orphans_on_start": False},
        }
    )


def kernel_containers(client: docker.DockerClient, kernel_id: str | None = None) -> list[Any]:
    label = f"{KERNEL_LABEL}={kernel_id}" if kernel_id else KERNEL_LABEL
    return [
        c
        for c in client.containers.list(all=True, filters={"label": label})
        if c.labels.get(OWNER_LABEL) == OWNER and c.labels.get(SERVER_PID_LABEL) == str(os.getpid())
    ]


async def start_kernel(jp_fetch: Any, name: str, path: str | None = None) -> str:
    body: dict[str, Any] = {"name": name}
    if path is not None:
        body["path"] = path
    response = await jp_fetch("api", "kernels", method="POST", body=json.dumps(body))
    assert response.code == 201
    return str(json.loads(response.body)["id"])


async def start_error(jp_fetch: Any, name: str) -> tuple[int, str]:
    """Start a kernel that must fail; return the HTTP status and the server's message."""
    from tornado.httpclient import HTTPClientError

    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}))
    response = info.value.response
    assert response is not None
    return info.value.code, str(json.loads(response.body)["message"])


async def run_code(jp_serverapp: Any, kernel_id: str, code: str, timeout: float = 120) -> str:
    """Execute ``code`` in a running kernel; return its stdout (fails on an error reply)."""
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=timeout)
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("ERROR: " + "\n".join(msg["content"]["traceback"]))

        reply = await client.execute_interactive(code, output_hook=hook, timeout=timeout)
        assert reply["content"]["status"] == "ok", "".join(out)
        return "".join(out)
    finally:
        client.stop_channels()


async def interrupt_a_sleep(jp_fetch: Any, km: Any, kernel_id: str) -> None:
    """Interrupt a running ``time.sleep(60)`` through the REST API: the reply must be
    the KeyboardInterrupt error."""
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        msg_id = client.execute("import time; time.sleep(60)")
        await asyncio.sleep(1.0)
        await jp_fetch("api", "kernels", kernel_id, "interrupt", method="POST", body="")
        while True:
            reply = await client.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        client.stop_channels()


_Engine = TypeVar("_Engine", bound=TestEngine)


def _running(engine: _Engine, images: docker.DockerClient) -> Iterator[_Engine]:
    """Start a test engine of a module's own with the small python image; stop it after."""
    try:
        engine.start()
        engine.load_image(images, PY_IMAGE)
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def outage_engine(images: docker.DockerClient) -> Iterator[TestEngine]:
    """A dockerd of the module's own (own data root and socket, ``--live-restore``) with the
    small python image: stop it (SIGTERM) and start it again under running kernels
    (tests/backends/test_engine_outage.py, tests/ui/test_engine_outage_ui.py)."""
    yield from _running(TestEngine(live_restore=True), images)


@pytest.fixture(scope="module")
def restart_engine(images: docker.DockerClient) -> Iterator[TestEngine]:
    """A dockerd of the module's own *without* live-restore (Docker's default) with the
    small python image: its stop (SIGTERM) stops every kernel container, and jupyter's
    restarter starts the kernel again in a new container (issue 24 item 3:
    tests/backends/test_engine_restart.py, tests/ui/test_engine_restart_ui.py)."""
    yield from _running(TestEngine(live_restore=False), images)


@pytest.fixture(scope="module")
def gpu_engine(images: docker.DockerClient) -> Iterator[GpuEngine]:
    """A dockerd of the module's own whose NVIDIA device driver is enabled by the stand-in
    hook (tests/support/gpu_engine.py), with the small python image: GPU allocation and the
    compatibility refusal run on it without a GPU."""
    yield from _running(GpuEngine(), images)
