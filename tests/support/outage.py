"""What the engine-outage tests (tests/backends/test_engine_outage*.py) ask of a server and
of their test engine."""

from __future__ import annotations

import json
from typing import Any

from jupyter_tfenv.core.labels import LABEL_KERNEL_ID
from tests.support.gpu_engine import TestEngine


async def answer(jp_fetch: Any, *path: str, method: str = "GET") -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a request to the server (never raises on an error)."""
    body = "" if method == "POST" else None
    response = await jp_fetch(*path, method=method, body=body, raise_error=False)
    try:
        data = json.loads(response.body or b"{}")
    except ValueError:
        data = {"raw": response.body.decode(errors="replace")}
    return response.code, data


def engine_kernels(engine: TestEngine) -> list[Any]:
    """The kernel containers on ``engine``, running or not."""
    assert engine.client is not None
    return list(engine.client.containers.list(all=True, filters={"label": LABEL_KERNEL_ID}))
