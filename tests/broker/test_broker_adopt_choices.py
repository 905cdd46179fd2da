"""A kernel adopted through the real broker keeps its choice on restart (docs/choices.md).

The broker labels the container with the resources its start chose and reports them
(``GET /api/kernels/<id>``: ``choices``); a server that adopts the running kernel
(``keep_kernels_on_stop``) takes them from there, so that a restart of the adopted kernel
gets the chosen memory again, not the entry's default (docker inspect).
"""

from __future__ import annotations

import json

import pytest

from jupyter_tfenv.core.labels import LABEL_CHOICES
from jupyter_tfenv.provisioning.provisioner import ADOPT_KWARG
from tests.broker.test_broker_choices import MIB, broker, catalog_path, jp_server_config
from tests.broker.test_broker_e2e import TOKEN
from tests.broker.test_broker_hardening import fetch

pytestmark = pytest.mark.docker

__all__ = ["broker", "catalog_path", "jp_server_config"]  # fixtures


async def test_an_adopted_broker_kernel_restarts_with_its_choice(jp_serverapp, broker):
    broker.start()
    km = jp_serverapp.kernel_manager
    kernel_id = await km.start_kernel(
        kernel_name="tfenv-py-choices", path="nb.ipynb", tfenv_choices={"memory": "512m"}
    )
    try:
        code, info = await fetch(broker, "GET", f"api/kernels/{kernel_id}", TOKEN)
        assert code == 200, info
        assert info["choices"] == {"gpus": 0, "memory": "512m"}, info
        (container,) = broker.containers(kernel_id)
        assert json.loads(container.labels[LABEL_CHOICES]) == {"gpus": 0, "memory": "512m"}

        # The server lets go of the kernel (as a killed server would) and adopts it again,
        # as the next server does: it knows of the choice only what the broker says.
        km.remove_kernel(kernel_id)
        adopt = {
            "runtime_dir": info["runtime_dir"],
            "workdir": info["workdir"],
            "container_kernel_id": kernel_id,
        }
        await km.start_kernel(
            kernel_id=kernel_id,
            kernel_name="tfenv-py-choices",
            path="nb.ipynb",
            **{ADOPT_KWARG: adopt},
        )
        (adopted,) = broker.containers(kernel_id)
        assert adopted.id == container.id, "adoption started a new container"

        await km.restart_kernel(kernel_id)
        (restarted,) = broker.containers(kernel_id)
        assert restarted.id != container.id, "the restart kept the old container"
        assert restarted.attrs["HostConfig"]["Memory"] == 512 * MIB, (
            "the restart of the adopted kernel did not keep its choice (512m): got "
            f"{restarted.attrs['HostConfig']['Memory']} bytes"
        )
    finally:
        if kernel_id in km:
            await km.shutdown_kernel(kernel_id)
