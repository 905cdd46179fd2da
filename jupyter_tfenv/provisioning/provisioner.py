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
touches Docker is a request to the tfenv broker (docs/broker.md). The provisioner holds
one runner, chosen once (:attr:`TFEnvKernelProvisioner.runner`): ``LocalKernel``
(provisioning/local.py: the local engine through a ``DockerBackend``) or
``BrokeredKernel`` (provisioning/brokered.py: the broker's REST API through
``BrokerBackend``); its methods never ask which.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.localinterfaces import localhost
from jupyter_client.provisioning import LocalProvisioner
from tornado.web import HTTPError
from traitlets import Dict, Unicode

from jupyter_tfenv.backends.base import KernelStart
from jupyter_tfenv.backends.broker import (
    BrokerBackend,
    BrokerClient,
)
from jupyter_tfenv.backends.docker.engine import explain_start_exit
from jupyter_tfenv.backends.docker.steps import (
    wait_until_bound,
)
from jupyter_tfenv.backends.settings import CheckpointStorageSettings, KernelContainerSettings
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.core import metrics
from jupyter_tfenv.core.labels import (
    LABEL_POOL,
)
from jupyter_tfenv.errors import (
    CatalogError,
    KernelStartError,
    engine_unreachable,
    unreachable_error,
)
from jupyter_tfenv.kernels import markers, pools
from jupyter_tfenv.kernels.connection import (
    prepare_runtime_root,
    runtime_name,
)
from jupyter_tfenv.provisioning import choices
from jupyter_tfenv.provisioning.brokered import BrokeredKernel
from jupyter_tfenv.provisioning.engine_restart import restart_record
from jupyter_tfenv.provisioning.local import LocalKernel
from jupyter_tfenv.provisioning.settings import ProvisionerSettings

#: Keyword argument of ``start_kernel`` that makes the provisioner adopt a running
#: container ({"container_id", "runtime_dir", "workdir"}) instead of starting one.
ADOPT_KWARG = "tfenv_adopt"
#: Keyword argument of ``start_kernel``: this kernel is started for the warm pool.
POOL_KWARG = "tfenv_pool"


#: The config section of the provisioner's old class name, read as its own.
LEGACY_SECTION = "DockerKernelProvisioner"


class TFEnvKernelProvisioner(  # type: ignore[metaclass]
    ProvisionerSettings, KernelContainerSettings, CheckpointStorageSettings, LocalProvisioner
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
    _runner: LocalKernel | BrokeredKernel | None

    environment = Dict(help="The catalog entry, from the kernelspec (not configurable).")
    pinning = Unicode("tags", help="Pinning policy the kernelspec was written with.")
    locked_digest = Unicode(
        None, allow_none=True, help="The digest the lock file pins this tag to (kernelspec)."
    )
    lock_policy = Unicode("enforce", help="enforce | strict | warn | off (from the kernelspec).")
    lock_file = Unicode("", help="The lock file the kernelspec was made from (strict only).")

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

    @property
    def runner(self) -> LocalKernel | BrokeredKernel:
        """Where this kernel runs: through the broker (``broker_url`` set) or on the local
        engine. Chosen here, once per broker client; no other method asks which."""
        broker = self.broker
        held = self._runner
        if held is None or getattr(getattr(held, "backend", None), "client", None) is not broker:
            self._runner = held = make_runner(self, broker)
        return held

    container_id = Unicode(allow_none=True, default_value=None)
    runtime_dir = Unicode(allow_none=True, default_value=None)
    #: Where this kernel's checkpoints and logs are (set at launch; for the REST API).
    checkpoint_info = Dict(allow_none=True, default_value=None)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: Any = None
        self._env: Environment | None = None
        self._broker: BrokerClient | None = None
        self._runner = None
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
        self._choices: dict[str, Any] = {}  # what its start chose (choices.py); kept on restart
        #: When a poll first found the engine away in this kernel's life (epoch seconds).
        self._engine_lost_at: float | None = None
        #: The kernel died of an engine restart, at that time: its relaunch says so.
        self._engine_death: datetime | None = None
        #: Why tfenv last restarted it, or None (``GET /tfenv/kernels/<id>``; engine_restart.py).
        self.last_restart: dict[str, str] | None = None

    # -- helpers --------------------------------------------------------------------

    async def _call(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking docker SDK call off the event loop."""
        return await asyncio.to_thread(func, *args, **kwargs)

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
        restart = bool(self.runtime_dir)  # jupyter_client restarts with the first kwargs:
        adopt, self._pooled = kwargs.pop(ADOPT_KWARG, None), bool(kwargs.pop(POOL_KWARG, False))
        adopt = None if restart else adopt  # an adopted kernel's restart is a new container
        asked = await self._call(choices.requested, kwargs, self.environment)
        self._choices = self._choices if restart else asked  # a restart keeps it
        if adopt is None and not self._pooled and not restart:
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
        try:
            return await self._pre_launch(**kwargs)
        except BaseException:
            await self.runner.undo_pre_launch(restart)
            self._forget_pending_start()
            raise

    async def _pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self._environment()  # validate before anything is created
        self.runner.check()
        km = self.parent
        # A restart keeps the runtime folder: clients reconnect to the same socket paths.
        restart = bool(self.runtime_dir)
        self._pod = None
        await self.runner.prepare_runtime(restart)
        assert self.runtime_dir is not None  # made (or kept) by prepare_runtime
        if km is not None and self._pod is not None:
            km.transport = "tcp"
            km.ip = localhost()  # the pod's IP once it runs (BrokeredKernel.launch)
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
        pool = pools.current_pool()
        if pool is None or choices.off_default(self._environment(), self._choices):
            return None  # (pool kernels run with the defaults)
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
        label_id = str((self._adopting or {}).get("container_kernel_id") or "")
        if label_id and label_id != self.kernel_id:
            self._container_kid = label_id
        # The folder the kernel's last holder used (the broker reported it, in broker
        # mode: asking it for the folder again, POST .../runtime, would remove the running
        # kernel's sockets); launch_kernel then checks the container itself.
        rundir = str((self._adopting or {}).get("runtime_dir") or "")
        root = await self.runner.adopt_root(rundir)
        problem = (
            await self._call(markers.runtime_dir_problem, rundir, root, self.uid)
            if rundir
            else "no runtime folder is known for it"
        )
        if problem:
            raise KernelStartError(f"Kernel {self.kernel_id} cannot be adopted: {problem}.")
        self.runtime_dir = rundir
        if km is not None:
            connection_file = os.path.join(self.runtime_dir, markers.CONNECTION_FILE)
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

    def _start_request(self, cmd: list[str], cwd: str) -> KernelStart:
        """This kernel's start as its backend takes it (HOME, USER, LOGNAME: the backend's)."""
        return KernelStart(
            kernel_id=self.kernel_id,
            environment=str(self.environment.get("id", "")),
            cwd=cwd,
            mount=self._notebook_mount(cwd) or "",
            env=self._passed_env(),
            gpu_devices=self._gpu_devices,
            runtime_dir=self.runtime_dir or "",
            cmd=tuple(cmd),
            transport=self.transport,
            labels={LABEL_POOL: "true"} if self._pooled else {},
            choices=dict(self._choices),
        )

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        env_id = str(self.environment.get("id", "?"))
        try:
            with metrics.kernel_start_timer(env_id):
                info = await self._launch(cmd, **kwargs)
            metrics.kernel_started(env_id, self.kernel_id)
            self._started()
            return info
        except BaseException as err:
            # A kernel that never started leaves nothing behind: no container, no runtime
            # folder; also when the start was cancelled half-way.
            await self.runner.failed_launch()
            self.runtime_dir = None
            self._forget_pending_start()
            # The engine went away during the start: one clear 503, not a raw SDK error.
            if not isinstance(err, HTTPError | asyncio.CancelledError) and engine_unreachable(err):
                raise KernelStartError(
                    f"The kernel of '{env_id}' did not start: {unreachable_error(err).message}",
                    status_code=503,
                ) from err
            raise

    def _started(self) -> None:
        """It runs: set last_activity (GET /api/kernels answered 500 before jupyter_server
        did); a kernel that died of an engine restart runs again: keep and log why."""
        if self.parent is not None and self.parent.has_trait("last_activity"):
            self.parent.last_activity = datetime.now(timezone.utc)
        at, self._engine_death = self._engine_death, None
        if at is not None:
            self.last_restart = restart_record(at)
            self.log.warning("tfenv: kernel %s: %s", self.kernel_id, self.last_restart["message"])

    def _forget_pending_start(self) -> None:
        """Drop a failed start from jupyter_client's pending kernels: jupyter_client 8 keeps
        the id of a kernel whose start failed in ``MultiKernelManager._pending_kernels``;
        ``shutdown_all`` then fails on it ("Kernel does not exist"), and the server ignores
        the first Ctrl-C. Starts fail for ordinary reasons here (no GPU, image not pulled)."""
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
        return await self.runner.launch(cmd, **kwargs)

    async def _adopt(self, **kwargs: Any) -> KernelConnectionInfo:
        """Attach to the running container of this kernel id; nothing is started."""
        env = self._environment()
        adopt = await self.runner.attach(env, dict(self._adopting or {}))
        if not await self._call(self._bound):
            raise KernelStartError(
                f"Kernel {self.kernel_id} cannot be adopted: its sockets in {self.runtime_dir} "
                "are gone."
            )
        if self.runtime_dir:
            await self._call(markers.mark_held, self.runtime_dir, self.kernel_id)
        self.cwd = str(adopt.get("workdir") or kwargs.get("cwd") or "")
        if adopt.get("move_in"):
            folder = str(adopt.get("kernel_cwd") or self.cwd)  # a pool kernel: the notebook's
            await self._move_in(folder, {**self._passed_env(), **env.env})
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
        """Leave the container running: nothing of this provisioner touches it any more (a
        kernel kept at server stop, a pool kernel taken); this server no longer counts it."""
        self._detached = True
        metrics.kernel_stopped(str(self.environment.get("id", "?")), self.kernel_id)

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
        """Until the kernel bound its sockets, the container exits, or time runs out (a
        504: no server fault). Socket files are cheap to look at; the container (or the
        broker) is asked at most every 0.25 s."""

        async def timed_out() -> None:
            logs = await self._start_logs()
            await self._discard_container()
            raise KernelStartError(
                f"The kernel of '{env.id}' did not start within {self.start_timeout:.0f} s "
                "(c.DockerKernelProvisioner.start_timeout). A busy machine or a slow "
                "image start can need more; the container was removed.",
                logs=logs,
                status_code=504,
            )

        await wait_until_bound(
            self._bound,
            self._exit_state,
            timeout=self.start_timeout,
            started=started,
            on_exit=lambda exited: self._fail_exited(env, exited),
            on_timeout=timed_out,
        )

    # -- where the kernel runs (kernels/local.py, kernels/brokered.py) ----------------

    async def _exit_state(self) -> dict[str, Any] | None:
        """None while the starting kernel runs; else its ``exit_code``, ``oom_killed``."""
        return await self.runner.exit_state()

    async def _start_logs(self) -> str:
        """The starting kernel's last log lines ('' when they cannot be had)."""
        return await self.runner.start_logs()

    async def _discard_container(self) -> None:
        """Remove the kernel of a failed start."""
        await self.runner.discard()

    async def _fail_exited(self, env: Environment, exited: dict[str, Any]) -> None:
        logs = await self._start_logs()
        await self._discard_container()
        why = explain_start_exit(env, exited, logs)
        raise KernelStartError(why.message, status_code=why.status, logs=why.logs)

    def _forget_container(self) -> None:
        self.container_id = None

    async def poll(self) -> int | None:
        return await self.runner.poll()

    @property
    def engine_away(self) -> bool:
        """Whether the last poll could not ask the Docker engine (an outage)."""
        return self._engine_away

    async def wait(self) -> int | None:
        status = await self.poll()
        while status is None:
            await asyncio.sleep(self.runner.wait_delay)
            status = await self.poll()
        return status

    async def send_signal(self, signum: int) -> None:
        if self._detached:
            return
        await self.runner.signal(signum)

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        if self._detached:
            return  # kept for the next server (keep_kernels_on_stop)
        await self.runner.remove(restart)
        if not restart:
            metrics.kernel_stopped(str(self.environment.get("id", "?")), self.kernel_id)
        if self.ports_cached and not restart:
            await super().cleanup(restart=restart)
        if not restart and self.runtime_dir:
            if self.runner.owns_runtime_dir:  # not the broker's
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


#: Deprecated: the old name of :class:`TFEnvKernelProvisioner` (the same class; its config
#: section ``c.DockerKernelProvisioner`` keeps working).
DockerKernelProvisioner = TFEnvKernelProvisioner


KernelRunner = LocalKernel | BrokeredKernel


def make_runner(prov: TFEnvKernelProvisioner, broker: BrokerClient | None) -> KernelRunner:
    """The runner of a provisioner: through the broker when it has one, else local."""
    if broker is None:
        return LocalKernel(prov)
    return BrokeredKernel(prov, BrokerBackend(broker))
