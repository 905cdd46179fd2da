"""Through the real server: a dangerous catalog entry is reported, never offered, never run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.provisioning.kernelspecs import RESOURCES_DIR, kernelspec_dict
from tests.conftest import CATALOG, PY_IMAGE, start_error

pytestmark = pytest.mark.docker

DANGEROUS: list[dict[str, Any]] = [
    {"id": "hostnet", "image": PY_IMAGE, "network": "host"},
    {"id": "preload", "image": PY_IMAGE, "env": {"LD_PRELOAD": "/tmp/x.so"}},
    {"id": "etc", "image": PY_IMAGE, "mounts": [{"source": "/etc", "target": "/host-etc"}]},
]


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    link = tmp_path / "dataset"
    link.symlink_to("/var/run/docker.sock")
    sock = {"id": "sock", "image": PY_IMAGE, "mounts": [{"source": str(link), "target": "/d"}]}
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": [*CATALOG, *DANGEROUS, sock]}))
    return path


async def test_dangerous_entries_are_reported_and_not_offered(jp_fetch, catalog_path):
    body = json.loads((await jp_fetch("tfenv", "environments")).body)
    ids = {e["id"] for e in body["environments"]}
    assert "py" in ids and not ids & {"hostnet", "preload", "etc", "sock"}
    problems = {p["entry"]: p for p in body["problems"]}
    expected = {"'hostnet'": "network", "'preload'": "env", "'etc'": "mounts", "'sock'": "mounts"}
    for entry, field in expected.items():
        problem = problems[entry]
        assert problem["source"] == str(catalog_path) and problem["field"] == field
    assert "host's network namespace" in problems["'hostnet'"]["message"]
    assert "LD_* and PYTHON*" in problems["'preload'"]["message"]
    assert "system folder /etc" in problems["'etc'"]["message"]
    assert "resolves to" in problems["'sock'"]["message"]

    specs = json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    assert "tfenv-py" in specs
    assert not {"tfenv-hostnet", "tfenv-preload", "tfenv-etc", "tfenv-sock"} & set(specs)


async def test_a_stale_kernelspec_on_disk_with_host_network_does_not_start(
    jp_fetch, jp_data_dir, docker_engine
):
    # Written before the rule existed (or by hand): the provisioner validates it again.
    spec = kernelspec_dict(environment_from_dict({"id": "stale", "image": PY_IMAGE}))
    spec["metadata"]["kernel_provisioner"]["config"]["environment"]["network"] = "host"
    folder = Path(jp_data_dir) / "kernels" / "tfenv-stale"
    folder.mkdir(parents=True)
    for resource in RESOURCES_DIR.iterdir():
        if resource.is_file():
            (folder / resource.name).write_bytes(resource.read_bytes())
    (folder / "kernel.json").write_text(json.dumps(spec))
    assert "tfenv-stale" in json.loads((await jp_fetch("api", "kernelspecs")).body)["kernelspecs"]
    before = {c.id for c in docker_engine.containers.list(all=True)}
    code, message = await start_error(jp_fetch, "tfenv-stale")
    assert code == 400, message
    assert "network" in message and "host's network namespace" in message
    assert {c.id for c in docker_engine.containers.list(all=True)} <= before
