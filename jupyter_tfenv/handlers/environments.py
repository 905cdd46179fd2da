"""``/tfenv/environments``: the catalog as the frontend sees it."""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import TFEnvHandler


class EnvironmentsHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        catalog = self.tfenv.catalog
        self.write_json(
            {
                "environments": [env.summary() for env in catalog.all()],
                "problems": [p.to_dict() for p in catalog.problems()],
            }
        )


class EnvironmentHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, env_id: str) -> None:
        self.write_json(self.tfenv.catalog.get(env_id).summary())


routes = [
    (r"/tfenv/environments", EnvironmentsHandler),
    (r"/tfenv/environments/(?P<env_id>[a-z0-9][a-z0-9._-]{0,62})", EnvironmentHandler),
]
