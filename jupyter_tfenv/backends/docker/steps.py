"""Steps of a container kernel's start that every Docker caller takes the same way.

:class:`~jupyter_tfenv.backends.docker.backend.DockerBackend` (the broker's, and a local
server's provisioner's) creates a container with ``containers.run`` that a cancelled
request must not leave behind and removes a half-made container by name; it and the
provisioner (for a local kernel's transport, or a broker's kernel) wait until the
kernel's sockets are bound while watching the kernel: once, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from docker.errors import APIError, NotFound

from jupyter_tfenv.backends.docker.engine import remove_quietly

#: Container states of a kernel that may still bind its sockets (or runs).
RUNNING_STATES = ("created", "running", "restarting", "paused")


def remove_by_name(client: Any, name: str) -> None:
    """Remove the container ``name`` (or id) if it exists; blocking."""
    with contextlib.suppress(NotFound):
        remove_quietly(client.containers.get(name))


async def run_shielded(client: Any, spec: dict[str, Any]) -> Any:
    """``client.containers.run(**spec)`` that a cancelled caller does not interrupt half
    way: the creation finishes and the container (by its name) is removed; an engine
    refusal (``APIError``) also removes whatever was made, and is raised as it is."""
    creating = asyncio.ensure_future(asyncio.to_thread(client.containers.run, **spec))
    try:
        return await asyncio.shield(creating)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await creating
        await asyncio.to_thread(remove_by_name, client, spec["name"])
        raise
    except APIError:
        await asyncio.to_thread(remove_by_name, client, spec["name"])
        raise


def exit_state(container: Any, running: tuple[str, ...] = RUNNING_STATES) -> dict[str, Any] | None:
    """None while ``container`` (just reloaded) is in one of the ``running`` states; else
    its ``exit_code`` and ``oom_killed`` (a removed container: exit code None)."""
    try:
        container.reload()
    except NotFound:
        container.attrs = {"State": {"ExitCode": None}}
        container.status = "removed"
    if container.status in running:
        return None
    state = (container.attrs or {}).get("State") or {}
    return {"exit_code": state.get("ExitCode"), "oom_killed": bool(state.get("OOMKilled"))}


async def wait_until_bound(
    bound: Callable[[], bool],
    exited: Callable[[], Awaitable[dict[str, Any] | None]],
    *,
    timeout: float,
    on_exit: Callable[[dict[str, Any]], Awaitable[None]],
    on_timeout: Callable[[], Awaitable[None]],
    started: float | None = None,
) -> None:
    """Return once ``bound()`` (the kernel's sockets are bound: cheap, looked at often).

    ``exited()`` (None while the kernel runs, else its exit state: an engine or broker
    call) is asked at most every 0.25 s; ``on_exit(state)`` is called when the kernel
    stopped before binding, ``on_timeout()`` after ``timeout`` seconds from ``started``
    (both must raise).
    """
    started = time.monotonic() if started is None else started
    delay, next_inspect = 0.005, 0.0
    while True:
        if bound():
            return
        now = time.monotonic()
        if now >= next_inspect:
            state = await exited()
            if state is not None:
                if bound():
                    return
                await on_exit(state)
            next_inspect = now + 0.25
        if now - started > timeout:
            await on_timeout()
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.05)
