"""Containers as every layer names them: this server process's identity labels, the
hardening every container gets, and the two quiet container calls (last log lines,
removal) that storage helpers and backends share.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any

from docker.errors import APIError, NotFound

from jupyter_tfenv.core.labels import (
    LABEL_SERVER_HOST,
    LABEL_SERVER_INSTANCE,
    LABEL_SERVER_PID,
    LABEL_SERVER_START,
)


def hardening() -> dict[str, Any]:
    """The options every long-running container tfenv starts gets (kernels, probes,
    TensorBoards; docker SDK ``containers.create`` keywords): no capabilities, no
    privilege gain, never privileged, docker-init as PID 1 (signals, zombies), its own
    IPC namespace, never restarted by the engine. A fresh dict each time."""
    return {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "init": True,
        "ipc_mode": "private",
        "restart_policy": {"Name": "no"},
    }


#: One id per server process: containers carry it so that a later server can tell its
#: own containers from those left behind by a server that died.
SERVER_INSTANCE = uuid.uuid4().hex


def process_start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), '' when unknown.

    Together with the pid it names one process for good: pids are reused, start times
    are not.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22; the command name (field 2) may hold spaces, so split after its ')'.
    return stat.rsplit(")", 1)[-1].split()[19]


SERVER_PID = os.getpid()
SERVER_START = process_start_time(SERVER_PID)
SERVER_HOST = socket.gethostname()


def server_labels() -> dict[str, str]:
    """The labels that name this server process, on every container it starts (and in
    the holder marker of a kernel it adopted: jupyter_tfenv.lifecycle.adoption)."""
    return {
        LABEL_SERVER_INSTANCE: SERVER_INSTANCE,
        LABEL_SERVER_HOST: SERVER_HOST,
        LABEL_SERVER_PID: str(SERVER_PID),
        LABEL_SERVER_START: SERVER_START,
    }


def tail_logs(container: Any, lines: int = 30) -> str:
    try:
        raw = container.logs(stdout=True, stderr=True, tail=lines)
    except (APIError, NotFound):
        return ""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def remove_quietly(container: Any) -> None:
    try:
        container.remove(force=True)
    except NotFound:
        pass
    except APIError as err:
        if err.status_code != 409:  # removal already in progress
            raise
