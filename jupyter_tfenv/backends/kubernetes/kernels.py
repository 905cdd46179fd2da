"""The broker's Kubernetes mode (``c.TFEnvBroker.backend = "kubernetes"``).

The same REST API as the Docker mode (docs/broker.md), answered with kernel pods in one
namespace (docs/kubernetes.md). What differs for the caller:

- ``POST /api/kernels/<id>/runtime`` answers ``{"backend": "kubernetes", "transport":
  "tcp", "ports": {...}}`` and makes no folder: the user's server keeps the connection
  file itself and sends its key with the start (``"key"``), which goes into the pod's
  immutable Secret and nowhere else;
- ``POST /api/kernels`` answers the pod's IP (``"ip"``): the server connects over TCP to
  the fixed ports, which the kernel's NetworkPolicy opens to that server only;
- ``signal``: SIGTERM and SIGKILL delete the pod; an interrupt is the kernel's
  ``interrupt_request`` message, which the server sends itself (no signal crosses the
  API); other signals are refused;
- ``live`` answers that live usage is not read in this mode (no Docker stats).

Users are not Unix accounts here: every kernel pod runs as ``kubernetes_uid`` /
``kubernetes_gid``; users are kept apart by their own claims, Secrets, policies and the
owner label, not by uids. Object names derive from the owner and the kernel id (or the
environment), so one user's start never names another user's objects; every endpoint
that names a kernel answers 404 for a kernel that is not the caller's.

Pods beside kernels: an environment probe is one pod per (environment, image) in flight,
shared by every request that asks meanwhile, and counts as a kernel of the user who
started it against ``max_kernels_per_user`` (429 beyond, as in Docker mode). Checkpoint
helper pods (listing, deletion) run at most ``kubernetes_helper_pods_per_user`` at a time
per user; a request beyond waits for a slot. They are not refused at the kernel limit: the
checkpoint panel must work for a user who runs all their kernels (reading checkpoints in
Docker mode takes no container at all).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import signal
import time
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.backends.docker.probe import (
    PROBE_SCRIPT_PATH,
    no_result_message,
    probe_facts,
    probe_result,
)
from jupyter_tfenv.backends.kubernetes import manifests
from jupyter_tfenv.broker import policy
from jupyter_tfenv.broker.policy import BrokerError
from jupyter_tfenv.catalog.lock import LockFile, LockMissingError, require_lock
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.errors import TFEnvError

if TYPE_CHECKING:
    from jupyter_tfenv.backends.kubernetes.api import KubernetesBackend, PodState
    from jupyter_tfenv.broker.app import TFEnvBroker

#: What a start's ``key`` may be: jupyter_client makes a uuid4 (hex and dashes).
KEY_RE = re.compile(r"^[A-Za-z0-9._-]{16,256}$")

_NOT_YOURS = "No kernel {kernel_id} of yours."


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not KEY_RE.match(key):
        raise BrokerError(
            "'key' (the kernel's HMAC key from its connection file: 16 to 256 letters, digits, "
            "'.', '_' or '-') is required in Kubernetes mode.",
            reason="no key",
        )
    return key


class KubernetesKernels:
    """The Kubernetes-mode answers of the broker's kernel endpoints."""

    def __init__(self, broker: TFEnvBroker) -> None:
        self.broker = broker
        self._backend: KubernetesBackend | None = None
        #: Probes by (environment, image reference as the pods run it).
        self._probes: dict[tuple[str, str], dict[str, Any]] = {}
        #: The probe pod in flight per (environment, image): later requests join it.
        self._probing: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        #: Probe pods running per user ({user: {token: 0}}): they count as kernels.
        self._probes_of: dict[str, dict[object, int]] = {}
        #: Checkpoint helper pods: a slot per user (kubernetes_helper_pods_per_user).
        self._helper_slots: dict[str, asyncio.Semaphore] = {}

    @property
    def log(self) -> Any:
        return self.broker.log

    def backend(self) -> KubernetesBackend:
        if self._backend is None:
            from jupyter_tfenv.backends.kubernetes import api as k8s  # noqa: PLC0415 - needs the [kubernetes] extra

            b = self.broker
            self._backend = k8s.KubernetesBackend(
                k8s.load_api_client(b.kubernetes_config, b.kubernetes_context),
                b.kubernetes_namespace,
                server_namespace=b.kubernetes_server_namespace or None,
                server_selector=self.server_selector(),
                egress_allow=list(b.kubernetes_egress_allow),
                pull_timeout=b.kubernetes_pull_timeout,
                schedule_timeout=b.kubernetes_schedule_timeout,
            )
        return self._backend

    def server_selector(self) -> Any:
        """The kernels' NetworkPolicy peer: the owner's server pods, as the broker's
        kubernetes_server_selector / _label_scheme say they are labelled."""
        b = self.broker
        try:
            return manifests.server_selector_from(
                dict(b.kubernetes_server_selector),
                b.kubernetes_server_label_scheme,
                accept_hashed=b.kubernetes_accept_hashed_server_labels,
            )
        except TFEnvError as err:
            raise BrokerError(err.message, status=500, reason="bad configuration") from err

    async def _call(self, coro: Any) -> Any:
        """Await a backend call; its errors as the broker's (status and message kept)."""
        from jupyter_tfenv.backends.kubernetes.api import KubernetesUnavailableError  # noqa: PLC0415

        try:
            return await coro
        except KubernetesUnavailableError as err:
            raise BrokerError(err.message, status=503, reason="kubernetes unavailable") from err

    # -- which pods are the caller's -----------------------------------------------------

    async def pods(self, caller: Caller) -> list[PodState]:
        """The caller's kernel pods (the exact owner name, not only its label value; pods
        labelled before issue 17 too)."""
        values = {manifests.label_value(caller.name), manifests.legacy_label_value(caller.name)}
        found: dict[str, PodState] = {}
        for value in sorted(values):
            for p in await self._call(self.backend().pods({manifests.LABEL_OWNER: value})):
                if p.annotations.get(manifests.LABEL_OWNER) == caller.name:
                    found[p.name] = p
        return list(found.values())

    async def find(self, caller: Caller, kernel_id: str) -> PodState:
        policy.check_kernel_id(kernel_id)
        state = await self._call(self.backend().find_kernel(caller.name, kernel_id))
        if state is None:
            raise BrokerError(
                _NOT_YOURS.format(kernel_id=kernel_id), status=404, reason="no such kernel"
            )
        return state

    async def usage(self, caller: Caller, *, exclude: str | None = None) -> policy.Usage:
        pods = await self.pods(caller)
        return policy.usage_of(
            (
                p.gpus
                for p in pods
                if p.running and p.annotations.get(manifests.LABEL_KERNEL_ID) != exclude
            ),
            list(self._probes_of.get(caller.name, {}).values()),
        )

    # -- endpoints -----------------------------------------------------------------------

    def runtime(self) -> dict[str, Any]:
        return {
            "backend": "kubernetes",
            "transport": "tcp",
            "ports": manifests.KernelPorts().by_name(),
        }

    def _digest(self, env: Environment) -> str | None:
        """The lock file's digest of the environment's tag; strict: required."""
        catalog = self.broker.get_catalog()
        if catalog.lock_policy == "off":
            return None
        path = catalog.lock_path()
        lock = LockFile.load(path) if path is not None else None
        if catalog.lock_policy == "strict":
            try:
                require_lock(env, lock)
            except LockMissingError as err:
                raise BrokerError(err.message, status=409, reason="not locked") from err
        return lock.get(env.image) if lock is not None else None

    def kernel_start(self, caller: Caller, req: policy.StartRequest, env: Environment) -> Any:
        b = self.broker
        try:
            return manifests.KernelStart(
                env=env,
                username=caller.name,
                uid=caller.uid,
                gid=caller.gid,
                kernel_id=req.kernel_id,
                namespace=b.kubernetes_namespace,
                server_name=req.server,
                digest=self._digest(env),
                require_digest=b.get_catalog().lock_policy == "strict",
                storage=manifests.StorageOptions(
                    storage_class=b.kubernetes_storage_class or None,
                    size=b.kubernetes_storage_size,
                    access_modes=tuple(b.kubernetes_storage_access_modes),
                ),
                default_memory=b.default_memory or None,
                environment=req.env,
            )
        except TFEnvError as err:
            raise BrokerError(err.message, status=400, reason="not a pod") from err

    async def start(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        from jupyter_tfenv.backends.kubernetes.api import PodStartError  # noqa: PLC0415

        body = dict(body)
        key = check_key(body.pop("key", None))
        req = policy.validate_start_body(body, self.broker.env_allowlist)
        env = self.broker.environment_for(caller, req.environment)
        start = await asyncio.to_thread(self.kernel_start, caller, req, env)
        try:
            # An ambiguous server label is refused before anything is made.
            self.server_selector()(caller.name, req.server)
        except TFEnvError as err:
            raise BrokerError(err.message, status=400, reason="ambiguous name") from err
        try:
            new_gpus = manifests.gpu_count(env)
        except TFEnvError as err:
            raise BrokerError(err.message, status=400, reason="not a pod") from err
        async with self.broker.user_lock(caller.name):
            usage = await self.usage(caller, exclude=req.kernel_id)
            policy.check_quota(
                caller,
                usage,
                new_gpus,
                max_kernels=self.broker.max_kernels_per_user,
                max_gpus=self.broker.max_gpus_per_user,
            )
            try:
                pod = await self._call(
                    self.backend().start(
                        start, key, start_timeout=self.broker.kubernetes_start_timeout
                    )
                )
            except PodStartError as err:
                raise BrokerError(
                    err.message,
                    status=err.http_status,
                    reason="pod did not start",
                    logs=_failure_logs(err),
                ) from err
        self.log.info(
            "tfenv-broker: started kernel %s for %s: %s in pod %s/%s (%s) on node %s%s",
            req.kernel_id,
            caller.name,
            env.id,
            start.namespace,
            pod.name,
            pod.ip,
            pod.node or "?",
            f", image pulled in {pod.pull_seconds:.1f} s" if pod.pull_seconds else "",
        )
        return {
            "kernel_id": req.kernel_id,
            "container_id": pod.name,
            "name": pod.name,
            "image_id": pod.image,
            "environment": env.id,
            "backend": "kubernetes",
            "transport": "tcp",
            "ip": pod.ip,
            "ports": pod.ports,
            "checkpoints": {
                "storage": "kubernetes",
                "claim": pod.claim or manifests.pvc_name(start),
                "namespace": start.namespace,
                "container_path": manifests.CONTAINER_CHECKPOINT_DIR,
            },
        }

    # -- checkpoints: read and deleted by short pods on the user's claims ---------------

    async def _helper(
        self, caller: Caller, env: Environment, call: str, args: dict[str, Any], *, read_only: bool
    ) -> Any:
        from jupyter_tfenv.backends.kubernetes.api import PodStartError  # noqa: PLC0415
        from jupyter_tfenv.checkpoints.helper import _HELPER_SCRIPT  # noqa: PLC0415

        claim, _ = await self._claim(caller, env)
        # A ReadWriteOnce claim is usable on one node at a time: go where a kernel of this
        # user and environment holds it.
        node = next(
            (
                p.node
                for p in await self.pods(caller)
                if p.running and p.node and p.annotations.get(manifests.LABEL_ENVIRONMENT) == env.id
            ),
            None,
        )
        pod = manifests.helper_pod(
            name=manifests.dns_label("tfenv-ckpt", caller.name, env.id, secrets.token_hex(4)),
            namespace=self.broker.kubernetes_namespace,
            image=self.image_of(env),
            command=[env.python, "-c", _HELPER_SCRIPT, json.dumps({"call": call, **args})],
            claims=[claim],
            uid=caller.uid,
            gid=caller.gid,
            username=caller.name,
            read_only=read_only,
            node=node,
        )
        slot = self._helper_slots.get(caller.name)
        if slot is None:
            slot = self._helper_slots[caller.name] = asyncio.Semaphore(
                max(1, self.broker.kubernetes_helper_pods_per_user)
            )
        async with slot:  # at most N of this user's helper pods at a time; others wait
            try:
                return await self._call(self.backend().run_helper(pod))
            except PodStartError as err:
                raise BrokerError(
                    err.message, status=err.http_status, reason="checkpoint helper", logs=err.events
                ) from err

    async def _claim(self, caller: Caller, env: Environment) -> tuple[str, bool]:
        """The caller's claim for ``env`` (its name, whether it exists); 409 when the claim
        under their name is someone else's."""
        from jupyter_tfenv.backends.kubernetes.api import PodStartError  # noqa: PLC0415

        try:
            name, exists = await self._call(self.backend().resolve_claim(caller.name, env.id))
        except PodStartError as err:
            raise BrokerError(err.message, status=err.http_status, reason="not your claim") from err
        return str(name), bool(exists)

    async def probe(self, caller: Caller, env: Environment, *, refresh: bool) -> dict[str, Any]:
        """What the environment's image holds (python, TensorFlow, its CUDA/cuDNN build),
        from a short probe pod; kept per image reference. The pod gets no GPU (it would
        hold one and wait for a free one): the kernel's own view shows the GPUs."""
        image = self.image_of(env)
        cached = self._probes.get((env.id, image))
        if cached is not None and not refresh:
            return {"state": "ok", **cached, "cached": True}
        running = self._probing.get((env.id, image))
        if running is None or running.done():
            # A probe pod is a kernel while it runs: counted, under the user's lock,
            # against the same quota; one per (environment, image) at a time, shared.
            async with self.broker.user_lock(caller.name):
                running = self._probing.get((env.id, image))
                if running is None or running.done():
                    policy.check_quota(
                        caller,
                        await self.usage(caller),
                        0,
                        max_kernels=self.broker.max_kernels_per_user,
                        max_gpus=self.broker.max_gpus_per_user,
                        probe=True,
                    )
                    token = object()
                    self._probes_of.setdefault(caller.name, {})[token] = 0

                    def release(_: Any, name: str = caller.name, token: object = token) -> None:
                        mine = self._probes_of.get(name, {})
                        mine.pop(token, None)
                        if not mine:
                            self._probes_of.pop(name, None)

                    running = asyncio.ensure_future(self._run_probe(caller, env, image))
                    running.add_done_callback(release)
                    self._probing[(env.id, image)] = running
        result = await asyncio.shield(running)
        return {"state": "ok", **result}

    async def _run_probe(self, caller: Caller, env: Environment, image: str) -> dict[str, Any]:
        from jupyter_tfenv.backends.kubernetes.api import PodStartError  # noqa: PLC0415

        started = time.monotonic()
        pod = manifests.helper_pod(
            name=manifests.dns_label("tfenv-probe", env.id, secrets.token_hex(4)),
            namespace=self.broker.kubernetes_namespace,
            image=image,
            command=[env.python, "-c", _PROBE_LAUNCH, PROBE_SCRIPT_PATH.read_text()],
            claims=[],
            uid=caller.uid,
            gid=caller.gid,
            username=caller.name,
            read_only=True,
            scratch=_PROBE_DIR,
            component="probe",
        )
        try:
            out = await self._call(
                self.backend().run_helper(pod, timeout=self.broker.probe_timeout, raw=True)
            )
        except PodStartError as err:
            raise BrokerError(
                f"The probe of '{env.id}' failed: {err.message}",
                status=err.http_status,
                reason="probe failed",
                logs=_failure_logs(err),
            ) from err
        facts = _probe_facts(env, out)
        gpu_state = (
            {
                "state": "unknown",
                "message": "Kubernetes mode probes without a GPU; the panel's kernel view "
                "shows the GPUs a running kernel sees.",
            }
            if env.wants_gpu
            else {
                "state": "not_requested",
                "message": f"'{env.id}' is a CPU environment: its kernels see no GPU.",
            }
        )
        result = probe_result(env, facts, gpu_state, image, started)
        self._probes[(env.id, image)] = result
        return result

    def image_status(self, env: Environment) -> dict[str, Any]:
        """The environments listing's image entry: the reference the pods run (the
        nodes pull it; the broker cannot see node caches)."""
        try:
            image = self.image_of(env)
        except BrokerError as err:
            return {"present": None, "image_id": None, "error": err.message}
        return {
            "present": None,
            "image_id": image,
            "repo_digests": [image] if "@sha256:" in image else [],
            "size": None,
            "note": "Kubernetes mode: each node pulls the image (pre-pull: docs/kubernetes.md).",
        }

    def image_of(self, env: Environment) -> str:
        """The image reference ``env``'s pods run (``image@digest`` when locked), or a
        BrokerError saying why it cannot run (unlocked under the strict policy, …)."""
        try:
            return manifests.image_reference(
                env,
                self._digest(env),
                require_digest=self.broker.get_catalog().lock_policy == "strict",
            )
        except TFEnvError as err:
            raise BrokerError(err.message, status=409, reason="not locked") from err

    async def checkpoints(self, caller: Caller, env_ids: list[str]) -> dict[str, Any]:
        """``{env: {"claim", "namespace", "inventory"}}`` of the caller's claims."""
        out: dict[str, Any] = {}
        for env_id in env_ids:
            try:
                env = self.broker.environment_for(caller, env_id, status=404)
            except BrokerError:
                if len(env_ids) == 1:
                    raise
                continue  # not this user's to use (or gone from the catalog): not listed
            claim, exists = await self._claim(caller, env)
            if not exists:
                inventory: Any = {"exists": False, "entries": [], "state": {}, "checks": {}}
            else:
                [inventory] = await self._helper(
                    caller, env, "_inventory", {"roots": ["/v/0"]}, read_only=True
                )
            out[env.id] = {
                "claim": claim,
                "namespace": self.broker.kubernetes_namespace,
                "inventory": inventory,
            }
        return {"environments": out}

    async def delete_checkpoint(
        self, caller: Caller, env_id: str, paths: list[str]
    ) -> dict[str, Any]:
        env = self.broker.environment_for(caller, env_id, status=404)
        _, exists = await self._claim(caller, env)
        if not exists:
            raise BrokerError(f"No checkpoints of '{env.id}' of yours.", status=404)
        result = await self._helper(
            caller, env, "_delete", {"root": "/v/0", "paths": paths}, read_only=False
        )
        return dict(result)

    async def list_kernels(self, caller: Caller) -> dict[str, Any]:
        kernels = [
            {
                "kernel_id": p.annotations.get(manifests.LABEL_KERNEL_ID),
                "container_id": p.name,
                "name": p.name,
                "environment": p.annotations.get(manifests.LABEL_ENVIRONMENT),
                "status": _status(p),
                "started_at": p.created,
                "gpus": p.gpus,
                "server": p.annotations.get(manifests.LABEL_HUB_SERVER, ""),
            }
            for p in await self.pods(caller)
        ]
        return {"kernels": kernels}

    async def kernel(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        p = await self.find(caller, kernel_id)
        return {
            "kernel_id": kernel_id,
            "container_id": p.name,
            "name": p.name,
            "status": _status(p),
            "running": p.running,
            "exit_code": p.exit_code,
            "oom_killed": p.oom_killed,
            "reason": p.reason,
            "started_at": p.created,
            "environment": p.annotations.get(manifests.LABEL_ENVIRONMENT),
            "image_id": p.image,
            "backend": "kubernetes",
            "ip": p.ip,
            "workdir": "",
            "runtime_dir": "",
        }

    async def signal(self, caller: Caller, kernel_id: str, signum: int) -> None:
        p = await self.find(caller, kernel_id)
        if signum in (signal.SIGTERM, signal.SIGKILL):
            grace = 0 if signum == signal.SIGKILL else 5
            await self._call(self.backend().delete(p.name, grace=grace))
            return
        raise BrokerError(
            f"Kubernetes mode delivers no signal {signum} to a kernel pod: interrupt with the "
            "kernel's interrupt_request message (tfenv's servers do), stop it with SIGTERM.",
            status=400,
            reason="signal not delivered",
        )

    async def logs(self, caller: Caller, kernel_id: str, tail: int) -> dict[str, Any]:
        p = await self.find(caller, kernel_id)
        return {"logs": await self._call(self.backend().logs(p.name, tail))}

    async def live(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        p = await self.find(caller, kernel_id)
        # The pod's state and limits; no readings (the broker has no access to the node's
        # runtime: the cluster's metrics show usage).
        return {
            "status": _status(p),
            "running": p.running,
            "exit_code": p.exit_code,
            "oom_killed": p.oom_killed,
            "container": p.name,
            "node": p.node,
            "cpu_percent": None,
            "memory_used": None,
            "memory_limit": p.memory_limit,
            "cpu_limit": p.cpu_limit,
            "readings": "unavailable in Kubernetes mode",
        }

    async def delete(self, caller: Caller, kernel_id: str) -> None:
        state = await self.find(caller, kernel_id)
        name = state.name
        await self._call(
            self.backend().delete(
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


def _status(p: PodState) -> str:
    """Docker's words for the pod's state, which the servers already understand."""
    if p.running:
        return "running" if p.phase == "Running" else "created"
    return "exited"


def _failure_logs(err: Any) -> str:
    """What the error dialog shows under the message: the kernel's last lines (when it
    got that far) and the pod's events."""
    parts = [err.logs.rstrip()] if err.logs.strip() else []
    if err.events.strip():
        parts.append(f"Events of the kernel pod:\n{err.events}")
    return "\n\n".join(parts)


#: The probe script wants a file of its own (it re-runs itself in a child process): the
#: pod's root is read-only, so it is written into a small emptyDir first.
_PROBE_DIR = "/tfenv/probe"
_PROBE_LAUNCH = (
    "import os, sys\n"
    f"p = '{_PROBE_DIR}/probe.py'\n"
    "open(p, 'w').write(sys.argv[1])\n"
    "os.execv(sys.executable, [sys.executable, p])\n"
)


def _probe_facts(env: Environment, out: str) -> dict[str, Any]:
    facts = probe_facts(out)
    if facts is None:
        raise BrokerError(
            no_result_message(env), status=500, reason="probe failed", logs=out[-2000:]
        )
    return facts
