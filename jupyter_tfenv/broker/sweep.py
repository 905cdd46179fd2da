"""Kept kernels at the broker: keeping and adopting them, and the sweep of those whose user
never came back (docs/broker.md, the endpoints and settings; docs/jupyterhub.md).

A single-user server with ``c.TFEnvApp.keep_kernels_on_stop`` leaves its kernels running
when it stops and marks them *kept* with the time: in Docker mode the ``tfenv-kept.json``
marker in the kernel's runtime folder (the server writes it), in Kubernetes mode the pod's
``org.jupyter.tfenv.kept-at`` annotation (``POST /api/kernels/<id>/keep``). The owner's
next server adopts them (``POST /api/kernels/<id>/adopt`` in Kubernetes mode: the key from
the kernel's Secret), which removes the mark. A server removes what was kept longer than
its ``adopt_timeout`` when it starts; the broker's sweep removes, every
``kept_sweep_interval`` seconds, the kept kernels of users whose server never started again
(the same ``adopt_timeout``). Kernels of a server that was killed carry no mark: the next
server of that user adopts them or removes them (``TFEnvApp.reap_orphans_on_start``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from tornado.ioloop import PeriodicCallback
from traitlets import Float
from traitlets.config import Configurable

from jupyter_tfenv.backends.base import KernelBackend
from jupyter_tfenv.backends.kubernetes.keep import KeptKernel
from jupyter_tfenv.broker.policy import BrokerError
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.labels import (
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_RUNTIME_DIR,
    LABEL_UID,
)
from jupyter_tfenv.kernels import markers


class KeptKernelSettings(Configurable):
    """The broker's settings of kept kernels (a part of ``TFEnvBroker``)."""

    adopt_timeout = Float(
        3600.0,
        min=0.0,
        help="""Seconds a kept kernel (its server stopped with c.TFEnvApp.keep_kernels_on_stop)
        waits for its user's next server; the broker's sweep removes one kept longer, with
        its container or pod. Use the servers' c.TFEnvApp.adopt_timeout. 0: never removed
        by the broker.""",
    ).tag(config=True)

    kept_sweep_interval = Float(
        300.0,
        min=0.0,
        help="""How often (seconds) the broker looks for kept kernels older than
        adopt_timeout. 0: no sweep.""",
    ).tag(config=True)


class KeptSweep:
    """Removes the kept kernels of every user that no server adopted within
    ``adopt_timeout`` seconds (Docker containers started by this broker, kernel pods)."""

    def __init__(
        self, backend: KernelBackend, adopt_timeout: float, log: logging.Logger | Any
    ) -> None:
        self.backend = backend
        self.adopt_timeout = adopt_timeout
        self.log = log

    async def kept(self) -> list[KeptKernel]:
        """Every user's kernels that are marked kept (none adopted them since)."""
        listing = getattr(self.backend, "kept_kernels", None)
        if listing is not None:  # Kubernetes: the pods' annotations
            found: list[KeptKernel] = await listing()
            return found
        if self.backend.supports("runtime_dirs"):  # Docker: the runtime folders' markers
            return await self._docker_kept()
        return []

    async def _docker_kept(self) -> list[KeptKernel]:
        backend: Any = self.backend
        client = await backend.docker()
        labels = [f"{k}={v}" for k, v in backend.scope_labels.items()] + [LABEL_KERNEL_ID]
        rows = await asyncio.to_thread(client.api.containers, all=True, filters={"label": labels})
        root = await asyncio.to_thread(os.path.realpath, backend.runtime_root)
        found = []
        for row in rows:
            lab = row.get("Labels") or {}
            rundir = lab.get(LABEL_RUNTIME_DIR, "")
            # Only a folder of this broker's (it reads it as root): {root}/{uid}/{kernel}.
            if not rundir or os.path.dirname(os.path.dirname(rundir)) != root:
                continue
            at = await asyncio.to_thread(markers.kept_since, rundir)
            if at is None or not lab.get(LABEL_UID, "").isdigit():
                continue
            found.append(
                KeptKernel(
                    owner=lab.get(LABEL_OWNER, ""),
                    kernel_id=lab.get(LABEL_KERNEL_ID, ""),
                    name=(row.get("Names") or ["/"])[0].lstrip("/"),
                    kept_at=at,
                    handle=(int(lab[LABEL_UID]), rundir),
                )
            )
        return found

    async def _remove(self, kept: KeptKernel) -> bool:
        remove = getattr(self.backend, "remove_kept", None)
        if remove is not None:
            return bool(await remove(kept))
        uid, rundir = kept.handle
        # Adopted meanwhile: the holder's marker replaced the kept one.
        if await asyncio.to_thread(markers.kept_since, rundir) != kept.kept_at:
            return False
        caller = Caller(name=kept.owner, uid=uid, gid=uid, home="/")
        await self.backend.remove(caller, kept.kernel_id)
        return True

    async def run(self, now: float | None = None) -> list[KeptKernel]:
        """One sweep: the kept kernels removed (never raises)."""
        if self.adopt_timeout <= 0:
            return []
        now = time.time() if now is None else now
        try:
            candidates = await self.kept()
        except Exception as err:  # a sweep never stops the broker
            self.log.warning("tfenv-broker: kept kernels not swept: %s", err)
            return []
        removed = []
        for kept in candidates:
            age = now - kept.kept_at
            if age <= self.adopt_timeout:
                continue
            try:
                if not await self._remove(kept):
                    continue
            except Exception as err:
                self.log.warning(
                    "tfenv-broker: kept kernel %s of %s not removed: %s",
                    kept.kernel_id,
                    kept.owner,
                    err,
                )
                continue
            removed.append(kept)
            self.log.info(
                "tfenv-broker: removed kernel %s of %s (%s), kept %.0f s ago by a server that "
                "did not come back (adopt_timeout %.0f s)",
                kept.kernel_id,
                kept.owner,
                kept.name,
                age,
                self.adopt_timeout,
            )
        return removed


async def keep_kernel(
    backend: KernelBackend, caller: Caller, kernel_id: str, *, held_as: str | None = None
) -> dict[str, Any]:
    """``POST /api/kernels/<id>/keep``: mark the caller's kernel kept (Kubernetes mode);
    ``held_as``: the kernel id a taken warm-pool pod runs under in the caller's server."""
    keep = getattr(backend, "keep", None)
    if keep is None:
        raise BrokerError(
            "Kernels are marked kept by the server in Docker mode (the runtime folder's "
            "marker): this endpoint is for Kubernetes mode.",
            status=404,
            reason="not in docker mode",
        )
    more = {"held_as": held_as} if held_as else {}
    result: dict[str, Any] = await keep(caller, kernel_id, now=time.time(), **more)
    return result


async def adopt_kernel(backend: KernelBackend, caller: Caller, kernel_id: str) -> dict[str, Any]:
    """``POST /api/kernels/<id>/adopt``: the caller's kernel as a server adopts it (in
    Kubernetes mode with its pod IP, ports and key); 404 for anyone else's."""
    if not backend.supports("adopt"):
        raise backend.unsupported("adopting running kernels")
    return (await backend.adopt(caller, kernel_id)).to_dict()


def start_sweeps(broker: Any) -> list[PeriodicCallback]:
    """The broker's periodic housekeeping, started: the backend's own (runtime folders of
    kernels that never started, every ``runtime_dir_stale_seconds``) and the kept kernels'
    sweep (every ``kept_sweep_interval``, unless that or ``adopt_timeout`` is 0) and the
    TensorBoards' idle sweep (every quarter of ``tensorboard_idle_timeout``, at most every
    minute; none when it is 0)."""
    backend = broker.kernel_backend
    sweeps = [PeriodicCallback(backend.sweep, 1000 * broker.runtime_dir_stale_seconds)]
    if broker.kept_sweep_interval > 0 and broker.adopt_timeout > 0:
        kept = KeptSweep(backend, broker.adopt_timeout, broker.log)
        sweeps.append(PeriodicCallback(kept.run, 1000 * broker.kept_sweep_interval))
    idle = broker.tensorboard_idle_timeout
    if idle > 0:
        every = min(60.0, max(1.0, idle / 4))
        sweeps.append(PeriodicCallback(broker.tensorboards.sweep, 1000 * every))
    for sweep in sweeps:
        sweep.start()
    return sweeps
