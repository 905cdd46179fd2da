"""The Kubernetes API client wrapper (:class:`KubernetesAPI`): kernel pods in one namespace.

The objects come from :mod:`jupyter_tfenv.backends.kubernetes.manifests`; this module submits them
through the official ``kubernetes`` client and follows the pod until its kernel can be
reached, or says why not. Every client call is blocking, so each runs in a worker thread
(``asyncio.to_thread``): nothing here blocks the broker's event loop.

One start, in order: the restricted Pod Security check (:func:`pss.check_pod`), the
user's checkpoint claim (kept when it exists and its annotations say it is this user's
for this environment; refused when they name someone else), the previous pod of this
user's kernel id (a restart) removed, the connection Secret, the pod, the Secret's owner
patched to the pod (it goes with it), the NetworkPolicy (owned by the pod too). A pod
under the kernel's name that another user owns is never touched: the start is refused
as if there were no such kernel (404). Then the pod is watched: Running with an IP is a
start; a refusal by the scheduler, a failed image pull, a container that exits or is
OOM-killed is an error that carries the pod's events. Time spent pulling the image is
not charged to the start timeout (``pull_timeout`` caps it instead).

Responses are read as plain JSON (``_preload_content=False``): the same camelCase dicts
the manifests are written in, not the client's model classes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from jupyter_tfenv.backends.kubernetes import manifests, pss
from jupyter_tfenv.backends.kubernetes.manifests import KernelStart
from jupyter_tfenv.backends.kubernetes.podstatus import (
    FATAL_WAITING,
    PodState,
    StartedPod,
    _event_time,
    _events_text,
    _is_kernel_of,
    _kernel_status,
    _pulling,
    _start_failure,
    _unschedulable,
    pod_state,
)
from jupyter_tfenv.errors import TFEnvError

__all__ = [
    "FATAL_WAITING",
    "KubernetesAPI",
    "KubernetesUnavailableError",
    "NodesUnreadableError",
    "PodStartError",
    "PodState",
    "StartedPod",
    "load_api_client",
    "pod_state",
]

log = logging.getLogger(__name__)


class PodStartError(TFEnvError):
    """A kernel pod did not start; ``events`` holds the pod's events (one line each)."""

    http_status = 500

    def __init__(
        self, message: str, *, events: str = "", status: int = 500, logs: str = ""
    ) -> None:
        super().__init__(message)
        self.events = events
        self.logs = logs
        self.http_status = status


class NodesUnreadableError(TFEnvError):
    """The nodes cannot be listed (no ``list`` on nodes: a cluster-wide permission)."""

    http_status = 403


class KubernetesUnavailableError(TFEnvError):
    """The Kubernetes API server cannot be reached, or refused the broker's credentials."""

    http_status = 503


def load_api_client(kubeconfig: str = "", context: str = "") -> Any:
    """A ``kubernetes.client.ApiClient``: in-cluster credentials when the broker runs in a
    pod (and no ``kubeconfig`` is given), else the kubeconfig file ($KUBECONFIG)."""
    configuration = client.Configuration()
    try:
        if not kubeconfig and config.incluster_config.SERVICE_HOST_ENV_NAME in os.environ:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=kubeconfig or None,
                context=context or None,
                client_configuration=configuration,
            )
    except config.ConfigException as err:
        raise KubernetesUnavailableError(
            f"No Kubernetes credentials: {err}. Run the broker in the cluster with its "
            "ServiceAccount (docs/kubernetes.md), or set c.TFEnvBroker.kubernetes_config to a "
            "kubeconfig file."
        ) from err
    return client.ApiClient(configuration)


def _api_error_message(err: Any) -> str:
    """The API server's own message of an ApiException (its Status ``message``)."""
    body = getattr(err, "body", None)
    if body:
        try:
            status = json.loads(body)
        except (TypeError, ValueError):
            return str(body)[:2000]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return f"{getattr(err, 'status', '?')} {getattr(err, 'reason', '')}".strip()


#: (connect, read) seconds of one API request: an API server that accepted the
#: connection and never answers (overloaded, or gone without closing it) must not hold
#: a broker thread for ever (nor keep a stopping process from exiting).
REQUEST_TIMEOUT = (10.0, 60.0)


class KubernetesAPI:
    """Creates, follows and removes kernel pods in one namespace."""

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        *,
        server_namespace: str | None = None,
        server_selector: Callable[[str, str], Mapping[str, str]] | None = None,
        egress_allow: Sequence[str | Mapping[str, Any]] = (),
        pull_timeout: float = 1800.0,
        schedule_timeout: float = 10.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.core = client.CoreV1Api(api_client)
        self.net = client.NetworkingV1Api(api_client)
        self.server_namespace = server_namespace
        self.server_selector = server_selector or manifests.default_server_selector
        self.egress_allow = list(egress_allow)
        self.pull_timeout = pull_timeout
        self.schedule_timeout = schedule_timeout
        self.poll_interval = poll_interval

    # -- the client, off the event loop -------------------------------------------------

    async def _call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one client call in a thread; its JSON answer as a dict (None for 404 when
        ``missing_ok``)."""
        missing_ok = kwargs.pop("missing_ok", False)
        exists_ok = kwargs.pop("exists_ok", False)
        raw = kwargs.pop("raw", False)

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)

        def run() -> Any:
            resp = func(*args, _preload_content=False, **kwargs)
            data = resp.data
            if raw:
                return data.decode("utf-8", "replace")
            return json.loads(data) if data else {}

        try:
            return await asyncio.to_thread(run)
        except ApiException as err:
            if err.status == 404 and missing_ok:
                return None
            if err.status == 409 and exists_ok:
                return None
            if err.status in (401, 403) and "forbidden" not in _api_error_message(err).lower():
                raise KubernetesUnavailableError(
                    f"The Kubernetes API server refused the broker's credentials: "
                    f"{_api_error_message(err)}. Check its ServiceAccount and Role "
                    "(docs/kubernetes.md)."
                ) from err
            raise
        except (Urllib3Error, OSError) as err:
            raise KubernetesUnavailableError(
                f"The Kubernetes API server does not answer ({err}). Check that the cluster "
                "is up and that the broker may reach it (NetworkPolicy egress)."
            ) from err

    # -- start --------------------------------------------------------------------------

    async def start(self, start: KernelStart, key: str, *, start_timeout: float) -> StartedPod:
        """Submit the kernel's objects and wait until its pod runs with an IP address."""
        selector = self.server_selector(start.username, start.server_name)
        if start.claim is None:
            claim, _ = await self.resolve_claim(start.username, start.env.id)
            start = replace(start, claim=claim)
        objs = manifests.kernel_objects(
            start,
            key,
            server_selector=selector,
            server_namespace=self.server_namespace,
            egress_allow=self.egress_allow,
        )
        violations = pss.check_pod(objs.pod)
        if violations:
            raise PodStartError(
                "The kernel pod would break the restricted Pod Security Standard: "
                + "; ".join(str(v) for v in violations),
                status=400,
            )
        name = objs.pod["metadata"]["name"]
        there = await self.state(name)
        if there is not None and not _is_kernel_of(there, start.username, start.kernel_id):
            # Never another user's: refused as if it did not exist (kernel ids are seen in
            # URLs, logs and shared sessions).
            raise PodStartError(f"No kernel {start.kernel_id} of yours.", status=404)
        # A restart reuses the kernel id: what its previous pod left goes first (also a
        # pod named before issue 17, by the kernel id only).
        previous = await self.find_kernel(start.username, start.kernel_id)
        if previous is not None:
            await self.delete(
                previous.name, secret=previous.secret or objs.secret["metadata"]["name"], wait=True
            )
        await self._call(
            self.core.create_namespaced_persistent_volume_claim,
            self.namespace,
            objs.pvc,
            exists_ok=True,
        )
        # Made by a start of the same user and environment meanwhile, or by someone else:
        # mounted only when its annotations say it is this user's.
        await self.resolve_claim(start.username, start.env.id, name=manifests.pvc_name(start))
        try:
            await self._call(self.core.create_namespaced_secret, self.namespace, objs.secret)
            try:
                pod = await self._call(self.core.create_namespaced_pod, self.namespace, objs.pod)
            except ApiException as err:
                raise PodStartError(
                    f"Kubernetes refused the kernel pod of '{start.env.id}': "
                    f"{_api_error_message(err)}",
                    status=403 if err.status == 403 else 400 if err.status == 422 else 502,
                ) from err
            owned = {"metadata": {"ownerReferences": [manifests.owner_reference(pod)]}}
            await self._call(
                self.core.patch_namespaced_secret,
                objs.secret["metadata"]["name"],
                self.namespace,
                owned,
            )
            policy = manifests.with_owner(objs.network_policy, pod)
            await self._call(
                self.net.create_namespaced_network_policy, self.namespace, policy, exists_ok=True
            )
            return await self._wait_running(start, name, start_timeout)
        except BaseException:
            await asyncio.shield(self._quiet_delete(name, objs.secret["metadata"]["name"]))
            raise

    async def _quiet_delete(self, name: str, secret: str) -> None:
        try:
            await self.delete(name, secret=secret)
        except Exception as err:
            log.warning("tfenv-broker: could not remove pod %s after a failed start: %s", name, err)

    async def _wait_running(
        self, start: KernelStart, name: str, start_timeout: float
    ) -> StartedPod:
        env_id = start.env.id
        started = time.monotonic()
        charged = 0.0  # seconds counted against start_timeout (pulls are not)
        pulled = 0.0
        unschedulable_since: float | None = None
        last = started
        while True:
            pod = await self._call(
                self.core.read_namespaced_pod, name, self.namespace, missing_ok=True
            )
            now = time.monotonic()
            if pod is None:
                raise PodStartError(
                    f"The kernel pod of '{env_id}' was deleted while it started (by an admin "
                    "or a controller?). Start the kernel again.",
                    events=await self.events_text(name),
                    status=409,
                )
            status = pod.get("status") or {}
            kernel = _kernel_status(pod)
            state = kernel.get("state") or {}
            if status.get("phase") == "Running" and "running" in state and status.get("podIP"):
                return StartedPod(
                    name=name,
                    ip=str(status["podIP"]),
                    ports=start.ports.by_name(),
                    image=str(kernel.get("imageID") or kernel.get("image") or ""),
                    node=str((pod.get("spec") or {}).get("nodeName") or ""),
                    pull_seconds=round(pulled, 3),
                    claim=manifests.pvc_name(start),
                )
            events = await self.events(name)
            failure = _start_failure(env_id, pod, events)
            if failure is not None:
                message, code = failure
                printed = (
                    await self.logs(name, 30) if kernel.get("state", {}).get("terminated") else ""
                )
                raise PodStartError(message, events=_events_text(events), status=code, logs=printed)
            unschedulable = _unschedulable(pod)
            if unschedulable:
                unschedulable_since = unschedulable_since or now
                if now - unschedulable_since >= self.schedule_timeout:
                    raise PodStartError(
                        f"No node can run the kernel of '{env_id}' now: "
                        f"{unschedulable.rstrip('.')}. "
                        "Free what holds those resources (your other kernels) or ask an admin "
                        "for capacity; the pod was removed.",
                        events=_events_text(events),
                        status=503,
                    )
            else:
                unschedulable_since = None
            if _pulling(events):
                pulled += now - last
                if pulled > self.pull_timeout:
                    raise PodStartError(
                        f"Pulling the image of '{env_id}' took more than "
                        f"{self.pull_timeout:.0f} s (c.TFEnvBroker.kubernetes_pull_timeout); "
                        "the pod was removed. Pre-pull the image onto the nodes "
                        "(docs/kubernetes.md, the DaemonSet).",
                        events=_events_text(events),
                        status=504,
                    )
            else:
                charged += now - last
                if charged > start_timeout:
                    raise PodStartError(
                        f"The kernel pod of '{env_id}' did not run within {start_timeout:.0f} s "
                        "(image pulls not counted); the pod was removed.",
                        events=_events_text(events),
                        status=504,
                    )
            last = now
            await asyncio.sleep(self.poll_interval)

    # -- events, state, logs ------------------------------------------------------------

    async def events(self, name: str) -> list[dict[str, Any]]:
        """The pod's events, oldest first."""
        answer = await self._call(
            self.core.list_namespaced_event,
            self.namespace,
            field_selector=f"involvedObject.name={name}",
        )
        items = list((answer or {}).get("items") or [])
        return sorted(items, key=_event_time)

    async def events_text(self, name: str) -> str:
        try:
            return _events_text(await self.events(name))
        except TFEnvError:
            return ""

    async def state(self, name: str) -> PodState | None:
        pod = await self._call(self.core.read_namespaced_pod, name, self.namespace, missing_ok=True)
        return None if pod is None else pod_state(pod)

    async def pods(self, selector: Mapping[str, str]) -> list[PodState]:
        """The tfenv kernel pods whose labels match ``selector``."""
        labels = {**manifests.MANAGED_BY, manifests.COMPONENT_LABEL: "kernel", **selector}
        answer = await self._call(
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        )
        return [pod_state(p) for p in (answer or {}).get("items") or []]

    async def nodes(self) -> list[dict[str, Any]]:
        """Every node of the cluster (the GPU check reads their feature discovery labels).
        Needs ``list`` on nodes, which the broker's namespaced Role does not give
        (docs/kubernetes.md, "GPU nodes"): a refusal is :class:`NodesUnreadableError`."""
        try:
            answer = await self._call(self.core.list_node)
        except ApiException as err:
            raise NodesUnreadableError(
                f"the broker may not list the cluster's nodes ({_api_error_message(err)}); "
                "grant its ServiceAccount `list` on nodes (the ClusterRole in "
                'docs/kubernetes.md, "GPU nodes") to let it read their GPU feature '
                "discovery labels"
            ) from err
        return list((answer or {}).get("items") or [])

    async def logs(self, name: str, tail: int) -> str:
        text = await self._call(
            self.core.read_namespaced_pod_log,
            name,
            self.namespace,
            container=manifests.KERNEL_CONTAINER,
            tail_lines=tail,
            raw=True,
            missing_ok=True,
        )
        return str(text or "")

    # -- short helper pods (checkpoint listing and deletion) ---------------------------

    async def run_helper(
        self,
        pod: dict[str, Any],
        *,
        timeout: float = 120.0,
        raw: bool = False,
        schedule_timeout: float | None = None,
    ) -> Any:
        """Run a helper pod (manifests.helper_pod) to its end; the JSON its last
        ``TFENV-HELPER`` line printed (``raw``: its whole output, when it succeeded). The
        pod is always deleted. ``schedule_timeout``: give up (409, the scheduler's reason)
        when the pod stays unschedulable that long (a probe waiting for a free GPU)."""
        name = pod["metadata"]["name"]
        violations = pss.check_pod(pod)
        if violations:  # pragma: no cover - helper_pod is built restricted
            raise PodStartError("; ".join(str(v) for v in violations), status=500)
        try:
            await self._call(self.core.create_namespaced_pod, self.namespace, pod)
        except ApiException as err:
            raise PodStartError(
                f"Kubernetes refused the checkpoint helper pod: {_api_error_message(err)}",
                status=502,
            ) from err
        try:
            deadline = time.monotonic() + timeout
            unschedulable_since: float | None = None
            while True:
                got = await self._call(
                    self.core.read_namespaced_pod, name, self.namespace, missing_ok=True
                )
                phase = ((got or {}).get("status") or {}).get("phase")
                if phase in ("Succeeded", "Failed"):
                    break
                events = await self.events(name)
                why = _unschedulable(got or {}) if schedule_timeout is not None else ""
                if not why:
                    unschedulable_since = None
                elif unschedulable_since is None:
                    unschedulable_since = time.monotonic()
                elif time.monotonic() - unschedulable_since > (schedule_timeout or 0.0):
                    raise PodStartError(
                        f"No node can run the pod now: {why}",
                        events=_events_text(events),
                        status=409,
                    )
                failure = _start_failure("checkpoint helper", got or {}, events)
                if failure is not None and "exited" not in failure[0]:
                    raise PodStartError(failure[0], events=_events_text(events), status=502)
                if got is None or time.monotonic() > deadline:
                    raise PodStartError(
                        f"The checkpoint helper pod did not finish within {timeout:.0f} s.",
                        events=_events_text(events),
                        status=504,
                    )
                await asyncio.sleep(self.poll_interval)
            out = await self.logs(name, 200)
            if raw and phase == "Succeeded":
                return out
            for line in reversed(out.splitlines()):
                if line.startswith("TFENV-HELPER "):
                    return json.loads(line[len("TFENV-HELPER ") :])
            raise PodStartError(
                f"The checkpoint helper pod ended ({phase}) without a result: {out.strip()[-500:]}",
                status=502,
            )
        finally:
            await asyncio.shield(self._quiet_delete(name, ""))

    async def find_kernel(self, username: str, kernel_id: str) -> PodState | None:
        """``username``'s pod of ``kernel_id`` (by its name, or the name pods had before
        issue 17), only when its annotations say it is theirs; else None."""
        for name in (
            manifests.kernel_pod_name(username, kernel_id),
            manifests.legacy_kernel_pod_name(kernel_id),
        ):
            state = await self.state(name)
            if state is not None and _is_kernel_of(state, username, kernel_id):
                return state
        return None

    async def resolve_claim(
        self, username: str, env_id: str, *, name: str | None = None
    ) -> tuple[str, bool]:
        """The name of ``username``'s checkpoint claim for ``env_id`` and whether it exists.

        The claim is :func:`manifests.claim_name`'s, or one made before issue 17 under its
        40-bit name whose annotations name this user and environment (kept in use, so
        checkpoints survive the upgrade). A claim under this user's name whose annotations
        name someone else is refused (409): it is never mounted."""
        candidates = (
            [name]
            if name
            else [
                manifests.claim_name(username, env_id),
                manifests.legacy_claim_name(username, env_id),
            ]
        )
        for i, candidate in enumerate(candidates):
            found = await self._call(
                self.core.read_namespaced_persistent_volume_claim,
                candidate,
                self.namespace,
                missing_ok=True,
            )
            if found is None:
                continue
            if manifests.claim_owned_by(found, username, env_id):
                return candidate, True
            if i == 0:
                raise PodStartError(
                    f"The checkpoint claim {self.namespace}/{candidate} for your '{env_id}' "
                    "exists but its annotations name another user or environment: it is not "
                    "mounted. Ask an admin to look at it (kubectl -n "
                    f"{self.namespace} get pvc {candidate} -o yaml).",
                    status=409,
                )
            # An old-name claim of someone else: not this user's; the new name is used.
        return candidates[0], False

    async def read_claim(self, name: str) -> dict[str, Any] | None:
        """The claim ``name`` of the kernels' namespace as the API has it (None: missing)."""
        found = await self._call(
            self.core.read_namespaced_persistent_volume_claim,
            name,
            self.namespace,
            missing_ok=True,
        )
        return dict(found) if found is not None else None

    async def server_pods(self, labels: Mapping[str, str]) -> list[dict[str, Any]] | None:
        """The pods with ``labels`` in the servers' namespace (a user's server); None when
        the broker may not list pods there (its Role covers the kernels' namespace)."""
        try:
            answer = await self._call(
                self.core.list_namespaced_pod,
                self.server_namespace or self.namespace,
                label_selector=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            )
        except ApiException as err:
            if err.status in (401, 403):
                return None
            raise
        return list((answer or {}).get("items") or [])

    async def claim_exists(self, name: str) -> bool:
        found = await self._call(
            self.core.read_namespaced_persistent_volume_claim,
            name,
            self.namespace,
            missing_ok=True,
        )
        return found is not None

    # -- removal ------------------------------------------------------------------------

    async def delete(
        self, name: str, *, secret: str | None = None, grace: int = 5, wait: bool = False
    ) -> bool:
        """Remove a kernel pod, its NetworkPolicy and its Secret (which Kubernetes would
        also remove, as their owner is gone). True when a pod was there."""
        body = client.V1DeleteOptions(grace_period_seconds=grace, propagation_policy="Background")
        gone = await self._call(
            self.core.delete_namespaced_pod, name, self.namespace, body=body, missing_ok=True
        )
        await self._call(
            self.net.delete_namespaced_network_policy, name, self.namespace, missing_ok=True
        )
        if secret:
            await self._call(
                self.core.delete_namespaced_secret, secret, self.namespace, missing_ok=True
            )
        if gone is not None and wait:
            deadline = time.monotonic() + grace + 60
            while time.monotonic() < deadline:
                if await self.state(name) is None:
                    break
                await asyncio.sleep(self.poll_interval)
        return gone is not None


# --- reading pods and events -----------------------------------------------------------
