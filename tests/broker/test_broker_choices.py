"""The real broker and resources chosen at launch (docs/choices.md).

The broker checks a start's ``choices`` against its own catalog (400 with the allowed
values, whatever the single-user server let through), counts the chosen GPUs against the
user's GPU quota (429), and gives the container what was chosen (docker inspect).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from tests.broker.test_broker_e2e import TOKEN, Broker
from tests.broker.test_broker_hardening import fetch
from tests.conftest import CATALOG, PY_IMAGE

pytestmark = pytest.mark.docker

MIB = 1024**2
ENTRY: dict[str, Any] = {
    "id": "py-choices",
    "image": PY_IMAGE,
    "gpus": 1,
    "resources": {"memory": "256m"},
    "choices": {"gpus": [0, 1, 2], "memory": ["256m", "512m"], "default": {"gpus": 0}},
}


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": [*CATALOG, ENTRY]}))
    return path


@pytest.fixture
def broker(catalog_path: Path, jp_root_dir: Path, tmp_path: Path) -> Iterator[Broker]:
    pytest.importorskip("jupyterhub")
    running = Broker(catalog_path, jp_root_dir, tmp_path)
    running.app.max_gpus_per_user = 1
    yield running
    assert not running.close(), "the test left broker kernel containers behind"


@pytest.fixture
def jp_server_config(jp_server_config: Config, broker: Broker) -> Config:
    jp_server_config.DockerKernelProvisioner.broker_url = broker.url
    jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    return jp_server_config


async def test_the_broker_refuses_a_choice_outside_the_entry(broker, jp_root_dir):
    broker.start()
    base = {"kernel_id": str(uuid.uuid4()), "cwd": str(jp_root_dir)}
    code, body = await fetch(
        broker,
        "POST",
        "api/kernels",
        TOKEN,
        {**base, "environment": "py-choices", "choices": {"memory": "64g"}},
    )
    assert code == 400, body
    assert "choose one of 256m, 512m" in body["message"]
    assert body["reason"] == "choice not offered"
    code, body = await fetch(
        broker, "POST", "api/kernels", TOKEN, {**base, "environment": "py", "choices": {"cpus": 8}}
    )
    assert code == 400 and "offers no choices" in body["message"]
    code, body = await fetch(
        broker, "POST", "api/kernels", TOKEN, {**base, "environment": "py-choices", "choices": 4}
    )
    assert code == 400 and "'choices' must be an object" in body["message"]
    assert not broker.containers()


async def test_the_broker_applies_the_choice_and_the_gpu_quota(jp_serverapp, broker):
    broker.start()
    km = jp_serverapp.kernel_manager
    # Two GPUs are offered by the entry, but this user may hold one: the broker's quota.
    with pytest.raises(Exception, match=r"needs 2 more; the limit per user is 1"):
        await km.start_kernel(
            kernel_name="tfenv-py-choices", path="nb.ipynb", tfenv_choices={"gpus": 2}
        )
    assert not broker.containers()
    kernel_id = await km.start_kernel(
        kernel_name="tfenv-py-choices", path="nb.ipynb", tfenv_choices={"memory": "512m"}
    )
    try:
        (container,) = broker.containers(kernel_id)
        assert container.attrs["HostConfig"]["Memory"] == 512 * MIB
        assert container.labels["org.jupyter.tfenv.gpus"] == "0"  # the default: no GPU
    finally:
        await km.shutdown_kernel(kernel_id)
    assert json.dumps(ENTRY)  # (the entry is plain data: the kernelspec carries it)
