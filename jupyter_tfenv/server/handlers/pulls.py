"""``/tfenv/pulls``: image pulls in progress, as JSON and as server-sent events."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_tfenv.server.handlers.base import TFEnvHandler


class PullsHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json({"pulls": [p.to_dict() for p in self.tfenv.pulls()]})


class PullHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, pull_id: str) -> None:
        self.write_json(self.tfenv.get_pull(pull_id).to_dict())

    @web.authenticated
    @authorized(action="write")
    async def delete(self, pull_id: str) -> None:
        """Cancel the pull (the transfer stops; a partial image is not reported done)."""
        pull = self.tfenv.get_pull(pull_id)
        await pull.cancel()
        self.write_json(pull.to_dict())


class PullEventsHandler(TFEnvHandler):
    """Server-sent events: a snapshot, then each progress event, then the final state."""

    @web.authenticated
    @authorized
    async def get(self, pull_id: str) -> None:
        await self.write_events(self.tfenv.get_pull(pull_id).events())


routes = [
    (r"/tfenv/pulls", PullsHandler),
    (r"/tfenv/pulls/(?P<pull_id>[^/]+)", PullHandler),
    (r"/tfenv/pulls/(?P<pull_id>[^/]+)/events", PullEventsHandler),
]
