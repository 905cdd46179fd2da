"""``/tfenv/logs``: the current user's TensorBoard log runs of an environment; delete
one with its ETag (:mod:`jupyter_tfenv.checkpoints.logruns`).

The user is the server's kernel owner, never a request field; the run to delete is
named in the query (``?run=``: ``.`` is a run, and a ``.`` path segment would not
survive URL normalization) and looked up among what a fresh walk found.
"""

from __future__ import annotations

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_tfenv.checkpoints.logruns import LogRunNameRefused, LogRuns
from jupyter_tfenv.server.handlers.base import TFEnvHandler


class EnvironmentLogsHandler(TFEnvHandler):
    def _runs(self) -> LogRuns:
        return LogRuns(self.tfenv.checkpoints())

    @web.authenticated
    @authorized
    async def get(self, environment: str) -> None:
        """The environment's log runs: name, last write, size, etag."""
        self.write_json(await self._runs().list(environment))

    @web.authenticated
    @authorized(action="write")
    async def delete(self, environment: str) -> None:
        """Delete the run ``?run=<name>``; needs ``If-Match: "<etag>"`` as listed (428
        without it, 412 when the run changed since)."""
        name = self.get_query_argument("run", None)
        if name is None:
            raise LogRunNameRefused(
                "Name the run to delete in the query: DELETE /tfenv/logs/<environment>?run=<name>."
            )
        result = await self._runs().delete(environment, name, self.request.headers.get("If-Match"))
        self.write_json(result)


routes = [
    (r"/tfenv/logs/(?P<environment>[^/]+)", EnvironmentLogsHandler),
]
