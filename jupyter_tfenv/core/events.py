"""The progress events of one long job (an image pull, a build), for any number of
subscribers: each gets a snapshot of the job so far, then every later event in order,
and always the terminal one last, also when it subscribes after the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = dict[str, Any]


class EventStream:
    """Numbered events of the job ``job_id``, each carrying ``{id_key: job_id}``; an
    event whose ``type`` is one of ``terminal`` ends the stream."""

    def __init__(self, id_key: str, job_id: str, terminal: tuple[str, ...]) -> None:
        self.id_key = id_key
        self.job_id = job_id
        self.terminal = terminal
        self._seq = 0
        self._subscribers: set[asyncio.Queue[Event]] = set()
        self._final: Event | None = None
        self._done = asyncio.Event()

    def publish(self, event: Event) -> None:
        """Number ``event`` and hand it to every subscriber; a terminal one ends the job."""
        self._seq += 1
        event = {"seq": self._seq, self.id_key: self.job_id, **event}
        if event["type"] in self.terminal:
            self._final = event
            self._done.set()
        for queue in self._subscribers:
            queue.put_nowait(event)

    async def events(self, snapshot: Callable[[], dict[str, Any]]) -> AsyncIterator[Event]:
        """A ``snapshot`` event (``snapshot()``: the job's state now), then the live events
        up to the terminal one."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield {"seq": self._seq, self.id_key: self.job_id, "type": "snapshot", **snapshot()}
            if self._final is not None:
                yield self._final
                return
            while True:
                event = await queue.get()
                yield event
                if event["type"] in self.terminal:
                    return
        finally:
            self._subscribers.discard(queue)

    async def wait(self) -> None:
        """Until the terminal event was published."""
        await self._done.wait()
