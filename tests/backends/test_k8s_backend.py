"""Kubernetes kernels (issue 11), tier 3 (scripted API): the backend's lifecycle and
error mapping.

The real ``kubernetes`` client talks HTTP to tests/support/k8s_api.py, a scripted API server on
loopback that validates every object strictly against the official schema and enforces
the restricted Pod Security Standard; what the node does with a pod is scripted per test
(unschedulable, a failed pull, a slow pull, an OOM kill), or done for real by its
LocalKubelet: the pod's kernel command as a local process, as the pod's uid, on its own
loopback address for a pod IP. No cluster is involved (docs/kubernetes.md, "tiers").
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from queue import Empty
from typing import Any

import pytest
from jupyter_client import AsyncKernelClient

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.api import (
    KubernetesAPI,
    KubernetesUnavailableError,
    PodStartError,
)
from jupyter_tfenv.catalog.validation import environment_from_dict
from tests.support.k8s_api import (
    DockerKubelet,
    ScriptedAPI,
    ScriptedKubelet,
    container,
    make_root,
    remove_root,
    scheduled,
    status_body,
)

pytestmark = pytest.mark.scripted_api

NS = "tfenv-kernels"
KEY = "0123456789abcdef" * 4
UID = 54321
IMAGE = "tfenv-test/tensorflow:2.20.0-jupyter"


def start_of(kernel_id: str = "4f1c2d3e-0000-4000-8000-000000000001", **kw: Any) -> m.KernelStart:
    entry: dict[str, Any] = {
        "id": kw.pop("env_id", "tf220"),
        "image": IMAGE,
        "resources": {"memory": "2g", "cpus": 1},
    }
    gpus = kw.pop("gpus", 0)
    if gpus:
        entry["gpus"] = gpus
    env = environment_from_dict(entry)
    values: dict[str, Any] = {
        "env": env,
        "username": kw.pop("username", "alice"),
        "uid": UID,
        "gid": UID,
        "kernel_id": kernel_id,
        "namespace": NS,
        **kw,
    }
    return m.KernelStart(**values)


@pytest.fixture
def api():
    server = ScriptedAPI(NS)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def local_kubelet(api, images):
    """The scripted API's node runs pods for real, in Docker (tests/support/k8s_api.py)."""
    if os.getuid() != 0:
        pytest.skip("the Docker kubelet chowns the pod's folders: needs root (CI is root)")
    root = make_root()
    api.kubelet = DockerKubelet(root, images)
    yield api.kubelet
    api.kubelet.stop()
    remove_root(root)


def backend_of(api: ScriptedAPI, **kw: Any) -> KubernetesAPI:
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("schedule_timeout", 0.0)
    return KubernetesAPI(api.api_client(), NS, **kw)


async def execute(info: Any, code: str, timeout: float = 60) -> dict[str, Any]:
    client = AsyncKernelClient()
    client.load_connection_info(info)
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=timeout)
        msg_id = client.execute(code)
        out: dict[str, Any] = {"stdout": ""}
        while True:
            msg = await client.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out["stdout"] += msg["content"]["text"]
            if msg["msg_type"] == "error":
                out["error"] = msg["content"]["evalue"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return out
    finally:
        client.stop_channels()


# --- a pod that runs ------------------------------------------------------------------


async def test_a_kernel_pod_starts_and_its_kernel_answers_at_the_pod_ip(api, local_kubelet):
    """scripted API + local kubelet: the objects are submitted in order, owned right, and
    the kernel (the pod's image, command and Secret, run in Docker) answers at the pod IP."""
    backend = backend_of(api)
    start = start_of()
    pod = await backend.start(start, KEY, start_timeout=60)
    assert pod.ip.startswith("127.") and pod.ip != "127.0.0.1"
    assert pod.ports == start.ports.by_name()

    posts = [(meth, path.split("?")[0].rsplit("/", 1)[-1]) for meth, path in api.requests]
    creates = [p for meth, p in posts if meth == "POST"]
    assert creates == ["persistentvolumeclaims", "secrets", "pods", "networkpolicies"]
    stored = api.get("pods", NS, pod.name)
    secret = api.get("secrets", NS, m.secret_name(start))
    policy = api.get("networkpolicies", NS, m.network_policy_name(start))
    assert stored and secret and policy
    uid = stored["metadata"]["uid"]
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [uid]
    assert [r["uid"] for r in policy["metadata"]["ownerReferences"]] == [uid]
    assert secret["immutable"] is True
    assert api.get("persistentvolumeclaims", NS, m.pvc_name(start)) is not None

    info = m.connection_info(start, KEY, ip=pod.ip)
    out = await execute(
        info,
        "import os, json; print(json.dumps([os.getuid(), os.getgid(), "
        "os.environ['TFENV_CHECKPOINT_DIR'], "
        "any('" + KEY + "' in v for v in os.environ.values())]))",
    )
    got_uid, got_gid, ckpt, key_in_env = json.loads(out["stdout"])
    assert (got_uid, got_gid) == (UID, UID)
    assert not key_in_env
    assert ckpt.endswith("/checkpoints")
    # The kernel listens at its pod IP only (the scripted node's pods share the host's
    # network namespace): not on another loopback address.
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", start.ports.shell)) != 0

    # A client without the key gets no answer.
    wrong = AsyncKernelClient()
    wrong.load_connection_info(dict(info, key="not-the-key"))  # type: ignore[arg-type]
    wrong.start_channels()
    try:
        wrong.kernel_info()
        with pytest.raises((Empty, TimeoutError)):
            await wrong.get_shell_msg(timeout=2)
    finally:
        wrong.stop_channels()

    state = await backend.state(pod.name)
    assert state is not None and state.running and state.ip == pod.ip
    mine = await backend.pods({m.LABEL_OWNER: "alice"})
    assert [p.name for p in mine] == [pod.name]
    assert await backend.pods({m.LABEL_OWNER: "bob"}) == []

    assert await backend.delete(pod.name, secret=m.secret_name(start), wait=True)
    assert api.get("pods", NS, pod.name) is None
    assert api.get("secrets", NS, m.secret_name(start)) is None
    assert api.get("networkpolicies", NS, m.network_policy_name(start)) is None
    # The checkpoint claim outlives the pod.
    assert api.get("persistentvolumeclaims", NS, m.pvc_name(start)) is not None
    assert not await backend.delete(pod.name)  # gone already: no error


async def test_checkpoints_survive_the_pod_and_a_restart_gets_a_new_pod(api, local_kubelet):
    """scripted API + local kubelet: a restart (same kernel id) replaces the pod; what the
    kernel wrote to /tfenv/checkpoints is on the claim afterwards."""
    backend = backend_of(api)
    start = start_of()
    first = await backend.start(start, KEY, start_timeout=60)
    info = m.connection_info(start, KEY, ip=first.ip)
    await execute(
        info,
        "import os; open(os.path.join(os.environ['TFENV_CHECKPOINT_DIR'], 'step-1.txt'), 'w')"
        ".write('weights')",
    )
    old_uid = api.get("pods", NS, first.name)["metadata"]["uid"]
    second = await backend.start(start, KEY, start_timeout=60)
    assert second.name == first.name
    assert api.get("pods", NS, second.name)["metadata"]["uid"] != old_uid
    out = await execute(
        m.connection_info(start, KEY, ip=second.ip),
        "import os; print(sorted(os.listdir(os.environ['TFENV_CHECKPOINT_DIR'])))",
    )
    assert out["stdout"].strip() == "['step-1.txt']"
    saved = local_kubelet.claim_dir(m.pvc_name(start)) / "checkpoints" / "step-1.txt"
    assert saved.read_text() == "weights" and saved.stat().st_uid == UID
    await backend.delete(second.name, secret=m.secret_name(start))


# --- start errors: what the user reads ------------------------------------------------


def _pending_unschedulable() -> ScriptedKubelet:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    return ScriptedKubelet(
        [
            (
                0.1,
                {
                    "conditions": [
                        {
                            "type": "PodScheduled",
                            "status": "False",
                            "reason": "Unschedulable",
                            "message": message,
                        }
                    ]
                },
                [("FailedScheduling", message, "Warning")],
            )
        ]
    )


async def test_no_node_with_a_free_gpu_says_so_with_the_events(api):
    """scripted API: Pending + FailedScheduling ends the start with the scheduler's reason."""
    api.kubelet = _pending_unschedulable()
    backend = backend_of(api, schedule_timeout=0.3)
    start = start_of(gpus=1, env_id="tf220-gpu")
    with pytest.raises(PodStartError) as err:
        await backend.start(start, KEY, start_timeout=30)
    assert "Insufficient nvidia.com/gpu" in err.value.message
    assert "No node can run the kernel of 'tf220-gpu'" in err.value.message
    assert "FailedScheduling" in err.value.events
    assert err.value.http_status == 503
    assert api.get("pods", NS, m.pod_name(start)) is None  # nothing left waiting
    assert api.get("secrets", NS, m.secret_name(start)) is None


async def test_an_image_that_cannot_be_pulled_says_so(api):
    """scripted API: ErrImagePull / ImagePullBackOff end the start with the pull error."""
    failed = f'Failed to pull image "{IMAGE}": rpc error: code = NotFound desc = manifest unknown'
    api.kubelet = ScriptedKubelet(
        [
            (0.05, scheduled(), [("Pulling", "Pulling image", "Normal")]),
            (
                0.2,
                container({"waiting": {"reason": "ErrImagePull", "message": failed}}),
                [("Failed", failed, "Warning"), ("Failed", "Error: ErrImagePull", "Warning")],
            ),
        ]
    )
    backend = backend_of(api)
    with pytest.raises(PodStartError) as err:
        await backend.start(start_of(), KEY, start_timeout=30)
    assert "could not be pulled" in err.value.message
    assert "manifest unknown" in err.value.message
    assert "Failed to pull image" in err.value.events
    assert err.value.http_status == 502
    assert api.all("pods") == []


async def test_an_admission_refusal_is_the_api_servers_message(api):
    """scripted API: a quota (or policy webhook) refusing the pod reaches the user as is."""
    refusal = (
        'pods "tfenv-kernel-x" is forbidden: exceeded quota: gpu-quota, requested: '
        "requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: "
        "requests.nvidia.com/gpu=4"
    )
    api.admission = lambda pod: status_body(403, "Forbidden", refusal)
    backend = backend_of(api)
    start = start_of(gpus=1)
    with pytest.raises(PodStartError) as err:
        await backend.start(start, KEY, start_timeout=30)
    assert "exceeded quota: gpu-quota" in err.value.message
    assert err.value.http_status == 403
    assert api.get("secrets", NS, m.secret_name(start)) is None  # the Secret went too


async def test_the_restricted_standard_is_enforced_by_the_scripted_api(api):
    """scripted API: the server refuses a pod the restricted standard forbids (what a
    namespace labelled enforce=restricted does), so the admission path is exercised."""
    import copy

    from kubernetes.client.exceptions import ApiException

    pod: Any = copy.deepcopy(m.kernel_pod(start_of()))
    pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    core = backend_of(api).core
    with pytest.raises(ApiException) as err:
        await asyncio.to_thread(core.create_namespaced_pod, NS, pod)
    assert err.value.status == 403
    assert "violates PodSecurity" in str(err.value.body)


async def test_an_oom_killed_kernel_says_to_give_it_more_memory(api):
    """scripted API: a kernel container terminated with OOMKilled at start."""
    api.kubelet = ScriptedKubelet(
        [
            (0.05, {**scheduled(), **container({"running": {}})}, []),
            (
                0.1,
                {
                    "phase": "Failed",
                    **container({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
                },
                [],
            ),
        ]
    )
    backend = backend_of(api)
    with pytest.raises(PodStartError) as err:
        await backend.start(start_of(), KEY, start_timeout=30)
    assert "OOMKilled" in err.value.message and "more memory" in err.value.message


async def test_image_pull_time_is_not_charged_to_the_start_timeout(api):
    """scripted API: a 2 s pull with a 1 s start timeout still starts; the same 2 s
    without a pull times out (so the timeout is real)."""
    running = {
        "phase": "Running",
        "podIP": "10.1.2.3",
        **container({"running": {"startedAt": "now"}}, ready=True),
    }
    api.kubelet = ScriptedKubelet(
        [
            (0.05, scheduled(), [("Pulling", "Pulling image", "Normal")]),
            (2.0, {}, [("Pulled", "Successfully pulled image in 1.9s", "Normal")]),
            (2.1, running, [("Started", "Started container kernel", "Normal")]),
        ]
    )
    backend = backend_of(api)
    pod = await backend.start(start_of(), KEY, start_timeout=1.0)
    assert pod.ip == "10.1.2.3"
    assert pod.pull_seconds >= 1.5
    await backend.delete(pod.name)

    api.kubelet = ScriptedKubelet([(0.05, scheduled(), []), (2.1, running, [])])
    with pytest.raises(PodStartError) as err:
        await backend.start(start_of(), KEY, start_timeout=1.0)
    assert "did not run within 1 s" in err.value.message
    assert api.all("pods") == []


async def test_a_pull_that_takes_too_long_is_stopped(api):
    """scripted API: pulls have their own cap (kubernetes_pull_timeout)."""
    api.kubelet = ScriptedKubelet([(0.05, scheduled(), [("Pulling", "Pulling image", "Normal")])])
    backend = backend_of(api, pull_timeout=0.5)
    with pytest.raises(PodStartError) as err:
        await backend.start(start_of(), KEY, start_timeout=60)
    assert "Pulling the image of 'tf220' took more than" in err.value.message
    assert "Pre-pull" in err.value.message


# --- the API server itself is the problem ---------------------------------------------


async def test_an_api_server_that_does_not_answer_says_so():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    from kubernetes import client

    conf = client.Configuration()
    conf.host = f"http://127.0.0.1:{port}"
    conf.retries = 0
    backend = KubernetesAPI(client.ApiClient(conf), NS)
    with pytest.raises(KubernetesUnavailableError, match="does not answer"):
        await backend.pods({})


async def test_credentials_the_api_server_refuses_say_so(api):
    from kubernetes import client

    conf = client.Configuration()
    conf.host = api.url
    conf.api_key = {"authorization": "wrong"}
    conf.api_key_prefix = {"authorization": "Bearer"}
    backend = KubernetesAPI(client.ApiClient(conf), NS)
    with pytest.raises(KubernetesUnavailableError, match="refused the broker's credentials"):
        await backend.pods({})


# --- other users' objects (issue 17) ---------------------------------------------------


def _planted(kind: str, name: str, owner: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": "5eed0000-0000-4000-8000-000000000001",
            "annotations": {
                m.LABEL_OWNER: owner,
                m.LABEL_KERNEL_ID: "4f1c2d3e-0000-4000-8000-000000000001",
                m.LABEL_ENVIRONMENT: "tf220",
            },
        },
        **extra,
    }


async def test_a_pod_under_the_kernels_name_that_is_someone_elses_is_never_touched(api):
    """scripted API: when the name a start would use holds another user's pod (whatever
    made it so), the start is refused as if there were no such kernel (404): the pod is
    not deleted, nothing of the starter's is made."""
    start = start_of(username="bob")
    planted = _planted("Pod", m.pod_name(start), "alice", spec={"containers": []})
    api.store("pods", planted)
    with pytest.raises(PodStartError) as err:
        await backend_of(api).start(start, KEY, start_timeout=5)
    assert err.value.http_status == 404
    assert err.value.message == f"No kernel {start.kernel_id} of yours."
    still = api.get("pods", NS, m.pod_name(start))
    assert still is not None and still["metadata"]["uid"] == planted["metadata"]["uid"]
    assert api.all("secrets") == [] and api.all("networkpolicies") == []
    assert not [r for r in api.requests if r[0] == "DELETE"]


async def test_a_claim_under_the_users_name_that_is_someone_elses_is_refused(api):
    """scripted API: the backend mounts a claim only when its annotations name the user
    and environment; otherwise the start is refused (409) before any pod exists."""
    start = start_of(username="bob")
    api.store(
        "persistentvolumeclaims", _planted("PersistentVolumeClaim", m.pvc_name(start), "alice")
    )
    with pytest.raises(PodStartError) as err:
        await backend_of(api).start(start, KEY, start_timeout=5)
    assert err.value.http_status == 409
    assert "exists but its annotations name another user or environment" in err.value.message
    assert api.all("pods") == [] and api.all("secrets") == []
