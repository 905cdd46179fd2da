"""The README's quick start, first command: ``bash scripts/demo.sh``, in its check mode.

``scripts/demo.sh --check`` does what the quick start does (setup, the demo catalog's
images, the kernel runtime, JupyterLab with examples/jupyter_server_config.py) but does
not block: JupyterLab starts on a free loopback port, a TensorFlow 2.20 kernel starts
through the REST API, ``tf.__version__`` comes back over the kernel websocket, and
everything stops again. The test then checks for itself that nothing is left behind.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import docker
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_demo_check_runs_a_tensorflow_kernel_and_leaves_nothing(
    docker_engine: docker.DockerClient,
) -> None:
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    print(output[-4000:])
    assert result.returncode == 0, output[-6000:]

    # What a user sees: the pinned environment in the picker, its TF version, not root.
    assert "kernel picker offers tfenv-tf-2.20-cpu: 'TensorFlow 2.20.0 (CPU)'" in output
    version = re.search(r"tf\.__version__ = (\S+) \(kernel uid (\d+)\)", output)
    assert version is not None, output
    assert version.group(1) == "2.20.0"
    assert version.group(2) != "0"
    assert re.search(r"runs tensorflow/tensorflow:2\.20\.0-jupyter, image sha256:", output)
    # A folder made as the file browser's New Folder does is one the kernel writes into.
    assert re.search(r"kernel wrote data-\w+/out\.csv into a new folder", output), output
    # The first import of a cold kernel shows no TensorFlow start-up block (stderr).
    assert "tfenv-tf-2.19-cpu (cold): import tensorflow -> 2.19.0, stderr ''" in output

    started = re.search(r"check: JupyterLab \(pid (\d+)\) on (\S+), notebooks in (\S+)", output)
    assert started is not None, output
    pid, folder = int(started.group(1)), Path(started.group(3))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not folder.exists(), f"{folder} was left behind"
    assert not Path(f"{folder}.log").exists()
    left = docker_engine.containers.list(
        all=True, filters={"label": f"org.jupyter.tfenv.server-pid={pid}"}
    )
    assert left == [], [c.name for c in left]
