"""Idle tfenv kernels are shut down and their containers removed (real Docker)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from jupyter_tfenv.lifecycle.culling import idle_timeout_of
from tests.conftest import CATALOG, PY_IMAGE, kernel_containers, run_code, start_kernel

pytestmark = pytest.mark.docker

DEADLINE = 90.0


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    envs = [*CATALOG, {"id": "idle3", "image": PY_IMAGE, "idle_timeout": 3}]
    path.write_text(yaml.safe_dump({"version": 1, "environments": envs}))
    return path


@pytest.fixture
def cull_config() -> dict[str, Any]:
    return {"TFEnvApp": {"cull_interval": 1.0}}


@pytest.fixture
def jp_server_config(jp_server_config: Config, cull_config: dict[str, Any]) -> Config:
    for section, values in cull_config.items():
        for key, value in values.items():
            jp_server_config[section][key] = value
    return jp_server_config


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def start_extensions(jp_serverapp: Any) -> None:
    """Start the extensions as a running server does (pytest-jupyter does not): the
    culling task starts there."""
    await jp_serverapp.extension_manager.start_all_extensions()


async def wait_until_culled(jp_serverapp: Any, docker_engine: Any, kernel_id: str) -> None:
    deadline = time.monotonic() + DEADLINE
    km = jp_serverapp.kernel_manager
    while time.monotonic() < deadline:
        if kernel_id not in km.list_kernel_ids() and not kernel_containers(
            docker_engine, kernel_id
        ):
            return
        await asyncio.sleep(0.5)
    pytest.fail(f"kernel {kernel_id} was not culled within {DEADLINE:.0f} s")


def test_idle_timeout_defaults():
    assert idle_timeout_of({"id": "a", "gpus": "none"}, 3600) == 0
    assert idle_timeout_of({"id": "a", "gpus": "all"}, 3600) == 3600
    assert idle_timeout_of({"id": "a", "gpus": 2, "idle_timeout": 0}, 3600) == 0
    assert idle_timeout_of({"id": "a", "idle_timeout": 5}, 3600) == 5


async def test_idle_kernel_is_culled_and_its_container_removed(
    jp_fetch, jp_serverapp, docker_engine
):
    await start_extensions(jp_serverapp)
    records = Records()
    logging.getLogger("TFEnvApp").addHandler(records)
    kernel_id = await start_kernel(jp_fetch, "tfenv-idle3")
    assert kernel_containers(docker_engine, kernel_id)
    # A kernel of an environment without idle_timeout (and no GPU) is left alone.
    other = await start_kernel(jp_fetch, "tfenv-py")
    await wait_until_culled(jp_serverapp, docker_engine, kernel_id)
    lines = [m for m in records.messages if "tfenv: culling kernel" in m]
    assert len(lines) == 1 and kernel_id in lines[0] and "idle3" in lines[0]
    assert other in jp_serverapp.kernel_manager.list_kernel_ids()
    assert kernel_containers(docker_engine, other)
    body = (await jp_fetch("api", "kernels")).body.decode()
    assert kernel_id not in body and other in body
    await jp_fetch("api", "kernels", other, method="DELETE")
    logging.getLogger("TFEnvApp").removeHandler(records)


async def test_busy_kernel_is_not_culled_while_busy(jp_fetch, jp_serverapp, docker_engine):
    await start_extensions(jp_serverapp)
    kernel_id = await start_kernel(jp_fetch, "tfenv-idle3")
    # Busy for well over its 3 s idle timeout: it must finish its work.
    out = await run_code(jp_serverapp, kernel_id, "import time; time.sleep(8); print('done')")
    assert out.strip() == "done"
    assert kernel_id in jp_serverapp.kernel_manager.list_kernel_ids()
    # Idle afterwards: culled then.
    await wait_until_culled(jp_serverapp, docker_engine, kernel_id)


@pytest.mark.parametrize(
    "cull_config",
    [
        {
            "TFEnvApp": {"cull_interval": 0.0},
            "MappingKernelManager": {"cull_idle_timeout": 3, "cull_interval": 1},
        }
    ],
)
async def test_jupyter_servers_own_culler_removes_the_container(
    jp_fetch, jp_serverapp, docker_engine
):
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    assert kernel_containers(docker_engine, kernel_id)
    await wait_until_culled(jp_serverapp, docker_engine, kernel_id)
