"""Steps of a container kernel's start that every Docker caller takes the same way.

:class:`~jupyter_tfenv.backends.docker.backend.DockerBackend` (the broker's, and a local
server's provisioner's) creates a container with ``containers.run`` that a cancelled
request must not leave behind and removes a half-made container by name; it and the
provisioner (for a local kernel's transport, or a broker's kernel) wait until the
kernel's sockets are bound while watching the kernel: once, here. A container the engine
could not be asked to remove (it went away during the start) is removed once it answers
again (:func:`remove_when_back`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from docker.errors import APIError, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError

from jupyter_tfenv.backends.base import GONE
from jupyter_tfenv.backends.docker.engine import remove_quietly
from jupyter_tfenv.errors import engine_unreachable

_log = logging.getLogger(__name__)

#: Container states of a kernel that may still bind its sockets (or runs).
RUNNING_STATES = ("created", "running", "restarting", "paused")


def remove_by_name(client: Any, name: str) -> bool:
    """Remove the container ``name`` (or id) if it exists (whether it did); blocking."""
    try:
        container = client.containers.get(name)
    except NotFound:
        return False
    remove_quietly(container)
    return True


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
    except RequestsConnectionError:
        # The engine went away while it created the container: it may exist.
        remove_when_back(lambda: _same(client), spec["name"], what=f"container {spec['name']}")
        raise


async def _same(client: Any) -> Any:
    return client


async def discard(container: Any, client_of: Callable[[], Awaitable[Any]], log: Any) -> None:
    """Remove the container of a failed start now, or, when the engine went away (the
    reason the start failed, often), once it answers again (:func:`remove_when_back`)."""
    try:
        await asyncio.to_thread(remove_quietly, container)
    except Exception as err:
        if not engine_unreachable(err):
            raise
        name = getattr(container, "name", None) or container.id
        log.warning(
            "container %s of a failed start not removed yet, the Docker engine cannot be "
            "asked: it is removed once the engine answers again",
            name,
        )
        remove_when_back(client_of, container.id, what=f"container {name}", log=log)


#: Removals waiting for the engine (held here, so that they are not garbage-collected).
_WAITING: set[asyncio.Future[None]] = set()

#: Seconds between two tries of a removal that waits for the engine.
REMOVAL_RETRY_DELAY = 2.0


def remove_when_back(
    client_of: Callable[[], Awaitable[Any]],
    container: str,
    *,
    what: str,
    log: Any = None,
    delay: float | None = None,
) -> asyncio.Future[None]:
    """Remove ``container`` (id or name) once the Docker engine answers again, in the
    background: the container of a start that failed because the engine went away (with
    live-restore it even runs on). ``client_of()`` gives the engine's client (its error
    while the engine is away is retried, every ``delay`` seconds); ``what`` names the
    container in the log. A server that stops first leaves it to its successor's orphan
    removal (the container carries this server's labels)."""
    logger = log or _log
    pause = REMOVAL_RETRY_DELAY if delay is None else delay

    async def remove() -> None:
        while True:
            await asyncio.sleep(pause)
            try:
                client = await client_of()
                removed = await asyncio.to_thread(remove_by_name, client, container)
            except Exception as err:
                if engine_unreachable(err):
                    continue
                logger.warning("%s of the failed start not removed: %s", what, err)
                return
            if removed:
                logger.info("%s of the failed start removed: the Docker engine answers again", what)
            return

    task = asyncio.ensure_future(remove())
    _WAITING.add(task)
    task.add_done_callback(_WAITING.discard)
    return task


def exit_state(container: Any, running: tuple[str, ...] = RUNNING_STATES) -> dict[str, Any] | None:
    """None while ``container`` (just reloaded) is in one of the ``running`` states; else
    its ``exit_code`` and ``oom_killed``; a container removed meanwhile (``docker rm`` by
    someone else): ``removed``, exit code None. The container object is left as it was, so
    that its removal still names it."""
    try:
        container.reload()
    except NotFound:
        return GONE.copy()
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
