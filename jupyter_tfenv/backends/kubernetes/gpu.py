"""GPU compatibility on Kubernetes (issue 20 item 4; docs/gpus.md, "Kubernetes"): node
labels in, verdict and node affinity out. Pure: no API calls (the backend lists the nodes).

NVIDIA's GPU feature discovery (GFD: the device plugin's or the GPU operator's) labels
each GPU node with what NVML says there. :func:`node_facts` turns one node's labels into
the same host facts ``backends/docker/gpu.py``'s ``gpu_overview`` gives from NVML
(``driver_version``, ``cuda_driver_version``, ``gpus`` with ``compute_capability``), so
that :func:`~jupyter_tfenv.kernels.compat.check_compatibility` judges each node exactly
as it judges a Docker host: one comparison, two sources of facts.

The labels read (both spellings: GFD's deprecated ones and those of GFD 0.17+)::

    nvidia.com/cuda.driver-version.{full,major,minor,revision}  (cuda.driver.{major,minor,rev})
    nvidia.com/cuda.runtime-version.{full,major,minor}          (cuda.runtime.{major,minor})
    nvidia.com/gpu.compute.{major,minor}, nvidia.com/gpu.product, nvidia.com/gpu.count

``cuda.runtime`` is, despite its name, the newest CUDA the node's *driver* supports
(GFD asks NVML's ``cuDriverGetVersion``): NVML's ``cuda_driver_version`` on Docker.

:func:`cluster_verdict` judges every GPU node (a node that offers ``nvidia.com/gpu`` or
carries GFD labels) and answers one verdict: ``ok`` when at least one node can run the
environment (the others named), ``incompatible`` when every node was judged and none
can, ``unknown`` otherwise: nodes not readable (the broker may not list nodes), no GPU
node, or nodes without GFD labels and none known to be fine. Never ``ok`` on a guess.

:func:`required_terms` is what an ``ok`` verdict asks of the scheduler: node affinity
terms (ORed) matching the label values of the nodes judged compatible, plus the nodes
that GFD has not labelled (not judged: as on Docker, where only GPUs known to be unfit
are left out). So a pod of a CUDA 12.5 build is never put on a node whose driver only
supports 12.2 while a newer node exists. The terms are recomputed at each start, from
the nodes then.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.kernels.compat import (
    STATE_INCOMPATIBLE,
    STATE_OK,
    STATE_UNKNOWN,
    Compatibility,
    check_compatibility,
)

#: The extended resource GPU nodes offer (the NVIDIA device plugin's).
GPU_RESOURCE = "nvidia.com/gpu"

# GFD's labels: (the current spelling, the deprecated one) of each fact.
DRIVER_FULL = ("nvidia.com/cuda.driver-version.full",)
DRIVER_MAJOR = ("nvidia.com/cuda.driver-version.major", "nvidia.com/cuda.driver.major")
DRIVER_MINOR = ("nvidia.com/cuda.driver-version.minor", "nvidia.com/cuda.driver.minor")
DRIVER_REV = ("nvidia.com/cuda.driver-version.revision", "nvidia.com/cuda.driver.rev")
CUDA_FULL = ("nvidia.com/cuda.runtime-version.full",)
CUDA_MAJOR = ("nvidia.com/cuda.runtime-version.major", "nvidia.com/cuda.runtime.major")
CUDA_MINOR = ("nvidia.com/cuda.runtime-version.minor", "nvidia.com/cuda.runtime.minor")
COMPUTE_MAJOR = ("nvidia.com/gpu.compute.major",)
COMPUTE_MINOR = ("nvidia.com/gpu.compute.minor",)
PRODUCT = ("nvidia.com/gpu.product",)
COUNT = ("nvidia.com/gpu.count",)
#: Every label whose presence says GFD has labelled the node.
GFD_LABELS = (
    *DRIVER_FULL,
    *DRIVER_MAJOR,
    *CUDA_FULL,
    *CUDA_MAJOR,
    *COMPUTE_MAJOR,
)

_INT = re.compile(r"^\d+$")


@dataclass(frozen=True)
class NodeFacts:
    """One GPU node: ``host`` in ``gpu_overview``'s shape, and the labels it came from
    (``used``: label → value, what :func:`required_terms` matches on)."""

    name: str
    host: dict[str, Any]
    used: Mapping[str, str]
    gpus: int

    @property
    def labelled(self) -> bool:
        return self.host.get("state") == "ok"


def _first(labels: Mapping[str, str], keys: Iterable[str]) -> tuple[str, str] | None:
    """(label, value) of the first of ``keys`` the node carries with a value."""
    for key in keys:
        value = labels.get(key)
        if value is not None and str(value).strip():
            return key, str(value).strip()
    return None


def _allocatable_gpus(node: Mapping[str, Any]) -> int:
    status = node.get("status") or {}
    for field in ("allocatable", "capacity"):
        value = (status.get(field) or {}).get(GPU_RESOURCE)
        if value is not None and _INT.match(str(value)):
            return int(value)
    return 0


def node_facts(node: Mapping[str, Any]) -> NodeFacts | None:
    """A node (the API's JSON) as host facts; None for a node without GPUs (no
    ``nvidia.com/gpu`` and no GFD label). A GPU node GFD did not (fully) label has
    ``host["state"] == "unknown"`` with what is missing."""
    meta = node.get("metadata") or {}
    name = str(meta.get("name") or "?")
    labels: Mapping[str, str] = meta.get("labels") or {}
    offered = _allocatable_gpus(node)
    if not offered and not any(key in labels for key in GFD_LABELS):
        return None
    used: dict[str, str] = {}

    def pick(keys: Iterable[str]) -> str | None:
        found = _first(labels, keys)
        if found is None:
            return None
        used[found[0]] = found[1]
        return found[1]

    driver = pick(DRIVER_FULL)
    if driver is None:
        parts = [pick(DRIVER_MAJOR), pick(DRIVER_MINOR), pick(DRIVER_REV)]
        driver = ".".join(p for p in parts if p) if parts[0] and parts[1] else None
    cuda = pick(CUDA_FULL)
    if cuda is None:
        major, minor = pick(CUDA_MAJOR), pick(CUDA_MINOR)
        cuda = f"{major}.{minor}" if major and minor else None
    cc_major, cc_minor = pick(COMPUTE_MAJOR), pick(COMPUTE_MINOR)
    product = pick(PRODUCT)
    count_text = pick(COUNT)
    count = int(count_text) if count_text and _INT.match(count_text) else offered or 1
    gpu = {
        "index": f"of node {name}",
        "uuid": None,
        "name": product or "GPU",
        "compute_capability": f"{cc_major}.{cc_minor}" if cc_major and cc_minor else None,
    }
    missing = [
        what
        for what, value in (
            ("the driver's CUDA version (nvidia.com/cuda.runtime-version.*)", cuda),
            ("the compute capability (nvidia.com/gpu.compute.*)", gpu["compute_capability"]),
        )
        if value is None
    ]
    if missing:
        host: dict[str, Any] = {
            "state": STATE_UNKNOWN,
            "message": f"node {name} offers {GPU_RESOURCE} but has no GPU feature discovery "
            f"labels for {' and '.join(missing)}: deploy GFD (the NVIDIA device plugin's "
            "gpu-feature-discovery, or the GPU operator) to let tfenv judge it",
        }
    else:
        host = {
            "state": "ok",
            "place": "node",
            "message": f"node {name}: {count} {product or 'GPU'}, driver {driver or '?'}",
            "driver_version": driver,
            "cuda_driver_version": cuda,
            "gpus": [gpu],
        }
    return NodeFacts(name=name, host=host, used=used, gpus=count)


def nodes_unreadable(env_id: str, why: str) -> Compatibility:
    """The verdict when the nodes cannot be read (RBAC, API errors): unknown."""
    return Compatibility(
        STATE_UNKNOWN,
        f"Cannot tell whether '{env_id}' runs on the cluster's GPU nodes: {why}",
        {"environment": env_id, "missing": "nodes"},
    )


def _judge(env: Environment, probe: dict[str, Any] | None, facts: NodeFacts) -> Compatibility:
    return check_compatibility(probe, facts.host, env_id=env.id, wants_gpu=True)


def cluster_verdict(
    env: Environment, probe: dict[str, Any] | None, nodes: list[dict[str, Any]]
) -> Compatibility:
    """``env``'s verdict on the cluster whose nodes (the API's JSON) are ``nodes``;
    ``probe``: its image's probe (None: never probed). ``details["nodes"]``: each GPU
    node's verdict; ``details["compatible"]``: the labels of the nodes that can run it."""
    if not env.wants_gpu:
        cpu = check_compatibility(None, None, env_id=env.id, wants_gpu=False)
        return Compatibility(cpu.state, "", cpu.details)
    # The probe's own questions (never probed, no TensorFlow, a CPU-only build, …) do not
    # depend on the node: asked once, with no node facts.
    first = check_compatibility(probe, None, env_id=env.id, wants_gpu=True)
    if first.details.get("missing") != "host":
        return first
    found = [f for f in (node_facts(n) for n in nodes) if f is not None]
    labelled = [f for f in found if f.labelled]
    if not found:
        return Compatibility(
            STATE_UNKNOWN,
            f"Cannot tell whether '{env.id}' runs on the cluster's GPUs: no node offers "
            f"{GPU_RESOURCE} (install the NVIDIA device plugin or the GPU operator) or "
            "carries GPU feature discovery labels.",
            {"environment": env.id, "missing": "gpu_nodes"},
        )
    verdicts = {f.name: _judge(env, probe, f) for f in labelled}
    ok = [f for f in labelled if verdicts[f.name].state == STATE_OK]
    bad = [f for f in labelled if verdicts[f.name].state == STATE_INCOMPATIBLE]
    unsure = [f for f in found if f.name not in verdicts or verdicts[f.name].state == STATE_UNKNOWN]
    details: dict[str, Any] = {
        "environment": env.id,
        "nodes": [
            {
                "node": f.name,
                "state": verdicts[f.name].state if f.name in verdicts else STATE_UNKNOWN,
                "message": verdicts[f.name].message if f.name in verdicts else f.host["message"],
            }
            for f in found
        ],
        "compatible": [
            {
                "node": f.name,
                "labels": dict(f.used),
                "minor_version_compatibility": bool(
                    verdicts[f.name].details.get("minor_version_compatibility")
                ),
            }
            for f in ok
        ],
        "unlabelled": [f.name for f in found if not f.labelled],
    }

    def why(items: list[NodeFacts]) -> str:
        return " ".join(
            f"Node {f.name}: "
            + (verdicts[f.name].message if f.name in verdicts else f.host["message"] + ".")
            for f in items
        )

    if ok:
        message = (
            f"'{env.id}' runs on {len(ok)} of the cluster's {len(found)} GPU node(s) "
            f"({', '.join(f.name for f in ok)}); its pods are kept to them. "
            f"Node {ok[0].name}: {verdicts[ok[0].name].message}"
        )
        if bad:
            message += f" Not on: {why(bad)}"
        return Compatibility(STATE_OK, message, details)
    if unsure:
        return Compatibility(
            STATE_UNKNOWN,
            f"Cannot tell whether any GPU node of the cluster can run '{env.id}': {why(unsure)}"
            + (f" Not on: {why(bad)}" if bad else ""),
            {**details, "missing": "node_facts"},
        )
    return Compatibility(
        STATE_INCOMPATIBLE,
        f"No GPU node of the cluster can run TensorFlow in '{env.id}'. {why(bad)}",
        {**details, "reason": verdicts[bad[0].name].details.get("reason") or "no_usable_node"},
    )


#: The labels a compatible node is matched on: what the comparison read.
_MATCHED = (*CUDA_FULL, *CUDA_MAJOR, *CUDA_MINOR, *COMPUTE_MAJOR, *COMPUTE_MINOR)
#: …and, where the node runs the build only through minor-version compatibility (then the
#: driver's own version decided), the driver's.
_MATCHED_DRIVER = (*DRIVER_FULL, *DRIVER_MAJOR, *DRIVER_MINOR, *DRIVER_REV)


def required_terms(verdict: Compatibility) -> list[dict[str, Any]]:
    """The nodeSelectorTerms (ORed) an ``ok`` verdict requires of the pod's node: one per
    kind of compatible node (its label values, ``In``), and one for the nodes GFD has not
    labelled (``DoesNotExist``: not judged, not excluded). [] for any other verdict
    (unknown restricts nothing; incompatible got this far only when the admin allows it)."""
    if verdict.state != STATE_OK:
        return []
    terms: list[dict[str, Any]] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    for node in verdict.details.get("compatible") or []:
        used = node["labels"]
        keys = _MATCHED + (_MATCHED_DRIVER if node["minor_version_compatibility"] else ())
        # One spelling per fact: the current one where the node has both.
        chosen: dict[str, str] = {}
        for group in (
            CUDA_FULL,
            CUDA_MAJOR,
            CUDA_MINOR,
            COMPUTE_MAJOR,
            COMPUTE_MINOR,
            DRIVER_FULL,
            DRIVER_MAJOR,
            DRIVER_MINOR,
            DRIVER_REV,
        ):
            for key in group:
                if key in keys and key in used:
                    chosen[key] = used[key]
                    break
        if CUDA_FULL[0] in chosen:  # full says it all
            for key in (*CUDA_MAJOR, *CUDA_MINOR):
                chosen.pop(key, None)
        if DRIVER_FULL[0] in chosen:
            for key in (*DRIVER_MAJOR, *DRIVER_MINOR, *DRIVER_REV):
                chosen.pop(key, None)
        kind = tuple(sorted(chosen.items()))
        if kind in seen:
            continue
        seen.add(kind)
        terms.append(
            {"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in kind]}
        )
    if terms:
        # Nodes without GFD labels: neither the current nor the deprecated driver label.
        terms.append(
            {
                "matchExpressions": [
                    {"key": DRIVER_MAJOR[0], "operator": "DoesNotExist"},
                    {"key": DRIVER_MAJOR[1], "operator": "DoesNotExist"},
                    {"key": CUDA_FULL[0], "operator": "DoesNotExist"},
                    {"key": CUDA_MAJOR[1], "operator": "DoesNotExist"},
                ]
            }
        )
    return terms


def merge_required(affinity: Mapping[str, Any] | None, terms: list[dict[str, Any]]) -> dict:
    """``affinity`` (the catalog's, as Kubernetes spells it) with ``terms`` required too.
    nodeSelectorTerms are ORed and a term's expressions ANDed, so both lists hold when
    each of the catalog's terms is joined with each of ``terms``."""
    result: dict[str, Any] = dict(affinity or {})
    if not terms:
        return result
    node = dict(result.get("nodeAffinity") or {})
    required = dict(node.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    theirs = list(required.get("nodeSelectorTerms") or [])
    if theirs:
        joined = []
        for mine in terms:
            for term in theirs:
                both = dict(term)
                both["matchExpressions"] = [
                    *(term.get("matchExpressions") or []),
                    *mine["matchExpressions"],
                ]
                joined.append(both)
    else:
        joined = [dict(t) for t in terms]
    required["nodeSelectorTerms"] = joined
    node["requiredDuringSchedulingIgnoredDuringExecution"] = required
    result["nodeAffinity"] = node
    return result
