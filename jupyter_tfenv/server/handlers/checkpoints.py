"""``/tfenv/checkpoints``: the current user's checkpoints, per environment; delete with an ETag.

The user is the server's kernel owner, never a request field; every name a request
carries is looked up among what a walk of the user's own folder found, and anything not
found there (missing, outside, a symlink, another user's) is the same 404.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_tfenv.server.handlers.base import TFEnvHandler


class CheckpointsHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        """Every environment of the user, with its checkpoints."""
        self.write_json(await self.tfenv.checkpoints().overview())


class EnvironmentCheckpointsHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, environment: str) -> None:
        self.write_json(await self.tfenv.checkpoints().environment(environment))


class CheckpointHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, environment: str, name: str) -> None:
        """One checkpoint with its files; its ETag is what a delete must send."""
        item = await self.tfenv.checkpoints().item(environment, name)
        self.set_header("ETag", f'"{item["etag"]}"')
        self.write_json(item)

    @web.authenticated
    @authorized(action="write")
    async def delete(self, environment: str, name: str) -> None:
        """Delete the checkpoint (a set: every kept checkpoint, its state file, leftovers).

        Needs ``If-Match: "<etag>"`` as listed: 428 without it, 412 when it changed.
        """
        result = await self.tfenv.checkpoints().delete(
            environment, name, self.request.headers.get("If-Match")
        )
        self.write_json(result)


routes = [
    (r"/tfenv/checkpoints", CheckpointsHandler),
    (r"/tfenv/checkpoints/(?P<environment>[^/]+)", EnvironmentCheckpointsHandler),
    (r"/tfenv/checkpoints/(?P<environment>[^/]+)/(?P<name>.+)", CheckpointHandler),
]
