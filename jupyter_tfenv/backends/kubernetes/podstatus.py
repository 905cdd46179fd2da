"""Reading what the API server answers about a kernel pod (plain JSON, no client calls):
its state (:class:`PodState`, :func:`pod_state`), its events as text, whether the node is
pulling its image, and why a start failed (:func:`_start_failure`: the message users see,
docs/kubernetes.md "Start errors users see"). :mod:`.api` follows pods with these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jupyter_tfenv.backends.kubernetes import manifests, pss

#: Container waiting reasons that end a start at once (the kubelet would retry for ever).
FATAL_WAITING = {
    "ImagePullBackOff": "its image could not be pulled",
    "ErrImagePull": "its image could not be pulled",
    "InvalidImageName": "its image name is invalid",
    "ErrImageNeverPull": "its image is not on the node and the pull policy forbids a pull",
    "CreateContainerConfigError": "its container could not be configured",
    "CreateContainerError": "its container could not be created",
    "RunContainerError": "its container could not be run",
}

#: Event reasons that say the node is pulling the image (not charged to start_timeout).
_PULLING = "Pulling"
_PULL_DONE = {"Pulled", "Failed", "BackOff", "ErrImageNeverPull", "InspectFailed"}


@dataclass
class StartedPod:
    """A kernel pod that runs: where its kernel listens."""

    name: str
    ip: str
    ports: dict[str, int]
    image: str
    node: str = ""
    #: Seconds the node spent pulling the image during this start (not charged).
    pull_seconds: float = 0.0
    #: The checkpoint claim the pod mounts.
    claim: str = ""


@dataclass
class PodState:
    """What the broker reports of a kernel pod (its ``GET /api/kernels/<id>`` answer)."""

    name: str
    phase: str
    running: bool
    exit_code: int | None = None
    oom_killed: bool = False
    reason: str = ""
    ip: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    image: str = ""
    #: The kernel container's GPU limit (the environment's count).
    gpus: int = 0
    node: str = ""
    #: The node's address (``status.hostIP``; a per-node DCGM exporter's URL may name it).
    host_ip: str = ""
    #: The kernel container's limits: bytes, CPUs (None: none set).
    memory_limit: int | None = None
    cpu_limit: float | None = None
    #: The connection Secret the pod mounts ('' when none).
    secret: str = ""
    #: Being deleted (``metadata.deletionTimestamp``): it may run for its grace period,
    #: but counts against no quota (its user or server asked it to go).
    deleting: bool = False

    @property
    def counted(self) -> bool:
        """Whether it counts against its user's quotas: running and not being deleted (a
        pool pod that gave a refused start its place is gone for the quota at once)."""
        return self.running and not self.deleting

    #: The cluster, not the kernel, ends or ended the pod (:func:`cluster_ending`).
    ended_by: dict[str, str] | None = None


def _is_kernel_of(state: PodState, username: str, kernel_id: str) -> bool:
    return (
        state.annotations.get(manifests.LABEL_OWNER) == username
        and state.annotations.get(manifests.LABEL_KERNEL_ID) == kernel_id
    )


def _kernel_status(pod: Mapping[str, Any]) -> dict[str, Any]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == manifests.KERNEL_CONTAINER:
            return dict(cs)
    return {}


def _init_statuses(pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("status") or {}).get("initContainerStatuses") or [])


def pod_state(pod: Mapping[str, Any]) -> PodState:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    kernel = _kernel_status(pod)
    state = kernel.get("state") or {}
    terminated = state.get("terminated") or {}
    phase = str(status.get("phase") or "Unknown")
    running = phase in ("Pending", "Running") and not terminated
    return PodState(
        name=str(meta.get("name") or ""),
        phase=phase,
        running=running,
        exit_code=terminated.get("exitCode") if terminated else None,
        oom_killed=terminated.get("reason") == "OOMKilled",
        reason=str(terminated.get("reason") or status.get("reason") or ""),
        ip=str(status.get("podIP") or ""),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        created=meta.get("creationTimestamp"),
        image=str(kernel.get("imageID") or kernel.get("image") or ""),
        gpus=_gpu_limit(pod),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        host_ip=str(status.get("hostIP") or ""),
        memory_limit=_limit(pod, "memory"),
        cpu_limit=_limit(pod, "cpu"),
        secret=next(
            (
                str(v["secret"].get("secretName") or "")
                for v in (pod.get("spec") or {}).get("volumes") or []
                if isinstance(v, Mapping) and isinstance(v.get("secret"), Mapping)
            ),
            "",
        ),
        ended_by=cluster_ending(pod),
        deleting=bool(meta.get("deletionTimestamp")),
    )


#: ``status.reason`` of a pod the cluster ended: the ``last_restart`` reason it becomes.
_ENDING_REASONS = {
    "Evicted": "pod-evicted",  # the kubelet, under node pressure (memory, disk)
    "Preempting": "pod-preempted",  # the kubelet, for a pod of a higher priority
    "NodeLost": "node-lost",  # the node lifecycle controller: the node stopped answering
    "Terminated": "node-lost",  # the kubelet's graceful node shutdown
    "Shutdown": "node-lost",
    "NodeShutdown": "node-lost",
}
#: The ``DisruptionTarget`` condition's reasons (Kubernetes 1.26+).
_DISRUPTIONS = {
    "PreemptionByScheduler": "pod-preempted",
    "EvictionByEvictionAPI": "pod-evicted",  # a node drain, an autoscaler's scale-down
    "TerminationByKubelet": "pod-evicted",
    "DeletionByTaintManager": "node-lost",  # the node is not ready or unreachable
    "DeletionByPodGC": "node-lost",  # the node is gone
}


def cluster_ending(pod: Mapping[str, Any]) -> dict[str, str] | None:
    """Whether the cluster, not the kernel, ends this pod: ``{"reason"`` (pod-evicted,
    pod-preempted, node-lost, pod-deleted), ``"cause"`` (Kubernetes' word), ``"detail"``
    (its message), ``"at"`` (ISO, '' when unknown)``}``; None for a pod nobody ends, or
    one whose kernel exited by itself. A pod being deleted is the cluster's doing here:
    the broker deletes a kernel's pod only when its server asked (then nobody polls it)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    finished = str(
        ((_kernel_status(pod).get("state") or {}).get("terminated") or {}).get("finishedAt") or ""
    )
    reason = str(status.get("reason") or "")
    if reason in _ENDING_REASONS:
        return {
            "reason": _ENDING_REASONS[reason],
            "cause": reason,
            "detail": str(status.get("message") or ""),
            "at": finished or str(meta.get("deletionTimestamp") or ""),
        }
    for cond in status.get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == "True":
            cause = str(cond.get("reason") or "")
            return {
                "reason": _DISRUPTIONS.get(cause, "pod-deleted"),
                "cause": cause or "DisruptionTarget",
                "detail": str(cond.get("message") or ""),
                "at": str(cond.get("lastTransitionTime") or finished),
            }
    if meta.get("deletionTimestamp"):
        return {
            "reason": "pod-deleted",
            "cause": "Deleted",
            "detail": "",
            "at": str(meta.get("deletionTimestamp")),
        }
    return None


def _limit(pod: Mapping[str, Any], resource: str) -> Any:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == manifests.KERNEL_CONTAINER:
            value = ((c.get("resources") or {}).get("limits") or {}).get(resource)
            if value is None:
                return None
            try:
                number = pss.parse_quantity(str(value))
            except (TypeError, ValueError, ArithmeticError):
                return None
            return int(number) if resource == "memory" else float(number)
    return None


def _gpu_limit(pod: Mapping[str, Any]) -> int:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == manifests.KERNEL_CONTAINER:
            limits = (c.get("resources") or {}).get("limits") or {}
            try:
                return int(limits.get(manifests.GPU_RESOURCE, 0))
            except (TypeError, ValueError):
                return 0
    return 0


def _event_time(ev: Mapping[str, Any]) -> str:
    return str(
        ev.get("lastTimestamp")
        or ev.get("eventTime")
        or ev.get("firstTimestamp")
        or (ev.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _events_text(events: list[dict[str, Any]]) -> str:
    lines = []
    for ev in events[-20:]:
        count = ev.get("count") or 1
        times = f" (x{count})" if count and int(count) > 1 else ""
        lines.append(
            f"{ev.get('type', 'Normal')} {ev.get('reason', '?')}{times}: {ev.get('message', '')}"
        )
    return "\n".join(lines)


def _pulling(events: list[dict[str, Any]]) -> bool:
    """Whether the newest pull event says the image is being pulled right now."""
    for ev in reversed(events):
        reason = ev.get("reason")
        if reason == _PULLING:
            return True
        if reason in _PULL_DONE:
            return False
    return False


def _unschedulable(pod: Mapping[str, Any]) -> str:
    """The scheduler's reason ("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        ):
            return str(cond.get("message") or "the scheduler found no node")
    return ""


def _start_failure(
    env_id: str, pod: Mapping[str, Any], events: list[dict[str, Any]]
) -> tuple[str, int] | None:
    """Why this pod will not start (message, HTTP status), or None while it may."""
    status = pod.get("status") or {}
    for cs in [*_init_statuses(pod), _kernel_status(pod)]:
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason in FATAL_WAITING:
            detail = waiting.get("message") or ""
            image = cs.get("image") or ""
            return (
                f"The kernel of '{env_id}' could not start: {FATAL_WAITING[reason]} "
                f"({reason}{': ' + detail if detail else ''}). Image: {image}. Check that the "
                "image exists in its registry and that the nodes may pull it "
                "(imagePullSecrets), or pre-pull it (docs/kubernetes.md).",
                502 if "Pull" in reason or "Image" in reason else 500,
            )
        terminated = state.get("terminated") or {}
        if terminated and (
            cs.get("name") == manifests.KERNEL_CONTAINER or terminated.get("exitCode")
        ):
            return _terminated_message(env_id, cs.get("name", "?"), terminated), 500
    if status.get("phase") in ("Failed", "Succeeded"):
        why = status.get("message") or status.get("reason") or status.get("phase")
        return f"The kernel pod of '{env_id}' ended before its kernel ran: {why}.", 500
    return None


def _terminated_message(env_id: str, container: str, terminated: Mapping[str, Any]) -> str:
    code = terminated.get("exitCode")
    if terminated.get("reason") == "OOMKilled":
        return (
            f"The kernel of '{env_id}' was killed for using more memory than its limit "
            "(OOMKilled). Give the environment more memory in the catalog (memory:), or "
            "load less at start."
        )
    which = "kernel" if container == manifests.KERNEL_CONTAINER else f"'{container}' container"
    detail = terminated.get("message") or terminated.get("reason") or ""
    return (
        f"The {which} of '{env_id}' exited at start with code {code}"
        + (f" ({detail})" if detail else "")
        + ". Its log below says why; check that the image has ipykernel and that its "
        "python is the catalog's 'python'."
    )
