"""The third-party kernel conformance suite passes against a tfenv kernelspec."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import KERNEL_GID, KERNEL_UID, PY_IMAGE, kernel_containers

pytestmark = pytest.mark.docker
HERE = Path(__file__).parents[1] / "support"


def test_jupyter_kernel_test_suite(tmp_path, images, docker_engine, kernel_runtimes):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"environments": [{"id": "conf", "image": PY_IMAGE}]}))
    prefix = tmp_path / "prefix"
    written = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_tfenv.cli",
            "kernelspecs",
            "--prefix",
            str(prefix),
            "--catalog",
            str(catalog),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    workdir = tmp_path / "work"
    workdir.mkdir()
    os.chown(workdir, KERNEL_UID, KERNEL_GID)
    config = tmp_path / "config"
    config.mkdir()
    # Outside a server, the provisioner reads the usual Jupyter config files.
    env = {
        **os.environ,
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
        "JUPYTER_TFENV_KERNEL_UID": str(KERNEL_UID),
        "JUPYTER_TFENV_KERNEL_GID": str(KERNEL_GID),
        "TFENV_CONFORMANCE_KERNEL": "tfenv-conf",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "filterwarnings=default",
            str(HERE / "kernel_conformance.py"),
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
    # The suite's kernel was shut down with its container.
    leftovers = docker_engine.containers.list(
        all=True, filters={"label": "org.jupyter.tfenv.environment=conf"}
    )
    assert leftovers == []
    assert kernel_containers(docker_engine) == []
