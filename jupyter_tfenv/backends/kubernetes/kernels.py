"""A transitional shim: the broker's old Kubernetes-mode object, on top of
:class:`~jupyter_tfenv.backends.kubernetes.backend.KubernetesBackend`.

``KubernetesKernels(broker)`` keeps the method names and REST shapes ``broker/app.py`` and
``broker/handlers.py`` call today (``self.k8s.start(caller, body)``, ``list_kernels``,
``kernel``, ``delete``, ``runtime()``, ...), builds the backend from the broker's traits
and applies the broker's policy (request validation, environment groups, quotas) above it.
Delete this module when the broker holds a ``KernelBackend`` itself (issue 18); new code
uses :class:`KubernetesBackend` directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.backends.base import BackendError, KernelStart, Usage
from jupyter_tfenv.backends.kubernetes.backend import (
    KEY_RE,
    KubernetesBackend,
    check_key,
    pod_status,
)
from jupyter_tfenv.backends.kubernetes.settings import KubernetesSettings
from jupyter_tfenv.broker import policy
from jupyter_tfenv.broker.policy import BrokerError
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller

if TYPE_CHECKING:
    from jupyter_tfenv.backends.kubernetes.api import KubernetesAPI, PodState

__all__ = ["KEY_RE", "KubernetesBackend", "KubernetesKernels", "check_key", "pod_status"]


@contextmanager
def _as_broker_errors() -> Iterator[None]:
    """The backend's errors as the broker's (the same class once BrokerError is
    BackendError; status, reason, message and logs kept either way)."""
    try:
        yield
    except BackendError as err:
        if isinstance(err, BrokerError):
            raise
        raise BrokerError(
            err.message, status=err.http_status, reason=err.reason, logs=err.logs
        ) from err


class KubernetesKernels:
    """The Kubernetes-mode answers of the broker's kernel endpoints (old names)."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.backend = KubernetesBackend(
            KubernetesSettings.from_config(broker),
            catalog=broker.get_catalog,
            user_lock=broker.user_lock,
            log=broker.log,
            environment_for=lambda caller, env_id: broker.environment_for(
                caller, env_id, status=404
            ),
        )

    def api(self) -> KubernetesAPI:
        return self.backend.api()

    def _admit(self, caller: Caller, *, probe: bool = False) -> Any:
        b = self.broker

        def admit(usage: Usage, new_gpus: int) -> None:
            policy.check_quota(
                caller,
                usage,
                new_gpus,
                max_kernels=b.max_kernels_per_user,
                max_gpus=b.max_gpus_per_user,
                probe=probe,
            )

        return admit

    async def pods(self, caller: Caller) -> list[PodState]:
        with _as_broker_errors():
            return await self.backend.pods(caller)

    async def usage(self, caller: Caller, *, exclude: str | None = None) -> Usage:
        with _as_broker_errors():
            return await self.backend.usage(caller, exclude=exclude)

    def runtime(self) -> dict[str, Any]:
        return self.backend.connection()

    async def start(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        with _as_broker_errors():
            key = check_key(body.pop("key", None))
        req = policy.validate_start_body(body, self.broker.env_allowlist)
        env = self.broker.environment_for(caller, req.environment)
        request = KernelStart(
            kernel_id=req.kernel_id,
            environment=req.environment,
            cwd=req.cwd,
            mount=req.mount,
            env=dict(req.env),
            server=req.server,
            key=key,
        )
        with _as_broker_errors():
            return await self.backend.start(caller, request, env, admit=self._admit(caller))

    async def probe(self, caller: Caller, env: Environment, *, refresh: bool) -> dict[str, Any]:
        with _as_broker_errors():
            return await self.backend.probe(
                caller, env, refresh=refresh, admit=self._admit(caller, probe=True)
            )

    def image_status(self, env: Environment) -> dict[str, Any]:
        status = self.backend.image_status_of(env)
        if status.error is not None:
            return {"present": None, "image_id": None, "error": status.error}
        return status.to_dict()

    def image_of(self, env: Environment) -> str:
        with _as_broker_errors():
            return self.backend.image_of(env)

    async def checkpoints(self, caller: Caller, env_ids: list[str]) -> dict[str, Any]:
        with _as_broker_errors():
            return await self.backend.checkpoints(caller, env_ids)

    async def delete_checkpoint(
        self, caller: Caller, env_id: str, paths: list[str]
    ) -> dict[str, Any]:
        env = self.broker.environment_for(caller, env_id, status=404)
        with _as_broker_errors():
            return await self.backend.delete_checkpoint(caller, env, paths)

    async def list_kernels(self, caller: Caller) -> dict[str, Any]:
        with _as_broker_errors():
            rows = await self.backend.list_kernels(caller)
        return {"kernels": [row.to_dict() for row in rows]}

    async def kernel(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        with _as_broker_errors():
            return (await self.backend.state(caller, kernel_id)).to_dict()

    async def signal(self, caller: Caller, kernel_id: str, signum: int) -> None:
        with _as_broker_errors():
            await self.backend.signal(caller, kernel_id, signum)

    async def logs(self, caller: Caller, kernel_id: str, tail: int) -> dict[str, Any]:
        with _as_broker_errors():
            return {"logs": await self.backend.logs(caller, kernel_id, tail)}

    async def live(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        with _as_broker_errors():
            return await self.backend.live(caller, kernel_id)

    async def delete(self, caller: Caller, kernel_id: str) -> None:
        with _as_broker_errors():
            await self.backend.remove(caller, kernel_id)

    async def close(self) -> None:
        await self.backend.close()
