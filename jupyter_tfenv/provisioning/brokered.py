"""A kernel started through the tfenv broker (``broker_url`` set: JupyterHub).

The provisioner's steps that touch where the kernel runs, answered by
:class:`~jupyter_tfenv.backends.broker.BrokerBackend` (the broker's REST API): the runtime
folder is the broker's (or, for a Kubernetes pod, this server's, reached over TCP), the
start is ``POST /api/kernels``, the container checks while waiting for the sockets, poll,
signals and removal are requests. This server never makes a Docker client. The local
peer is :mod:`jupyter_tfenv.provisioning.local`; the provisioner holds one of the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import zmq
from jupyter_client.connect import KernelConnectionInfo
from tornado.web import HTTPError

from jupyter_tfenv.backends.base import GONE, RUNNING_STATES, KernelStart
from jupyter_tfenv.backends.broker import BrokerBackend, BrokerError, BrokerNotFoundError
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.errors import KernelStartError
from jupyter_tfenv.kernels import curve, pools
from jupyter_tfenv.provisioning import choices
from jupyter_tfenv.provisioning.brokered_deaths import BrokeredDeaths

if TYPE_CHECKING:
    from jupyter_tfenv.provisioning.provisioner import TFEnvKernelProvisioner


#: A kernel's ZeroMQ channels, as the connection file names their ports.
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


class BrokeredKernel:
    """The broker-side steps of one provisioner's kernel."""

    #: Seconds between polls while waiting for the kernel to end (one request each).
    wait_delay = 0.25

    def __init__(self, prov: TFEnvKernelProvisioner, backend: BrokerBackend) -> None:
        self.prov = prov
        self.backend = backend
        #: The kernel's traffic: "curve" or "none", and why not where the broker's policy
        #: wanted it (the kernel status shows both; docs/kubernetes.md).
        self.encryption: dict[str, str | None] = {"encryption": "none", "encryption_warning": None}
        #: Why the kernel died, told at its restart (brokered_deaths.py).
        self.deaths = BrokeredDeaths(prov, backend.client)

    @property
    def owns_runtime_dir(self) -> bool:
        """Whether the runtime folder is this server's (a pod's) rather than the broker's."""
        return self.prov._pod is not None

    def check(self) -> None:
        if self.prov.transport != "ipc":
            raise KernelStartError(
                "The tfenv broker runs kernels with IPC sockets only: unset "
                "c.DockerKernelProvisioner.transport (it is 'tcp'), or unset broker_url to "
                "use a local Docker engine.",
                status_code=400,
            )

    async def prepare_runtime(self, restart: bool) -> None:
        """Docker mode: the broker makes the folder (owned by this user, in a root-owned
        parent) and later mounts exactly that folder; the connection file is written into
        it here. Kubernetes mode: the kernel is a pod reached over TCP; the connection file
        stays in a folder of this server's (its key goes to the pod's Secret with the start
        request)."""
        p = self.prov
        try:
            answer = await self.backend.prepare_connection(
                None, p.container_kernel_id, restart=restart
            )
        except BrokerError as err:
            raise start_error(err) from err
        if answer.get("backend") == "kubernetes":
            p._pod = {"ports": dict(answer.get("ports") or {})}
            p.runtime_dir = await p._call(p._prepare_runtime_dir, restart)
        else:
            p.runtime_dir = str(answer["runtime_dir"])

    async def undo_pre_launch(self, restart: bool) -> None:
        """A pre-launch failed: the broker's folder goes (not on a restart)."""
        p = self.prov
        if p.runtime_dir and not restart:
            await self.discard()
            p.runtime_dir = None

    async def adopt_root(self, rundir: str) -> str:
        return os.path.dirname(rundir)  # the broker's folder of this uid

    async def launch(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Start the kernel's container through the broker, then wait for its sockets."""
        p = self.prov
        env = choices.chosen_environment(p._environment(), p._choices)  # docs/choices.md
        cwd = await p._call(os.path.realpath, str(kwargs.get("cwd") or os.getcwd()))
        km = p.parent
        # Kubernetes mode: CurveZMQ keys for the pod where this server can use them.
        offer = curve.offer() if p._pod is not None and km is not None else None
        request = KernelStart(
            # A restarted pool kernel keeps its pool id at the broker (and its folder).
            kernel_id=p.container_kernel_id,
            environment=env.id,
            cwd=cwd,
            mount=p._notebook_mount(cwd) or "",
            env=p._passed_env(),
            # Which of the user's hub servers owns it: a restarted server removes what
            # its killed predecessor left (TFEnvApp._reap).
            server=os.environ.get("JUPYTERHUB_SERVER_NAME", ""),
            # A restart asks for the devices it held.
            gpu_devices=tuple(p._gpu_devices),
            # Kubernetes mode: the key goes to the pod's Secret (never a variable).
            key=(km.session.key.decode("ascii") if p._pod is not None and km is not None else None),
            # The broker checks the choice against its catalog and quotas again.
            choices=dict(p._choices),
            curve=offer,
        )
        await self.deaths.before_start()  # a restart: the broker's engine may be away
        started = time.monotonic()
        try:
            answer = await self._start(request, env)
        except BrokerError as err:
            pool = pools.current_pool()
            # Kubernetes mode only: a Docker start the broker refused took its runtime
            # folder with it (the retry would need a new one and a new connection file).
            if (
                err.http_status != 429
                or p._pooled
                or p._pod is None
                or pool is None
                or not await pool.make_room(gpus=err.reason == "gpu quota")
            ):
                raise start_error(err) from err
            # The user's quota is taken by warm pool pods of theirs: one gave its place.
            try:
                answer = await self._start(request, env)
            except BrokerError as again:
                raise start_error(again) from again
        p.container_id = str(answer.get("container_id") or answer.get("name") or "")
        p._gpu_devices = tuple(str(d) for d in answer.get("gpu_devices") or ())
        if p._pod is not None and km is not None:
            ip = str(answer.get("ip") or "")
            if not ip:
                await self.discard()
                raise KernelStartError("The broker started a kernel pod but sent no pod IP.")
            p._pod["ip"] = km.ip = ip
            self._encrypt(answer, offer)
            p.connection_info = km.get_connection_info()
        checkpoints = answer.get("checkpoints")
        if isinstance(checkpoints, dict):
            p.checkpoint_info = checkpoints
        p.cwd = cwd
        p.log.info(
            "tfenv: kernel %s runs in container %s (%s, image %s) started by the broker",
            p.kernel_id,
            answer.get("name") or p.container_id[:12],
            env.id,
            str(answer.get("image_id") or "?")[:19],
        )
        await p._wait_until_bound(env, started)
        self.deaths.started()
        return p.connection_info

    async def _start(self, request: KernelStart, env: Environment) -> dict[str, Any]:
        """POST /api/kernels. Shielded as in local mode: a cancelled start must learn
        whether the broker made a container, and then remove it (launch_kernel DELETEs it)."""
        p = self.prov
        starting = asyncio.ensure_future(
            self.backend.start(None, request, env, timeout=p.start_timeout + p.docker_timeout)
        )
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await starting
            raise

    def _encrypt(self, answer: dict[str, Any], keys: curve.CurveKeys | None) -> None:
        """The broker's answer says whether the pod encrypts with this server's keys."""
        encrypted = answer.get("encryption") == curve.CURVE and keys is not None
        curve.use(self.prov.parent, keys if encrypted else None)
        warning = answer.get("encryption_warning")
        self.encryption = {
            "encryption": curve.CURVE if encrypted else curve.NONE,
            "encryption_warning": str(warning) if warning else None,
        }
        if warning:
            self.prov.log.warning("tfenv: kernel %s: %s", self.prov.kernel_id, warning)

    async def attach(self, env: Environment, adopt: dict[str, Any]) -> dict[str, Any]:
        """Adoption: the running kernel as the broker reports it; the adoption's details
        (its working directory, as the broker started it)."""
        p = self.prov
        try:
            info = await self.backend.client.kernel(p.container_kernel_id)
        except BrokerError as err:
            raise start_error(err) from err
        if not (info.get("running") or info.get("status") in RUNNING_STATES):
            raise KernelStartError(
                f"Kernel {p.kernel_id} cannot be adopted: its container is {info.get('status')}."
            )
        p.container_id = str(info.get("container_id") or info.get("name") or "")
        kept = info.get("choices")
        p._choices = choices.adopted(env, kept if isinstance(kept, dict) else {}, p.log)
        km = p.parent
        if info.get("backend") == "kubernetes" and km is not None:
            # A kernel pod: the connection file (made from the broker's adopt answer)
            # says loopback, as at a first start; the kernel is at the pod's IP.
            ip = str(info.get("ip") or "")
            if not ip:
                raise KernelStartError(f"Kernel {p.kernel_id} cannot be adopted: no pod IP.")
            p._pod = {"ports": {ch: getattr(km, f"{ch}_port") for ch in CHANNELS}, "ip": ip}
            km.ip = ip
            # Encrypted if its Secret held CurveZMQ keys (the adopt answer's, now km's).
            encrypted = bool(getattr(km, "curve_publickey", None))
            self.encryption = {
                "encryption": curve.CURVE if encrypted else curve.NONE,
                "encryption_warning": None,
            }
            p.connection_info = km.get_connection_info()
        checkpoints = info.get("checkpoints") or adopt.get("checkpoints")
        if isinstance(checkpoints, dict):
            p.checkpoint_info = checkpoints
        return {**adopt, "workdir": info.get("workdir") or adopt.get("workdir") or ""}

    async def keep(self) -> None:
        """The server stops and keeps this kernel: a pod is marked kept at the broker (its
        sweep and the next server read the time); in Docker mode the runtime folder's
        marker, which the server writes, says it."""
        p = self.prov
        if p._pod is not None:
            # A taken pool pod: the broker knows it by its pool id; the notebook by ours.
            held_as = p.kernel_id if p.container_kernel_id != p.kernel_id else None
            try:
                await self.backend.client.keep_kernel(p.container_kernel_id, held_as=held_as)
            except BrokerError as err:
                raise start_error(err) from err

    # -- while the kernel starts ---------------------------------------------------------

    async def exit_state(self) -> dict[str, Any] | None:
        """None while the starting container runs; else its ``exit_code``, ``oom_killed``
        (a removed container: ``removed``, exit code None)."""
        p = self.prov
        try:
            info = await self.backend.client.kernel(p.container_kernel_id)
        except BrokerNotFoundError:
            return GONE.copy()
        except BrokerError as err:
            raise start_error(err) from err
        if info.get("running") or info.get("status") in RUNNING_STATES:
            return None
        return {"exit_code": info.get("exit_code"), "oom_killed": info.get("oom_killed")}

    async def start_logs(self) -> str:
        try:
            return await self.backend.logs(None, self.prov.container_kernel_id, tail=30)
        except BrokerError:
            return ""

    async def discard(self, *, restart: bool = False) -> None:
        """DELETE the kernel at the broker (container, and the runtime folder unless
        ``restart``); never raises."""
        p = self.prov
        try:
            await self.backend.remove(None, p.container_kernel_id, keep_runtime=restart)
        except BrokerError as err:
            p.log.warning("tfenv: the broker could not remove kernel %s: %s", p.kernel_id, err)
        p._forget_container()

    async def failed_launch(self) -> None:
        """A start failed or was cancelled: nothing is left at the broker."""
        await self.discard()

    # -- a running kernel ----------------------------------------------------------------

    async def poll(self) -> int | None:
        p = self.prov
        if p.container_id is None:
            return 0
        try:
            info = await self.backend.client.kernel(p.container_kernel_id)
        except BrokerNotFoundError:
            p._forget_container()
            self.deaths.gone()
            return 1
        except BrokerError:
            return None  # the broker does not answer: nothing known, keep the kernel
        if info.get("running") or info.get("status") in RUNNING_STATES:
            self.deaths.seen(info)
            return None
        self.deaths.dead(info)
        code = info.get("exit_code")
        return int(code) if code is not None else 1

    async def signal(self, signum: int) -> None:
        p = self.prov
        if p.container_id is None:
            return
        if signum == 0:
            await p.poll()
            return
        if signum in (signal.SIGKILL, signal.SIGTERM):
            self.deaths.stopping()
        if signum == signal.SIGINT and p._pod is not None:
            # A kernel pod gets no signals through the API: ipykernel's own
            # interrupt_request on the control channel interrupts it the same way.
            await p._call(self._send_interrupt_request)
            return
        try:
            await self.backend.signal(None, p.container_kernel_id, int(signum))
        except BrokerNotFoundError:
            p._forget_container()
        except BrokerError as err:
            if err.http_status == 409:  # 409: not running, nothing to signal
                return
            if signum in (signal.SIGKILL, signal.SIGTERM) or self.deaths.unsignalled(err):
                # Shutting down: the DELETE of cleanup() follows and says what went wrong.
                p.log.warning("tfenv: the broker could not signal %s: %s", p.kernel_id, err)
                return
            # An HTTP error, so that an interrupt answers with the broker's message.
            raise HTTPError(err.http_status, err.message, reason="tfenv broker") from err

    def _send_interrupt_request(self) -> None:
        km = self.prov.parent
        if km is None:
            return
        info: dict[str, Any] = dict(self.prov.connection_info)
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        try:
            sock.linger = 1000
            curve.secure(sock, km)
            sock.connect(f"tcp://{info['ip']}:{int(info['control_port'])}")
            km.session.send(sock, "interrupt_request", {})
        finally:
            sock.close(linger=1000)
            context.term()

    async def remove(self, restart: bool) -> None:
        """The broker removes the container, and the runtime folder unless this is a
        restart (then the next pre_launch asks for the same folder again)."""
        await self.discard(restart=restart)


def start_error(err: BrokerError) -> KernelStartError:
    """A broker's refusal as a kernel start error: its message and status, unchanged."""
    logs = err.logs
    if logs.strip() and logs.rstrip() in err.message:
        logs = ""  # the broker's message already ends with them
    return KernelStartError(err.message, logs=logs, status_code=err.http_status)
