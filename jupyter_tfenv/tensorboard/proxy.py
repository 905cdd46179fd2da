"""Proxying HTTP to a TensorBoard over its bridge's Unix socket (or, for a Kubernetes
TensorBoard pod, its pod IP over TCP), streaming.

tornado's HTTP client connects through a resolver; :class:`SocketResolver` resolves a
TensorBoard's made-up host name (``<name>.tensorboard.invalid``) to the address family
``AF_UNIX`` and the socket path, so the client's own HTTP/1.1 code (keep-alive, chunked
bodies, timeouts) talks to the socket. Responses stream: each chunk TensorBoard sends is
written to the browser as it comes (``streaming_callback``), with TensorBoard's status and
headers (hop-by-hop ones left out, ``Content-Encoding`` passed through undecoded).

What does not reach TensorBoard: the Jupyter token (``Authorization``, ``Cookie``,
``X-XSRFToken``, ``?token=``) and the request's ``Host``. TensorBoard 2.x uses plain HTTP
(GET, and POST for some ``data/`` queries, which it protects itself with its
``X-XSRF-Protected`` header); it opens no websocket.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Callable
from typing import Any

from tornado import httputil
from tornado.httpclient import HTTPRequest
from tornado.netutil import Resolver
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from jupyter_tfenv.errors import TFEnvError

HOST_SUFFIX = ".tensorboard.invalid"
#: A ``socket_of`` answer that names a TCP address (:func:`tcp_target`).
TCP_PREFIX = "tcp:"
#: Headers of one connection, never forwarded (RFC 9110 7.6.1), and the server's own.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
#: The user's Jupyter credentials stay with the server.
CREDENTIALS = frozenset({"authorization", "cookie", "x-xsrftoken", "x-csrftoken"})
#: Response headers the server sets itself.
NOT_RETURNED = frozenset({"set-cookie", "server", "date"})


class TensorBoardUnreachable(TFEnvError):
    """TensorBoard's socket did not answer (502)."""

    http_status = 502


def tcp_target(ip: str, port: int) -> str:
    """What ``socket_of`` answers for a TensorBoard reached over TCP (a Kubernetes
    TensorBoard pod's IP and port) instead of a Unix socket path."""
    return f"{TCP_PREFIX}[{ip}]:{port}" if ":" in ip else f"{TCP_PREFIX}{ip}:{port}"


def address_of(target: str) -> tuple[int, Any]:
    """``(family, address)`` of a ``socket_of`` answer: a Unix socket path, or
    :func:`tcp_target`'s ``tcp:<ip>:<port>`` (an IP address only: nothing is looked up)."""
    if not target.startswith(TCP_PREFIX):
        return socket.AF_UNIX, target
    host, _, port = target[len(TCP_PREFIX) :].rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
        number = int(port)
    except ValueError:
        raise OSError(f"not a TensorBoard address: {target}") from None
    if ip.version == 6:
        return socket.AF_INET6, (str(ip), number, 0, 0)
    return socket.AF_INET, (str(ip), number)


class SocketResolver(Resolver):
    """``<name>.tensorboard.invalid`` → the TensorBoard's Unix socket (``socket_of``), or
    its pod's IP and port (``tcp:<ip>:<port>``, Kubernetes)."""

    def initialize(self, socket_of: Callable[[str], str]) -> None:
        self.socket_of = socket_of

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        if not host.endswith(HOST_SUFFIX):
            raise OSError(f"not a TensorBoard host: {host}")
        return [address_of(self.socket_of(host[: -len(HOST_SUFFIX)]))]


def upstream_path(path: str | None, query: str) -> str:
    """The path TensorBoard sees: the part after ``/tfenv/tensorboard/<name>``, with the
    query string less the Jupyter ``token``."""
    target = path or "/"
    if not target.startswith("/"):
        target = "/" + target
    params = [
        (k, v) for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k != "token"
    ]
    return target + ("?" + urllib.parse.urlencode(params) if params else "")


def forwarded_headers(headers: httputil.HTTPHeaders) -> httputil.HTTPHeaders:
    out = httputil.HTTPHeaders()
    for key, value in headers.get_all():
        lowered = key.lower()
        if lowered in HOP_BY_HOP or lowered in CREDENTIALS:
            continue
        out.add(key, value)
    return out


class TensorBoardProxy:
    """One HTTP client for every TensorBoard of the server."""

    def __init__(self, socket_of: Callable[[str], str]) -> None:
        self.client = SimpleAsyncHTTPClient(
            force_instance=True,
            resolver=SocketResolver(socket_of=socket_of),
            max_clients=32,
            max_body_size=1024**3,
        )

    def close(self) -> None:
        self.client.close()

    async def forward(self, handler: Any, name: str, path: str | None) -> None:
        """Forward ``handler``'s request to TensorBoard ``name`` and stream the answer."""
        request = handler.request
        started = False
        status_line: list[str] = []
        header_lines: list[str] = []

        def on_header(line: str) -> None:
            nonlocal started
            if not status_line:
                status_line.append(line)
                return
            if line.strip():
                header_lines.append(line)
                return
            start = httputil.parse_response_start_line(status_line[0].strip())
            if start.code == 100:  # an interim answer: the real one follows
                status_line.clear()
                header_lines.clear()
                return
            handler.clear()
            handler.set_status(start.code, start.reason)
            parsed = httputil.HTTPHeaders.parse("".join(header_lines))
            for key, value in parsed.get_all():
                lowered = key.lower()
                if lowered in NOT_RETURNED or (
                    lowered in HOP_BY_HOP and lowered != "content-length"
                ):
                    continue
                handler.add_header(key, value)
            started = True

        def on_chunk(chunk: bytes) -> None:
            handler.write(chunk)
            handler.flush()

        body = request.body if request.method in ("POST", "PUT", "PATCH") else None
        upstream = HTTPRequest(
            f"http://{name}{HOST_SUFFIX}{upstream_path(path, request.query)}",
            method=request.method,
            headers=forwarded_headers(request.headers),
            body=body if body is not None else (b"" if request.method == "POST" else None),
            header_callback=on_header,
            streaming_callback=on_chunk,
            decompress_response=False,
            follow_redirects=False,
            connect_timeout=10,
            request_timeout=600,
            allow_nonstandard_methods=True,
        )
        try:
            response = await self.client.fetch(upstream, raise_error=False)
        except OSError as err:  # refused, reset, unreachable: a pod or socket that is gone
            if started:
                raise
            raise TensorBoardUnreachable(
                f"TensorBoard '{name}' did not answer ({err}). It may have stopped: open it again."
            ) from err
        if not started:
            raise TensorBoardUnreachable(
                f"TensorBoard '{name}' did not answer ({response.error or response.code}). "
                "It may have stopped: open it again."
            )
        handler.finish()
