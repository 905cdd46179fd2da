"""Why a kernel was restarted: the Docker engine restarted under it (issue 24, item 3).

Without live-restore (Docker's default) an engine stop kills every kernel container and
jupyter's restarter then starts a fresh kernel in a new container. That restart must not
be silent: the provisioner keeps a ``last_restart`` record (``GET /tfenv/kernels/<id>``,
the panel's notification) and the server log says it.

Three facts tell that the engine, not the kernel, ended a container, because each one
alone misses a case:

* this server saw the engine unreachable while the kernel lived (its poll found the
  engine away, and then the container dead): an outage longer than a restarter poll;
* the engine has no record of the container's death: a stopped container whose ``die``
  event is not in the engine's event log died before the engine (re)started, since that
  log lives in the engine's memory only. This catches a restart quicker than a poll
  (nothing of the server asked the engine while it was away). A kernel that exits on its
  own or is OOM-killed has its ``die`` event: the restarter asks within seconds, while
  the engine still holds its last 256 events;
* the engine is away when the dead kernel's restart begins: a stopping engine stops its
  containers while it still answers (so its event log has their deaths), then goes.
  The restart waits for the engine (provisioning/local.py) and then says why.
"""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from typing import Any

#: ``last_restart.reason`` of a kernel restarted because the engine restarted under it.
ENGINE_RESTART = "engine-restart"


def restart_message(at: datetime) -> str:
    """What a user is told: when, what happened to the kernel, what is kept, what an
    admin can do (the time in the server's local zone)."""
    local = at.astimezone()
    return (
        f"The Docker engine restarted at {local:%H:%M} {local.tzname() or ''}".rstrip()
        + "; the kernel was restarted in a new container; variables are lost; checkpoints "
        "in $TFENV_CHECKPOINT_DIR are kept. An administrator can turn on the engine's "
        'live-restore ("live-restore": true in /etc/docker/daemon.json) so that kernels '
        "outlive an engine restart (docs/operations.md)."
    )


def restart_record(at: datetime) -> dict[str, str]:
    """The ``last_restart`` of ``GET /tfenv/kernels/<id>``: reason, ISO time, message."""
    return {
        "reason": ENGINE_RESTART,
        "at": at.astimezone(UTC).isoformat(timespec="seconds"),
        "message": restart_message(at),
    }


def from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def parse_docker_time(value: Any) -> datetime | None:
    """A Docker timestamp (``2026-12-07T03:38:11.01161857Z``, nanoseconds) as a datetime;
    None for Docker's zero time and anything unreadable."""
    text = str(value or "")
    if not text or text.startswith("0001-"):
        return None
    head, dot, tail = text.rstrip("Z").partition(".")
    fraction = "".join(ch for ch in tail if ch.isdigit())[:6]
    try:
        parsed = datetime.fromisoformat(head + (f".{fraction}" if dot and fraction else ""))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def death_forgotten(client: Any, container_id: str) -> datetime | None:
    """When the stopped container ``container_id`` ended, if the engine (docker SDK
    ``client``) has no ``die`` event of it, that is: it restarted since; else None
    (blocking: run it off the event loop)."""
    state = client.api.inspect_container(container_id).get("State") or {}
    if state.get("Running"):
        return None
    finished = parse_docker_time(state.get("FinishedAt"))
    if finished is None:
        return None
    # A window around the death (the engine streams until ``until``: at most 2 s more).
    until = min(int(finished.timestamp()) + 2, int(time.time()) + 2)
    stream = client.api.events(
        since=int(finished.timestamp()) - 5,
        until=until,
        filters={"container": container_id, "event": "die"},
        decode=True,
    )
    try:
        died = [event for event in stream if event.get("id", container_id) == container_id]
    finally:
        with contextlib.suppress(Exception):
            stream.close()
    return None if died else finished
