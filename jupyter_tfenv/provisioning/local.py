"""A kernel in a container on this server's own Docker engine (no ``broker_url``).

A thin runner over a :class:`~jupyter_tfenv.backends.docker.backend.DockerBackend` built
for the local server (:func:`local_backend`): the backend prepares the checkpoint storage,
creates the hardened container (shielded, GPU-allocated, mounts verified), finds it (exit
state, OOM), reads its logs, signals, adopts and removes it. What stays here is the
provisioner's own: the uid check, the runtime folder and connection file (jupyter_client
writes it; the provisioner waits for the sockets of its transport), the kernelspec's lock
and image checks (their messages name this server's pull), and the poll that keeps a
kernel alive while the engine is away (its heartbeat socket). The broker peer is
:mod:`jupyter_tfenv.provisioning.brokered`; the provisioner holds one of the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from jupyter_client.connect import KernelConnectionInfo
from requests.exceptions import ConnectionError as RequestsConnectionError
from tornado.web import HTTPError

from jupyter_tfenv.backends.base import (
    GONE,
    RUNNING_STATES,
    BackendError,
    KernelInfo,
    KernelNotFound,
)
from jupyter_tfenv.backends.docker.backend import DockerBackend
from jupyter_tfenv.backends.docker.engine import (
    isolated_launcher,
    resolve_image,
)
from jupyter_tfenv.backends.docker.steps import remove_when_back
from jupyter_tfenv.catalog.lock import LockFile, LockMismatchError, check_lock, unlocked_message
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.errors import (
    DockerUnavailableError,
    KernelStartError,
    engine_unreachable,
    unreachable_error,
)
from jupyter_tfenv.kernels.connection import prepare_runtime_root, runtime_name
from jupyter_tfenv.provisioning import choices
from jupyter_tfenv.provisioning.engine_restart import death_forgotten, from_timestamp

if TYPE_CHECKING:
    from jupyter_tfenv.provisioning.provisioner import TFEnvKernelProvisioner


class LocalKernel:
    """The local-engine steps of one provisioner's kernel."""

    #: Seconds between polls while waiting for the kernel to end.
    wait_delay = 0.1
    #: The runtime folder is always this server's.
    owns_runtime_dir = True
    #: Seconds a restart of a kernel that died with the engine waits for the engine.
    engine_wait = 180.0

    def __init__(self, prov: TFEnvKernelProvisioner) -> None:
        self.prov = prov
        self.caller = local_caller(prov)
        self.backend = local_backend(prov)
        #: The name of this kernel's container (for messages).
        self.container_name = ""
        #: The dead container whose cause was looked up (engine_restart.death_forgotten).
        self._death_checked: str | None = None
        #: When a poll found this kernel's container dead (its restart checks the engine).
        self._died_at: float | None = None

    async def docker(self) -> Any:
        p = self.prov
        try:
            p._client = await self.backend.docker()
        except DockerUnavailableError as err:
            raise KernelStartError(str(err), status_code=503) from err
        return p._client

    def check(self) -> None:
        p = self.prov
        if p.uid == 0 and not p.allow_root:
            raise KernelStartError(
                "Refusing to run the kernel as root (uid 0) inside its container. Start "
                "Jupyter as your own user, or set c.DockerKernelProvisioner.uid to a non-root "
                "uid (allow_root=True exists, but gives the kernel root on its mounts).",
                status_code=400,
            )

    async def prepare_runtime(self, restart: bool) -> None:
        p = self.prov
        p.runtime_dir = await p._call(p._prepare_runtime_dir, restart)

    async def undo_pre_launch(self, restart: bool) -> None:
        """A pre-launch failed: launch_kernel's cleanup removes what was made."""

    async def adopt_root(self, rundir: str) -> str:
        return str(await self.prov._call(prepare_runtime_root, self.prov.runtime_root))

    # -- start ---------------------------------------------------------------------------

    async def launch(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        p = self.prov
        env = choices.chosen_environment(p._environment(), p._choices)  # docs/choices.md
        if p.lock_policy == "strict" and not p.locked_digest and not env.image_ref.digest:
            message = await p._call(unlocked_message, env, p.lock_file or None)
            raise KernelStartError(message, status_code=409)
        died_at, self._died_at = self._died_at, None
        if (p._engine_death is not None or died_at is not None) and await self._await_engine():
            # The engine went away between the kernel's death and its restart: it was
            # stopping (it stops its containers while it still answers).
            p._engine_death = p._engine_death or from_timestamp(died_at or time.time())
        client = await self.docker()
        await p._call(resolve_image, client, env)  # its message names this server's pull
        if p.locked_digest and p.lock_policy != "off":
            await self._check_lock(client, env)
        cwd = await p._call(os.path.realpath, str(kwargs.get("cwd") or os.getcwd()))
        # jupyter_client swaps a leading "python3" for the server's own interpreter; in the
        # container it must be the image's.
        if cmd and cmd[0] != env.python:
            cmd = [env.python, *cmd[1:]]
        request = p._start_request(isolated_launcher(cmd), cwd)
        try:
            # Shielded (steps.run_shielded): a start request cancelled while Docker
            # creates the container does not leave the container behind.
            started = await self.backend.start(self.caller, request, env)
        except BackendError as err:
            raise start_error(err) from err
        self.container_name = str(started["name"])
        p.container_id = str(started["container_id"])
        p._gpu_devices = tuple(started.get("gpu_devices") or ())
        p.checkpoint_info = dict(started["checkpoints"])
        p.cwd = cwd
        await p._wait_until_bound(env, time.monotonic())
        return p.connection_info

    async def _await_engine(self) -> bool:
        """The restart of a kernel that died: wait (at most :attr:`engine_wait`
        seconds) until the engine answers, as it does after its restart; whether it had
        to wait. A start that failed at once would end jupyter's restarter, which starts
        again only after a restart that worked: the kernel would stay dead."""
        p = self.prov
        deadline = time.monotonic() + self.engine_wait
        said = False
        while True:
            try:
                client = await self.backend.docker()
                await p._call(client.ping)
                return said
            except Exception as err:
                if not engine_unreachable(err) or time.monotonic() > deadline:
                    return said  # the start says what is wrong
            if not said:
                said = True
                p.log.info(
                    "tfenv: kernel %s: waiting up to %.0f s for the Docker engine to restart it",
                    p.kernel_id,
                    self.engine_wait,
                )
            await asyncio.sleep(1.0)

    async def _check_lock(self, client: Any, env: Environment) -> None:
        """Refuse (or warn about) a local image that is not the locked digest of its tag."""
        p = self.prov
        lock = LockFile("the kernelspec", {env.image: {"digest": p.locked_digest}})
        try:
            await p._call(check_lock, client, env, lock)
        except LockMismatchError as err:
            if p.lock_policy == "warn":
                p.log.warning("tfenv: starting anyway (lock_policy=warn): %s", err)
                return
            raise KernelStartError(str(err), status_code=409) from err

    async def attach(self, env: Environment, adopt: dict[str, Any]) -> dict[str, Any]:
        """Adoption: the running container of this kernel id, checked by its labels."""
        p = self.prov
        try:
            info = await self.backend.adopt(self.caller, p.container_kernel_id)
        except KernelNotFound:
            info = None
        except Exception:
            if adopt.get("move_in"):
                # A pool kernel handed to this start (the engine went away since): the
                # failed start removes its container, now or once the engine is back.
                p.container_id = str(adopt.get("container_id") or "") or None
            raise
        if info is None or info.container_id != str(adopt.get("container_id") or ""):
            raise KernelStartError(
                f"Kernel {p.kernel_id} cannot be adopted: its container is gone."
            )
        if info.runtime_dir != p.runtime_dir or info.status not in RUNNING_STATES:
            raise KernelStartError(
                f"Kernel {p.kernel_id} cannot be adopted: container {info.name} "
                f"is {info.status} and labelled for kernel {p.container_kernel_id!r} "
                f"of {p.owner!r}."
            )
        p.container_id = info.container_id
        self.container_name = info.name
        p._choices = choices.adopted(env, info.choices, p.log)  # its restarts keep it
        # Where its checkpoints are (the folders exist: this only finds them again).
        client = await self.docker()
        try:
            storage = await p._call(
                self.backend.prepare_storage, client, self.caller, env, str(info.image_id or "")
            )
        except BackendError as err:
            raise start_error(err) from err
        p.checkpoint_info = storage[2]
        return adopt

    # -- while the kernel starts ---------------------------------------------------------

    async def exit_state(self) -> dict[str, Any] | None:
        """None while the starting container runs; else its ``exit_code``, ``oom_killed``
        (a removed container: ``removed``, exit code None)."""
        info = await self._find()
        if info is None:
            return GONE.copy()
        if info.status in RUNNING_STATES:
            return None
        return {"exit_code": info.exit_code, "oom_killed": info.oom_killed}

    async def start_logs(self) -> str:
        """The starting container's last log lines."""
        try:
            return await self.backend.logs(self.caller, self.prov.container_kernel_id)
        except KernelNotFound:
            return ""

    async def discard(self) -> None:
        """Remove the container of a failed start."""
        await self._remove_container()
        self.prov._forget_container()

    async def failed_launch(self) -> None:
        """A start failed or was cancelled: no container, no runtime folder is left."""
        p = self.prov
        if p.container_id is not None:
            await self._remove_failed_start()
        if p.runtime_dir:
            await p._call(shutil.rmtree, p.runtime_dir, True)

    async def _remove_failed_start(self) -> None:
        """Remove the container of a failed start; while the engine cannot be asked, it
        is removed once the engine answers again (steps.remove_when_back; a server that
        stops first leaves it to the next one's orphan removal: it carries its labels)."""
        p = self.prov
        try:
            await self._remove_container()
        except Exception as err:
            if not engine_unreachable(err):
                raise
            name = str(self.container_name or p.container_id)
            p.log.warning(
                "tfenv: kernel %s: container %s of the failed start not removed yet, the "
                "Docker engine cannot be asked: it is removed once the engine answers again",
                p.kernel_id,
                name,
            )
            remove_when_back(
                self.backend.docker,
                str(p.container_id),
                what=f"tfenv: kernel {p.kernel_id}: container {name}",
                log=p.log,
            )
        p._forget_container()

    async def _remove_container(self) -> None:
        """Remove this kernel's container (its runtime folder is the provisioner's)."""
        with contextlib.suppress(KernelNotFound):
            await self.backend.remove(self.caller, self.prov.container_kernel_id, keep_runtime=True)

    async def _find(self) -> KernelInfo | None:
        """This kernel's container as the backend sees it now; None when it is gone."""
        p = self.prov
        info = await self.backend.find(self.caller, p.container_kernel_id)
        if info is None or info.container_id != p.container_id:
            return None
        return info

    # -- a running kernel ----------------------------------------------------------------

    async def poll(self) -> int | None:
        p = self.prov
        if p.container_id is None:
            return 0
        try:
            info = await self._find()
        except Exception as err:
            if not engine_unreachable(err):
                raise
            status = await self._poll_without_engine(err)
            if status is not None and p._engine_lost_at is not None and not p._engine_death:
                p._engine_death = from_timestamp(p._engine_lost_at)  # died while it was away
            return status
        lost_at, p._engine_lost_at = p._engine_lost_at, None
        if p._engine_away:
            p._engine_away = False
            p.log.info("tfenv: kernel %s: the Docker engine answers again", p.kernel_id)
        if info is None:
            p._forget_container()
            self._died_at = time.time()  # its restart waits for an engine that went away
            return 1
        if info.status in RUNNING_STATES:
            return None
        await self._why_dead(info.container_id, lost_at)
        return int(info.exit_code if info.exit_code is not None else 1)

    async def _why_dead(self, container_id: str, lost_at: float | None) -> None:
        """Whether the engine's restart ended this container (once per container): the
        engine has no record of its death (engine_restart.py), or, when it cannot be
        asked, this server saw the engine away in the kernel's life; else the restart
        tells (the engine is away by then: it was stopping)."""
        p = self.prov
        if p._engine_death is not None or self._death_checked == container_id:
            return
        self._death_checked = container_id
        self._died_at = time.time()
        try:
            client = await self.backend.docker()
            p._engine_death = await p._call(death_forgotten, client, container_id)
        except Exception as err:
            p.log.debug("tfenv: kernel %s: its death not looked up: %r", p.kernel_id, err)
            p._engine_death = from_timestamp(lost_at) if lost_at is not None else None

    async def _poll_without_engine(self, err: BaseException) -> int | None:
        """The engine cannot be asked: the kernel process does not need it (its sockets
        are in the runtime folder, or on its ports), so it counts as alive unless nothing
        listens on its heartbeat socket any more."""
        p = self.prov
        listening = await p._call(self._heartbeat_listens)
        if listening is not False and p._engine_away:
            return None  # said once per outage, not at every poll of the restarter
        if not p._engine_away:
            p._engine_lost_at = time.time()
        p._engine_away = True
        p.log.warning(
            "tfenv: kernel %s: the Docker engine cannot be asked (%s); the kernel %s",
            p.kernel_id,
            str(err).split("\n", 1)[0][:200],
            "still listens" if listening is not False else "no longer listens: it is gone",
        )
        return None if listening is not False else 1

    def _heartbeat_listens(self) -> bool | None:
        """Whether a process listens on the kernel's heartbeat socket (a connect, nothing
        sent); None when that cannot be told (no connection info, an unexpected error)."""
        p = self.prov
        info: dict[str, Any] = dict(p.connection_info or {})
        if "hb_port" not in info or "ip" not in info:
            return None
        ipc = info.get("transport", p.transport) == "ipc"
        family = socket.AF_UNIX if ipc else socket.AF_INET
        address: Any = f"{info['ip']}-{info['hb_port']}" if ipc else (info["ip"], info["hb_port"])
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            try:
                sock.connect(address)
            except (ConnectionRefusedError, FileNotFoundError):
                return False
            except OSError:
                return None
        return True

    async def signal(self, signum: int) -> None:
        p = self.prov
        if signum == 0:
            await p.poll()
            return
        if p.container_id is None:
            return
        try:
            # docker-init (PID 1) forwards the signal to the kernel process.
            await self.backend.signal(self.caller, p.container_kernel_id, int(signum))
        except KernelNotFound:
            p._forget_container()
        except Exception as err:
            if not engine_unreachable(err):
                raise
            # Shutting down (cleanup() follows and says what is left), or the kernel is
            # gone: the restarter's restart interrupts it first, and a 503 there would
            # end the restart and the restarter with it.
            if signum in (signal.SIGKILL, signal.SIGTERM) or (
                await p._call(self._heartbeat_listens) is False
            ):
                p.log.warning(
                    "tfenv: kernel %s not signalled: the Docker engine cannot be asked",
                    p.kernel_id,
                )
                return
            message = unreachable_error(err).message
            raise HTTPError(503, message, reason="Docker engine unreachable") from err

    async def remove(self, restart: bool) -> None:
        p = self.prov
        try:
            if p.container_id is not None:
                await self._remove_container()
        except Exception as err:
            if not engine_unreachable(err):
                raise
            # Labelled with this server: the reaper removes it once the engine is back.
            p.log.warning(
                "tfenv: kernel %s: container %s not removed, the Docker engine cannot be asked: %s",
                p.kernel_id,
                str(p.container_id or "?")[:12],
                str(err).split("\n", 1)[0][:200],
            )
        p._forget_container()


def start_error(err: BackendError) -> KernelStartError:
    """The backend's refusal of a start as this server says it (an engine refusal is a
    500 here, as it always was; a lost engine is said as before)."""
    if err.http_status == 503 and isinstance(err.__cause__, RequestsConnectionError):
        return KernelStartError(
            f"The Docker engine stopped answering while starting the kernel: {err.__cause__}. "
            "Check that it runs (`docker info`) and start the kernel again.",
            status_code=503,
        )
    status = 500 if err.reason == "docker refused" else err.http_status
    return KernelStartError(err.message, status_code=status, logs=err.logs)


def local_caller(prov: TFEnvKernelProvisioner) -> Caller:
    """Whom a local server's kernels run for: the provisioner's owner, uid, gid and home."""
    return Caller(name=prov.owner, uid=prov.uid, gid=prov.gid, home=prov.home)


def local_backend(prov: TFEnvKernelProvisioner, **options: Any) -> DockerBackend:
    """The :class:`DockerBackend` of a local server's kernel: the provisioner's settings,
    its runtime folder, mounts verified without strictness (the folders are the user's
    own: see mountcheck.verify_mounts); containers found by their owner label (a local
    server's kernels never carried a uid label), connection folders ``{root}/{kernel}``;
    ``options`` add to those (the REST service's GPU overview)."""
    return DockerBackend(
        prov,
        catalog=None,  # the kernelspec's lock: LocalKernel._check_lock
        runtime_root=prov.runtime_root,
        strict_mounts=False,
        uid_label=False,
        runtime_dir_of=_local_runtime_dir,
        stage_mounts=False,
        home=prov.home,
        read_only_rootfs=prov.read_only_rootfs,
        probe_cache_dir=prov.probe_cache_dir,
        await_ready=False,  # the provisioner waits for its own transport's sockets
        config_section="DockerKernelProvisioner",
        log_prefix="tfenv",
        log=prov.log,
        **options,
    )


def _local_runtime_dir(root: str, caller: Caller, kernel_id: str) -> str:
    """A local kernel's connection folder (kernels/connection.py: one per kernel id)."""
    return os.path.join(root, runtime_name(kernel_id))
