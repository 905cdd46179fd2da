"""A warm pool: kernels started ahead, per environment (catalog ``pool_size``).

Each pool kernel is a container kernel like any other (the same provisioner, hardening,
network, uid and storage), started for the server's root folder and labelled
``org.jupyter.tfenv.pool``; with ``preimport`` it has run ``import tensorflow``. When a
notebook starts a kernel of that environment, the provisioner takes one from the pool
instead of starting a container: it adopts it (jupyter_tfenv.lifecycle.adoption) under the new
kernel id and moves it into the notebook's folder and variables. The pool refills in the
background. In broker mode the pool kernels are started through the broker like any
other (so they count against the user's quotas), and a taken one keeps its pool id at
the broker (``TFEnvKernelProvisioner.container_kernel_id``).

A pool kernel can serve a notebook only where it sees the notebook's folder: with
``mount_root = "root_dir"`` (the default) any folder below the server's root; otherwise
the start falls back to a new container.

Kubernetes mode (the broker's ``backend = "kubernetes"``) uses the same pool: its kernels
are pods started through the broker, taken over by the same adoption (the provisioner's
``BrokeredKernel.attach``: the pod's IP, the key the server already holds). Where the pod
mounts the server's root from the user's home claim (``kubernetes_mount_home``) it runs
there, at the server's paths, and a take moves it into the notebook's folder; without the
home the pod runs in its own ``/tmp``, as a new kernel pod would, and a take leaves it
there (``PoolKernel.workdir``: the kernel's own answer). A start refused by the user's
kernel or GPU quota while the pool holds kernels of theirs makes the pool give one up
(:meth:`KernelPool.make_room`), so that pool kernels never stand in the way of the
user's own starts.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jupyter_client.localinterfaces import local_ips, localhost

from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints.layout import is_inside
from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.kernels import pools
from jupyter_tfenv.lifecycle import adoption
from jupyter_tfenv.lifecycle.keep import release
from jupyter_tfenv.provisioning.provisioner import POOL_KWARG, TFEnvKernelProvisioner

#: Seconds between two tries to start a pool kernel after a failure.
RETRY_DELAY = 30.0
#: Asks a kernel for its working directory (a user expression: nothing is printed).
CWD_EXPRESSION = "__import__('os').getcwd()"


@dataclass
class PoolKernel:
    kernel_id: str
    environment: str
    manager: Any  # the kernel manager that started it (not the server's mapping)
    container_id: str
    runtime_dir: str
    root: str  # the folder it was started in (and that is mounted)
    #: Where the kernel itself runs, as it answered (a container or a pod with the home:
    #: ``root``; a kernel pod without the notebook's folder: its own ``/tmp``).
    workdir: str = ""

    def folder_for(self, cwd: str) -> str:
        """Where this kernel runs for a notebook in ``cwd`` (below ``root``): the
        notebook's folder where the kernel sees the server's folders at their paths, else
        the folder it runs in (a new kernel pod without the home runs there too)."""
        if not self.workdir or is_inside(self.workdir, self.root):
            return cwd
        return self.workdir


class KernelPool:
    """The pool kernels of one server, for the environments whose entry sets pool_size."""

    #: Seconds between two tries to start a pool kernel after a failure (an engine
    #: outage, a missing image): the pool fills up by itself once the cause is gone.
    retry_delay: float = RETRY_DELAY

    def __init__(
        self,
        kernel_manager: Any,
        catalog: TFEnvCatalog,
        log: logging.Logger | Any,
        idle_timeout: Callable[[Environment], float] = lambda env: 0.0,
    ) -> None:
        self.kernel_manager = kernel_manager
        self.catalog = catalog
        self.log = log
        self.ready: dict[str, list[PoolKernel]] = {}
        #: The containers of the pool kernels taken by kernel starts ("from pool").
        self.taken: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        #: No pool kernel starts before this time (monotonic): the pool gave one up for a
        #: start refused by the user's quota (make_room), which is asked again first.
        self._yield_until = 0.0
        #: Seconds without a kernel start of an environment after which its pool is
        #: emptied (0: never); it fills again at the environment's next kernel start.
        self.idle_timeout = idle_timeout
        self._last_start: dict[str, float] = {}
        self._dormant: set[str] = set()

    @property
    def root(self) -> str:
        return os.path.realpath(str(getattr(self.kernel_manager, "root_dir", "") or os.getcwd()))

    def kernel_ids(self) -> set[str]:
        """The ids of the pool kernels (not yet taken)."""
        return {k.kernel_id for ks in self.ready.values() for k in ks}

    def environments(self) -> list[Environment]:
        return [env for env in self.catalog.all() if env.pool_size > 0]

    def start(self) -> None:
        """Fill every pool in the background."""
        now = time.monotonic()
        for env in self.environments():
            self._last_start[env.id] = now
            self.refill(env.id)

    def refill(self, env_id: str) -> None:
        if self._closed or env_id in self._dormant:
            return
        task = self._tasks.get(env_id)
        if task is None or task.done():
            self._tasks[env_id] = asyncio.ensure_future(self._fill(env_id))

    async def _fill(self, env_id: str) -> None:
        while not self._closed:
            try:
                env = self.catalog.get(env_id)
            except TFEnvError:
                return
            if len(self.ready.get(env_id, [])) >= env.pool_size:
                return
            held = self._yield_until - time.monotonic()
            if held > 0:
                await asyncio.sleep(held)
                continue
            try:
                kernel = await self._start_one(env)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.log.warning(
                    "tfenv: pool kernel of '%s' did not start (next try in %.0f s): %s",
                    env_id,
                    self.retry_delay,
                    err,
                )
                await asyncio.sleep(self.retry_delay)
                continue
            if self._closed:
                await self._shut_down(kernel)
                return
            self.ready.setdefault(env_id, []).append(kernel)
            self.log.info(
                "tfenv: pool kernel %s of '%s' ready (%d/%d)",
                kernel.kernel_id,
                env_id,
                len(self.ready[env_id]),
                env.pool_size,
            )

    async def _start_one(self, env: Environment) -> PoolKernel:
        mkm = self.kernel_manager
        kernel_id = str(uuid.uuid4())
        km = mkm.kernel_manager_factory(
            connection_file=os.path.join(mkm.connection_dir, f"kernel-{kernel_id}.json"),
            parent=mkm,
            log=self.log,
            kernel_name=env.kernel_name,
            kernel_spec_manager=mkm.kernel_spec_manager,
        )
        root = self.root
        # A failure, or the pool closing (a cancel), must shut a started kernel down, or
        # its container would outlive the server: also a cancel that lands after the
        # provisioner's launch and before start_kernel returns (jupyter_client awaits
        # once more there). A launch cut off half-way cleans up in launch_kernel itself.
        try:
            await km.start_kernel(kernel_id=kernel_id, cwd=root, **{POOL_KWARG: True})
            prov = km.provisioner
            if not isinstance(prov, TFEnvKernelProvisioner) or not prov.runtime_dir:
                raise TFEnvError(f"'{env.id}' is not a tfenv container environment")
            kernel = PoolKernel(
                kernel_id, env.id, km, str(prov.container_id), str(prov.runtime_dir), root
            )
            await asyncio.to_thread(adoption.mark_pool, kernel.runtime_dir)
            kernel.workdir = await self._workdir(km)
            if env.preimport:
                await self._preimport(km)
        except BaseException:
            if km.has_kernel:
                with contextlib.suppress(BaseException):
                    await asyncio.shield(km.shutdown_kernel(now=True))
            raise
        return kernel

    async def _silent(self, km: Any, code: str, timeout: float, **kw: Any) -> dict[str, Any]:
        """Run ``code`` silently in a pool kernel (nothing in its history or namespace's
        ``_``); the execute_reply."""
        client = km.client()
        client.start_channels(iopub=False, stdin=False, hb=False, control=False)
        try:
            await client.wait_for_ready(timeout=60)
            reply: dict[str, Any] = await client.execute(
                code, silent=True, store_history=False, reply=True, timeout=timeout, **kw
            )
        finally:
            client.stop_channels()
        return reply

    async def _workdir(self, km: Any) -> str:
        """The kernel's own working directory (a user expression, nothing printed)."""
        reply = await self._silent(km, "", 60, user_expressions={"cwd": CWD_EXPRESSION})
        value = (reply["content"].get("user_expressions") or {}).get("cwd") or {}
        if value.get("status") != "ok":
            raise TFEnvError(f"the kernel did not say its working directory: {value}")
        return str(ast.literal_eval(value["data"]["text/plain"]))

    async def _preimport(self, km: Any) -> None:
        # No name is bound in the notebook's namespace: only sys.modules has it.
        reply = await self._silent(km, "__import__('tensorflow')", 300)
        if reply["content"].get("status") != "ok":
            raise TFEnvError(f"import tensorflow failed: {reply['content'].get('evalue')}")

    async def cull_idle(self) -> list[str]:
        """Empty the pools of environments that started no kernel for their idle timeout
        (pool kernels hold memory and GPUs); the environments whose pool was emptied."""
        now = time.monotonic()
        culled = []
        for env in self.environments():
            timeout = self.idle_timeout(env)
            idle = now - self._last_start.get(env.id, now)
            if timeout <= 0 or idle < timeout or env.id in self._dormant:
                continue
            self._dormant.add(env.id)
            task = self._tasks.pop(env.id, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            kernels = self.ready.pop(env.id, [])
            culled.append(env.id)
            self.log.info(
                "tfenv: pool of '%s' emptied: no kernel start for %.0f s (idle timeout %.0f s); "
                "it fills again at the next start",
                env.id,
                idle,
                timeout,
            )
            await asyncio.gather(*(self._shut_down(k) for k in kernels))
        return culled

    async def take(self, env_id: str, cwd: str) -> dict[str, Any] | None:
        """A ready pool kernel of ``env_id`` for a notebook in ``cwd``, as the
        provisioner's adoption request; the pool then refills. None: none fits."""
        self._last_start[env_id] = time.monotonic()
        if env_id in self._dormant:
            self._dormant.discard(env_id)
            self.refill(env_id)  # this start is a cold one; the next finds the pool
        kernels = self.ready.get(env_id) or []
        while kernels:
            kernel = kernels[0]
            if not is_inside(cwd, kernel.root):
                return None  # pool kernels do not see that folder
            kernels.remove(kernel)
            alive = await kernel.manager.is_alive()
            if alive and getattr(kernel.manager.provisioner, "engine_away", False):
                # The Docker engine cannot be asked, so the adoption would fail and lose
                # the kernel: it stays in the pool, and this start goes on without it
                # (and says that the engine is away).
                await self._put_back(kernel)
                return None
            self.refill(env_id)
            if not alive:
                await self._shut_down(kernel)
                continue
            release(kernel.manager)
            await asyncio.to_thread(loopback_address, kernel.runtime_dir)
            self.taken.add(kernel.container_id)
            self.log.info(
                "tfenv: kernel start of '%s' takes pool kernel %s", env_id, kernel.kernel_id
            )
            return {
                "container_id": kernel.container_id,
                "runtime_dir": kernel.runtime_dir,
                "workdir": cwd,
                # Where the kernel moves to (the provisioner's _move_in).
                "kernel_cwd": kernel.folder_for(cwd),
                "container_kernel_id": kernel.kernel_id,
                "move_in": True,
            }
        return None

    async def make_room(self, *, gpus: bool = False) -> bool:
        """A kernel start was refused by the user's quota: shut a ready pool kernel down
        (for the GPU quota: one of an environment with GPUs), or else stop a pool
        kernel's start under way (its container or pod may already hold the place), and
        hold the refills for ``retry_delay``, so that the start asked again gets the
        place; whether the pool gave something up."""
        if self._closed:
            return False
        kernels = [
            k
            for ks in self.ready.values()
            for k in ks
            if not gpus or self._wants_gpu(k.environment)
        ]
        if kernels:
            kernel = kernels[-1]
            self.ready[kernel.environment].remove(kernel)
            self._yield_until = time.monotonic() + self.retry_delay
            self.log.info(
                "tfenv: pool kernel %s of '%s' gives its place to a kernel start refused by "
                "the quota",
                kernel.kernel_id,
                kernel.environment,
            )
            await self._shut_down(kernel)
            return True
        for env_id, task in list(self._tasks.items()):
            if task.done() or (gpus and not self._wants_gpu(env_id)):
                continue
            self._yield_until = time.monotonic() + self.retry_delay
            self.log.info(
                "tfenv: the pool of '%s' stops the start of a pool kernel: a kernel start "
                "refused by the quota gets its place",
                env_id,
            )
            task.cancel()  # a started kernel is shut down (_start_one)
            with contextlib.suppress(BaseException):
                await task
            self.refill(env_id)  # after the hold
            return True
        return False

    def _wants_gpu(self, env_id: str) -> bool:
        try:
            return self.catalog.get(env_id).wants_gpu
        except TFEnvError:
            return False

    async def _put_back(self, kernel: PoolKernel) -> None:
        """Return a kernel that was not taken to the front of its pool (unless the pool
        closed or was emptied meanwhile: then it is shut down)."""
        if self._closed or kernel.environment in self._dormant:
            await self._shut_down(kernel)
            return
        self.ready.setdefault(kernel.environment, []).insert(0, kernel)

    async def _shut_down(self, kernel: PoolKernel) -> None:
        with contextlib.suppress(Exception):
            await kernel.manager.shutdown_kernel(now=True)

    async def close(self) -> None:
        """Stop filling and shut every ready pool kernel down (server stop)."""
        self._closed = True
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(BaseException):
                await task
        kernels = [k for ks in self.ready.values() for k in ks]
        self.ready.clear()
        await asyncio.gather(*(self._shut_down(k) for k in kernels))


def loopback_address(runtime_dir: str) -> None:
    """A kernel pod's connection file names the pod's IP (jupyter_client wrote what the
    start answered); the kernel manager that adopts it launches on local addresses only.
    The file then says loopback, as a kept pod's new folder does (lifecycle/keep.py): the
    provisioner connects to the pod's IP once it attached. Other files are left as they
    are. BLOCKING."""
    path = os.path.join(runtime_dir, adoption.CONNECTION_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return  # the adoption reads it again and says what is wrong with it
    if (
        not isinstance(info, dict)
        or info.get("transport") != "tcp"
        or info.get("ip") in local_ips()
    ):
        return
    info["ip"] = localhost()
    with open(path, "w", encoding="utf-8") as f:  # in place: its owner and mode stay
        json.dump(info, f, indent=2)


def start_pool(
    kernel_manager: Any,
    catalog: TFEnvCatalog,
    log: Any,
    idle_timeout: Callable[[Environment], float] = lambda env: 0.0,
) -> KernelPool | None:
    """The server's pool (None when no environment asks for one)."""
    pool = KernelPool(kernel_manager, catalog, log, idle_timeout)
    if not pool.environments():
        return None
    pools.set_pool(pool)
    pool.start()
    return pool


async def stop_pool(pool: KernelPool | None) -> None:
    if pool is None:
        return
    pools.set_pool(None)
    await pool.close()
