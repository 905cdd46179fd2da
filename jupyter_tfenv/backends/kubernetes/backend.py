"""Kernels as pods in one namespace: :class:`KubernetesBackend`, the
:class:`~jupyter_tfenv.backends.base.KernelBackend` peer of Docker (docs/kubernetes.md).

It is given its settings and a few plain callables, never the broker::

    backend = KubernetesBackend(
        KubernetesSettings.from_config(self),
        catalog=self.get_catalog,
        user_lock=self.user_lock,
        log=self.log,
    )

(``self``: the broker, or anything with its ``kubernetes_*`` traits, ``default_memory`` and
``probe_timeout``). Which environments a caller may use and the quotas stay above it: the
caller passes the resolved environment and an ``admit`` hook that refuses (429) a kernel or
probe beyond the caller's limits; for :meth:`~KubernetesBackend.checkpoints`, which takes
environment ids, ``environment_for=`` resolves them as the broker allows (the broker passes
its ``environment_for(caller, env_id, status=404)``; default: any catalog environment).

What differs from Docker for the caller:

- :meth:`~KubernetesBackend.prepare_connection` answers ``{"backend": "kubernetes",
  "transport": "tcp", "ports": {...}}`` and makes no folder: the user's server keeps the
  connection file and sends its key with the start (``KernelStart.key``), which goes into
  the pod's immutable Secret and nowhere else;
- :meth:`~KubernetesBackend.start` answers the pod's IP (``"ip"``): the server connects
  over TCP to the fixed ports, which the kernel's NetworkPolicy opens to that server only;
- :meth:`~KubernetesBackend.signal`: SIGTERM and SIGKILL delete the pod; an interrupt is
  the kernel's ``interrupt_request`` message, which the server sends itself (no signal
  crosses the API); other signals are refused;
- :meth:`~KubernetesBackend.live` answers the pod's state and limits with CPU and memory
  from the metrics API and GPU use from a DCGM exporter (``metrics.py``), each missing one
  named in ``missing_readings``; GPUs are the scheduler's (``nvidia.com/gpu``); running
  kernels are not adopted (:class:`UnsupportedByBackend`);
- :meth:`~KubernetesBackend.compatibility` and the start's :meth:`~KubernetesBackend.gpu_gate`
  judge GPU environments against the nodes' GPU feature discovery labels (``gpu.py``):
  an incompatible start is refused (409) unless ``allow_incompatible_gpus``, a compatible
  one is kept to the nodes that can run it (node affinity).

Users are not Unix accounts here: every kernel pod runs as ``settings.uid`` /
``settings.gid`` (:attr:`KubernetesBackend.account`); users are kept apart by their own
claims, Secrets, policies and the owner label, not by uids. Object names derive from the
owner and the kernel id (or the environment), so one user's start never names another
user's objects; every method that names a kernel answers 404 for a kernel that is not the
caller's.

Pods beside kernels (:mod:`~jupyter_tfenv.backends.kubernetes.helpers`): an environment
probe is one pod per (environment, image) in flight, shared by every request that asks
meanwhile, and counts as a kernel of the user who started it (``admit``). Checkpoint helper
pods (listing, deletion) run at most ``settings.helper_pods_per_user`` at a time per user;
a request beyond waits for a slot. They are not refused at the kernel limit: the checkpoint
panel must work for a user who runs all their kernels.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import signal
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.backends.base import (
    Admit,
    BackendError,
    ImageStatus,
    KernelBackend,
    KernelInfo,
    KernelNotFound,
    KernelStart,
    KernelSummary,
    Usage,
    usage_of,
)
from jupyter_tfenv.backends.kubernetes import gpu, homes, manifests, metrics
from jupyter_tfenv.backends.kubernetes.encryption import encrypted, encryption_of
from jupyter_tfenv.backends.kubernetes.helpers import PodHelpers, failure_logs
from jupyter_tfenv.backends.kubernetes.keep import PodKeeping, kept_since
from jupyter_tfenv.backends.kubernetes.settings import KubernetesSettings
from jupyter_tfenv.catalog.lock import LockFile, LockMissingError, require_lock
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.labels import choices_of
from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.kernels.compat import STATE_INCOMPATIBLE, Compatibility

if TYPE_CHECKING:
    from jupyter_tfenv.backends.kubernetes.api import KubernetesAPI, PodState

__all__ = ["KEY_RE", "KubernetesBackend", "KubernetesSettings", "check_key"]

#: What a start's ``key`` may be: jupyter_client makes a uuid4 (hex and dashes).
KEY_RE = re.compile(r"^[A-Za-z0-9._-]{16,256}$")
#: Kernel ids: what jupyter_client makes (uuid4), no path characters (as the broker's).
KERNEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$")

#: Seconds the environments listing reuses the nodes it read (a start reads them anew).
NODES_TTL = 30.0

#: A per-user lock: ``async with user_lock(name):`` (the broker's, shared with its quotas).
UserLock = Callable[[str], AbstractAsyncContextManager[Any]]


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise BackendError(
            "'key' (the kernel's HMAC key from its connection file: 16 to 256 letters, digits, "
            "'.', '_' or '-') is required in Kubernetes mode.",
            reason="no key",
        )
    return key


def check_kernel_id(kernel_id: Any) -> str:
    if not isinstance(kernel_id, str) or not KERNEL_ID_RE.match(kernel_id):
        raise BackendError(
            f"'kernel_id' must be a kernel id (8 to 64 letters, digits, '-' or '_'), "
            f"not {str(kernel_id)[:80]!r}.",
        )
    return kernel_id


def _locks() -> UserLock:
    """Per-user asyncio locks, for a backend used without a broker (tests, tools)."""
    locks: dict[str, asyncio.Lock] = {}

    def lock(name: str) -> asyncio.Lock:
        return locks.setdefault(name, asyncio.Lock())

    return lock


class KubernetesBackend(PodKeeping, PodHelpers, KernelBackend):
    """Kernel pods in ``settings.namespace``, through the Kubernetes API."""

    name = "kubernetes"
    features = frozenset({"checkpoints", "live", "adopt"})

    def __init__(
        self,
        settings: KubernetesSettings,
        *,
        catalog: Callable[[], Any],
        user_lock: UserLock | None = None,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        environment_for: Callable[[Caller, str], Environment] | None = None,
        api: KubernetesAPI | None = None,
    ) -> None:
        """``catalog``: returns the current catalog (``TFEnvCatalog``: lock policy and file,
        environments). ``user_lock``: the caller's lock for quota checks (the broker's).
        ``environment_for``: the environment of an id the caller may use, for
        :meth:`checkpoints` (default: any catalog environment). ``api``: a ready
        :class:`~jupyter_tfenv.backends.kubernetes.api.KubernetesAPI` (default: one made
        from ``settings.config``/``context`` at first use; needs the [kubernetes] extra)."""
        super().__init__()
        self.settings = settings
        self.catalog = catalog
        self.user_lock = user_lock or _locks()
        self.log = log or logging.getLogger(__name__)
        self._environment_for = environment_for
        self._api = api
        self.account = (settings.uid, settings.gid)
        #: The nodes last read (monotonic time, their JSON or why they could not be read).
        self._nodes_read: tuple[float, list[dict[str, Any]] | str] | None = None
        #: The DCGM exporter's answers, for the live GPU readings (metrics.py).
        self._exporter = metrics.ExporterReader()

    # -- the API client and the configured names ---------------------------------------

    def api(self) -> KubernetesAPI:
        if self._api is None:
            from jupyter_tfenv.backends.kubernetes import api as k8s  # noqa: PLC0415 - needs the [kubernetes] extra

            s = self.settings
            self._api = k8s.KubernetesAPI(
                k8s.load_api_client(s.config, s.context),
                s.namespace,
                server_namespace=s.server_namespace or None,
                server_selector=self.server_selector(),
                egress_allow=list(s.egress_allow),
                pull_timeout=s.pull_timeout,
                schedule_timeout=s.schedule_timeout,
            )
        return self._api

    def server_selector(self) -> Any:
        """The kernels' NetworkPolicy peer: the owner's server pods, as the settings'
        server_selector / server_label_scheme say they are labelled."""
        s = self.settings
        try:
            return manifests.server_selector_from(
                dict(s.server_selector),
                s.server_label_scheme,
                accept_hashed=s.accept_hashed_server_labels,
            )
        except TFEnvError as err:
            raise BackendError(err.message, status=500, reason="bad configuration") from err

    async def call(self, coro: Any) -> Any:
        """Await an API call; an unreachable or refusing API server as a 503."""
        from jupyter_tfenv.backends.kubernetes.api import KubernetesUnavailableError  # noqa: PLC0415

        try:
            return await coro
        except KubernetesUnavailableError as err:
            raise BackendError(err.message, status=503, reason="kubernetes unavailable") from err

    async def close(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            await asyncio.to_thread(api.api_client.close)

    # -- which pods are the caller's -----------------------------------------------------

    async def pods(self, caller: Caller) -> list[PodState]:
        """The caller's kernel pods (the exact owner name, not only its label value; pods
        labelled before issue 17 too)."""
        values = {manifests.label_value(caller.name), manifests.legacy_label_value(caller.name)}
        found: dict[str, PodState] = {}
        for value in sorted(values):
            for p in await self.call(self.api().pods({manifests.LABEL_OWNER: value})):
                if p.annotations.get(manifests.LABEL_OWNER) == caller.name:
                    found[p.name] = p
        return list(found.values())

    async def pod(self, caller: Caller, kernel_id: str) -> PodState:
        """The caller's pod of that kernel, or :class:`KernelNotFound` (404)."""
        state = await self._find_pod(caller, kernel_id)
        if state is None:
            raise KernelNotFound(kernel_id)
        return state

    async def _find_pod(self, caller: Caller, kernel_id: str) -> PodState | None:
        check_kernel_id(kernel_id)
        state: PodState | None = await self.call(self.api().find_kernel(caller.name, kernel_id))
        return state

    async def usage(self, caller: Caller, *, exclude: str | None = None) -> Usage:
        pods = await self.pods(caller)
        return usage_of(
            (
                p.gpus
                for p in pods
                if p.counted and p.annotations.get(manifests.LABEL_KERNEL_ID) != exclude
            ),
            self.probe_gpus(caller),
        )

    # -- start ---------------------------------------------------------------------------

    def connection(self) -> dict[str, Any]:
        """How a server reaches a kernel pod: TCP to the fixed ports at the pod's IP."""
        return {
            "backend": "kubernetes",
            "transport": "tcp",
            "ports": manifests.KernelPorts().by_name(),
        }

    async def prepare_connection(
        self, caller: Caller, kernel_id: str, restart: bool
    ) -> dict[str, Any]:
        check_kernel_id(kernel_id)
        return self.connection()

    def digest(self, env: Environment) -> str | None:
        """The lock file's digest of the environment's tag; strict: required."""
        catalog = self.catalog()
        if catalog.lock_policy == "off":
            return None
        path = catalog.lock_path()
        lock = LockFile.load(path) if path is not None else None
        if catalog.lock_policy == "strict":
            try:
                require_lock(env, lock)
            except LockMissingError as err:
                raise BackendError(err.message, status=409, reason="not locked") from err
        return lock.get(env.image) if lock is not None else None

    def pod_start(self, caller: Caller, request: KernelStart, env: Environment) -> Any:
        """The pod's :class:`manifests.KernelStart` (400 when the environment cannot be a
        pod, 409 when its image is not locked under the strict policy)."""
        s = self.settings
        try:
            return manifests.KernelStart(
                env=env,
                username=caller.name,
                uid=caller.uid,
                gid=caller.gid,
                kernel_id=request.kernel_id,
                namespace=s.namespace,
                server_name=request.server,
                digest=self.digest(env),
                require_digest=self.catalog().lock_policy == "strict",
                storage=manifests.StorageOptions(
                    storage_class=s.storage_class or None,
                    size=s.storage_size,
                    access_modes=tuple(s.storage_access_modes),
                ),
                default_memory=s.default_memory or None,
                environment=dict(request.env),
            )
        except TFEnvError as err:
            if isinstance(err, BackendError):
                raise
            raise BackendError(err.message, status=400, reason="not a pod") from err

    async def start(
        self,
        caller: Caller,
        request: KernelStart,
        env: Environment,
        *,
        admit: Admit | None = None,
    ) -> dict[str, Any]:
        from jupyter_tfenv.backends.kubernetes.api import PodStartError  # noqa: PLC0415

        key = check_key(request.key)
        check_kernel_id(request.kernel_id)
        start = await asyncio.to_thread(self.pod_start, caller, request, env)
        try:
            # An ambiguous server label is refused before anything is made.
            self.server_selector()(caller.name, request.server)
        except TFEnvError as err:
            if isinstance(err, BackendError):
                raise
            raise BackendError(err.message, status=400, reason="ambiguous name") from err
        try:
            new_gpus = manifests.gpu_count(env)
        except TFEnvError as err:
            raise BackendError(err.message, status=400, reason="not a pod") from err
        # No GPU node can run it: 409; where some can, the pod is kept to them.
        terms = await self.gpu_gate(env)
        if terms:
            start = dataclasses.replace(start, node_terms=terms)
        if self.settings.mount_home:  # the notebook's folder (homes.py)
            try:
                home = await homes.home_for(self, caller, request, new_gpus)
            except TFEnvError as err:
                if isinstance(err, BackendError):
                    raise
                raise BackendError(err.message, status=409, reason="home not shared") from err
            start = dataclasses.replace(start, home=home)
        start, encryption = encrypted(  # CurveZMQ under kubernetes_kernel_encryption
            self.settings.kernel_encryption, start, request.curve, self._cached_probe(env), self.log
        )
        async with self.user_lock(caller.name):
            if admit is not None:
                admit(await self.usage(caller, exclude=request.kernel_id), new_gpus)
            try:
                pod = await self.call(
                    self.api().start(start, key, start_timeout=self.settings.start_timeout)
                )
            except PodStartError as err:
                raise BackendError(
                    homes.scheduling_message(err.message, start.home),
                    status=err.http_status,
                    reason="pod did not start",
                    logs=failure_logs(err),
                ) from err
        self.log.info(
            "tfenv-broker: started kernel %s for %s: %s in pod %s/%s (%s) on node %s%s",
            request.kernel_id,
            caller.name,
            env.id,
            start.namespace,
            pod.name,
            pod.ip,
            pod.node or "?",
            f", image pulled in {pod.pull_seconds:.1f} s" if pod.pull_seconds else "",
        )
        return {
            "kernel_id": request.kernel_id,
            "container_id": pod.name,
            "name": pod.name,
            "image_id": pod.image,
            "environment": env.id,
            "backend": "kubernetes",
            "transport": "tcp",
            "ip": pod.ip,
            "ports": pod.ports,
            **encryption,
            "checkpoints": {
                "storage": "kubernetes",
                "claim": pod.claim or manifests.pvc_name(start),
                "namespace": start.namespace,
                "container_path": manifests.CONTAINER_CHECKPOINT_DIR,
            },
        }

    # -- the caller's kernels ------------------------------------------------------------

    async def find(self, caller: Caller, kernel_id: str) -> KernelInfo | None:
        p = await self._find_pod(caller, kernel_id)
        if p is None:
            return None
        return KernelInfo(
            kernel_id=kernel_id,
            container_id=p.name,
            name=p.name,
            status=pod_status(p),
            running=p.running,
            exit_code=p.exit_code,
            oom_killed=p.oom_killed,
            started_at=p.created,
            environment=p.annotations.get(manifests.LABEL_ENVIRONMENT),
            image_id=p.image,
            choices=choices_of(p.annotations),
            # kept_at: when its server kept it (keep.py), None while a server holds it.
            extra={
                "reason": p.reason,
                "backend": "kubernetes",
                "ip": p.ip,
                "kept_at": kept_since(p.annotations),
                "encryption": encryption_of(p.annotations),
                "ended_by": p.ended_by,  # evicted, preempted, its node lost (podstatus.py)
            },
        )

    async def list_kernels(self, caller: Caller) -> list[KernelSummary]:
        return [
            KernelSummary(
                kernel_id=p.annotations.get(manifests.LABEL_KERNEL_ID),
                container_id=p.name,
                name=p.name,
                environment=p.annotations.get(manifests.LABEL_ENVIRONMENT),
                status=pod_status(p),
                started_at=p.created,
                gpus=p.gpus,
                server=p.annotations.get(manifests.LABEL_HUB_SERVER, ""),
            )
            for p in await self.pods(caller)
        ]

    async def signal(self, caller: Caller, kernel_id: str, signum: int) -> None:
        p = await self.pod(caller, kernel_id)
        if signum in (signal.SIGTERM, signal.SIGKILL):
            grace = 0 if signum == signal.SIGKILL else 5
            await self.call(self.api().delete(p.name, grace=grace))
            return
        raise BackendError(
            f"Kubernetes mode delivers no signal {signum} to a kernel pod: interrupt with the "
            "kernel's interrupt_request message (tfenv's servers do), stop it with SIGTERM.",
            status=400,
            reason="signal not delivered",
        )

    async def logs(self, caller: Caller, kernel_id: str, tail: int = 30) -> str:
        p = await self.pod(caller, kernel_id)
        return str(await self.call(self.api().logs(p.name, tail)))

    async def live(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        """The pod's state and limits, CPU and memory from the metrics API, GPU use from
        the DCGM exporter (``metrics.py``), in the Docker backend's shape; each reading that
        cannot be had is an entry of ``missing_readings`` saying why."""
        p = await self.pod(caller, kernel_id)
        return await metrics.live_status(
            self.api(),
            self._exporter,
            p,
            kernel_id=kernel_id,
            status=pod_status(p),
            exporter_url=self.settings.dcgm_exporter_url,
        )

    async def remove(self, caller: Caller, kernel_id: str, *, keep_runtime: bool = False) -> None:
        state = await self.pod(caller, kernel_id)
        name = state.name
        await self.call(
            self.api().delete(
                name,
                secret=state.secret or manifests.kernel_secret_name(caller.name, kernel_id),
            )
        )
        self.log.info(
            "tfenv-broker: stopped kernel %s of %s: %s, pod %s",
            kernel_id,
            caller.name,
            state.annotations.get(manifests.LABEL_ENVIRONMENT, "?"),
            name,
        )

    async def gpus(self, caller: Caller) -> dict[str, Any]:
        return {
            "allocation": [],
            "message": "On Kubernetes the scheduler allocates GPUs (nvidia.com/gpu).",
        }

    # -- GPU compatibility (gpu.py; docs/gpus.md, "Kubernetes") ---------------------------

    async def _nodes(self, *, fresh: bool) -> list[dict[str, Any]] | str:
        """The cluster's nodes (reused for :data:`NODES_TTL` unless ``fresh``), or why
        they cannot be read (logged once)."""
        from jupyter_tfenv.backends.kubernetes.api import (  # noqa: PLC0415 - the [kubernetes] extra
            KubernetesUnavailableError,
            NodesUnreadableError,
        )

        now = time.monotonic()
        if not fresh and self._nodes_read is not None and now - self._nodes_read[0] < NODES_TTL:
            return self._nodes_read[1]
        found: list[dict[str, Any]] | str
        try:
            found = await self.api().nodes()
        except (NodesUnreadableError, KubernetesUnavailableError) as err:
            found = err.message
            if self._nodes_read is None or not isinstance(self._nodes_read[1], str):
                self.log.warning("tfenv-broker: GPU compatibility is unknown: %s", found)
        self._nodes_read = (now, found)
        return found

    def _cached_probe(self, env: Environment) -> dict[str, Any] | None:
        """The probe of ``env``'s image as its pods run it, if one ran (never a new pod)."""
        try:
            image = self.image_of(env)
        except BackendError:
            return None
        return self._probes.get((env.id, image))

    async def gpu_verdict(self, env: Environment, *, fresh: bool = False) -> Compatibility:
        """``env``'s GPU compatibility with the cluster's nodes (their GFD labels) and its
        image's cached probe; ``unknown`` when either is missing, never ``ok`` on a guess."""
        if not env.wants_gpu:
            return gpu.cluster_verdict(env, None, [])
        nodes = await self._nodes(fresh=fresh)
        if isinstance(nodes, str):
            return gpu.nodes_unreadable(env.id, nodes)
        return gpu.cluster_verdict(env, self._cached_probe(env), nodes)

    async def gpu_gate(self, env: Environment) -> tuple[Mapping[str, Any], ...]:
        """Before a start: refuse (409, reason ``incompatible``) an environment no GPU node
        can run, unless ``allow_incompatible_gpus``; else the node affinity terms that keep
        the pod to the nodes that can (none for unknown)."""
        if not env.wants_gpu:
            return ()
        verdict = await self.gpu_verdict(env, fresh=True)
        if verdict.state == STATE_INCOMPATIBLE:
            if not self.settings.allow_incompatible_gpus:
                raise BackendError(verdict.message, status=409, reason="incompatible")
            self.log.warning(
                "tfenv-broker: starting '%s' although no GPU node can run it "
                "(allow_incompatible_gpus): %s",
                env.id,
                verdict.message,
            )
        return tuple(gpu.required_terms(verdict))

    async def compatibility(
        self, envs: list[Environment], images: Mapping[str, ImageStatus]
    ) -> dict[str, dict[str, str]]:
        """Each environment's verdict on the cluster (``{state, message}``, the listings'
        field), from the cached probes and the nodes' labels; never a probe pod."""
        result: dict[str, dict[str, str]] = {}
        for env in envs:
            verdict = await self.gpu_verdict(env)
            result[env.id] = {"state": verdict.state, "message": verdict.message}
        return result

    # -- environments --------------------------------------------------------------------

    def image_of(self, env: Environment) -> str:
        """The image reference ``env``'s pods run (``image@digest`` when locked), or a
        409 saying why it cannot run (unlocked under the strict policy, …)."""
        try:
            return manifests.image_reference(
                env,
                self.digest(env),
                require_digest=self.catalog().lock_policy == "strict",
            )
        except TFEnvError as err:
            if isinstance(err, BackendError):
                raise
            raise BackendError(err.message, status=409, reason="not locked") from err

    def image_status_of(self, env: Environment) -> ImageStatus:
        """The environments listing's image entry: the reference the pods run (the nodes
        pull it; the broker cannot see node caches)."""
        try:
            image = self.image_of(env)
        except BackendError as err:
            return ImageStatus(present=None, error=err.message)
        return ImageStatus(
            present=None,
            image_id=image,
            repo_digests=(image,) if "@sha256:" in image else (),
            note="Kubernetes mode: each node pulls the image (pre-pull: docs/kubernetes.md).",
        )

    async def image_status(self, envs: list[Environment]) -> dict[str, ImageStatus]:
        return {env.id: self.image_status_of(env) for env in envs}


def pod_status(p: PodState) -> str:
    """Docker's words for the pod's state, which the servers already understand."""
    if p.running:
        return "running" if p.phase == "Running" else "created"
    return "exited"
