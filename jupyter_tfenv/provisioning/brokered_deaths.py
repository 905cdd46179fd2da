"""Why a brokered kernel died, so that its restart is not silent (issue 24 item 3, for
the broker's two backends). The local mode's peer is provisioning/local.py's ``_why_dead``.

* Docker: the broker's ``GET /api/kernels/<id>`` answer for a stopped container has
  ``engine_death`` (broker/deaths.py: the broker's engine restarted under it, the test of
  engine_restart.death_forgotten); the poll sets the provisioner's ``_engine_death`` and
  its ``_started`` records ``last_restart`` as in local mode. A kernel found dead while
  the broker's engine still answered, whose restart then finds the engine away (the
  broker answers 503 naming it: the engine was stopping), waits for the engine and says
  the same.
* Kubernetes: the answer's ``ended_by`` (backends/kubernetes/podstatus.py
  ``cluster_ending``: evicted, preempted, the node lost, the pod deleted) or a pod gone
  while its server never deleted it: the new pod's start records ``last_restart`` with
  a reason of its own and what happened, in the cluster's words.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any

from jupyter_tfenv.backends.broker import BrokerClient, BrokerError, BrokerUnavailableError
from jupyter_tfenv.provisioning.engine_restart import from_timestamp, parse_docker_time

if TYPE_CHECKING:
    from jupyter_tfenv.provisioning.provisioner import TFEnvKernelProvisioner

#: ``last_restart.reason`` of a kernel pod the cluster ended, and what the cluster did.
POD_ENDINGS = {
    "pod-evicted": "evicted the kernel's pod",
    "pod-preempted": "preempted the kernel's pod (for a pod of a higher priority)",
    "node-lost": "lost the node of the kernel's pod",
    "pod-deleted": "deleted the kernel's pod (not this server: a node drain, an "
    "administrator or a controller)",
}


def pod_restart_record(ending: Mapping[str, Any], now: float | None = None) -> dict[str, str]:
    """The ``last_restart`` of a kernel whose pod the cluster ended (``ending``: the
    broker's ``ended_by``): reason, ISO time, and the message users see."""
    reason = str(ending.get("reason") or "pod-deleted")
    if reason not in POD_ENDINGS:
        reason = "pod-deleted"
    at = parse_docker_time(ending.get("at")) or from_timestamp(time.time() if now is None else now)
    local = at.astimezone()
    cause = str(ending.get("cause") or "")
    detail = str(ending.get("detail") or "").strip()
    why = ": ".join(part for part in (cause, detail) if part)
    message = (
        f"The Kubernetes cluster {POD_ENDINGS[reason]} at {local:%H:%M} {local.tzname() or ''}"
    ).rstrip()
    message += (
        (f" ({why})" if why else "")
        + "; the kernel was restarted in a new pod; variables are lost; checkpoints on "
        "its checkpoint claim ($TFENV_CHECKPOINT_DIR) are kept."
    )
    return {
        "reason": reason,
        "at": at.astimezone(UTC).isoformat(timespec="seconds"),
        "message": message,
    }


def engine_away(err: BrokerError) -> bool:
    """Whether the broker answered that it cannot reach its Docker engine (503 naming
    it), rather than not answering itself or refusing."""
    return (
        err.http_status == 503
        and not isinstance(err, BrokerUnavailableError)
        and "Docker engine" in err.message
    )


class BrokeredDeaths:
    """What the polls of one brokered kernel learned of its death, told at its restart."""

    #: Seconds a restart of a kernel that died with the broker's engine waits for it.
    engine_wait = 180.0
    #: Seconds between the questions while it waits.
    engine_delay = 1.0

    def __init__(self, prov: TFEnvKernelProvisioner, client: BrokerClient) -> None:
        self.prov = prov
        self.client = client
        #: The cluster ends the kernel's pod (seen while it still ran: a pod being deleted).
        self._ending: dict[str, Any] | None = None
        #: The pod's record, told when its restart has started the new pod.
        self._record: dict[str, str] | None = None
        #: When a poll found the Docker container dead for no known reason.
        self._died_at: float | None = None
        #: This server stops the kernel (a shutdown, a restart): its end is no news.
        self._stopping = False

    def stopping(self) -> None:
        """This server kills or terminates the kernel (the broker then deletes a pod)."""
        self._stopping = True

    def seen(self, info: Mapping[str, Any]) -> None:
        """A poll's answer (running or not)."""
        ending = info.get("ended_by")
        if isinstance(ending, Mapping):
            self._ending = dict(ending)

    def dead(self, info: Mapping[str, Any]) -> None:
        """The kernel's container or pod stopped (the answer of that poll)."""
        p = self.prov
        self.seen(info)
        if p._pod is not None:
            if self._ending is not None and self._record is None:
                self._record = pod_restart_record(self._ending)
            return
        if p._engine_death is not None:
            return
        at = parse_docker_time(info.get("engine_death"))
        if at is not None:
            p._engine_death = at
        else:
            self._died_at = time.time()  # its restart may find the engine away

    def unsignalled(self, err: BrokerError) -> bool:
        """Whether a signal the broker could not send for its absent engine is no error:
        the restart of a kernel found dead interrupts it first, and an error there would
        end the restart and jupyter's restarter with it."""
        dead = self._died_at is not None or self.prov._engine_death is not None
        return engine_away(err) and dead

    def gone(self) -> None:
        """The broker has no such kernel any more: news unless this server stopped it."""
        if self._stopping:
            return
        if self.prov._pod is not None:
            if self._record is None:
                self._record = pod_restart_record(self._ending or {"reason": "pod-deleted"})
        elif self.prov._engine_death is None:
            self._died_at = time.time()

    async def before_start(self) -> None:
        """A restart of a Docker kernel found dead: when the broker's engine is away, wait
        for it (a start refused at once would end jupyter's restarter), then say why."""
        died_at, self._died_at = self._died_at, None
        p = self.prov
        if died_at is None or p._pod is not None:
            return
        deadline = time.monotonic() + self.engine_wait
        waited = False
        while True:
            try:
                await self.client.kernel(p.container_kernel_id)
                break
            except BrokerError as err:
                if not engine_away(err) or time.monotonic() > deadline:
                    break  # the engine answers (404 is an answer), or the start says why
            if not waited:
                waited = True
                p.log.info(
                    "tfenv: kernel %s: the broker cannot reach its Docker engine; waiting "
                    "up to %.0f s to restart the kernel",
                    p.kernel_id,
                    self.engine_wait,
                )
            await asyncio.sleep(self.engine_delay)
        if not waited:
            return
        if p._engine_death is None:
            p._engine_death = from_timestamp(died_at)
        # The dead container the restart's clean-up could not remove while the engine was
        # away (the runtime folder stays: the new container uses it).
        try:
            await self.client.delete_kernel(p.container_kernel_id, restart=True)
        except BrokerError as err:
            p.log.warning("tfenv: the broker could not remove kernel %s: %s", p.kernel_id, err)

    def started(self) -> None:
        """The new pod runs: its ``last_restart`` (once) and a warning in the log."""
        record, self._record = self._record, None
        self._ending = None
        self._stopping = False
        if record is not None:
            self.prov.last_restart = record
            self.prov.log.warning("tfenv: kernel %s: %s", self.prov.kernel_id, record["message"])
