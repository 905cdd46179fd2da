"""A server in broker mode (JupyterHub) does not run TensorBoards yet: it says so (501)
with what to do, lists none, and starts no container."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

pytestmark = pytest.mark.docker  # the server fixture's catalog needs the test images


@pytest.fixture
def provisioner_config(provisioner_config: dict[str, Any]) -> dict[str, Any]:
    # Nothing answers there: broker mode is chosen by the setting alone.
    return {**provisioner_config, "broker_url": "http://127.0.0.1:9/", "broker_token": "x"}


async def test_broker_mode_answers_501_with_what_to_do(jp_fetch):
    listed = json.loads((await jp_fetch("tfenv", "tensorboards")).body)
    assert listed == {"tensorboards": []}
    for args, kwargs in (
        (("tfenv", "tensorboards"), {"method": "POST", "body": json.dumps({"view": "compare"})}),
        (("tfenv", "tensorboards", "compare"), {}),
        (("tfenv", "tensorboard", "compare", "data", "runs"), {}),
    ):
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(*args, **kwargs)
        assert info.value.code == 501, args
        assert info.value.response is not None
        message = json.loads(info.value.response.body)["message"]
        assert "JupyterHub" in message and "docs/tensorboard.md" in message
