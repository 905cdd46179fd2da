"""Encrypted kernel traffic on Kubernetes (issue 22 item 5), tier 3 (scripted API).

A single-user server in broker mode starts kernel pods through the real broker with
``backend = "kubernetes"`` (tests/support/k8s_api.py with the Docker node: the pod's kernel
container runs for real from its image, the Secret's files mounted read-only). Under the
default ``kubernetes_kernel_encryption = "prefer"`` the server offers CurveZMQ keys, the
broker puts them in the kernel's Secret with the in-pod launcher (curve_launch.py), and the
server's jupyter_client talks to the pod with them: code runs, stdin and interrupts work.
A client that has the HMAC key but not the CurveZMQ server key gets no answer; one with
the server's key does. What cannot be encrypted follows the policy: ``require`` refuses a
start without keys (409, what to do), ``prefer`` starts it in clear, warns in the broker's
log and answers ``encryption: "none"``; ``off`` never encrypts.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
from typing import Any

import pytest
import zmq
from jupyter_client.session import Session

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.kernels import curve
from tests.broker.test_k8s_broker import (
    NS,
    TOKEN,
    USER,
    catalog_path,
    cluster,
    jp_server_config,
)
from tests.conftest import interrupt_a_sleep, run_code, start_kernel

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

__all__ = ["catalog_path", "cluster", "jp_server_config"]  # fixtures

KERNEL_ID = "5e1f0c3a-enc0-4c1e-9a7e-000000000001"


def answers(
    info: dict[str, Any], keys: tuple[bytes, bytes] | None, server_key: bytes | None
) -> bool:
    """Whether the kernel's shell port answers a signed kernel_info_request from a client
    with the HMAC key and, where given, a CurveZMQ key pair and a server key."""
    session = Session(key=info["key"].encode("ascii"))
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    try:
        if keys is not None and server_key is not None:
            sock.curve_publickey, sock.curve_secretkey = keys
            sock.curve_serverkey = server_key
        sock.connect(f"tcp://{info['ip']}:{int(info['shell_port'])}")
        session.send(sock, "kernel_info_request", {})
        if not sock.poll(5000):
            return False
        _, msg = session.feed_identities(sock.recv_multipart())
        return session.deserialize(msg)["msg_type"] == "kernel_info_reply"
    finally:
        sock.close()
        context.term()


async def answer_input(km: Any, code: str, reply: str) -> str:
    """Run ``code``, answer its ``input()`` on the stdin channel; its stdout."""
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        msg_id = client.execute(code, allow_stdin=True)
        request = await client.get_stdin_msg(timeout=30)
        assert request["msg_type"] == "input_request", request
        client.input(reply)
        out = []
        while True:
            msg = await client.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        client.stop_channels()


def secret_files(cluster: Any, kernel_id: str) -> dict[str, str]:
    secret = cluster.api.get("secrets", NS, m.kernel_secret_name(USER, kernel_id))
    assert secret is not None, "the kernel's Secret is missing"
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


async def test_an_encrypted_kernel_pod_talks_to_its_server_only(jp_fetch, jp_serverapp, cluster):
    """prefer (default): keys in the Secret only, the server's traffic encrypted; a client
    with the HMAC key but without the CurveZMQ server key is not answered."""
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
    try:
        km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        assert km.curve_publickey, "the server did not take CurveZMQ keys for the kernel pod"
        [pod] = cluster.pods()
        files = secret_files(cluster, kernel_id)
        conn = json.loads(files[m.CONNECTION_FILE])
        assert conn["curve_publickey"] == km.curve_publickey.decode()
        assert files[curve.LAUNCHER_FILE] == curve.launcher_source()
        # The server key is in the Secret, never in the pod's spec (command, variables).
        spec = json.dumps(pod["spec"])
        assert conn["curve_secretkey"] not in spec and conn["key"] not in spec
        assert pod["spec"]["containers"][0]["command"][1] == "/tfenv/connection/tfenv_curve.py"
        assert pod["metadata"]["annotations"][m.ENCRYPTION_ANNOTATION] == "curve"

        status = json.loads((await jp_fetch("tfenv", "kernels", kernel_id)).body)
        assert status["encryption"] == "curve" and status["encryption_warning"] is None
        code, answer = await broker_call(cluster, "GET", f"api/kernels/{kernel_id}")
        assert code == 200 and answer["encryption"] == "curve", answer

        # The server's own traffic: code, stdin, interrupt.
        out = await run_code(jp_serverapp, kernel_id, "x = 6 * 7; print(x)")
        assert out.strip() == "42"
        assert await answer_input(km, "print(input('name? ') + '!')", "ada") == "ada!\n"
        await interrupt_a_sleep(jp_fetch, km, kernel_id)

        ip = cluster.node.ip_of[pod["metadata"]["name"]]
        reach = {**conn, "ip": ip}
        server_key = conn["curve_publickey"].encode()
        assert not answers(reach, None, None), (
            "a client without CurveZMQ got an answer from an encrypted kernel pod"
        )
        assert not answers(reach, zmq.curve_keypair(), zmq.curve_keypair()[0]), (
            "a client with a wrong CurveZMQ server key got an answer"
        )
        assert answers(reach, zmq.curve_keypair(), server_key), (
            "a client with the kernel's CurveZMQ server key got no answer"
        )

        # A shutdown ends the kernel as a normal exit would: its atexit handlers run.
        await run_code(
            jp_serverapp,
            kernel_id,
            "import atexit\n"
            "atexit.register(lambda: open('/tfenv/checkpoints/bye', 'w').write('bye'))",
        )
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    [claim] = cluster.api.all("persistentvolumeclaims")
    bye = cluster.node.claim_dir(claim["metadata"]["name"]) / "checkpoints" / "bye"
    assert bye.is_file(), "the kernel's atexit handlers did not run at its shutdown"


async def broker_call(
    cluster: Any, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """The broker's REST API as the user's server calls it (a server that offers no
    CurveZMQ keys: no 'curve' field in its start)."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    request = HTTPRequest(
        cluster.url + path,
        method=method,
        headers={"Authorization": f"token {TOKEN}"},
        body=json.dumps(body) if body is not None else None,
        request_timeout=120,
    )
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    return response.code, json.loads(response.body) if response.body else {}


def set_policy(cluster: Any, policy: str) -> None:
    """c.TFEnvBroker.kubernetes_kernel_encryption, as the broker's config would set it."""
    cluster.app.kubernetes_kernel_encryption = policy
    backend = cluster.app.kernel_backend
    backend.settings = dataclasses.replace(backend.settings, kernel_encryption=policy)


class Records(logging.Handler):
    """The broker's log records (its logger does not propagate to caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def plain_start() -> dict[str, Any]:
    return {
        "kernel_id": KERNEL_ID,
        "environment": "tf220",
        "cwd": "/tmp",
        "env": {},
        "key": "0123456789abcdef0123456789abcdef",
    }


async def test_require_refuses_a_start_without_keys(cluster):
    """require: a server that offers no CurveZMQ keys gets 409 saying what to do; no pod."""
    set_policy(cluster, "require")
    code, body = await broker_call(cluster, "POST", "api/kernels", plain_start())
    assert code == 409, body
    message = body.get("message", "")
    assert "cannot be encrypted" in message and "'require'" in message, message
    assert "jupyter_client 8.10" in message, message
    assert cluster.pods() == [], "a refused start left a pod"


async def test_prefer_starts_in_clear_with_a_warning(cluster):
    """prefer: no keys offered: the pod runs in clear, the broker warns and says 'none'."""
    records = Records()
    cluster.app.log.addHandler(records)
    try:
        code, body = await broker_call(cluster, "POST", "api/kernels", plain_start())
    finally:
        cluster.app.log.removeHandler(records)
    try:
        assert code == 201, body
        assert body["encryption"] == "none", body
        assert "NOT encrypted" in body["encryption_warning"], body
        assert any(
            "NOT encrypted" in r.getMessage() and KERNEL_ID in r.getMessage()
            for r in records.records
            if r.levelno == logging.WARNING
        ), "the broker's log has no WARNING for a kernel started in clear"
        [pod] = cluster.pods()
        assert m.ENCRYPTION_ANNOTATION not in pod["metadata"]["annotations"]
        assert "ipykernel_launcher" in pod["spec"]["containers"][0]["command"]
        conn = json.loads(secret_files(cluster, KERNEL_ID)[m.CONNECTION_FILE])
        assert "curve_secretkey" not in conn
        code, answer = await broker_call(cluster, "GET", f"api/kernels/{KERNEL_ID}")
        assert code == 200 and answer["encryption"] == "none", answer
    finally:
        await broker_call(cluster, "DELETE", f"api/kernels/{KERNEL_ID}")


async def test_off_never_encrypts(jp_fetch, jp_serverapp, cluster):
    """off: the server's offer is not taken; the kernel runs in clear, without a warning,
    and the kernel status says so."""
    set_policy(cluster, "off")
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
    try:
        km = jp_serverapp.kernel_manager.get_kernel(kernel_id)
        assert km.curve_publickey is None
        status = json.loads((await jp_fetch("tfenv", "kernels", kernel_id)).body)
        assert (status["encryption"], status["encryption_warning"]) == ("none", None)
        assert (await run_code(jp_serverapp, kernel_id, "print(41 + 1)")).strip() == "42"
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
