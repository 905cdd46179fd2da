"""The server's TensorBoards: one per (user, view), started, reused, swept when idle.

A local server has one user, so a view's name (``env-<id>``, ``compare``) is the key. A
start answers at once with the state ``starting`` (the image is checked, the log folder
prepared and the container created before that answer, so their errors are the POST's);
the wait for TensorBoard's first answer (the bridge binds its socket only then) goes on in
the background and ends in ``running`` or ``error`` with the container's last lines. Every
proxied request is activity; :meth:`TensorBoardManager.sweep` stops those idle for longer
than the idle timeout, and :meth:`TensorBoardManager.close` stops them all with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from docker.errors import APIError, ImageNotFound, NotFound

from jupyter_tfenv.backends.docker.engine import image_missing_message
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints.layout import CheckpointStorageError, StorageConfig, locate
from jupyter_tfenv.checkpoints.storage import prepare_bind, prepare_volume
from jupyter_tfenv.core.containers import remove_quietly, tail_logs
from jupyter_tfenv.errors import NotFoundError, TFEnvError
from jupyter_tfenv.kernels.connection import prepare_runtime_root
from jupyter_tfenv.tensorboard.bridge import NO_TENSORBOARD_MARK
from jupyter_tfenv.tensorboard.container import (
    COMPARE,
    TensorBoardRequest,
    container_spec,
    environments_with_logs,
    log_mounts,
    newest_environment,
    reap_tensorboards,
    remove_runtime_dir,
    socket_path,
    tensorboard_name,
    valid_name,
)

STATES = ("starting", "running", "error")


class TensorBoardRequestError(TFEnvError):
    """The request body names no view (400)."""

    http_status = 400


class TensorBoardConflict(TFEnvError):
    """The TensorBoard cannot start as asked: image not here, no log storage, a setting
    (409, with what to do)."""

    http_status = 409


class TensorBoardNotFound(NotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"No TensorBoard '{name}' runs on this server (it may have been stopped when "
            "idle). Open it again: POST /tfenv/tensorboards, or `jupyter tfenv tensorboard`."
        )


class TensorBoardNotReady(TFEnvError):
    """A proxied request for a TensorBoard that is starting or failed (503)."""

    http_status = 503


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


@dataclass(frozen=True)
class TensorBoardSettings:
    """What TensorBoard containers are made with: the kernels' user, runtime root and
    storage settings (``c.DockerKernelProvisioner.*``) and the ``c.TFEnvApp.tensorboard_*``
    settings."""

    owner: str
    uid: int
    gid: int
    runtime_root: str
    storage: StorageConfig
    read_only_rootfs: bool = False
    memory: int | None = None
    pids: int | None = 4096
    start_timeout: float = 180.0
    idle_timeout: float = 1800.0
    #: The environment whose image runs the comparison view ('' : the newest TensorFlow).
    compare_environment: str = ""
    #: More container labels (the broker's scope label and the user's uid).
    labels: tuple[tuple[str, str], ...] = ()


@dataclass
class TensorBoard:
    """One TensorBoard: what ``GET /tfenv/tensorboards/<name>`` says of it."""

    name: str
    view: str
    environment: str | None
    image: str
    runtime_dir: str
    container_id: str = ""
    state: str = "starting"
    message: str | None = None
    started_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)

    @property
    def socket(self) -> str:
        return socket_path(self.runtime_dir)

    def to_dict(self, base_url: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "view": self.view,
            "environment": self.environment,
            "image": self.image,
            "state": self.state,
            "message": self.message,
            "url": f"{base_url}tfenv/tensorboard/{self.name}/",
            "started_at": _iso(self.started_at),
            "last_activity": _iso(self.last_activity),
        }


def exit_message(board: TensorBoard, code: Any, logs: str) -> str:
    """Why a TensorBoard container exited while starting, for the user."""
    if NO_TENSORBOARD_MARK in logs:
        return (
            f"The image {board.image} has no TensorBoard (it comes with TensorFlow's pip "
            "install; this image lacks it or cannot import it). Open the TensorBoard of an "
            "environment with TensorFlow, or set c.TFEnvApp.tensorboard_environment to one "
            "for the comparison view."
        )
    return f"TensorBoard's container exited (code {code}) while starting." + (
        f" Its last lines: {logs.strip()}" if logs.strip() else ""
    )


def check_running(board: TensorBoard) -> None:
    """:class:`TensorBoardNotReady` (with what to do) unless ``board`` runs."""
    name = board.name
    if board.state == "starting":
        raise TensorBoardNotReady(
            f"TensorBoard '{name}' is still starting; GET /tfenv/tensorboards/{name} "
            "says when it runs."
        )
    if board.state != "running":
        raise TensorBoardNotReady(
            f"TensorBoard '{name}' is not running: {board.message} Open it again."
        )


def parse_view(body: Any) -> tuple[str, str | None]:
    """``{"environment": id}`` or ``{"view": "compare"}`` → (view, environment)."""
    if not isinstance(body, dict):
        body = None
    view = (body or {}).get("view", "environment")
    environment = (body or {}).get("environment")
    if view == COMPARE and environment in (None, ""):
        return COMPARE, None
    if view == "environment" and isinstance(environment, str) and environment:
        return "environment", environment
    raise TensorBoardRequestError(
        'Send {"environment": "<environment id>"} for an environment\'s TensorBoard, or '
        '{"view": "compare"} for all of your log folders side by side.'
    )


class TensorBoardManager:
    """This server's TensorBoards (local Docker mode)."""

    #: Seconds between looks at a starting container (its socket, its state).
    POLL = 0.25

    def __init__(
        self,
        catalog: TFEnvCatalog,
        settings: TensorBoardSettings,
        *,
        docker: Callable[[], Awaitable[Any]],
        base_url: str = "/",
        log: Any = None,
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self._docker = docker
        self.base_url = base_url
        self.log = log
        self._boards: dict[str, TensorBoard] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._waits: set[asyncio.Future[None]] = set()

    # -- reading ------------------------------------------------------------------------

    def boards(self) -> list[TensorBoard]:
        return sorted(self._boards.values(), key=lambda b: b.name)

    def get(self, name: str) -> TensorBoard:
        board = self._boards.get(name) if valid_name(name) else None
        if board is None:
            raise TensorBoardNotFound(name)
        return board

    async def listing(self) -> list[TensorBoard]:
        return self.boards()

    async def state(self, name: str) -> TensorBoard:
        return self.get(name)

    async def prepare_proxy(self, name: str) -> None:
        """Nothing to ask: this server knows its TensorBoards (the broker's are asked)."""

    def touch(self, name: str) -> None:
        board = self._boards.get(name)
        if board is not None:
            board.last_activity = time.time()

    def ready_socket(self, name: str) -> str:
        """The socket of a running TensorBoard (what the proxy connects to)."""
        board = self.get(name)
        check_running(board)
        return board.socket

    # -- starting -----------------------------------------------------------------------

    async def open(self, body: Any) -> tuple[TensorBoard, bool]:
        """Start the TensorBoard of the view ``body`` names, or reuse the one that runs.
        Returns it and whether it was started now."""
        view, environment = parse_view(body)
        if environment is not None:
            self.catalog.get(environment)  # 404 with the known ids
        name = tensorboard_name(view, environment)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            board = self._boards.get(name)
            if board is not None and board.state != "error" and await self._alive(board):
                board.last_activity = time.time()
                return board, False
            if board is not None:
                await self._remove(board)
            board = await self._start(name, view, environment)
            self._boards[name] = board
            wait = asyncio.ensure_future(self._wait_ready(board))
            self._waits.add(wait)
            wait.add_done_callback(self._waits.discard)
            return board, True

    def _image_environment(self, view: str, environment: str | None) -> Environment:
        if environment is not None:
            return self.catalog.get(environment)
        configured = self.settings.compare_environment
        if configured:
            try:
                return self.catalog.get(configured)
            except TFEnvError as err:
                raise TensorBoardConflict(
                    f"c.TFEnvApp.tensorboard_environment = '{configured}' names no "
                    f"environment of the catalog ({err}). Set it to an environment id, or "
                    "unset it for the newest TensorFlow."
                ) from None
        newest = newest_environment(self.catalog.all())
        if newest is None:
            raise TensorBoardConflict(
                "No environment of the catalog says its TensorFlow version, so none can be "
                "picked for the comparison view. Set c.TFEnvApp.tensorboard_environment to "
                "the environment whose TensorBoard should run it."
            )
        return newest

    async def _start(self, name: str, view: str, environment: str | None) -> TensorBoard:
        env = self._image_environment(view, environment)
        client = await self._docker()
        return await asyncio.to_thread(self._create, client, name, view, environment, env)

    def _create(
        self, client: Any, name: str, view: str, environment: str | None, env: Environment
    ) -> TensorBoard:
        """Check the image, prepare the log folder and the runtime folder, create and
        start the container. BLOCKING."""
        s = self.settings
        try:
            image = client.images.get(env.image)
        except ImageNotFound:
            raise TensorBoardConflict(
                f"TensorBoard runs in the environment's own image, which is not here. "
                f"{image_missing_message(env)}"
            ) from None
        if environment is not None:
            if s.storage.mode == "off":
                raise TensorBoardConflict(
                    "Kernels keep no TensorBoard logs on this server "
                    "(c.DockerKernelProvisioner.checkpoint_storage = 'off'), so there is "
                    "nothing to show. Set checkpoint_storage to 'bind' or 'volume'."
                )
            loc = locate(s.storage, "logs", s.owner, environment)
            try:
                if loc.is_volume:
                    prepare_volume(
                        client, loc, uid=s.uid, gid=s.gid, image=str(image.id), python=env.python
                    )
                else:
                    prepare_bind(loc, s.uid, s.gid)
            except CheckpointStorageError as err:
                # The same words as a kernel start's; a state to fix, not a server fault.
                raise TensorBoardConflict(f"The log folder cannot be used: {err}") from None
            shown = [environment]
        else:
            shown = environments_with_logs(client, s.storage, s.owner)
        root = prepare_runtime_root(s.runtime_root)
        rundir = os.path.join(root, f"tb-{secrets.token_hex(6)}")
        os.mkdir(rundir, 0o700)
        try:
            if (s.uid, s.gid) != (os.getuid(), os.getgid()):
                os.chown(rundir, s.uid, s.gid)
            req = TensorBoardRequest(
                name=name,
                view=view,
                image_env=env,
                image_id=str(image.id),
                environment=environment,
                owner=s.owner,
                uid=s.uid,
                gid=s.gid,
                runtime_dir=rundir,
                log_mounts=tuple(log_mounts(s.storage, s.owner, view, shown)),
                read_only_rootfs=s.read_only_rootfs,
                memory=s.memory,
                pids=s.pids,
                extra_labels=s.labels,
            )
            if req.uid == 0:
                raise TensorBoardConflict(
                    "Refusing to run a TensorBoard container as root (uid 0): set "
                    "c.DockerKernelProvisioner.uid to the notebook user's uid."
                )
            try:
                container = client.containers.run(**container_spec(req))
            except APIError as err:
                raise TensorBoardConflict(
                    f"Docker refused to start the TensorBoard container of '{env.id}': "
                    f"{str(err.explanation or err).strip()}"
                ) from err
        except BaseException:
            remove_runtime_dir(rundir, [root])
            raise
        return TensorBoard(
            name=name,
            view=view,
            environment=environment,
            image=env.image,
            runtime_dir=rundir,
            container_id=str(container.id),
        )

    async def _wait_ready(self, board: TensorBoard) -> None:
        """Until the bridge's socket exists (TensorBoard answers), the container exits,
        or the start timeout passes."""
        deadline = time.monotonic() + self.settings.start_timeout
        try:
            client = await self._docker()
            while board.state == "starting":
                if await asyncio.to_thread(os.path.exists, board.socket):
                    board.state = "running"
                    board.last_activity = time.time()
                    return
                status, code, logs = await asyncio.to_thread(self._status, client, board)
                if status not in ("created", "running"):
                    await self._fail(board, exit_message(board, code, logs))
                    return
                if time.monotonic() > deadline:
                    await self._fail(
                        board,
                        f"TensorBoard did not answer within {self.settings.start_timeout:g} s "
                        "(c.TFEnvApp.tensorboard_start_timeout)."
                        + (f" Its last lines: {logs.strip()}" if logs.strip() else ""),
                    )
                    return
                await asyncio.sleep(self.POLL)
        except Exception as err:
            if board.state == "starting":
                await self._fail(board, f"TensorBoard could not be started: {err}")

    @staticmethod
    def _status(client: Any, board: TensorBoard) -> tuple[str, Any, str]:
        try:
            container = client.containers.get(board.container_id)
        except NotFound:
            return "removed", None, ""
        state = container.attrs.get("State") or {}
        status = str(state.get("Status", ""))
        logs = "" if status in ("created", "running") else tail_logs(container, 15)
        return status, state.get("ExitCode"), logs

    async def _fail(self, board: TensorBoard, message: str) -> None:
        # The container goes first: a board that reads 'error' has nothing left running.
        with contextlib.suppress(Exception):
            await self._remove(board, forget=False)
        board.state = "error"
        board.message = message
        if self.log is not None:
            self.log.warning("tfenv: TensorBoard %s: %s", board.name, message)

    async def _alive(self, board: TensorBoard) -> bool:
        try:
            client = await self._docker()
            status, _, _ = await asyncio.to_thread(self._status, client, board)
        except TFEnvError:
            raise
        except Exception:
            return False
        return status in ("created", "running")

    # -- stopping -----------------------------------------------------------------------

    async def _remove(self, board: TensorBoard, *, forget: bool = True) -> None:
        if forget and self._boards.get(board.name) is board:
            del self._boards[board.name]
        client = await self._docker()

        def remove() -> None:
            with contextlib.suppress(NotFound):
                remove_quietly(client.containers.get(board.container_id))
            remove_runtime_dir(board.runtime_dir, [self.settings.runtime_root])

        await asyncio.to_thread(remove)

    async def stop(self, name: str) -> None:
        """Stop and remove a TensorBoard (its container and runtime folder)."""
        board = self.get(name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            await self._remove(board)

    async def sweep(self, now: float | None = None) -> list[str]:
        """Stop the TensorBoards without a proxied request for longer than the idle
        timeout (0: never); returns their names."""
        timeout = self.settings.idle_timeout
        if timeout <= 0:
            return []
        now = time.time() if now is None else now
        idle = [
            b for b in self.boards() if b.state != "starting" and now - b.last_activity > timeout
        ]
        for board in idle:
            if self.log is not None:
                self.log.info("tfenv: TensorBoard %s idle for %.0f s: stopped", board.name, timeout)
            with contextlib.suppress(TFEnvError):
                await self.stop(board.name)
        return [b.name for b in idle]

    async def close(self) -> None:
        """Stop every TensorBoard (the server stops)."""
        for wait in list(self._waits):
            wait.cancel()
        for board in self.boards():
            try:
                await self._remove(board)
            except Exception as err:
                if self.log is not None:
                    self.log.warning("tfenv: TensorBoard %s not removed: %s", board.name, err)

    async def reap_orphans(self) -> list[str]:
        """Remove TensorBoard containers of this user whose server died."""
        client = await self._docker()
        reaped = await asyncio.to_thread(
            reap_tensorboards,
            client,
            self.settings.owner,
            runtime_roots=[self.settings.runtime_root],
        )
        return [r.name for r in reaped]
