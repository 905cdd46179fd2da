"""``KubernetesSettings`` and what ``KubernetesBackend`` answers without a running kernel.

No Docker, no cluster: the settings against the broker's traits, and the backend (built as
the broker builds it) against the scripted API (tests/support/k8s_api.py) with a scripted
node, for the errors a user reads: the statuses, reasons and messages the broker answers.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from jupyter_tfenv.backends.base import BackendError, KernelNotFound, KernelStart, Usage
from jupyter_tfenv.backends.kubernetes import KubernetesBackend, KubernetesSettings
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.core.caller import Caller
from tests.support.k8s_api import ScriptedAPI, ScriptedKubelet

pytestmark = pytest.mark.scripted_api

NS = "tfenv-kernels"
ADA = Caller(name="ada", uid=1000, gid=100, home="/")
CATALOG = [
    {"id": "py", "image": "tfenv-test/python:3.11-jupyter"},
    {"id": "gpu1", "image": "tfenv-test/python:3.11-jupyter", "gpus": 1},
]


# -- settings ------------------------------------------------------------------------------


def test_settings_defaults_are_the_broker_traits_defaults() -> None:
    """``KubernetesSettings()`` and ``from_config(TFEnvBroker())`` agree field by field
    (but the memory default, which the broker computes from the host)."""
    from jupyter_tfenv.broker.app import TFEnvBroker

    broker = TFEnvBroker(kubernetes_server_namespace="")
    built = KubernetesSettings.from_config(broker)
    default = KubernetesSettings()
    for f in fields(KubernetesSettings):
        if f.name == "default_memory":
            assert built.default_memory == (broker.default_memory or None)
            continue
        assert getattr(built, f.name) == getattr(default, f.name), f.name


def test_settings_carry_every_kubernetes_trait() -> None:
    """Each broker trait ``kubernetes_<x>`` is a settings field ``<x>``."""
    from jupyter_tfenv.broker.app import TFEnvBroker

    names = {f.name for f in fields(KubernetesSettings)}
    traits = {
        t.removeprefix("kubernetes_")
        for t in TFEnvBroker.class_trait_names(config=True)
        if t.startswith("kubernetes_")
    }
    assert traits and traits - names == set()


def test_settings_from_a_configured_broker() -> None:
    from jupyter_tfenv.broker.app import TFEnvBroker

    broker = TFEnvBroker(
        config=Config(
            {
                "TFEnvBroker": {
                    "kubernetes_namespace": "kernels",
                    "kubernetes_server_namespace": "hub",
                    "kubernetes_egress_allow": ["10.1.0.0/16:5432", {"to": [], "ports": []}],
                    "kubernetes_storage_access_modes": ["ReadWriteMany"],
                    "kubernetes_storage_class": "nfs",
                    "kubernetes_uid": 2000,
                    "kubernetes_gid": 2000,
                    "kubernetes_helper_pods_per_user": 3,
                    "kubernetes_server_label_scheme": "escape",
                    "default_memory": 2 * 1024**3,
                    "probe_timeout": 30.0,
                }
            }
        )
    )
    s = KubernetesSettings.from_config(broker)
    assert (s.namespace, s.server_namespace, s.storage_class) == ("kernels", "hub", "nfs")
    assert s.egress_allow == ("10.1.0.0/16:5432", {"to": [], "ports": []})
    assert s.storage_access_modes == ("ReadWriteMany",)
    assert (s.uid, s.gid, s.helper_pods_per_user) == (2000, 2000, 3)
    assert s.server_label_scheme == "escape"
    assert (s.default_memory, s.probe_timeout) == (2 * 1024**3, 30.0)
    backend = KubernetesBackend(s, catalog=lambda: None)
    assert backend.account == (2000, 2000) and backend.name == "kubernetes"


# -- the backend's answers -------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> TFEnvCatalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
    made = TFEnvCatalog(config=Config({"TFEnvCatalog": {"catalog_files": [str(path)]}}))
    made.refresh()
    return made


@pytest.fixture
def api() -> Any:
    server = ScriptedAPI(NS)
    server.start()
    yield server
    server.stop()


def backend_on(api: ScriptedAPI, tmp_path: Path, catalog: TFEnvCatalog, **kw: Any) -> Any:
    settings = KubernetesSettings(
        namespace=NS, config=str(api.kubeconfig(tmp_path)), schedule_timeout=0.3, **kw
    )
    return KubernetesBackend(settings, catalog=lambda: catalog)


def request(kernel_id: str = "", key: str | None = "k" * 32) -> KernelStart:
    return KernelStart(
        kernel_id=kernel_id or str(uuid.uuid4()), environment="py", cwd="/", mount="/", key=key
    )


async def test_a_pod_the_scheduler_cannot_place_fails_the_start_with_its_events(
    api: ScriptedAPI, tmp_path: Path, catalog: TFEnvCatalog
) -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    unschedulable = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
            }
        ]
    }
    api.kubelet = ScriptedKubelet(
        [(0.05, unschedulable, [("FailedScheduling", message, "Warning")])]
    )
    backend = backend_on(api, tmp_path, catalog)
    admitted: list[tuple[Usage, int]] = []
    with pytest.raises(BackendError) as failed:
        await backend.start(
            ADA, request(), catalog.get("gpu1"), admit=lambda u, g: admitted.append((u, g))
        )
    assert admitted == [(Usage(), 1)]  # the GPUs the new kernel would take
    assert failed.value.http_status == 503 and failed.value.reason == "pod did not start"
    assert "Insufficient nvidia.com/gpu" in failed.value.message
    assert "Events of the kernel pod:" in failed.value.logs
    assert "FailedScheduling" in failed.value.logs
    assert api.all("pods") == []
    await backend.close()


async def test_an_api_server_that_does_not_answer_is_a_503(
    tmp_path: Path, catalog: TFEnvCatalog
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ScriptedAPI(NS)  # for its kubeconfig only: never started
    server.url = f"http://127.0.0.1:{port}"
    backend = backend_on(server, tmp_path, catalog)
    backend.api().api_client.configuration.retries = 0
    with pytest.raises(BackendError) as down:
        await backend.list_kernels(ADA)
    assert down.value.http_status == 503 and down.value.reason == "kubernetes unavailable"
    assert "does not answer" in down.value.message


async def test_a_server_selector_without_the_username_is_a_configuration_error(
    api: ScriptedAPI, tmp_path: Path, catalog: TFEnvCatalog
) -> None:
    backend = backend_on(api, tmp_path, catalog, server_selector={"component": "singleuser"})
    with pytest.raises(BackendError) as bad:
        await backend.start(ADA, request(), catalog.get("py"))
    assert bad.value.http_status == 500 and bad.value.reason == "bad configuration"
    assert api.all("pods") == [] and api.all("secrets") == []


async def test_kernel_ids_and_keys_are_checked_before_the_api_is_asked(
    api: ScriptedAPI, tmp_path: Path, catalog: TFEnvCatalog
) -> None:
    backend = backend_on(api, tmp_path, catalog)
    with pytest.raises(BackendError) as bad_id:
        await backend.find(ADA, "../etc")
    assert bad_id.value.http_status == 400 and "'kernel_id' must be a kernel id" in str(
        bad_id.value
    )
    with pytest.raises(BackendError) as no_key:
        await backend.start(ADA, request(key=None), catalog.get("py"))
    assert no_key.value.reason == "no key"
    with pytest.raises(KernelNotFound):
        await backend.logs(ADA, str(uuid.uuid4()))
    assert {method for method, _ in api.requests} <= {"GET"}  # reads only: nothing made
    assert await backend.list_kernels(ADA) == []
    assert await backend.usage(ADA) == Usage()
    assert await backend.prepare_connection(ADA, str(uuid.uuid4()), False) == {
        "backend": "kubernetes",
        "transport": "tcp",
        "ports": m.KernelPorts().by_name(),
    }
