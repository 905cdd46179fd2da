"""A kernel container's live state: status, CPU, memory, pids, network and GPUs.

BLOCKING (docker SDK): async callers run :func:`kernel_live_status` in a thread.

CPU percent needs two samples. Where the engine supports it (API ≥ 1.41), one
``stats(stream=False, one_shot=True)`` call is made per status and the CPU time is compared
with the previous call's sample of the same container (kept in this process); only a
container's first status takes a second sample. ``one_shot`` answers as soon as the engine's
stats collector ticks: a few ms when it is idle, up to its 1 s interval when another stats
request ran within the last second. Without ``one_shot`` the engine waits for two ticks
(~2 s) and the sample carries its own ``precpu_stats``.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections import OrderedDict
from typing import Any

import requests
from docker.errors import APIError, DockerException, NotFound
from docker.utils import version_gte

from jupyter_tfenv.core.labels import LABEL_ENVIRONMENT, LABEL_IMAGE_REF, LABEL_KERNEL_ID
from jupyter_tfenv.errors import TFEnvError, unreachable_error

_STATS_STATES = ("running", "paused")


class ContainerGone(TFEnvError):
    """The kernel's container no longer exists (removed, or the kernel was shut down)."""

    http_status = 404


def gone(container_id: str) -> ContainerGone:
    """What is said of a kernel whose container no longer exists."""
    return ContainerGone(
        f"The kernel container {container_id[:12]} no longer exists: the kernel was shut down "
        "or its container was removed. Restart the kernel to get a new one."
    )


class _CpuSamples:
    """The last CPU sample per container: (container cpu ns, system cpu ns), bounded."""

    def __init__(self, limit: int = 512) -> None:
        self._lock = threading.Lock()
        self._samples: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._limit = limit

    def swap(self, container_id: str, sample: tuple[int, int]) -> tuple[int, int] | None:
        with self._lock:
            previous = self._samples.pop(container_id, None)
            self._samples[container_id] = sample
            while len(self._samples) > self._limit:
                self._samples.popitem(last=False)
            return previous

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._samples.pop(container_id, None)


_CPU_SAMPLES = _CpuSamples()
#: The last CPU percent computed per container: the answer while Docker's stats collector
#: has no newer tick (two polls within its ~1 s period see the same sample).
_CPU_LAST: dict[str, float] = {}


def forget_container(container_id: str) -> None:
    """Drop what is kept for a container (call when its kernel is shut down)."""
    SAMPLER.forget(container_id)
    _CPU_SAMPLES.forget(container_id)
    _CPU_LAST.pop(container_id, None)


def supports_one_shot(docker_client: Any) -> bool:
    """Whether both the docker SDK and the engine (API ≥ 1.41) know ``one_shot``."""
    api = getattr(docker_client, "api", docker_client)
    if "one_shot" not in inspect.signature(api.stats).parameters:
        return False
    version = str(getattr(api, "api_version", "") or "")
    try:
        return bool(version) and version_gte(version, "1.41")
    except ValueError:
        return False


def _cpu_sample(stats: dict[str, Any], key: str = "cpu_stats") -> tuple[int, int] | None:
    cpu = stats.get(key) or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    system = cpu.get("system_cpu_usage")
    if not total or not system:  # a one_shot sample's precpu_stats is all zeros
        return None
    return int(total), int(system)


def _online_cpus(stats: dict[str, Any]) -> int:
    cpu = stats.get("cpu_stats") or {}
    online = cpu.get("online_cpus")
    if not online:
        online = len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    return int(online)


def cpu_percent(
    current: tuple[int, int] | None, previous: tuple[int, int] | None, online_cpus: int
) -> float | None:
    """Docker's CPU percent (100 = one core busy) between two (container, system) samples."""
    if current is None or previous is None:
        return None
    cpu_delta = current[0] - previous[0]
    system_delta = current[1] - previous[1]
    if system_delta <= 0 or cpu_delta < 0:
        return None
    return round(cpu_delta / system_delta * online_cpus * 100.0, 2)


def memory_used(memory_stats: dict[str, Any]) -> int | None:
    """Memory in use as ``docker stats`` shows it: usage minus reclaimable page cache."""
    usage = memory_stats.get("usage")
    if usage is None:
        return None
    details = memory_stats.get("stats") or {}
    # cgroup v1: total_inactive_file; cgroup v2: inactive_file; old engines: cache.
    for key in ("total_inactive_file", "inactive_file", "cache"):
        value = details.get(key)
        if value is not None and value < usage:
            return int(usage - value)
    return int(usage)


class StatsSampler:
    """One streaming stats reader per watched container, so that a status costs no wait.

    Docker's stats collector ticks once a second, and a one-shot request made within a
    second of any other stats request waits for the next tick. A panel polling a kernel
    every few seconds would pay about a second per poll. Instead, the first status of a
    container starts a daemon thread that keeps ``GET /containers/<id>/stats?stream=1``
    open and keeps the latest sample (which carries its own ``precpu_stats``); it stops
    when nobody asked for ``idle_seconds``, when the container is gone, or on any error.
    """

    def __init__(self, idle_seconds: float = 30.0) -> None:
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, dict[str, Any]]] = {}
        self._asked: dict[str, float] = {}
        self._threads: dict[str, threading.Thread] = {}

    def latest(self, client: Any, container_id: str, max_age: float = 3.0) -> dict[str, Any] | None:
        """The newest sample if fresh; starts the reader when there is none."""
        now = time.monotonic()
        with self._lock:
            self._asked[container_id] = now
            thread = self._threads.get(container_id)
            if thread is None or not thread.is_alive():
                thread = threading.Thread(
                    target=self._read,
                    args=(client, container_id),
                    daemon=True,
                    name=f"tfenv-stats-{container_id[:12]}",
                )
                self._threads[container_id] = thread
                thread.start()
            sample = self._latest.get(container_id)
        if sample is None or now - sample[0] > max_age:
            return None
        return sample[1]

    def _read(self, client: Any, container_id: str) -> None:
        stream = None
        try:
            stream = client.api.stats(container_id, stream=True, decode=True)
            for sample in stream:
                with self._lock:
                    self._latest[container_id] = (time.monotonic(), sample)
                    idle = time.monotonic() - self._asked.get(container_id, 0.0)
                if idle > self.idle_seconds:
                    break
        except Exception:  # noqa: S110 - a gone container or engine ends the reader
            pass
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
            self.forget(container_id)

    def forget(self, container_id: str) -> None:
        with self._lock:
            self._latest.pop(container_id, None)
            self._asked.pop(container_id, None)
            self._threads.pop(container_id, None)


SAMPLER = StatsSampler()


def _stats(container: Any, one_shot: bool) -> dict[str, Any]:
    try:
        if one_shot:
            return dict(container.stats(stream=False, one_shot=True))
        return dict(container.stats(stream=False))
    except ValueError:
        # A container that stops while Docker reads its stats answers with an empty
        # body (the kernel shut down during a poll): no figures, not a server error.
        return {}


def _gpu_section(
    container_id: str, attrs: dict[str, Any], overview: dict[str, Any] | None
) -> dict[str, Any] | None:
    requests_ = (attrs.get("HostConfig") or {}).get("DeviceRequests") or []
    requested = [
        {
            "count": r.get("Count"),
            "device_ids": r.get("DeviceIDs") or [],
            "capabilities": r.get("Capabilities") or [],
        }
        for r in requests_
    ]
    if overview is None:
        return {"requested": requested, "state": None, "message": None, "devices": []}
    devices = []
    for gpu in overview.get("gpus") or []:
        mine = [p for p in gpu.get("processes") or [] if p.get("container_id") == container_id]
        if not mine:
            continue
        amounts = [p.get("used_memory") for p in mine]
        devices.append(
            {
                "index": gpu.get("index"),
                "uuid": gpu.get("uuid"),
                "name": gpu.get("name"),
                "used_memory": None if None in amounts else sum(a or 0 for a in amounts),
                "memory_used": gpu.get("memory_used"),
                "memory_total": gpu.get("memory_total"),
                "utilization_gpu": gpu.get("utilization_gpu"),
                "pids": [p.get("pid") for p in mine],
            }
        )
    return {
        "requested": requested,
        "state": overview.get("state"),
        "message": overview.get("message"),
        "devices": devices,
    }


def kernel_live_status(
    docker_client: Any,
    container_id: str,
    gpu: dict[str, Any] | None = None,
    *,
    cpu_baseline: bool = True,
) -> dict[str, Any]:
    """The live state of one kernel container. BLOCKING.

    ``gpu`` is a :func:`jupyter_tfenv.backends.docker.gpu.gpu_overview` result (optional): the
    GPUs this
    container holds memory on are picked from it. ``cpu_baseline``: on a container's first
    status, take a second stats sample so that ``cpu_percent`` is a number (costs up to the
    engine's 1 s stats interval); when False the first status has ``cpu_percent`` None.
    Raises :class:`ContainerGone` when the container does not exist, and
    ``DockerUnavailableError`` when the engine does not answer.
    """
    try:
        return _live_status(docker_client, container_id, gpu, cpu_baseline)
    except NotFound:
        forget_container(container_id)
        raise gone(container_id) from None
    except requests.exceptions.ConnectionError as err:
        raise unreachable_error(err) from err
    except APIError as err:
        raise TFEnvError(
            f"Docker could not report on kernel container {container_id[:12]}: "
            f"{err.explanation or err}"
        ) from err
    except DockerException as err:
        raise unreachable_error(err) from err


def _live_status(
    docker_client: Any, container_id: str, gpu: dict[str, Any] | None, cpu_baseline: bool
) -> dict[str, Any]:
    container = docker_client.containers.get(container_id)
    attrs = container.attrs or {}
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    status: dict[str, Any] = {
        "container_id": container.id,
        "name": container.name,
        "kernel_id": labels.get(LABEL_KERNEL_ID),
        "environment": labels.get(LABEL_ENVIRONMENT),
        "status": state.get("Status"),
        "running": bool(state.get("Running")),
        "started_at": state.get("StartedAt"),
        "finished_at": state.get("FinishedAt") if not state.get("Running") else None,
        "exit_code": state.get("ExitCode"),
        "oom_killed": bool(state.get("OOMKilled")),
        "error": state.get("Error") or None,
        "network_mode": host.get("NetworkMode"),
        # What really runs (a tag may have been re-pointed since the kernel started).
        "image_id": attrs.get("Image"),
        "image_ref": labels.get(LABEL_IMAGE_REF),
        "cpu_percent": None,
        "online_cpus": None,
        "cpu_limit": (host.get("NanoCpus") or 0) / 1e9 or None,
        "memory_used": None,
        "memory_limit": host.get("Memory") or None,
        "memory_limited": bool(host.get("Memory")),
        "pids_current": None,
        "pids_limit": host.get("PidsLimit") or None,
        "read_at": None,
        "stats_seconds": None,
        "gpu": _gpu_section(container.id, attrs, gpu),
    }
    if status["status"] not in _STATS_STATES:
        forget_container(container.id)
        return status

    started = time.monotonic()
    streamed = SAMPLER.latest(docker_client, container.id)
    one_shot = supports_one_shot(docker_client)
    stats = streamed if streamed is not None else _stats(container, one_shot)
    current = _cpu_sample(stats)
    previous = _cpu_sample(stats, "precpu_stats")
    if current is not None:
        kept = _CPU_SAMPLES.swap(container.id, current)
        previous = previous or kept
        if previous is None and cpu_baseline:
            # First look at this container: the next sample comes at the collector's next
            # tick (one_shot), about a second later.
            first = current
            for _ in range(8):
                # A one-shot request made right after another stats read (the streaming
                # reader's, say) can answer with the same tick: wait for a newer one (its
                # ~1 s period stretches on a loaded machine).
                stats = _stats(container, one_shot)
                current = _cpu_sample(stats)
                if current is None or first is None or current[1] != first[1]:
                    break
                time.sleep(0.3)
            previous = first
            if current is not None:
                _CPU_SAMPLES.swap(container.id, current)
    online = _online_cpus(stats)
    percent = cpu_percent(current, previous, online)
    if percent is not None:
        _CPU_LAST[container.id] = percent
    elif current is not None and previous is not None and current[1] <= previous[1]:
        # The same collector tick as last time, or an older one (the streaming reader's
        # first sample can predate the one-shot samples of the first status): the last
        # figure stands.
        percent = _CPU_LAST.get(container.id)
    status.update(
        cpu_percent=percent,
        online_cpus=online,
        read_at=stats.get("read"),
        stats_seconds=round(time.monotonic() - started, 4),
    )
    memory = stats.get("memory_stats") or {}
    if memory:
        status["memory_used"] = memory_used(memory)
        if memory.get("limit"):
            # The cgroup's limit: the host's memory where the container has none.
            status["memory_limit"] = int(memory["limit"])
    pids = stats.get("pids_stats") or {}
    if pids.get("current") is not None:
        status["pids_current"] = int(pids["current"])
    limit = pids.get("limit")
    if limit and limit < 2**62:  # cgroup v2 reports "max" as a huge number
        status["pids_limit"] = int(limit)
    return status
