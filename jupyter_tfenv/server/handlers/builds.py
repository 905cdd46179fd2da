"""``/tfenv/builds``: builds of derived environments the server runs (the panel's Build
action), as JSON and as server-sent events, like ``/tfenv/pulls``."""

from __future__ import annotations

from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

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
        await self.write_events(_job(self, build_id).events())


routes = [
    (r"/tfenv/builds", BuildsHandler),
    (r"/tfenv/builds/(?P<build_id>[^/]+)", BuildHandler),
    (r"/tfenv/builds/(?P<build_id>[^/]+)/events", BuildEventsHandler),
]
