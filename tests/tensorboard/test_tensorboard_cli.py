"""``jupyter tfenv tensorboard``: through a real running server (a subprocess found by its
jupyter_server runtime file), and what it says when there is none. Then ``gc`` removes the
TensorBoard of a server that was killed (SIGKILL: no cleanup), and a server's stop
(SIGTERM) removes the one it runs."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import docker
import pytest
import requests
import yaml

from jupyter_tfenv.core.labels import LABEL_TENSORBOARD
from tests.conftest import CATALOG, KERNEL_GID, KERNEL_UID, run_tfenv_cli
from tests.support.server_process import start_tfenv_server

TB_OWNER = "tfenv-pytest-tensorboard-cli"
TOKEN = "tfenv-tensorboard-cli-token"  # a throwaway token of a loopback server


def my_tensorboards(client: docker.DockerClient) -> list[Any]:
    return client.containers.list(
        all=True, filters={"label": [LABEL_TENSORBOARD, f"org.jupyter.tfenv.owner={TB_OWNER}"]}
    )


@pytest.fixture
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    for container in my_tensorboards(client):
        container.remove(force=True)


def test_without_a_server_it_says_how_to_start_one(tmp_path):
    result = run_tfenv_cli("tensorboard", "tf220", "--runtime-dir", str(tmp_path))
    assert result.returncode == 1, result
    assert "no running Jupyter server" in result.stderr and "jupyter lab" in result.stderr
    result = run_tfenv_cli("tensorboard", "--runtime-dir", str(tmp_path))
    assert result.returncode == 2 and "--compare" in result.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_the_cli_prints_a_url_that_serves_tensorboard(tmp_path, images, runtime_root, engine):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    os.chown(notebooks, KERNEL_UID, KERNEL_GID)

    def server(name: str) -> Any:
        return start_tfenv_server(
            tmp_path / name,
            token=TOKEN,
            catalog=catalog,
            root_dir=notebooks,
            kernel_uid=KERNEL_UID,
            kernel_gid=KERNEL_GID,
            owner=TB_OWNER,
            runtime_root=runtime_root,
            name=name,
            reap_orphans=False,
        )

    first = server("first")
    runtime = str(tmp_path / "first" / "runtime")
    try:
        result = run_tfenv_cli("tensorboard", "tf220", "--runtime-dir", runtime)
        assert result.returncode == 0, result.stderr + first.log_tail()
        url = result.stdout.strip().splitlines()[-1]
        assert url == f"{first.url}/tfenv/tensorboard/env-tf220/?token={TOKEN}"
        page = requests.get(url, timeout=60)
        assert page.status_code == 200 and "<title>TensorBoard</title>" in page.text
        (container,) = my_tensorboards(engine)
        again = run_tfenv_cli("tensorboard", "tf220", "--runtime-dir", runtime)
        assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == url
        assert [c.id for c in my_tensorboards(engine)] == [container.id]  # reused
        refused = run_tfenv_cli("tensorboard", "missing", "--runtime-dir", runtime)
        assert refused.returncode == 2 and "jupyter tfenv pull missing" in refused.stderr
    finally:
        first.stop()  # SIGTERM: the server's stop removes its TensorBoard
    assert my_tensorboards(engine) == [], first.log_tail()

    # A killed server leaves its TensorBoard; `jupyter tfenv gc` removes it.
    second = server("second")
    try:
        opened = run_tfenv_cli(
            "tensorboard",
            "tf220",
            "--no-wait",
            "--runtime-dir",
            str(tmp_path / "second" / "runtime"),
        )
        assert opened.returncode == 0, opened.stderr
        assert len(my_tensorboards(engine)) == 1
    finally:
        second.proc.send_signal(signal.SIGKILL)
        second.proc.wait(30)
    # The owner is the one of this test's containers (never --all-users: other tests'
    # containers are not this test's to remove).
    gc_env = {"JUPYTERHUB_USER": TB_OWNER, "JUPYTER_TFENV_CATALOG": str(catalog)}
    dry = run_tfenv_cli("gc", "--dry-run", env=gc_env)
    assert dry.returncode == 0 and "would remove TensorBoard" in dry.stdout, dry
    assert len(my_tensorboards(engine)) == 1
    removed = run_tfenv_cli("gc", env=gc_env)
    assert removed.returncode == 0 and "removed TensorBoard" in removed.stdout, removed
    assert my_tensorboards(engine) == []
