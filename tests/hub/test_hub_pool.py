"""The warm pool on JupyterHub: pool kernels start through the broker, as alice, and count
against her quota; a kernel start takes one (the broker keeps knowing it by its pool id).

The catalog gets an environment with ``pool_size: 1`` for this module only (the catalog
file is re-read when it changes); alice's server is restarted to start its pool, and
again at the end, which shuts the pool down.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import PY_IMAGE

from .conftest import HUB_CATALOG, MAX_KERNELS
from .harness import ALICE, KERNEL_LABEL, HubHarness, tfenv_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow]

POOLED = {"id": "pooled", "image": PY_IMAGE, "display_name": "Pooled (test)", "pool_size": 1}
ENV_LABEL = "org.jupyter.tfenv.environment"


def pool_containers(hub: HubHarness) -> list[Any]:
    return [
        c
        for c in tfenv_containers([ALICE])
        if c.labels.get(ENV_LABEL) == "pooled" and c.status == "running"
    ]


@pytest.fixture(scope="module")
def pooled(hub: HubHarness) -> Iterator[None]:
    assert hub.paths is not None
    catalog = {**HUB_CATALOG, "environments": [*HUB_CATALOG["environments"], POOLED]}
    hub.paths.catalog.write_text(yaml.safe_dump(catalog, sort_keys=False))
    hub.stop_server(ALICE)
    hub.start_server(ALICE)
    try:
        yield
    finally:
        hub.paths.catalog.write_text(yaml.safe_dump(HUB_CATALOG, sort_keys=False))
        with contextlib.suppress(Exception):
            hub.stop_server(ALICE)  # shuts the pool down
        hub.start_server(ALICE)


def test_a_kernel_start_takes_a_pool_kernel_started_through_the_broker(
    hub: HubHarness, pooled: None, kernels: Callable[..., str]
) -> None:
    hub.wait_for(
        lambda: "of 'pooled' ready (1/1)" in hub.log_tail(100000), 120, "alice's pool kernel"
    )
    (pool,) = pool_containers(hub)
    pool_id = pool.labels[KERNEL_LABEL]
    # Started by the broker as alice: her uid, the broker's hardening.
    assert pool.attrs["Config"]["User"].split(":")[0] == str(hub.users[ALICE].uid)
    assert pool.attrs["HostConfig"]["CapDrop"] == ["ALL"]

    kernel_id = kernels(ALICE, "pooled")
    assert kernel_id != pool_id
    assert f"takes pool kernel {pool_id}" in hub.log_tail(100000)
    status = hub.user_request("GET", ALICE, f"tfenv/kernels/{kernel_id}", hub.token(ALICE))
    assert status.status_code == 200, status.text
    assert status.json()["container_id"] == pool.id  # the container started ahead
    assert status.json()["live"]["running"] is True
    out = hub.run_code(ALICE, kernel_id, "import os\nprint(os.getuid(), os.getcwd())")
    uid, cwd = out.split()
    assert uid == str(hub.users[ALICE].uid)
    assert cwd == str(hub.users[ALICE].home)

    # The pool refills: alice now has two kernel containers, her quota (MAX_KERNELS).
    hub.wait_for(
        lambda: {c.id for c in pool_containers(hub)} - {pool.id}, 120, "the pool to refill"
    )
    assert MAX_KERNELS == 2
    refused = hub.start_kernel(ALICE, "py")
    assert refused.status_code == 429, f"{refused.status_code} {refused.text}"

    # Shut down through her server: the broker removes the taken container by its pool id.
    assert hub.shutdown_kernel(ALICE, kernel_id).status_code == 204
    assert pool.id not in {c.id for c in tfenv_containers([ALICE])}
    assert kernel_id not in [k["id"] for k in hub.list_kernels(ALICE)]
