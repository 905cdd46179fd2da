"""``/tfenv/builds``: builds of derived environments the server runs (the panel's Build
action), as JSON and as server-sent events, like ``/tfenv/pulls``."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from jupyter_tfenv.errors import NotFoundError
from jupyter_tfenv.server.handlers.base import TFEnvHandler


def _job(handler: TFEnvHandler, build_id: str) -> Any:
    job = handler.tfenv.builds.get(build_id)
    if job is None:
        raise NotFoundError(
            f"No build '{build_id}' on this server (a restarted server forgets its builds; "
            "the environment's listing says whether its image is here)."
        )
    return job


class BuildsHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json({"builds": [job.to_dict() for job in self.tfenv.builds.list()]})


class BuildHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, build_id: str) -> None:
        self.write_json(_job(self, build_id).to_dict())


class BuildEventsHandler(TFEnvHandler):
    """Server-sent events: a snapshot, then each progress event, then ``done`` or ``error``."""

    @web.authenticated
    @authorized
    async def get(self, build_id: str) -> None:
        job = _job(self, build_id)
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        try:
            async for event in job.events():
                kind = event.get("type", "progress")
                self.write(f"event: {kind}\ndata: {json.dumps(event, default=str)}\n\n")
                await self.flush()
        except StreamClosedError:
            return  # the browser went away; the build goes on
        self.finish()


routes = [
    (r"/tfenv/builds", BuildsHandler),
    (r"/tfenv/builds/(?P<build_id>[^/]+)", BuildHandler),
    (r"/tfenv/builds/(?P<build_id>[^/]+)/events", BuildEventsHandler),
]
