"""The extension's TensorBoard part: its ``c.TFEnvApp.tensorboard_*`` settings (a mixin of
``TFEnvApp``), the manager and proxy it builds once, the idle sweep, the stop.

Chosen once, like the service's source: a local server runs TensorBoards on its Docker
engine (:class:`~jupyter_tfenv.tensorboard.manager.TensorBoardManager`); in broker mode
(JupyterHub) the broker runs them and this server proxies them
(:class:`~jupyter_tfenv.tensorboard.brokered.BrokeredTensorBoards`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from traitlets import Float, HasTraits, Unicode

from jupyter_tfenv.checkpoints.layout import StorageConfig
from jupyter_tfenv.tensorboard.brokered import BrokeredTensorBoards
from jupyter_tfenv.tensorboard.manager import TensorBoardManager, TensorBoardSettings
from jupyter_tfenv.tensorboard.proxy import TensorBoardProxy


class TensorBoardAppSettings(HasTraits):
    """``c.TFEnvApp.tensorboard_*``."""

    tensorboard_idle_timeout = Float(
        1800.0,
        help="""Seconds a TensorBoard may go without a request (through the server's proxy)
        before its container is stopped and removed. 0: never (it still stops with the
        server).""",
    ).tag(config=True)

    tensorboard_environment = Unicode(
        "",
        help="""The environment whose image runs the "Compare environments" TensorBoard
        (all of the user's log folders). Empty (default): the environment with the newest
        TensorFlow version.""",
    ).tag(config=True)

    tensorboard_start_timeout = Float(
        180.0,
        help="""Seconds a TensorBoard container may take until TensorBoard answers
        (TensorBoard imports TensorFlow first: several seconds on a small machine).""",
    ).tag(config=True)

    _tensorboard_sweep: asyncio.Future[None] | None = None

    def make_tensorboards(self, settings: dict[str, Any], service: Any, base_url: str) -> None:
        """Put the TensorBoard manager and its proxy into the server's ``settings``."""
        defaults = service.defaults
        manager: Any
        if defaults.broker_url and service.broker is not None:
            manager = BrokeredTensorBoards(
                service.broker,
                base_url=base_url,
                idle_timeout=self.tensorboard_idle_timeout,
                log=service.log,
            )
        else:
            manager = TensorBoardManager(
                service.catalog,
                TensorBoardSettings(
                    owner=defaults.owner,
                    uid=defaults.uid,
                    gid=defaults.gid,
                    runtime_root=defaults.runtime_root,
                    storage=StorageConfig.from_provisioner(defaults),
                    read_only_rootfs=defaults.read_only_rootfs,
                    memory=defaults.default_memory or None,
                    pids=defaults.default_pids or None,
                    start_timeout=self.tensorboard_start_timeout,
                    idle_timeout=self.tensorboard_idle_timeout,
                    compare_environment=self.tensorboard_environment,
                ),
                docker=service.docker,
                base_url=base_url,
                log=service.log,
            )
        settings["tfenv_tensorboards"] = manager
        settings["tfenv_tensorboard_proxy"] = TensorBoardProxy(manager.ready_socket)

    def start_tensorboard_sweep(self, settings: dict[str, Any], log: Any) -> None:
        """The idle sweep: every quarter of the idle timeout, at most every minute."""
        timeout = self.tensorboard_idle_timeout
        if timeout <= 0:
            return
        manager = settings["tfenv_tensorboards"]

        async def loop() -> None:
            while True:
                await asyncio.sleep(min(60.0, max(1.0, timeout / 4)))
                try:
                    await manager.sweep()
                except Exception:
                    log.exception("tfenv: stopping idle TensorBoards failed")

        self._tensorboard_sweep = asyncio.ensure_future(loop())

    async def reap_tensorboards(self, settings: dict[str, Any], log: Any) -> None:
        """Remove this user's TensorBoard containers whose server died."""
        try:
            reaped = await settings["tfenv_tensorboards"].reap_orphans()
        except Exception as err:
            log.warning("tfenv: no TensorBoard orphan check at start-up: %s", err)
            return
        for name in reaped:
            log.warning("tfenv: removed TensorBoard container %s left by a server that died", name)

    async def stop_tensorboards(self, settings: dict[str, Any]) -> None:
        """Stop the sweep and every TensorBoard (the server stops)."""
        if self._tensorboard_sweep is not None:
            self._tensorboard_sweep.cancel()
            self._tensorboard_sweep = None
        manager = settings.get("tfenv_tensorboards")
        if manager is not None:
            with contextlib.suppress(Exception):
                await manager.close()
        proxy = settings.get("tfenv_tensorboard_proxy")
        if proxy is not None:
            proxy.close()
