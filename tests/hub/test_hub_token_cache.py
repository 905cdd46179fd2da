"""Issue 17, item 10, against the real JupyterHub: what the hub revokes, the broker stops
honouring once c.TFEnvBroker.token_cache_seconds (default 5 s) has passed.

A revoked token, and a user taken out of the hub group of a restricted environment, with
the same token the broker has already seen (and cached).
"""

from __future__ import annotations

import time
from typing import Any

from .harness import ALICE, BOB, GPU_GROUP, HubHarness

#: The broker's default c.TFEnvBroker.token_cache_seconds (the example config keeps it).
TOKEN_CACHE_SECONDS = 5.0


def past_the_cache_window() -> None:
    time.sleep(TOKEN_CACHE_SECONDS + 1.0)


def test_a_revoked_token_stops_working_at_the_broker(hub: HubHarness) -> None:
    hub.ensure_hub_user(ALICE)
    made = hub.hub("POST", f"/users/{ALICE}/tokens", json={"note": "revocation test"})
    assert made.status_code == 201, made.text
    token, token_id = made.json()["token"], made.json()["id"]
    first = hub.broker("GET", "/api/me", token)
    assert first.status_code == 200, first.text
    assert first.json()["user"] == ALICE
    revoked = hub.hub("DELETE", f"/users/{ALICE}/tokens/{token_id}")
    assert revoked.status_code == 204, revoked.text
    past_the_cache_window()
    response = hub.broker("GET", "/api/me", token)
    assert response.status_code == 403, response.text
    assert response.json()["reason"] == "no user"


def test_a_user_removed_from_a_hub_group_loses_its_environments(hub: HubHarness) -> None:
    def gpu_env(token: str) -> dict[str, Any]:
        response = hub.broker("GET", "/api/environments", token)
        assert response.status_code == 200, response.text
        return next(e for e in response.json()["environments"] if e["id"] == "tf220-gpu")

    hub.ensure_hub_user(BOB)
    created = hub.hub("POST", f"/groups/{GPU_GROUP}")
    assert created.status_code in (201, 409), created.text
    try:
        added = hub.hub("POST", f"/groups/{GPU_GROUP}/users", json={"users": [BOB]})
        assert added.status_code == 200, added.text
        made = hub.hub("POST", f"/users/{BOB}/tokens", json={"note": "group removal test"})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        assert gpu_env(token)["allowed"] is True
        removed = hub.hub("DELETE", f"/groups/{GPU_GROUP}/users", json={"users": [BOB]})
        assert removed.status_code == 200, removed.text
        past_the_cache_window()
        env = gpu_env(token)
        assert env["allowed"] is False, env
        assert GPU_GROUP in env.get("reason", "")
    finally:
        hub.hub("DELETE", f"/groups/{GPU_GROUP}")
