"""Headless runs (nbclient, no server, no dialog) and resources chosen at launch.

The kernelspec ``jupyter tfenv kernelspecs`` writes carries the entry's choices; nbclient
runs a notebook on it in a subprocess, as a CI job would: a notebook that records a choice
(``metadata.tfenv.choices``) gets it through ``start_kwargs(nb)``, one without gets the
entry's defaults. The kernel reads its own cgroup memory limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jupyter_tfenv.provisioning.choices import CHOICES_KWARG, start_kwargs
from tests.conftest import KERNEL_GID, KERNEL_UID, PY_IMAGE, kernel_containers

pytestmark = pytest.mark.docker

MIB = 1024**2
ENTRY: dict[str, Any] = {
    "id": "headless",
    "image": PY_IMAGE,
    "resources": {"memory": "256m"},
    "choices": {"memory": ["256m", "512m"]},
}
#: The kernel's memory limit as its cgroup says it (v2, else v1).
LIMIT_CELL = (
    "import os\n"
    "for p in ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'):\n"
    "    if os.path.exists(p):\n"
    "        print(open(p).read().strip()); break\n"
)
RUN = """
import sys, nbformat
from nbclient import NotebookClient
from jupyter_tfenv.provisioning.choices import start_kwargs
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, kernel_name="tfenv-headless", timeout=120).execute(**start_kwargs(nb))
print("LIMIT", nb.cells[0].outputs[0]["text"].strip())
"""


def notebook(path: Path, choice: dict[str, Any] | None) -> Path:
    metadata: dict[str, Any] = {
        "kernelspec": {"name": "tfenv-headless", "display_name": "headless", "language": "python"}
    }
    if choice is not None:
        metadata["tfenv"] = {"environment": "headless", "choices": choice}
    cell = {
        "cell_type": "code",
        "metadata": {},
        "source": LIMIT_CELL,
        "outputs": [],
        "execution_count": None,
    }
    path.write_text(
        json.dumps({"cells": [cell], "metadata": metadata, "nbformat": 4, "nbformat_minor": 5})
    )
    return path


def test_start_kwargs_reads_the_notebooks_recorded_choice(tmp_path):
    choice = {"environment": "headless", "values": {"memory": "512m"}}
    nb = json.loads(notebook(tmp_path / "nb.ipynb", choice).read_text())
    assert start_kwargs(nb) == {CHOICES_KWARG: {"memory": "512m"}}
    nb["metadata"]["tfenv"]["choices"]["environment"] = "other"  # recorded for another env
    assert start_kwargs(nb) == {}
    nb["metadata"]["kernelspec"]["name"] = "python3"  # not a tfenv kernel: nothing to pass
    assert start_kwargs(nb) == {}
    assert start_kwargs({}) == {}


def test_nbclient_takes_the_recorded_choice_or_the_default(
    tmp_path, images, docker_engine, kernel_runtimes
):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"environments": [ENTRY]}))
    prefix = tmp_path / "prefix"
    written = subprocess.run(
        [
            *(sys.executable, "-m", "jupyter_tfenv.cli", "kernelspecs"),
            *("--prefix", str(prefix), "--catalog", str(catalog)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    spec = json.loads((prefix / "share/jupyter/kernels/tfenv-headless/kernel.json").read_text())
    config = spec["metadata"]["kernel_provisioner"]["config"]["environment"]
    assert config["choices"]["memory"] == ["256m", "512m"]  # the kernelspec carries them
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, KERNEL_UID, KERNEL_GID)
    env = {
        **os.environ,
        "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
        "JUPYTER_TFENV_KERNEL_UID": str(KERNEL_UID),
        "JUPYTER_TFENV_KERNEL_GID": str(KERNEL_GID),
    }
    limits = {}
    for name, choice in (
        ("recorded", {"environment": "headless", "values": {"memory": "512m"}}),
        ("default", None),
    ):
        path = notebook(work / f"{name}.ipynb", choice)
        result = subprocess.run(
            [sys.executable, "-c", RUN, str(path)],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        limits[name] = int(result.stdout.split("LIMIT", 1)[1].split()[0])
    assert limits == {"recorded": 512 * MIB, "default": 256 * MIB}
    assert kernel_containers(docker_engine) == []
    leftovers = docker_engine.containers.list(
        all=True, filters={"label": "org.jupyter.tfenv.environment=headless"}
    )
    assert leftovers == []


def test_where_a_start_finds_its_choice(tmp_path, monkeypatch):
    from jupyter_tfenv.catalog.validation import environment_from_dict
    from jupyter_tfenv.provisioning import choices

    env = {"id": "headless"}
    path = str(notebook(tmp_path / "nb.ipynb", {"environment": "headless", "values": {"a": 1}}))
    launch = {"env": {"JPY_SESSION_NAME": path}}
    # 1. the start_kernel argument wins (and is taken out of the arguments)
    kwargs = {**launch, CHOICES_KWARG: {"memory": "512m"}}
    assert choices.requested(kwargs, env) == {"memory": "512m"}
    assert CHOICES_KWARG not in kwargs
    # 2. what the dialog sent for this notebook and environment, once
    choices.remember(path, "headless", {"memory": "256m"})
    choices.remember(path, "other", {"memory": "1g"})
    assert choices.requested(dict(launch), env) == {"memory": "256m"}
    # 3. then the notebook's recorded choice; 4. nothing without a notebook
    assert choices.requested(dict(launch), env) == {"a": 1}
    assert choices.requested({}, env) == {}
    # A choice the dialog sent long ago is not taken.
    choices.remember(path, "headless", {"memory": "256m"})
    monkeypatch.setattr(choices, "PENDING_TTL", -1.0)
    assert choices.requested(dict(launch), env) == {"a": 1}
    # A start off the entry's defaults takes no pool kernel (they run with the defaults).
    entry = environment_from_dict(ENTRY)
    assert not choices.off_default(entry, {})
    assert not choices.off_default(entry, {"memory": "256m"})
    assert choices.off_default(entry, {"memory": "512m"})
    with pytest.raises(Exception, match="choose one of 256m, 512m") as err:
        choices.chosen_environment(entry, {"memory": "1g"})
    assert getattr(err.value, "status_code", None) == 400
