"""Fixtures of the JupyterHub end-to-end tests: one hub, two users, for tests/hub.

The hub, its proxy and the broker are started once for this package (``hub``), and
stopped after its last test, not at the end of the whole suite; each user's server is
spawned once (``alice_server``/``bob_server``); ``kernels`` shuts down what a test
started, so that one test's kernels never count against the next test's quota.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PY_IMAGE, TF220

from .harness import (
    ALICE,
    BOB,
    HubHarness,
    SystemUsers,
    default_progress,
    ensure_user_venv,
    hub_test_prerequisites,
    remove_test_containers,
    tfenv_containers,
)

#: Seconds an idle kernel of the culling environment lives.
IDLE_TIMEOUT = 5
#: How often users' servers look for idle kernels in the tests.
CULL_INTERVAL = 1
MAX_KERNELS = 2

#: The test catalog: ids as in examples/hub (tf220-gpu is restricted to tfenv-gpu there);
#: the "GPU" one is a CPU stand-in, so that it starts on machines without GPUs.
HUB_CATALOG: dict[str, Any] = {
    "version": 1,
    "environments": [
        {"id": "tf220", "image": TF220, "tensorflow": "2.20.0"},
        {
            "id": "tf220-gpu",
            "image": PY_IMAGE,
            "display_name": "GPU stand-in (tfenv-gpu group only)",
        },
        {"id": "py", "image": PY_IMAGE, "display_name": "Python 3.11 (test)"},
        {
            "id": "quick-cull",
            "image": PY_IMAGE,
            "display_name": "Culled when idle",
            "idle_timeout": IDLE_TIMEOUT,
        },
    ],
}


@pytest.fixture(scope="session")
def progress(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Progress lines that reach the terminal (and a CI log) even with output captured."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def say(message: str) -> None:
        if capture is not None:
            with capture.global_and_fixture_disabled():
                default_progress(message)
        else:
            default_progress(message)

    return say


@pytest.fixture(scope="package")
def hub_prerequisites() -> None:
    """Skips when not root (before the Docker images are even looked at); fails when
    something else the hub tests need is missing."""
    if os.geteuid() != 0:
        pytest.skip("the JupyterHub tests need root (system users, LocalProcessSpawner)")
    missing = hub_test_prerequisites()
    if missing:
        pytest.fail(missing)


@pytest.fixture(scope="package")
def hub(
    hub_prerequisites: None, images: Any, progress: Callable[[str], None]
) -> Iterator[HubHarness]:
    """JupyterHub (example config) with the proxy, the broker and the two test users."""
    users = SystemUsers()
    workdir = Path(tempfile.mkdtemp(prefix="tfenv-hub-"))
    harness: HubHarness | None = None
    try:
        progress("creating the test users and group")
        unix_users = users.ensure()
        # Kernels of an earlier, killed run would count against the quotas.
        remove_test_containers(unix_users)
        venv = ensure_user_venv(progress)
        harness = HubHarness(
            workdir=workdir,
            venv=venv,
            users=unix_users,
            catalog=HUB_CATALOG,
            progress=progress,
            passwords=users.passwords,
            extra_env={
                "TFENV_MAX_KERNELS_PER_USER": str(MAX_KERNELS),
                "TFENV_CULL_INTERVAL": str(CULL_INTERVAL),
            },
        )
        harness.start()
        yield harness
    finally:
        progress("tearing down: servers, hub, proxy, broker, containers, users")
        if harness is not None:
            harness.close()
        left = [c.name for c in tfenv_containers(users.names)]
        remove_test_containers(users.names)
        users.remove()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        progress("teardown done")
        assert not left, f"kernel containers left behind: {left}"


@pytest.fixture(scope="package")
def alice_server(hub: HubHarness) -> str:
    hub.start_server(ALICE)
    return ALICE


@pytest.fixture(scope="package")
def bob_server(hub: HubHarness) -> str:
    hub.start_server(BOB)
    return BOB


@pytest.fixture
def kernels(hub: HubHarness) -> Iterator[Callable[..., str]]:
    """``start(owner, env_id, path="")`` → kernel id; every such kernel is shut down after."""
    started: list[tuple[str, str]] = []

    def start(owner: str, env_id: str, path: str = "") -> str:
        kernel_id = hub.kernel(owner, env_id, path)
        started.append((owner, kernel_id))
        return kernel_id

    yield start
    for owner, kernel_id in started:
        with contextlib.suppress(Exception):
            if hub.shutdown_kernel(owner, kernel_id).status_code != 204:
                # Not (or no longer) known to the owner's server: ask the broker directly,
                # so that a leaked kernel does not count against the next test's quota.
                hub.broker("DELETE", f"/api/kernels/{kernel_id}", hub.token(owner))
    # A shutdown returns once the container is gone; give the broker a moment anyway.
    deadline = time.monotonic() + 30
    ids = {kid for _, kid in started}
    while time.monotonic() < deadline:
        if not [
            c
            for c in tfenv_containers(hub.users)
            if c.labels.get("org.jupyter.tfenv.kernel-id") in ids
        ]:
            break
        time.sleep(0.5)
