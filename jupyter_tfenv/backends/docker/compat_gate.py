"""GPU compatibility where the Docker backend and the REST listings need it (issue 20
item 2; docs/gpus.md, "Compatibility check").

:func:`verdict` turns one environment, its image's *cached* probe and the host's GPU
overview into :func:`~jupyter_tfenv.kernels.compat.check_compatibility`'s answer;
:func:`summary` is what ``GET /tfenv/environments`` (and the broker's ``/api/environments``)
carry per environment; :func:`check_start` is the start's gate: an environment that wants
GPUs and is ``incompatible`` is refused (409, reason ``incompatible``) with the verdict's
message, unless ``allow_incompatible_gpus`` is set. ``unknown`` never refuses. On a host
whose GPUs differ, :func:`unusable_devices` names those the build cannot run on, for the
allocator to leave out. Nothing here starts a probe container.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from jupyter_tfenv.backends.docker import gpu as gpu_mod
from jupyter_tfenv.backends.docker.probe import cached_probe, probe_cache_dir
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.errors import BackendError
from jupyter_tfenv.kernels.compat import (
    STATE_INCOMPATIBLE,
    STATE_OK,
    STATE_UNKNOWN,
    Compatibility,
    check_compatibility,
)

#: The ``reason`` of a refused start.
REASON_INCOMPATIBLE = "incompatible"


def verdict(
    env: Environment, probe: dict[str, Any] | None, host: dict[str, Any] | None
) -> Compatibility:
    """The verdict for ``env`` (``not_applicable`` with no message for a CPU environment:
    nothing to mark in the picker)."""
    if not env.wants_gpu:
        cpu = check_compatibility(None, None, env_id=env.id, wants_gpu=False)
        return Compatibility(cpu.state, "", cpu.details)
    return check_compatibility(
        probe,
        host,
        env_id=env.id,
        wants_gpu=True,
        devices=list(env.gpus) if isinstance(env.gpus, tuple) else None,
    )


def summary(result: Compatibility) -> dict[str, str]:
    """The listing's field: ``{"state": …, "message": …}``."""
    return {"state": result.state, "message": result.message}


def no_image(env: Environment, *, engine_answered: bool = True) -> Compatibility:
    """A GPU environment whose image is not here (or the engine did not answer): nothing
    to judge yet (the wording of `jupyter tfenv check`)."""
    why = (
        "its image is not on this Docker engine"
        if engine_answered
        else "the Docker engine did not answer, so its image and probe are unknown"
    )
    return Compatibility(
        STATE_UNKNOWN,
        f"Cannot tell whether '{env.id}' runs on this host's GPUs: {why}.",
        {"environment": env.id, "missing": "image"},
    )


async def verdicts(
    envs: list[Environment],
    image_ids: dict[str, str | None],
    host: Any,
    cache_dir: Path,
) -> dict[str, Compatibility]:
    """Each environment's verdict: ``image_ids`` by environment id (None: not here);
    ``host``: an async callable giving the GPU overview, awaited once and only when an
    environment wants GPUs. Probes are read from ``cache_dir``, never started."""
    overview: dict[str, Any] | None = None
    result: dict[str, Compatibility] = {}
    for env in envs:
        if not env.wants_gpu:
            result[env.id] = verdict(env, None, None)
            continue
        image_id = image_ids.get(env.id)
        if not image_id:
            result[env.id] = no_image(env)
            continue
        if overview is None:
            overview = await host()
        probe = await asyncio.to_thread(cached_probe, image_id, env, cache_dir=cache_dir)
        result[env.id] = verdict(env, probe, overview)
    return result


def backend_cache_dir(backend: Any) -> Path:
    """The backend's probe cache (the Jupyter data dir's by default, as the CLI's)."""
    return Path(backend.probe_cache_dir) if backend.probe_cache_dir else probe_cache_dir()


async def host_overview(backend: Any) -> dict[str, Any]:
    """The host's GPU facts: the server's cached overview where the backend has it, else
    one NVML read (no containers)."""
    if backend.host_gpu_overview is not None:
        return dict(await backend.host_gpu_overview())
    return dict(await asyncio.to_thread(gpu_mod.gpu_overview, None))


async def check_start(backend: Any, env: Environment, image_id: str) -> Compatibility | None:
    """Refuse the start of an ``incompatible`` GPU environment (BackendError 409) unless
    ``backend.settings.allow_incompatible_gpus``; None for a CPU environment, else the
    verdict. Reads the cached probe of ``image_id`` and the host's NVML facts only."""
    if not env.wants_gpu:
        return None
    cache_dir = backend_cache_dir(backend)
    probe = await asyncio.to_thread(cached_probe, image_id, env, cache_dir=cache_dir)
    result = verdict(env, probe, await host_overview(backend))
    if result.state != STATE_INCOMPATIBLE:
        return result
    if getattr(backend.settings, "allow_incompatible_gpus", False):
        backend.log.warning(
            "%s: starting '%s' although it is incompatible with this host's GPUs "
            "(allow_incompatible_gpus): %s",
            backend.log_prefix,
            env.id,
            result.message,
        )
        return result
    raise BackendError(result.message, status=409, reason=REASON_INCOMPATIBLE)


def unusable_devices(result: Compatibility | None) -> dict[str, str]:
    """The host's GPUs that the environment's build cannot run on, on a host where others
    can (an ``ok`` verdict that lists incompatible devices): each NVML index and UUID with
    why, for the allocator to leave out. Empty otherwise: an ``unknown`` verdict restricts
    nothing, and an ``incompatible`` one got this far only because the admin allows it."""
    if result is None or result.state != STATE_OK:
        return {}
    unusable: dict[str, str] = {}
    for device in result.details.get("devices") or []:
        if device.get("state") != STATE_INCOMPATIBLE:
            continue
        why = f"GPU {device.get('index')} ({device.get('name') or 'GPU'}): {device.get('reason')}"
        for alias in (device.get("index"), device.get("uuid")):
            if alias is not None and str(alias):
                unusable[str(alias)] = why
    return unusable
