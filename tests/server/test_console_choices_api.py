"""A console's choice through a real server and a real container (docs/choices.md).

A console has no notebook file: JupyterLab sends its session's path and name, and the
server keeps the choice under the name jupyter_server gives the console's kernel
(``$JPY_SESSION_NAME``: the name in the folder of the path). The console session's kernel
gets it (docker inspect); a name with a slash is a 400.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.server.test_choices_api import MIB, catalog_path, host_config, post_choices

pytestmark = pytest.mark.docker

__all__ = ["catalog_path"]  # the fixture


async def test_a_console_sessions_kernel_gets_its_choice(jp_fetch, jp_root_dir, docker_engine):
    (jp_root_dir / "work").mkdir()
    path = f"work/console-1-{uuid.uuid4()}"
    for bad in (
        {"path": path, "name": "a/b", "environment": "py-choices"},
        {"path": path, "name": "", "environment": "py-choices"},
        {"path": "../outside", "name": "Console 1", "environment": "py-choices"},
    ):
        code, body = await post_choices(jp_fetch, bad)
        assert code == 400, (bad, body)
    code, body = await post_choices(
        jp_fetch,
        {
            "path": path,
            "name": "Console 1",
            "environment": "py-choices",
            "choices": {"memory": "512m"},
        },
    )
    assert code == 200, body
    # As JupyterLab starts a console: a request path in the folder, then the real one.
    session = {
        "path": f"work/{uuid.uuid4()}",
        "name": "Console 1",
        "type": "console",
        "kernel": {"name": "tfenv-py-choices"},
    }
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(session))
    model = json.loads(response.body)
    try:
        assert host_config(docker_engine, model["kernel"]["id"])["Memory"] == 512 * MIB
    finally:
        await jp_fetch("api", "sessions", model["id"], method="DELETE")
    # Taken once: the next console of that name gets the defaults.
    response = await jp_fetch("api", "sessions", method="POST", body=json.dumps(session))
    model = json.loads(response.body)
    try:
        assert host_config(docker_engine, model["kernel"]["id"])["Memory"] == 256 * MIB
    finally:
        await jp_fetch("api", "sessions", model["id"], method="DELETE")
