"""TensorBoard through the real hub: the broker starts it as the user, the user's server
proxies it, and no other user reaches it or its logs.

Alice's TF 2.20 kernel trains two epochs with the TensorBoard callback; she opens her
TensorBoard through the hub and sees her run; Bob's token is refused at her TensorBoard's
URL (the hub: not his server) and at the broker (404, not listed); Bob's own TensorBoard of
the same environment never shows Alice's run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.tensorboard.test_tensorboard_api import TRAIN

from .harness import ALICE, BOB, HubHarness

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ALICE_RUN = TRAIN.replace('"run1"', '"alice-secret-run"')


def open_board(hub: HubHarness, owner: str) -> dict[str, Any]:
    """Open the owner's tf220 TensorBoard through the hub and wait until it runs."""
    token = hub.token(owner)
    response = hub.user_request(
        "POST", owner, "tfenv/tensorboards", token, json={"environment": "tf220"}
    )
    assert response.status_code in (200, 202), f"{owner}: {response.status_code} {response.text}"
    board: dict[str, Any] = response.json()
    deadline = time.monotonic() + 240
    while board["state"] == "starting" and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = hub.user_request("GET", owner, "tfenv/tensorboards/env-tf220", token)
        assert answer.status_code == 200, f"{owner}: {answer.status_code} {answer.text}"
        board = answer.json()
    assert board["state"] == "running", f"{owner}'s TensorBoard did not come up: {board}"
    return board


def runs_of(hub: HubHarness, owner: str) -> list[str]:
    """TensorBoard's run names (``data/runs``) through the owner's server."""
    response = hub.user_request(
        "GET", owner, "tfenv/tensorboard/env-tf220/data/runs", hub.token(owner)
    )
    assert response.status_code == 200, f"{owner}: {response.status_code} {response.text}"
    runs: list[str] = response.json()
    return runs


@pytest.fixture
def boards(hub: HubHarness) -> Iterator[list[str]]:
    """Owners whose TensorBoard a test opened: closed after it."""
    opened: list[str] = []
    yield opened
    for owner in opened:
        with contextlib.suppress(Exception):
            hub.user_request("DELETE", owner, "tfenv/tensorboards/env-tf220", hub.token(owner))


def test_alices_tensorboard_is_hers_alone(
    hub: HubHarness,
    alice_server: str,
    bob_server: str,
    kernels: Callable[..., str],
    boards: list[str],
) -> None:
    kernel_id = kernels(ALICE, "tf220")
    written = hub.run_code(ALICE, kernel_id, ALICE_RUN, timeout=240)
    assert "train" in written, f"the TensorBoard callback wrote no run: {written}"

    boards.append(ALICE)
    board = open_board(hub, ALICE)
    assert board["url"].endswith(f"/user/{ALICE}/tfenv/tensorboard/env-tf220/"), board
    assert "alice-secret-run/train" in runs_of(hub, ALICE)

    bob = hub.token(BOB)
    # Alice's TensorBoard URL with Bob's token: the hub does not let him into her server.
    for path in ("tfenv/tensorboard/env-tf220/data/runs", "tfenv/tensorboards/env-tf220"):
        response = hub.user_request("GET", ALICE, path, bob)
        assert response.status_code in (403, 404), f"{path}: {response.status_code}"
        assert "alice-secret-run" not in response.text
    # At the broker: not his to see, read or close.
    listed = hub.broker("GET", "/api/tensorboards", bob)
    assert listed.status_code == 200 and listed.json() == {"tensorboards": []}, listed.text
    for method in ("GET", "DELETE"):
        response = hub.broker(method, "/api/tensorboards/env-tf220", bob)
        assert response.status_code == 404, f"{method}: {response.status_code} {response.text}"

    # Bob's own TensorBoard of the same environment: his (empty) logs, never Alice's.
    boards.append(BOB)
    open_board(hub, BOB)
    assert not [run for run in runs_of(hub, BOB) if "alice" in run]
    # Alice's still runs after all that.
    assert "alice-secret-run/train" in runs_of(hub, ALICE)
