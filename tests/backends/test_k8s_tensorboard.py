"""TensorBoard pods on Kubernetes (issue 23 item 4): the objects, validated offline for
1.30 and 1.33 and by the restricted checker (tier 1), and a pod served through the
scripted API (tier 3) with its Docker node: real TensorFlow writes events into alice's
log claim, the backend starts her TensorBoard pod, and ``GET http://<pod ip>:6006/data/runs``
lists the run. No cluster is involved (docs/kubernetes.md, "tiers")."""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from traitlets.config import Config

from jupyter_tfenv.backends.base import BackendError
from jupyter_tfenv.backends.kubernetes import KubernetesBackend, KubernetesSettings
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes import tensorboard as tb
from jupyter_tfenv.backends.kubernetes.api import KubernetesAPI
from jupyter_tfenv.backends.kubernetes.pss import check_pod
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.labels import LABEL_KERNEL_ID, LABEL_OWNER, LABEL_TENSORBOARD
from tests.support.k8s_api import (
    DockerKubelet,
    ScriptedAPI,
    ScriptedKubelet,
    container,
    make_root,
    remove_root,
    scheduled,
)

NS = "tfenv-kernels"
UID = GID = 54321
IMAGE = "tfenv-test/tensorflow:2.20.0-jupyter"
K8S_VERSIONS = ("1.30", "1.33")
ENV = environment_from_dict({"id": "tf220", "image": IMAGE, "tensorflow": "2.20.0"})
ENV2 = environment_from_dict({"id": "tf219", "image": IMAGE, "tensorflow": "2.19.0"})

#: Two epochs of a tiny Keras model with the TensorBoard callback, into /logs/run1.
TRAIN = r"""
import numpy as np
import keras
x = np.random.RandomState(0).rand(64, 4).astype("float32")
y = x.sum(axis=1, keepdims=True)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
model.fit(x, y, epochs=2, batch_size=16, verbose=0,
          callbacks=[keras.callbacks.TensorBoard("/logs/run1")])
"""


def spec_of(name: str = "env-tf220", **kw: Any) -> tb.TensorBoardPodSpec:
    values: dict[str, Any] = {
        "username": "alice",
        "uid": UID,
        "gid": GID,
        "namespace": NS,
        "name": name,
        "image_env": ENV,
        "image": IMAGE,
        "claims": (("tf220", m.claim_name("alice", "tf220")),),
        **kw,
    }
    return tb.TensorBoardPodSpec(**values)


COMPARE = spec_of(
    "compare",
    claims=(("tf220", m.claim_name("alice", "tf220")), ("tf219", m.claim_name("alice", "tf219"))),
    username="Bob.Smith@example.org",
    server_name="big run",
)


# -- tier 1: the objects ------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("spec", [spec_of(), COMPARE], ids=["environment", "compare"])
def test_the_objects_are_valid_and_restricted(spec: tb.TensorBoardPodSpec, version: str) -> None:
    pod = tb.tensorboard_pod(spec)
    policy = tb.tensorboard_network_policy(spec)
    for obj in (pod, policy):
        # Raises (ValidationError, naming the field) when the object is invalid.
        kubernetes_validate.validate(obj, version, strict=True)
    assert check_pod(pod) == [], "the TensorBoard pod must pass the restricted Pod Security check"


def test_the_pod_mounts_the_log_claims_read_only_and_nothing_else() -> None:
    pod = tb.tensorboard_pod(COMPARE)
    [container] = pod["spec"]["containers"]
    sec, pod_sec = container["securityContext"], pod["spec"]["securityContext"]
    assert sec["readOnlyRootFilesystem"] is True and sec["capabilities"] == {"drop": ["ALL"]}
    assert pod_sec["runAsUser"] == UID and pod_sec["runAsGroup"] == GID
    assert pod_sec["runAsNonRoot"] is True and pod_sec["seccompProfile"]["type"] == "RuntimeDefault"
    logs = {v["mountPath"]: v for v in container["volumeMounts"] if v["name"].startswith("logs")}
    assert set(logs) == {"/tfenv/logs/tf220", "/tfenv/logs/tf219"}, logs
    assert all(v["readOnly"] and v["subPath"] == m.LOG_SUBPATH for v in logs.values()), logs
    claims = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert [c["persistentVolumeClaim"]["claimName"] for c in claims] == [
        m.claim_name("alice", "tf220"),
        m.claim_name("alice", "tf219"),
    ]
    assert all(c["persistentVolumeClaim"]["readOnly"] for c in claims)
    others = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" not in v]
    assert others == [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}], "only /tmp besides"
    assert "--host=0.0.0.0" in container["command"] and "--port=6006" in container["command"]
    assert "--run-tensorboard" in container["command"], "started by the bridge's code path"
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "2Gi"}
    env_pod = tb.tensorboard_pod(spec_of())
    [env_mount] = [
        v for v in env_pod["spec"]["containers"][0]["volumeMounts"] if v["name"] == "logs-0"
    ]
    assert env_mount["mountPath"] == "/tfenv/logs" and env_mount["readOnly"] is True


def test_labels_names_and_policy() -> None:
    pod = tb.tensorboard_pod(spec_of())
    labels = pod["metadata"]["labels"]
    assert LABEL_KERNEL_ID not in labels, "a TensorBoard is never counted as a kernel"
    assert labels[m.COMPONENT_LABEL] == "tensorboard" and labels[LABEL_TENSORBOARD] == "env-tf220"
    assert pod["metadata"]["annotations"][LABEL_OWNER] == "alice"
    assert tb.tensorboard_pod_name("alice", "compare") != tb.tensorboard_pod_name("bob", "compare")
    assert tb.tensorboard_pod_name("alice", "compare") != tb.tensorboard_pod_name(
        "alice", "env-tf220"
    )
    policy = tb.tensorboard_network_policy(spec_of(), {"app": "server-of-alice"})
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "server-of-alice"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6006}]
    assert policy["spec"]["egress"] == [] and "Egress" in policy["spec"]["policyTypes"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert all(labels.get(k) == v for k, v in selected.items()), "the policy selects its pod"
    default = tb.tensorboard_network_policy(spec_of())
    peer = default["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert peer == m.default_server_selector("alice", ""), "the kernels' server selector"


def test_refusals() -> None:
    with pytest.raises(m.KubernetesManifestError, match="root"):
        tb.tensorboard_pod(spec_of(uid=0))
    with pytest.raises(m.KubernetesManifestError, match="at least one log claim"):
        tb.tensorboard_pod(spec_of(claims=()))
    with pytest.raises(m.KubernetesManifestError, match="one log claim"):
        tb.tensorboard_pod(spec_of(claims=COMPARE.claims))


# -- tier 3: the scripted API with the Docker node ------------------------------------------


def with_claim(api: ScriptedAPI, owner: str = "alice", env_id: str = "tf220") -> str:
    """``owner``'s checkpoint claim of ``env_id`` as a kernel start makes it."""
    claim = m.claim_name(owner, env_id)
    api.store(
        "persistentvolumeclaims",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": claim,
                "namespace": NS,
                "annotations": {LABEL_OWNER: owner, m.LABEL_ENVIRONMENT: env_id},
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    return claim


@pytest.mark.scripted_api
def test_an_image_that_cannot_be_pulled_is_said_and_the_pod_removed() -> None:
    """scripted API: ErrImagePull ends the start as for a kernel pod, in TensorBoard's
    words, with the events; the pod and its policy are removed."""
    failed = f'Failed to pull image "{IMAGE}": rpc error: code = NotFound desc = manifest unknown'
    api = ScriptedAPI(NS)
    api.start()
    api.kubelet = ScriptedKubelet(
        [
            (0.05, scheduled(), [("Pulling", "Pulling image", "Normal")]),
            (
                0.2,
                container({"waiting": {"reason": "ErrImagePull", "message": failed}}),
                [("Failed", failed, "Warning")],
            ),
        ]
    )
    pods = tb.TensorBoardPods(KubernetesAPI(api.api_client(), NS, poll_interval=0.05))
    try:
        with_claim(api)
        with pytest.raises(BackendError) as err:
            asyncio.run(pods.start(spec_of()))
        assert err.value.message.startswith("The TensorBoard of 'env-tf220' could not start: ")
        assert (
            "could not be pulled" in err.value.message and "manifest unknown" in err.value.message
        )
        assert err.value.http_status == 502 and "Failed to pull image" in err.value.logs
        assert api.all("pods") == [] and api.all("networkpolicies") == [], "left behind"
    finally:
        api.stop()


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.mark.scripted_api
@pytest.mark.docker
@pytest.mark.slow
def test_a_tensorboard_pod_serves_the_users_logs(tmp_path: Path, images: Any) -> None:
    """scripted API + Docker node: real events, a real TensorBoard on the pod IP."""
    if os.getuid() != 0:
        pytest.skip("the Docker kubelet chowns the pod's folders: needs root (CI is root)")
    path = tmp_path / "catalog.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "environments": [{"id": "tf220", "image": IMAGE, "tensorflow": "2.20.0"}],
            }
        )
    )
    catalog = TFEnvCatalog(config=Config({"TFEnvCatalog": {"catalog_files": [str(path)]}}))
    catalog.refresh()
    api = ScriptedAPI(NS)
    api.start()
    root = make_root()
    node = DockerKubelet(root, images)
    api.kubelet = node
    backend = KubernetesBackend(
        KubernetesSettings(
            namespace=NS, config=str(api.kubeconfig(tmp_path)), uid=UID, gid=GID, start_timeout=120
        ),
        catalog=lambda: catalog,
    )
    alice = Caller(name="alice", uid=UID, gid=GID, home="/")
    bob = Caller(name="bob", uid=UID + 1, gid=GID, home="/")
    env = catalog.get("tf220")
    try:
        # Nothing logged yet (no claim): a 404 that says what to do.
        with pytest.raises(BackendError, match="write to TFENV_LOG_DIR") as no_logs:
            asyncio.run(backend.start_tensorboard(alice, "env-tf220", env, [env]))
        assert no_logs.value.http_status == 404
        # alice's claim, as a kernel start makes it, and two epochs of real TensorFlow
        # written into its logs folder (no network).
        claim = with_claim(api)
        logs = node.claim_dir(claim) / m.LOG_SUBPATH
        logs.mkdir(parents=True)
        os.chown(logs, UID, GID)
        images.containers.run(
            IMAGE,
            [env.python, "-c", TRAIN],
            user=f"{UID}:{GID}",
            network_mode="none",
            volumes=[f"{logs}:/logs:rw"],
            environment={"HOME": "/tmp", "TF_CPP_MIN_LOG_LEVEL": "2"},
            labels={DockerKubelet.LABEL: node.node_id},
            remove=True,
        )
        assert list((logs / "run1").rglob("events.out.tfevents.*")), "TensorFlow wrote no events"

        started = asyncio.run(backend.start_tensorboard(alice, "env-tf220", env, [env]))
        assert not started.reused and started.ip == node.ip_of[started.pod]
        # The scripted node reports the pod ready as soon as its container starts (a
        # cluster's kubelet waits for the readinessProbe): TensorBoard may still be loading.
        runs: Any = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                runs = get_json(f"http://{started.ip}:{started.port}/data/runs")
            except OSError as err:  # not listening yet
                runs = f"no answer: {err}"
            if any(r.startswith("run1") for r in runs if isinstance(runs, list)):
                break
            time.sleep(1)
        assert isinstance(runs, list) and any(r.startswith("run1") for r in runs), (
            f"TensorBoard on the pod IP lists no run1 within 120 s: {runs}; its log: "
            f"{node.log(api, {'metadata': {'name': started.pod}})[-2000:]}"
        )

        box = node.containers[started.pod]
        box.reload()
        [mount] = [x for x in box.attrs["Mounts"] if x["Destination"] == "/tfenv/logs"]
        assert mount["RW"] is False, f"the log claim must be mounted read-only: {mount}"

        again = asyncio.run(backend.start_tensorboard(alice, "env-tf220", env, [env]))
        assert again.reused and again.pod == started.pod, "a running TensorBoard is reused"
        listed = asyncio.run(backend.tensorboards(alice))
        assert [p.name for p in listed] == [started.pod]
        assert asyncio.run(backend.pods(alice)) == [], "a TensorBoard pod is no kernel pod"

        # bob finds nothing of alice's and may delete nothing of hers.
        assert asyncio.run(backend.tensorboards(bob)) == []
        assert asyncio.run(backend.tensorboard_state(bob, "env-tf220")) is None
        with pytest.raises(BackendError, match="No TensorBoard 'env-tf220' of yours") as other:
            asyncio.run(backend.stop_tensorboard(bob, "env-tf220"))
        assert other.value.http_status == 404
        assert api.get("pods", NS, started.pod) is not None, "bob's delete removed alice's pod"

        assert asyncio.run(backend.stop_tensorboard(alice, "env-tf220")) is True
        assert api.get("pods", NS, started.pod) is None, "the pod is still there after stop"
        assert api.get("networkpolicies", NS, started.pod) is None, "its policy is still there"
        assert asyncio.run(backend.tensorboard_state(alice, "env-tf220")) is None
    finally:
        asyncio.run(backend.close())
        node.stop()
        api.stop()
        remove_root(root)
