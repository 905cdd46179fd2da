"""The KernelBackend contract (tests/backends/test_backend_contract.py) for
:class:`~jupyter_tfenv.backends.kubernetes.backend.KubernetesBackend`, tier 3 (scripted API).

The backend is built as the broker builds it (``KubernetesSettings`` with a kubeconfig, the
catalog getter) and drives the real ``kubernetes`` client against tests/support/k8s_api.py,
whose node (``DockerKubelet``) runs each pod's kernel container for real; with
``kubernetes-podman`` the node is tests/support/k8s_podman_node.py's ``PodmanKubelet``
(each pod played by podman on a bridge network), where podman can run pods.

The shared test functions are imported and run here with this module's ``harness``; where
Kubernetes answers differently by design (an interrupt is the kernel's message, not a
signal; ``live`` readings come from the metrics API; GPUs are the scheduler's), this
module's own tests say so instead.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jupyter_tfenv.backends.base import (
    BackendError,
    KernelInfo,
    KernelNotFound,
    KernelStart,
    KernelSummary,
    Usage,
)
from jupyter_tfenv.backends.kubernetes import KubernetesBackend, KubernetesSettings
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.core.caller import Caller
from tests.backends.test_backend_contract import (
    Harness,
    contract_catalog,  # noqa: F401 - a fixture the harness uses
    test_admit_refuses_before_anything_is_made,  # noqa: F401 - run here with this harness
    test_features_are_declared_and_refusals_say_which,  # noqa: F401
    test_image_status_by_environment,  # noqa: F401
)
from tests.support.k8s_api import DockerKubelet, ScriptedAPI, make_root, remove_root

pytestmark = [
    pytest.mark.docker,
    pytest.mark.scripted_api,
    pytest.mark.usefixtures("images"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the scripted node chowns the pod's folders"),
]

NS = "tfenv-kernels"
OWNER = "tfenv-contract"
POD_UID = POD_GID = 43210


class KubernetesHarness(Harness):
    """The scripted API and its node; the backend made from settings, as the broker does."""

    def __init__(self, tmp_path: Path, catalog: TFEnvCatalog, node: Any) -> None:
        self.catalog = catalog
        self.api = ScriptedAPI(NS)
        self.api.start()
        self.node = node
        self.api.kubelet = node
        self.caller = Caller(name=OWNER, uid=POD_UID, gid=POD_GID, home="/")
        settings = KubernetesSettings(
            namespace=NS,
            server_namespace="jhub",
            config=str(self.api.kubeconfig(tmp_path)),
            uid=POD_UID,
            gid=POD_GID,
            schedule_timeout=0.5,
            start_timeout=120.0,
        )
        self.backend = KubernetesBackend(settings, catalog=lambda: catalog)

    async def request(self, kernel_id: str) -> KernelStart:
        # What the caller's server sends: no folder, the key of its own connection file.
        return KernelStart(
            kernel_id=kernel_id,
            environment="py",
            cwd="/home/contract",
            mount="/home/contract",
            key=uuid.uuid4().hex,
        )

    def close(self) -> None:
        left = [p["metadata"]["name"] for p in self.api.all("pods")]
        self.api.stop()
        problems = self.node.stop() or []
        assert not left, f"the test left kernel pods behind: {left}"
        assert not problems, f"the node left things behind: {problems}"


class _DockerNode(DockerKubelet):
    def __init__(self, docker_client: Any) -> None:
        self.root_dir = make_root()
        super().__init__(self.root_dir, docker_client)

    def stop(self) -> None:
        super().stop()
        remove_root(self.root_dir)


def _podman_node(tmp_path: Path) -> Any:
    from tests.conftest import PY_IMAGE
    from tests.support import podman as pm
    from tests.support.k8s_podman_node import PodmanKubelet

    reason = pm.unusable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"tier 2 must run in CI: {reason}")
        pytest.skip(reason)
    pm.ensure_image(PY_IMAGE)
    (tmp_path / "podman").mkdir()
    return PodmanKubelet(tmp_path / "podman")


@pytest.fixture(params=["kubernetes", "kubernetes-podman"])
def harness(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    images: Any,
    contract_catalog: TFEnvCatalog,  # noqa: F811 - the shared fixture, imported above
) -> Iterator[Harness]:
    node = _DockerNode(images) if request.param == "kubernetes" else _podman_node(tmp_path)
    made = KubernetesHarness(tmp_path, contract_catalog, node)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def k8s(harness: Harness) -> KubernetesHarness:
    assert isinstance(harness, KubernetesHarness)
    return harness


# -- the contract's start-to-remove, with Kubernetes' answers ----------------------------


async def test_a_kernel_pod_from_start_to_remove(k8s: KubernetesHarness) -> None:
    backend, caller = k8s.backend, k8s.caller
    kid = str(uuid.uuid4())
    env = k8s.catalog.get("py")
    admitted: list[tuple[Usage, int]] = []

    connection = await backend.prepare_connection(caller, kid, False)
    assert connection == {
        "backend": "kubernetes",
        "transport": "tcp",
        "ports": m.KernelPorts().by_name(),
    }
    answer = await backend.start(
        caller, await k8s.request(kid), env, admit=lambda u, g: admitted.append((u, g))
    )
    assert answer["kernel_id"] == kid and answer["environment"] == "py"
    assert answer["transport"] == "tcp" and answer["ip"] and answer["ports"]
    assert answer["checkpoints"]["storage"] == "kubernetes"
    assert admitted == [(Usage(kernels=0, gpus=0, probes=0), 0)]

    info = await backend.find(caller, kid)
    assert isinstance(info, KernelInfo)
    assert info.running and info.environment == "py" and info.kernel_id == kid
    assert info.extra["ip"] == answer["ip"] and info.extra["backend"] == "kubernetes"
    assert (await backend.state(caller, kid)).container_id == info.container_id == answer["name"]
    assert set(info.to_dict()) >= {"kernel_id", "container_id", "status", "running", "ip"}

    rows = await backend.list_kernels(caller)
    assert [r.kernel_id for r in rows] == [kid]
    assert isinstance(rows[0], KernelSummary) and rows[0].environment == "py"
    assert (await backend.usage(caller)).kernels == 1
    assert (await backend.usage(caller, exclude=kid)).kernels == 0

    assert isinstance(await backend.logs(caller, kid, tail=5), str)
    # The pod's state and limits; this scripted API serves no metrics API and no DCGM
    # exporter is set, so no readings and the reason (tests/broker/test_k8s_live.py has them).
    assert backend.supports("live")
    live = await backend.live(caller, kid)
    assert live["running"] is True and live["cpu_percent"] is None
    assert [m["kind"] for m in live["missing_readings"]] == ["cpu_memory"]

    # An interrupt is the kernel's interrupt_request message: no signal crosses the API.
    with pytest.raises(BackendError) as refused:
        await backend.signal(caller, kid, signal.SIGINT)
    assert refused.value.http_status == 400 and refused.value.reason == "signal not delivered"
    assert "interrupt_request" in refused.value.message
    assert (await backend.state(caller, kid)).running

    # Another caller sees nothing of it: the same answer as for no kernel at all.
    other = replace(caller, name="someone-else")
    assert await backend.find(other, kid) is None
    with pytest.raises(KernelNotFound) as gone:
        await backend.state(other, kid)
    assert gone.value.http_status == 404 and "of yours" in gone.value.message
    with pytest.raises(KernelNotFound):
        await backend.remove(other, kid)

    await backend.remove(caller, kid)
    assert await backend.find(caller, kid) is None
    assert await backend.list_kernels(caller) == []
    with pytest.raises(KernelNotFound):
        await backend.remove(caller, kid)
    await backend.close()


async def test_sigterm_deletes_the_pod(k8s: KubernetesHarness) -> None:
    backend, caller = k8s.backend, k8s.caller
    kid = str(uuid.uuid4())
    await backend.start(caller, await k8s.request(kid), k8s.catalog.get("py"))
    await backend.signal(caller, kid, signal.SIGTERM)
    assert await backend.find(caller, kid) is None
    await backend.close()


async def test_a_start_without_key_is_refused_before_anything_is_made(
    k8s: KubernetesHarness,
) -> None:
    request = replace(await k8s.request(str(uuid.uuid4())), key=None)
    with pytest.raises(BackendError) as refused:
        await k8s.backend.start(k8s.caller, request, k8s.catalog.get("py"))
    assert refused.value.http_status == 400 and refused.value.reason == "no key"
    assert k8s.api.all("pods") == [] and k8s.api.all("secrets") == []


# -- what Kubernetes does not do, and what it answers instead ---------------------------


async def test_what_kubernetes_lacks_is_refused_or_explained(k8s: KubernetesHarness) -> None:
    backend, caller = k8s.backend, k8s.caller
    assert backend.name == "kubernetes"
    assert backend.supports("checkpoints") and backend.supports("live")
    assert backend.supports("adopt")  # kept pods (issue 22): tests/broker/test_k8s_adopt.py
    for feature in ("pool", "gpu_allocation", "runtime_dirs"):
        assert not backend.supports(feature), feature
    assert backend.account == (POD_UID, POD_GID)

    # Adopting what is not the caller's kernel pod: 404, as every other kernel method.
    with pytest.raises(KernelNotFound):
        await backend.adopt(caller, str(uuid.uuid4()))

    # GPUs: the scheduler's; the answer says so rather than refusing.
    assert await backend.gpus(caller) == {
        "allocation": [],
        "message": "On Kubernetes the scheduler allocates GPUs (nvidia.com/gpu).",
    }
    status = (await backend.image_status([k8s.catalog.get("py")]))["py"]
    assert status.present is None and status.image_id == k8s.catalog.get("py").image
    assert status.note and "each node pulls the image" in status.note
