"""A server's TensorBoards in broker mode (JupyterHub): started, read and closed by the
tfenv broker (``/api/tensorboards``, docs/broker.md), proxied by this server.

The broker runs the container as the user and lends its socket in a folder of the user's
on the broker host (``{runtime_root}/tb/{uid}/tb-<random>/tb.sock``), which this server,
on the same host, connects to. Before it does, it checks the path the broker named: that
shape, no symlink on the way, the per-uid folder not writable by anyone but root (the
broker), the TensorBoard's folder the user's own (0700). The user's uid is the one the
broker knows the token by (``GET /api/me``).

Activity is kept here as in local mode (every proxied request); the idle sweep closes a
TensorBoard unused for the server's idle timeout (the broker's ``DELETE``) and tells the
broker of the used ones (a ``GET`` each), which removes those no server asks for.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
import stat
import time
from typing import Any

from jupyter_tfenv.backends.broker import BrokerClient, BrokerNotFoundError
from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.tensorboard.container import SOCKET_NAME, valid_name
from jupyter_tfenv.tensorboard.manager import (
    TensorBoard,
    TensorBoardNotFound,
    TensorBoardNotReady,
    check_running,
    parse_view,
)
from jupyter_tfenv.tensorboard.proxy import address_of

_FOLDER_RE = re.compile(r"^tb-[0-9a-f]{12}$")


class TensorBoardSocketRefused(TFEnvError):
    """The broker named a socket this server does not trust (502)."""

    http_status = 502


def _seconds(text: Any) -> float:
    try:
        return datetime.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return time.time()


def from_broker(data: dict[str, Any]) -> TensorBoard:
    """The broker's object as this server's :class:`TensorBoard`."""
    socket = str(data.get("socket") or "")
    return TensorBoard(
        name=str(data.get("name", "")),
        view=str(data.get("view", "")),
        environment=data.get("environment"),
        image=str(data.get("image", "")),
        runtime_dir=os.path.dirname(socket),
        state=str(data.get("state", "error")),
        message=data.get("message"),
        started_at=_seconds(data.get("started_at")),
        last_activity=_seconds(data.get("last_activity")),
    )


def socket_problem(path: str, uid: int) -> str:
    """What is wrong with the socket path the broker named for the user ``uid``, or ''.
    BLOCKING (it looks at the folders)."""
    folder = os.path.dirname(path)
    user_root = os.path.dirname(folder)
    tb_root = os.path.dirname(user_root)
    if (
        not os.path.isabs(path)
        or os.path.basename(path) != SOCKET_NAME
        or not _FOLDER_RE.match(os.path.basename(folder))
        or os.path.basename(user_root) != str(uid)
        or os.path.basename(tb_root) != "tb"
    ):
        return "it is not <runtime_root>/tb/<your uid>/tb-<random>/tb.sock"
    if os.path.realpath(folder) != os.path.normpath(folder):
        return "a symlink is on its way"
    try:
        above, own = os.lstat(user_root), os.lstat(folder)
    except OSError as err:
        return f"its folder cannot be read ({err.strerror})"
    if not stat.S_ISDIR(above.st_mode) or above.st_uid != 0 or above.st_mode & 0o022:
        return f"{user_root} is not the broker's (root's, not writable by others)"
    if not stat.S_ISDIR(own.st_mode) or own.st_uid != uid or stat.S_IMODE(own.st_mode) != 0o700:
        return f"{folder} is not your own private folder (uid {uid}, mode 0700)"
    return ""


class BrokeredTensorBoards:
    """This server's TensorBoards at the broker: the same calls as
    :class:`~jupyter_tfenv.tensorboard.manager.TensorBoardManager`."""

    def __init__(
        self,
        broker: BrokerClient,
        *,
        base_url: str = "/",
        idle_timeout: float = 1800.0,
        log: Any = None,
    ) -> None:
        self.broker = broker
        self.base_url = base_url
        self.idle_timeout = idle_timeout
        self.log = log
        self._boards: dict[str, TensorBoard] = {}
        self._told: dict[str, float] = {}
        self._uid: int | None = None
        #: Kubernetes: the pod's ``address`` (``tcp:<ip>:6006``) per name, not a socket.
        self._addresses: dict[str, str] = {}

    def _keep(self, data: dict[str, Any]) -> TensorBoard:
        board = from_broker(data)
        self._addresses[board.name] = str(data.get("address") or "")
        old = self._boards.get(board.name)
        if old is not None:
            board.last_activity = max(board.last_activity, old.last_activity)
        self._boards[board.name] = board
        return board

    # -- reading ------------------------------------------------------------------------

    def boards(self) -> list[TensorBoard]:
        return sorted(self._boards.values(), key=lambda b: b.name)

    async def listing(self) -> list[TensorBoard]:
        answer = await self.broker.request("GET", "api/tensorboards")
        found = [self._keep(d) for d in (answer or {}).get("tensorboards") or []]
        names = {b.name for b in found}
        for name in [n for n in self._boards if n not in names]:
            del self._boards[name]
        return sorted(found, key=lambda b: b.name)

    def get(self, name: str) -> TensorBoard:
        board = self._boards.get(name) if valid_name(name) else None
        if board is None:
            raise TensorBoardNotFound(name)
        return board

    async def state(self, name: str) -> TensorBoard:
        """The broker's word on it (asking is activity there)."""
        if not valid_name(name):
            raise TensorBoardNotFound(name)
        try:
            data = await self.broker.request("GET", f"api/tensorboards/{name}")
        except BrokerNotFoundError:
            self._boards.pop(name, None)
            raise TensorBoardNotFound(name) from None
        self._told[name] = time.time()
        return self._keep(dict(data))

    def touch(self, name: str) -> None:
        board = self._boards.get(name)
        if board is not None:
            board.last_activity = time.time()

    async def prepare_proxy(self, name: str) -> None:
        """Before a proxied request: a TensorBoard not known here as running is asked for."""
        await self._learn_uid()
        board = self._boards.get(name)
        if board is None or board.state != "running":
            await self.state(name)

    def ready_socket(self, name: str) -> str:
        board = self.get(name)
        check_running(board)
        address = self._addresses.get(name, "")
        if address:  # a Kubernetes TensorBoard pod: its IP over TCP
            try:
                family, _ = address_of(address)
            except OSError as err:
                family, why = socket.AF_UNIX, str(err)
            else:
                why = "it is no tcp:<pod ip>:<port>"
            if family == socket.AF_UNIX:
                raise TensorBoardSocketRefused(
                    f"The broker named {address!r} for TensorBoard '{name}', which this "
                    f"server does not connect to: {why}. Ask your JupyterHub admin to check "
                    "the tfenv broker."
                )
            return address
        if self._uid is None:
            raise TensorBoardNotReady("The broker has not said who you are yet; try again.")
        problem = socket_problem(board.socket, self._uid)
        if problem:
            raise TensorBoardSocketRefused(
                f"The broker named {board.socket} for TensorBoard '{name}', which this server "
                f"does not connect to: {problem}. Ask your JupyterHub admin to check the tfenv "
                "broker's runtime_root."
            )
        return board.socket

    async def _learn_uid(self) -> None:
        if self._uid is None:
            me = await self.broker.me()
            self._uid = int(me["uid"])

    # -- starting and stopping ----------------------------------------------------------

    async def open(self, body: Any) -> tuple[TensorBoard, bool]:
        parse_view(body)  # 400 here, with the same words as local mode
        await self._learn_uid()
        data = dict(await self.broker.request("POST", "api/tensorboards", body))
        board = self._keep(data)
        board.last_activity = time.time()
        return board, bool(data.get("started"))

    async def stop(self, name: str) -> None:
        if not valid_name(name):
            raise TensorBoardNotFound(name)
        self._boards.pop(name, None)
        try:
            await self.broker.request("DELETE", f"api/tensorboards/{name}")
        except BrokerNotFoundError:
            raise TensorBoardNotFound(name) from None

    async def sweep(self, now: float | None = None) -> list[str]:
        """Close the TensorBoards unused for the idle timeout; tell the broker of the
        others that were used since it was last told (so that it keeps them)."""
        now = time.time() if now is None else now
        stopped = []
        for board in self.boards():
            if self.idle_timeout > 0 and now - board.last_activity > self.idle_timeout:
                with contextlib.suppress(TFEnvError):
                    await self.stop(board.name)
                stopped.append(board.name)
            elif board.last_activity > self._told.get(board.name, 0.0):
                with contextlib.suppress(TFEnvError):
                    await self.state(board.name)
        return stopped

    async def close(self) -> None:
        """The server stops: its TensorBoards at the broker are closed."""
        for board in self.boards():
            with contextlib.suppress(TFEnvError):
                await self.stop(board.name)

    async def reap_orphans(self) -> list[str]:
        return []  # the broker removes the TensorBoards no server asks for
