"""The Docker kernel provisioner: one kernel, one container of the environment's image.

Registered in the ``jupyter_client.kernel_provisioners`` entry point group as
``tfenv-docker``. Everything it needs to know about the environment travels in the
kernelspec (``metadata.kernel_provisioner.config.environment``), so the same kernelspec
works in jupyter_server, nbclient, papermill and ``jupyter console``.

The connection runs over ZeroMQ IPC sockets in a per-kernel runtime folder (0700, owned
by the kernel's uid) bind-mounted at the same path, so no kernel port is on any network.
The HMAC key lives only in the connection file in that folder (0600): never in the
container's environment, labels, command line or logs.

Broker mode (``broker_url`` set, JupyterHub): the same lifecycle, but every step that
touches Docker is a request to the tfenv broker (docs/broker.md): the runtime folder is
the broker's, the start is ``POST /api/kernels``, the container checks while waiting for
the sockets, poll, signals and removal go through the broker; the server never makes a
Docker client. The methods between ``_wait_until_bound`` and ``_fail_exited`` are the seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import zmq
from docker.errors import APIError, NotFound
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.localinterfaces import localhost
from jupyter_client.provisioning import LocalProvisioner
from requests.exceptions import ConnectionError as RequestsConnectionError
from tornado.web import HTTPError
from traitlets import Bool, Dict, Enum, Integer, List, Unicode, default

from jupyter_tfenv.backends.broker import (
    BROKER_TOKEN_VAR,
    BROKER_URL_VAR,
    BrokerClient,
    BrokerError,
    BrokerNotFoundError,
)
from jupyter_tfenv.backends.docker import live
from jupyter_tfenv.backends.docker.engine import (
    KernelRequest,
    container_spec,
    default_owner,
    explain_api_error,
    explain_start_exit,
    forget_shared_client,
    isolated_launcher,
    remove_quietly,
    resolve_image,
    run_with_gpus,
    shared_client,
    tail_logs,
)
from jupyter_tfenv.backends.docker.gpu_alloc import GpuUnavailableError
from jupyter_tfenv.backends.docker.steps import (
    exit_state,
    remove_by_name,
    run_shielded,
    wait_until_bound,
)
from jupyter_tfenv.backends.settings import CheckpointStorageSettings, KernelContainerSettings
from jupyter_tfenv.catalog.lock import LockFile, LockMismatchError, check_lock, unlocked_message
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.checkpoints import mountcheck
from jupyter_tfenv.checkpoints.layout import CheckpointStorageError, StorageConfig
from jupyter_tfenv.checkpoints.storage import prepare_kernel_storage
from jupyter_tfenv.core.labels import (
    LABEL_IMAGE_ID,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_POOL,
    LABEL_RUNTIME_DIR,
)
from jupyter_tfenv.errors import (
    CatalogError,
    DockerUnavailableError,
    KernelStartError,
    engine_unreachable,
    unreachable_error,
)
from jupyter_tfenv.kernels.connection import (
    default_runtime_root,
    prepare_runtime_root,
    runtime_name,
)
from jupyter_tfenv.lifecycle import adoption
from jupyter_tfenv.server import metrics

_RUNNING_STATES = ("created", "running", "restarting")

#: Keyword argument of ``start_kernel`` that makes the provisioner adopt a running
#: container ({"container_id", "runtime_dir", "workdir"}) instead of starting one.
ADOPT_KWARG = "tfenv_adopt"
#: Keyword argument of ``start_kernel``: this kernel is started for the warm pool.
POOL_KWARG = "tfenv_pool"


#: The config section of the provisioner's old class name, read as its own.
LEGACY_SECTION = "DockerKernelProvisioner"


def _env_int(name: str, fallback: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else fallback


class TFEnvKernelProvisioner(  # type: ignore[metaclass]
    KernelContainerSettings, CheckpointStorageSettings, LocalProvisioner
):
    """Runs a kernel of a tfenv environment (the ``tfenv-docker`` provisioner): a hardened
    container of a pinned image on the local engine, or a kernel the tfenv broker starts.

    Its config section is also ``DockerKernelProvisioner``, this class's name until issue
    18 (docs and configs use it everywhere): ``c.DockerKernelProvisioner.x`` configures
    it; ``c.TFEnvKernelProvisioner.x`` wins where both are set.
    """

    @classmethod
    def section_names(cls) -> list[str]:
        names = list(super().section_names())
        at = names.index("TFEnvKernelProvisioner")
        return [*names[:at], LEGACY_SECTION, *names[at:]]

    _broker: BrokerClient | None

    environment = Dict(help="The catalog entry, from the kernelspec (not configurable).")
    pinning = Unicode("tags", help="Pinning policy the kernelspec was written with.")
    locked_digest = Unicode(
        None, allow_none=True, help="The digest the lock file pins this tag to (kernelspec)."
    )
    lock_policy = Unicode("enforce", help="enforce | strict | warn | off (from the kernelspec).")
    lock_file = Unicode("", help="The lock file the kernelspec was made from (strict only).")

    uid = Integer(
        help="""uid the kernel runs as inside its container. Defaults to the server's own
        uid ($JUPYTER_TFENV_KERNEL_UID overrides). uid 0 is refused unless allow_root.""",
    ).tag(config=True)

    gid = Integer(
        help="gid of the kernel (default: the server's gid, or $JUPYTER_TFENV_KERNEL_GID).",
    ).tag(config=True)

    @default("uid")
    def _default_uid(self) -> int:
        return _env_int("JUPYTER_TFENV_KERNEL_UID", os.getuid())

    @default("gid")
    def _default_gid(self) -> int:
        return _env_int("JUPYTER_TFENV_KERNEL_GID", os.getgid())

    allow_root = Bool(
        False, help="Allow kernels to run as uid 0 in their containers (not recommended)."
    ).tag(config=True)

    owner = Unicode(help="Owner label of kernel containers (default: the notebook user).").tag(
        config=True
    )

    @default("owner")
    def _default_owner(self) -> str:
        return default_owner()

    transport = Enum(
        ["ipc", "tcp"],
        default_value="ipc",
        help="""'ipc' (default): ZeroMQ over Unix sockets in the kernel's runtime folder, on
        no network. 'tcp': 127.0.0.1 in the host's network namespace, for engines where Unix
        sockets cannot cross into the container (Docker Desktop).""",
    ).tag(config=True)

    runtime_root = Unicode(
        help="""Folder for per-kernel runtime folders (IPC sockets, connection file). Keep
        its path short: Unix socket paths are limited to 107 bytes. It must be a real
        folder (no symlink) of the server's own uid that no other user can write to;
        otherwise kernels are refused. Default: $XDG_RUNTIME_DIR/tfenv when
        $XDG_RUNTIME_DIR is a private folder of the server's uid, else /tmp/tfenv-<uid>.""",
    ).tag(config=True)

    @default("runtime_root")
    def _default_runtime_root(self) -> str:
        return default_runtime_root()

    env_allowlist = List(
        Unicode(),
        default_value=["LANG", "LC_ALL", "LC_CTYPE", "TZ"],
        help="""Server environment variables passed to kernels. Nothing else from the
        server's environment reaches a container (no tokens, no JUPYTERHUB_*).""",
    ).tag(config=True)

    home = Unicode("/tmp", help="HOME inside kernel containers.").tag(config=True)  # noqa: S108

    mount_root = Enum(
        ["root_dir", "cwd"],
        default_value="root_dir",
        help="""Which host folder is mounted (at the same path) read-write: the server's
        root_dir (default, so '../data' in a notebook behaves as locally) or only the
        notebook's own folder. The working directory is always the notebook's folder.""",
    ).tag(config=True)

    read_only_rootfs = Bool(
        False, help="Mount the image's root filesystem read-only (pip installs then fail)."
    ).tag(config=True)

    # -- checkpoint and TensorBoard log storage (settings.CheckpointStorageSettings) ------

    @default("checkpoint_root")
    def _default_checkpoint_root(self) -> str:
        return os.environ.get("JUPYTER_TFENV_CHECKPOINT_ROOT") or "~/tfenv/checkpoints"

    @default("log_root")
    def _default_log_root(self) -> str:
        return os.environ.get("JUPYTER_TFENV_LOG_ROOT") or "~/tfenv/logs"

    # -- broker mode (JupyterHub: see docs/broker.md) ----------------------------------

    broker_url = Unicode(
        help=f"""Base URL of the tfenv broker (a JupyterHub service). When set, kernels are
        started through the broker and this server never talks to Docker: the broker
        decides image, uid, mounts and limits, and keeps the quotas. Default:
        ${BROKER_URL_VAR}, else '' (local mode: this server uses the Docker engine).""",
    ).tag(config=True)

    @default("broker_url")
    def _default_broker_url(self) -> str:
        return os.environ.get(BROKER_URL_VAR, "")

    broker_token = Unicode(
        help=f"""Token sent to the broker (Authorization: token …). Default:
        ${BROKER_TOKEN_VAR}, else $JUPYTERHUB_API_TOKEN. Never logged, never passed to a
        kernel.""",
    ).tag(config=True)

    @default("broker_token")
    def _default_broker_token(self) -> str:
        return os.environ.get(BROKER_TOKEN_VAR) or os.environ.get("JUPYTERHUB_API_TOKEN", "")

    @property
    def broker(self) -> BrokerClient | None:
        """The broker client in broker mode, None in local mode."""
        if not self.broker_url:
            return None
        if self._broker is None or self._broker.url != self.broker_url.rstrip("/") + "/":
            self._broker = BrokerClient(
                self.broker_url, self.broker_token, timeout=self.docker_timeout
            )
        return self._broker

    container_id = Unicode(allow_none=True, default_value=None)
    runtime_dir = Unicode(allow_none=True, default_value=None)
    #: Where this kernel's checkpoints and logs are (set at launch; for the REST API).
    checkpoint_info = Dict(allow_none=True, default_value=None)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: Any = None
        self._container: Any = None
        self._env: Environment | None = None
        self._storage_mounts: list[Any] = []
        self._storage_env: dict[str, str] = {}
        self._storage_checked: list[mountcheck.CheckedFolder] = []
        self._broker: BrokerClient | None = None
        #: The kernel to adopt (container_id, runtime_dir, workdir) while adopting.
        self._adopting: dict[str, Any] | None = None
        #: Kept at server stop: signals and cleanup leave the container alone.
        self._detached = False
        #: Started for the warm pool (labelled so; never taken from the pool itself).
        self._pooled = False
        #: The pool kernel's id, when this kernel was taken from the pool.
        self._container_kid: str | None = None
        #: Kubernetes mode (the broker's backend): the kernel pod's ports, then its ip.
        self._pod: dict[str, Any] | None = None
        #: The GPU devices allocated to this kernel: a restart asks for them again.
        self._gpu_devices: tuple[str, ...] = ()
        #: The last poll could not ask the engine (logged once per outage).
        self._engine_away = False

    # -- helpers --------------------------------------------------------------------

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking docker SDK call off the event loop."""
        return await asyncio.to_thread(func, *args, **kwargs)

    async def _docker(self) -> Any:
        if self._client is None:
            try:
                self._client = await self._call(shared_client, self.docker_timeout)
            except DockerUnavailableError as err:
                raise KernelStartError(str(err), status_code=503) from err
        return self._client

    def _environment(self) -> Environment:
        if self._env is None:
            if not self.environment:
                raise KernelStartError(
                    f"Kernelspec '{self.kernel_spec.display_name}' names the tfenv-docker "
                    "provisioner but carries no environment; regenerate it with "
                    "`jupyter tfenv kernelspecs`."
                )
            try:
                self._env = environment_from_dict(
                    self.environment, pinning=self.pinning, source="kernelspec"
                )
            except CatalogError as err:
                raise KernelStartError(
                    f"The kernelspec's environment is invalid: {err}", status_code=400
                ) from err
        return self._env

    def _notebook_mount(self, cwd: str) -> str | None:
        root = None
        if self.mount_root == "root_dir":
            mkm = getattr(self.parent, "parent", None)
            root = getattr(mkm, "root_dir", None)
        if root:
            root = os.path.realpath(root)
            if cwd != root and os.path.commonpath([cwd, root]) != root:
                root = None
        target = root or cwd
        if target == "/":
            self.log.warning("tfenv: not mounting the host's / into the kernel container")
            return None
        return target

    def _prepare_runtime_dir(self, restart: bool) -> str:
        root = Path(prepare_runtime_root(self.runtime_root))
        if restart and self.runtime_dir and Path(self.runtime_dir).is_dir():
            rundir = Path(self.runtime_dir)
            # Sockets of the dead kernel would look like a ready one.
            for entry in rundir.iterdir():
                if entry.is_socket():
                    entry.unlink()
            return str(rundir)
        # One folder per kernel id (never a truncation: two ids must not share one).
        rundir = root / runtime_name(self.kernel_id)
        if rundir.exists():
            shutil.rmtree(rundir)
        rundir.mkdir(mode=0o700)
        if (self.uid, self.gid) != (os.getuid(), os.getgid()):
            try:
                os.chown(rundir, self.uid, self.gid)
            except PermissionError as err:
                raise KernelStartError(
                    f"The server runs as uid {os.getuid()} and cannot hand a runtime folder to "
                    f"uid {self.uid}. Run kernels as the server's own user (unset "
                    "c.DockerKernelProvisioner.uid), or use the tfenv broker."
                ) from err
        return str(rundir)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def container_kernel_id(self) -> str:
        """The kernel id the container is labelled with, which the broker knows it by:
        this kernel's id, or for a kernel taken from the warm pool, the pool kernel's."""
        return self._container_kid or self.kernel_id

    @property
    def has_process(self) -> bool:
        return self.container_id is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        adopt = kwargs.pop(ADOPT_KWARG, None)
        self._pooled = bool(kwargs.pop(POOL_KWARG, False))
        if adopt is None and not self._pooled and not self.runtime_dir:
            adopt = await self._take_from_pool(kwargs)
        if adopt is not None:
            self._adopting = dict(adopt)
            try:
                return await self._pre_adopt(**kwargs)
            except BaseException:
                self._adopting = None
                self.runtime_dir = None
                self._forget_pending_start()
                raise
        restart = bool(self.runtime_dir)
        try:
            return await self._pre_launch(**kwargs)
        except BaseException:
            if self.broker is not None and self.runtime_dir and not restart:
                await self._discard_broker_kernel()
                self.runtime_dir = None
            self._forget_pending_start()
            raise

    async def _pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._environment()  # validate before anything is created
        broker = self.broker
        if broker is not None and self.transport != "ipc":
            raise KernelStartError(
                "The tfenv broker runs kernels with IPC sockets only: unset "
                "c.DockerKernelProvisioner.transport (it is 'tcp'), or unset broker_url to "
                "use a local Docker engine.",
                status_code=400,
            )
        if broker is None and self.uid == 0 and not self.allow_root:
            raise KernelStartError(
                "Refusing to run the kernel as root (uid 0) inside its container. Start "
                "Jupyter as your own user, or set c.DockerKernelProvisioner.uid to a non-root "
                "uid (allow_root=True exists, but gives the kernel root on its mounts).",
                status_code=400,
            )
        km = self.parent
        # On restart the kernel keeps its runtime folder, so clients reconnect to the same
        # socket paths.
        restart = bool(self.runtime_dir)
        self._pod = None
        if broker is None:
            self.runtime_dir = await self._call(self._prepare_runtime_dir, restart)
        else:
            # Docker mode: the broker makes the folder (owned by this user, in a root-owned
            # parent) and later mounts exactly that folder; the connection file is written
            # into it here. Kubernetes mode: the kernel is a pod reached over TCP; the
            # connection file stays in a folder of this server's (its key goes to the pod's
            # Secret with the start request).
            try:
                answer = await broker.prepare_runtime(self.container_kernel_id, restart=restart)
            except BrokerError as err:
                raise _start_error(err) from err
            if answer.get("backend") == "kubernetes":
                if self._pooled:
                    raise KernelStartError(
                        "Warm pools (catalog pool_size) do not work with the broker's "
                        "Kubernetes backend yet: set pool_size to 0 for this catalog.",
                        status_code=400,
                    )
                self._pod = {"ports": dict(answer.get("ports") or {})}
                self.runtime_dir = await self._call(self._prepare_runtime_dir, restart)
            else:
                self.runtime_dir = str(answer["runtime_dir"])
        if km is not None and self._pod is not None:
            km.transport = "tcp"
            km.ip = localhost()  # the pod's IP once it runs (_launch_via_broker)
            km.cache_ports = False
            for channel, port in self._pod["ports"].items():
                setattr(km, f"{channel}_port", int(port))
            if not km._connection_file_written:
                km.connection_file = os.path.join(self.runtime_dir, "kernel.json")
        elif km is not None:
            if self.transport == "ipc":
                km.transport = "ipc"
                km.ip = os.path.join(self.runtime_dir, "k")
                km.cache_ports = False
            else:
                km.transport = "tcp"
                km.ip = localhost()
            if not km._connection_file_written:
                km.connection_file = os.path.join(self.runtime_dir, "kernel.json")
        self._launch_env = dict(kwargs.get("env") or {})
        kwargs = await super().pre_launch(**kwargs)
        if km is not None and (self.uid, self.gid) != (os.getuid(), os.getgid()):
            await self._call(os.chown, km.connection_file, self.uid, self.gid)
        return kwargs

    async def _take_from_pool(self, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """A warm pool kernel of this environment for this start, as an adoption
        (jupyter_tfenv.lifecycle.pool); None: start a container as usual."""
        pool = adoption.current_pool()
        if pool is None:
            return None
        env_id = str(self.environment.get("id", ""))
        cwd = await self._call(os.path.realpath, str(kwargs.get("cwd") or os.getcwd()))
        return await pool.take(env_id, cwd)

    async def _pre_adopt(self, **kwargs: Any) -> dict[str, Any]:
        """Adoption: take over a running kernel container (see jupyter_tfenv.lifecycle.adoption).

        The runtime folder and its connection file are the kernel's, as its last server
        left them: the kernel manager loads that file (ports, key) instead of writing one,
        and launch_kernel attaches to the container instead of starting one.
        """
        self._environment()
        km = self.parent
        broker = self.broker
        label_id = str((self._adopting or {}).get("container_kernel_id") or "")
        if label_id and label_id != self.kernel_id:
            self._container_kid = label_id
        # The folder the kernel's last holder used (the broker reported it, in broker
        # mode: asking it for the folder again, POST .../runtime, would remove the running
        # kernel's sockets); launch_kernel then checks the container itself.
        rundir = str((self._adopting or {}).get("runtime_dir") or "")
        if broker is None:
            root = await self._call(prepare_runtime_root, self.runtime_root)
        else:
            root = os.path.dirname(rundir)  # the broker's folder of this uid
        problem = (
            await self._call(adoption.runtime_dir_problem, rundir, root, self.uid)
            if rundir
            else "no runtime folder is known for it"
        )
        if problem:
            raise KernelStartError(f"Kernel {self.kernel_id} cannot be adopted: {problem}.")
        self.runtime_dir = rundir
        if km is not None:
            connection_file = os.path.join(self.runtime_dir, adoption.CONNECTION_FILE)
            km.connection_file = connection_file
            km.cache_ports = False  # the kernel's ports are in its connection file
            await self._call(km.load_connection_file, connection_file)
            km._connection_file_written = True  # loaded: never rewritten with a new key
        self._launch_env = dict(kwargs.get("env") or {})
        return await super().pre_launch(**kwargs)

    def _passed_env(self) -> dict[str, str]:
        """The server's allow-listed variables, and the notebook's session name."""
        passed = {k: os.environ[k] for k in self.env_allowlist if k in os.environ}
        session = self._launch_env.get("JPY_SESSION_NAME")
        if session:
            passed["JPY_SESSION_NAME"] = session
        return passed

    def _request(self, cmd: list[str], cwd: str, image_id: str) -> KernelRequest:
        passed = self._passed_env()
        passed.update({"HOME": self.home, "USER": self.owner, "LOGNAME": self.owner})
        return KernelRequest(
            kernel_id=self.kernel_id,
            cmd=list(cmd),
            uid=self.uid,
            gid=self.gid,
            owner=self.owner,
            workdir=cwd,
            notebook_mount=self._notebook_mount(cwd),
            runtime_dir=self.runtime_dir or "",
            runtimes_dir=self.runtimes_dir or None,
            image_id=image_id,
            environment=passed,
            transport=self.transport,
            memory=self.default_memory or None,
            pids=self.default_pids or None,
            shm_size=self.default_shm_size or None,
            read_only_rootfs=self.read_only_rootfs,
            extra_mounts=tuple(self._storage_mounts),
            extra_env=dict(self._storage_env),
            extra_labels={LABEL_POOL: "true"} if self._pooled else {},
        )

    def _prepare_storage(self, client: Any, env: Environment, image_id: str) -> None:
        """Create this user's checkpoint and log folders (or volumes) for ``env``; blocking.

        They belong to the kernel's uid:gid before the container starts.
        """
        try:
            storage = prepare_kernel_storage(
                client,
                StorageConfig.from_provisioner(self),
                self.owner,
                env,
                uid=self.uid,
                gid=self.gid,
                image_id=image_id,
                helper_image=self.checkpoint_helper_image,
            )
        except CheckpointStorageError as err:
            raise KernelStartError(
                f"The checkpoint storage of '{env.id}' is not usable: {err}", status_code=500
            ) from err
        self._storage_mounts = storage.mounts
        self._storage_env = storage.environment
        self._storage_checked = storage.checked
        self.checkpoint_info = storage.info

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env_id = str(self.environment.get("id", "?"))
        try:
            with metrics.kernel_start_timer(env_id):
                info = await self._launch(cmd, **kwargs)
            metrics.kernel_started(env_id, self.kernel_id)
            return info
        except BaseException as err:
            # A kernel that never started leaves nothing behind: no container, no runtime
            # folder; also when the start was cancelled half-way.
            if self.broker is not None:
                await self._discard_broker_kernel()
            else:
                if self._container is not None:
                    await self._remove_failed_start()
                if self.runtime_dir:
                    await self._call(shutil.rmtree, self.runtime_dir, True)
            self.runtime_dir = None
            self._forget_pending_start()
            # The engine went away during the start: one clear 503, not a raw SDK error.
            if not isinstance(err, HTTPError | asyncio.CancelledError) and engine_unreachable(err):
                raise KernelStartError(
                    f"The kernel of '{env_id}' did not start: {unreachable_error(err).message}",
                    status_code=503,
                ) from err
            raise

    async def _remove_failed_start(self) -> None:
        """Remove the container of a failed start; while the engine cannot be asked, say
        what is left (labelled with this server: ``jupyter tfenv gc`` removes it once the
        server is gone)."""
        container = self._container
        try:
            await self._call(remove_quietly, container)
        except Exception as err:
            if not engine_unreachable(err):
                raise
            self.log.warning(
                "tfenv: kernel %s: container %s of the failed start not removed, the "
                "Docker engine cannot be asked",
                self.kernel_id,
                str(getattr(container, "name", "?")),
            )
        self._forget_container()

    def _forget_pending_start(self) -> None:
        """Drop a failed start from jupyter_client's pending kernels.

        jupyter_client 8 keeps the id of a kernel whose start failed in
        ``MultiKernelManager._pending_kernels``; ``shutdown_all`` then fails on it with
        "Kernel does not exist", and the server ignores the first Ctrl-C. Kernel starts
        fail for ordinary reasons here (no GPU, image not pulled), so tfenv cleans up.
        """
        manager = getattr(self.parent, "parent", None)
        pending = getattr(manager, "_pending_kernels", None)
        if isinstance(pending, dict):
            pending.pop(self.kernel_id, None)

    async def _launch(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        if self._adopting is not None:
            try:
                return await self._adopt(**kwargs)
            finally:
                self._adopting = None
        if self.broker is not None:
            return await self._launch_via_broker(self.broker, **kwargs)
        env = self._environment()
        if self.lock_policy == "strict" and not self.locked_digest and not env.image_ref.digest:
            message = await self._call(unlocked_message, env, self.lock_file or None)
            raise KernelStartError(message, status_code=409)
        client = await self._docker()
        image = await self._call(resolve_image, client, env)
        if self.locked_digest and self.lock_policy != "off":
            await self._check_lock(client, env)
        cwd = await self._call(os.path.realpath, str(kwargs.get("cwd") or os.getcwd()))
        await self._call(self._prepare_storage, client, env, image.id)
        # jupyter_client swaps a leading "python3" for the server's own interpreter; in the
        # container it must be the image's.
        if cmd and cmd[0] != env.python:
            cmd = [env.python, *cmd[1:]]
        cmd = isolated_launcher(cmd)
        req = self._request(cmd, cwd, image.id)
        spec = container_spec(env, req)
        started = time.monotonic()
        try:
            # Shielded (steps.run_shielded): a start request cancelled while Docker
            # creates the container must not leave the container behind.
            container, self._gpu_devices = await run_with_gpus(
                client,
                env,
                spec,
                lambda spec: run_shielded(client, spec),
                configured=self.gpu_devices,
                viewer=self.owner,
                placement=self.gpu_placement,
                prefer=self._gpu_devices,
                wait=self.gpu_wait_timeout,
            )
        except asyncio.CancelledError:
            await self._call(remove_by_name, client, spec["name"])
            raise
        except GpuUnavailableError as err:
            raise KernelStartError(err.message, status_code=err.status) from err
        except APIError as err:
            # Docker may have created the container before failing to start it.
            await self._call(remove_by_name, client, spec["name"])
            raise KernelStartError(explain_api_error(err, env)) from err
        except RequestsConnectionError as err:
            forget_shared_client(client)
            self._client = None
            raise KernelStartError(
                f"The Docker engine stopped answering while starting the kernel: {err}. "
                "Check that it runs (`docker info`) and start the kernel again.",
                status_code=503,
            ) from err
        self._container = container
        self.container_id = container.id
        self.cwd = cwd
        self.log.info(
            "tfenv: kernel %s runs in container %s (%s, image %s)",
            self.kernel_id,
            container.name,
            env.id,
            image.id[:19],
        )
        try:  # not strict: see mountcheck.verify_mounts (the folders are the user's own)
            await self._call(
                mountcheck.verify_mounts,
                container,
                self._storage_checked,
                strict=False,
                log=self.log,
            )
        except mountcheck.MountChangedError as err:
            raise KernelStartError(err.message, status_code=403) from err
        await self._wait_until_bound(env, started)
        return self.connection_info

    async def _adopt(self, **kwargs: Any) -> KernelConnectionInfo:
        """Attach to the running container of this kernel id; nothing is started."""
        env = self._environment()
        adopt = self._adopting or {}
        broker = self.broker
        if broker is not None:
            try:
                info = await broker.kernel(self.container_kernel_id)
            except BrokerError as err:
                raise _start_error(err) from err
            if not (info.get("running") or info.get("status") in _RUNNING_STATES):
                raise KernelStartError(
                    f"Kernel {self.kernel_id} cannot be adopted: its container is "
                    f"{info.get('status')}."
                )
            self.container_id = str(info.get("container_id") or info.get("name") or "")
            checkpoints = info.get("checkpoints")
            if isinstance(checkpoints, dict):
                self.checkpoint_info = checkpoints
            # The container's working directory, as the broker started it.
            adopt = {**adopt, "workdir": info.get("workdir") or adopt.get("workdir") or ""}
        else:
            client = await self._docker()
            try:
                container = await self._call(client.containers.get, str(adopt["container_id"]))
            except (NotFound, KeyError) as err:
                raise KernelStartError(
                    f"Kernel {self.kernel_id} cannot be adopted: its container is gone."
                ) from err
            labels = container.labels or {}
            expected_id = self.container_kernel_id
            if (
                labels.get(LABEL_KERNEL_ID) != expected_id
                or labels.get(LABEL_OWNER) != self.owner
                or labels.get(LABEL_RUNTIME_DIR) != self.runtime_dir
                or container.status not in _RUNNING_STATES
            ):
                raise KernelStartError(
                    f"Kernel {self.kernel_id} cannot be adopted: container {container.name} "
                    f"is {container.status} and labelled for kernel "
                    f"{labels.get(LABEL_KERNEL_ID)!r} of {labels.get(LABEL_OWNER)!r}."
                )
            self._container = container
            self.container_id = container.id
            # Where its checkpoints are (the folders exist: this only finds them again).
            image_id = str(labels.get(LABEL_IMAGE_ID) or container.image.id)
            await self._call(self._prepare_storage, client, env, image_id)
        if not await self._call(self._bound):
            raise KernelStartError(
                f"Kernel {self.kernel_id} cannot be adopted: its sockets in {self.runtime_dir} "
                "are gone."
            )
        if self.runtime_dir:
            await self._call(adoption.mark_held, self.runtime_dir, self.kernel_id)
        self.cwd = str(adopt.get("workdir") or kwargs.get("cwd") or "")
        if adopt.get("move_in"):
            # A pool kernel started in the server's root: now it is this notebook's.
            await self._move_in(self.cwd, {**self._passed_env(), **env.env})
        self.log.info(
            "tfenv: adopted kernel %s (%s), still running in container %s",
            self.kernel_id,
            env.id,
            str(self.container_id)[:12],
        )
        return self.connection_info

    async def _move_in(self, cwd: str, variables: dict[str, str]) -> None:
        """Give a pool kernel the notebook's working directory and variables (a silent
        execute_request, answered before any of the notebook's)."""
        code = (
            "import os as _tfenv_os\n"
            f"_tfenv_os.chdir({cwd!r})\n"
            f"_tfenv_os.environ.update({variables!r})\n"
            "del _tfenv_os\n"
        )
        client = AsyncKernelClient()
        client.load_connection_info(self.connection_info)
        client.start_channels(iopub=False, stdin=False, hb=False, control=False)
        try:
            reply = await client.execute(
                code, silent=True, store_history=False, reply=True, timeout=30
            )
        except Exception as err:
            raise KernelStartError(
                f"The pool kernel did not take the notebook's folder {cwd}: {err}"
            ) from err
        finally:
            client.stop_channels()
        if reply["content"].get("status") != "ok":
            raise KernelStartError(
                f"The pool kernel did not take the notebook's folder {cwd}: "
                f"{reply['content'].get('evalue', reply['content'])}"
            )

    def detach(self) -> None:
        """Leave the container running: after this, nothing of this provisioner touches
        it any more (a kernel kept at server stop, or a pool kernel that was taken)."""
        self._detached = True

    async def _launch_via_broker(self, broker: BrokerClient, **kwargs: Any) -> KernelConnectionInfo:
        """Start the kernel's container through the broker, then wait for its sockets."""
        env = self._environment()
        cwd = await self._call(os.path.realpath, str(kwargs.get("cwd") or os.getcwd()))
        body: dict[str, Any] = {
            # A restarted pool kernel keeps its pool id at the broker (and its folder).
            "kernel_id": self.container_kernel_id,
            "environment": env.id,
            "cwd": cwd,
            "mount": self._notebook_mount(cwd),
            "env": self._passed_env(),
            # Which of the user's hub servers owns it: a restarted server removes what its
            # killed predecessor left (TFEnvApp._reap).
            "server": os.environ.get("JUPYTERHUB_SERVER_NAME", ""),
        }
        if self._gpu_devices:  # a restart asks for the devices it held
            body["gpu_devices"] = list(self._gpu_devices)
        km = self.parent
        if self._pod is not None and km is not None:
            # Kubernetes mode: the key goes to the pod's Secret (never a variable).
            body["key"] = km.session.key.decode("ascii")
        started = time.monotonic()
        # Shielded as in local mode: a cancelled start must learn whether the broker made
        # a container, and then remove it (launch_kernel DELETEs it).
        starting = asyncio.ensure_future(
            broker.start_kernel(body, timeout=self.start_timeout + self.docker_timeout)
        )
        try:
            answer = await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await starting
            raise
        except BrokerError as err:
            raise _start_error(err) from err
        self.container_id = str(answer.get("container_id") or answer.get("name") or "")
        self._gpu_devices = tuple(str(d) for d in answer.get("gpu_devices") or ())
        if self._pod is not None and km is not None:
            ip = str(answer.get("ip") or "")
            if not ip:
                await self._discard_broker_kernel()
                raise KernelStartError("The broker started a kernel pod but sent no pod IP.")
            self._pod["ip"] = km.ip = ip
            self.connection_info = km.get_connection_info()
        checkpoints = answer.get("checkpoints")
        if isinstance(checkpoints, dict):
            self.checkpoint_info = checkpoints
        self.cwd = cwd
        self.log.info(
            "tfenv: kernel %s runs in container %s (%s, image %s) started by the broker",
            self.kernel_id,
            answer.get("name") or self.container_id[:12],
            env.id,
            str(answer.get("image_id") or "?")[:19],
        )
        await self._wait_until_bound(env, started)
        return self.connection_info

    async def _check_lock(self, client: Any, env: Environment) -> None:
        """Refuse (or warn about) a local image that is not the locked digest of its tag."""
        lock = LockFile("the kernelspec", {env.image: {"digest": self.locked_digest}})
        try:
            await self._call(check_lock, client, env, lock)
        except LockMismatchError as err:
            if self.lock_policy == "warn":
                self.log.warning("tfenv: starting anyway (lock_policy=warn): %s", err)
                return
            raise KernelStartError(str(err), status_code=409) from err

    def _bound(self) -> bool:
        """Whether the kernel bound its sockets (IPC: five stat calls; TCP: one connect)."""
        info: dict[str, Any] = dict(self.connection_info)
        ports = [info[f"{ch}_port"] for ch in ("shell", "iopub", "stdin", "control", "hb")]
        if info.get("transport", self.transport) == "ipc":
            return all(os.path.exists(f"{info['ip']}-{port}") for port in ports)
        with socket.socket() as sock:
            sock.settimeout(0.2)
            return sock.connect_ex((str(info["ip"]), int(info["hb_port"]))) == 0

    async def _wait_until_bound(self, env: Environment, started: float) -> None:
        """Wait until the kernel bound its sockets, the container exits, or time runs out
        (socket files are cheap to look at; the container, or the broker, is asked at
        most every 0.25 s)."""

        async def timed_out() -> None:
            logs = await self._start_logs()
            await self._discard_container()
            raise KernelStartError(
                f"The kernel of '{env.id}' did not start within {self.start_timeout:.0f} s "
                "(c.DockerKernelProvisioner.start_timeout). A busy machine or a slow "
                "image start can need more; the container was removed.",
                logs=logs,
            )

        await wait_until_bound(
            self._bound,
            self._exit_state,
            timeout=self.start_timeout,
            started=started,
            on_exit=lambda exited: self._fail_exited(env, exited),
            on_timeout=timed_out,
        )

    # -- the seam between local and broker mode while a kernel starts ---------------

    async def _exit_state(self) -> dict[str, Any] | None:
        """None while the starting container runs; else its ``exit_code``, ``oom_killed``."""
        if self.broker is not None:
            try:
                info = await self.broker.kernel(self.container_kernel_id)
            except BrokerNotFoundError:
                return {"exit_code": None, "oom_killed": False}
            except BrokerError as err:
                raise _start_error(err) from err
            if info.get("running") or info.get("status") in _RUNNING_STATES:
                return None
            return {"exit_code": info.get("exit_code"), "oom_killed": info.get("oom_killed")}
        return await self._call(exit_state, self._container, _RUNNING_STATES)

    async def _start_logs(self) -> str:
        """The starting container's last log lines ('' when they cannot be had)."""
        if self.broker is not None:
            try:
                return await self.broker.logs(self.container_kernel_id, tail=30)
            except BrokerError:
                return ""
        return str(await self._call(tail_logs, self._container))

    async def _discard_container(self) -> None:
        """Remove the container of a failed start."""
        if self.broker is not None:
            await self._discard_broker_kernel()
            return
        await self._call(remove_quietly, self._container)
        self._forget_container()

    async def _discard_broker_kernel(self, *, restart: bool = False) -> None:
        """DELETE the kernel at the broker (container, and the runtime folder unless
        ``restart``); never raises."""
        broker = self.broker
        if broker is not None:
            try:
                await broker.delete_kernel(self.container_kernel_id, restart=restart)
            except BrokerError as err:
                self.log.warning(
                    "tfenv: the broker could not remove kernel %s: %s", self.kernel_id, err
                )
        self._forget_container()

    async def _fail_exited(self, env: Environment, exited: dict[str, Any]) -> None:
        logs = await self._start_logs()
        await self._discard_container()
        why = explain_start_exit(env, exited.get("exit_code"), bool(exited.get("oom_killed")), logs)
        raise KernelStartError(why.message, status_code=why.status, logs=why.logs)

    def _forget_container(self) -> None:
        self._container = None
        self.container_id = None

    async def _get_container(self) -> Any:
        if self._container is None and self.container_id:
            client = await self._docker()
            try:
                self._container = await self._call(client.containers.get, self.container_id)
            except NotFound:
                self._forget_container()
        return self._container

    async def poll(self) -> int | None:
        if self.broker is not None:
            return await self._poll_broker(self.broker)
        try:
            container = await self._get_container()
            if container is None:
                return 0 if self.container_id is None else 1
            await self._call(container.reload)
        except NotFound:
            self._forget_container()
            return 1
        except Exception as err:
            if not engine_unreachable(err):
                raise
            return await self._poll_without_engine(err)
        if self._engine_away:
            self._engine_away = False
            self.log.info("tfenv: kernel %s: the Docker engine answers again", self.kernel_id)
        if container.status in _RUNNING_STATES:
            return None
        return int(container.attrs.get("State", {}).get("ExitCode", 1))

    @property
    def engine_away(self) -> bool:
        """Whether the last poll could not ask the Docker engine (an outage)."""
        return self._engine_away

    async def _poll_without_engine(self, err: BaseException) -> int | None:
        """The engine cannot be asked: the kernel process does not need it (its sockets
        are in the runtime folder, or on its ports), so it counts as alive unless nothing
        listens on its heartbeat socket any more."""
        listening = await self._call(self._heartbeat_listens)
        if listening is not False and self._engine_away:
            return None  # said once per outage, not at every poll of the restarter
        self._engine_away = True
        self.log.warning(
            "tfenv: kernel %s: the Docker engine cannot be asked (%s); the kernel %s",
            self.kernel_id,
            str(err).split("\n", 1)[0][:200],
            "still listens" if listening is not False else "no longer listens: it is gone",
        )
        return None if listening is not False else 1

    def _heartbeat_listens(self) -> bool | None:
        """Whether a process listens on the kernel's heartbeat socket (a connect, nothing
        sent); None when that cannot be told (no connection info, an unexpected error)."""
        info: dict[str, Any] = dict(self.connection_info or {})
        if "hb_port" not in info or "ip" not in info:
            return None
        ipc = info.get("transport", self.transport) == "ipc"
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

    async def _poll_broker(self, broker: BrokerClient) -> int | None:
        if self.container_id is None:
            return 0
        try:
            info = await broker.kernel(self.container_kernel_id)
        except BrokerNotFoundError:
            self._forget_container()
            return 1
        except BrokerError:
            return None  # the broker does not answer: nothing known, keep the kernel
        if info.get("running") or info.get("status") in _RUNNING_STATES:
            return None
        code = info.get("exit_code")
        return int(code) if code is not None else 1

    async def wait(self) -> int | None:
        delay = 0.25 if self.broker is not None else 0.1
        status = await self.poll()
        while status is None:
            await asyncio.sleep(delay)
            status = await self.poll()
        return status

    async def send_signal(self, signum: int) -> None:
        if self._detached:
            return
        if self.broker is not None:
            await self._signal_broker(self.broker, signum)
            return
        if signum == 0:
            await self.poll()
            return
        try:
            container = await self._get_container()
            if container is None:
                return
            # docker-init (PID 1) forwards the signal to the kernel process.
            await self._call(container.kill, signal=int(signum))
        except NotFound:
            self._forget_container()
        except APIError as err:
            if err.status_code != 409:  # 409: not running, nothing to signal
                raise
        except Exception as err:
            if not engine_unreachable(err):
                raise
            if signum in (signal.SIGKILL, signal.SIGTERM):
                # Shutting down: cleanup() follows and says what is left.
                self.log.warning(
                    "tfenv: kernel %s not signalled: the Docker engine cannot be asked",
                    self.kernel_id,
                )
                return
            message = unreachable_error(err).message
            raise HTTPError(503, message, reason="Docker engine unreachable") from err

    async def _signal_broker(self, broker: BrokerClient, signum: int) -> None:
        if self.container_id is None:
            return
        if signum == 0:
            await self.poll()
            return
        if signum == signal.SIGINT and self._pod is not None:
            # A kernel pod gets no signals through the API: ipykernel's own
            # interrupt_request on the control channel interrupts it the same way.
            await self._call(self._send_interrupt_request)
            return
        try:
            await broker.signal(self.container_kernel_id, int(signum))
        except BrokerNotFoundError:
            self._forget_container()
        except BrokerError as err:
            if err.http_status == 409:  # 409: not running, nothing to signal
                return
            if signum in (signal.SIGKILL, signal.SIGTERM):
                # Shutting down: the DELETE of cleanup() follows and says what went wrong.
                self.log.warning("tfenv: the broker could not signal %s: %s", self.kernel_id, err)
                return
            # An HTTP error, so that an interrupt answers with the broker's message.
            raise HTTPError(err.http_status, err.message, reason="tfenv broker") from err

    def _send_interrupt_request(self) -> None:
        km = self.parent
        if km is None:
            return
        info: dict[str, Any] = dict(self.connection_info)
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        try:
            sock.linger = 1000
            sock.connect(f"tcp://{info['ip']}:{int(info['control_port'])}")
            km.session.send(sock, "interrupt_request", {})
        finally:
            sock.close(linger=1000)
            context.term()

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        if self._detached:
            return  # kept for the next server (keep_kernels_on_stop)
        if self.broker is not None:
            # The broker removes the container, and the runtime folder unless this is a
            # restart (then the next pre_launch asks for the same folder again).
            await self._discard_broker_kernel(restart=restart)
        else:
            try:
                container = await self._get_container()
                if container is not None:
                    await self._call(remove_quietly, container)
                    live.forget_container(container.id)
            except Exception as err:
                if not engine_unreachable(err):
                    raise
                # Labelled with this server: the reaper removes it once the engine is back.
                self.log.warning(
                    "tfenv: kernel %s: container %s not removed, the Docker engine cannot "
                    "be asked: %s",
                    self.kernel_id,
                    str(self.container_id or "?")[:12],
                    str(err).split("\n", 1)[0][:200],
                )
            self._forget_container()
        if not restart:
            metrics.kernel_stopped(str(self.environment.get("id", "?")), self.kernel_id)
        if self.ports_cached and not restart:
            await super().cleanup(restart=restart)
        if not restart and self.runtime_dir:
            if self.broker is None or self._pod is not None:  # the folder is this server's
                await self._call(shutil.rmtree, self.runtime_dir, True)
            self.runtime_dir = None

    async def get_provisioner_info(self) -> dict[str, Any]:
        info: dict[str, Any] = await super().get_provisioner_info()
        info.update({"container_id": self.container_id, "runtime_dir": self.runtime_dir})
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        await super().load_provisioner_info(provisioner_info)
        self.container_id = provisioner_info.get("container_id")
        self.runtime_dir = provisioner_info.get("runtime_dir")

    def resolve_path(self, path_str: str) -> str | None:
        # The notebook folder is mounted at the same path, so container paths are host paths.
        return super().resolve_path(path_str)

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return recommended


def _start_error(err: BrokerError) -> KernelStartError:
    """A broker's refusal as a kernel start error: its message and status, unchanged."""
    logs = err.logs
    if logs.strip() and logs.rstrip() in err.message:
        logs = ""  # the broker's message already ends with them
    return KernelStartError(err.message, logs=logs, status_code=err.http_status)


#: Deprecated: the old name of :class:`TFEnvKernelProvisioner` (the same class; its config
#: section ``c.DockerKernelProvisioner`` keeps working).
DockerKernelProvisioner = TFEnvKernelProvisioner
