"""The server extension: owns configuration, wires the catalog into the kernel picker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Unicode

from jupyter_tfenv.backends.docker.probe import probe_cache_dir
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.core.version import __version__
from jupyter_tfenv.errors import OneLineRefusals, TFEnvError
from jupyter_tfenv.lifecycle.culling import cull_idle_kernels, idle_timeout_of
from jupyter_tfenv.lifecycle.keep import (
    KEEP_MODES,
    adopt_kernels,
    detach_kernels,
    keeps,
    session_database,
    tfenv_provisioner,
)
from jupyter_tfenv.lifecycle.pool import KernelPool, start_pool, stop_pool
from jupyter_tfenv.provisioning.kernelspecs import TFEnvKernelSpecManager
from jupyter_tfenv.provisioning.provisioner import TFEnvKernelProvisioner
from jupyter_tfenv.server.handlers import (
    builds,
    checkpoints,
    choices,
    environments,
    kernels,
    logs,
    pulls,
    tensorboards,
)
from jupyter_tfenv.server.kernel_ws import install_connection_class
from jupyter_tfenv.server.service import TFEnvService
from jupyter_tfenv.server.sessions import KeepingSessionManager
from jupyter_tfenv.server.tensorboards import TensorBoardAppSettings


def shares_folders(root_dir: str, kernel_gid: int, umask: int) -> bool:
    """Whether what the server makes in ``root_dir`` is writable for the kernel's group.

    A folder of the kernel's group with the setgid bit hands that group to everything
    made in it; a umask without the group's write bit makes it group-writable.
    """
    try:
        info = os.stat(root_dir)
    except OSError:
        return False
    return info.st_gid == kernel_gid and bool(info.st_mode & stat.S_ISGID) and not umask & 0o020


def uid_mismatch(server_uid: int, kernel_uid: int, *, shared: bool = False) -> str | None:
    """What goes wrong when the server and its kernels are different users, or None."""
    if server_uid == kernel_uid or shared:
        return None
    return (
        f"this server runs as uid {server_uid} but its kernels run as uid {kernel_uid} "
        "(TFEnvKernelProvisioner.uid, $JUPYTER_TFENV_KERNEL_UID): folders and files made "
        f"in JupyterLab (New Folder, uploads, new notebooks) belong to uid {server_uid}, "
        "and a kernel cannot write into such a folder (PermissionError). Run the server "
        f"as the kernels' user (uid {kernel_uid}), or share the notebook folder: the "
        "kernels' group, the setgid bit (chmod 2775) and a server umask of 002."
    )


class TFEnvApp(TensorBoardAppSettings, ExtensionApp):
    """jupyter_tfenv server extension."""

    name = "jupyter_tfenv"
    description = "Pinned TensorFlow environments as kernels in containers"
    version = __version__

    reap_orphans_on_start = Bool(
        True,
        help="""On start-up, remove this user's kernel containers whose server died (they
        are found by their labels) and their runtime folders. In broker mode: the kernels
        the broker runs for this user and hub server name that this server does not know.""",
    ).tag(config=True)

    keep_kernels_on_stop = Enum(
        list(KEEP_MODES),
        default_value="off",
        help="""Which kernels outlive a server stop: 'off' (default: a stopping server shuts
        its kernels down), 'gpu' (kernels of environments that ask for GPUs: long
        trainings) or 'all'. Kept kernels go on running in their containers; the next
        server of the same user adopts them under their kernel ids, so a notebook that
        reconnects finds its variables and a running cell goes on. Kernels of a server
        that was killed (SIGKILL, out of memory) are adopted the same way. Notebooks find
        their sessions again: they are kept in a file of the server's runtime folder,
        unless c.SessionManager.database_filepath says where.""",
    ).tag(config=True)

    adopt_timeout = Float(
        3600.0,
        help="""Seconds a kept kernel waits for the next server: one kept longer is not
        adopted but removed (its container and runtime folder) when a server starts.
        0: no limit. Until a server starts, `jupyter tfenv gc` removes kept kernels.""",
    ).tag(config=True)

    start_pools = Bool(
        True,
        help="""Start the warm pools of the environments whose catalog entry sets
        pool_size (in broker mode through the broker, within the user's quotas; see
        jupyter_tfenv.lifecycle.pool).""",
    ).tag(config=True)

    install_kernel_spec_manager = Bool(
        True,
        help="""Make the server's kernel spec manager the tfenv one (which adds the catalog's
        environments to the usual kernelspecs), unless ServerApp.kernel_spec_manager_class
        is configured explicitly.""",
    ).tag(config=True)

    probe_cache_dir = Unicode(
        "", help="Folder of cached environment probes (default: in the Jupyter data dir)."
    ).tag(config=True)

    gpu_idle_timeout = Float(
        3600.0,
        help="""Seconds a kernel of an environment that asks for GPUs may stay idle before it
        is shut down (its container removed, its GPUs freed), when the catalog entry sets no
        idle_timeout. 0 keeps idle GPU kernels. CPU environments are culled only when their
        entry sets idle_timeout.""",
    ).tag(config=True)

    cull_interval = Float(
        60.0,
        help="""How often (seconds) idle tfenv kernels are looked for; 0 turns culling by
        idle_timeout / gpu_idle_timeout off.""",
    ).tag(config=True)

    cull_connected = Bool(
        False,
        help="""Also cull idle kernels that have open connections (a notebook tab that is
        open but does nothing). Like MappingKernelManager.cull_connected.""",
    ).tag(config=True)

    def _link_jupyter_server_extension(self, serverapp: Any) -> None:
        super()._link_jupyter_server_extension(serverapp)
        # The kernel spec manager is built after extensions are linked, so this is the
        # moment to choose its class, without overriding an explicit choice.
        configured = "kernel_spec_manager_class" in serverapp.config.get("ServerApp", {})
        gateway = getattr(serverapp, "gateway_config", None)
        if (
            self.install_kernel_spec_manager
            and not configured
            and not (gateway is not None and gateway.gateway_enabled)
        ):
            serverapp.kernel_spec_manager_class = TFEnvKernelSpecManager
        # The session manager is built after extensions are linked too: a server that
        # keeps kernels keeps its sessions in a file, unless told where (or ":memory:").
        # Its sessions then wait for the start-up adoption instead of being dropped.
        if self.keep_kernels_on_stop != "off":
            if "database_filepath" not in serverapp.config.get("SessionManager", {}):
                os.makedirs(serverapp.runtime_dir, mode=0o700, exist_ok=True)
                path = session_database(
                    serverapp.runtime_dir, serverapp.root_dir, serverapp.base_url
                )
                serverapp.config.SessionManager.database_filepath = path
                self.log.info("tfenv: notebook sessions are kept in %s", path)
            if "session_manager_class" not in serverapp.config.get("ServerApp", {}):
                serverapp.session_manager_class = KeepingSessionManager

    def initialize_settings(self) -> None:
        assert self.serverapp is not None
        self.serverapp.log.addFilter(OneLineRefusals())
        install_connection_class(self.settings)  # the kernel status after auto-restarts
        # The package's own loggers (jupyter_tfenv.*: an engine failure's raw exception at
        # debug level, a pull worker's failure) write to the server's log, at its level.
        package_log = logging.getLogger("jupyter_tfenv")
        package_log.parent = self.serverapp.log
        package_log.setLevel(logging.NOTSET)  # the server's level; clears logging's cache
        ksm = self.serverapp.kernel_spec_manager
        if isinstance(ksm, TFEnvKernelSpecManager):
            catalog = ksm.catalog
        else:
            self.log.warning(
                "tfenv: the server's kernel spec manager is %s, so catalog environments are "
                "not in the kernel picker; write them to disk with `jupyter tfenv kernelspecs`.",
                type(ksm).__name__,
            )
            catalog = TFEnvCatalog(parent=self.serverapp)
        catalog.refresh()
        envs = catalog.all()
        self.log.info(
            "tfenv: %d environment(s) in the catalog: %s",
            len(envs),
            ", ".join(e.id for e in envs) or "none (see `jupyter tfenv check`)",
        )
        lock = catalog.lock_path()
        probes = Path(self.probe_cache_dir) if self.probe_cache_dir else probe_cache_dir()
        if self.probe_cache_dir:
            # The kernels' start check reads the same probes (provisioning/settings.py),
            # unless the provisioner's own setting says otherwise.
            section = self.serverapp.config.TFEnvKernelProvisioner
            section.setdefault("probe_cache_dir", self.probe_cache_dir)
        defaults = TFEnvKernelProvisioner(parent=self.serverapp, kernel_id="api")
        if defaults.broker_url:
            self.log.info(
                "tfenv: broker mode: kernels start through the tfenv broker at %s; this "
                "server does not use Docker",
                defaults.broker_url,
            )
        # Shown by the panel too (GET /tfenv/environments: files), where a write failed.
        files: dict[str, Any] | None = None
        if not defaults.broker_url:
            umask = os.umask(0o022)
            os.umask(umask)
            mismatch = uid_mismatch(
                os.getuid(),
                defaults.uid,
                shared=shares_folders(self.serverapp.root_dir, defaults.gid, umask),
            )
            if mismatch:
                self.log.warning("tfenv: %s", mismatch)
                files = {"server_uid": os.getuid(), "kernel_uid": defaults.uid, "message": mismatch}
        self.settings["tfenv"] = TFEnvService(
            catalog,
            probe_cache_dir=probes,
            lock_path=lock,
            provisioner_defaults=defaults,
            log=self.log,
            files=files,
        )
        self.make_tensorboards(self.settings, self.settings["tfenv"], self.serverapp.base_url)

    def initialize_handlers(self) -> None:
        modules = (environments, pulls, builds, kernels, checkpoints, logs, choices, tensorboards)
        for module in modules:
            self.handlers.extend(module.routes)

    async def _reap(self) -> None:
        """Remove what a dead predecessor of this server left (its source knows how: the
        local engine's orphans by labels, or the broker kernels of this hub server)."""
        await self.settings["tfenv"].source.reap_orphans(self)
        await self.reap_tensorboards(self.settings, self.log)

    def _pool_idle_timeout(self, env: Any) -> float:
        """The idle timeout of a pool: its entry's idle_timeout, else gpu_idle_timeout
        for GPU environments, else never."""
        return idle_timeout_of(env.to_config(), self.gpu_idle_timeout)

    async def _cull_loop(self) -> None:
        assert self.serverapp is not None
        while True:
            await asyncio.sleep(self.cull_interval)
            if self._pool is not None:
                try:
                    await self._pool.cull_idle()
                except Exception:
                    self.log.exception("tfenv: emptying idle pools failed")
            try:
                await cull_idle_kernels(
                    self.serverapp.kernel_manager,
                    gpu_idle_timeout=self.gpu_idle_timeout,
                    cull_connected=self.cull_connected,
                    log=self.log,
                )
            except Exception:
                self.log.exception("tfenv: looking for idle kernels failed")

    _cull_task: asyncio.Future[None] | None = None
    _allowed_task: asyncio.Future[None] | None = None

    #: How often (seconds) broker mode re-reads which environments the broker allows.
    ALLOWED_REFRESH = 60.0

    async def _hide_not_allowed_loop(self) -> None:
        """Broker mode: keep the environments the broker does not allow this user out of the
        kernel picker."""
        assert self.serverapp is not None
        ksm = self.serverapp.kernel_spec_manager
        service = self.settings["tfenv"]
        while isinstance(ksm, TFEnvKernelSpecManager):
            try:
                envs = await service.broker_environments()
            except TFEnvError as err:
                self.log.warning("tfenv: cannot ask the broker which environments: %s", err)
            else:
                hidden = frozenset(i for i, e in envs.items() if e.get("allowed") is False)
                if hidden != ksm.hidden_environments:
                    self.log.info(
                        "tfenv: environments not allowed by the broker, left out of the "
                        "kernel picker: %s",
                        ", ".join(sorted(hidden)) or "none",
                    )
                ksm.hidden_environments = hidden
            await asyncio.sleep(self.ALLOWED_REFRESH)

    def _stop_cleanly_on_sigint(self, serverapp: Any) -> None:
        """Make SIGINT stop the server with its cleanup also when stdin is not a tty.

        jupyter_server installs its SIGINT handler only on a tty; elsewhere SIGINT is a
        KeyboardInterrupt that ends the IO loop *without* shutting kernels down. Local
        ipykernels die with their parent, container kernels do not. JupyterHub's
        LocalProcessSpawner stops servers with SIGINT (and no tty), so every "Stop My
        Server" would leave the user's kernel containers running, holding GPUs and the
        user's kernel quota. SIGTERM already stops cleanly; SIGINT now does the same.
        """
        no_tty = not sys.stdin or not sys.stdin.isatty()
        if no_tty and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, serverapp._signal_stop)
            self._sigint_handler = serverapp._signal_stop
            self.log.debug("tfenv: SIGINT stops the server with its kernels (no tty)")
        elif no_tty and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # Started in the background of a shell (`jupyter lab &` in a script): left so,
            # as that shell meant; say why a SIGINT will do nothing.
            self.log.info("tfenv: this server ignores SIGINT (it was started so): use SIGTERM")

    _sigint_handler: Any = None
    _pool: KernelPool | None = None

    def _kept(self) -> Callable[[str], bool]:
        return keeps(self.keep_kernels_on_stop, self.settings["tfenv"].catalog)

    def _mark_adopted(self, kernel_id: str) -> None:
        """The panel's "adopted", while the kernel runs in that container."""
        manager = self.serverapp.kernel_manager if self.serverapp is not None else None
        prov = tfenv_provisioner(manager, kernel_id) if manager is not None else None
        if prov is not None and prov.container_id:
            self.settings["tfenv"].adopted.add(prov.container_id)

    async def _adopt_then_reap(self) -> None:
        """Adopt kept kernels first (keep_kernels_on_stop), then reap what is left."""
        if self.keep_kernels_on_stop != "off" and self.serverapp is not None:
            service = self.settings["tfenv"]
            try:
                await adopt_kernels(
                    self.serverapp.kernel_manager,
                    service.catalog,
                    defaults=service.defaults,
                    kept=self._kept(),
                    adopt_timeout=self.adopt_timeout,
                    log=self.log,
                    adopter=service.source.adopter,
                    on_adopted=self._mark_adopted,
                )
            except Exception:
                self.log.exception("tfenv: adopting kept kernels failed")
        if self.reap_orphans_on_start:
            await self._reap()
        # Last: pool kernels must not be taken for a previous server's kernels.
        if self.start_pools and self.serverapp is not None and not self._stopping:
            self._pool = start_pool(
                self.serverapp.kernel_manager,
                self.settings["tfenv"].catalog,
                self.log,
                idle_timeout=self._pool_idle_timeout,
            )

    _stopping = False

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        self._stop_cleanly_on_sigint(serverapp)
        self._reap_task = asyncio.ensure_future(self._adopt_then_reap())
        if isinstance(serverapp.session_manager, KeepingSessionManager):
            serverapp.session_manager.adoption = self._reap_task
        if self.cull_interval > 0:
            self._cull_task = asyncio.ensure_future(self._cull_loop())
        self.start_tensorboard_sweep(self.settings, self.log)
        if self.settings["tfenv"].source.hides_not_allowed:
            self._allowed_task = asyncio.ensure_future(self._hide_not_allowed_loop())

    #: Seconds a stopping server waits for the start-up adoption and orphan removal.
    STARTUP_TASK_WAIT = 30.0

    async def stop_extension(self) -> None:
        self._stopping = True
        # A server stopped right after it started lets its start-up adoption and orphan
        # removal finish: cut off half-way, they would leave a dead server's containers.
        task = getattr(self, "_reap_task", None)
        if task is not None and not task.done():
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self.STARTUP_TASK_WAIT)
        # Before the server's cleanup_kernels: kept kernels leave the kernel manager, so
        # that no shutdown request reaches them.
        if self.keep_kernels_on_stop != "off" and self.serverapp is not None:
            try:
                await detach_kernels(self.serverapp.kernel_manager, self._kept(), self.log)
            except Exception:
                self.log.exception("tfenv: keeping kernels failed; they are shut down")
        pool, self._pool = self._pool, None
        await stop_pool(pool)
        await self.stop_tensorboards(self.settings)
        if self._sigint_handler is not None:
            # A server embedded in another process (tests) hands Ctrl-C back.
            if signal.getsignal(signal.SIGINT) == self._sigint_handler:
                signal.signal(signal.SIGINT, signal.default_int_handler)
            self._sigint_handler = None
        for task in (self._cull_task, self._allowed_task):
            if task is not None:
                task.cancel()
        self._cull_task = self._allowed_task = None
