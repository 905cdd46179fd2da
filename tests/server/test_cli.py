"""``jupyter tfenv``: the command line, run for real as a subprocess."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from jupyter_tfenv.backends.docker.engine import SERVER_HOST, SERVER_PID, SERVER_START
from jupyter_tfenv.backends.docker.gpu import gpu_overview
from jupyter_tfenv.backends.docker.probe import probe_cache_path
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.core.labels import (
    LABEL_ENVIRONMENT,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_RUNTIME_DIR,
    LABEL_SERVER_HOST,
    LABEL_SERVER_PID,
    LABEL_SERVER_START,
)
from jupyter_tfenv.kernels.probe_output import PROBE_VERSION
from tests.conftest import OWNER, PY_IMAGE, TF220, run_tfenv_cli
from tests.kernels.test_compat import TF211_GPU, TF220_GPU
from tests.support.fake_nvml import FAKE_PYNVML
from tests.support.gpu_engine import TestEngine

tfenv = run_tfenv_cli


@pytest.fixture
def team_catalog(tmp_path: Path) -> Path:
    path = tmp_path / "team.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "environments": [
                    {"id": "tf220", "image": TF220},
                    {"id": "latest", "image": "tensorflow/tensorflow:latest"},
                ],
            }
        )
    )
    return path


def test_list_shows_environments_and_counts_problems(team_catalog):
    result = tfenv("list", "--catalog", str(team_catalog))
    assert result.returncode == 0
    assert "tf220" in result.stdout and TF220 in result.stdout and "TF 2.20.0" in result.stdout
    assert "1 entry left out" in result.stdout
    data = json.loads(tfenv("list", "--json", "--catalog", str(team_catalog)).stdout)
    assert [e["id"] for e in data["environments"]] == ["tf220"]
    assert data["problems"][0]["field"] == "image"


def test_check_fails_on_floating_tags_for_ci(team_catalog):
    result = tfenv("check", "--offline", "--catalog", str(team_catalog))
    assert result.returncode == 1
    assert f"ERROR  {team_catalog}: environment 'latest': image: " in result.stdout
    assert "floating tag 'latest'" in result.stdout


@pytest.mark.docker
def test_check_reports_missing_images(tmp_path, images):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "environments": [
                    {"id": "here", "image": PY_IMAGE},
                    {"id": "gone", "image": "tfenv-test/gone:1.0"},
                ]
            }
        )
    )
    result = tfenv("check", "--json", "--catalog", str(path))
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False
    (problem,) = data["problems"]
    assert problem["entry"] == "'gone'" and "docker pull tfenv-test/gone:1.0" in problem["message"]
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"environments": [{"id": "here", "image": PY_IMAGE}]}))
    assert tfenv("check", "--catalog", str(ok)).returncode == 0


def test_check_says_when_docker_is_down(team_catalog, tmp_path):
    good = tmp_path / "g.yaml"
    good.write_text(yaml.safe_dump({"environments": [{"id": "a", "image": TF220}]}))
    host = f"unix://{tmp_path}/none.sock"
    result = tfenv("check", "--catalog", str(good), env={"DOCKER_HOST": host})
    assert result.returncode == 1
    # One line, in words: which engine, what failed, what to do; no traceback, no raw error.
    (line,) = result.stdout.splitlines()
    assert line.startswith(
        f"ERROR  docker: Cannot reach the Docker engine at {host}: "
        "the socket does not exist (is dockerd running?). Start the Docker engine"
    ), line
    assert "FileNotFoundError" not in line and "Errno" not in line
    assert "Traceback" not in result.stderr
    data = json.loads(
        tfenv("check", "--json", "--catalog", str(good), env={"DOCKER_HOST": host}).stdout
    )
    assert data["ok"] is False
    assert data["engine"]["reachable"] is False and data["engine"]["live_restore"] is None
    assert data["engine"]["host"] == host
    assert data["engine"]["error"] == data["problems"][0]["message"]


def engine_catalog(tmp_path: Path, image: str) -> Path:
    path = tmp_path / "engine.yaml"
    path.write_text(yaml.safe_dump({"environments": [{"id": "here", "image": image}]}))
    return path


def assert_live_restore_reported(stdout: str, host: str, *, on: bool, version: str) -> None:
    engine_lines = [line for line in stdout.splitlines() if f"Docker engine {version} at" in line]
    assert len(engine_lines) == 1, stdout
    if on:
        assert engine_lines[0] == (
            f"ok  Docker engine {version} at {host}: "
            "live-restore is on (kernels outlive an engine restart)"
        )
        assert "WARNING" not in stdout
    else:
        assert engine_lines[0].startswith(
            f"WARNING  Docker engine {version} at {host}: live-restore is off: "
            "an engine restart or upgrade"
        ), stdout
        assert "kills every kernel container" in stdout
        assert "variables are lost" in stdout and "checkpoints in $TFENV_CHECKPOINT_DIR" in stdout
        assert '"live-restore": true to /etc/docker/daemon.json' in stdout
        assert "sudo systemctl reload docker" in stdout
        assert "docs/operations.md" in stdout


@pytest.mark.docker
def test_check_reports_the_main_engines_live_restore(tmp_path, images):
    info = images.info()
    on = bool(info["LiveRestoreEnabled"])
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    path = engine_catalog(tmp_path, PY_IMAGE)
    result = tfenv("check", "--catalog", str(path))
    # A warning, not an error: the images are there, so the check passes either way.
    assert result.returncode == 0, result.stdout + result.stderr
    assert_live_restore_reported(result.stdout, host, on=on, version=info["ServerVersion"])
    data = json.loads(tfenv("check", "--json", "--catalog", str(path)).stdout)
    assert data["ok"] is True
    assert data["engine"] == {
        "host": host,
        "reachable": True,
        "live_restore": on,
        "version": info["ServerVersion"],
        "error": None,
    }
    assert len(data["warnings"]) == (0 if on else 1)


def tiny_image(client: docker.DockerClient, reference: str) -> None:
    """An image of one small file (``docker import``): all ``check`` asks is that it exists."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    repository, tag = reference.rsplit(":", 1)
    client.api.import_image_from_data(data.getvalue(), repository=repository, tag=tag)


@pytest.mark.docker
@pytest.mark.parametrize("live_restore", [True, False], ids=["live-restore", "no-live-restore"])
def test_check_on_an_engine_with_and_without_live_restore(tmp_path, images, live_restore):
    engine = TestEngine(live_restore=live_restore)
    try:
        client = engine.start()
        assert client.info()["LiveRestoreEnabled"] is live_restore
        tiny_image(client, "tfenv-test/tiny:1")
        version = client.info()["ServerVersion"]
        path = engine_catalog(tmp_path, "tfenv-test/tiny:1")
        result = tfenv("check", "--catalog", str(path), env={"DOCKER_HOST": engine.url})
        assert result.returncode == 0, result.stdout + result.stderr
        assert_live_restore_reported(result.stdout, engine.url, on=live_restore, version=version)
        assert "ok  here: tfenv-test/tiny:1" in result.stdout
        data = json.loads(
            tfenv("check", "--json", "--catalog", str(path), env={"DOCKER_HOST": engine.url}).stdout
        )
        assert data["ok"] is True
        assert data["engine"]["reachable"] is True
        assert data["engine"]["live_restore"] is live_restore
        assert data["engine"]["version"] == version
        if live_restore:
            assert data["warnings"] == []
        else:
            (warning,) = data["warnings"]
            assert "live-restore is off" in warning and "systemctl reload docker" in warning
    finally:
        engine.stop()


def test_check_offline_does_not_ask_the_engine(tmp_path):
    path = engine_catalog(tmp_path, TF220)
    host = f"unix://{tmp_path}/none.sock"
    result = tfenv(
        "check", "--offline", "--json", "--catalog", str(path), env={"DOCKER_HOST": host}
    )
    assert result.returncode == 0
    assert json.loads(result.stdout)["engine"] is None


def test_pin_command():
    assert tfenv("pin", "localhost:5000/team/tf:2.20.0").returncode == 0
    result = tfenv("pin", "localhost:5000/team/tf")
    assert result.returncode == 2
    assert "has no tag" in result.stderr


def test_kernelspecs_written_to_disk_match_the_server_ones(team_catalog, tmp_path):
    result = tfenv("kernelspecs", "--prefix", str(tmp_path / "env"), "--catalog", str(team_catalog))
    # The catalog has a problem entry, so the exit code says so; the good one is written.
    assert result.returncode == 1
    folder = tmp_path / "env" / "share" / "jupyter" / "kernels" / "tfenv-tf220"
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "tfenv-docker"
    assert spec["metadata"]["kernel_provisioner"]["config"]["environment"]["image"] == TF220
    # Isolated (-I): no code of the user's runs before the launcher's (issue 17).
    assert spec["argv"] == ["python3", "-I", "/opt/tfenv/launch.py", "-f", "{connection_file}"]
    assert (folder / "logo-64x64.png").is_file()
    assert not (folder.parent / "tfenv-latest").exists()


@pytest.mark.docker
def test_gc_removes_containers_of_dead_servers_only(docker_engine, images, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    rundir = tmp_path / "rt" / "orphan"
    rundir.mkdir(parents=True)
    common = {LABEL_OWNER: OWNER, LABEL_SERVER_HOST: SERVER_HOST, LABEL_ENVIRONMENT: "py"}
    orphan = docker_engine.containers.create(
        PY_IMAGE,
        ["sleep", "600"],
        network_mode="none",
        labels={
            **common,
            LABEL_KERNEL_ID: "orphan-kernel",
            LABEL_SERVER_PID: str(dead.pid),
            LABEL_SERVER_START: "1",
            LABEL_RUNTIME_DIR: str(rundir),
        },
    )
    alive = docker_engine.containers.create(
        PY_IMAGE,
        ["sleep", "600"],
        network_mode="none",
        labels={
            **common,
            LABEL_KERNEL_ID: "alive-kernel",
            LABEL_SERVER_PID: str(SERVER_PID),
            LABEL_SERVER_START: SERVER_START,
        },
    )
    config = tmp_path / "cfg.json"
    config.write_text(
        json.dumps(
            {"DockerKernelProvisioner": {"owner": OWNER, "runtime_root": str(tmp_path / "rt")}}
        )
    )
    try:
        dry = tfenv("gc", "--dry-run", "--config", str(config))
        assert dry.returncode == 0, dry.stderr
        assert "would remove" in dry.stdout and "orphan-kernel" in dry.stdout
        assert "alive-kernel" not in dry.stdout
        orphan.reload()  # still there after a dry run

        result = tfenv("gc", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert "removed" in result.stdout and "orphan-kernel" in result.stdout
        names = [c.id for c in docker_engine.containers.list(all=True)]
        assert orphan.id not in names
        assert alive.id in names
        assert not rundir.exists()
    finally:
        for container in (orphan, alive):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


def test_runtime_list(tmp_path):
    result = tfenv("runtime", "list", "--runtimes-dir", str(tmp_path))
    assert result.returncode == 0
    assert "No kernel runtimes" in result.stdout


@pytest.mark.docker
def test_pull_from_an_unreachable_registry_says_so(tmp_path, images):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"environments": [{"id": "far", "image": "127.0.0.1:5999/team/tf:2.20.0"}]})
    )
    result = tfenv("pull", "far", "--catalog", str(path))
    assert result.returncode == 2
    assert "Pulling 127.0.0.1:5999/team/tf:2.20.0 (environment 'far')" in result.stderr
    assert "Cannot reach" in result.stderr or "reach the registry" in result.stderr


def test_pull_of_an_unknown_environment(team_catalog):
    result = tfenv("pull", "nope", "--catalog", str(team_catalog))
    assert result.returncode == 2
    assert "No environment 'nope'" in result.stderr


# -- GPU compatibility (issue 20 item 2) ------------------------------------------------------
# The host's NVML facts come from the stand-in pynvml of tests/support/fake_nvml.py.


def gpu_catalog(tmp_path: Path) -> Path:
    path = tmp_path / "gpu.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "environments": [
                    {"id": "gpu", "image": PY_IMAGE, "gpus": 1},
                    {"id": "cpu", "image": PY_IMAGE},
                ]
            }
        )
    )
    return path


def cache_probe(client: docker.DockerClient, data_dir: Path, facts: dict[str, Any]) -> None:
    """Put a probe of the 'gpu' environment in the cache, as `jupyter tfenv probe` would."""
    env = environment_from_dict({"id": "gpu", "image": PY_IMAGE, "gpus": 1})
    image_id = client.images.get(PY_IMAGE).id
    path = probe_cache_path(data_dir / "jupyter_tfenv" / "probes", image_id, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = {**facts, "environment": "gpu", "image": PY_IMAGE, "image_id": image_id}
    path.write_text(json.dumps({**stored, "probe_version": PROBE_VERSION}))


@pytest.mark.docker
def test_check_says_unknown_for_gpu_environments_it_cannot_judge(tmp_path, images):
    data_dir = tmp_path / "data"
    env = {"JUPYTER_DATA_DIR": str(data_dir)}
    path = gpu_catalog(tmp_path)
    # Never probed: unknown, and how to probe. The check itself starts no probe container.
    result = tfenv("check", "--catalog", str(path), env=env)
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not an error
    assert (
        "WARNING  environment 'gpu': compatibility unknown: 'gpu' has not been probed on this "
        "image, so the CUDA it was built for is unknown: run `jupyter tfenv probe gpu` (or "
        "Probe in the panel's environment details), then check again."
    ) in result.stdout.splitlines()
    assert "environment 'cpu'" not in result.stdout
    data = json.loads(tfenv("check", "--json", "--catalog", str(path), env=env).stdout)
    assert data["compatibility"]["gpu"]["state"] == "unknown"
    assert data["compatibility"]["gpu"]["details"]["missing"] == "probe"
    assert data["compatibility"]["cpu"]["state"] == "not_applicable"
    assert any("compatibility unknown" in w for w in data["warnings"])
    assert not (data_dir / "jupyter_tfenv" / "probes").exists()  # nothing was probed

    # Probed (TF 2.20's GPU build), but this host has no NVML: still unknown, saying why.
    cache_probe(images, data_dir, TF220_GPU)
    overview = gpu_overview()
    data = json.loads(tfenv("check", "--json", "--catalog", str(path), env=env).stdout)
    verdict = data["compatibility"]["gpu"]
    if overview["state"] == "ok":  # a real GPU host: a real verdict
        assert verdict["state"] in ("ok", "incompatible")
        return
    assert verdict["state"] == "unknown"
    assert verdict["message"] == (
        "Cannot read the host's driver, so whether CUDA 12.5.1 runs here is unknown: "
        + overview["message"]
    )
    assert verdict["details"]["build"]["cuda_version"] == "12.5.1"
    result = tfenv("check", "--catalog", str(path), env=env)
    assert result.returncode == 0
    assert (
        "WARNING  environment 'gpu': compatibility unknown: Cannot read the host's driver"
        in result.stdout
    )


@pytest.mark.docker
def test_check_fails_on_an_incompatible_gpu_environment(tmp_path, images):
    """NVML-shaped facts from a stand-in pynvml: a CUDA 11.4 driver, an image built for 12.5."""
    data_dir = tmp_path / "data"
    fake = tmp_path / "nvml"
    fake.mkdir()
    (fake / "pynvml.py").write_text(FAKE_PYNVML)
    env = {"JUPYTER_DATA_DIR": str(data_dir), "PYTHONPATH": str(fake)}
    path = gpu_catalog(tmp_path)
    cache_probe(images, data_dir, TF220_GPU)
    result = tfenv("check", "--catalog", str(path), env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [x for x in result.stdout.splitlines() if "environment 'gpu'" in x]
    assert line == (
        "ERROR  environment 'gpu': incompatible: TensorFlow in 'gpu' was built for CUDA 12.5, "
        "but the host's driver 470.82.01 supports CUDA up to 11.4. Install an NVIDIA driver "
        ">= 555.42.02 (CUDA 12.5); at least >= 525.60.13 (CUDA 12.0), enough through CUDA "
        "minor-version compatibility when every GPU has native code in the build, or use an "
        "image built for CUDA 11.4 or older."
    )
    data = json.loads(tfenv("check", "--json", "--catalog", str(path), env=env).stdout)
    assert data["ok"] is False
    assert data["compatibility"]["gpu"]["state"] == "incompatible"
    assert data["compatibility"]["gpu"]["details"]["host"] == {
        "driver_version": "470.82.01",
        "cuda_driver_version": "11.4",
    }
    # The same image built for this driver's CUDA (TF 2.11, CUDA 11.2) runs on the A100.
    cache_probe(images, data_dir, TF211_GPU)
    result = tfenv("check", "--catalog", str(path), env=env)
    assert result.returncode == 0, result.stdout
    assert (
        "ok  environment 'gpu': compatible: 'gpu' (built for CUDA 11.2, sm_35, sm_50, sm_60, "
        "sm_70, sm_75, compute_80) runs on GPU 0 (NVIDIA A100-SXM4-40GB, compute capability "
        "8.0); the host's driver 470.82.01 supports CUDA up to 11.4."
    ) in result.stdout.splitlines()
