"""The base of every tfenv handler: authenticated, authorized, JSON errors."""

from __future__ import annotations

import json
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..errors import CatalogError, TFEnvError, UnknownEnvironmentError

#: The authorization resource of every tfenv endpoint. Public API: JupyterHub scopes such
#: as ``custom:jupyter_server:read:tfenv`` name it, so it stays stable.
AUTH_RESOURCE = "tfenv"


class TFEnvHandler(APIHandler):
    """Domain errors become JSON ``{"message": …}`` with a status that fits them."""

    auth_resource = AUTH_RESOURCE

    @property
    def tfenv(self) -> Any:
        return self.settings["tfenv"]

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, TFEnvError):
            status = (
                404
                if isinstance(exc, UnknownEnvironmentError)
                else (400 if isinstance(exc, CatalogError) else 500)
            )
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": exc.message, "reason": type(exc).__name__}))
            return
        super().write_error(status_code, **kwargs)


def not_found(message: str) -> web.HTTPError:
    return web.HTTPError(404, message)
