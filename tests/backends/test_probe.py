"""The environment probe, for real: throwaway containers of the test images on a real engine."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from jupyter_tfenv.backends.docker.engine import SERVER_HOST, SERVER_PID
from jupyter_tfenv.backends.docker.probe import (
    PROBE_SCRIPT_PATH,
    ProbeError,
    _gpu_state,
    cached_probe,
    probe_cache_path,
    probe_image,
)
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.core.labels import LABEL_PROBE, LABEL_SERVER_HOST, LABEL_SERVER_PID
from tests.conftest import (
    KERNEL_GID,
    KERNEL_LABEL,
    KERNEL_UID,
    NOPY_IMAGE,
    PY_IMAGE,
    PY_NO_KERNEL_IMAGE,
    TF219,
    TF220,
    TF220_NO_KERNEL,
)

pytestmark = pytest.mark.docker


def env_of(image: str, env_id: str = "probe-test", **extra: Any) -> Environment:
    return environment_from_dict({"id": env_id, "image": image, **extra})


#: Probe containers of this test process only: other suites may share the engine.
MINE = [LABEL_PROBE, f"{LABEL_SERVER_HOST}={SERVER_HOST}", f"{LABEL_SERVER_PID}={SERVER_PID}"]


def probe_containers(client: docker.DockerClient) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": MINE}))


@pytest.fixture
def engine(images: docker.DockerClient) -> Any:
    """The engine with the test images; fails a test that leaves a probe container behind."""
    assert probe_containers(images) == [], "probe containers from before this test"
    yield images
    left = probe_containers(images)
    for container in left:
        container.remove(force=True)
    assert left == [], f"the probe left containers behind: {[c.name for c in left]}"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "probes"


def probe(engine: Any, env: Environment, cache_dir: Path, **kwargs: Any) -> dict[str, Any]:
    return probe_image(engine, env, cache_dir=cache_dir, uid=KERNEL_UID, gid=KERNEL_GID, **kwargs)


def probe_events(client: docker.DockerClient, since: float, until: float) -> list[dict[str, Any]]:
    """Container events of probe containers between two times (a finite stream)."""
    stream = client.events(
        since=f"{since:.6f}",
        until=f"{until:.6f}",
        filters={"type": "container", "label": MINE},
        decode=True,
    )
    try:
        return list(stream)
    finally:
        stream.close()


# --------------------------------------------------------------------------- TF images


@pytest.mark.slow
@pytest.mark.parametrize(("image", "version"), [(TF220, "2.20.0"), (TF219, "2.19.0")])
def test_probe_reports_the_pinned_tensorflow(engine, cache_dir, image, version):
    env = env_of(image, env_id=f"tf{version.replace('.', '')}")
    result = probe(engine, env, cache_dir)
    assert result["tensorflow"] == version
    assert result["errors"] == {}
    assert result["python"] == "3.11.2"
    assert result["python_abi"] == "cp311-x86_64"
    assert result["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert result["ipykernel"]  # the -jupyter images have one
    assert result["numpy"] and result["numpy"][0].isdigit()
    assert result["keras"] and result["keras"][0].isdigit()
    # tensorflow-cpu wheels: no CUDA in the build, and no GPU anyway.
    assert result["build"]["is_cuda_build"] is False
    assert result["build"]["is_rocm_build"] is False
    assert set(result["build"]) == {
        "cuda_version",
        "cudnn_version",
        "is_cuda_build",
        "is_rocm_build",
        "is_tensorrt_build",
    }
    assert result["gpus"] == []
    assert result["gpu_state"]["state"] == "not_requested"
    assert result["cached"] is False
    assert result["image_id"] == engine.images.get(image).id
    assert result["image"] == image
    assert result["environment"] == env.id
    assert result["probed_at"].endswith("+00:00")
    assert result["duration_s"] > 0
    assert result["seconds"]["tensorflow"] > 0


@pytest.mark.slow
def test_plain_tensorflow_image_has_no_ipykernel(engine, cache_dir):
    result = probe(engine, env_of(TF220_NO_KERNEL), cache_dir)
    assert result["ipykernel"] is None
    assert result["tensorflow"] == "2.20.0"
    assert "ipykernel" not in result["errors"]


@pytest.mark.slow
def test_second_probe_is_cached_and_starts_no_container(engine, cache_dir):
    env = env_of(TF220, env_id="tf220")
    before_cold = time.time()
    cold = probe(engine, env, cache_dir)
    after_cold = time.time()
    # The events filter sees probe containers: the cold probe's are there.
    cold_events = probe_events(engine, before_cold - 1, after_cold + 1)
    cold_actions = {e.get("Action") or e.get("status") for e in cold_events}
    assert {"create", "start", "destroy"} <= cold_actions

    before_warm = time.time()
    warm = probe(engine, env, cache_dir)
    after_warm = time.time()
    assert warm["cached"] is True and cold["cached"] is False
    assert probe_events(engine, before_warm, after_warm + 0.5) == []
    assert {k: v for k, v in warm.items() if k != "cached"} == {
        k: v for k, v in cold.items() if k != "cached"
    }
    # The cache is readable without Docker (by image id) and with it (by the env's image).
    assert cached_probe(cold["image_id"], env, cache_dir=cache_dir) == warm
    assert cached_probe(engine, env, cache_dir=cache_dir) == warm

    path = probe_cache_path(cache_dir, cold["image_id"], env)
    assert path.name == f"{cold['image_id'].split(':', 1)[1]}-cpu.json"
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in cache_dir.iterdir()] == [path.name]  # no temporary files left

    fresh = probe(engine, env, cache_dir, refresh=True)
    assert fresh["cached"] is False
    assert fresh["probed_at"] >= cold["probed_at"]


def test_unreadable_or_foreign_cache_files_are_probed_again(engine, cache_dir):
    env = env_of(PY_IMAGE)
    first = probe(engine, env, cache_dir)
    path = probe_cache_path(cache_dir, first["image_id"], env)
    path.write_text("{not json")
    assert cached_probe(first["image_id"], env, cache_dir=cache_dir) is None
    again = probe(engine, env, cache_dir)
    assert again["cached"] is False
    data = json.loads(path.read_text())
    data["probe_version"] = 0  # written by an older jupyter_tfenv
    path.write_text(json.dumps(data))
    assert probe(engine, env, cache_dir)["cached"] is False
    # A GPU request is another key than the CPU one, for the same image.
    gpu_env = env_of(PY_IMAGE, gpus=2)
    assert probe_cache_path(cache_dir, first["image_id"], gpu_env) != path


@pytest.mark.slow
def test_probe_container_is_hardened_and_labelled(engine, cache_dir):
    """Watch the real probe container while it imports TensorFlow, as Docker sees it."""
    env = env_of(TF220, env_id="tf220")
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set() and not seen:
            for container in probe_containers(engine):
                try:
                    container.reload()
                except docker.errors.NotFound:
                    continue
                seen.append(container.attrs)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        probe(engine, env, cache_dir)
    finally:
        done.set()
        watcher.join()
    assert seen, "no probe container was seen while the probe ran"
    attrs = seen[0]
    host, config = attrs["HostConfig"], attrs["Config"]
    assert config["User"] == f"{KERNEL_UID}:{KERNEL_GID}"
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Init"] is True
    assert host["NetworkMode"] == "none"
    assert host["Privileged"] is False
    assert host["PidsLimit"] and host["Memory"] == 4 * 1024**3
    assert config["Cmd"] == ["python3", "/opt/tfenv/probe.py"]
    labels = config["Labels"]
    assert labels[LABEL_PROBE] == "1"
    assert labels["org.jupyter.tfenv.environment"] == "tf220"
    assert labels["org.jupyter.tfenv.image-id"] == engine.images.get(TF220).id
    assert KERNEL_LABEL not in labels  # never mistaken for a kernel (nor reaped as one)
    (mount,) = attrs["Mounts"]
    assert mount["Destination"] == "/opt/tfenv/probe.py" and mount["RW"] is False
    assert "NVIDIA_VISIBLE_DEVICES=void" in config["Env"]
    assert "CUDA_VISIBLE_DEVICES=" in config["Env"]


# --------------------------------------------------------------------------- other images


def test_image_without_tensorflow(engine, cache_dir):
    result = probe(engine, env_of(PY_NO_KERNEL_IMAGE), cache_dir)
    assert result["python"] == "3.11.2"
    assert result["tensorflow"] is None
    assert "No module named 'tensorflow'" in result["errors"]["tensorflow"]
    assert result["build"] is None and result["gpus"] is None and result["keras"] is None
    assert result["ipykernel"] is None


def test_image_without_python(engine, cache_dir):
    with pytest.raises(ProbeError) as info:
        probe(engine, env_of(NOPY_IMAGE), cache_dir)
    message = str(info.value)
    assert "tfenv-test/nopython:1 has no 'python3'" in message
    assert "Set 'python' in the catalog entry" in message
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []


def test_missing_image(engine, cache_dir):
    env = env_of("tfenv-test/not-built:9.9.9", env_id="missing")
    with pytest.raises(ProbeError) as info:
        probe(engine, env, cache_dir)
    assert "is not on this Docker engine" in str(info.value)
    assert "jupyter tfenv pull missing" in str(info.value)
    assert cached_probe(engine, env, cache_dir=cache_dir) is None


def test_probe_as_root_is_refused(engine, cache_dir):
    before = time.time()
    with pytest.raises(ProbeError, match=r"Refusing to probe as root \(uid 0\)"):
        probe_image(engine, env_of(PY_IMAGE), cache_dir=cache_dir, uid=0, gid=0)
    assert probe_events(engine, before, time.time() + 0.5) == []


@pytest.mark.slow
def test_timeout_kills_and_removes_the_probe(engine, cache_dir):
    started = time.monotonic()
    with pytest.raises(ProbeError) as info:
        probe(engine, env_of(TF220, env_id="tf220"), cache_dir, timeout=0.5)
    assert "did not finish within 0.5 s" in str(info.value)
    assert time.monotonic() - started < 30  # killed, not waited for
    assert probe_containers(engine) == []
    assert not cache_dir.exists() or list(cache_dir.iterdir()) == []


def test_gpu_environment_on_an_engine_without_nvidia_runtime(engine, cache_dir):
    if "nvidia" in engine.info().get("Runtimes", {}):
        pytest.skip("this engine has the NVIDIA runtime; the no-runtime path cannot be shown")
    env = env_of(PY_IMAGE, env_id="gpu", gpus="all")
    result = probe(engine, env, cache_dir)
    state = result["gpu_state"]
    assert state["state"] == "no_runtime"
    assert "NVIDIA Container Toolkit" in state["message"]
    assert "could not select device driver" in state["message"]
    # Probed anyway, without GPUs: everything else is known.
    assert result["python"] == "3.11.2" and result["ipykernel"]
    assert result["cached"] is False
    assert probe(engine, env, cache_dir)["gpu_state"] == state


def test_gpu_states_without_and_with_visible_gpus():
    """What a GPU environment says when the runtime gave GPUs (needs no GPU to check)."""
    env = env_of(TF220, env_id="gpu", gpus="all")
    cpu_build = {"is_cuda_build": False, "cuda_version": None}
    state = _gpu_state(env, {"tensorflow": "2.20.0", "gpus": [], "build": cpu_build})
    assert state["state"] == "not_visible"
    assert "is_cuda_build=false" in state["message"]
    assert "-gpu-jupyter" in state["message"]
    cuda_build = {"is_cuda_build": True, "cuda_version": "12.5.1"}
    state = _gpu_state(env, {"tensorflow": "2.20.0", "gpus": [], "build": cuda_build})
    assert state["state"] == "not_visible" and "CUDA 12.5.1" in state["message"]
    gpus = [{"name": "NVIDIA H100", "device": "/physical_device:GPU:0"}]
    state = _gpu_state(env, {"tensorflow": "2.20.0", "gpus": gpus, "build": cuda_build})
    assert state == {"state": "ok", "message": "TensorFlow sees 1 GPU(s): NVIDIA H100."}
    state = _gpu_state(env, {"tensorflow": None, "errors": {"tensorflow": "No module x"}})
    assert state["state"] == "unknown" and "No module x" in state["message"]


# --------------------------------------------------------------------------- the script


def test_probe_script_has_python36_syntax():
    """It runs in images we do not control, some with old interpreters."""
    ast.parse(PROBE_SCRIPT_PATH.read_text(), feature_version=(3, 6))


def test_probe_script_prints_json_when_tensorflow_kills_the_process(tmp_path):
    """A TF wheel needing AVX dies of SIGILL: the probe still answers, and says why."""
    fake = tmp_path / "site" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os, signal\n"
        "os.write(1, b'native noise on fd 1\\n')\n"
        "os.kill(os.getpid(), signal.SIGILL)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    done = subprocess.run(
        [sys.executable, str(PROBE_SCRIPT_PATH)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # the noise went to stderr, not into the JSON
    result = json.loads(lines[0])
    assert "native noise" in done.stderr
    assert result["tensorflow"] is None
    assert "SIGILL" in result["errors"]["tensorflow"]
    assert "AVX" in result["errors"]["tensorflow"]
    assert result["python"] == ".".join(map(str, sys.version_info[:3]))
