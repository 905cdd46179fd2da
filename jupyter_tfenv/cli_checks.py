"""The engine and GPU-compatibility parts of ``jupyter tfenv check`` (``cli.py``).

The engine: is it reachable, is live-restore on (issue 24). The GPUs: for each GPU
environment, whether its image's TensorFlow can use this host's GPUs (issue 20 item 2),
from the cached probe (no container is started for it) and the host's NVML facts, judged
by :func:`jupyter_tfenv.kernels.compat.check_compatibility`.
"""

from __future__ import annotations

from typing import Any

import docker

from jupyter_tfenv.backends.docker.engine_info import engine_state
from jupyter_tfenv.backends.docker.gpu import gpu_overview
from jupyter_tfenv.backends.docker.probe import cached_probe, probe_cache_dir
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.kernels.compat import (
    STATE_INCOMPATIBLE,
    STATE_OK,
    STATE_UNKNOWN,
    Compatibility,
    check_compatibility,
)

#: What ``check`` says when the engine's live-restore is off (issue 24).
LIVE_RESTORE_OFF = (
    "live-restore is off: an engine restart or upgrade (`apt upgrade docker`, "
    "`systemctl restart docker`, a daemon crash) kills every kernel container: the users' "
    "variables are lost and running trainings stop (checkpoints in $TFENV_CHECKPOINT_DIR "
    "are kept).\n"
    '  Turn it on: add "live-restore": true to /etc/docker/daemon.json, then '
    "`sudo systemctl reload docker` (a reload applies it; no container stops).\n"
    "  See docs/operations.md (engine upgrades, what users see)."
)


def engine_check() -> tuple[dict[str, Any], docker.DockerClient | None]:
    """The engine ``check`` talks to: ``{host, reachable, live_restore, version, error}``
    and a client when it answered (the panel asks the same: ``engine_info.py``)."""
    return engine_state()


def engine_line(state: dict[str, Any]) -> str | None:
    """The human line of a reachable engine: ok with live-restore, a warning without."""
    if not state["reachable"]:
        return None  # an ERROR line says why
    engine = f"Docker engine {state['version'] or '?'} at {state['host']}"
    if state["live_restore"]:
        return f"ok  {engine}: live-restore is on (kernels outlive an engine restart)"
    return f"WARNING  {engine}: {LIVE_RESTORE_OFF}"


def compatibility_of(
    envs: list[Environment], images: dict[str, str], engine_answered: bool
) -> dict[str, Compatibility]:
    """Each environment's verdict on this host. ``images``: environment id → image id of
    the images found (and matching the lock); the probe is read from the cache only."""
    host = gpu_overview() if any(env.wants_gpu for env in envs) else None
    verdicts: dict[str, Compatibility] = {}
    for env in envs:
        if not env.wants_gpu:
            verdicts[env.id] = check_compatibility(None, None, env_id=env.id, wants_gpu=False)
            continue
        image_id = images.get(env.id)
        if image_id is None:
            why = (
                "its image is not on this Docker engine (see the ERROR above)"
                if engine_answered
                else "the Docker engine did not answer, so its image and probe are unknown"
            )
            verdicts[env.id] = Compatibility(
                STATE_UNKNOWN,
                f"Cannot tell whether '{env.id}' runs on this host's GPUs: {why}.",
                {"environment": env.id, "missing": "image"},
            )
            continue
        probe = cached_probe(image_id, env, cache_dir=probe_cache_dir())
        verdicts[env.id] = check_compatibility(
            probe,
            host,
            env_id=env.id,
            wants_gpu=True,
            devices=list(env.gpus) if isinstance(env.gpus, tuple) else None,
        )
    return verdicts


def compatibility_lines(
    verdicts: dict[str, Compatibility],
    problems: list[dict[str, Any]],
    warnings: list[str],
) -> list[str]:
    """The ok and WARNING lines; an incompatible environment becomes a problem (an ERROR
    line and a non-zero exit), an unknown one a warning."""
    lines = []
    for env_id, verdict in verdicts.items():
        if verdict.state == STATE_OK:
            lines.append(f"ok  environment '{env_id}': compatible: {verdict.message}")
        elif verdict.state == STATE_UNKNOWN:
            lines.append(
                f"WARNING  environment '{env_id}': compatibility unknown: {verdict.message}"
            )
            warnings.append(f"environment '{env_id}': compatibility unknown: {verdict.message}")
        elif verdict.state == STATE_INCOMPATIBLE:
            problems.append(
                {
                    "source": "",
                    "entry": f"'{env_id}'",
                    "field": "",
                    "message": f"incompatible: {verdict.message}",
                }
            )
    return lines
