"""``/tfenv/tensorboards`` (start, list, state, stop) and ``/tfenv/tensorboard/<name>/``,
the proxy to a TensorBoard ([tensorboard.md](../../../docs/tensorboard.md))."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from tornado import web

from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.server.handlers.base import AUTH_RESOURCE, TFEnvHandler


class _Boards:
    """The server's TensorBoards (``settings["tfenv_tensorboards"]``) and their proxy."""

    settings: Any

    @property
    def boards(self) -> Any:
        return self.settings["tfenv_tensorboards"]

    @property
    def proxy(self) -> Any:
        return self.settings["tfenv_tensorboard_proxy"]


class TensorBoardsHandler(_Boards, TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        base = self.base_url
        boards = await self.boards.listing()
        self.write_json({"tensorboards": [b.to_dict(base) for b in boards]})

    @web.authenticated
    @authorized(action="execute")
    async def post(self) -> None:
        """Start the TensorBoard of a view (202), or reuse the one that runs (200)."""
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        board, started = await self.boards.open(body)
        self.write_json(board.to_dict(self.base_url), status=202 if started else 200)


class TensorBoardHandler(_Boards, TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        self.write_json((await self.boards.state(name)).to_dict(self.base_url))

    @web.authenticated
    @authorized(action="write")
    async def delete(self, name: str) -> None:
        await self.boards.stop(name)
        self.set_status(204)
        self.finish()


class TensorBoardProxyHandler(_Boards, JupyterHandler):
    """TensorBoard's pages and ``data/`` endpoints, behind the server's authentication
    and ``custom:tfenv:read``. Each request is activity (the idle timeout)."""

    auth_resource = AUTH_RESOURCE

    def check_xsrf_cookie(self) -> None:
        """TensorBoard's own page sends its POSTs (``data/`` queries, which change
        nothing) without Jupyter's XSRF token; TensorBoard itself requires its
        ``X-XSRF-Protected`` header on them, which a cross-site form cannot set."""

    async def _forward(self, name: str, path: str | None) -> None:
        if path is None:
            # TensorBoard's page loads its parts by relative URLs: it needs the slash.
            self.redirect(self.request.path + "/", permanent=False)
            return
        await self.boards.prepare_proxy(name)
        self.boards.ready_socket(name)
        self.boards.touch(name)
        await self.proxy.forward(self, name, path)

    @web.authenticated
    @authorized
    async def get(self, name: str, path: str | None = None) -> None:
        await self._forward(name, path)

    @web.authenticated
    @authorized
    async def post(self, name: str, path: str | None = None) -> None:
        await self._forward(name, path)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, TFEnvError):
            self.clear()
            self.set_status(exc.http_status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": exc.message, "reason": type(exc).__name__}))
            return
        super().write_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, TFEnvError):
            self.log.warning("tfenv: %s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)


_NAME = r"(?P<name>[^/]+)"
routes = [
    (r"/tfenv/tensorboards", TensorBoardsHandler),
    (rf"/tfenv/tensorboards/{_NAME}", TensorBoardHandler),
    (rf"/tfenv/tensorboard/{_NAME}(?P<path>/.*)?", TensorBoardProxyHandler),
]
