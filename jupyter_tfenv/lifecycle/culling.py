"""Culling idle tfenv kernels, so that a forgotten notebook does not hold a GPU for days.

An environment's ``idle_timeout`` (catalog, seconds) says how long its kernels may stay
idle; environments that ask for GPUs and set none get ``TFEnvApp.gpu_idle_timeout``;
``0`` (or no timeout) never culls. Every ``TFEnvApp.cull_interval`` seconds the extension
shuts down the tfenv kernels that have been idle longer than that, through the kernel
manager's ``shutdown_kernel``, which removes the container and so frees its GPUs.

"Idle" is what jupyter_server's own culler (``MappingKernelManager.cull_idle_timeout``)
means: no kernel message (iopub) for that long, and not busy; a kernel with open
connections (a notebook tab) is kept unless ``TFEnvApp.cull_connected``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from jupyter_tfenv.provisioning.provisioner import TFEnvKernelProvisioner


def idle_timeout_of(environment: dict[str, Any], gpu_idle_timeout: float) -> float:
    """The idle timeout of a kernel of ``environment`` (its catalog config), 0 = never."""
    timeout = environment.get("idle_timeout")
    if timeout is None:
        gpus = environment.get("gpus", "none")
        return float(gpu_idle_timeout) if gpus not in ("none", None) else 0.0
    return float(timeout)


@dataclass(frozen=True)
class Culled:
    kernel_id: str
    environment: str
    idle_seconds: float
    timeout: float
    connections: int


async def cull_idle_kernels(
    kernel_manager: Any,
    *,
    gpu_idle_timeout: float,
    cull_connected: bool = False,
    log: Any = None,
    now: datetime.datetime | None = None,
) -> list[Culled]:
    """Shut down the tfenv kernels idle beyond their environment's timeout; return them.

    Logs one line per culled kernel (and a warning for a kernel that would not shut down).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    connections_of = getattr(kernel_manager, "_kernel_connections", {}) or {}
    pending = getattr(kernel_manager, "_pending_kernels", {}) or {}
    culled = []
    for kernel_id in list(kernel_manager.list_kernel_ids()):
        if kernel_id in pending:
            continue  # still starting (or failing to)
        try:
            kernel = kernel_manager.get_kernel(kernel_id)
        except KeyError:
            continue  # shut down meanwhile
        prov = getattr(kernel, "provisioner", None)
        if not isinstance(prov, TFEnvKernelProvisioner) or not prov.environment:
            continue
        if prov.engine_away:
            continue  # its container could not be removed now: cull it once the engine is back
        timeout = idle_timeout_of(prov.environment, gpu_idle_timeout)
        last = getattr(kernel, "last_activity", None)
        if timeout <= 0 or last is None:
            continue
        if getattr(kernel, "execution_state", None) == "busy":
            continue
        connections = int(connections_of.get(kernel_id, 0) or 0)
        if connections and not cull_connected:
            continue
        idle = (now - last).total_seconds()
        if idle <= timeout:
            continue
        item = Culled(
            kernel_id=kernel_id,
            environment=str(prov.environment.get("id", "?")),
            idle_seconds=idle,
            timeout=timeout,
            connections=connections,
        )
        if log is not None:
            log.info(
                "tfenv: culling kernel %s (%s, %d connection(s)): idle for %.0f s, longer than "
                "its idle timeout of %g s; its container is removed%s",
                kernel_id,
                item.environment,
                connections,
                idle,
                timeout,
                " and its GPUs freed" if prov.environment.get("gpus", "none") != "none" else "",
            )
        try:
            await kernel_manager.shutdown_kernel(kernel_id)
        except KeyError:
            continue  # shut down meanwhile
        except Exception as err:
            if log is not None:
                log.warning("tfenv: culling kernel %s failed: %s", kernel_id, err)
            continue
        culled.append(item)
    return culled
