"""A long job's event stream (core/events.py: pulls and builds): pure logic."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_tfenv.core.events import EventStream


async def collect(stream: EventStream, state: dict[str, Any]) -> list[dict[str, Any]]:
    return [event async for event in stream.events(lambda: dict(state))]


async def test_a_live_subscriber_gets_the_snapshot_then_every_event_in_order() -> None:
    state = {"state": "pulling"}
    stream = EventStream("pull_id", "p1", ("done", "error"))
    stream.publish({"type": "start"})
    reader = asyncio.ensure_future(collect(stream, state))
    await asyncio.sleep(0)  # the subscriber is in before the next events
    stream.publish({"type": "progress", "percent": 50})
    stream.publish({"type": "done"})
    events = await asyncio.wait_for(reader, 5)
    assert [e["type"] for e in events] == ["snapshot", "progress", "done"]
    assert [e["seq"] for e in events] == [1, 2, 3]  # the snapshot carries the seq it saw
    assert events[0]["state"] == "pulling" and events[1]["percent"] == 50
    assert all(e["pull_id"] == "p1" for e in events)


async def test_a_subscriber_after_the_end_gets_the_snapshot_and_the_terminal_event() -> None:
    stream = EventStream("build_id", "b1", ("done", "error"))
    stream.publish({"type": "progress"})
    stream.publish({"type": "error", "message": "pip failed"})
    await asyncio.wait_for(stream.wait(), 5)
    events = await asyncio.wait_for(collect(stream, {"state": "error"}), 5)
    assert [e["type"] for e in events] == ["snapshot", "error"]
    assert events[1]["message"] == "pip failed" and events[1]["build_id"] == "b1"


async def test_wait_returns_only_at_the_terminal_event() -> None:
    stream = EventStream("pull_id", "p2", ("done", "error", "cancelled"))
    waiter = asyncio.ensure_future(stream.wait())
    stream.publish({"type": "progress"})
    await asyncio.sleep(0.05)
    assert not waiter.done()
    stream.publish({"type": "cancelled"})
    await asyncio.wait_for(waiter, 5)
