"""Errors a person can act on.

Every error raised by jupyter_tfenv says what is wrong and what to do about it.
``KernelStartError`` is also a tornado ``HTTPError`` so that jupyter_server answers a
failed ``POST /api/kernels`` with our message (JupyterLab shows it in its "Error
Starting Kernel" dialog) instead of "Unhandled error" and a traceback.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket

import requests
from docker.errors import DockerException
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


#: What to do when the engine does not answer (every such message ends with it).
ENGINE_HINT = (
    "Start the Docker engine (`sudo systemctl start docker`, or Docker Desktop), or point "
    "DOCKER_HOST at a running one. Running kernels are not stopped by this server while "
    "it is away; tfenv answers again as soon as it is back."
)


def engine_unreachable(err: BaseException | None) -> bool:
    """Whether ``err`` (or what caused it) says the Docker engine could not be asked at
    all: its socket is missing or refuses, the connection broke or timed out, the SDK
    could not fetch the API version. A refusal the engine answered (``APIError``) is not.
    """
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, DockerUnavailableError):
            return True
        if isinstance(err, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        if isinstance(err, DockerException) and "server API version" in str(err):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


#: What to do when the server's user may not use the engine's socket.
PERMISSION_HINT = (
    "On a single-user machine add the server's user to the 'docker' group; on a shared "
    "server use the tfenv broker instead of giving users the socket (it is root on the host)."
)

_log = logging.getLogger("jupyter_tfenv")


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and what is behind it: its cause or context, the exceptions in its
    ``args`` (requests and urllib3 wrap the socket's error there) and a ``MaxRetryError``'s
    ``reason``; breadth first, each once."""
    found: list[BaseException] = []
    todo: list[BaseException] = [err]
    while todo and len(found) < 32:
        item = todo.pop(0)
        if any(item is seen for seen in found):
            continue
        found.append(item)
        nested = [item.__cause__, item.__context__, getattr(item, "reason", None)]
        nested += [arg for arg in item.args if isinstance(arg, BaseException)]
        todo += [x for x in nested if isinstance(x, BaseException)]
    return found


def unreachable_reason(err: BaseException) -> str:
    """What failed, in words: why the Docker engine could not be asked (``err`` as the
    Docker SDK, requests or urllib3 raise it). The raw exception is not part of it."""
    causes = _causes(err)
    for kind, words in (
        (FileNotFoundError, "the socket does not exist (is dockerd running?)"),
        (PermissionError, "permission denied (is this user in the docker group?)"),
        (ConnectionRefusedError, "connection refused (is dockerd running?)"),
        (socket.gaierror, "its host name does not resolve"),
    ):
        if any(isinstance(c, kind) for c in causes):
            return words
    if any(isinstance(c, requests.exceptions.ConnectTimeout) for c in causes):
        return "it did not accept the connection in time"
    if any(isinstance(c, TimeoutError | requests.exceptions.Timeout) for c in causes):
        return "it stopped answering (no reply in time)"
    if any(isinstance(c, ConnectionError | http.client.RemoteDisconnected) for c in causes):
        return "it closed the connection (is it restarting?)"
    # An error that lost its chain (a message passed on as text): its words still tell.
    text = " ".join(str(c) for c in causes).lower()
    for needle, words in (
        ("no such file or directory", "the socket does not exist (is dockerd running?)"),
        ("permission denied", "permission denied (is this user in the docker group?)"),
        ("connection refused", "connection refused (is dockerd running?)"),
        ("timed out", "it stopped answering (no reply in time)"),
        ("connection reset", "it closed the connection (is it restarting?)"),
        ("connection aborted", "it closed the connection (is it restarting?)"),
    ):
        if needle in text:
            return words
    return "it did not answer"


def unreachable_error(err: BaseException, where: str | None = None) -> DockerUnavailableError:
    """``err`` (an :func:`engine_unreachable` error) as the one message users get: which
    engine, what failed in words, and what to do. The raw exception goes to the log
    (debug) only."""
    if isinstance(err, DockerUnavailableError):
        return err
    host = where or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    reason = unreachable_reason(err)
    hint = PERMISSION_HINT if reason.startswith("permission denied") else ENGINE_HINT
    _log.debug("tfenv: the Docker engine at %s is unreachable: %r", host, err)
    return DockerUnavailableError(f"Cannot reach the Docker engine at {host}: {reason}. {hint}")


def as_tfenv_error(err: BaseException | None) -> BaseException | None:
    """``err`` unchanged, or a ``DockerUnavailableError`` when the engine was unreachable:
    the one place where a raw SDK or ``requests`` error becomes an answer (503)."""
    if err is not None and not isinstance(err, TFEnvError | HTTPError) and engine_unreachable(err):
        return unreachable_error(err)
    return err


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


class OneLineRefusals(logging.Filter):
    """Log a refused kernel start (a ``KernelStartError``) as one warning, not a traceback.

    jupyter_client's ``in_pending_state`` wrapper logs every exception of a kernel start
    with ``log.exception``, once per wrapped layer (twice in jupyter_server): for a
    refusal the server expects and explains (a GPU environment on an engine without the
    NVIDIA runtime, an image not pulled) that is two tracebacks of the same message.
    Installed on the server's logger; other records pass unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last: tuple[int, str] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        err = record.exc_info[1] if record.exc_info else None
        if not isinstance(err, KernelStartError):
            return True
        key = (id(err), err.message)
        if key == self._last:
            return False  # the same refusal, logged again by an outer layer
        self._last = key
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        record.msg = "tfenv: kernel not started: %s"
        record.args = (err.message,)
        return True


class BackendError(TFEnvError):
    """A refused or failed request: ``status`` and ``reason`` go into the HTTP answer,
    ``logs`` (a kernel's last lines) too. The broker's ``BrokerError`` is this class."""

    def __init__(
        self, message: str, *, status: int = 400, reason: str = "", logs: str = ""
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.reason = reason or _REASONS.get(status, "error")
        self.logs = logs


_REASONS = {
    400: "bad request",
    403: "forbidden",
    404: "not found",
    409: "conflict",
    429: "quota exceeded",
    500: "internal error",
    503: "docker unavailable",
}
