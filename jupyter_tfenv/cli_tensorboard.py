"""``jupyter tfenv tensorboard <env>`` (and ``--compare``): a TensorBoard for terminal users.

TensorBoards belong to a running Jupyter server (it proxies them behind its own login and
stops them when idle or when it stops), so this command asks one: it finds the servers of
this user through jupyter_server's runtime files (``jupyter server list``), opens the
TensorBoard through the first one that has jupyter_tfenv (``POST /tfenv/tensorboards``:
started, or reused when it runs), waits until it answers and prints its URL. Without a
running server it says how to start one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

import requests

#: Seconds to wait for a TensorBoard that is starting (it imports TensorFlow first).
DEFAULT_WAIT = 180.0


class NoServer(Exception):
    """No running Jupyter server with jupyter_tfenv answered."""


def running_servers(runtime_dir: str | None = None) -> list[dict[str, Any]]:
    """jupyter_server's runtime files of this user's running servers (newest first)."""
    from jupyter_server.serverapp import list_running_servers  # noqa: PLC0415 - slow import

    servers = list(list_running_servers(runtime_dir))
    return sorted(servers, key=lambda s: -int(s.get("pid") or 0))


def _headers(server: dict[str, Any]) -> dict[str, str]:
    token = server.get("token") or ""
    return {"Authorization": f"token {token}"} if token else {}


def _url(server: dict[str, Any]) -> str:
    url = str(server.get("url") or "")
    return url if url.endswith("/") else url + "/"


def _message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message") or response.text)
    except ValueError:
        return response.text.strip()[:300] or f"HTTP {response.status_code}"


def open_through(
    servers: Iterable[dict[str, Any]], body: dict[str, Any], *, timeout: float = 30.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST the view to the first server that serves ``/tfenv/tensorboards``; returns the
    server and the TensorBoard. A refusal (4xx/5xx but 404 of a server without tfenv)
    raises ``RuntimeError`` with the server's message; no server raises :class:`NoServer`."""
    tried = []
    for server in servers:
        url = _url(server)
        try:
            response = requests.post(
                url + "tfenv/tensorboards", json=body, headers=_headers(server), timeout=timeout
            )
        except requests.RequestException as err:
            tried.append(f"{url} ({type(err).__name__})")
            continue
        if response.status_code == 404 and "application/json" not in response.headers.get(
            "Content-Type", ""
        ):
            tried.append(f"{url} (no jupyter_tfenv)")
            continue
        if response.status_code in (200, 202):
            return server, response.json()
        raise RuntimeError(f"{url}: {_message(response)}")
    raise NoServer(", ".join(tried))


def wait_until_running(
    server: dict[str, Any], board: dict[str, Any], *, wait: float, poll: float = 0.5
) -> dict[str, Any]:
    """Poll ``GET /tfenv/tensorboards/<name>`` until it runs, fails or ``wait`` passes."""
    deadline = time.monotonic() + wait
    url = f"{_url(server)}tfenv/tensorboards/{board['name']}"
    while board.get("state") == "starting" and time.monotonic() < deadline:
        time.sleep(poll)
        response = requests.get(url, headers=_headers(server), timeout=30)
        if response.status_code != 200:
            raise RuntimeError(_message(response))
        board = response.json()
    return board


def browser_url(server: dict[str, Any], board: dict[str, Any]) -> str:
    """The TensorBoard's address as a browser opens it (with the server's token, as
    ``jupyter server list`` prints it)."""
    base = _url(server)
    path = str(board["url"])
    root = str(server.get("base_url") or "/")
    relative = path[len(root) :] if path.startswith(root) else path.lstrip("/")
    token = server.get("token") or ""
    return base + relative + (f"?token={token}" if token else "")


def cmd_tensorboard(args: argparse.Namespace) -> int:
    if bool(args.env) == bool(args.compare):
        print(
            "jupyter tfenv tensorboard: name one environment, or --compare for all of your "
            "log folders side by side.",
            file=sys.stderr,
        )
        return 2
    body: dict[str, Any] = {"view": "compare"} if args.compare else {"environment": args.env}
    try:
        server, board = open_through(running_servers(args.runtime_dir), body)
        if not args.no_wait:
            board = wait_until_running(server, board, wait=args.wait)
    except NoServer as err:
        tried = f" (tried: {err})" if str(err) else ""
        print(
            "jupyter tfenv tensorboard: no running Jupyter server with jupyter_tfenv was "
            f"found{tried}. TensorBoards run through your Jupyter server, which proxies them "
            "behind its login: start one (`jupyter lab`), then run this command again. "
            "`jupyter server list` shows the running ones.",
            file=sys.stderr,
        )
        return 1
    except (RuntimeError, requests.RequestException) as err:
        print(f"jupyter tfenv tensorboard: {err}", file=sys.stderr)
        return 2
    url = browser_url(server, board)
    if args.json:
        print(json.dumps({**board, "browser_url": url}, indent=2))
    elif board.get("state") == "error":
        print(f"jupyter tfenv tensorboard: {board.get('message')}", file=sys.stderr)
    elif board.get("state") == "starting":
        print(f"{url}\n(TensorBoard is still starting; the page answers once it runs.)")
    else:
        print(url)
    return 2 if board.get("state") == "error" else 0


def add_tensorboard_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``jupyter tfenv tensorboard`` in the CLI's parser."""
    p = sub.add_parser(
        "tensorboard",
        parents=[common],
        help="open an environment's TensorBoard (or --compare) through the running server; "
        "prints its URL",
    )
    p.add_argument("env", nargs="?", help="environment id")
    p.add_argument(
        "--compare", action="store_true", help="all of your log folders, each a run group"
    )
    p.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT,
        help=f"seconds to wait until it runs (default {DEFAULT_WAIT:g})",
    )
    p.add_argument("--no-wait", action="store_true", help="print the URL while it starts")
    p.add_argument("--runtime-dir", help="jupyter_server's runtime folder (default: Jupyter's)")
    p.set_defaults(func=cmd_tensorboard)
