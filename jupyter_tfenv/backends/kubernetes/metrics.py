"""A kernel pod's live readings (docs/kubernetes.md, "Live readings"): CPU and memory from
the metrics API, GPU use from an NVIDIA DCGM exporter; or, for each, why there is none.

- **CPU and memory**: ``GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods/{name}``
  (metrics-server, or any adapter serving the resource metrics API). Its ``usage`` of the
  kernel container: ``cpu`` in cores (``"12345678n"``: nanocores), shown as Docker's percent
  (100 = one core busy); ``memory`` is the working set, what ``kubectl top`` shows and
  close to what ``docker stats`` shows (usage less inactive page cache). It needs ``get`` on
  ``pods`` in the API group ``metrics.k8s.io`` (examples/kubernetes/broker-rbac.yaml).
- **GPUs**: the Prometheus text of a DCGM exporter (``kubernetes_dcgm_exporter_url``; the
  exporter's pod mapping labels each GPU held by a pod with ``pod``, ``namespace`` and
  ``container``, older releases with ``pod_name``, ``pod_namespace``, ``container_name``):
  ``DCGM_FI_DEV_GPU_UTIL`` (%), ``DCGM_FI_DEV_FB_USED`` and ``DCGM_FI_DEV_FB_FREE`` (MiB)
  of each GPU the pod holds, as the Docker backend's GPU devices.

Each missing reading is one entry of ``missing_readings`` (``{"kind": "cpu_memory" |
"gpu", "message": ...}``): what is missing and what the admin can do. The readings' shape
is the Docker backend's (:func:`jupyter_tfenv.backends.docker.live.kernel_live_status`),
so the panel shows them without knowing where the kernel runs.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from jupyter_tfenv.backends.kubernetes import manifests, pss
from jupyter_tfenv.backends.kubernetes.podstatus import PodState

#: The resource metrics API (metrics-server).
METRICS_GROUP = "metrics.k8s.io"
METRICS_VERSION = "v1beta1"

#: The DCGM fields read, as the exporter names them (etc/default-counters.csv).
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
FB_RESERVED = "DCGM_FI_DEV_FB_RESERVED"
_FIELDS = (GPU_UTIL, FB_USED, FB_FREE, FB_RESERVED)
#: The pod mapping's labels, newest first (``--kubernetes-use-old-namespace``: the old).
POD_LABELS = (("pod", "namespace", "container"), ("pod_name", "pod_namespace", "container_name"))
MIB = 2**20

#: Seconds one exporter answer is reused (several panels poll; the exporter samples ~30 s).
EXPORTER_TTL = 5.0
#: Seconds the exporter may take to answer.
EXPORTER_TIMEOUT = 3.0

CPU_MEMORY = "cpu_memory"
GPU = "gpu"


def missing(kind: str, message: str) -> dict[str, str]:
    return {"kind": kind, "message": message}


# -- the metrics API ------------------------------------------------------------------


def parse_usage(value: Any) -> Decimal:
    """A metrics API quantity: cores (``"250m"``, ``"12345678n"``, ``"3u"``) or bytes."""
    text = str(value).strip()
    for suffix, scale in (("n", Decimal("1e-9")), ("u", Decimal("1e-6"))):
        if text.endswith(suffix) and text[:-1].replace(".", "", 1).isdigit():
            return Decimal(text[:-1]) * scale
    return pss.parse_quantity(text)


def usage_of(pod_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``cpu_percent``, ``memory_used`` and ``read_at`` from a PodMetrics object: the kernel
    container's usage (every container's sum when none is named so)."""
    containers = [c for c in pod_metrics.get("containers") or [] if isinstance(c, Mapping)]
    kernel = [c for c in containers if c.get("name") == manifests.KERNEL_CONTAINER]
    cpu: Decimal | None = None
    memory: Decimal | None = None
    for c in kernel or containers:
        usage = c.get("usage") or {}
        try:
            if usage.get("cpu") is not None:
                cpu = (cpu or Decimal(0)) + parse_usage(usage["cpu"])
            if usage.get("memory") is not None:
                memory = (memory or Decimal(0)) + parse_usage(usage["memory"])
        except (TypeError, ValueError, ArithmeticError):
            continue
    return {
        "cpu_percent": None if cpu is None else round(float(cpu) * 100.0, 2),
        "memory_used": None if memory is None else int(memory),
        "read_at": pod_metrics.get("timestamp"),
        "readings_window": pod_metrics.get("window"),
    }


def _status_of(err: Any) -> dict[str, Any]:
    try:
        body = json.loads(getattr(err, "body", None) or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def metrics_refusal(err: Any, namespace: str, name: str) -> str:
    """Why the metrics API gave no reading (an ``ApiException`` of the GET), in words."""
    status = getattr(err, "status", None)
    body = _status_of(err)
    text = str(body.get("message") or getattr(err, "reason", "") or "")
    if status == 404:
        details = body.get("details") or {}
        if details.get("group") == METRICS_GROUP or METRICS_GROUP in text:
            return (
                f"the metrics API has no reading of pod {namespace}/{name} yet (metrics-server "
                "scrapes every 15 s or so; a pod that just started has none): wait a moment"
            )
        return (
            "the cluster does not serve the metrics API (metrics.k8s.io): install "
            "metrics-server (https://github.com/kubernetes-sigs/metrics-server) for CPU and "
            "memory readings"
        )
    if status == 403:
        return (
            f"the broker may not read the metrics API ({text}): give its Role `get` on "
            "`pods` in the API group `metrics.k8s.io` (examples/kubernetes/broker-rbac.yaml)"
        )
    if status == 503:
        return (
            f"the metrics API is registered but does not answer ({text}): check the "
            "metrics-server pods (kubectl -n kube-system get pods -l k8s-app=metrics-server)"
        )
    return f"the metrics API answered {status}: {text}"


async def read_pod_metrics(api: Any, name: str) -> dict[str, Any]:
    """The PodMetrics of the kernel pod ``name`` through ``api``
    (:class:`~jupyter_tfenv.backends.kubernetes.api.KubernetesAPI`). Raises the client's
    ``ApiException`` (see :func:`metrics_refusal`) or ``KubernetesUnavailableError``."""
    from kubernetes import client  # noqa: PLC0415 - the [kubernetes] extra

    custom = client.CustomObjectsApi(api.api_client)
    answer = await api._call(
        custom.get_namespaced_custom_object,
        METRICS_GROUP,
        METRICS_VERSION,
        api.namespace,
        "pods",
        name,
    )
    return dict(answer or {})


async def cpu_memory(api: Any, name: str) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The pod's CPU and memory readings, or why there are none (a ``missing`` entry)."""
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    from jupyter_tfenv.backends.kubernetes.api import KubernetesUnavailableError  # noqa: PLC0415

    try:
        answer = await read_pod_metrics(api, name)
    except ApiException as err:
        return {}, missing(CPU_MEMORY, metrics_refusal(err, api.namespace, name))
    except KubernetesUnavailableError as err:
        return {}, missing(CPU_MEMORY, f"the metrics API could not be read: {err.message}")
    readings = usage_of(answer)
    if readings["cpu_percent"] is None and readings["memory_used"] is None:
        return readings, missing(
            CPU_MEMORY,
            f"the metrics API's answer for pod {api.namespace}/{name} holds no container "
            "usage yet: wait a moment",
        )
    return readings, None


# -- the DCGM exporter ----------------------------------------------------------------

_SAMPLE_RE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    value: float = 0.0


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_prometheus(text: str, names: Iterable[str] = _FIELDS) -> list[Sample]:
    """The samples of the metrics ``names`` in Prometheus text exposition format
    (comments, other metrics and unparsable lines are skipped)."""
    wanted = set(names)
    found: list[Sample] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if not match or match.group("name") not in wanted:
            continue
        labels: dict[str, str] = {}
        body = match.group("labels") or ""
        pos = 0
        while pos < len(body):
            lm = _LABEL_RE.match(body, pos)
            if not lm or lm.end() == pos:
                break
            labels[lm.group(1)] = _unescape(lm.group(2))
            pos = lm.end()
        try:
            value = float(match.group("value"))
        except ValueError:
            continue
        found.append(Sample(match.group("name"), labels, value))
    return found


def _of_pod(labels: Mapping[str, str], namespace: str, pod: str) -> bool:
    return any(labels.get(p) == pod and labels.get(n) == namespace for p, n, _ in POD_LABELS)


def gpu_devices(samples: Iterable[Sample], namespace: str, pod: str) -> list[dict[str, Any]]:
    """The GPUs the exporter maps to the pod, as the Docker backend's GPU devices
    (``index``, ``uuid``, ``name``, ``used_memory``, ``memory_used``, ``memory_total``,
    ``utilization_gpu``; memory in bytes)."""
    by_gpu: dict[str, dict[str, Any]] = {}
    for s in samples:
        if not _of_pod(s.labels, namespace, pod):
            continue
        key = s.labels.get("UUID") or s.labels.get("gpu") or s.labels.get("device") or "?"
        row = by_gpu.setdefault(
            key,
            {"labels": s.labels, "values": {}},
        )
        row["values"][s.name] = s.value
    devices = []
    for key, row in by_gpu.items():
        labels, values = row["labels"], row["values"]
        used = values.get(FB_USED)
        free = values.get(FB_FREE)
        total = None
        if used is not None and free is not None:
            total = int((used + free + values.get(FB_RESERVED, 0.0)) * MIB)
        index = labels.get("gpu")
        devices.append(
            {
                "index": int(index) if index is not None and index.isdigit() else None,
                "uuid": labels.get("UUID") or (key if key.startswith("GPU-") else None),
                "name": labels.get("modelName") or None,
                # The device plugin gives a pod whole GPUs: what the GPU holds is the pod's.
                "used_memory": None if used is None else int(used * MIB),
                "memory_used": None if used is None else int(used * MIB),
                "memory_total": total,
                "utilization_gpu": values.get(GPU_UTIL),
                "pids": [],
            }
        )
    return sorted(devices, key=lambda d: (d["index"] is None, d["index"] or 0, d["uuid"] or ""))


def exporter_url(template: str, *, node: str, host_ip: str) -> str:
    """The exporter's URL for a pod on ``node`` (``{node}``, ``{host_ip}`` filled in)."""
    return template.replace("{node}", node).replace("{host_ip}", host_ip)


class ExporterReader:
    """Reads a DCGM exporter's Prometheus text; one answer per URL kept ``EXPORTER_TTL``."""

    def __init__(self, ttl: float = EXPORTER_TTL, timeout: float = EXPORTER_TIMEOUT) -> None:
        self.ttl = ttl
        self.timeout = timeout
        self._answers: dict[str, tuple[float, list[Sample] | str]] = {}

    def _fetch(self, url: str) -> list[Sample] | str:
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:  # noqa: S310 - the admin's URL
                text = resp.read(32 * 2**20).decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return f"the DCGM exporter at {url} answered {err.code} {err.reason}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            return (
                f"the DCGM exporter at {url} does not answer ({reason}): check "
                "kubernetes_dcgm_exporter_url and that the broker's NetworkPolicy lets it "
                "reach the exporter's port"
            )
        samples = parse_prometheus(text)
        if not samples:
            return (
                f"the answer of {url} holds none of {GPU_UTIL}, {FB_USED}, {FB_FREE}: is it "
                "a DCGM exporter's /metrics?"
            )
        return samples

    async def samples(self, url: str) -> list[Sample] | str:
        now = time.monotonic()
        kept = self._answers.get(url)
        if kept is not None and now - kept[0] < self.ttl:
            return kept[1]
        answer = await asyncio.to_thread(self._fetch, url)
        self._answers[url] = (time.monotonic(), answer)
        if len(self._answers) > 256:
            self._answers.pop(next(iter(self._answers)))
        return answer


async def gpu_section(
    reader: ExporterReader,
    template: str,
    *,
    namespace: str,
    pod: str,
    node: str,
    host_ip: str,
    gpus: int,
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The live status's ``gpu`` (Docker's shape) for a pod holding ``gpus`` GPUs, and
    why its use is missing, if it is."""
    requested = [{"count": gpus, "device_ids": [], "capabilities": [["gpu"]]}] if gpus else []
    section: dict[str, Any] = {"requested": requested, "state": None, "message": None}
    section["devices"] = []
    if not gpus:
        return section, None
    if not template:
        message = (
            "no DCGM exporter is configured: set c.TFEnvBroker.kubernetes_dcgm_exporter_url "
            '(docs/kubernetes.md, "Live readings") for the GPUs\' use'
        )
        section["message"] = message
        return section, missing(GPU, message)
    url = exporter_url(template, node=node, host_ip=host_ip)
    answer = await reader.samples(url)
    if isinstance(answer, str):
        section.update(state="error", message=answer)
        return section, missing(GPU, answer)
    devices = gpu_devices(answer, namespace, pod)
    if not devices:
        message = (
            f"the DCGM exporter at {url} maps no GPU to pod {namespace}/{pod}: run it with "
            "pod mapping (the GPU operator's default; dcgm-exporter -k / "
            "DCGM_EXPORTER_KUBERNETES=true), and where one exporter runs per node put "
            "{node} or {host_ip} in kubernetes_dcgm_exporter_url"
        )
        section.update(state="error", message=message)
        return section, missing(GPU, message)
    section.update(state="ok", devices=devices)
    return section, None


# -- the live status ------------------------------------------------------------------


async def live_status(
    api: Any,
    reader: ExporterReader,
    p: PodState,
    *,
    kernel_id: str,
    status: str,
    exporter_url: str,
) -> dict[str, Any]:
    """The live status of the kernel pod ``p`` (:class:`~.podstatus.PodState`), in the
    shape of the Docker backend's: state and limits, readings where they can be had,
    ``missing_readings`` for the others (none are read for a pod that no longer runs)."""
    answer: dict[str, Any] = {
        "container_id": p.name,
        "name": p.name,
        "kernel_id": kernel_id,
        "environment": p.annotations.get(manifests.LABEL_ENVIRONMENT),
        "status": status,
        "running": p.running,
        "started_at": p.created,
        "exit_code": p.exit_code,
        "oom_killed": p.oom_killed,
        "container": p.name,
        "node": p.node,
        "image_id": p.image,
        "cpu_percent": None,
        "online_cpus": None,
        "cpu_limit": p.cpu_limit,
        "memory_used": None,
        "memory_limit": p.memory_limit,
        "memory_limited": p.memory_limit is not None,
        "pids_current": None,
        "pids_limit": None,
        "read_at": None,
        "gpu": None,
        "missing_readings": [],
    }
    if not p.running:
        return answer
    (readings, no_cpu), (gpu, no_gpu) = await asyncio.gather(
        cpu_memory(api, p.name),
        gpu_section(
            reader,
            exporter_url,
            namespace=api.namespace,
            pod=p.name,
            node=p.node,
            host_ip=p.host_ip,
            gpus=p.gpus,
        ),
    )
    answer.update(readings)
    answer["gpu"] = gpu
    answer["missing_readings"] = [m for m in (no_cpu, no_gpu) if m is not None]
    return answer
