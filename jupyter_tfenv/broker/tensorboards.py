"""TensorBoards through the broker (JupyterHub, Docker backend): ``/api/tensorboards``.

The broker starts a user's TensorBoard as it starts their kernels: as the caller's uid and
gid, with the same hardened container as a local server's (:mod:`jupyter_tfenv.tensorboard`:
the manager and the container spec are reused, one :class:`TensorBoardManager` per user),
reading only that user's log folders of the broker's log storage, read-only. The bridge's
socket is in a folder lent to the user: ``{runtime_root}/tb/{uid}/tb-<random>/tb.sock``
(``{runtime_root}/tb`` and ``{runtime_root}/tb/{uid}`` root-owned 0711, the last one the
user's, 0700), beside the kernels' ``{runtime_root}/{uid}/…``, which the kernels' sweep of
never-started folders does not touch. The user's server connects to it on the same host.

Policy: the caller's own TensorBoards only (another user's name is a 404, as kernels are);
``environment_groups`` as for kernels (403); at most ``max_tensorboards_per_user`` at once
(429). A TensorBoard holds no GPU and runs under the kernels' memory and pids limits, so it
is not counted against the kernel or GPU quota. Every ``GET /api/tensorboards/<name>`` by
the user's server is activity: a sweep removes those no server asked for within
``tensorboard_idle_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from traitlets import Float, Integer, Unicode
from traitlets.config import Configurable

from jupyter_tfenv.backends.docker.engine import list_containers, server_alive
from jupyter_tfenv.broker.pod_tensorboards import PodTensorBoardsAtBroker, not_found
from jupyter_tfenv.broker.policy import BrokerError
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.containers import remove_quietly
from jupyter_tfenv.core.labels import LABEL_RUNTIME_DIR, LABEL_TENSORBOARD, LABEL_UID
from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.kernels.connection import prepare_runtime_root
from jupyter_tfenv.tensorboard.container import (
    COMPARE,
    newest_environment,
    remove_runtime_dir,
    tensorboard_name,
)
from jupyter_tfenv.tensorboard.manager import (
    TensorBoard,
    TensorBoardManager,
    TensorBoardNotFound,
    TensorBoardSettings,
    parse_view,
)

#: The folder below the broker's runtime_root that holds the TensorBoards' runtime folders.
TB_FOLDER = "tb"


class BrokerTensorBoardSettings(Configurable):
    """``c.TFEnvBroker.tensorboard_*`` and ``max_tensorboards_per_user`` (a part of
    ``TFEnvBroker``)."""

    max_tensorboards_per_user = Integer(
        2,
        help="""TensorBoards a user may have at once (one per view: an environment's, or
        the comparison); the one beyond is refused (429). They hold no GPU and are not
        counted against max_kernels_per_user. 0: none (TensorBoard is off).""",
    ).tag(config=True)

    tensorboard_idle_timeout = Float(
        1800.0,
        min=0.0,
        help="""Seconds a TensorBoard may go without its user's server asking for it
        (servers ask while it is used); then the broker removes it. 0: never.""",
    ).tag(config=True)

    tensorboard_start_timeout = Float(
        180.0, min=1.0, help="Seconds a TensorBoard container may take until it answers."
    ).tag(config=True)

    tensorboard_environment = Unicode(
        "",
        help="""The environment whose image runs the "Compare environments" TensorBoard.
        Empty: the environment with the newest TensorFlow version.""",
    ).tag(config=True)

    _tensorboards: BrokerTensorBoards | PodTensorBoardsAtBroker | None = None

    @property
    def tensorboards(self) -> BrokerTensorBoards | PodTensorBoardsAtBroker:
        if self._tensorboards is None:
            if getattr(self, "backend", "") == "kubernetes":  # pods (broker/pod_tensorboards.py)
                self._tensorboards = PodTensorBoardsAtBroker(
                    self,
                    max_per_user=self.max_tensorboards_per_user,
                    idle_timeout=self.tensorboard_idle_timeout,
                    compare_environment=self.tensorboard_environment,
                )
            else:
                self._tensorboards = BrokerTensorBoards(self)
        return self._tensorboards


def board_dict(board: TensorBoard) -> dict[str, Any]:
    """What the broker says of a TensorBoard: the object of docs/tensorboard.md without
    the server's ``url``, with the ``socket`` the user's server connects to."""
    data = board.to_dict("/")
    del data["url"]
    return {**data, "socket": board.socket}


class BrokerTensorBoards:
    """Every user's TensorBoards at this broker (a manager per uid)."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self._managers: dict[int, TensorBoardManager] = {}

    @property
    def log(self) -> logging.Logger | Any:
        return self.broker.log

    def _backend(self) -> Any:
        backend = self.broker.kernel_backend
        if not backend.supports("runtime_dirs"):
            raise BrokerError(
                "TensorBoard through the broker runs on the Docker backend only; on "
                "Kubernetes it is not built yet (docs/tensorboard.md, Limits).",
                status=501,
                reason="not on kubernetes",
            )
        return backend

    def _tb_root(self) -> str:
        root = prepare_runtime_root(self.broker.runtime_root)
        return prepare_runtime_root(os.path.join(root, TB_FOLDER))

    async def manager(self, caller: Caller) -> TensorBoardManager:
        """The caller's manager (made at the first request), its folders prepared."""
        backend = self._backend()
        tb_root = await asyncio.to_thread(self._tb_root)
        found = self._managers.get(caller.uid)
        if found is not None and found.settings.owner == caller.name:
            return found
        broker = self.broker
        labels = {**backend.scope_labels, LABEL_UID: str(caller.uid)}
        settings = TensorBoardSettings(
            owner=caller.name,
            uid=caller.uid,
            gid=caller.gid,
            runtime_root=os.path.join(tb_root, str(caller.uid)),
            storage=broker.storage_config(),
            read_only_rootfs=bool(getattr(backend, "read_only_rootfs", False)),
            memory=getattr(broker, "default_memory", 0) or None,
            pids=getattr(broker, "default_pids", 0) or None,
            start_timeout=broker.tensorboard_start_timeout,
            idle_timeout=broker.tensorboard_idle_timeout,
            compare_environment=broker.tensorboard_environment,
            labels=tuple(sorted(labels.items())),
        )
        manager = TensorBoardManager(
            broker.get_catalog(), settings, docker=backend.docker, base_url="/", log=self.log
        )
        self._managers[caller.uid] = manager
        return manager

    def _allowed(self, caller: Caller, body: Any) -> None:
        """The environment of the view, and the image's environment, must be the caller's
        to use (unknown: 404; not allowed: 403)."""
        view, environment = parse_view(body)
        if environment is not None:
            self.broker.environment_for(caller, environment, status=404)
        elif view == COMPARE:
            # The image of the configured (or newest) environment runs it: it must be one
            # the caller may use.
            configured = self.broker.tensorboard_environment
            newest = newest_environment(self.broker.get_catalog().all())
            image_env = configured or (newest.id if newest is not None else "")
            if image_env:
                self.broker.environment_for(caller, image_env, status=409)

    async def open(self, caller: Caller, body: Any) -> tuple[dict[str, Any], bool]:
        """``POST /api/tensorboards``: the caller's TensorBoard of the view, started or
        reused; with whether it was started now."""
        try:
            view, environment = parse_view(body)
        except TFEnvError as err:
            raise BrokerError(err.message, reason="bad body") from None
        self._allowed(caller, body)
        manager = await self.manager(caller)
        name = tensorboard_name(view, environment)
        async with self.broker.user_lock(caller.name):
            limit = self.broker.max_tensorboards_per_user
            others = [b for b in manager.boards() if b.name != name]
            if limit == 0:
                raise BrokerError(
                    "TensorBoard is turned off on this hub "
                    "(c.TFEnvBroker.max_tensorboards_per_user = 0); ask your JupyterHub admin.",
                    status=403,
                    reason="tensorboard off",
                )
            if limit > 0 and len(others) >= limit:
                raise BrokerError(
                    f"You have {len(others)} TensorBoard(s) open, the most this hub allows "
                    f"(c.TFEnvBroker.max_tensorboards_per_user = {limit}). Close one "
                    f"({', '.join(b.name for b in others) or 'none'}) and open this one again.",
                    status=429,
                    reason="tensorboard quota",
                )
            board, started = await manager.open(body)
        return board_dict(board), started

    def _known(self, caller: Caller) -> TensorBoardManager | None:
        found = self._managers.get(caller.uid)
        return found if found is not None and found.settings.owner == caller.name else None

    async def listing(self, caller: Caller) -> dict[str, Any]:
        manager = self._known(caller)
        boards = manager.boards() if manager is not None else []
        return {"tensorboards": [board_dict(b) for b in boards]}

    async def get(self, caller: Caller, name: str) -> dict[str, Any]:
        """The caller's TensorBoard (404 for anyone else's): asking is activity."""
        manager = self._known(caller)
        if manager is None:
            raise not_found(name)
        try:
            board = manager.get(name)
        except TensorBoardNotFound:
            raise not_found(name) from None
        manager.touch(name)
        return board_dict(board)

    async def stop(self, caller: Caller, name: str) -> None:
        manager = self._known(caller)
        if manager is None:
            raise not_found(name)
        try:
            await manager.stop(name)
        except TensorBoardNotFound:
            raise not_found(name) from None

    async def sweep(self) -> None:
        """Remove the TensorBoards no server asked for within the idle timeout, and those
        a broker that died left (never raises: a sweep never stops the broker)."""
        await self.reap_orphans()
        for manager in list(self._managers.values()):
            try:
                for name in await manager.sweep():
                    self.log.info(
                        "tfenv-broker: TensorBoard %s of %s unused for %.0f s: removed",
                        name,
                        manager.settings.owner,
                        manager.settings.idle_timeout,
                    )
            except Exception as err:
                self.log.warning("tfenv-broker: TensorBoards not swept: %s", err)

    async def reap_orphans(self) -> list[str]:
        """Remove the TensorBoard containers with this broker's label whose broker process
        is gone (a broker that crashed: its TensorBoards were known to it alone), with
        their runtime folders; their names. Never raises."""
        if not self.broker.kernel_backend.supports("runtime_dirs"):
            return []
        try:
            backend = self.broker.kernel_backend
            client = await backend.docker()
            runtime_root = self.broker.runtime_root
            labels = [LABEL_TENSORBOARD, *(f"{k}={v}" for k, v in backend.scope_labels.items())]

            def reap() -> list[str]:
                root = os.path.join(os.path.abspath(runtime_root), TB_FOLDER)
                removed = []
                for container in list_containers(client, labels):
                    found = container.labels or {}
                    if server_alive(found):
                        continue
                    remove_quietly(container)
                    remove_runtime_dir(found.get(LABEL_RUNTIME_DIR, ""), [root])
                    removed.append(str(container.name))
                return removed

            removed = await asyncio.to_thread(reap)
        except Exception as err:
            self.log.warning(
                "tfenv-broker: TensorBoards of a previous broker not looked for: %s", err
            )
            return []
        for name in removed:
            self.log.warning(
                "tfenv-broker: removed TensorBoard container %s left by a broker that died", name
            )
        return removed

    async def close(self) -> None:
        """The broker stops: its TensorBoards go with it (no server could reach them)."""
        for manager in list(self._managers.values()):
            await manager.close()
