"""The wheel and sdist as users get them: ``python -m build`` on a fresh clone.

pypa/build's isolated environment holds only pyproject.toml's build requirements, so a
build requirement that only a developer's machine has fails here. From a fresh clone
(no node_modules, no built labextension), the build runs npm and JupyterLab's
jupyter-builder; the sdist must carry the prebuilt labextension, so that a wheel builds
from it on a machine without Node.js.
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.support.dist import Dists, build_wheel

pytestmark = pytest.mark.slow

LABEXT_FILES = ("package.json", "static/style.js")


def version() -> str:
    return json.loads((Path(__file__).resolve().parents[2] / "package.json").read_text())["version"]


def test_sdist_holds_sources_and_the_prebuilt_labextension(dists: Dists) -> None:
    assert dists.sdist.name == f"jupyter_tfenv-{version()}.tar.gz"
    with tarfile.open(dists.sdist) as sdist:
        names = set(sdist.getnames())
    top = f"jupyter_tfenv-{version()}"
    for name in (
        "pyproject.toml",
        "package.json",
        "package-lock.json",
        "install.json",
        "schema/catalog.schema.json",
        "src/index.ts",
        "jupyter_tfenv/__init__.py",
        "jupyter-config/jupyter_server_config.d/jupyter_tfenv.json",
        *(f"jupyter_tfenv/labextension/{f}" for f in LABEXT_FILES),
    ):
        assert f"{top}/{name}" in names, f"{name} is missing from {dists.sdist.name}"
    assert not any("/node_modules/" in n or "/.venv/" in n for n in names)


def wheel_problems(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        data = f"jupyter_tfenv-{version()}.data/data"
        wanted = [
            "jupyter_tfenv/__init__.py",
            "jupyter_tfenv/openapi.yaml",
            "jupyter_tfenv/_version.py",
            "jupyter_tfenv/_schema/catalog.schema.json",
            "jupyter_tfenv/kernels/in_container/probe.py",
            f"{data}/share/jupyter/labextensions/jupyter-tfenv/install.json",
            f"{data}/etc/jupyter/jupyter_server_config.d/jupyter_tfenv.json",
            *(f"{data}/share/jupyter/labextensions/jupyter-tfenv/{f}" for f in LABEXT_FILES),
        ]
        problems = [f"{name} is missing" for name in wanted if name not in names]
        if problems:
            return problems
        labext = json.loads(
            zf.read(f"{data}/share/jupyter/labextensions/jupyter-tfenv/package.json")
        )
        if labext.get("name") != "jupyter-tfenv" or labext.get("version") != version():
            problems.append(
                f"labextension package.json: {labext.get('name')} {labext.get('version')}"
            )
        bundle = labext.get("jupyterlab", {}).get("_build", {}).get("load", "")
        if f"{data}/share/jupyter/labextensions/jupyter-tfenv/{bundle}" not in names:
            problems.append(f"the labextension's entry point {bundle!r} is not in the wheel")
        meta = zf.read(f"jupyter_tfenv-{version()}.dist-info/entry_points.txt").decode()
        if (
            "tfenv-docker = jupyter_tfenv.provisioning.provisioner:TFEnvKernelProvisioner"
            not in meta
        ):
            problems.append(f"no tfenv-docker kernel provisioner entry point:\n{meta}")
    return problems


def test_wheel_from_the_sdist_holds_the_labextension(dists: Dists) -> None:
    assert dists.wheel.name == f"jupyter_tfenv-{version()}-py3-none-any.whl"
    assert wheel_problems(dists.wheel) == []


def test_the_sdist_builds_a_wheel_without_nodejs(dists: Dists, tmp_path: Path) -> None:
    with tarfile.open(dists.sdist) as sdist:
        sdist.extractall(tmp_path / "src", filter="data")
    (source,) = (tmp_path / "src").iterdir()
    # pip and Python only: no node, npm or jupyter-builder anywhere on PATH.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("sh", "bash", "env", "uname"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    assert shutil.which("node", path=str(tools)) is None
    wheel = build_wheel(source, tmp_path / "dist", python=sys.executable, PATH=str(tools))
    assert wheel_problems(wheel) == []
    assert not (source / "node_modules").exists(), "the wheel build ran npm"
