"""A re-pointed tag cannot silently change what a team runs: lock, refuse, pull back, run.

Through the real server (kernel start, image status, pull over server-sent events) and the
real CLI (`jupyter tfenv lock`, `check`), against a real registry on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from tests.conftest import PY_IMAGE, PY_NO_KERNEL_IMAGE, run_tfenv_cli, start_error, start_kernel
from tests.support.registry import Registry, RegistryCleanup, registry, registry_cleanup  # noqa: F401

pytestmark = pytest.mark.docker


@pytest.fixture
def reg_ref(registry: Registry) -> str:  # noqa: F811
    return registry.repo("team-tf") + ":2.20.0-jupyter"


@pytest.fixture
def jp_server_config(jp_server_config: Config, tmp_path: Path, reg_ref: str) -> Config:
    catalog = tmp_path / "team" / "catalog.yaml"
    catalog.parent.mkdir()
    catalog.write_text(yaml.safe_dump({"environments": [{"id": "reg", "image": reg_ref}]}))
    jp_server_config.TFEnvCatalog.catalog_files = [str(catalog)]
    return jp_server_config


tfenv_cli = run_tfenv_cli


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            events.append((lines.get("event", "message"), json.loads(lines["data"])))
    return events


async def test_lock_refuses_a_repointed_tag_until_the_locked_digest_is_pulled(
    jp_fetch,
    jp_serverapp,
    docker_engine,
    registry_cleanup: RegistryCleanup,  # noqa: F811
    reg_ref,
):
    catalog = jp_serverapp.kernel_spec_manager.catalog
    catalog_file = catalog.files()[0]
    locked = registry_cleanup.push(PY_IMAGE, reg_ref)

    # The team lead locks the tag; the lock file lands beside the catalog.
    result = tfenv_cli("lock", "--catalog", catalog_file)
    assert result.returncode == 0, result.stderr
    lock_file = Path(catalog_file).parent / "tfenv-lock.json"
    assert json.loads(lock_file.read_text())["images"][reg_ref]["digest"] == locked
    status = json.loads((await jp_fetch("tfenv", "environments", "reg", "image")).body)
    assert status["lock"]["locked"] == locked and status["lock"]["matches"] is True

    kernel_id = await start_kernel(jp_fetch, "tfenv-reg")
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")

    # The tag is re-pointed in the registry, and someone pulls it by hand.
    moved = registry_cleanup.push(PY_NO_KERNEL_IMAGE, reg_ref)
    docker_engine.images.pull(reg_ref)
    code, message = await start_error(jp_fetch, "tfenv-reg")
    assert code == 409
    assert f"locked to {locked}" in message and moved in message
    assert "`jupyter tfenv pull reg`" in message
    check = tfenv_cli("check", "--catalog", catalog_file)
    assert check.returncode == 1 and f"locked to {locked}" in check.stdout

    # Pulling through the server fetches the locked digest again, with progress events.
    response = await jp_fetch("tfenv", "environments", "reg", "pull", method="POST", body="")
    assert response.code == 202
    pull = json.loads(response.body)
    stream = await jp_fetch("tfenv", "pulls", pull["id"], "events", request_timeout=300)
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(stream.body)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "snapshot" and kinds[-1] == "done", kinds
    final = events[-1][1]
    assert final["digest"] == locked
    done = json.loads((await jp_fetch("tfenv", "pulls", pull["id"])).body)
    assert done["state"] == "done"

    kernel_id = await start_kernel(jp_fetch, "tfenv-reg")
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
