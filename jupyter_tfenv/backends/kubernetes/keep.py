"""Kernel pods that outlive their server (``c.TFEnvApp.keep_kernels_on_stop``): kept,
adopted, swept (docs/kubernetes.md, "Kernels that outlive the server").

- :meth:`PodKeeping.keep`: a stopping server keeps its kernel; the pod gets the annotation
  :data:`KEPT_AT` (the time, ISO 8601 UTC), as Docker's runtime folder gets its
  ``tfenv-kept.json``.
- :meth:`PodKeeping.adopt`: the next server of the same user takes the running pod over:
  the answer is how to reach it (pod IP, ports) with the key read from the kernel's own
  Secret, which the broker hands only to the pod's owner (404 for anyone else), over its
  authenticated API, as the server sent it at the start. The annotation goes: the pod is
  held again.
- :meth:`PodKeeping.kept_kernels` and :meth:`PodKeeping.remove_kept`: the broker's sweep
  (:mod:`jupyter_tfenv.broker.sweep`) removes pods kept longer than ``adopt_timeout``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.backends.base import BackendError, KernelInfo, KernelNotFound
from jupyter_tfenv.backends.kubernetes import manifests
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.labels import LABEL_PREFIX

if TYPE_CHECKING:
    from jupyter_tfenv.backends.kubernetes.api import KubernetesAPI, PodState

#: The pod annotation of a kept kernel: when its server stopped and kept it (ISO 8601 UTC).
KEPT_AT = f"{LABEL_PREFIX}.kept-at"
#: The pod annotation of a kept warm-pool pod that a notebook took: the kernel id it ran
#: under in its server (the pod's own names the pool kernel's id). The next server adopts
#: it under that id, so that the notebook finds its kernel again.
HELD_AS = f"{LABEL_PREFIX}.held-as"
ISO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True)
class KeptKernel:
    """A kernel its server kept and no server adopted since (for the broker's sweep)."""

    owner: str
    kernel_id: str
    name: str
    kept_at: float
    #: What the backend needs to remove it (a pod's Secret name, a container's uid).
    handle: Any = None


def iso(now: float) -> str:
    return datetime.fromtimestamp(now, timezone.utc).strftime(ISO_FORMAT)


def kept_since(annotations: dict[str, str]) -> float | None:
    """The time of a pod's kept annotation (None: not kept, or unreadable)."""
    raw = annotations.get(KEPT_AT)
    if not raw:
        return None
    try:
        at = datetime.strptime(raw, ISO_FORMAT)
    except ValueError:
        return None
    return at.replace(tzinfo=timezone.utc).timestamp()


def connection_of(secret: dict[str, Any] | None) -> dict[str, Any] | None:
    """The connection file a kernel's Secret holds (None: no such Secret or no file)."""
    data = ((secret or {}).get("data") or {}).get(manifests.CONNECTION_FILE)
    if not data:
        return None
    try:
        value = json.loads(base64.b64decode(data))
    except (ValueError, binascii.Error):
        return None
    return value if isinstance(value, dict) else None


class PodKeeping:
    """The keep/adopt/sweep part of :class:`~.backend.KubernetesBackend`."""

    # Provided by KubernetesBackend.
    def api(self) -> KubernetesAPI:  # pragma: no cover - overridden
        raise NotImplementedError

    async def call(self, coro: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    async def pod(self, caller: Caller, kernel_id: str) -> PodState:  # pragma: no cover
        raise NotImplementedError

    async def find(self, caller: Caller, kernel_id: str) -> KernelInfo | None:  # pragma: no cover
        raise NotImplementedError

    async def _annotate(self, name: str, value: str | None, **more: str | None) -> None:
        api = self.api()
        patch = {"metadata": {"annotations": {KEPT_AT: value, **more}}}
        await self.call(api._call(api.core.patch_namespaced_pod, name, api.namespace, patch))

    async def keep(
        self, caller: Caller, kernel_id: str, *, now: float, held_as: str | None = None
    ) -> dict[str, Any]:
        """The caller's server stops and keeps this kernel running: its pod is marked
        (``held_as``: a taken pool pod's kernel id in that server, :data:`HELD_AS`)."""
        p = await self.pod(caller, kernel_id)
        if not p.running:
            raise BackendError(
                f"Kernel {kernel_id} is not running (its pod is {p.phase}): nothing to keep.",
                status=409,
                reason="not running",
            )
        await self._annotate(p.name, iso(now), **({HELD_AS: held_as} if held_as else {}))
        answer = {"kernel_id": kernel_id, "kept_at": iso(now)}
        return {**answer, "held_as": held_as} if held_as else answer

    async def adopt(self, caller: Caller, kernel_id: str) -> KernelInfo:
        """The caller's new server takes its running pod over: how to reach it, with the
        key from the pod's Secret (checked to be the caller's, as the pod)."""
        p = await self.pod(caller, kernel_id)  # 404 unless the caller's
        if not p.running or not p.ip:
            raise BackendError(
                f"Kernel {kernel_id} cannot be adopted: its pod is {p.phase or 'gone'}.",
                status=409,
                reason="not running",
            )
        api = self.api()
        secret_name = p.secret or manifests.kernel_secret_name(caller.name, kernel_id)
        secret = await self.call(
            api._call(api.core.read_namespaced_secret, secret_name, api.namespace, missing_ok=True)
        )
        annotations = ((secret or {}).get("metadata") or {}).get("annotations") or {}
        conn = connection_of(secret)
        if (
            conn is None
            or annotations.get(manifests.LABEL_OWNER) != caller.name
            or annotations.get(manifests.LABEL_KERNEL_ID) != kernel_id
        ):
            raise BackendError(
                f"Kernel {kernel_id} cannot be adopted: its connection Secret "
                f"{api.namespace}/{secret_name} is gone or not its own. Shut it down and "
                "start a new kernel.",
                status=409,
                reason="no connection secret",
            )
        info = await self.find(caller, kernel_id)
        if info is None:
            raise KernelNotFound(kernel_id)
        kept = kept_since(p.annotations)
        if KEPT_AT in p.annotations:
            await self._annotate(p.name, None)  # held again: the sweep leaves it alone
        ports = {
            ch: int(conn[f"{ch}_port"])
            for ch in ("shell", "iopub", "stdin", "control", "hb")
            if f"{ch}_port" in conn
        }
        env_id = p.annotations.get(manifests.LABEL_ENVIRONMENT, "")
        claim, _ = await self.call(api.resolve_claim(caller.name, env_id))
        return dataclasses.replace(
            info,
            extra={
                # Where its checkpoints are, as the start answered (the panel's view).
                "checkpoints": {
                    "storage": "kubernetes",
                    "claim": claim,
                    "namespace": api.namespace,
                    "container_path": manifests.CONTAINER_CHECKPOINT_DIR,
                },
                **info.extra,
                "transport": "tcp",
                "ports": ports,
                "key": str(conn.get("key") or ""),
                "signature_scheme": str(conn.get("signature_scheme") or "hmac-sha256"),
                # An encrypted pod's CurveZMQ keys, as its Secret holds them.
                **{k: str(conn[k]) for k in ("curve_publickey", "curve_secretkey") if k in conn},
                "kept_at": kept,
                # A taken pool pod: the kernel id its notebook knows (None: its own).
                "held_as": p.annotations.get(HELD_AS) or None,
            },
        )

    async def kept_kernels(self) -> list[KeptKernel]:
        """Every user's kernel pods that carry a kept annotation (no server holds them)."""
        found = []
        for p in await self.call(self.api().pods({})):
            at = kept_since(p.annotations)
            if at is None:
                continue
            found.append(
                KeptKernel(
                    owner=p.annotations.get(manifests.LABEL_OWNER, ""),
                    kernel_id=p.annotations.get(manifests.LABEL_KERNEL_ID, ""),
                    name=p.name,
                    kept_at=at,
                    handle=p.secret,
                )
            )
        return found

    async def remove_kept(self, kept: KeptKernel) -> bool:
        """Remove a kept pod, unless a server adopted it meanwhile (its annotation went,
        or changed); whether it was removed."""
        api = self.api()
        now = await self.call(api.state(kept.name))
        if now is None or kept_since(now.annotations) != kept.kept_at:
            return False
        await self.call(api.delete(now.name, secret=now.secret or kept.handle or None))
        return True
