"""The broker's HTTP API (docs/broker.md): thin tornado handlers over :class:`TFEnvBroker`.

Every request is authenticated in ``prepare`` (the hub token in ``Authorization``; the
user name comes from the token only), which runs when the headers have arrived and before
any of the body is read (``stream_request_body``): a request without a token, or with a
``Content-Length`` over ``c.TFEnvBroker.max_body_size``, is answered (403, 413) and its
connection closed without reading the body; a body that grows beyond the limit while it
arrives gets 413 too. Errors are JSON ``{"message", "reason"}`` (plus ``logs`` for a
kernel that failed to start).
"""

from __future__ import annotations

import json
import re
import traceback
from typing import TYPE_CHECKING, Any

from docker.errors import APIError
from tornado import web

from jupyter_tfenv.broker.policy import BrokerError, check_signal, parse_json_body
from jupyter_tfenv.broker.sweep import adopt_kernel, keep_kernel
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.errors import TFEnvError, as_tfenv_error, engine_unreachable

if TYPE_CHECKING:
    from jupyter_tfenv.broker.app import TFEnvBroker

_TOKEN_RE = re.compile(r"^(?:token|bearer)\s+(\S+)\s*$", re.IGNORECASE)
KERNEL = r"(?P<kernel_id>[^/]+)"
#: A kernel id as a server names it (POST .../keep's held_as).
HELD_AS_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
ENV = r"(?P<env_id>[^/]+)"


@web.stream_request_body
class BrokerHandler(web.RequestHandler):
    """Authenticates the caller and answers errors as JSON."""

    caller: Caller | None = None
    _body: bytearray | None = None

    @property
    def broker(self) -> TFEnvBroker:
        broker: TFEnvBroker = self.settings["broker"]
        return broker

    def check_xsrf_cookie(self) -> None:
        """Token-authenticated API: no cookies, no XSRF."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")

    async def prepare(self) -> None:
        header = self.request.headers.get("Authorization", "")
        match = _TOKEN_RE.match(header)
        token = match.group(1) if match else None
        if not token:
            # Answered now, without a hub request and before the body is read.
            await self.broker.authenticate(None)
        self._body = bytearray()
        limit = self.broker.max_body_size
        length = self.request.headers.get("Content-Length", "")
        if length.strip().isdigit() and int(length) > limit:
            raise _too_large(limit)
        self.caller = await self.broker.authenticate(token)

    def data_received(self, chunk: bytes) -> None:
        """Collect the body, up to ``max_body_size`` (then 413, and the rest is not read)."""
        if self._finished or self._body is None:
            return
        limit = self.broker.max_body_size
        if len(self._body) + len(chunk) > limit:
            self._body = None
            err = _too_large(limit)
            self.send_error(err.http_status, exc_info=(type(err), err, None))
            return
        self._body.extend(chunk)

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def body_json(self) -> dict[str, Any]:
        return parse_json_body(bytes(self._body or b""))

    @property
    def me(self) -> Caller:
        assert self.caller is not None
        return self.caller

    def _error_parts(self, err: BaseException | None, status: int) -> tuple[str, str, str]:
        err = as_tfenv_error(err)
        if isinstance(err, BrokerError):
            return err.message, err.reason, err.logs
        if isinstance(err, web.HTTPError):
            message = str(getattr(err, "message", "") or err.log_message or self._reason)
            return message, err.reason or self._reason, str(getattr(err, "logs", "") or "")
        if isinstance(err, TFEnvError):
            return err.message, type(err).__name__, ""
        if isinstance(err, APIError):
            return f"Docker failed: {err.explanation or err}", "docker error", ""
        if err is not None:
            return f"Unexpected error in the tfenv broker: {type(err).__name__}: {err}", "error", ""
        return self._reason, self._reason, ""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        err = exc_info[1] if exc_info else None
        message, reason, logs = self._error_parts(err, status_code)
        body: dict[str, Any] = {"message": message, "reason": reason}
        if logs:
            body["logs"] = logs
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(body))

    def _handle_request_exception(self, e: BaseException) -> None:
        e = as_tfenv_error(e) or e  # an unreachable engine: DockerUnavailableError (503)
        if isinstance(e, BrokerError | TFEnvError) and not isinstance(e, web.HTTPError):
            status = int(getattr(e, "http_status", 500))
            if status >= 500:
                # An explained failure (Docker, storage, a kernel that exited): its message
                # says it all; a traceback only where the cause is not a tfenv error.
                cause = e.__cause__
                detail = ""
                if (
                    cause is not None
                    and not isinstance(cause, TFEnvError | APIError)
                    and not engine_unreachable(cause)  # an outage: its message says it all
                ):
                    detail = "\n" + "".join(traceback.format_exception(cause))
                self.broker.log.error(
                    "tfenv-broker: %s %s failed: %s%s",
                    self.request.method,
                    self.request.path,
                    e,
                    detail,
                )
            if self._finished:
                return
            self.send_error(status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


def _too_large(limit: int) -> BrokerError:
    return BrokerError(
        f"The request body is larger than the broker accepts ({limit} bytes, "
        "c.TFEnvBroker.max_body_size); its requests are small JSON objects.",
        status=413,
        reason="body too large",
    )


class MeHandler(BrokerHandler):
    async def get(self) -> None:
        self.write_json(await self.broker.me(self.me))


class GpusHandler(BrokerHandler):
    async def get(self) -> None:
        self.write_json(await self.broker.gpus(self.me))


class EnvironmentsHandler(BrokerHandler):
    async def get(self) -> None:
        self.write_json(await self.broker.environments(self.me))


class ProbeHandler(BrokerHandler):
    async def get(self, env_id: str) -> None:
        raw = self.get_query_argument("refresh", "0").lower()
        if raw not in ("0", "1", "true", "false", "yes", "no"):
            raise BrokerError("refresh must be 1 or 0 (true or false).")
        result = await self.broker.probe(self.me, env_id, refresh=raw in ("1", "true", "yes"))
        self.write_json(result)


class KernelsHandler(BrokerHandler):
    async def get(self) -> None:
        self.write_json(await self.broker.list_kernels(self.me))

    async def post(self) -> None:
        self.write_json(await self.broker.start_kernel(self.me, self.body_json()), status=201)


class RuntimeHandler(BrokerHandler):
    async def post(self, kernel_id: str) -> None:
        body = self.body_json()
        extra = [k for k in body if k != "restart"]
        if extra:
            raise BrokerError(
                f"field {', '.join(repr(k) for k in sorted(extra))} is not accepted: send only "
                "'restart'.",
                reason="field not accepted",
            )
        restart = body.get("restart", False)
        if not isinstance(restart, bool):
            raise BrokerError("'restart' must be true or false.")
        self.write_json(
            await self.broker.prepare_connection(self.me, kernel_id, restart), status=200
        )


class KernelHandler(BrokerHandler):
    async def get(self, kernel_id: str) -> None:
        self.write_json(await self.broker.kernel(self.me, kernel_id))

    async def delete(self, kernel_id: str) -> None:
        raw = self.get_query_argument("restart", "0").lower()
        keep = raw in ("1", "true", "yes")
        await self.broker.delete_kernel(self.me, kernel_id, keep_runtime=keep)
        self.set_status(204)
        self.finish()


class KeepHandler(BrokerHandler):
    async def post(self, kernel_id: str) -> None:
        body = self.body_json()
        held_as = body.get("held_as")
        if set(body) - {"held_as"} or not (
            held_as is None or (isinstance(held_as, str) and HELD_AS_RE.match(held_as))
        ):
            raise BrokerError(
                "Send an empty object (the kernel id says which kernel), or 'held_as': the "
                "kernel id a taken warm-pool pod runs under in your server (letters, digits, "
                "'-', at most 64)."
            )
        self.write_json(
            await keep_kernel(self.broker.kernel_backend, self.me, kernel_id, held_as=held_as)
        )


class AdoptHandler(BrokerHandler):
    async def post(self, kernel_id: str) -> None:
        if self.body_json():
            raise BrokerError("Send an empty object: the kernel id says which kernel.")
        self.write_json(await adopt_kernel(self.broker.kernel_backend, self.me, kernel_id))


class SignalHandler(BrokerHandler):
    async def post(self, kernel_id: str) -> None:
        signum = check_signal(self.body_json())
        await self.broker.signal(self.me, kernel_id, signum)
        self.set_status(204)
        self.finish()


class LogsHandler(BrokerHandler):
    async def get(self, kernel_id: str) -> None:
        raw = self.get_query_argument("tail", "30")
        if not raw.isdigit() or not 0 < int(raw) <= 10000:
            raise BrokerError("tail must be a number of lines from 1 to 10000.")
        self.write_json(await self.broker.logs(self.me, kernel_id, int(raw)))


class LiveHandler(BrokerHandler):
    async def get(self, kernel_id: str) -> None:
        self.write_json(await self.broker.live(self.me, kernel_id))


class CheckpointsHandler(BrokerHandler):
    async def get(self) -> None:
        envs = self.get_query_arguments("environment")
        if not envs or len(envs) > 64:
            raise BrokerError("Name 1 to 64 environments: ?environment=<id>&environment=<id>")
        self.write_json(await self.broker.checkpoints(self.me, envs))


class CheckpointDeleteHandler(BrokerHandler):
    async def post(self, env_id: str) -> None:
        body = self.body_json()
        paths = body.get("paths")
        if set(body) != {"paths"} or not isinstance(paths, list) or not paths:
            raise BrokerError("Send {'paths': [relative paths under the checkpoint folder]}.")
        for path in paths:
            if (
                not isinstance(path, str)
                or not path
                or path.startswith("/")
                or ".." in path.split("/")
                or "\0" in path
            ):
                raise BrokerError(f"Not a relative path below the checkpoint folder: {path!r}.")
        self.write_json(await self.broker.delete_checkpoint(self.me, env_id, paths))


class TensorBoardsHandler(BrokerHandler):
    async def get(self) -> None:
        self.write_json(await self.broker.tensorboards.listing(self.me))

    async def post(self) -> None:
        board, started = await self.broker.tensorboards.open(self.me, self.body_json())
        self.write_json({**board, "started": started}, status=202 if started else 200)


class TensorBoardHandler(BrokerHandler):
    async def get(self, name: str) -> None:
        self.write_json(await self.broker.tensorboards.get(self.me, name))

    async def delete(self, name: str) -> None:
        await self.broker.tensorboards.stop(self.me, name)
        self.set_status(204)
        self.finish()


class NotFoundHandler(BrokerHandler):
    """Anything else: 404 (after authentication, so that the API is not probed freely)."""

    async def get(self, *args: Any) -> None:
        raise BrokerError(
            f"No such broker endpoint: {self.request.method} {self.request.path}.",
            status=404,
            reason="no such endpoint",
        )

    post = put = delete = patch = get


routes: list[tuple[str, type[BrokerHandler]]] = [
    (r"/api/me", MeHandler),
    (r"/api/gpus", GpusHandler),
    (r"/api/environments", EnvironmentsHandler),
    (rf"/api/environments/{ENV}/probe", ProbeHandler),
    (r"/api/kernels", KernelsHandler),
    (rf"/api/kernels/{KERNEL}/runtime", RuntimeHandler),
    (rf"/api/kernels/{KERNEL}/signal", SignalHandler),
    (rf"/api/kernels/{KERNEL}/keep", KeepHandler),
    (rf"/api/kernels/{KERNEL}/adopt", AdoptHandler),
    (rf"/api/kernels/{KERNEL}/logs", LogsHandler),
    (rf"/api/kernels/{KERNEL}/live", LiveHandler),
    (rf"/api/kernels/{KERNEL}", KernelHandler),
    (r"/api/checkpoints", CheckpointsHandler),
    (rf"/api/checkpoints/{ENV}/delete", CheckpointDeleteHandler),
    (r"/api/tensorboards", TensorBoardsHandler),
    (r"/api/tensorboards/(?P<name>[^/]+)", TensorBoardHandler),
]


def make_web_app(broker: TFEnvBroker) -> web.Application:
    """The broker's tornado application: :data:`routes` at ``/`` and below the service
    prefix, unknown paths answered by :class:`NotFoundHandler`."""
    prefixes = ["/"]
    prefix = "/" + broker.service_prefix.strip("/") + "/"
    if prefix != "/":
        prefixes.append(prefix)
    handlers = [(f"{p.rstrip('/')}{path}", handler) for p in prefixes for path, handler in routes]
    return web.Application(
        handlers,
        broker=broker,
        log_function=_log_request,
        xsrf_cookies=False,
        compress_response=False,
        default_handler_class=NotFoundHandler,
    )


def _log_request(handler: web.RequestHandler) -> None:
    """Access log without query strings or headers (tokens never reach the log)."""
    status = handler.get_status()
    log = handler.application.settings["broker"].log
    method, path = handler.request.method, handler.request.path
    if status < 400:
        # Servers poll kernels while they start and panels poll live status: reads are
        # debug, changes (start, signal, delete, runtime folders) info.
        level = log.debug if method == "GET" else log.info
    elif status >= 500:
        level = log.error
    elif "/api/" not in path:
        level = log.debug  # the hub's "is it up?" request, scanners
    else:
        level = log.warning
    user = getattr(handler, "caller", None)
    level(
        "%d %s %s (%s) %.1fms",
        status,
        method,
        path,
        user.name if user is not None else "-",
        1000.0 * handler.request.request_time(),
    )
