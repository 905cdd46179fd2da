"""The base of every tfenv handler: authenticated, authorized, JSON errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado.iostream import StreamClosedError

from jupyter_tfenv.errors import (
    DockerUnavailableError,
    TFEnvError,
    as_tfenv_error,
    engine_unreachable,
)

#: The authorization resource of every tfenv endpoint. Public API: with
#: ``jupyter_tfenv.server.hub.TFEnvHubAuthorizer`` the JupyterHub scopes ``custom:tfenv:read``,
#: ``custom:tfenv:write`` and ``custom:tfenv:execute`` grant its actions, so it stays
#: stable. Reads need ``read``, pulls and deletes ``write``, anything that starts a
#: container ``execute``.
AUTH_RESOURCE = "tfenv"


class TFEnvHandler(APIHandler):
    """Domain errors become JSON ``{"message": …, "reason": …}`` with a fitting status."""

    auth_resource = AUTH_RESOURCE

    @property
    def tfenv(self) -> Any:
        return self.settings["tfenv"]

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    async def write_events(self, events: AsyncIterator[dict[str, Any]]) -> None:
        """Server-sent events: each event as ``event: <type>`` with its JSON, flushed as it
        comes, to the end of ``events``; a browser that goes away ends only the stream (the
        job goes on)."""
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        try:
            async for event in events:
                kind = event.get("type", "progress")
                self.write(f"event: {kind}\ndata: {json.dumps(event, default=str)}\n\n")
                await self.flush()
        except StreamClosedError:
            return
        self.finish()

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # A refusal or a missing object (4xx) is an answer, not a server fault: the access
        # log line has its status; no "Uncaught exception" traceback for it.
        value = as_tfenv_error(value)
        if isinstance(value, TFEnvError) and value.http_status < 500:
            return
        if isinstance(value, DockerUnavailableError) or engine_unreachable(value):
            # An outage of the engine is a state, not a bug here: one line, no traceback.
            self.log.warning("tfenv: %s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = as_tfenv_error(kwargs.get("exc_info", (None, None, None))[1])
        if isinstance(exc, TFEnvError):
            self.set_status(exc.http_status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": exc.message, "reason": type(exc).__name__}))
            return
        super().write_error(status_code, **kwargs)
