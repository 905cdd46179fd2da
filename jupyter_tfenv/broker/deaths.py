"""Why a user's Docker kernel container ended, as the broker tells it: its
``GET /api/kernels/<id>`` answer for a stopped container carries ``engine_death``, the
ISO time the broker's engine restarted under it (without live-restore), or null.

The user's server cannot ask the broker's engine itself: it reads this field in its
poll (provisioning/brokered_deaths.py) and records ``last_restart`` as local mode does.
One implementation of the test for both modes: :func:`engine_restart.death_forgotten`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from jupyter_tfenv.backends.base import KernelBackend, KernelInfo
from jupyter_tfenv.backends.docker.backend import DockerBackend
from jupyter_tfenv.provisioning.engine_restart import death_forgotten

log = logging.getLogger(__name__)

#: Answers already looked up, by container id (a dead container's answer does not change;
#: the user's restarter polls it a few times before it restarts the kernel).
_KNOWN: OrderedDict[str, str | None] = OrderedDict()
_KEEP = 256


async def engine_death(backend: KernelBackend, info: KernelInfo) -> dict[str, Any]:
    """``{"engine_death": ISO | None}`` for a kernel of a Docker backend ({} for others,
    whose answers say in their own words what ended a kernel)."""
    if not isinstance(backend, DockerBackend):
        return {}
    if info.running or not info.container_id:
        return {"engine_death": None}
    if info.container_id in _KNOWN:
        return {"engine_death": _KNOWN[info.container_id]}
    try:
        client = await backend.docker()
        at = await asyncio.to_thread(death_forgotten, client, info.container_id)
    except Exception as err:  # the engine went away meanwhile: unknown, asked again
        log.debug("tfenv-broker: the death of %s not looked up: %r", info.container_id, err)
        return {"engine_death": None}
    answer = None if at is None else at.isoformat(timespec="seconds")
    _KNOWN[info.container_id] = answer
    while len(_KNOWN) > _KEEP:
        _KNOWN.popitem(last=False)
    return {"engine_death": answer}
