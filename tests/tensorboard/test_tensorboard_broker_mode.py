"""TensorBoard on a JupyterHub: a server in broker mode, its TensorBoard started by the
real tfenv broker (Docker backend), proxied by the server.

In order: a TF 2.20 kernel (through the broker) trains two epochs with the TensorBoard
callback into ``$TFENV_LOG_DIR``; ``POST /tfenv/tensorboards`` through the server goes to
the broker (202), polled until it runs; ``data/runs`` through the server's proxy lists the
run; ``docker inspect``: the user's uid, no network, the log mount read-only, the broker's
label; another user's token at the broker gets 404 for the name and an empty list; a third
view beyond the per-user limit is 429; DELETE through the server removes the container and
its runtime folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from jupyter_tfenv.core.labels import LABEL_TENSORBOARD
from tests.broker.test_broker_e2e import SERVICE, broker, jp_server_config  # noqa: F401
from tests.conftest import KERNEL_UID, run_code, start_kernel
from tests.tensorboard.test_tensorboard_api import TRAIN, get_json, open_board, until_running

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="the broker runs as root"),
]

OTHER_TOKEN = "tb-other-user-token"


def other_user() -> str:
    for entry in pwd.getpwall():
        if 1000 <= entry.pw_uid < 65534 and entry.pw_uid != KERNEL_UID:
            return entry.pw_name
    pytest.skip("no second Unix account (uid >= 1000) for another hub user")


async def as_other(at: Any, method: str, path: str) -> tuple[int, Any]:
    """A request to the broker with another user's token."""
    try:
        response = await AsyncHTTPClient().fetch(
            at.url + path,
            method=method,
            headers={"Authorization": f"token {OTHER_TOKEN}"},
            body=None if method in ("GET", "DELETE") else "{}",
        )
    except HTTPClientError as err:
        assert err.response is not None, err
        return err.code, json.loads(err.response.body or b"{}")
    return response.code, json.loads(response.body or b"{}")


async def test_a_tensorboard_through_the_broker(
    jp_fetch,
    jp_serverapp,
    jp_root_dir,
    broker,  # noqa: F811
):
    broker.start()
    (jp_root_dir / "work").mkdir()
    os.chown(jp_root_dir / "work", KERNEL_UID, KERNEL_UID)
    broker.app.hub_auth.models[OTHER_TOKEN] = {
        "kind": "user",
        "name": other_user(),
        "scopes": [f"access:services!service={SERVICE}"],
        "groups": [],
    }
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "work/nb.ipynb")
    try:
        written = await run_code(jp_serverapp, kernel_id, TRAIN, timeout=240)
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert "train" in written, f"the TensorBoard callback wrote no run: {written}"

    code, board = await open_board(jp_fetch, {"environment": "tf220"})
    assert code == 202 and board["state"] == "starting", board
    assert board["name"] == "env-tf220" and board["url"].endswith("tfenv/tensorboard/env-tf220/")
    await until_running(jp_fetch, "env-tf220")
    code, again = await open_board(jp_fetch, {"environment": "tf220"})
    assert code == 200 and again["state"] == "running", f"not reused: {again}"

    # TensorBoard's data through the server's proxy, from the broker's socket.
    runs = await get_json(jp_fetch, "tfenv", "tensorboard", "env-tf220", "data", "runs")
    assert "run1/train" in runs, runs
    listed = await get_json(jp_fetch, "tfenv", "tensorboards")
    assert [b["name"] for b in listed["tensorboards"]] == ["env-tf220"], listed

    # The container: the user's uid, no network, the log folder read-only.
    [container] = [c for c in broker.containers() if LABEL_TENSORBOARD in (c.labels or {})]
    attrs = container.attrs
    assert attrs["Config"]["User"] == f"{KERNEL_UID}:{KERNEL_UID}", attrs["Config"]["User"]
    assert attrs["HostConfig"]["NetworkMode"] == "none"
    [logs] = [m for m in attrs["Mounts"] if m["Destination"] == "/tfenv/logs"]
    assert logs["RW"] is False, logs
    assert logs["Source"].startswith(broker.app.log_root), logs
    rundir = container.labels["org.jupyter.tfenv.runtime-dir"]
    assert rundir.startswith(os.path.join(broker.runtime_root, "tb", str(KERNEL_UID)) + "/")
    assert os.stat(rundir).st_uid == KERNEL_UID

    # Another hub user: not theirs to see, read or close.
    code, answer = await as_other(broker, "GET", "api/tensorboards")
    assert (code, answer) == (200, {"tensorboards": []}), answer
    for method in ("GET", "DELETE"):
        code, answer = await as_other(broker, method, "api/tensorboards/env-tf220")
        assert code == 404, (method, code, answer)
    assert container.reload() is None and container.status == "running"

    # The per-user limit (2 by default): a third view is refused with what to do.
    code, second = await open_board(jp_fetch, {"view": "compare"})
    assert code == 202, second
    with pytest.raises(HTTPClientError) as info:
        await open_board(jp_fetch, {"environment": "tf219"})
    assert info.value.code == 429
    assert "max_tensorboards_per_user" in json.loads(info.value.response.body)["message"]
    await until_running(jp_fetch, "compare")

    # DELETE through the server: container and runtime folder gone at the broker.
    for name in ("env-tf220", "compare"):
        response = await jp_fetch("tfenv", "tensorboards", name, method="DELETE")
        assert response.code == 204
    assert not [c for c in broker.containers() if LABEL_TENSORBOARD in (c.labels or {})]
    assert not os.path.exists(rundir)
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfenv", "tensorboards", "env-tf220")
    assert info.value.code == 404


async def test_the_broker_refuses_bad_requests(jp_fetch, broker):  # noqa: F811
    broker.start()
    for body, status in (({"view": "nope"}, 400), ({"environment": "no-such-env"}, 404)):
        with pytest.raises(HTTPClientError) as info:
            await open_board(jp_fetch, body)
        assert info.value.code == status, (body, info.value.code)
        assert json.loads(info.value.response.body)["message"]
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfenv", "tensorboard", "env-tf220", "data", "runs")
    assert info.value.code == 404
    # An admin who turned TensorBoard off: 403 saying so, no container.
    broker.app.max_tensorboards_per_user = 0
    with pytest.raises(HTTPClientError) as info:
        await open_board(jp_fetch, {"environment": "tf220"})
    assert info.value.code == 403
    assert "turned off" in json.loads(info.value.response.body)["message"]
    assert not [c for c in broker.containers() if LABEL_TENSORBOARD in (c.labels or {})]


async def test_the_broker_removes_tensorboards_a_dead_broker_left(broker):  # noqa: F811
    """A broker that crashed leaves its TensorBoards (known to it alone): the next one's
    sweep removes those whose broker process is gone, with their runtime folders, and
    leaves those of a live one."""
    import docker

    from jupyter_tfenv.core.containers import server_labels
    from jupyter_tfenv.core.labels import LABEL_OWNER, LABEL_RUNTIME_DIR, LABEL_SERVER_PID
    from tests.conftest import PY_IMAGE

    over = await asyncio.create_subprocess_exec("true")
    await over.wait()
    dead_pid = str(over.pid)  # a broker process that is gone
    scope = broker.app.kernel_backend.scope_labels
    folder = os.path.join(broker.runtime_root, "tb", str(KERNEL_UID), "tb-00000000dead")
    os.makedirs(folder)
    client = docker.from_env()
    made = []
    try:
        for name, pid, rundir in (("dead", dead_pid, folder), ("alive", None, "")):
            labels = {
                **server_labels(),
                **scope,
                LABEL_TENSORBOARD: f"env-{name}",
                LABEL_OWNER: "tfenv-pytest-tb-orphans",
                LABEL_RUNTIME_DIR: rundir,
            }
            if pid is not None:
                labels[LABEL_SERVER_PID] = pid
                labels["org.jupyter.tfenv.server-instance"] = "a-broker-that-died"
            made.append(
                client.containers.run(
                    PY_IMAGE, ["sleep", "300"], labels=labels, detach=True, network_mode="none"
                )
            )
        removed = await broker.app.tensorboards.reap_orphans()
        assert removed == [made[0].name], f"removed {removed}, expected the dead broker's"
        assert not os.path.exists(folder), "the dead broker's TensorBoard folder is left"
        made[1].reload()
        assert made[1].status == "running", "a live broker's TensorBoard was removed"
    finally:
        for container in made:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        client.close()
