"""Kernels that outlive their server: keeping them at server stop, adopting them at start.

A container kernel lives apart from the Jupyter server that started it. With
``c.TFEnvApp.keep_kernels_on_stop`` a stopping server leaves its kernel containers
running (it writes a *kept* marker, with the time, into each kernel's runtime folder),
and the next server of the same user finds them by their labels and **adopts** them
under their old kernel ids: the provisioner then loads the connection file that is still
in the runtime folder instead of starting a container (``TFEnvKernelProvisioner``,
``tfenv_adopt``). A notebook that reconnects finds its variables, and a cell that was
running goes on.

A container's labels cannot change, so the server that holds an adopted kernel writes a
*holder* marker (the same server labels a container gets at start) into the runtime
folder: ``jupyter tfenv gc`` and the orphan reaper then see that a live server holds it.

Everything here that touches Docker or the disk is BLOCKING: call it in a thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from jupyter_tfenv.backends.docker.engine import server_alive, tfenv_containers
from jupyter_tfenv.core.labels import (
    LABEL_BROKER,
    LABEL_ENVIRONMENT,
    LABEL_KERNEL_ID,
    LABEL_POOL,
    LABEL_RUNTIME_DIR,
)
from jupyter_tfenv.kernels.markers import (  # noqa: F401 - importable from here too
    ASSIGNED_KEY,
    CONNECTION_FILE,
    HOLDER_FILE,
    KEPT_FILE,
    POOL_FILE,
    _read_json,
    folder_assignment,
    kept_since,
    mark_held,
    mark_kept,
    mark_pool,
    runtime_dir_problem,
)


def held_by_live_server(labels: dict[str, str]) -> bool:
    """Whether a live server holds this container: the one that started it, or one that
    adopted it (its holder marker in the runtime folder)."""
    if server_alive(labels):
        return True
    rundir = labels.get(LABEL_RUNTIME_DIR, "")
    if not rundir:
        return False
    holder = _read_json(rundir, HOLDER_FILE)
    return holder is not None and server_alive({k: str(v) for k, v in holder.items()})


def assigned_kernel_id(labels: dict[str, str]) -> str | None:
    """The kernel id a container runs under: its label's, or for a pool kernel the one
    it was taken for (None: a pool kernel nobody took)."""
    rundir = labels.get(LABEL_RUNTIME_DIR, "")
    assigned, pool = folder_assignment(rundir) if rundir else (None, False)
    if assigned:
        return assigned
    if pool or LABEL_POOL in labels:
        return None
    return labels.get(LABEL_KERNEL_ID, "")


@dataclass(frozen=True)
class Candidate:
    """A running kernel container of this user that no live server holds."""

    kernel_id: str
    environment: str
    #: The kernel id of the container's label (a pool kernel's: its pool id).
    container_kernel_id: str
    container_id: str
    name: str
    runtime_dir: str
    workdir: str
    kept_at: float | None

    def age(self, now: float | None = None) -> float | None:
        """Seconds since its server kept it (None: not kept)."""
        if self.kept_at is None:
            return None
        return (time.time() if now is None else now) - self.kept_at


def find_candidates(client: Any, owner: str, runtime_root: str, uid: int) -> list[Candidate]:
    """This owner's running kernel containers (local mode) that no live server holds and
    whose runtime folder and connection file are still there."""
    found = []
    for container in tfenv_containers(client, owner):
        labels = container.labels or {}
        if LABEL_BROKER in labels or container.status != "running":
            continue
        if held_by_live_server(labels):
            continue
        rundir = labels.get(LABEL_RUNTIME_DIR, "")
        if runtime_dir_problem(rundir, runtime_root, uid) is not None:
            continue
        kernel_id = assigned_kernel_id(labels)
        if not kernel_id:
            continue  # an untaken pool kernel: the reaper removes it
        config = (container.attrs or {}).get("Config") or {}
        found.append(
            Candidate(
                kernel_id=kernel_id,
                environment=labels.get(LABEL_ENVIRONMENT, ""),
                container_kernel_id=labels.get(LABEL_KERNEL_ID, ""),
                container_id=container.id,
                name=container.name,
                runtime_dir=rundir,
                workdir=str(config.get("WorkingDir") or ""),
                kept_at=kept_since(rundir),
            )
        )
    return found
