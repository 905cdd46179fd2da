"""What the REST handlers call: one object per server, built by the extension app.

Every blocking call (docker SDK, NVML, file reads of the probe cache) runs in a thread;
handlers stay thin and only translate requests to these methods.

In broker mode (``c.DockerKernelProvisioner.broker_url`` set: JupyterHub) no Docker client
is ever made here: image status, probes and live kernel status come from the tfenv broker,
pulls are refused (an admin pulls on the host), GPUs are read from NVML as before, and
checkpoints are read from the user's own folder.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, ImageNotFound

from jupyter_tfenv.backends.broker import BrokerClient, BrokerError, BrokerNotFoundError
from jupyter_tfenv.backends.docker import gpu as gpu_mod
from jupyter_tfenv.backends.docker import live
from jupyter_tfenv.backends.docker.engine import connect, gpu_allocation
from jupyter_tfenv.backends.docker.probe import cached_probe, probe_image
from jupyter_tfenv.backends.docker.pulls import Pull, PullManager
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.lock import LockFile, lock_status
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints.browser import CheckpointBrowser
from jupyter_tfenv.checkpoints.layout import StorageConfig
from jupyter_tfenv.errors import (
    DockerUnavailableError,
    NotFoundError,
    TFEnvError,
    engine_unreachable,
    unreachable_error,
)
from jupyter_tfenv.kernels.provisioner import TFEnvKernelProvisioner
from jupyter_tfenv.server import metrics

#: What a pull request gets in broker mode.
PULL_BY_ADMIN = (
    "In this JupyterHub, images are pulled by an admin: ask them to run "
    "`jupyter tfenv pull {env}` on the host."
)


async def engine_call(func: Any, *args: Any) -> Any:
    """``func(*args)`` in a thread; an unreachable engine raises ``DockerUnavailableError``."""
    try:
        return await asyncio.to_thread(func, *args)
    except Exception as err:
        if engine_unreachable(err):
            raise unreachable_error(err) from err
        raise


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
        self._probes: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._checkpoints: CheckpointBrowser | None = None
        # Short-lived caches: a panel polls every few seconds, several panels at once.
        self._images: tuple[float, asyncio.Future[list[dict[str, Any]]]] | None = None
        self._gpus: tuple[float, dict[str, Any]] | None = None
        #: The tfenv broker in broker mode (JupyterHub), else None.
        self.broker: BrokerClient | None = provisioner_defaults.broker
        self._broker_envs: tuple[float, asyncio.Future[list[dict[str, Any]]]] | None = None
        self._broker_probes: dict[tuple[str, str], dict[str, Any]] = {}
        self._broker_backend: str | None = None

    # -- docker ---------------------------------------------------------------------

    async def docker(self) -> Any:
        if self.broker is not None:
            raise BrokerError(
                "This server has no Docker access: in this JupyterHub, kernels run through "
                f"the tfenv broker at {self.broker.url}.",
                status=503,
                reason="BrokerMode",
            )
        if self._client is None:
            self._client = await asyncio.to_thread(connect, self.defaults.docker_timeout)
        return self._client

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
        self._broker_envs = None

    async def broker_environments(self) -> dict[str, dict[str, Any]]:
        """Broker mode: the broker's environments by id (image status, ``allowed``), shared
        by concurrent requests and kept for 2 s."""
        assert self.broker is not None
        now = time.monotonic()
        cached = self._broker_envs
        if (
            cached is None
            or now - cached[0] > self.IMAGE_LIST_TTL
            or (cached[1].done() and cached[1].exception() is not None)
        ):
            future = asyncio.ensure_future(self.broker.environments())
            self._broker_envs = cached = (now, future)
        envs = await asyncio.shield(cached[1])
        return {str(e.get("id")): e for e in envs if isinstance(e, dict)}

    async def _broker_image(self, env: Environment) -> dict[str, Any]:
        entry = (await self.broker_environments()).get(env.id)
        if entry is None:
            raise NotFoundError(
                f"The tfenv broker has no environment '{env.id}' (its catalog differs from "
                "this server's); ask your JupyterHub admin."
            )
        return dict(entry.get("image") or {})

    def _pull_finished(self, pull: Pull) -> None:
        self.images_changed()
        metrics.pull_finished(pull)

    async def image_presence(self, envs: list[Environment]) -> dict[str, dict[str, Any]]:
        """``{env id: {"present": bool, "image_id": …}}`` in one Docker call.

        Without a Docker engine the catalog is still listed, with the reason.
        """
        if self.broker is not None:
            return await self._broker_presence(envs)
        try:
            images = await self._image_list()
        except (DockerUnavailableError, APIError) as err:
            return {env.id: {"present": None, "error": str(err)} for env in envs}
        by_ref: dict[str, dict[str, Any]] = {}
        for image in images:
            for ref in (image.get("RepoTags") or []) + (image.get("RepoDigests") or []):
                by_ref[ref] = image
        result = {}
        for env in envs:
            ref = (
                env.image
                if ":" in env.image.rsplit("/", 1)[-1] or "@" in env.image
                else (f"{env.image}:latest")
            )
            found = by_ref.get(ref) or by_ref.get(f"docker.io/{ref}")
            result[env.id] = (
                {"present": True, "image_id": found["Id"], "size": found.get("Size")}
                if found
                else {"present": False, "image_id": None, "size": None}
            )
        return result

    async def _broker_presence(self, envs: list[Environment]) -> dict[str, dict[str, Any]]:
        try:
            known = await self.broker_environments()
        except BrokerError as err:
            return {env.id: {"present": None, "error": str(err)} for env in envs}
        result: dict[str, dict[str, Any]] = {}
        for env in envs:
            entry = known.get(env.id)
            if entry is None:
                result[env.id] = {
                    "present": None,
                    "error": f"The tfenv broker has no environment '{env.id}'.",
                }
                continue
            image = entry.get("image") or {}
            result[env.id] = {
                "present": image.get("present"),
                "image_id": image.get("image_id"),
                "size": image.get("size"),
            }
            if entry.get("allowed") is False:
                result[env.id]["allowed"] = False
                result[env.id]["reason"] = entry.get("reason")
        return result

    async def image_status(self, env: Environment) -> dict[str, Any]:
        if self.broker is not None:
            image = await self._broker_image(env)
            status: dict[str, Any] = {
                "environment": env.id,
                "image": env.image,
                "present": None,
                "image_id": None,
                "repo_digests": [],
                "size": None,
                "created": None,
                "lock": None,
            }
            status.update({k: v for k, v in image.items() if k not in ("environment", "image")})
            return status
        client = await self.docker()

        def inspect() -> dict[str, Any]:
            status: dict[str, Any] = {"environment": env.id, "image": env.image}
            try:
                image = client.images.get(env.image)
            except ImageNotFound:
                status.update(
                    present=False, image_id=None, repo_digests=[], size=None, created=None
                )
            else:
                status.update(
                    present=True,
                    image_id=image.id,
                    repo_digests=image.attrs.get("RepoDigests") or [],
                    size=image.attrs.get("Size"),
                    created=image.attrs.get("Created"),
                    architecture=image.attrs.get("Architecture"),
                )
            lock = self.lock()
            policy = self.catalog.lock_policy
            status["lock"] = (
                lock_status(client, env, lock, policy)
                if lock is not None or policy == "strict"
                else None
            )
            return status

        return await asyncio.to_thread(inspect)

    # -- probes ---------------------------------------------------------------------

    async def cached_probe(self, env: Environment) -> dict[str, Any] | None:
        """The cached probe of the image ``env`` has here, found through the shared image list
        (no Docker call of its own); None when not probed or not present."""
        if self.broker is not None:
            return await self._broker_probe(env, cached_only=True)
        presence = (await self.image_presence([env])).get(env.id) or {}
        image_id = presence.get("image_id")
        if not image_id:
            return None
        return await asyncio.to_thread(
            cached_probe, str(image_id), env, cache_dir=self.probe_cache_dir
        )

    async def probe(self, env: Environment, *, refresh: bool = False) -> dict[str, Any]:
        """Probe ``env`` (one probe per environment at a time; others wait for it)."""
        if self.broker is not None:
            return await self._broker_probe(env, cached_only=False, refresh=refresh) or {}
        running = self._probes.get(env.id)
        if running is not None and not running.done():
            return await asyncio.shield(running)
        client = await self.docker()
        future = asyncio.ensure_future(
            asyncio.to_thread(
                probe_image,
                client,
                env,
                cache_dir=self.probe_cache_dir,
                uid=self.defaults.uid,
                gid=self.defaults.gid,
                refresh=refresh,
            )
        )
        self._probes[env.id] = future
        return await future

    async def _broker_probe(
        self, env: Environment, *, cached_only: bool, refresh: bool = False
    ) -> dict[str, Any] | None:
        """Broker mode: the broker's probe of ``env``'s image, kept here by image id.

        ``cached_only``: only what this server already has, as the local cached probe (a GET
        never makes the broker start a probe container); else ask the broker, which answers
        from its cache or probes (errors such as a missing image come as BrokerError).
        """
        assert self.broker is not None
        try:
            image_id = str((await self._broker_image(env)).get("image_id") or "")
        except (BrokerError, NotFoundError):
            if cached_only:
                return None
            raise
        cached = self._broker_probes.get((env.id, image_id)) if image_id else None
        if cached_only or (cached is not None and not refresh):
            return cached
        answer = await self.broker.probe(env.id, refresh=refresh)
        if answer.get("state", "ok") != "ok":
            return answer
        result = {k: v for k, v in answer.items() if k != "state"}
        if image_id:
            self._broker_probes[(env.id, image_id)] = result
        return result

    # -- pulls ----------------------------------------------------------------------

    async def pull_manager(self) -> PullManager:
        if self._pulls is None:
            self._pulls = PullManager(await self.docker(), on_finish=self._pull_finished)
        return self._pulls

    async def start_pull(self, env: Environment) -> Pull:
        if self.broker is not None:
            raise BrokerError(PULL_BY_ADMIN.format(env=env.id), status=403, reason="BrokerMode")
        manager = await self.pull_manager()
        # Refused at once while the engine is away (503), not accepted to fail later.
        await engine_call((await self.docker()).ping)
        return await manager.start(env, lock=self.lock())

    def pull_capability(self) -> dict[str, Any]:
        """Whether this server pulls images (not in broker mode), for the Lab's buttons."""
        if self.broker is not None:
            return {"allowed": False, "message": PULL_BY_ADMIN.format(env="<environment>")}
        return {"allowed": True, "message": None}

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
                remote=self._remote_checkpoints,
            )
        return self._checkpoints

    async def _remote_checkpoints(self) -> BrokerCheckpoints | None:
        """The broker's checkpoints when its kernels are Kubernetes pods (their claims are
        not this server's to read), else None (this server reads its own folder)."""
        if self.broker is None:
            return None
        if self._broker_backend is None:
            me = await self.broker.me()
            self._broker_backend = str(me.get("backend") or "docker")
        if self._broker_backend != "kubernetes":
            return None
        return BrokerCheckpoints(self.broker)

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
        }

    async def kernel_status(self, kernel_manager: Any, kernel_id: str) -> dict[str, Any]:
        try:
            km = kernel_manager.get_kernel(kernel_id)
        except KeyError:
            raise NotFoundError(f"No running kernel '{kernel_id}'.") from None
        prov = getattr(km, "provisioner", None)
        if not isinstance(prov, TFEnvKernelProvisioner):
            raise NotFoundError(f"Kernel '{kernel_id}' is not a tfenv kernel.")
        summary = self._kernel_summary(kernel_id, prov)
        if self.broker is not None:
            status = await self._broker_live(kernel_id, prov)
            return {**summary, "live": status, "probe": await self._summary_probe(summary)}
        client = await self.docker()
        gpus = await self.gpu_overview()
        try:
            status = (
                # No second CPU sample on a first look: the answer comes at once with
                # cpu_percent null, and the streaming reader fills it in for the next poll.
                await asyncio.to_thread(
                    live.kernel_live_status, client, prov.container_id, gpus, cpu_baseline=False
                )
                if prov.container_id
                else {"status": "starting", "running": False}
            )
        except live.ContainerGone as err:
            status = {"status": "gone", "running": False, "message": str(err)}
        return {**summary, "live": status, "probe": await self._summary_probe(summary)}

    async def _summary_probe(self, summary: dict[str, Any]) -> dict[str, Any] | None:
        env_obj = None
        try:
            env_obj = self.catalog.get(summary["environment"].get("id", ""))
        except TFEnvError:
            env_obj = None
        return await self.cached_probe(env_obj) if env_obj is not None else None

    async def _broker_live(self, kernel_id: str, prov: TFEnvKernelProvisioner) -> dict[str, Any]:
        assert self.broker is not None
        if not prov.container_id:
            return {"status": "starting", "running": False}
        try:
            answer = await self.broker.live(prov.container_kernel_id)
        except BrokerNotFoundError as err:
            return {"status": "gone", "running": False, "message": str(err)}
        # The contract names the live status itself; accept it wrapped in "live" too.
        wrapped = answer.get("live")
        return dict(wrapped) if isinstance(wrapped, dict) else answer

    async def gpu_overview(self) -> dict[str, Any]:
        cached = self._gpus
        if cached is not None and time.monotonic() - cached[0] < self.GPU_TTL:
            return cached[1]
        client = None
        if self.broker is None:  # NVML needs no Docker; the client only adds containers
            try:
                client = await self.docker()
            except DockerUnavailableError:
                client = None
        overview = await asyncio.to_thread(gpu_mod.gpu_overview, client)
        metrics.observe_gpus(overview)
        if client is not None:
            # Which kernel holds which device (the allocator's picture, from labels).
            try:
                overview["allocation"] = await asyncio.to_thread(
                    gpu_allocation,
                    client,
                    list(self.defaults.gpu_devices),
                    viewer=self.defaults.owner,
                )
            except (DockerException, OSError) as err:
                overview["allocation_error"] = f"Could not list the GPU holders: {err}"
        elif self.broker is not None and self._broker_backend != "kubernetes":
            try:
                overview["allocation"] = list((await self.broker.gpus()).get("allocation") or [])
            except BrokerError as err:  # an older broker has no GET /api/gpus
                overview["allocation_error"] = f"The broker did not list the GPU holders: {err}"
        self._gpus = (time.monotonic(), overview)
        return overview


class BrokerCheckpoints:
    """Checkpoints on the broker's Kubernetes claims: read and deleted by the broker."""

    def __init__(self, broker: BrokerClient) -> None:
        self.broker = broker

    async def inventories(self, envs: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        if not envs:
            return {}
        got = await self.broker.checkpoints(envs)
        return {
            env: (f"{item.get('namespace')}/{item.get('claim')}", dict(item.get("inventory") or {}))
            for env, item in got.items()
        }

    async def delete(self, env: str, paths: list[str]) -> dict[str, Any]:
        return await self.broker.delete_checkpoint_files(env, paths)
