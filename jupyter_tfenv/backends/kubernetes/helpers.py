"""Short pods beside the kernels: environment probes and checkpoint helpers
(:class:`PodHelpers`, a part of ``backends.kubernetes.backend.KubernetesBackend``).

- A probe pod runs the image's probe script (Python, TensorFlow, its CUDA/cuDNN build)
  without a GPU, or, for a GPU environment with ``settings.probe_gpu``, with one GPU for
  its seconds (then it also says which GPUs TensorFlow sees; where the user's GPU quota
  is full or no GPU is free within ``settings.schedule_timeout`` it runs without one and
  says why); one per (environment, image) at a time, shared by every request that asks
  meanwhile, kept per image reference. It counts as a kernel of the user who started it,
  and its GPU as theirs, while it runs (the ``admit`` hook, under the user's lock).
- A checkpoint helper pod lists or deletes entries on the user's claim of an environment,
  on the node where a kernel of that user and environment holds it (ReadWriteOnce); at
  most ``settings.helper_pods_per_user`` of a user's at a time, a request beyond waits.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.backends.base import Admit, BackendError, Usage
from jupyter_tfenv.backends.kubernetes import manifests
from jupyter_tfenv.backends.kubernetes.tensorboard import PodTensorBoards
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.kernels.probe_output import (
    PROBE_SCRIPT_PATH,
    no_result_message,
    probe_facts,
    probe_result,
)

if TYPE_CHECKING:
    from jupyter_tfenv.backends.kubernetes.api import KubernetesAPI, PodState
    from jupyter_tfenv.backends.kubernetes.settings import KubernetesSettings

#: The probe script wants a file of its own (it re-runs itself in a child process): the
#: pod's root is read-only, so it is written into a small emptyDir first.
PROBE_DIR = "/tfenv/probe"
PROBE_LAUNCH = (
    "import os, sys\n"
    f"p = '{PROBE_DIR}/probe.py'\n"
    "open(p, 'w').write(sys.argv[1])\n"
    "os.execv(sys.executable, [sys.executable, p])\n"
)


def helper_script() -> str:
    """The checkpoint helper's script (checkpoints' own, run in the image's Python)."""
    from jupyter_tfenv.checkpoints.helper import _HELPER_SCRIPT  # noqa: PLC0415

    return str(_HELPER_SCRIPT)


def failure_logs(err: Any) -> str:
    """What the error dialog shows under the message: the kernel's last lines (when it
    got that far) and the pod's events."""
    parts = [err.logs.rstrip()] if err.logs.strip() else []
    if err.events.strip():
        parts.append(f"Events of the kernel pod:\n{err.events}")
    return "\n\n".join(parts)


class PodHelpers(PodTensorBoards):
    """Probe and checkpoint helper pods (mixed into ``KubernetesBackend``), and the
    TensorBoard pods (:mod:`.tensorboard`)."""

    # What the backend provides.
    settings: KubernetesSettings
    user_lock: Callable[[str], AbstractAsyncContextManager[Any]]
    _environment_for: Callable[[Caller, str], Environment] | None
    catalog: Callable[[], Any]

    def api(self) -> KubernetesAPI:
        raise NotImplementedError

    async def call(self, coro: Any) -> Any:
        raise NotImplementedError

    async def pods(self, caller: Caller) -> list[PodState]:
        raise NotImplementedError

    async def usage(self, caller: Caller, *, exclude: str | None = None) -> Usage:
        raise NotImplementedError

    def image_of(self, env: Environment) -> str:
        raise NotImplementedError

    def __init__(self) -> None:
        #: Probes by (environment, image reference as the pods run it).
        self._probes: dict[tuple[str, str], dict[str, Any]] = {}
        #: The probe pod in flight per (environment, image): later requests join it.
        self._probing: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        #: Probe pods running per user ({user: {token: 0}}): they count as kernels.
        self._probes_of: dict[str, dict[object, int]] = {}
        #: Checkpoint helper pods: a slot per user (settings.helper_pods_per_user).
        self._helper_slots: dict[str, asyncio.Semaphore] = {}

    def probe_gpus(self, caller: Caller) -> list[int]:
        """The GPUs of each probe pod running for the caller (0, or 1 with probe_gpu)."""
        return list(self._probes_of.get(caller.name, {}).values())

    # -- environment probes --------------------------------------------------------------

    async def probe(
        self,
        caller: Caller,
        env: Environment,
        *,
        refresh: bool = False,
        admit: Admit | None = None,
    ) -> dict[str, Any]:
        """What the environment's image holds (python, TensorFlow, its CUDA/cuDNN build),
        from a short probe pod; kept per image reference. The pod gets no GPU unless
        ``settings.probe_gpu`` (it holds one for its seconds, counted as the user's)."""
        image = self.image_of(env)
        cached = self._probes.get((env.id, image))
        if cached is not None and not refresh:
            return {"state": "ok", **cached, "cached": True}
        running = self._probing.get((env.id, image))
        if running is None or running.done():
            # A probe pod is a kernel while it runs: counted, under the user's lock,
            # against the same quota; one per (environment, image) at a time, shared.
            async with self.user_lock(caller.name):
                running = self._probing.get((env.id, image))
                if running is None or running.done():
                    gpus = 1 if self.settings.probe_gpu and env.wants_gpu else 0
                    no_gpu = ""
                    if admit is not None:
                        usage = await self.usage(caller)
                        try:
                            admit(usage, gpus)
                        except TFEnvError as err:
                            if not gpus:
                                raise
                            admit(usage, 0)  # the kernel limit still holds
                            gpus, no_gpu = 0, f"the user's GPU limit leaves none ({err})"
                    token = object()
                    self._probes_of.setdefault(caller.name, {})[token] = gpus

                    def release(_: Any, name: str = caller.name, token: object = token) -> None:
                        mine = self._probes_of.get(name, {})
                        mine.pop(token, None)
                        if not mine:
                            self._probes_of.pop(name, None)

                    running = asyncio.ensure_future(
                        self._run_probe(caller, env, image, gpus=gpus, no_gpu=no_gpu)
                    )
                    running.add_done_callback(release)
                    self._probing[(env.id, image)] = running
        result = await asyncio.shield(running)
        return {"state": "ok", **result}

    async def _run_probe(
        self, caller: Caller, env: Environment, image: str, *, gpus: int = 0, no_gpu: str = ""
    ) -> dict[str, Any]:
        started = time.monotonic()
        if gpus:
            try:
                out = await self._probe_output(caller, env, image, gpus)
            except BackendError as err:
                if err.http_status != 409:  # not "no GPU free now"
                    raise
                why = err.message.split("now: ", 1)[-1]  # the scheduler's words
                gpus = 0
                no_gpu = f"no GPU was free within {self.settings.schedule_timeout:g} s ({why})"
                out = await self._probe_output(caller, env, image, 0)
        else:
            out = await self._probe_output(caller, env, image, 0)
        facts = probe_facts(out)
        if facts is None:
            raise BackendError(
                no_result_message(env), status=500, reason="probe failed", logs=out[-2000:]
            )
        result = probe_result(env, facts, probe_gpu_state(env, facts, gpus, no_gpu), image, started)
        self._probes[(env.id, image)] = result
        return result

    async def _probe_output(self, caller: Caller, env: Environment, image: str, gpus: int) -> str:
        """The output of one probe pod of ``image`` (with ``gpus`` GPUs)."""
        from jupyter_tfenv.backends.kubernetes.api import PodStartError  # noqa: PLC0415

        pod = manifests.helper_pod(
            name=manifests.dns_label("tfenv-probe", env.id, secrets.token_hex(4)),
            namespace=self.settings.namespace,
            image=image,
            command=[env.python, "-c", PROBE_LAUNCH, PROBE_SCRIPT_PATH.read_text()],
            claims=[],
            uid=caller.uid,
            gid=caller.gid,
            username=caller.name,
            read_only=True,
            scratch=PROBE_DIR,
            component="probe",
            gpus=gpus,
            env=env,
        )
        try:
            out = await self.call(
                self.api().run_helper(
                    pod,
                    timeout=self.settings.probe_timeout,
                    raw=True,
                    schedule_timeout=self.settings.schedule_timeout if gpus else None,
                )
            )
        except PodStartError as err:
            raise BackendError(
                f"The probe of '{env.id}' failed: {err.message}",
                status=err.http_status,
                reason="probe failed",
                logs=failure_logs(err),
            ) from err
        return str(out)

    # -- checkpoints: read and deleted by short pods on the user's claims ---------------

    def _environment(self, caller: Caller, env_id: str) -> Environment:
        if self._environment_for is not None:
            return self._environment_for(caller, env_id)
        env: Environment = self.catalog().get(env_id)
        return env

    async def checkpoints(self, caller: Caller, env_ids: list[str]) -> dict[str, Any]:
        """``{"environments": {env: {"claim", "namespace", "inventory"}}}`` of the
        caller's claims. An environment the caller may not use is skipped (refused when
        it is the only one asked for)."""
        out: dict[str, Any] = {}
        for env_id in env_ids:
            try:
                env = self._environment(caller, env_id)
            except TFEnvError:
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
                "namespace": self.settings.namespace,
                "inventory": inventory,
            }
        return {"environments": out}

    async def delete_checkpoint(
        self, caller: Caller, env: Environment, paths: list[str]
    ) -> dict[str, Any]:
        _, exists = await self._claim(caller, env)
        if not exists:
            raise BackendError(f"No checkpoints of '{env.id}' of yours.", status=404)
        result = await self._helper(
            caller, env, "_delete", {"root": "/v/0", "paths": paths}, read_only=False
        )
        return dict(result)

    async def _claim(self, caller: Caller, env: Environment) -> tuple[str, bool]:
        """The caller's claim for ``env`` (its name, whether it exists); 409 when the claim
        under their name is someone else's."""
        from jupyter_tfenv.backends.kubernetes.api import PodStartError  # noqa: PLC0415

        try:
            name, exists = await self.call(self.api().resolve_claim(caller.name, env.id))
        except PodStartError as err:
            raise BackendError(
                err.message, status=err.http_status, reason="not your claim"
            ) from err
        return str(name), bool(exists)

    async def _helper(
        self, caller: Caller, env: Environment, call: str, args: dict[str, Any], *, read_only: bool
    ) -> Any:
        from jupyter_tfenv.backends.kubernetes.api import PodStartError  # noqa: PLC0415

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
            namespace=self.settings.namespace,
            image=self.image_of(env),
            command=[env.python, "-c", helper_script(), json.dumps({"call": call, **args})],
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
                max(1, self.settings.helper_pods_per_user)
            )
        async with slot:  # at most N of this user's helper pods at a time; others wait
            try:
                return await self.call(self.api().run_helper(pod))
            except PodStartError as err:
                raise BackendError(
                    err.message, status=err.http_status, reason="checkpoint helper", logs=err.events
                ) from err


def probe_gpu_state(
    env: Environment, facts: dict[str, Any], gpus: int, no_gpu: str
) -> dict[str, str]:
    """The probe's ``gpu_state``: what a probe pod with ``gpus`` GPUs tells of the GPUs
    TensorFlow sees (``no_gpu``: why a GPU environment's probe ran without one)."""
    if not env.wants_gpu:
        return {
            "state": "not_requested",
            "message": f"'{env.id}' is a CPU environment: its kernels see no GPU.",
        }
    if not gpus:
        why = (
            f"this probe ran without a GPU: {no_gpu}"
            if no_gpu
            else "Kubernetes mode probes without a GPU unless "
            "c.TFEnvBroker.kubernetes_probe_gpu = True (a probe then holds one GPU for its "
            "seconds)"
        )
        return {
            "state": "unknown",
            "message": f"{why[0].upper()}{why[1:]}; the panel's kernel view shows the GPUs a "
            "running kernel sees.",
        }
    if facts.get("tensorflow") is None:
        error = (facts.get("errors") or {}).get("tensorflow", "TensorFlow is not in the image")
        return {
            "state": "unknown",
            "message": f"TensorFlow could not be imported in the image ({error}), so the "
            "probe cannot tell whether it sees the GPU.",
        }
    seen = facts.get("gpus") or []
    if seen:
        names = ", ".join(str(g.get("name") or g.get("device")) for g in seen)
        return {
            "state": "ok",
            "message": f"TensorFlow sees {len(seen)} GPU(s) in a probe pod given {gpus}: {names}.",
        }
    build = facts.get("build") or {}
    message = (
        f"The probe pod got {gpus} GPU ({manifests.GPU_RESOURCE}), but TensorFlow "
        f"{facts['tensorflow']} sees none."
    )
    if build.get("is_cuda_build") is False:
        message += (
            " This TensorFlow is a CPU-only build (is_cuda_build=false): use a GPU image "
            "such as tensorflow/tensorflow:X.Y.Z-gpu-jupyter."
        )
    else:
        message += (
            " Check the node's NVIDIA driver and container toolkit (the device plugin's "
            "pods) and that the driver supports the image's CUDA "
            f"{build.get('cuda_version') or ''}.".rstrip()
        )
    if (facts.get("errors") or {}).get("gpus"):
        message += f" TensorFlow said: {facts['errors']['gpus']}"
    return {"state": "not_visible", "message": message}
