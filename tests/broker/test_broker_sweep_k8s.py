"""The broker's sweep of kept kernel pods (issue 22 item 2), tier 3 (scripted API with the
Docker node, as tests/broker/test_k8s_broker.py): a pod marked kept
(``POST /api/kernels/<id>/keep``) and not adopted within ``adopt_timeout`` is removed with
its Secret; a pod adopted meanwhile (``POST …/adopt`` takes the mark off) and one never
kept stay. The sweep runs at a chosen "now": no waiting. Also the pure parts of keep.py.
"""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.keep import KEPT_AT, connection_of, iso, kept_since
from jupyter_tfenv.broker.sweep import KeptSweep
from tests.broker.test_k8s_broker import NS, TOKEN, USER, catalog_path, cluster

__all__ = ["catalog_path", "cluster"]  # fixtures

log = logging.getLogger("tests.broker_sweep_k8s")
IDS = {
    "kept": "5eeb0000-0000-4000-8000-0000000000a1",
    "adopted": "5eeb0000-0000-4000-8000-0000000000b2",
    "held": "5eeb0000-0000-4000-8000-0000000000c3",
}


@pytest.mark.docker
@pytest.mark.scripted_api
async def test_the_sweep_removes_kept_pods_nobody_adopted(cluster):
    from jupyter_tfenv.backends.broker import BrokerClient

    client = BrokerClient(cluster.url, TOKEN)
    for kid in IDS.values():
        await client.prepare_runtime(kid, restart=False)
        body = {"kernel_id": kid, "environment": "tf220", "cwd": "/tmp", "server": ""}
        await client.start_kernel({**body, "key": f"key-of-{kid}"}, timeout=120)
    try:
        for name in ("kept", "adopted"):
            answer = await client.keep_kernel(IDS[name])
            assert kept_since({KEPT_AT: answer["kept_at"]}) is not None
        info = await client.kernel(IDS["kept"])
        assert isinstance(info["kept_at"], float), "GET /api/kernels/<id> has no kept time"
        adopted = await client.adopt_kernel(IDS["adopted"])
        # The owner gets the key from the kernel's Secret, and the pod is held again.
        assert adopted["key"] == f"key-of-{IDS['adopted']}"
        assert adopted["ports"] == m.KernelPorts().by_name()
        assert adopted["ip"] and adopted["kept_at"] is not None
        assert (await client.kernel(IDS["adopted"]))["kept_at"] is None

        sweep = KeptSweep(cluster.app.kernel_backend, 600.0, log)
        assert await sweep.run(now=time.time() + 60) == [], "a pod kept 1 min ago was removed"
        assert len(cluster.pods()) == 3
        removed = await sweep.run(now=time.time() + 3600)
        assert [(k.owner, k.kernel_id) for k in removed] == [(USER, IDS["kept"])]
        names = {p["metadata"]["name"] for p in cluster.pods()}
        assert names == {m.kernel_pod_name(USER, IDS[n]) for n in ("adopted", "held")}
        assert cluster.api.get("secrets", NS, m.kernel_secret_name(USER, IDS["kept"])) is None
        # adopt_timeout 0: the broker removes nothing.
        assert await KeptSweep(cluster.app.kernel_backend, 0, log).run(now=time.time() + 1e9) == []
    finally:
        for kid in IDS.values():
            await client.delete_kernel(kid)


def test_kept_time_round_trips_and_bad_values_are_not_kept():
    now = 1_780_000_000.25
    assert kept_since({KEPT_AT: iso(now)}) == pytest.approx(now, abs=1e-5)
    for bad in ("", "yesterday", "1780000000"):
        assert kept_since({KEPT_AT: bad}) is None, bad
    assert kept_since({}) is None


def test_connection_of_reads_the_secrets_file_only():
    text = json.dumps({"key": "k" * 32, "shell_port": 52000})
    secret = {"data": {m.CONNECTION_FILE: base64.b64encode(text.encode()).decode()}}
    assert connection_of(secret) == {"key": "k" * 32, "shell_port": 52000}
    assert connection_of(None) is None
    assert connection_of({"data": {m.CONNECTION_FILE: "not base64!"}}) is None
    assert connection_of({"data": {m.CONNECTION_FILE: base64.b64encode(b"[1]").decode()}}) is None
