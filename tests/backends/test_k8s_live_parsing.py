"""Kernel pods' live readings (issue 22, item 3), offline: the broker's Role rule for the
metrics API against the Kubernetes 1.30 and 1.33 schemas, and the pure parts of
``jupyter_tfenv.backends.kubernetes.metrics`` (quantities, Prometheus text, refusals).
Through the broker and the scripted API: tests/broker/test_k8s_live.py."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml

from jupyter_tfenv.backends.kubernetes import metrics
from tests.backends.test_k8s_manifests import K8S_VERSIONS, block_network

RBAC = Path(__file__).resolve().parents[2] / "examples" / "kubernetes" / "broker-rbac.yaml"
METRICS_RULE = {"apiGroups": ["metrics.k8s.io"], "resources": ["pods"], "verbs": ["get"]}


def role() -> dict:
    (found,) = [o for o in yaml.safe_load_all(RBAC.read_text()) if o and o["kind"] == "Role"]
    return found


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_roles_metrics_rule_is_valid(version, monkeypatch):
    """The shipped Role grants `get` on pods.metrics.k8s.io (the one read the live readings
    make), and that Role, and a Role of that rule alone, are valid strictly (unknown fields
    are errors) under the schema of each Kubernetes version, offline."""
    block_network(monkeypatch)
    shipped = role()
    assert METRICS_RULE in shipped["rules"], shipped["rules"]
    kubernetes_validate.validate(shipped, version, strict=True)
    alone = {**shipped, "rules": [METRICS_RULE]}
    kubernetes_validate.validate(alone, version, strict=True)
    broken = {**shipped, "rules": [{**METRICS_RULE, "verb": ["get"]}]}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


@pytest.mark.parametrize(
    ("text", "value"),
    [("12345678n", 0.012345678), ("3u", 0.000003), ("250m", 0.25), ("2", 2.0),
     ("524288Ki", 512 * 2**20), ("1.5Gi", 1.5 * 2**30), ("1e3", 1000.0)],
)  # fmt: skip
def test_metrics_api_quantities(text, value):
    assert float(metrics.parse_usage(text)) == pytest.approx(value)


def test_usage_is_the_kernel_containers():
    """With a sidecar beside it (a service mesh), only the kernel container counts."""
    got = metrics.usage_of(
        {
            "timestamp": "t",
            "window": "15s",
            "containers": [
                {"name": "istio-proxy", "usage": {"cpu": "999m", "memory": "1Gi"}},
                {"name": "kernel", "usage": {"cpu": "500000000n", "memory": "100Mi"}},
            ],
        }
    )
    assert got == {
        "cpu_percent": 50.0,
        "memory_used": 100 * 2**20,
        "read_at": "t",
        "readings_window": "15s",
    }


EXPORTER = """\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0", UUID="GPU-a",device="nvidia0",modelName="Tesla T4",container="kernel",namespace="ns",pod="p"} 92
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",device="nvidia1",modelName="Tesla \\"T4\\"",container_name="kernel",pod_namespace="ns",pod_name="old"} 5 1700000000000
DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-c",device="nvidia2",container="",namespace="",pod=""} 0
DCGM_FI_DEV_FB_USED{gpu="0", UUID="GPU-a",device="nvidia0",modelName="Tesla T4",container="kernel",namespace="ns",pod="p"} 4210
DCGM_FI_DEV_FB_FREE{gpu="0", UUID="GPU-a",device="nvidia0",modelName="Tesla T4",container="kernel",namespace="ns",pod="p"} 10000
DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-b",container_name="kernel",pod_namespace="ns",pod_name="old"} 7
DCGM_FI_DEV_SM_CLOCK{gpu="0",pod="p",namespace="ns"} 1590
not a sample line
DCGM_FI_DEV_FB_FREE{gpu="0",pod="p",namespace="ns"} NaN-ish
"""  # noqa: E501 - the exporter's lines as they come


def test_prometheus_text_to_the_pods_gpus():
    """The exporter's format: spaces after commas, escaped quotes, a timestamp after the
    value, the old pod mapping labels; other metrics, other pods and broken lines are
    left out."""
    samples = metrics.parse_prometheus(EXPORTER)
    assert {s.name for s in samples} == {"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED",
                                        "DCGM_FI_DEV_FB_FREE"}  # fmt: skip
    assert [d["index"] for d in metrics.gpu_devices(samples, "ns", "p")] == [0]
    [gpu] = metrics.gpu_devices(samples, "ns", "p")
    assert gpu["utilization_gpu"] == 92.0 and gpu["name"] == "Tesla T4"
    assert gpu["memory_used"] == 4210 * 2**20 and gpu["memory_total"] == 14210 * 2**20
    [old] = metrics.gpu_devices(samples, "ns", "old")
    assert old["name"] == 'Tesla "T4"' and old["utilization_gpu"] == 5.0
    assert old["memory_used"] == 7 * 2**20 and old["memory_total"] is None
    assert metrics.gpu_devices(samples, "other-ns", "p") == []


def refusal(status: int, body: dict) -> str:
    err = SimpleNamespace(status=status, reason="", body=json.dumps(body))
    return metrics.metrics_refusal(err, "ns", "p")


def test_each_refusal_of_the_metrics_api_says_what_to_do():
    unserved = refusal(404, {"message": "the server could not find the requested resource"})
    assert "install metrics-server" in unserved
    not_yet = refusal(404, {"message": 'pods.metrics.k8s.io "ns/p" not found',
                            "details": {"group": "metrics.k8s.io"}})  # fmt: skip
    assert "no reading of pod ns/p yet" in not_yet
    assert "`get` on `pods` in the API group `metrics.k8s.io`" in refusal(403, {"message": "x"})
    down = refusal(503, {"message": "the server is currently unable to handle the request"})
    assert "metrics-server pods" in down and "unable to handle" in down
