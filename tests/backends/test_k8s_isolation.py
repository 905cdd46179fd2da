"""Users kept apart in the broker's Kubernetes mode (issue 17, the Kubernetes items).

Each test performs the attack through the real broker in Kubernetes mode (HTTP, the
hub's token check a stand-in as in tests/broker/test_broker_e2e.py), which drives the real
``kubernetes`` client against tests/support/k8s_api.py, the scripted API server (scripted API:
strict schema validation, the restricted standard, no cluster). The node here is a
script (:class:`Node`): kernel pods run at once with a pod IP, probe and checkpoint
helper pods run for a while and print their scripted answer; nothing runs for real, so
these tests need neither Docker nor images. Where a cluster's CNI would decide (egress),
:func:`tests.support.k8s_api.egress_allowed` applies NetworkPolicy semantics to the policies the
broker stored.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from traitlets.config import Config

from jupyter_tfenv.backends.broker import BrokerClient, BrokerError
from jupyter_tfenv.backends.kubernetes import manifests as m
from tests.support.k8s_api import (
    Kubelet,
    ScriptedAPI,
    container,
    egress_allowed,
    now_iso,
    scheduled,
    wait_for,
)

pytestmark = pytest.mark.scripted_api

NS = "tfenv-kernels"
SERVICE = "tfenv-broker-k8s"
SCOPE = f"access:services!service={SERVICE}"
IMAGE = "tfenv-test/tensorflow:2.20.0-jupyter"
KEY = "k" * 32
USERS = {
    "alice": "alice-token",
    "bob": "bob-token",
    "bob@example.org": "mail-token",
    "bob.x": "dot-token",
    "bob-2ex": "escaped-token",
}
CATALOG = [
    {"id": "tf220", "image": IMAGE},
    {"id": "tf220-net", "image": IMAGE, "network": "bridge"},
    *({"id": f"env{i}", "image": IMAGE} for i in range(5)),
]


class Node(Kubelet):
    """A scripted node: a kernel pod runs at once on IP 10.244.0.N; a probe or checkpoint
    helper pod runs ``hold`` seconds, then succeeds with its scripted output. It counts
    the pods of each component that exist at once (``peak``)."""

    def __init__(self, hold: float = 1.0) -> None:
        self.hold = hold
        self.lock = threading.Lock()
        self.live: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.created_count: Counter[str] = Counter()
        self._ips = itertools.count(2)

    @staticmethod
    def component(pod: dict[str, Any]) -> str:
        return str(pod["metadata"]["labels"].get(m.COMPONENT_LABEL))

    def created(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        what = self.component(pod)
        with self.lock:
            self.live[what] += 1
            self.created_count[what] += 1
            self.peak[what] = max(self.peak[what], self.live[what])
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if what == "kernel":
            status = {
                "phase": "Running",
                "podIP": f"10.244.0.{next(self._ips)}",
                **scheduled(),
                **container({"running": {"startedAt": now_iso()}}, IMAGE, True),
            }
            events = [("Started", "Started container kernel", "Normal")]
            api.later(0.05, partial(api.update_pod, ns, name, status, events))
        else:
            done = {
                "phase": "Succeeded",
                **container({"terminated": {"exitCode": 0, "reason": "Completed"}}, IMAGE),
            }
            api.later(self.hold, partial(api.update_pod, ns, name, done, []))

    def deleted(self, api: ScriptedAPI, pod: dict[str, Any]) -> None:
        with self.lock:
            self.live[self.component(pod)] -= 1

    def log(self, api: ScriptedAPI, pod: dict[str, Any]) -> str:
        what = self.component(pod)
        if what == "probe":
            return '{"python": "3.11.2", "tensorflow": "2.20.0"}\n'
        inventory = {"exists": True, "entries": [], "state": {}, "checks": {}}
        return "TFENV-HELPER " + json.dumps([inventory]) + "\n"


class Cluster:
    """The scripted API, its scripted node and a broker in Kubernetes mode on loopback."""

    def __init__(self, tmp_path: Path, **traits: Any) -> None:
        """Made inside the running test (the server joins its event loop)."""
        from jupyter_tfenv.broker.app import TFEnvBroker
        from tests.broker.test_broker_e2e import StandInHubAuth

        catalog = tmp_path / "catalog.yaml"
        catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
        self.api = ScriptedAPI(NS)
        self.api.start()
        self.node = Node()
        self.api.kubelet = self.node
        self.app = TFEnvBroker(
            service_name=SERVICE,
            service_prefix=f"/services/{SERVICE}/",
            backend="kubernetes",
            kubernetes_namespace=NS,
            kubernetes_server_namespace="jhub",
            kubernetes_config=str(self.api.kubeconfig(tmp_path)),
            kubernetes_uid=43210,
            kubernetes_gid=43210,
            config=Config({"TFEnvCatalog": {"catalog_files": [str(catalog)]}}),
            **traits,
        )
        self.app.init_catalog()
        self.app.hub_auth = StandInHubAuth(
            {
                token: {"kind": "user", "name": name, "scopes": [SCOPE], "groups": []}
                for name, token in USERS.items()
            }
        )
        self.socket, self.port = bind_unused_port()
        self.server = HTTPServer(self.app.make_web_app())
        self.server.add_sockets([self.socket])

    def client(self, user: str) -> BrokerClient:
        return BrokerClient(f"http://127.0.0.1:{self.port}/services/{SERVICE}/", USERS[user])

    def pods(self, component: str = "kernel") -> list[dict[str, Any]]:
        return [p for p in self.api.all("pods") if Node.component(p) == component]

    def close(self) -> None:
        self.server.stop()
        self.socket.close()
        self.api.stop()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Any]:
    pytest.importorskip("jupyterhub")
    made: list[Cluster] = []

    def make(**traits: Any) -> Cluster:
        cluster = Cluster(tmp_path, **traits)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


async def start(cluster: Cluster, user: str, kernel_id: str, env: str = "tf220") -> dict[str, Any]:
    client = cluster.client(user)
    await client.prepare_runtime(kernel_id, restart=False)
    body = {"kernel_id": kernel_id, "environment": env, "cwd": "/tmp", "key": KEY}
    return await client.start_kernel(body, timeout=60)


def refused(status: int) -> Any:
    """pytest.raises for the broker's answer ``status``."""

    class Check:
        def __enter__(self) -> Any:
            self.raises = pytest.raises(BrokerError)
            self.info = self.raises.__enter__()
            return self.info

        def __exit__(self, *exc: Any) -> Any:
            handled = self.raises.__exit__(*exc)
            assert self.info.value.http_status == status, self.info.value.message
            return handled

    return Check()


ALICE_KID = "a11ce000-0000-4000-8000-000000000001"


# --- item 2: another user's kernel id ---------------------------------------------------


async def test_a_start_with_another_users_kernel_id_leaves_their_kernel_alone(make_cluster):
    """scripted API: bob starts a kernel with alice's kernel id (seen in a URL or a shared
    session): alice's pod, Secret and NetworkPolicy stay as they were; bob gets a kernel
    of his own under another name, and his shutdown removes only his."""
    cluster = make_cluster()
    mine = await start(cluster, "alice", ALICE_KID)
    [pod] = cluster.pods()
    uid = pod["metadata"]["uid"]
    policies = [p["metadata"]["name"] for p in cluster.api.all("networkpolicies")]
    secrets = [s["metadata"]["name"] for s in cluster.api.all("secrets")]

    theirs = await start(cluster, "bob", ALICE_KID)
    alices = cluster.api.get("pods", NS, mine["name"])
    assert alices is not None and alices["metadata"]["uid"] == uid
    assert theirs["name"] != mine["name"]
    assert alices["metadata"]["annotations"][m.LABEL_OWNER] == "alice"
    assert alices["status"]["phase"] == "Running"
    names = {p["metadata"]["name"] for p in cluster.api.all("networkpolicies")}
    assert set(policies) < names
    assert set(secrets) < {s["metadata"]["name"] for s in cluster.api.all("secrets")}

    # Each sees their own kernel under that id; bob's shutdown takes only his.
    assert (await cluster.client("alice").kernel(ALICE_KID))["name"] == mine["name"]
    assert (await cluster.client("bob").kernel(ALICE_KID))["name"] == theirs["name"]
    await cluster.client("bob").delete_kernel(ALICE_KID)
    assert [p["metadata"]["name"] for p in cluster.pods()] == [mine["name"]]
    await cluster.client("alice").delete_kernel(ALICE_KID)
    assert cluster.pods() == []


async def test_state_signals_and_deletion_of_another_users_kernel_are_not_found(make_cluster):
    """scripted API: every endpoint that names a kernel answers 404 to another user, and
    leaves the kernel as it was."""
    cluster = make_cluster()
    mine = await start(cluster, "alice", ALICE_KID)
    bob = cluster.client("bob")
    for call in (
        bob.kernel(ALICE_KID),
        bob.live(ALICE_KID),
        bob.logs(ALICE_KID),
        bob.signal(ALICE_KID, signal.SIGTERM),
        bob.signal(ALICE_KID, signal.SIGKILL),
        bob.request("DELETE", f"api/kernels/{ALICE_KID}"),
    ):
        with refused(404) as info:
            await call
        assert info.value.message == f"No kernel {ALICE_KID} of yours."
    assert await bob.kernels() == []
    [pod] = cluster.pods()
    assert pod["metadata"]["name"] == mine["name"] and pod["status"]["phase"] == "Running"
    await cluster.client("alice").delete_kernel(ALICE_KID)


async def test_a_restart_replaces_the_users_own_pod(make_cluster):
    """scripted API: a restart (same user, same kernel id) still replaces the pod."""
    cluster = make_cluster()
    first = await start(cluster, "alice", ALICE_KID)
    [before] = cluster.pods()
    again = await start(cluster, "alice", ALICE_KID)
    [after] = cluster.pods()
    assert again["name"] == first["name"]
    assert after["metadata"]["uid"] != before["metadata"]["uid"]
    await cluster.client("alice").delete_kernel(ALICE_KID)


# --- item 4: probe and helper pods ------------------------------------------------------


async def test_probe_refreshes_share_one_pod(make_cluster):
    """scripted API: 40 concurrent probe?refresh=1 requests of a user whose kernel limit
    is 1 never run more than one probe pod at a time; every request gets the answer."""
    cluster = make_cluster(max_kernels_per_user=1)
    alice = cluster.client("alice")
    answers = await asyncio.gather(*(alice.probe("tf220", refresh=True) for _ in range(40)))
    assert {a["state"] for a in answers} == {"ok"}
    assert {a["tensorflow"] for a in answers} == {"2.20.0"}
    assert cluster.node.peak["probe"] == 1
    assert cluster.pods("probe") == []


async def test_a_probe_counts_against_the_kernel_limit(make_cluster):
    """scripted API: at the kernel limit a probe is refused (429), and while a probe runs
    it counts as a kernel: a kernel start beyond the limit is refused."""
    cluster = make_cluster(max_kernels_per_user=1)
    alice = cluster.client("alice")
    await start(cluster, "alice", ALICE_KID)
    with refused(429) as info:
        await alice.probe("tf220", refresh=True)
    assert "already runs 1 tfenv kernel; the limit per user is 1" in info.value.message
    assert "environment probe" in info.value.message
    assert cluster.pods("probe") == []
    await alice.delete_kernel(ALICE_KID)

    probing = asyncio.ensure_future(alice.probe("tf220", refresh=True))
    await asyncio.to_thread(wait_for, lambda: cluster.pods("probe"), 30, "the probe pod")
    with refused(429) as info:
        await start(cluster, "alice", ALICE_KID)
    assert "1 environment probe (a probe counts as a kernel while it runs)" in info.value.message
    assert (await probing)["state"] == "ok"
    assert cluster.pods() == []


async def test_checkpoint_helpers_are_capped_per_user(make_cluster):
    """scripted API: concurrent checkpoint listings of one user (each of several
    environments) run one helper pod of that user at a time; the rest wait their turn
    and every listing is answered."""
    cluster = make_cluster()
    alice = cluster.client("alice")
    envs = [f"env{i}" for i in range(5)]
    for i, env in enumerate(envs):  # a claim per environment: each listing needs a pod
        await start(cluster, "alice", f"a11ce000-0000-4000-8000-00000000010{i}", env)
        await alice.delete_kernel(f"a11ce000-0000-4000-8000-00000000010{i}")
    cluster.node.hold = 0.3
    answers = await asyncio.gather(*(alice.checkpoints([env]) for env in envs * 2))
    assert all(a[env]["inventory"]["exists"] for a, env in zip(answers, envs * 2, strict=True))
    assert cluster.node.created_count["checkpoint-helper"] == 10
    assert cluster.node.peak["checkpoint-helper"] == 1
    assert cluster.pods("checkpoint-helper") == []


# --- item 5: egress ---------------------------------------------------------------------

DNS_POD = {"app.kubernetes.io/name": "kube-dns", "k8s-app": "kube-dns"}


def _policies_and_pod(cluster: Cluster, name: str) -> tuple[list[dict[str, Any]], Any]:
    pod = cluster.api.get("pods", NS, name)
    assert pod is not None
    return cluster.api.all("networkpolicies"), pod


async def test_a_networked_kernel_reaches_public_addresses_and_dns_only(make_cluster):
    """scripted API: a kernel of a networked environment may not reach the cloud metadata
    server, the API server's Service, other pods, the hub or the nodes, as z2jh's servers
    may not; public addresses and the cluster DNS it reaches. A kernel of network: none
    reaches nothing."""
    cluster = make_cluster()
    net = await start(cluster, "alice", ALICE_KID, "tf220-net")
    policies, pod = _policies_and_pod(cluster, net["name"])
    allowed = partial(egress_allowed, policies, pod)
    for ip, port in [
        ("169.254.169.254", 80),  # the cloud metadata server
        ("10.96.0.1", 443),  # the API server's Service
        ("10.244.3.7", 52000),  # another kernel pod
        ("172.20.0.4", 8081),  # the hub, on a private range
        ("192.168.1.10", 10250),  # a node's kubelet
        ("100.64.0.1", 80),  # carrier-grade NAT
        ("fd00::1", 443),
        ("fe80::1", 80),
    ]:
        assert not allowed(port=port, ip=ip), (ip, port)
    assert not allowed(port=8081, namespace="jhub", pod_labels={"component": "hub"})
    assert allowed(port=443, ip="140.82.112.3")
    assert allowed(port=443, ip="2606:4700::1111")
    for protocol in ("UDP", "TCP"):
        assert allowed(port=53, protocol=protocol, namespace="kube-system", pod_labels=DNS_POD)
    assert not allowed(port=443, namespace="kube-system", pod_labels=DNS_POD)

    offline = await start(cluster, "alice", "a11ce000-0000-4000-8000-000000000002")
    policies, pod = _policies_and_pod(cluster, offline["name"])
    assert not egress_allowed(policies, pod, port=443, ip="140.82.112.3")
    assert not egress_allowed(
        policies, pod, port=53, protocol="UDP", namespace="kube-system", pod_labels=DNS_POD
    )
    for kid in (ALICE_KID, "a11ce000-0000-4000-8000-000000000002"):
        await cluster.client("alice").delete_kernel(kid)


async def test_kubernetes_egress_allow_opens_what_the_admin_lists(make_cluster):
    """scripted API: c.TFEnvBroker.kubernetes_egress_allow opens private addresses on
    purpose (a database on 10.20.0.5:5432, a NodeLocal DNS cache), nothing more."""
    cluster = make_cluster(
        kubernetes_egress_allow=[
            "10.20.0.5/32:5432",
            "169.254.20.10/32:53/UDP",
            {"to": [{"namespaceSelector": {"matchLabels": {"team": "data"}}}]},
        ]
    )
    net = await start(cluster, "alice", ALICE_KID, "tf220-net")
    policies, pod = _policies_and_pod(cluster, net["name"])
    allowed = partial(egress_allowed, policies, pod)
    assert allowed(port=5432, ip="10.20.0.5")
    assert not allowed(port=5433, ip="10.20.0.5")
    assert not allowed(port=5432, ip="10.20.0.6")
    assert allowed(port=53, protocol="UDP", ip="169.254.20.10")
    assert not allowed(port=80, ip="169.254.169.254")
    assert allowed(port=9000, namespace="minio", namespace_labels={"team": "data"}, pod_labels={})
    await cluster.client("alice").delete_kernel(ALICE_KID)


# --- item 9: claims and server labels ---------------------------------------------------


async def test_a_claim_under_your_name_that_is_someone_elses_is_never_mounted(make_cluster):
    """scripted API: a claim whose name is bob's but whose annotations say it is alice's
    (what a collision of names would give) is refused with a clear message; no pod of
    bob's mounts it."""
    cluster = make_cluster()
    name = m.claim_name("bob", "tf220")
    cluster.api.store(
        "persistentvolumeclaims",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": name,
                "namespace": NS,
                "uid": "0e6f0000-0000-4000-8000-000000000001",
                "annotations": {m.LABEL_OWNER: "alice", m.LABEL_ENVIRONMENT: "tf220"},
            },
            "spec": {"accessModes": ["ReadWriteOnce"]},
        },
    )
    with refused(409) as info:
        await start(cluster, "bob", "b0b00000-0000-4000-8000-000000000001")
    assert f"The checkpoint claim {NS}/{name} for your 'tf220' exists but" in info.value.message
    assert "not mounted" in info.value.message
    assert cluster.pods() == []
    with refused(409):
        await cluster.client("bob").checkpoints(["tf220"])
    assert cluster.pods("checkpoint-helper") == []


async def test_a_claim_made_before_the_upgrade_is_still_used_when_it_is_yours(make_cluster):
    """scripted API: a claim under its old 40-bit name whose annotations name the user
    and environment keeps being mounted (checkpoints survive the upgrade); one that names
    someone else is ignored and the user gets a claim of their own."""
    cluster = make_cluster()

    def old_claim(user: str, owner: str) -> str:
        name = m.legacy_claim_name(user, "tf220")
        cluster.api.store(
            "persistentvolumeclaims",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": name,
                    "namespace": NS,
                    "uid": f"0e6f0000-0000-4000-8000-{len(user):012d}",
                    "annotations": {m.LABEL_OWNER: owner, m.LABEL_ENVIRONMENT: "tf220"},
                },
                "spec": {"accessModes": ["ReadWriteOnce"]},
            },
        )
        return name

    old = old_claim("alice", "alice")
    answer = await start(cluster, "alice", ALICE_KID)
    assert answer["checkpoints"]["claim"] == old
    [pod] = cluster.pods()
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [old]
    assert cluster.api.get("persistentvolumeclaims", NS, m.claim_name("alice", "tf220")) is None

    not_bobs = old_claim("bob", "mallory")
    answer = await start(cluster, "bob", "b0b00000-0000-4000-8000-000000000001")
    assert answer["checkpoints"]["claim"] == m.claim_name("bob", "tf220") != not_bobs
    await cluster.client("alice").delete_kernel(ALICE_KID)
    await cluster.client("bob").delete_kernel("b0b00000-0000-4000-8000-000000000001")


async def test_names_kubespawner_labels_with_a_short_hash_are_refused(make_cluster):
    """scripted API: under KubeSpawner 7's scheme, a user name that is not a label value
    as it is gets a 32-bit hash, which another chosen name can match: its kernel would
    admit the other's server. The start is refused with the reason; nothing is made."""
    cluster = make_cluster()
    with refused(400) as info:
        await start(cluster, "bob@example.org", ALICE_KID)
    assert "carries a 32-bit hash" in info.value.message
    assert "kubernetes_accept_hashed_server_labels" in info.value.message
    assert cluster.api.all("pods") == [] and cluster.api.all("secrets") == []


async def test_the_server_selector_follows_the_configured_template_and_scheme(make_cluster):
    """scripted API: with the pre-7 'escape' scheme and a template of the deployment's
    own labels, each user's kernel admits exactly their server's label values; "bob.x"
    and "bob-2ex" get different ones."""
    cluster = make_cluster(
        kubernetes_server_label_scheme="escape",
        kubernetes_server_selector={"app": "jupyterhub", "hub.jupyter.org/username": "{username}"},
    )
    peers = {}
    for user in ("bob.x", "bob-2ex", "bob@example.org"):
        answer = await start(cluster, user, ALICE_KID)
        [policy] = [
            p for p in cluster.api.all("networkpolicies") if p["metadata"]["name"] == answer["name"]
        ]
        peers[user] = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert peers == {
        "bob.x": {"app": "jupyterhub", "hub.jupyter.org/username": "bob-2ex"},
        "bob-2ex": {"app": "jupyterhub", "hub.jupyter.org/username": "bob-2d2ex"},
        "bob@example.org": {
            "app": "jupyterhub",
            "hub.jupyter.org/username": "bob-40example-2eorg",
        },
    }
    for user in peers:
        await cluster.client(user).delete_kernel(ALICE_KID)
