"""What the REST handlers call: one object per server, built by the extension app.

Every blocking call (docker SDK, NVML, file reads of the probe cache) runs in a thread;
handlers stay thin and only translate requests to these methods.

What depends on where kernels run is asked of one source, chosen when the service is
made (jupyter_tfenv.server.sources): the local Docker engine, or in broker mode
(``c.DockerKernelProvisioner.broker_url`` set: JupyterHub) the tfenv broker, when no Docker
client is ever made here: image status, probes and live kernel status come from the
broker, pulls are refused (an admin pulls on the host), GPUs are read from NVML as before,
and checkpoints are read from the user's own folder (or, for Kubernetes pods, the broker's).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from jupyter_tfenv.backends.broker import BrokerClient
from jupyter_tfenv.backends.docker import gpu as gpu_mod
from jupyter_tfenv.backends.docker.pulls import Pull, PullManager
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.lock import LockFile
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints.browser import CheckpointBrowser
from jupyter_tfenv.checkpoints.layout import StorageConfig
from jupyter_tfenv.core import metrics
from jupyter_tfenv.errors import (
    NotFoundError,
    TFEnvError,
)
from jupyter_tfenv.kernels import pools
from jupyter_tfenv.kernels.compat import Compatibility
from jupyter_tfenv.provisioning.provisioner import TFEnvKernelProvisioner
from jupyter_tfenv.server.builds import BuildJobs
from jupyter_tfenv.server.sources import (  # noqa: F401 - PULL_BY_ADMIN, BrokerCheckpoints: kept here
    PULL_BY_ADMIN,
    BrokerCheckpoints,
    BrokerSource,
    engine_call,
    make_source,
)

#: A kernel whose runner reports no encryption: Docker's, over Unix sockets (docs/kubernetes.md).
_IN_CLEAR: dict[str, str | None] = {"encryption": "none", "encryption_warning": None}


class TFEnvService:
    """The server's tfenv state: catalog, Docker client, probes, pulls, live views."""

    def __init__(
        self,
        catalog: TFEnvCatalog,
        *,
        probe_cache_dir: Path,
        lock_path: Path | None,
        provisioner_defaults: TFEnvKernelProvisioner,
        log: Any,
        files: dict[str, Any] | None = None,
    ) -> None:
        self.catalog = catalog
        #: Why kernels cannot write into what JupyterLab makes (server and kernels are
        #: different users: ``server_uid``, ``kernel_uid``, ``message``), else None.
        self.files = files
        self.probe_cache_dir = probe_cache_dir
        self.lock_path = lock_path
        self.defaults = provisioner_defaults
        self.log = log
        self._client: Any = None
        self._pulls: PullManager | None = None
        #: Builds of derived environments (the panel's Build action).
        self.builds = BuildJobs(log=log)
        self._probes: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._checkpoints: CheckpointBrowser | None = None
        # Short-lived caches: a panel polls every few seconds, several panels at once.
        self._images: tuple[float, asyncio.Future[list[dict[str, Any]]]] | None = None
        self._gpus: tuple[float, dict[str, Any]] | None = None
        self._engine: tuple[float, asyncio.Future[dict[str, Any] | None]] | None = None
        #: The containers of the kernels this server adopted at start-up (kept by the last).
        self.adopted: set[str] = set()
        #: The tfenv broker in broker mode (JupyterHub), else None.
        self.broker: BrokerClient | None = provisioner_defaults.broker
        #: Where answers about images, probes, pulls and live kernels come from.
        self.source = make_source(self, self.broker)

    # -- docker ---------------------------------------------------------------------

    async def docker(self) -> Any:
        """The Docker client (a 503 BrokerError in broker mode: no Docker access here)."""
        return await self.source.docker()

    def lock(self) -> LockFile | None:
        return LockFile.load(self.lock_path) if self.lock_path else None

    # -- images ---------------------------------------------------------------------

    IMAGE_LIST_TTL = 2.0
    GPU_TTL = 2.0

    async def _image_list(self) -> list[dict[str, Any]]:
        """The engine's image list, shared by concurrent requests and kept for 2 s."""
        now = time.monotonic()
        cached = self._images
        if (
            cached is None
            or now - cached[0] > self.IMAGE_LIST_TTL
            or (cached[1].done() and cached[1].exception() is not None)
        ):
            client = await self.docker()
            future = asyncio.ensure_future(engine_call(client.api.images))
            self._images = cached = (now, future)
        return await asyncio.shield(cached[1])

    def images_changed(self) -> None:
        """Forget the cached image list (after a pull, a removal)."""
        self._images = None
        self.source.forget()

    async def broker_environments(self) -> dict[str, dict[str, Any]]:
        """Broker mode: the broker's environments by id (image status, ``allowed``)."""
        source = self.source
        assert isinstance(source, BrokerSource)
        return await source.environments()

    def _pull_finished(self, pull: Pull) -> None:
        self.images_changed()
        metrics.pull_finished(pull)

    async def image_presence(self, envs: list[Environment]) -> dict[str, dict[str, Any]]:
        """``{env id: {"present": bool, "image_id": …}}`` in one engine (or broker) call.

        Without a Docker engine the catalog is still listed, with the reason.
        """
        return await self.source.image_presence(envs)

    async def image_status(self, env: Environment) -> dict[str, Any]:
        return await self.source.image_status(env)

    async def compatibility(
        self, envs: list[Environment], images: dict[str, dict[str, Any]]
    ) -> dict[str, Compatibility]:
        """Each environment's GPU compatibility (issue 20 item 2) from cached probes and
        one GPU overview (``images``: :meth:`image_presence`'s answer); never a probe."""
        return await self.source.compatibility(envs, images)

    # -- probes ---------------------------------------------------------------------

    async def cached_probe(self, env: Environment) -> dict[str, Any] | None:
        """The cached probe of the image ``env`` has here, found through the shared image list
        (no Docker call of its own); None when not probed or not present."""
        return await self.source.cached_probe(env)

    async def probe(self, env: Environment, *, refresh: bool = False) -> dict[str, Any]:
        """Probe ``env`` (one probe per environment at a time; others wait for it)."""
        return await self.source.probe(env, refresh=refresh)

    # -- pulls ----------------------------------------------------------------------

    async def pull_manager(self) -> PullManager:
        if self._pulls is None:
            self._pulls = PullManager(await self.docker(), on_finish=self._pull_finished)
        return self._pulls

    async def start_pull(self, env: Environment) -> Pull:
        return await self.source.start_pull(env)

    #: How long the engine's ``docker info`` (live-restore, version) is kept: its
    #: daemon.json changes rarely, and the panel polls every few seconds.
    ENGINE_TTL = 60.0
    #: ... and how long an engine that did not answer is (it may be back soon).
    ENGINE_AWAY_TTL = 5.0

    async def engine(self) -> dict[str, Any] | None:
        """``{host, version, live_restore}`` of the engine kernels run on, for the panel's
        admin line (issue 24), or None (not reachable, or not for this server to say).
        Cached; concurrent requests share one ``docker info``; never raises."""
        now = time.monotonic()
        cached = self._engine
        if cached is not None and cached[1].done():
            ttl = self.ENGINE_TTL if cached[1].result() is not None else self.ENGINE_AWAY_TTL
            if now - cached[0] > ttl:
                cached = None
        if cached is None:
            self._engine = cached = (now, asyncio.ensure_future(self._ask_engine()))
        return await asyncio.shield(cached[1])

    async def _ask_engine(self) -> dict[str, Any] | None:
        try:
            return await self.source.engine()
        except Exception as err:  # a listing never fails for this line
            self.log.warning("tfenv: could not read the Docker engine's settings: %s", err)
            return None

    def pull_capability(self) -> dict[str, Any]:
        """Whether this server pulls images (not in broker mode), for the Lab's buttons."""
        return self.source.pull_capability()

    def pulls(self) -> list[Pull]:
        return self._pulls.list() if self._pulls else []

    def get_pull(self, pull_id: str) -> Pull:
        pull = self._pulls.get(pull_id) if self._pulls else None
        if pull is None:
            raise NotFoundError(f"No image pull '{pull_id}' on this server.")
        return pull

    # -- checkpoints ------------------------------------------------------------------

    def checkpoints(self) -> CheckpointBrowser:
        """The checkpoint browser of this server's kernel owner (never a request's user)."""
        if self._checkpoints is None:
            prov = self.defaults

            def catalog_ids() -> list[str]:
                return [env.id for env in self.catalog.all()]

            async def helper_images() -> dict[str, tuple[str, str]]:
                envs = self.catalog.all()
                presence = await self.image_presence(envs)
                return {
                    env.id: (str(presence[env.id]["image_id"]), env.python)
                    for env in envs
                    if presence.get(env.id, {}).get("present")
                }

            self._checkpoints = CheckpointBrowser(
                StorageConfig.from_provisioner(prov),
                owner=prov.owner,
                uid=prov.uid,
                gid=prov.gid,
                catalog_ids=catalog_ids,
                helper_images=helper_images,
                docker=self.docker,
                remote=self.source.remote_checkpoints,
            )
        return self._checkpoints

    # -- kernels and GPUs -------------------------------------------------------------

    def tfenv_kernels(self, kernel_manager: Any) -> list[dict[str, Any]]:
        kernels = []
        for kernel_id in kernel_manager.list_kernel_ids():
            km = kernel_manager.get_kernel(kernel_id)
            prov = getattr(km, "provisioner", None)
            if isinstance(prov, TFEnvKernelProvisioner) and prov.environment:
                kernels.append(self._kernel_summary(kernel_id, prov))
        return kernels

    def _kernel_summary(self, kernel_id: str, prov: TFEnvKernelProvisioner) -> dict[str, Any]:
        env_id = str(prov.environment.get("id", ""))
        try:
            env = self.catalog.get(env_id).summary()
        except TFEnvError:
            env = dict(prov.environment)  # removed from the catalog since the kernel started
        return {
            "kernel_id": kernel_id,
            "environment": env,
            "container_id": prov.container_id,
            "transport": prov.transport,
            "checkpoints": prov.checkpoint_info,
            "origin": self._origin(prov),
            # CurveZMQ on a kernel pod's traffic; "none" for Docker's Unix sockets too.
            **getattr(prov._runner, "encryption", _IN_CLEAR),
        }

    def _origin(self, prov: TFEnvKernelProvisioner) -> str | None:
        """Where the kernel's container came from, while it is that container: "adopted"
        (a previous server kept it), "pool" (started ahead by the warm pool), else None
        (started for it; also after a restart, which makes a new container)."""
        container = prov.container_id
        if container and container in self.adopted:
            return "adopted"
        pool = pools.current_pool()
        if container and pool is not None and container in pool.taken:
            return "pool"
        return None

    async def kernel_status(self, kernel_manager: Any, kernel_id: str) -> dict[str, Any]:
        try:
            km = kernel_manager.get_kernel(kernel_id)
        except KeyError:
            raise NotFoundError(f"No running kernel '{kernel_id}'.") from None
        prov = getattr(km, "provisioner", None)
        if not isinstance(prov, TFEnvKernelProvisioner):
            raise NotFoundError(f"Kernel '{kernel_id}' is not a tfenv kernel.")
        summary = self._kernel_summary(kernel_id, prov)
        status = await self.source.live(kernel_id, prov)
        probe = await self._summary_probe(summary)
        return {**summary, "live": status, "probe": probe, "last_restart": prov.last_restart}

    async def _summary_probe(self, summary: dict[str, Any]) -> dict[str, Any] | None:
        env_obj = None
        try:
            env_obj = self.catalog.get(summary["environment"].get("id", ""))
        except TFEnvError:
            env_obj = None
        return await self.cached_probe(env_obj) if env_obj is not None else None

    async def gpu_overview(self) -> dict[str, Any]:
        cached = self._gpus
        if cached is not None and time.monotonic() - cached[0] < self.GPU_TTL:
            return cached[1]
        client = await self.source.gpu_client()  # NVML needs none; it only adds containers
        overview = await asyncio.to_thread(gpu_mod.gpu_overview, client)
        metrics.observe_gpus(overview)
        await self.source.add_allocation(overview, client)
        self._gpus = (time.monotonic(), overview)
        return overview
