"""Users are isolated from each other: through their servers, the broker, and the files.

Alice tries, with her own token, everything she must not do to Bob (or to the host);
each attempt is refused, and Bob's kernel keeps running.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .harness import ALICE, BOB, GPU_GROUP, READER_SERVICE, HubHarness
from .test_hub_kernels import kernel_container, run_as

pytestmark = [pytest.mark.docker]


def message_of(response: Any) -> str:
    try:
        return str(response.json().get("message") or "")
    except ValueError:
        return ""


@pytest.fixture
def bob_kernel(hub: HubHarness, bob_server: str, kernels: Callable[..., str]) -> str:
    """A running kernel of Bob's that has written a checkpoint file."""
    kernel_id = kernels(BOB, "py")
    hub.run_code(
        BOB,
        kernel_id,
        "import os\n"
        "p = os.path.join(os.environ['TFENV_CHECKPOINT_DIR'], 'bob-secret.weights.h5')\n"
        "open(p, 'wb').write(b'bob')\n"
        "print(p)",
    )
    return kernel_id


def test_alice_cannot_touch_bobs_kernel(
    hub: HubHarness, alice_server: str, bob_kernel: str
) -> None:
    alice = hub.token(ALICE)
    # tfenv's REST API on her own server does not know Bob's kernel.
    response = hub.user_request("GET", ALICE, f"tfenv/kernels/{bob_kernel}", alice)
    assert response.status_code == 404, response.text
    # Nor does the broker, for any operation.
    for method, path, body in [
        ("GET", f"/api/kernels/{bob_kernel}", None),
        ("GET", f"/api/kernels/{bob_kernel}/logs", None),
        ("GET", f"/api/kernels/{bob_kernel}/live", None),
        ("POST", f"/api/kernels/{bob_kernel}/signal", {"signal": 9}),
        ("DELETE", f"/api/kernels/{bob_kernel}", None),
    ]:
        response = hub.broker(method, path, alice, json=body)
        assert response.status_code == 404, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
    # A runtime folder for the same kernel id is Alice's own (below her uid), not Bob's.
    response = hub.broker("POST", f"/api/kernels/{bob_kernel}/runtime", alice, json={})
    if response.status_code == 200:
        assert f"/{hub.users[ALICE].uid}/" in response.json()["runtime_dir"], response.text
        hub.broker("DELETE", f"/api/kernels/{bob_kernel}", alice)
    listed = hub.broker("GET", "/api/kernels", alice)
    assert listed.status_code == 200, listed.text
    assert bob_kernel not in listed.text
    # Bob's kernel is untouched.
    assert kernel_container(hub, bob_kernel).status == "running"
    assert hub.run_code(BOB, bob_kernel, "print(6 * 7)").strip() == "42"
    # Bob sees his own kernel through the broker (the 404s above are not "no such kernel").
    mine = hub.broker("GET", f"/api/kernels/{bob_kernel}", hub.token(BOB))
    assert mine.status_code == 200, mine.text


def test_alice_cannot_use_bobs_server(hub: HubHarness, alice_server: str, bob_server: str) -> None:
    alice = hub.token(ALICE)
    for path in ("api/kernels", "api/contents", "tfenv/environments", "tfenv/checkpoints"):
        response = hub.user_request("GET", BOB, path, alice)
        assert response.status_code in (302, 403), f"{path}: {response.status_code}"
        assert response.status_code != 200


@pytest.fixture
def alice_runtime(hub: HubHarness) -> Iterator[str]:
    """A kernel id of Alice's with a runtime folder and a connection file, as her server
    would prepare them: only the start request itself is left to test."""
    alice = hub.users[ALICE]
    token = hub.token(ALICE)
    kernel_id = str(uuid.uuid4())
    response = hub.broker("POST", f"/api/kernels/{kernel_id}/runtime", token, json={})
    assert response.status_code in (200, 201), response.text
    rundir = response.json()["runtime_dir"]
    conn = {
        "transport": "ipc",
        "ip": os.path.join(rundir, "kernel"),
        "shell_port": 1,
        "iopub_port": 2,
        "stdin_port": 3,
        "control_port": 4,
        "hb_port": 5,
        "key": secrets.token_hex(16),
        "signature_scheme": "hmac-sha256",
        "kernel_name": "tfenv-py",
    }
    path = os.path.join(rundir, "kernel.json")
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(conn, f)
    os.chown(path, alice.uid, alice.gid)
    yield kernel_id
    hub.broker("DELETE", f"/api/kernels/{kernel_id}", token)


def test_broker_refuses_what_alice_may_not_ask_for(
    hub: HubHarness, alice_server: str, bob_server: str, alice_runtime: str
) -> None:
    alice, bob = hub.users[ALICE], hub.users[BOB]
    token = hub.token(ALICE)
    base = {"kernel_id": alice_runtime, "environment": "py", "cwd": str(alice.home)}
    # A symlink of Alice's own, in her home, to Bob's home.
    link = alice.home / f"to-bob-{uuid.uuid4().hex[:6]}"
    link.symlink_to(bob.home)
    os.lchown(link, alice.uid, alice.gid)
    refused: list[tuple[str, dict[str, Any], str | None]] = [
        ("Bob's home as cwd", {"cwd": str(bob.home)}, None),
        ("Bob's home as mount", {"mount": str(bob.home)}, None),
        ("a symlink to Bob's home as cwd", {"cwd": str(link)}, None),
        ("a symlink to Bob's home as mount", {"mount": str(link), "cwd": str(link)}, None),
        ("a path through '..' into Bob's home", {"cwd": f"{alice.home}/../{BOB}"}, None),
        ("/ as cwd", {"cwd": "/", "mount": "/"}, None),
        ("/ as mount", {"mount": "/"}, None),
        ("a non-catalog environment", {"environment": "not-in-the-catalog"}, None),
        ("an image", {"image": "tfenv-test/python:3.11-jupyter"}, "image"),
        ("uid 0", {"uid": 0}, "uid"),
        ("privileged", {"privileged": True}, "privileged"),
        ("a checkpoint root", {"checkpoint_root": str(bob.home)}, "checkpoint_root"),
        ("a JUPYTERHUB_ variable", {"env": {"JUPYTERHUB_API_TOKEN": "x"}}, "JUPYTERHUB"),
    ]
    failures = []
    try:
        for what, change, word in refused:
            response = hub.broker("POST", "/api/kernels", token, json={**base, **change})
            message = message_of(response)
            if response.status_code not in (400, 403) or not message:
                failures.append(f"{what}: {response.status_code} {response.text[:300]}")
            elif word is not None and word.lower() not in message.lower():
                failures.append(f"{what}: the message does not name '{word}': {message}")
    finally:
        link.unlink()
    assert not failures, "\n".join(failures)
    # Nothing was started for Alice by any of these.
    assert hub.broker("GET", "/api/kernels", token).json()["kernels"] == []
    # The same request without the forbidden parts is accepted: the refusals above were
    # about those parts.
    response = hub.broker("POST", "/api/kernels", token, json=base)
    assert response.status_code == 201, response.text
    assert kernel_container(hub, alice_runtime).attrs["Config"]["User"] == (
        f"{alice.uid}:{alice.gid}"
    )
    assert hub.broker("DELETE", f"/api/kernels/{alice_runtime}", token).status_code == 204
    assert hub.broker("GET", "/api/kernels", token).json()["kernels"] == []


def test_broker_refuses_tokens_of_no_user(hub: HubHarness) -> None:
    for token in (secrets.token_hex(20), None, hub.reader_token):
        for method, path in (("GET", "/api/me"), ("GET", "/api/kernels"), ("POST", "/api/kernels")):
            response = hub.broker(method, path, token, json={} if method == "POST" else None)
            assert response.status_code == 403, (
                f"{method} {path} with token {token and token[:6]}…: {response.status_code} "
                f"{response.text}"
            )


def test_checkpoints_are_private(hub: HubHarness, alice_server: str, bob_kernel: str) -> None:
    assert hub.paths is not None
    alice = hub.token(ALICE)
    listing = hub.user_request("GET", ALICE, "tfenv/checkpoints", alice)
    assert listing.status_code == 200, listing.text
    assert "bob-secret" not in listing.text
    assert BOB not in listing.text
    for path in (
        "tfenv/checkpoints/py",
        f"tfenv/checkpoints/..%2F{BOB}%2Fpy",
        "tfenv/checkpoints/py/bob-secret.weights.h5",
    ):
        response = hub.user_request("GET", ALICE, path, alice)
        assert "bob-secret" not in response.text, f"{path}: {response.text}"
    # Bob sees his own checkpoint.
    own = hub.user_request("GET", BOB, "tfenv/checkpoints/py", hub.token(BOB))
    assert own.status_code == 200 and "bob-secret" in own.text, own.text
    # On the host, Bob's folder is closed to Alice's uid.
    bob_folder = hub.paths.checkpoint_root / BOB
    out = run_as(ALICE, f"import os; print(os.listdir({str(bob_folder)!r}))")
    assert "PermissionError" in out, out
    out = run_as(ALICE, f"import os; print(os.listdir({str(hub.users[BOB].home)!r}))")
    assert "PermissionError" in out, out


def test_group_restricted_environment(
    hub: HubHarness, alice_server: str, bob_server: str, kernels: Callable[..., str]
) -> None:
    # Bob is not in tfenv-gpu: refused, and JupyterLab's dialog says which group.
    response = hub.start_kernel(BOB, "tf220-gpu")
    assert response.status_code == 403, response.text
    assert GPU_GROUP in message_of(response), response.text
    # The broker says the same, and lists the environment as not allowed for him.
    envs = hub.broker("GET", "/api/environments", hub.token(BOB)).json()["environments"]
    gpu = next(e for e in envs if e["id"] == "tf220-gpu")
    assert gpu["allowed"] is False and GPU_GROUP in gpu.get("reason", ""), gpu
    # Alice is in the group.
    kernel_id = kernels(ALICE, "tf220-gpu")
    assert hub.run_code(ALICE, kernel_id, "print('ok')").strip() == "ok"


def test_hub_group_membership_counts(hub: HubHarness, bob_server: str) -> None:
    """environment_groups also matches JupyterHub groups (not only Unix groups)."""

    def gpu_env(token: str) -> dict[str, Any]:
        response = hub.broker("GET", "/api/environments", token)
        assert response.status_code == 200, response.text
        return next(e for e in response.json()["environments"] if e["id"] == "tf220-gpu")

    assert gpu_env(hub.token(BOB))["allowed"] is False
    created = hub.hub("POST", f"/groups/{GPU_GROUP}")
    assert created.status_code in (201, 409), created.text
    try:
        added = hub.hub("POST", f"/groups/{GPU_GROUP}/users", json={"users": [BOB]})
        assert added.status_code == 200, added.text
        # A new token: the broker caches what the hub said about a token it has seen.
        fresh = hub.hub("POST", f"/users/{BOB}/tokens", json={"note": "hub group test"})
        assert fresh.status_code == 201, fresh.text
        env = gpu_env(fresh.json()["token"])
        assert env["allowed"] is True, env
    finally:
        hub.hub("DELETE", f"/groups/{GPU_GROUP}")


def test_tfenv_scopes(hub: HubHarness, alice_server: str, bob_server: str) -> None:
    """A token with access to Alice's server and custom:tfenv:read, not :write."""
    reader = hub.reader_token
    response = hub.user_request("GET", ALICE, "tfenv/environments", reader)
    assert response.status_code == 200, response.text
    assert "tf220" in response.text
    # A write: deleting a checkpoint (the confirmation header is there, so only the
    # scope can stop it).
    delete = "tfenv/checkpoints/py/nothing.weights.h5"
    response = hub.user_request("DELETE", ALICE, delete, reader, headers={"If-Match": '"x"'})
    assert response.status_code == 403, f"{response.status_code} {response.text}"
    # Alice, who holds custom:tfenv:write on her server, gets past the scope check.
    response = hub.user_request(
        "DELETE", ALICE, delete, hub.token(ALICE), headers={"If-Match": '"x"'}
    )
    assert response.status_code in (404, 412, 428), f"{response.status_code} {response.text}"
    # The reader's scopes are Alice's server only.
    response = hub.user_request("GET", BOB, "tfenv/environments", reader)
    assert response.status_code in (302, 403), response.status_code
    # A service is no hub user: the broker does not serve it.
    assert hub.broker("GET", "/api/me", reader).status_code == 403
    assert READER_SERVICE  # the service the harness declares with these scopes


def test_pulls_are_for_admins(hub: HubHarness, alice_server: str) -> None:
    """Users' servers hold no Docker socket: a pull through them is refused, with the fix."""
    response = hub.user_request("POST", ALICE, "tfenv/environments/py/pull", hub.token(ALICE))
    assert response.status_code == 403, f"{response.status_code} {response.text}"
    assert "jupyter tfenv pull" in message_of(response), response.text
