"""Prometheus metrics of jupyter_tfenv, on jupyter_server's ``/metrics``.

jupyter_server serves ``prometheus_client``'s default registry on ``/metrics`` (with a token
unless ``c.ServerApp.authenticate_prometheus = False``), so registering here is all it takes.
Every metric is created once per registry: importing this module twice (a reload, tests)
returns the collectors already registered instead of failing with "Duplicated timeseries".

One-line helpers for the callers::

    with metrics.kernel_start_timer(env.id):          # provisioner: launch_kernel
        ...
    metrics.kernel_started(env.id, kernel_id)         # after a successful start
    metrics.kernel_stopped(env.id, kernel_id)         # cleanup(restart=False)
    metrics.image_pulled(env.id, ok=True)             # jupyter tfenv pull
    PullManager(..., on_finish=metrics.pull_finished) # pulls started from the REST API
    metrics.observe_gpus(overview)                    # after gpu.gpu_overview()
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_M = TypeVar("_M", Counter, Gauge, Histogram)

#: Kernel starts take from about a second (small image, warm cache) to the start timeout.
START_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)


def _metric(
    cls: type[_M],
    name: str,
    documentation: str,
    labelnames: tuple[str, ...],
    registry: CollectorRegistry = REGISTRY,
    **kwargs: Any,
) -> _M:
    """The collector registered under ``name``, created and registered if there is none."""
    # prometheus_client has no public lookup; _names_to_collectors is what it checks itself.
    existing = getattr(registry, "_names_to_collectors", {}).get(name)
    if existing is not None:
        if not isinstance(existing, cls):
            raise TypeError(f"metric {name} is registered as {type(existing).__name__}")
        return existing
    return cls(name, documentation, labelnames, registry=registry, **kwargs)


KERNEL_START_SECONDS = _metric(
    Histogram,
    "tfenv_kernel_start_seconds",
    "Seconds from launching a tfenv kernel container to its sockets being bound.",
    ("environment", "outcome"),
    buckets=START_BUCKETS,
)
KERNELS_RUNNING = _metric(
    Gauge,
    "tfenv_kernels_running",
    "tfenv kernels running in containers, by environment.",
    ("environment",),
)
IMAGE_PULLS = _metric(
    Counter,
    "tfenv_image_pulls_total",
    "Finished image pulls of tfenv environments, by outcome (ok, error, cancelled).",
    ("environment", "outcome"),
)
GPU_MEMORY_USED = _metric(
    Gauge,
    "tfenv_gpu_memory_used_bytes",
    "GPU memory in use on the host (all processes), from NVML.",
    ("gpu", "uuid"),
)
GPU_MEMORY_TOTAL = _metric(
    Gauge,
    "tfenv_gpu_memory_total_bytes",
    "GPU memory of the host's GPUs, from NVML.",
    ("gpu", "uuid"),
)

_lock = threading.Lock()
_running: dict[str, str] = {}  # kernel id → environment id
_gpu_labels: set[tuple[str, str]] = set()


def observe_kernel_start(environment: str, seconds: float, ok: bool = True) -> None:
    KERNEL_START_SECONDS.labels(environment, "ok" if ok else "error").observe(seconds)


@contextmanager
def kernel_start_timer(environment: str) -> Iterator[None]:
    """Time a kernel start: ``outcome="ok"`` when the block ends, ``"error"`` when it raises."""
    started = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        observe_kernel_start(environment, time.monotonic() - started, ok)


def kernel_started(environment: str, kernel_id: str | None = None) -> None:
    """Count a running kernel. With ``kernel_id`` it is idempotent (restarts count once)."""
    with _lock:
        if kernel_id is not None:
            if _running.get(kernel_id) == environment:
                return
            old = _running.pop(kernel_id, None)
            if old is not None:
                KERNELS_RUNNING.labels(old).dec()
            _running[kernel_id] = environment
        KERNELS_RUNNING.labels(environment).inc()


def kernel_stopped(environment: str, kernel_id: str | None = None) -> None:
    """Count a kernel gone. With ``kernel_id`` only a kernel counted as started counts."""
    with _lock:
        if kernel_id is not None:
            if kernel_id not in _running:
                return
            environment = _running.pop(kernel_id)
        KERNELS_RUNNING.labels(environment).dec()


def image_pulled(environment: str, ok: bool = True, *, outcome: str | None = None) -> None:
    """Count one finished pull: ``outcome`` "ok" / "error" (from ``ok``) or "cancelled"."""
    IMAGE_PULLS.labels(environment, outcome or ("ok" if ok else "error")).inc()


_PULL_OUTCOMES = {"done": "ok", "error": "error", "cancelled": "cancelled"}


def pull_finished(pull: Any) -> None:
    """``PullManager(on_finish=...)``: count a finished ``pulls.Pull`` by its final state."""
    image_pulled(pull.environment, outcome=_PULL_OUTCOMES.get(pull.state, str(pull.state)))


def observe_gpus(overview: dict[str, Any] | None) -> None:
    """Set the GPU gauges from a ``gpu_overview()`` dict; GPUs no longer seen are dropped."""
    seen: dict[tuple[str, str], tuple[Any, Any]] = {}
    if overview and overview.get("state") == "ok":
        for gpu in overview.get("gpus") or []:
            if gpu.get("index") is None:
                continue
            key = (str(gpu["index"]), str(gpu.get("uuid") or ""))
            seen[key] = (gpu.get("memory_used"), gpu.get("memory_total"))
    with _lock:
        for key in _gpu_labels - set(seen):
            for gauge in (GPU_MEMORY_USED, GPU_MEMORY_TOTAL):
                with suppress(KeyError):
                    gauge.remove(*key)
        _gpu_labels.clear()
        for key, (used, total) in seen.items():
            if used is not None:
                GPU_MEMORY_USED.labels(*key).set(used)
            if total is not None:
                GPU_MEMORY_TOTAL.labels(*key).set(total)
            _gpu_labels.add(key)
