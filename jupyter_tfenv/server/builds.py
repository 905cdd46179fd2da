"""The server's builds of derived environments (the panel's Build action, docs/building.md):
each a job with an id, followed as a pull is (``GET /tfenv/builds/{id}`` and its
server-sent ``/events``), fed by the same progress events ``jupyter tfenv build`` prints.

A job goes through the steps of :data:`STEPS`; :func:`step_of` maps the builder's phases
onto them. Its state changes only on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

from jupyter_tfenv.core.events import Event, EventStream
from jupyter_tfenv.errors import as_tfenv_error

#: The steps a build goes through, in order, as the panel names them.
STEPS = ("resolve", "download", "build", "verify", "tag")
#: The builder's progress phases (builder.py, wheels.py) and the step each belongs to.
_PHASES = {
    "start": "resolve",
    "target": "resolve",
    "resolve": "resolve",
    "download": "download",
    "install": "build",
    "build": "build",
    "verify": "verify",
    "tag": "tag",
}
_TERMINAL = ("done", "error")
_WHEELS = re.compile(r"(\d+)/(\d+)")


def step_of(phase: str | None) -> str | None:
    """The step of :data:`STEPS` a builder phase belongs to (None: not one of them)."""
    return _PHASES.get(phase or "")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class BuildJob:
    """One build the server runs (``POST /tfenv/environments/{id}/build``)."""

    def __init__(self, env_id: str, image: str) -> None:
        self.id = uuid.uuid4().hex
        self.environment = env_id
        self.image = image
        self.state = "building"
        self.step = STEPS[0]
        self.message = f"Building {env_id}"
        #: ``{"done": n, "total": m}`` while wheels download (from the builder's events).
        self.wheels: dict[str, int] | None = None
        self.result: dict[str, Any] | None = None
        self.started = time.time()
        self.finished: float | None = None
        self._stream = EventStream("build_id", self.id, _TERMINAL)

    @property
    def is_finished(self) -> bool:
        return self.state in _TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "environment": self.environment,
            "image": self.image,
            "state": self.state,
            "step": self.step,
            "steps": list(STEPS),
            "message": self.message,
            "wheels": dict(self.wheels) if self.wheels else None,
            "result": self.result,
            "started": _iso(self.started),
            "finished": _iso(self.finished),
        }

    def apply(self, event: Event) -> None:
        """One progress event of the builder (``{"phase", "message", …}``)."""
        if self.is_finished:
            return
        step = step_of(event.get("phase"))
        if step is None:
            return
        if step != self.step and STEPS.index(step) > STEPS.index(self.step):
            self.step = step
        message = str(event.get("message") or "")
        if message:
            self.message = message
        if step == "download":
            done, total = event.get("done"), event.get("total")
            if isinstance(done, int) and isinstance(total, int):
                self.wheels = {"done": done, "total": total}
            elif self.wheels is None and (found := _WHEELS.search(message)):
                self.wheels = {"done": int(found[1]), "total": int(found[2])}
        self._stream.publish({"type": "progress", **self.to_dict()})

    def finish(self, state: str, message: str, result: dict[str, Any] | None = None) -> None:
        self.state = state
        self.message = message
        self.result = result
        self.finished = time.time()
        self._stream.publish({"type": state, **self.to_dict()})

    def events(self) -> AsyncIterator[Event]:
        """A ``snapshot``, then the live events, in order; the last is ``done`` or ``error``
        (also for a subscriber that comes after the end)."""
        return self._stream.events(self.to_dict)

    async def wait(self) -> BuildJob:
        await self._stream.wait()
        return self


#: What runs a build in a worker thread: ``work(progress)`` → the build's result dict.
Work = Callable[[Callable[[Event], None]], dict[str, Any]]


class BuildJobs:
    """The server's builds: one per image at a time, each in a worker thread."""

    def __init__(self, *, keep_finished: int = 20, log: Any = None) -> None:
        self._jobs: dict[str, BuildJob] = {}
        self._active: dict[str, BuildJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._keep_finished = keep_finished
        self._log = log

    def get(self, build_id: str) -> BuildJob | None:
        return self._jobs.get(build_id)

    def list(self) -> list[BuildJob]:
        return list(self._jobs.values())

    def active(self, image: str) -> BuildJob | None:
        job = self._active.get(image)
        return job if job is not None and not job.is_finished else None

    def start(self, env_id: str, image: str, work: Work) -> BuildJob:
        """Start ``work`` as the build of ``image``, or return the one running already."""
        running = self.active(image)
        if running is not None:
            return running
        job = BuildJob(env_id, image)
        self._jobs[job.id] = job
        self._active[image] = job
        self._forget_old()
        job._stream.publish({"type": "start", **job.to_dict()})
        task = asyncio.get_running_loop().create_task(self._run(job, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: BuildJob, work: Work) -> None:
        loop = asyncio.get_running_loop()

        def progress(event: Event) -> None:
            loop.call_soon_threadsafe(job.apply, dict(event))

        try:
            result = await loop.run_in_executor(None, work, progress)
        except Exception as err:
            message = str(as_tfenv_error(err)) or type(err).__name__
            if self._log is not None:
                self._log.warning("tfenv: the build of %s failed: %s", job.environment, message)
            # Let the progress events queued before the failure come first.
            await asyncio.sleep(0)
            job.finish("error", message)
            return
        await asyncio.sleep(0)
        built = "already built" if result.get("already_built") else "built"
        job.finish("done", f"{job.environment}: {result.get('image', job.image)} ({built})", result)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.is_finished]
        for job in finished[: max(0, len(finished) - self._keep_finished)]:
            del self._jobs[job.id]
