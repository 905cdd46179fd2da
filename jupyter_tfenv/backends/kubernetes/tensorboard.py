"""TensorBoard pods (issue 23, Kubernetes): one per (user, view), beside the kernel pods.

A TensorBoard pod runs TensorBoard from an environment's own image (the version that
reads the logs is the one that wrote them), restricted like a kernel pod (the user's
uid/gid, runAsNonRoot, no capabilities, seccomp RuntimeDefault, a read-only root
filesystem with an emptyDir at ``/tmp``) and mounts the user's log claim(s) READ-ONLY:

- the environment view (``env-<id>``): that environment's claim's ``logs`` subPath at
  ``/tfenv/logs``;
- the comparison (``compare``): each environment's at ``/tfenv/logs/<id>`` (each a
  top-level run group).

TensorBoard listens on ``0.0.0.0:6006`` in the pod's own network namespace (no bridge:
the pod IP is its address); it is started through the Docker bridge's
``--run-tensorboard`` code path (``tensorboard/bridge.py``, passed to ``python -c``, read
as a file: that package is a layer above the backends), which puts a ``pkg_resources``
stand-in in place where the image's setuptools no longer ships it (TensorBoard 2.20).
A NetworkPolicy admits only the user's server pod (the selector kernels use) on 6006 and
lets nothing out. Labels: managed-by, component ``tensorboard``, owner, environment (of
the view), ``org.jupyter.tfenv.tensorboard`` = the view's name; never a kernel id, so no
kernel listing ever counts it. The container is named as a kernel's (``kernel``) so that
the pod's status is read by the same code (:mod:`.podstatus`).

:class:`PodTensorBoards` (mixed into ``KubernetesBackend`` through ``PodHelpers``) starts
one (reused while it runs), tells its state, lists a user's and deletes one; another
user's TensorBoard is never found.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.backends.base import BackendError
from jupyter_tfenv.backends.kubernetes import pss
from jupyter_tfenv.backends.kubernetes.names import (
    _check_namespace,
    dns_label,
    label_value,
)
from jupyter_tfenv.backends.kubernetes.podstatus import (
    PodState,
    _events_text,
    _kernel_status,
    _pulling,
    _start_failure,
    _unschedulable,
)
from jupyter_tfenv.backends.kubernetes.servers import default_server_selector
from jupyter_tfenv.backends.kubernetes.start import (
    COMPONENT_LABEL,
    KERNEL_CONTAINER,
    LOG_SUBPATH,
    MANAGED_BY,
    KubernetesManifestError,
)
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.labels import LABEL_ENVIRONMENT, LABEL_OWNER, LABEL_TENSORBOARD
from jupyter_tfenv.core.paths import CONTAINER_LOG_DIR

if TYPE_CHECKING:
    from jupyter_tfenv.backends.kubernetes.api import KubernetesAPI
    from jupyter_tfenv.backends.kubernetes.settings import KubernetesSettings

#: TensorBoard's port on the pod's own address.
TENSORBOARD_PORT = 6006
COMPONENT = "tensorboard"
COMPARE = "compare"
#: The bridge whose ``--run-tensorboard`` starts TensorBoard (read, never imported here).
BRIDGE_SOURCE = Path(__file__).resolve().parents[2] / "tensorboard" / "bridge.py"
#: Small: TensorBoard reads event files, it trains nothing.
RESOURCES = {
    "limits": {"cpu": "1", "memory": "2Gi"},
    "requests": {"cpu": "1", "memory": "2Gi"},
}


@dataclass(frozen=True)
class TensorBoardPodSpec:
    """Everything one TensorBoard pod is made of."""

    username: str
    uid: int
    gid: int
    namespace: str
    #: ``env-<id>`` or ``compare`` (tensorboard/container.py's tensorboard_name).
    name: str
    #: The environment whose image runs it (the comparison: a configured or the newest).
    image_env: Environment
    #: The image reference the pod runs (``repository@digest`` when locked).
    image: str
    #: ``(environment id, claim name)`` of each log claim; one for an environment view.
    claims: tuple[tuple[str, str], ...]
    server_name: str = ""
    #: Where a kernel of the user holds a (ReadWriteOnce) claim: the pod goes there.
    node: str | None = None

    @property
    def compare(self) -> bool:
        return self.name == COMPARE


@dataclass(frozen=True)
class RunningTensorBoard:
    """A TensorBoard pod that answers at ``http://<ip>:<port>/``."""

    name: str
    pod: str
    ip: str
    port: int
    reused: bool
    environments: tuple[str, ...]


def tensorboard_pod_name(username: str, name: str) -> str:
    """The pod (and NetworkPolicy) of ``username``'s TensorBoard ``name``: made as kernel
    pods' names are (a 128-bit hash of the owner and the name), so two users' never meet."""
    return dns_label("tfenv-tensorboard", username, name)


def tensorboard_labels(spec: TensorBoardPodSpec) -> dict[str, str]:
    labels = {
        **MANAGED_BY,
        COMPONENT_LABEL: COMPONENT,
        LABEL_OWNER: label_value(spec.username),
        LABEL_TENSORBOARD: label_value(spec.name),
    }
    if not spec.compare and spec.claims:
        labels[LABEL_ENVIRONMENT] = label_value(spec.claims[0][0])
    return labels


def tensorboard_selector(username: str, name: str) -> dict[str, str]:
    """matchLabels of this TensorBoard's pod and no other (label values are injective)."""
    return {
        **MANAGED_BY,
        COMPONENT_LABEL: COMPONENT,
        LABEL_OWNER: label_value(username),
        LABEL_TENSORBOARD: label_value(name),
    }


def tensorboard_command(python: str) -> list[str]:
    """TensorBoard through the bridge's ``--run-tensorboard`` (its ``pkg_resources``
    stand-in), on all the pod's addresses, the log folder(s) under /tfenv/logs."""
    return [
        python,
        "-I",
        "-c",
        BRIDGE_SOURCE.read_text(encoding="utf-8"),
        "--run-tensorboard",
        f"--logdir={CONTAINER_LOG_DIR}",
        "--host=0.0.0.0",
        f"--port={TENSORBOARD_PORT}",
    ]


def _mount_path(spec: TensorBoardPodSpec, env_id: str) -> str:
    return f"{CONTAINER_LOG_DIR}/{env_id}" if spec.compare else CONTAINER_LOG_DIR


def tensorboard_pod(spec: TensorBoardPodSpec) -> dict[str, Any]:
    """The TensorBoard Pod: restricted, read-only root and log claims, nothing else."""
    if spec.uid == 0:
        raise KubernetesManifestError(
            "Refusing a TensorBoard pod that runs as root (uid 0): the restricted Pod "
            "Security Standard forbids it. Give the user a non-zero uid."
        )
    if spec.uid < 0 or spec.gid < 0:
        raise KubernetesManifestError(f"uid {spec.uid} / gid {spec.gid} must be >= 0.")
    if not spec.claims:
        raise KubernetesManifestError("a TensorBoard pod needs at least one log claim.")
    if not spec.compare and len(spec.claims) != 1:
        raise KubernetesManifestError("an environment's TensorBoard mounts one log claim.")
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]  # noqa: S108
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    for i, (env_id, claim) in enumerate(spec.claims):
        mounts.append(
            {
                "name": f"logs-{i}",
                "mountPath": _mount_path(spec, env_id),
                "subPath": LOG_SUBPATH,
                "readOnly": True,
            }
        )
        volumes.append(
            {
                "name": f"logs-{i}",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
    container: dict[str, Any] = {
        "name": KERNEL_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": tensorboard_command(spec.image_env.python),
        "workingDir": "/tmp",  # noqa: S108
        "env": [
            {"name": "HOME", "value": "/tmp"},  # noqa: S108
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            # No GPU, even where the node's default runtime is NVIDIA's.
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},
            {"name": "CUDA_VISIBLE_DEVICES", "value": ""},
        ],
        "ports": [{"name": "tensorboard", "containerPort": TENSORBOARD_PORT, "protocol": "TCP"}],
        # Ready once TensorBoard answers: the start waits for it (the Docker TensorBoard's
        # bridge binds its socket only then, for the same reason).
        "readinessProbe": {
            "tcpSocket": {"port": TENSORBOARD_PORT},
            "periodSeconds": 1,
            "failureThreshold": 3,
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {k: dict(v) for k, v in RESOURCES.items()},
        "volumeMounts": mounts,
        "stdin": False,
        "tty": False,
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.uid,
            "runAsGroup": spec.gid,
            "fsGroup": spec.gid,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if spec.node:
        pod_spec["nodeName"] = spec.node
    annotations = {
        LABEL_OWNER: spec.username,
        LABEL_TENSORBOARD: spec.name,
        LABEL_ENVIRONMENT: ",".join(env_id for env_id, _ in spec.claims),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": tensorboard_pod_name(spec.username, spec.name),
            "namespace": _check_namespace(spec.namespace),
            "labels": tensorboard_labels(spec),
            "annotations": annotations,
        },
        "spec": pod_spec,
    }


def tensorboard_network_policy(
    spec: TensorBoardPodSpec,
    server_selector: Mapping[str, str] | None = None,
    *,
    server_namespace: str | None = None,
) -> dict[str, Any]:
    """Only the user's server pod reaches the TensorBoard pod, on 6006; nothing goes out
    (selecting the pod isolates it: no default deny is needed)."""
    if server_selector is None:
        server_selector = default_server_selector(spec.username, spec.server_name)
    selector = dict(server_selector)
    if not selector:
        raise KubernetesManifestError("the server pod selector may not be empty (every pod).")
    peer: dict[str, Any] = {"podSelector": {"matchLabels": selector}}
    if server_namespace is not None and server_namespace != spec.namespace:
        peer["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": server_namespace}
        }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": tensorboard_pod_name(spec.username, spec.name),
            "namespace": _check_namespace(spec.namespace),
            "labels": tensorboard_labels(spec),
        },
        "spec": {
            "podSelector": {"matchLabels": tensorboard_selector(spec.username, spec.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [peer], "ports": [{"protocol": "TCP", "port": TENSORBOARD_PORT}]}],
            "egress": [],
        },
    }


def is_tensorboard_of(state: PodState, username: str, name: str | None = None) -> bool:
    """Whether the pod is ``username``'s TensorBoard (``name``, when given): by its
    annotations (exact values), its component label too."""
    return (
        state.labels.get(COMPONENT_LABEL) == COMPONENT
        and state.annotations.get(LABEL_OWNER) == username
        and (name is None or state.annotations.get(LABEL_TENSORBOARD) == name)
    )


def _tensorboard_words(message: str) -> str:
    """A kernel pod's start error in a TensorBoard's words."""
    for kernel, tensorboard in (
        ("The kernel pod of", "The TensorBoard pod of"),
        ("The kernel of", "The TensorBoard of"),
        ("before its kernel ran", "before TensorBoard ran"),
        (
            " Its log below says why; check that the image has ipykernel and that its "
            "python is the catalog's 'python'.",
            " Its log below says why; check that the image has TensorBoard (every "
            "TensorFlow pip install does) and that its python is the catalog's 'python'.",
        ),
    ):
        message = message.replace(kernel, tensorboard)
    return message


class TensorBoardPods:
    """A namespace's TensorBoard pods, through a :class:`KubernetesAPI`'s client."""

    def __init__(self, api: KubernetesAPI, *, start_timeout: float = 120.0) -> None:
        self.api = api
        self.start_timeout = start_timeout

    async def state(self, username: str, name: str) -> PodState | None:
        """``username``'s TensorBoard ``name`` (None when there is none of theirs)."""
        found = await self.api.state(tensorboard_pod_name(username, name))
        return found if found is not None and is_tensorboard_of(found, username, name) else None

    async def list(self, username: str) -> list[PodState]:
        """``username``'s TensorBoard pods (the exact owner, not only its label value)."""
        from jupyter_tfenv.backends.kubernetes.podstatus import pod_state  # noqa: PLC0415

        labels = {**MANAGED_BY, COMPONENT_LABEL: COMPONENT, LABEL_OWNER: label_value(username)}
        answer = await self.api._call(
            self.api.core.list_namespaced_pod,
            self.api.namespace,
            label_selector=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        )
        states = [pod_state(p) for p in (answer or {}).get("items") or []]
        return sorted((s for s in states if is_tensorboard_of(s, username)), key=lambda s: s.name)

    async def delete(self, username: str, name: str, *, wait: bool = False) -> bool:
        """Remove ``username``'s TensorBoard ``name`` (pod and policy); False when there
        is none of theirs (another user's is never touched)."""
        if await self.state(username, name) is None:
            return False
        await self.api.delete(tensorboard_pod_name(username, name), grace=2, wait=wait)
        return True

    async def start(self, spec: TensorBoardPodSpec) -> RunningTensorBoard:
        """The user's TensorBoard of this view: reused while it runs (with the same log
        claims), else made anew; waits until it runs with an IP address."""
        pod = tensorboard_pod(spec)
        policy = tensorboard_network_policy(
            spec,
            self.api.server_selector(spec.username, spec.server_name),
            server_namespace=self.api.server_namespace,
        )
        violations = pss.check_pod(pod)
        if violations:
            raise BackendError(
                "The TensorBoard pod would break the restricted Pod Security Standard: "
                + "; ".join(str(v) for v in violations),
                status=400,
            )
        name = pod["metadata"]["name"]
        envs = tuple(env_id for env_id, _ in spec.claims)
        there = await self.api.state(name)
        if there is not None:
            if not is_tensorboard_of(there, spec.username, spec.name):
                # Never another user's (names carry a hash of the owner: only a hand-made
                # object can be here).
                raise BackendError(
                    f"The TensorBoard pod {name} exists but is not yours; ask an admin.",
                    status=409,
                )
            same = there.annotations.get(LABEL_ENVIRONMENT) == ",".join(envs)
            if there.running and there.ip and not there.deleting and same:
                return RunningTensorBoard(spec.name, name, there.ip, TENSORBOARD_PORT, True, envs)
            await self.api.delete(name, grace=0, wait=True)
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        from jupyter_tfenv.backends.kubernetes.api import _api_error_message  # noqa: PLC0415

        try:
            created = await self.api._call(
                self.api.core.create_namespaced_pod, self.api.namespace, pod
            )
        except ApiException as err:
            raise BackendError(
                f"Kubernetes refused the TensorBoard pod: {_api_error_message(err)}",
                status=403 if err.status == 403 else 400 if err.status == 422 else 502,
            ) from err
        try:
            from jupyter_tfenv.backends.kubernetes.network import with_owner  # noqa: PLC0415

            await self.api._call(
                self.api.net.create_namespaced_network_policy,
                self.api.namespace,
                with_owner(policy, created),
                exists_ok=True,
            )
            ip = await self._wait_running(spec, name)
        except BaseException:
            await asyncio.shield(self._quiet_delete(name))
            raise
        return RunningTensorBoard(spec.name, name, ip, TENSORBOARD_PORT, False, envs)

    async def _quiet_delete(self, name: str) -> None:
        # The start's own error is what the user sees.
        with contextlib.suppress(Exception):
            await self.api.delete(name, grace=0)

    async def _wait_running(self, spec: TensorBoardPodSpec, name: str) -> str:
        """The pod's IP once it runs and is ready (TensorBoard answers); a pull, schedule
        or exit failure in the words a kernel pod's start uses (image pulls not charged to
        the start timeout)."""
        what = f"TensorBoard '{spec.name}'"
        api = self.api
        charged, pulled = 0.0, 0.0
        unschedulable_since: float | None = None
        last = time.monotonic()
        while True:
            pod = await api._call(
                api.core.read_namespaced_pod, name, api.namespace, missing_ok=True
            )
            now = time.monotonic()
            if pod is None:
                raise BackendError(
                    f"The pod of {what} was deleted while it started. Start it again.",
                    status=409,
                )
            status = pod.get("status") or {}
            container = _kernel_status(pod)
            if (
                status.get("phase") == "Running"
                and "running" in (container.get("state") or {})
                and container.get("ready")
                and status.get("podIP")
            ):
                return str(status["podIP"])
            events = await api.events(name)
            failure = _start_failure(spec.name, pod, events)
            if failure is not None:
                message, code = failure
                printed = await api.logs(name, 30)
                raise BackendError(
                    _tensorboard_words(message),
                    status=code,
                    reason="tensorboard failed",
                    logs="\n\n".join(t for t in (printed.rstrip(), _events_text(events)) if t),
                )
            why = _unschedulable(pod)
            if why:
                unschedulable_since = unschedulable_since or now
                if now - unschedulable_since >= api.schedule_timeout:
                    raise BackendError(
                        f"No node can run {what} now: {why.rstrip('.')}. Free what holds "
                        "those resources or ask an admin for capacity; the pod was removed.",
                        status=503,
                        logs=_events_text(events),
                    )
            else:
                unschedulable_since = None
            if _pulling(events):
                pulled += now - last
                if pulled > api.pull_timeout:
                    raise BackendError(
                        f"Pulling the image of {what} took more than {api.pull_timeout:.0f} s "
                        "(c.TFEnvBroker.kubernetes_pull_timeout); the pod was removed. "
                        "Pre-pull the image onto the nodes (docs/kubernetes.md).",
                        status=504,
                        logs=_events_text(events),
                    )
            else:
                charged += now - last
                if charged > self.start_timeout:
                    raise BackendError(
                        f"The pod of {what} did not run within {self.start_timeout:.0f} s "
                        "(image pulls not counted); the pod was removed.",
                        status=504,
                        logs=_events_text(events),
                    )
            last = now
            await asyncio.sleep(api.poll_interval)


class PodTensorBoards:
    """The backend's TensorBoard pods of a caller (mixed into ``KubernetesBackend``)."""

    settings: KubernetesSettings

    def api(self) -> KubernetesAPI:
        raise NotImplementedError

    async def call(self, coro: Any) -> Any:
        raise NotImplementedError

    async def pods(self, caller: Caller) -> list[PodState]:
        raise NotImplementedError

    def image_of(self, env: Environment) -> str:
        raise NotImplementedError

    async def _claim(self, caller: Caller, env: Environment) -> tuple[str, bool]:
        raise NotImplementedError

    def tensorboard_pods(self) -> TensorBoardPods:
        return TensorBoardPods(self.api(), start_timeout=self.settings.start_timeout)

    async def start_tensorboard(
        self,
        caller: Caller,
        name: str,
        image_env: Environment,
        log_envs: Sequence[Environment],
        *,
        server_name: str = "",
    ) -> RunningTensorBoard:
        """Start (or reuse) the caller's TensorBoard ``name`` (``env-<id>`` or
        ``compare``) in ``image_env``'s image over the log claims of ``log_envs``; 404
        when none of them has a claim yet (nothing was logged)."""
        claims: list[tuple[str, str]] = []
        for env in log_envs:
            claim, exists = await self._claim(caller, env)
            if exists:
                claims.append((env.id, claim))
        if not claims:
            raise BackendError(
                f"No logs of yours for TensorBoard '{name}': start a kernel of the "
                "environment and write to TFENV_LOG_DIR first.",
                status=404,
            )
        # ReadWriteOnce claims: where a kernel of this user holds one, the pod goes there.
        wanted = {env_id for env_id, _ in claims}
        node = next(
            (
                p.node
                for p in await self.pods(caller)
                if p.running and p.node and p.annotations.get(LABEL_ENVIRONMENT) in wanted
            ),
            None,
        )
        try:
            spec = TensorBoardPodSpec(
                username=caller.name,
                uid=caller.uid,
                gid=caller.gid,
                namespace=self.settings.namespace,
                name=name,
                image_env=image_env,
                image=self.image_of(image_env),
                claims=tuple(claims),
                server_name=server_name,
                node=node,
            )
            started: RunningTensorBoard = await self.call(self.tensorboard_pods().start(spec))
        except KubernetesManifestError as err:
            raise BackendError(err.message, status=400, reason="tensorboard") from err
        return started

    async def tensorboard_state(self, caller: Caller, name: str) -> PodState | None:
        state: PodState | None = await self.call(self.tensorboard_pods().state(caller.name, name))
        return state

    async def tensorboards(self, caller: Caller) -> list[PodState]:
        found: list[PodState] = await self.call(self.tensorboard_pods().list(caller.name))
        return found

    async def stop_tensorboard(self, caller: Caller, name: str) -> bool:
        """Delete the caller's TensorBoard ``name``; 404 when there is none of theirs."""
        gone = await self.call(self.tensorboard_pods().delete(caller.name, name, wait=True))
        if not gone:
            raise BackendError(f"No TensorBoard '{name}' of yours.", status=404)
        return True
