"""Encrypted kernel traffic on a real cluster (issue 22 item 5): what
tests/broker/test_k8s_encryption.py shows on the scripted API, shown by a cluster's
kubelet and container runtime (the Secret's launcher file mounted from a real Secret
volume, the pod's own network). Skipped without ``KUBECONFIG``, as the rest of
tests/k8s_cluster (settings: test_cluster.py's docstring).

A kernel pod started with CurveZMQ keys runs the Secret's launcher; a client with the
keys runs ``x = 42`` and reads it back; a client with the HMAC key but without CurveZMQ,
or with a wrong server key, gets no answer (directly or through the port-forward).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any

import pytest
import zmq
from jupyter_client.session import Session

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.kernels import curve

from .conftest import Kernels, Settings, raw
from .test_cluster import cpu_entry

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="needs a real Kubernetes cluster: set KUBECONFIG (docs/kubernetes.md)",
    ),
    pytest.mark.timeout(3600),
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]


def answered(info: dict[str, Any], server_key: bytes | None) -> bool:
    """Whether the shell port answers a signed kernel_info_request from a client with the
    HMAC key and, where given, CurveZMQ with ``server_key`` (an ephemeral key pair)."""
    session = Session(key=info["key"].encode("ascii"))
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    try:
        if server_key is not None:
            sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
            sock.curve_serverkey = server_key
        sock.connect(f"tcp://{info['ip']}:{int(info['shell_port'])}")
        session.send(sock, "kernel_info_request", {})
        if not sock.poll(10_000):
            return False
        _, msg = session.feed_identities(sock.recv_multipart())
        return session.deserialize(msg)["msg_type"] == "kernel_info_reply"
    finally:
        sock.close()
        context.term()


async def test_an_encrypted_kernel_pod_answers_only_clients_with_its_key(
    settings: Settings, kernels: Kernels
) -> None:
    keys = curve.new_keys()
    start = dataclasses.replace(kernels.start_of(cpu_entry(settings)), curve=keys)
    pod = await kernels.start(kernels.backend(), start)
    spec = raw(kernels.core.read_namespaced_pod, pod.name, kernels.namespace)["spec"]
    assert spec["containers"][0]["command"][1] == f"{m.CONNECTION_DIR}/{curve.LAUNCHER_FILE}"
    assert keys.secret not in str(spec), "the CurveZMQ secret key is in the pod's spec"

    info = await kernels.connect(start, pod)
    assert info["curve_publickey"] == keys.public
    await kernels.run(info, "x = 42")
    assert (await kernels.run(info, "print(x)")).strip() == "42"

    plain = {k: v for k, v in info.items() if not k.startswith("curve_")}
    assert not await asyncio.to_thread(answered, plain, None), (
        "a client without CurveZMQ got an answer from an encrypted kernel pod"
    )
    wrong = zmq.curve_keypair()[0]
    assert not await asyncio.to_thread(answered, plain, wrong), (
        "a client with a wrong CurveZMQ server key got an answer"
    )
    assert await asyncio.to_thread(answered, plain, keys.public.encode()), (
        "a client with the kernel's CurveZMQ server key got no answer"
    )
    kernels.stop_forwards()
