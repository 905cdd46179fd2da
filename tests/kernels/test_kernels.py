"""Container kernels end to end: a real jupyter_server, real Docker, real TensorFlow."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from tests.conftest import (
    KERNEL_GID,
    KERNEL_UID,
    OWNER,
    PY_IMAGE,
    TF219,
    TF220,
    kernel_containers,
    run_code,
    start_kernel,
)

pytestmark = pytest.mark.docker

PROBE = (
    "import os, socket, json\n"
    "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'cwd': os.getcwd(),"
    " 'host': socket.gethostname(), 'dockerenv': os.path.exists('/.dockerenv'),"
    " 'env': dict(os.environ)}))\n"
)


async def shutdown(jp_fetch: Any, kernel_id: str) -> None:
    response = await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert response.code == 204


async def test_catalog_environments_are_kernelspecs(jp_fetch):
    response = await jp_fetch("api", "kernelspecs")
    specs = json.loads(response.body)["kernelspecs"]
    tfenv = {name: s for name, s in specs.items() if name.startswith("tfenv-")}
    # The floating-tag entry is refused; every other catalog entry is a kernelspec.
    assert "tfenv-floating" not in tfenv
    assert {"tfenv-py", "tfenv-tf220", "tfenv-tf219", "tfenv-gpu"} <= set(tfenv)
    spec = tfenv["tfenv-tf220"]["spec"]
    assert spec["display_name"] == "TensorFlow 2.20.0 (CPU)"
    assert tfenv["tfenv-gpu"]["spec"]["display_name"] == "GPU (test)"
    meta = spec["metadata"]
    assert meta["kernel_provisioner"]["provisioner_name"] == "tfenv-docker"
    assert meta["tfenv"]["image"] == TF220
    assert meta["tfenv"]["tensorflow"] == "2.20.0"
    assert meta["tfenv"]["gpu_label"] == "CPU"
    assert set(tfenv["tfenv-tf220"]["resources"]) >= {"logo-64x64", "logo-svg"}
    logo = await jp_fetch("kernelspecs", "tfenv-tf220", "logo-64x64.png")
    assert logo.body.startswith(b"\x89PNG")


async def test_environments_endpoint_reports_catalog_and_problems(jp_fetch):
    body = json.loads((await jp_fetch("tfenv", "environments")).body)
    ids = [e["id"] for e in body["environments"]]
    assert "tf219" in ids and "floating" not in ids
    problem = next(p for p in body["problems"] if p["entry"] == "'floating'")
    assert problem["field"] == "image" and "floating tag 'latest'" in problem["message"]
    one = json.loads((await jp_fetch("tfenv", "environments", "tf220")).body)
    assert one["image"] == TF220
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("tfenv", "environments", "nope")
    assert info.value.code == 404


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env_id", "image", "version"), [("tf220", TF220, "2.20.0"), ("tf219", TF219, "2.19.0")]
)
async def test_tensorflow_kernel_runs_the_pinned_version_in_its_container(
    jp_fetch, jp_serverapp, jp_root_dir, docker_engine, env_id, image, version
):
    sub = jp_root_dir / "project"
    sub.mkdir()
    os.chown(sub, KERNEL_UID, KERNEL_GID)
    kernel_id = await start_kernel(jp_fetch, f"tfenv-{env_id}", path="project/train.ipynb")
    try:
        out = await run_code(
            jp_serverapp,
            kernel_id,
            "import tensorflow as tf\nprint(tf.__version__)\n"
            "open('written-in-container.txt', 'w').write('hi')\n" + PROBE,
        )
        lines = out.strip().splitlines()
        assert lines[0] == version
        facts = json.loads(lines[-1])
        # It ran in a container of that image, as the notebook user, in the notebook folder.
        assert facts["dockerenv"] is True
        assert facts["host"] == f"tfenv-{env_id}"
        assert (facts["uid"], facts["gid"]) == (KERNEL_UID, KERNEL_GID)
        assert facts["cwd"] == str(sub)
        (container,) = kernel_containers(docker_engine, kernel_id)
        assert container.image.id == docker_engine.images.get(image).id
        written = sub / "written-in-container.txt"
        assert written.read_text() == "hi"
        assert (written.stat().st_uid, written.stat().st_gid) == (KERNEL_UID, KERNEL_GID)
    finally:
        await shutdown(jp_fetch, kernel_id)
    assert kernel_containers(docker_engine, kernel_id) == []


async def test_interrupt_restart_and_shutdown(jp_fetch, jp_serverapp, docker_engine):
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    runtime_dir = km.provisioner.runtime_dir
    (first,) = kernel_containers(docker_engine, kernel_id)
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        msg_id = client.execute("import time; time.sleep(60)")
        # Wait until the sleep is running, then interrupt through the REST API.
        while True:
            msg = await client.get_iopub_msg(timeout=30)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "busy":
                break
        await asyncio.sleep(0.5)
        response = await jp_fetch(
            "api", "kernels", kernel_id, "interrupt", method="POST", body="{}"
        )
        assert response.code == 204
        reply = await client.get_shell_msg(timeout=20)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        client.stop_channels()

    await run_code(jp_serverapp, kernel_id, "x = 41")
    response = await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body="{}")
    assert response.code == 200
    (second,) = kernel_containers(docker_engine, kernel_id)
    assert second.id != first.id  # a fresh container …
    assert km.provisioner.runtime_dir == runtime_dir  # … on the same sockets
    out = await run_code(jp_serverapp, kernel_id, "print('x' in globals())")
    assert out.strip() == "False"

    await shutdown(jp_fetch, kernel_id)
    assert kernel_containers(docker_engine, kernel_id) == []
    assert not Path(runtime_dir).exists()


async def test_container_is_hardened_and_labelled(
    jp_fetch, jp_serverapp, docker_engine, monkeypatch, runtime_root
):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-secret-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("LANG", "C.UTF-8")
    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    try:
        km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        (container,) = kernel_containers(docker_engine, kernel_id)
        attrs = container.attrs
        config, host = attrs["Config"], attrs["HostConfig"]
        assert config["User"] == f"{KERNEL_UID}:{KERNEL_GID}"
        assert host["CapDrop"] == ["ALL"]
        assert host["CapAdd"] in (None, [])
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert host["Init"] is True
        assert host["Privileged"] is False
        assert host["PidsLimit"] == 4096
        assert host["Memory"] > 0 and host["MemorySwap"] == host["Memory"]
        assert host["ShmSize"] == 1024**3
        assert host["RestartPolicy"]["Name"] in ("no", "")
        assert host["NetworkMode"] == "none"
        assert not host.get("PortBindings")
        assert not config.get("ExposedPorts")
        sources = [m["Source"] for m in attrs["Mounts"]]
        assert not any("docker.sock" in s for s in sources)
        # Labels name the owner, kernel, server, environment and image.
        labels = config["Labels"]
        assert labels["org.jupyter.tfenv.owner"] == OWNER
        assert labels["org.jupyter.tfenv.kernel-id"] == kernel_id
        assert labels["org.jupyter.tfenv.environment"] == "py"
        assert labels["org.jupyter.tfenv.image-id"] == docker_engine.images.get(PY_IMAGE).id
        assert labels["org.jupyter.tfenv.server-pid"] == str(os.getpid())
        assert labels["org.jupyter.tfenv.server-instance"]
        # The environment is an allow-list: no key, no token, nothing else of the server's.
        env = dict(item.split("=", 1) for item in config["Env"])
        key = km.session.key.decode()
        assert key and key not in json.dumps(attrs)
        assert "hub-secret-token" not in json.dumps(attrs)
        assert "aws-secret" not in json.dumps(attrs)
        assert not [k for k in env if k.startswith("JUPYTERHUB_") or k.startswith("AWS_")]
        assert env["LANG"] == "C.UTF-8"  # allow-listed
        assert env["TFENV_ENVIRONMENT"] == "py"
        assert env["CUDA_VISIBLE_DEVICES"] == "" and env["NVIDIA_VISIBLE_DEVICES"] == "void"
        # The kernel's sockets live in a 0700 folder of the kernel user; the key file is 0600.
        rundir = Path(km.provisioner.runtime_dir)
        assert rundir.parent == Path(runtime_root)
        info = rundir.stat()
        # (jupyter_client adds the sticky bit so tmp cleaners leave it alone)
        assert info.st_mode & 0o777 == 0o700 and info.st_uid == KERNEL_UID
        conn = Path(km.connection_file)
        assert conn.parent == rundir
        assert stat.S_IMODE(conn.stat().st_mode) == 0o600
        assert conn.stat().st_uid == KERNEL_UID
        assert km.transport == "ipc"
        # And the kernel itself sees the same: no server secrets in its environment.
        out = await run_code(
            jp_serverapp, kernel_id, "import os, json; print(json.dumps(dict(os.environ)))"
        )
        seen = json.loads(out)
        assert "JUPYTERHUB_API_TOKEN" not in seen and "AWS_SECRET_ACCESS_KEY" not in seen
    finally:
        await shutdown(jp_fetch, kernel_id)


async def test_websocket_execute_like_jupyterlab(jp_fetch, jp_ws_fetch, docker_engine):
    """The path the browser takes: the kernel's channels websocket."""
    from jupyter_client.session import Session

    kernel_id = await start_kernel(jp_fetch, "tfenv-py")
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        session = Session()
        msg = session.msg(
            "execute_request",
            {
                "code": "print(6 * 7)",
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        msg["channel"] = "shell"
        await ws.write_message(json.dumps(msg, default=str))
        # The reply (shell) and the output (iopub) travel on different channels: the
        # output is complete once iopub says idle, as JupyterLab reads it.
        text, status, idle = "", None, False
        while status is None or not idle:
            reply = json.loads(await asyncio.wait_for(ws.read_message(), 60))
            if reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                continue
            if reply["msg_type"] == "stream":
                text += reply["content"]["text"]
            elif reply["msg_type"] == "execute_reply":
                status = reply["content"]["status"]
            elif reply["msg_type"] == "status":
                idle = reply["content"]["execution_state"] == "idle"
        assert (status, text) == ("ok", "42\n")
    finally:
        ws.close()
        await shutdown(jp_fetch, kernel_id)


async def test_tcp_transport_binds_loopback_only(jp_fetch, jp_serverapp, docker_engine):
    jp_serverapp.config.DockerKernelProvisioner.transport = "tcp"
    try:
        kernel_id = await start_kernel(jp_fetch, "tfenv-py")
        try:
            km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
            assert km.transport == "tcp" and km.ip == "127.0.0.1"
            (container,) = kernel_containers(docker_engine, kernel_id)
            assert container.attrs["HostConfig"]["NetworkMode"] == "host"
            assert not container.attrs["HostConfig"].get("PortBindings")
            out = await run_code(jp_serverapp, kernel_id, "print('tcp ok')")
            assert out.strip() == "tcp ok"
        finally:
            await shutdown(jp_fetch, kernel_id)
    finally:
        jp_serverapp.config.DockerKernelProvisioner.transport = "ipc"


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.25])
async def test_cancelled_start_leaves_no_container(jp_serverapp, jp_root_dir, docker_engine, delay):
    """A start abandoned half-way (a closed browser tab, Ctrl-C) removes its container."""
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(
        kernel_name="tfenv-py",
        kernel_spec_manager=jp_serverapp.kernel_spec_manager,
        parent=jp_serverapp,
    )
    task = asyncio.ensure_future(km.start_kernel(cwd=str(jp_root_dir)))
    await asyncio.sleep(delay)
    task.cancel()
    results = await asyncio.gather(task, return_exceptions=True)
    if not isinstance(results[0], BaseException):
        await km.shutdown_kernel(now=True)  # it won the race: started before the cancel
    assert kernel_containers(docker_engine, km.kernel_id) == []


async def test_a_kernel_is_listed_whole_while_its_start_finishes(jp_fetch, jp_serverapp):
    """``GET /api/kernels`` during a start: jupyter_client lists the kernel as soon as it
    runs, and jupyter_server sets its ``last_activity`` only when its own start coroutine
    resumes; a listing in between answered 500 (seen during the start-up adoption). The
    kernel is started here by jupyter_client's part alone, which leaves the kernel in that
    in-between state for as long as the test looks."""
    manager = jp_serverapp.kernel_manager
    kernel_id = await manager.pinned_superclass._async_start_kernel(manager, kernel_name="tfenv-py")
    try:
        response = await jp_fetch("api", "kernels")
        listed = {k["id"]: k for k in json.loads(response.body)}
        assert kernel_id in listed
        assert listed[kernel_id]["last_activity"]
    finally:
        await manager.pinned_superclass._async_shutdown_kernel(manager, kernel_id, now=True)
