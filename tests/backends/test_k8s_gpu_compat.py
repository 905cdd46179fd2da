"""GPU compatibility on Kubernetes (issue 20 item 4), offline: node labels of NVIDIA's GPU
feature discovery → host facts → the verdict of ``kernels/compat.py`` (the same comparison
as for NVML facts on Docker) → the node affinity of the kernel pod, validated strictly
against the Kubernetes schemas.

The label sets are GFD's as its README and labeler write them: GFD 0.17+ (and the GPU
operator) set both the current ``cuda.driver-version.*``/``cuda.runtime-version.*`` labels
and the deprecated ``cuda.driver.*``/``cuda.runtime.*``; older GFD only the deprecated
ones. The probes are the real probe outputs of tests/kernels/test_compat.py.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest

from jupyter_tfenv.backends.kubernetes import gpu
from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.backends.kubernetes.pss import check_pod
from jupyter_tfenv.catalog.choices import apply_choices
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.kernels.compat import STATE_INCOMPATIBLE, STATE_OK, STATE_UNKNOWN
from tests.kernels.test_compat import TF211_GPU, TF220_CPU_BUILD, TF220_GPU

K8S_VERSIONS = ["1.30", "1.33"]


def node(name: str, labels: dict[str, str], gpus: int | None = None) -> dict[str, Any]:
    """A Node as the API answers it (only what the check reads, plus what a node has)."""
    status: dict[str, Any] = {"capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}
    status["allocatable"] = dict(status["capacity"])
    if gpus:
        status["capacity"]["nvidia.com/gpu"] = str(gpus)
        status["allocatable"]["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", **labels},
        },
        "status": status,
    }


def gfd(
    driver: str,
    cuda: str,
    cc: str,
    product: str,
    count: int,
    *,
    deprecated_only: bool = False,
) -> dict[str, str]:
    """GFD's labels for a node (its labeler: both spellings, or the deprecated only)."""
    d_major, d_minor, d_rev = [*driver.split("."), ""][:3]
    c_major, c_minor = cuda.split(".")
    cc_major, cc_minor = cc.split(".")
    labels = {
        "nvidia.com/cuda.driver.major": d_major,
        "nvidia.com/cuda.driver.minor": d_minor,
        "nvidia.com/cuda.driver.rev": d_rev,
        "nvidia.com/cuda.runtime.major": c_major,
        "nvidia.com/cuda.runtime.minor": c_minor,
        "nvidia.com/gfd.timestamp": "1727461913",
        "nvidia.com/gpu.compute.major": cc_major,
        "nvidia.com/gpu.compute.minor": cc_minor,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.family": "ampere",
        "nvidia.com/gpu.machine": "DGX",
        "nvidia.com/gpu.memory": "40960",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.replicas": "1",
        "nvidia.com/mig.capable": "false",
    }
    if not deprecated_only:
        labels.update(
            {
                "nvidia.com/cuda.driver-version.major": d_major,
                "nvidia.com/cuda.driver-version.minor": d_minor,
                "nvidia.com/cuda.driver-version.revision": d_rev,
                "nvidia.com/cuda.driver-version.full": driver,
                "nvidia.com/cuda.runtime-version.major": c_major,
                "nvidia.com/cuda.runtime-version.minor": c_minor,
                "nvidia.com/cuda.runtime-version.full": cuda,
            }
        )
    return labels


# A GPU operator node (the k3s guide's `kubectl describe nodes`): a V100, driver 535.
V100 = node("gpu-v100", gfd("535.129.03", "12.2", "7.0", "Tesla-V100-SXM2-16GB", 1), 1)
# An older GFD (deprecated labels only), 8 A100s, driver 550.107.02 (GFD's README example).
A100 = node(
    "gpu-a100",
    gfd("550.107.02", "12.4", "8.0", "NVIDIA-A100-SXM4-40GB", 8, deprecated_only=True),
    8,
)
H100 = node("gpu-h100", gfd("570.86.15", "12.8", "9.0", "NVIDIA-H100-80GB-HBM3", 4), 4)
# A T4 node left on the R470 driver (CUDA 11.4).
T4 = node("gpu-t4", gfd("470.182.03", "11.4", "7.5", "Tesla-T4", 2), 2)
# MIG 'single' strategy: the product and count name the MIG devices.
MIG = node(
    "gpu-mig",
    {
        **gfd("550.54.15", "12.4", "8.0", "A100-SXM4-40GB-MIG-1g.5gb", 56),
        "nvidia.com/mig.strategy": "single",
    },
    56,
)
# The device plugin without GFD: the resource, no labels.
BARE = node("gpu-bare", {}, 2)
CPU = node("cpu-1", {})


def env(env_id: str = "tf220-gpu", **fields: Any) -> Environment:
    return environment_from_dict(
        {
            "id": env_id,
            "image": "tensorflow/tensorflow:2.20.0-gpu-jupyter",
            "gpus": 1,
            **fields,
        }
    )


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_node_fixtures_are_valid_nodes(version: str) -> None:
    for n in (V100, A100, H100, T4, MIG, BARE, CPU):
        kubernetes_validate.validate(n, version, strict=True)


def test_gfd_labels_become_nvml_shaped_host_facts() -> None:
    v100 = gpu.node_facts(V100)
    assert v100 is not None and v100.labelled
    assert v100.host["driver_version"] == "535.129.03"
    assert v100.host["cuda_driver_version"] == "12.2"
    assert v100.host["gpus"] == [
        {
            "index": "of node gpu-v100",
            "uuid": None,
            "name": "Tesla-V100-SXM2-16GB",
            "compute_capability": "7.0",
        }
    ]
    # The current spelling is read where both are there.
    assert "nvidia.com/cuda.runtime-version.full" in v100.used
    a100 = gpu.node_facts(A100)  # deprecated labels only
    assert a100 is not None
    assert (a100.host["driver_version"], a100.host["cuda_driver_version"]) == (
        "550.107.02",
        "12.4",
    )
    assert a100.gpus == 8
    assert "nvidia.com/cuda.runtime.major" in a100.used
    mig = gpu.node_facts(MIG)
    assert mig is not None and mig.host["gpus"][0]["compute_capability"] == "8.0"
    assert mig.gpus == 56


def test_a_gpu_node_without_gfd_labels_is_unknown_and_a_cpu_node_is_no_gpu_node() -> None:
    bare = gpu.node_facts(BARE)
    assert bare is not None and not bare.labelled
    assert "gpu-feature-discovery" in bare.host["message"]
    assert gpu.node_facts(CPU) is None
    # GFD labels without the compute capability: not judged either.
    partial = copy.deepcopy(V100)
    del partial["metadata"]["labels"]["nvidia.com/gpu.compute.major"]
    facts = gpu.node_facts(partial)
    assert facts is not None and not facts.labelled
    assert "compute capability" in facts.host["message"]


def test_a_cluster_of_old_drivers_is_incompatible_with_what_to_do() -> None:
    verdict = gpu.cluster_verdict(env(), TF220_GPU, [T4, CPU])
    assert verdict.state == STATE_INCOMPATIBLE
    assert verdict.message.startswith(
        "No GPU node of the cluster can run TensorFlow in 'tf220-gpu'. Node gpu-t4:"
    )
    assert "built for CUDA 12.5" in verdict.message
    assert "470.182.03 supports CUDA up to 11.4" in verdict.message
    assert "Install an NVIDIA driver >= 555.42.02 (CUDA 12.5)" in verdict.message
    assert verdict.details["reason"] == "driver_too_old"
    assert gpu.required_terms(verdict) == []


def test_gpus_older_than_the_build_are_incompatible_on_every_node() -> None:
    """TF 2.20 has no code for compute capability 5.2 (a Maxwell node, new driver)."""
    maxwell = node("gpu-m60", gfd("570.86.15", "12.8", "5.2", "Tesla-M60", 2), 2)
    verdict = gpu.cluster_verdict(env(), TF220_GPU, [maxwell])
    assert verdict.state == STATE_INCOMPATIBLE
    assert "older than every architecture the build has code for" in verdict.message


def test_ok_where_one_node_can_and_the_pod_is_kept_to_such_nodes() -> None:
    verdict = gpu.cluster_verdict(env(), TF220_GPU, [T4, H100, BARE, CPU])
    assert verdict.state == STATE_OK
    assert "runs on 1 of the cluster's 3 GPU node(s) (gpu-h100)" in verdict.message
    assert "Not on: Node gpu-t4:" in verdict.message
    terms = gpu.required_terms(verdict)
    assert terms[0] == {
        "matchExpressions": [
            {"key": "nvidia.com/cuda.runtime-version.full", "operator": "In", "values": ["12.8"]},
            {"key": "nvidia.com/gpu.compute.major", "operator": "In", "values": ["9"]},
            {"key": "nvidia.com/gpu.compute.minor", "operator": "In", "values": ["0"]},
        ]
    }
    assert selects(terms, H100) and selects(terms, BARE)
    assert not selects(terms, T4)
    # Another node of the same kind (driver, CUDA, GPU) matches the same term.
    twin = node("gpu-h100-b", H100["metadata"]["labels"] | {"kubernetes.io/hostname": "b"}, 4)
    assert selects(terms, twin)


def test_minor_version_compatibility_also_matches_the_driver() -> None:
    """On the A100 node CUDA 12.5 runs only through minor-version compatibility, which the
    driver's own version decides: its term names the driver too (deprecated spelling, the
    only one this GFD writes)."""
    verdict = gpu.cluster_verdict(env(), TF220_GPU, [A100, V100])
    assert verdict.state == STATE_OK
    assert "minor-version compatibility" in verdict.message
    terms = gpu.required_terms(verdict)
    a100_term = {e["key"]: e["values"] for e in terms[0]["matchExpressions"]}
    assert a100_term == {
        "nvidia.com/cuda.driver.major": ["550"],
        "nvidia.com/cuda.driver.minor": ["107"],
        "nvidia.com/cuda.driver.rev": ["02"],
        "nvidia.com/cuda.runtime.major": ["12"],
        "nvidia.com/cuda.runtime.minor": ["4"],
        "nvidia.com/gpu.compute.major": ["8"],
        "nvidia.com/gpu.compute.minor": ["0"],
    }
    assert selects(terms, A100) and selects(terms, V100)
    upgraded = copy.deepcopy(A100)
    upgraded["metadata"]["labels"]["nvidia.com/cuda.driver.minor"] = "90"
    assert not selects(terms, upgraded), "a driver not judged is not matched"


def test_an_older_build_runs_on_every_node() -> None:
    verdict = gpu.cluster_verdict(env("tf211-gpu"), TF211_GPU, [T4, V100, H100])
    assert verdict.state == STATE_OK
    assert "runs on 3 of the cluster's 3 GPU node(s)" in verdict.message
    assert all(selects(gpu.required_terms(verdict), n) for n in (T4, V100, H100))


def test_unknown_never_ok_and_never_refuses() -> None:
    never_probed = gpu.cluster_verdict(env(), None, [H100])
    assert never_probed.state == STATE_UNKNOWN
    assert "has not been probed" in never_probed.message
    no_gpu_node = gpu.cluster_verdict(env(), TF220_GPU, [CPU])
    assert no_gpu_node.state == STATE_UNKNOWN
    assert "no node offers nvidia.com/gpu" in no_gpu_node.message
    # A node GFD did not label could be the one that runs it: unknown, not incompatible.
    unlabelled = gpu.cluster_verdict(env(), TF220_GPU, [T4, BARE])
    assert unlabelled.state == STATE_UNKNOWN
    assert "Node gpu-bare: node gpu-bare offers nvidia.com/gpu but has no GPU feature" in (
        unlabelled.message
    )
    assert "Not on: Node gpu-t4:" in unlabelled.message
    forbidden = gpu.nodes_unreadable("tf220-gpu", "the broker may not list the nodes")
    assert forbidden.state == STATE_UNKNOWN
    for verdict in (never_probed, no_gpu_node, unlabelled, forbidden):
        assert gpu.required_terms(verdict) == []


def test_a_cpu_only_build_is_incompatible_and_a_cpu_environment_not_applicable() -> None:
    cpu_build = gpu.cluster_verdict(env(), TF220_CPU_BUILD, [H100])
    assert cpu_build.state == STATE_INCOMPATIBLE
    assert "CPU-only build" in cpu_build.message
    cpu_env = gpu.cluster_verdict(env("tf220", gpus="none"), TF220_GPU, [H100])
    assert cpu_env.state == "not_applicable"


def test_the_catalogs_node_affinity_and_the_gpu_terms_both_hold() -> None:
    catalog = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["b"]}]},
                ]
            }
        },
        "podAntiAffinity": {},
    }
    terms = gpu.required_terms(gpu.cluster_verdict(env(), TF220_GPU, [H100, T4]))
    merged = gpu.merge_required(catalog, terms)
    required = merged["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert len(required["nodeSelectorTerms"]) == 2 * len(terms)
    assert merged["podAntiAffinity"] == {}
    in_pool_a = node("h100-a", H100["metadata"]["labels"] | {"pool": "a"}, 4)
    in_pool_c = node("h100-c", H100["metadata"]["labels"] | {"pool": "c"}, 4)
    t4_in_a = node("t4-a", T4["metadata"]["labels"] | {"pool": "a"}, 2)
    assert selects(required["nodeSelectorTerms"], in_pool_a)
    assert not selects(required["nodeSelectorTerms"], in_pool_c)
    assert not selects(required["nodeSelectorTerms"], t4_in_a)
    assert catalog["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"] == [{"key": "pool", "operator": "In", "values": ["a"]}], (
        "the catalog's affinity was changed in place"
    )


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_kernel_pod_with_gpu_terms_and_choices_is_valid_strictly(version: str) -> None:
    """The pod as the backend submits it: the GPU terms joined with the catalog's
    affinity, the chosen resources in its limits and the choice in its annotation."""
    entry = env(
        kubernetes={
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "pool", "operator": "In", "values": ["gpu"]}
                                ]
                            }
                        ]
                    }
                }
            }
        },
        resources={"memory": "8g", "shm_size": "1g"},
        choices={"gpus": [1, 2], "memory": ["8g", "16g"], "cpus": [2, 4], "shm_size": ["1g", "2g"]},
    )
    chosen = apply_choices(entry, {"gpus": 2, "memory": "16g", "cpus": 4, "shm_size": "2g"})
    terms = gpu.required_terms(gpu.cluster_verdict(chosen, TF220_GPU, [H100, A100, T4]))
    start = m.KernelStart(
        env=chosen,
        username="ada",
        uid=1000,
        gid=100,
        kernel_id="0c9a1f3e-0000-4000-8000-00000000abcd",
        namespace="tfenv-kernels",
        node_terms=tuple(terms),
    )
    pod = m.kernel_pod(start)
    kubernetes_validate.validate(pod, version, strict=True)
    assert not check_pod(pod), "the pod breaks the restricted Pod Security Standard"
    kernel = pod["spec"]["containers"][0]
    assert kernel["resources"]["limits"] == {
        "memory": str(16 * 1024**3),
        "cpu": "4",
        "nvidia.com/gpu": "2",
    }
    assert kernel["resources"]["requests"] == kernel["resources"]["limits"]
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["sizeLimit"] == str(2 * 1024**3)
    assert pod["metadata"]["annotations"]["org.jupyter.tfenv.choices"] == (
        '{"cpus": 4, "gpus": 2, "memory": "16g", "shm_size": "2g"}'
    )
    node_terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    gpu_pool = {"pool": "gpu"}
    assert selects(node_terms, node("h", H100["metadata"]["labels"] | gpu_pool, 4))
    assert selects(node_terms, node("a", A100["metadata"]["labels"] | gpu_pool, 8))
    assert not selects(node_terms, node("t", T4["metadata"]["labels"] | gpu_pool, 2))
    assert not selects(node_terms, H100)  # not in the catalog's pool


def test_a_pod_without_choices_or_gpu_terms_has_neither() -> None:
    start = m.KernelStart(
        env=env("tf220", gpus="none"),
        username="ada",
        uid=1000,
        gid=100,
        kernel_id="0c9a1f3e-0000-4000-8000-00000000abcd",
        namespace="tfenv-kernels",
    )
    pod = m.kernel_pod(start)
    assert "affinity" not in pod["spec"]
    assert "org.jupyter.tfenv.choices" not in pod["metadata"]["annotations"]


# -- what the scheduler does with nodeSelectorTerms (its documented rules) ---------------


def _matches(expr: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        if key not in labels:
            return False
        have, want = int(labels[key]), int(values[0])
        return have > want if op == "Gt" else have < want
    raise AssertionError(f"unknown operator {op}")


def selects(terms: list[dict[str, Any]], n: dict[str, Any]) -> bool:
    """Whether a node satisfies required nodeSelectorTerms: any term, all its expressions."""
    labels = n["metadata"]["labels"]
    return any(all(_matches(e, labels) for e in t["matchExpressions"]) for t in terms)
