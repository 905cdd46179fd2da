"""Errors a person can act on.

Every error raised by jupyter_tfenv says what is wrong and what to do about it.
``KernelStartError`` is also a tornado ``HTTPError`` so that jupyter_server answers a
failed ``POST /api/kernels`` with our message (JupyterLab shows it in its "Error
Starting Kernel" dialog) instead of "Unhandled error" and a traceback.
"""

from __future__ import annotations

from tornado.web import HTTPError


class TFEnvError(Exception):
    """Base class of jupyter_tfenv's errors; ``str(err)`` is the whole message.

    ``http_status`` is what the REST API answers with when the error reaches a handler.
    """

    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class CatalogError(TFEnvError):
    """An environment entry or a catalog file is invalid."""

    http_status = 400


class PinningError(CatalogError):
    """An image reference floats (``:latest``, no tag) where a pinned one is required."""


class UnknownEnvironmentError(TFEnvError):
    """No environment in the catalog has that id."""

    http_status = 404


class DockerUnavailableError(TFEnvError):
    """The Docker engine cannot be reached."""

    http_status = 503


class NotFoundError(TFEnvError):
    """A kernel, pull or other object the request names does not exist (for this user)."""

    http_status = 404


class KernelStartError(HTTPError):
    """A tfenv kernel could not start. ``logs`` holds the container's last lines, if any."""

    def __init__(self, message: str, *, logs: str = "", status_code: int = 500) -> None:
        full = message
        if logs.strip():
            full = f"{message}\n\nLast lines of the container's log:\n{logs.rstrip()}"
        # No positional args after log_message: tornado would %-format it otherwise.
        super().__init__(status_code, full, reason="tfenv kernel failed to start")
        self.message = full
        self.logs = logs

    def __str__(self) -> str:
        return self.message
