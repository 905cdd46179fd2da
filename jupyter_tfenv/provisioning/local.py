"""A kernel in a container on this server's own Docker engine (no ``broker_url``).

The provisioner's steps that touch where the kernel runs, done in-process with the docker
SDK: this server makes the runtime folder, prepares the checkpoint storage, creates the
hardened container (``engine.container_spec``; shielded and GPU-allocated by the shared
steps of :mod:`jupyter_tfenv.backends.docker`), watches, signals and removes it. The
broker peer is :mod:`jupyter_tfenv.provisioning.brokered`; the provisioner holds one of the two.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import time
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, NotFound
from jupyter_client.connect import KernelConnectionInfo
from requests.exceptions import ConnectionError as RequestsConnectionError
from tornado.web import HTTPError

from jupyter_tfenv.backends.docker import live
from jupyter_tfenv.backends.docker.engine import (
    container_spec,
    explain_api_error,
    forget_shared_client,
    isolated_launcher,
    remove_quietly,
    resolve_image,
    run_with_gpus,
    shared_client,
    tail_logs,
)
from jupyter_tfenv.backends.docker.gpu_alloc import GpuUnavailableError
from jupyter_tfenv.backends.docker.steps import exit_state, remove_by_name, run_shielded
from jupyter_tfenv.catalog.lock import LockFile, LockMismatchError, check_lock, unlocked_message
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints import mountcheck
from jupyter_tfenv.checkpoints.layout import CheckpointStorageError, StorageConfig
from jupyter_tfenv.checkpoints.storage import prepare_kernel_storage
from jupyter_tfenv.core.labels import (
    LABEL_IMAGE_ID,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_RUNTIME_DIR,
)
from jupyter_tfenv.errors import (
    DockerUnavailableError,
    KernelStartError,
    engine_unreachable,
    unreachable_error,
)
from jupyter_tfenv.kernels.connection import prepare_runtime_root

if TYPE_CHECKING:
    from jupyter_tfenv.provisioning.provisioner import TFEnvKernelProvisioner

#: Container states of a kernel that runs (or may still bind its sockets).
RUNNING_STATES = ("created", "running", "restarting")


class LocalKernel:
    """The local-engine steps of one provisioner's kernel."""

    #: Seconds between polls while waiting for the kernel to end.
    wait_delay = 0.1
    #: The runtime folder is always this server's.
    owns_runtime_dir = True

    def __init__(self, prov: TFEnvKernelProvisioner) -> None:
        self.prov = prov

    async def docker(self) -> Any:
        p = self.prov
        if p._client is None:
            try:
                p._client = await p._call(shared_client, p.docker_timeout)
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
        env = p._environment()
        if p.lock_policy == "strict" and not p.locked_digest and not env.image_ref.digest:
            message = await p._call(unlocked_message, env, p.lock_file or None)
            raise KernelStartError(message, status_code=409)
        client = await self.docker()
        image = await p._call(resolve_image, client, env)
        if p.locked_digest and p.lock_policy != "off":
            await self._check_lock(client, env)
        cwd = await p._call(os.path.realpath, str(kwargs.get("cwd") or os.getcwd()))
        await p._call(self.prepare_storage, client, env, image.id)
        # jupyter_client swaps a leading "python3" for the server's own interpreter; in the
        # container it must be the image's.
        if cmd and cmd[0] != env.python:
            cmd = [env.python, *cmd[1:]]
        cmd = isolated_launcher(cmd)
        req = p._request(cmd, cwd, image.id)
        spec = container_spec(env, req)
        started = time.monotonic()
        try:
            # Shielded (steps.run_shielded): a start request cancelled while Docker
            # creates the container must not leave the container behind.
            container, p._gpu_devices = await run_with_gpus(
                client,
                env,
                spec,
                lambda spec: run_shielded(client, spec),
                configured=p.gpu_devices,
                viewer=p.owner,
                placement=p.gpu_placement,
                prefer=p._gpu_devices,
                wait=p.gpu_wait_timeout,
            )
        except asyncio.CancelledError:
            await p._call(remove_by_name, client, spec["name"])
            raise
        except GpuUnavailableError as err:
            raise KernelStartError(err.message, status_code=err.status) from err
        except APIError as err:
            # Docker may have created the container before failing to start it.
            await p._call(remove_by_name, client, spec["name"])
            raise KernelStartError(explain_api_error(err, env)) from err
        except RequestsConnectionError as err:
            forget_shared_client(client)
            p._client = None
            raise KernelStartError(
                f"The Docker engine stopped answering while starting the kernel: {err}. "
                "Check that it runs (`docker info`) and start the kernel again.",
                status_code=503,
            ) from err
        p._container = container
        p.container_id = container.id
        p.cwd = cwd
        p.log.info(
            "tfenv: kernel %s runs in container %s (%s, image %s)",
            p.kernel_id,
            container.name,
            env.id,
            image.id[:19],
        )
        try:  # not strict: see mountcheck.verify_mounts (the folders are the user's own)
            await p._call(
                mountcheck.verify_mounts,
                container,
                p._storage_checked,
                strict=False,
                log=p.log,
            )
        except mountcheck.MountChangedError as err:
            raise KernelStartError(err.message, status_code=403) from err
        await p._wait_until_bound(env, started)
        return p.connection_info

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

    def prepare_storage(self, client: Any, env: Environment, image_id: str) -> None:
        """Create this user's checkpoint and log folders (or volumes) for ``env``; blocking.

        They belong to the kernel's uid:gid before the container starts.
        """
        p = self.prov
        try:
            storage = prepare_kernel_storage(
                client,
                StorageConfig.from_provisioner(p),
                p.owner,
                env,
                uid=p.uid,
                gid=p.gid,
                image_id=image_id,
                helper_image=p.checkpoint_helper_image,
            )
        except CheckpointStorageError as err:
            raise KernelStartError(
                f"The checkpoint storage of '{env.id}' is not usable: {err}", status_code=500
            ) from err
        p._storage_mounts = storage.mounts
        p._storage_env = storage.environment
        p._storage_checked = storage.checked
        p.checkpoint_info = storage.info

    async def attach(self, env: Environment, adopt: dict[str, Any]) -> dict[str, Any]:
        """Adoption: the running container of this kernel id, checked by its labels."""
        p = self.prov
        client = await self.docker()
        try:
            container = await p._call(client.containers.get, str(adopt["container_id"]))
        except (NotFound, KeyError) as err:
            raise KernelStartError(
                f"Kernel {p.kernel_id} cannot be adopted: its container is gone."
            ) from err
        labels = container.labels or {}
        expected_id = p.container_kernel_id
        if (
            labels.get(LABEL_KERNEL_ID) != expected_id
            or labels.get(LABEL_OWNER) != p.owner
            or labels.get(LABEL_RUNTIME_DIR) != p.runtime_dir
            or container.status not in RUNNING_STATES
        ):
            raise KernelStartError(
                f"Kernel {p.kernel_id} cannot be adopted: container {container.name} "
                f"is {container.status} and labelled for kernel "
                f"{labels.get(LABEL_KERNEL_ID)!r} of {labels.get(LABEL_OWNER)!r}."
            )
        p._container = container
        p.container_id = container.id
        # Where its checkpoints are (the folders exist: this only finds them again).
        image_id = str(labels.get(LABEL_IMAGE_ID) or container.image.id)
        await p._call(self.prepare_storage, client, env, image_id)
        return adopt

    # -- while the kernel starts ---------------------------------------------------------

    async def exit_state(self) -> dict[str, Any] | None:
        """None while the starting container runs; else its ``exit_code``, ``oom_killed``."""
        return await self.prov._call(exit_state, self.prov._container, RUNNING_STATES)

    async def start_logs(self) -> str:
        """The starting container's last log lines."""
        return str(await self.prov._call(tail_logs, self.prov._container))

    async def discard(self) -> None:
        """Remove the container of a failed start."""
        await self.prov._call(remove_quietly, self.prov._container)
        self.prov._forget_container()

    async def failed_launch(self) -> None:
        """A start failed or was cancelled: no container, no runtime folder is left."""
        p = self.prov
        if p._container is not None:
            await self._remove_failed_start()
        if p.runtime_dir:
            await p._call(shutil.rmtree, p.runtime_dir, True)

    async def _remove_failed_start(self) -> None:
        """Remove the container of a failed start; while the engine cannot be asked, say
        what is left (labelled with this server: ``jupyter tfenv gc`` removes it once the
        server is gone)."""
        p = self.prov
        container = p._container
        try:
            await p._call(remove_quietly, container)
        except Exception as err:
            if not engine_unreachable(err):
                raise
            p.log.warning(
                "tfenv: kernel %s: container %s of the failed start not removed, the "
                "Docker engine cannot be asked",
                p.kernel_id,
                str(getattr(container, "name", "?")),
            )
        p._forget_container()

    # -- a running kernel ----------------------------------------------------------------

    async def container(self) -> Any:
        p = self.prov
        if p._container is None and p.container_id:
            client = await self.docker()
            try:
                p._container = await p._call(client.containers.get, p.container_id)
            except NotFound:
                p._forget_container()
        return p._container

    async def poll(self) -> int | None:
        p = self.prov
        try:
            container = await self.container()
            if container is None:
                return 0 if p.container_id is None else 1
            await p._call(container.reload)
        except NotFound:
            p._forget_container()
            return 1
        except Exception as err:
            if not engine_unreachable(err):
                raise
            return await self._poll_without_engine(err)
        if p._engine_away:
            p._engine_away = False
            p.log.info("tfenv: kernel %s: the Docker engine answers again", p.kernel_id)
        if container.status in RUNNING_STATES:
            return None
        return int(container.attrs.get("State", {}).get("ExitCode", 1))

    async def _poll_without_engine(self, err: BaseException) -> int | None:
        """The engine cannot be asked: the kernel process does not need it (its sockets
        are in the runtime folder, or on its ports), so it counts as alive unless nothing
        listens on its heartbeat socket any more."""
        p = self.prov
        listening = await p._call(self._heartbeat_listens)
        if listening is not False and p._engine_away:
            return None  # said once per outage, not at every poll of the restarter
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
        try:
            container = await self.container()
            if container is None:
                return
            # docker-init (PID 1) forwards the signal to the kernel process.
            await p._call(container.kill, signal=int(signum))
        except NotFound:
            p._forget_container()
        except APIError as err:
            if err.status_code != 409:  # 409: not running, nothing to signal
                raise
        except Exception as err:
            if not engine_unreachable(err):
                raise
            if signum in (signal.SIGKILL, signal.SIGTERM):
                # Shutting down: cleanup() follows and says what is left.
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
            container = await self.container()
            if container is not None:
                await p._call(remove_quietly, container)
                live.forget_container(container.id)
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
