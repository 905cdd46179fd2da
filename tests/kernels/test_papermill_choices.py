"""papermill runs and resources chosen at launch (docs/choices.md).

``papermill --engine tfenv`` (the engine of the ``papermill.engine`` entry point) runs a notebook
on the real test engine as a CI job would: a notebook that records a choice gets it, one
that records none gets the entry's defaults, also with ``-k`` naming the kernel. The
kernel reads its own cgroup memory limit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from jupyter_tfenv.provisioning.choices import CHOICES_KWARG
from tests.conftest import KERNEL_GID, KERNEL_UID, kernel_containers
from tests.kernels.test_headless_choices import ENTRY, MIB, notebook

pytestmark = pytest.mark.docker

RECORDED = {"environment": "headless", "values": {"memory": "512m"}}


def test_the_engine_takes_an_explicit_choice_else_the_recorded_one():
    pytest.importorskip("papermill")
    from jupyter_tfenv.provisioning.papermill_engine import manager_class, run_arguments

    nb: dict[str, Any] = {
        "metadata": {"kernelspec": {"name": "tfenv-headless"}, "tfenv": {"choices": RECORDED}}
    }
    kwargs: dict[str, Any] = {CHOICES_KWARG: {"memory": "256m"}, "log_output": True}
    assert run_arguments(nb, "tfenv-headless", kwargs) == {CHOICES_KWARG: {"memory": "256m"}}
    assert kwargs == {"log_output": True}  # taken out: nbclient does not know it
    assert run_arguments(nb, "tfenv-headless", {}) == {CHOICES_KWARG: {"memory": "512m"}}
    # -k names another environment's kernel: the recorded choice is not for it.
    assert run_arguments(nb, "tfenv-other", {}) == {}
    with pytest.raises(Exception, match="must be a mapping"):
        run_arguments(nb, "tfenv-headless", {CHOICES_KWARG: "512m"})
    assert manager_class({CHOICES_KWARG: {"memory": "512m"}}).start_arguments == {
        CHOICES_KWARG: {"memory": "512m"}
    }


def test_papermill_runs_take_the_recorded_choice_or_the_default(
    tmp_path, images, docker_engine, kernel_runtimes
):
    pytest.importorskip("papermill")
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
    for name, choice, extra in (
        ("recorded", RECORDED, []),
        ("default", None, []),
        ("named kernel, nothing recorded", None, ["-k", "tfenv-headless"]),
    ):
        source = notebook(work / "in.ipynb", choice)
        out = work / "out.ipynb"
        result = subprocess.run(
            [sys.executable, "-m", "papermill", "--engine", "tfenv", *extra, str(source), str(out)],
            capture_output=True,
            text=True,
            cwd=work,
            env=env,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, (
            f"papermill --engine tfenv failed ({name}); is the engine registered (pip install -e "
            f".)?\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
        ran = json.loads(out.read_text())
        limits[name] = int("".join(ran["cells"][0]["outputs"][0]["text"]).strip())
    assert limits == {
        "recorded": 512 * MIB,
        "default": 256 * MIB,
        "named kernel, nothing recorded": 256 * MIB,
    }
    assert kernel_containers(docker_engine) == []
