"""Where the server's REST answers about images, probes, pulls and live kernels come from.

Two peers, one chosen when the service is made (:func:`make_source`), so that
:class:`~jupyter_tfenv.server.service.TFEnvService` never asks which:

- :class:`LocalSource`: this server's own Docker engine: live readings of its kernels and
  the GPU holders through the same ``DockerBackend`` its provisioner uses
  (provisioning/local.py ``local_backend``), the image index read as that backend reads
  it; images, lock status, probes it runs, pulls and the orphan reaper here;
- :class:`BrokerSource`: the tfenv broker (``broker_url`` set: JupyterHub), through
  :class:`~jupyter_tfenv.backends.broker.BrokerBackend`: image status and probes are the
  broker's, pulls are refused (an admin pulls on the host), live status is the broker's,
  and no Docker client is ever made here.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import TYPE_CHECKING, Any

from docker.errors import APIError, DockerException, ImageNotFound

from jupyter_tfenv.backends.broker import (
    BrokerBackend,
    BrokerClient,
    BrokerError,
    BrokerNotFoundError,
)
from jupyter_tfenv.backends.docker import compat_gate, live
from jupyter_tfenv.backends.docker.containers import image_index, image_status_of
from jupyter_tfenv.backends.docker.engine import connect, reap_orphans
from jupyter_tfenv.backends.docker.engine_info import engine_state, panel_engine
from jupyter_tfenv.backends.docker.probe import cached_probe, probe_image
from jupyter_tfenv.backends.docker.pulls import Pull
from jupyter_tfenv.catalog.lock import lock_status
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.errors import (
    BackendError,
    DockerUnavailableError,
    NotFoundError,
    TFEnvError,
    as_tfenv_error,
    engine_unreachable,
    unreachable_error,
)
from jupyter_tfenv.kernels.compat import STATE_UNKNOWN, Compatibility
from jupyter_tfenv.lifecycle.adoption import held_by_live_server
from jupyter_tfenv.lifecycle.keep import (
    Adopter,
    adopt_local,
    adopt_through_broker,
    known_kernel_ids,
)
from jupyter_tfenv.provisioning.local import local_backend, local_caller

if TYPE_CHECKING:
    from jupyter_tfenv.provisioning.provisioner import TFEnvKernelProvisioner
    from jupyter_tfenv.server.service import TFEnvService

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


class LocalSource:
    """This server's own Docker engine."""

    #: The broker's environment groups hide environments from the picker; here: none.
    hides_not_allowed = False
    #: Kept kernels are this owner's containers on the engine that no live server holds.
    adopter: Adopter = staticmethod(adopt_local)

    def __init__(self, service: TFEnvService) -> None:
        self.service = service
        #: The Docker backend of this server's kernels (as the provisioner builds it):
        #: live readings and GPU holders come from it.
        self.backend = local_backend(service.defaults, gpu_overview=service.gpu_overview)

    def forget(self) -> None:
        """Nothing cached here (the service keeps the engine's image list)."""

    async def docker(self) -> Any:
        svc = self.service
        if svc._client is None:
            svc._client = await asyncio.to_thread(connect, svc.defaults.docker_timeout)
        return svc._client

    async def image_presence(self, envs: list[Environment]) -> dict[str, dict[str, Any]]:
        try:
            images = await self.service._image_list()
        except (DockerUnavailableError, APIError) as err:
            return {env.id: {"present": None, "error": str(err)} for env in envs}
        index = image_index(images)
        result = {}
        for env in envs:
            status = image_status_of(env, index)
            result[env.id] = {
                "present": bool(status.present),
                "image_id": status.image_id,
                "size": status.size,
            }
        return result

    async def image_status(self, env: Environment) -> dict[str, Any]:
        svc = self.service
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
            lock = svc.lock()
            policy = svc.catalog.lock_policy
            status["lock"] = (
                lock_status(client, env, lock, policy)
                if lock is not None or policy == "strict"
                else None
            )
            return status

        return await asyncio.to_thread(inspect)

    async def cached_probe(self, env: Environment) -> dict[str, Any] | None:
        svc = self.service
        presence = (await self.image_presence([env])).get(env.id) or {}
        image_id = presence.get("image_id")
        if not image_id:
            return None
        result = await asyncio.to_thread(
            cached_probe, str(image_id), env, cache_dir=svc.probe_cache_dir
        )
        return dict(result) if result is not None else None

    async def compatibility(
        self, envs: list[Environment], images: dict[str, dict[str, Any]]
    ) -> dict[str, Compatibility]:
        """GPU compatibility from the cached probes of the images found (``images``:
        :meth:`image_presence`'s answer) and the service's cached GPU overview."""
        svc = self.service
        ids = {env.id: (images.get(env.id) or {}).get("image_id") for env in envs}
        found = await compat_gate.verdicts(envs, ids, svc.gpu_overview, svc.probe_cache_dir)
        for env in envs:
            if env.wants_gpu and (images.get(env.id) or {}).get("present") is None:
                found[env.id] = compat_gate.no_image(env, engine_answered=False)
        return found

    async def probe(self, env: Environment, *, refresh: bool) -> dict[str, Any]:
        svc = self.service
        running = svc._probes.get(env.id)
        if running is not None and not running.done():
            return await asyncio.shield(running)
        client = await self.docker()
        future = asyncio.ensure_future(
            asyncio.to_thread(
                probe_image,
                client,
                env,
                cache_dir=svc.probe_cache_dir,
                uid=svc.defaults.uid,
                gid=svc.defaults.gid,
                refresh=refresh,
            )
        )
        svc._probes[env.id] = future
        return await future

    async def start_pull(self, env: Environment) -> Pull:
        svc = self.service
        manager = await svc.pull_manager()
        # Refused at once while the engine is away (503), not accepted to fail later.
        await engine_call((await self.docker()).ping)
        return await manager.start(env, lock=svc.lock())

    def pull_capability(self) -> dict[str, Any]:
        return {"allowed": True, "message": None}

    async def engine(self) -> dict[str, Any] | None:
        """This server's engine (``docker info``): the user of a single-user server is its
        admin, so the panel says when live-restore is off; None when it does not answer."""
        try:
            client = await self.docker()
        except TFEnvError:
            return None
        state, _ = await asyncio.to_thread(engine_state, client)
        return panel_engine(state)

    async def remote_checkpoints(self) -> BrokerCheckpoints | None:
        """None: this server reads its own checkpoint folder."""
        return None

    async def live(self, kernel_id: str, prov: TFEnvKernelProvisioner) -> dict[str, Any]:
        await self.docker()  # an engine that cannot be asked: 503, as for every answer
        if not prov.container_id:
            return {"status": "starting", "running": False}
        try:
            # No second CPU sample on a first look: the answer comes at once with
            # cpu_percent null, and the streaming reader fills it in for the next poll.
            return await self.backend.live(local_caller(prov), prov.container_kernel_id)
        except BackendError as err:  # KernelNotFound is one
            if err.http_status == 404:
                gone = live.gone(prov.container_id)
                return {"status": "gone", "running": False, "message": str(gone)}
            if engine_unreachable(err):
                raise unreachable_error(err.__cause__ or err) from err
            raise

    async def gpu_client(self) -> Any:
        """The engine for the GPU overview (NVML needs none; it only adds containers)."""
        try:
            return await self.docker()
        except DockerUnavailableError:
            return None

    async def add_allocation(self, overview: dict[str, Any], client: Any) -> None:
        """Which kernel holds which device (the allocator's picture, from labels)."""
        if client is None:
            return
        try:
            gpus = await self.backend.gpus(local_caller(self.service.defaults))
            overview["allocation"] = gpus["allocation"]
        except (TFEnvError, DockerException, OSError) as err:
            overview["allocation_error"] = f"Could not list the GPU holders: {err}"

    async def reap_orphans(self, app: Any) -> None:
        """Remove the kernel containers of this user that a dead server left (labels:
        server host, pid and its start time)."""
        defaults = self.service.defaults
        try:
            client = await asyncio.to_thread(connect, defaults.docker_timeout)
            reaped = await asyncio.to_thread(
                reap_orphans,
                client,
                defaults.owner,
                runtime_roots=[defaults.runtime_root],
                is_held=held_by_live_server,
            )
        except Exception as err:
            if not isinstance(err, TFEnvError) and not engine_unreachable(err):
                raise
            app.log.warning("tfenv: no orphan check at start-up: %s", as_tfenv_error(err))
            return
        for item in reaped:
            app.log.warning(
                "tfenv: removed kernel container %s (%s, kernel %s) left by a server that "
                "died (%s)",
                item.name,
                item.environment,
                item.kernel_id,
                item.reason,
            )


class BrokerSource:
    """The tfenv broker (JupyterHub): this server makes no Docker client."""

    #: Environments the broker does not allow this user are left out of the picker.
    hides_not_allowed = True

    def __init__(self, service: TFEnvService, broker: BrokerClient) -> None:
        self.service = service
        self.backend = BrokerBackend(broker)
        #: Kept kernels are the broker's kernels of this hub server name that run.
        self.adopter: Adopter = functools.partial(adopt_through_broker, broker=broker)
        self._envs: tuple[float, asyncio.Future[list[dict[str, Any]]]] | None = None
        self._probes: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def broker(self) -> BrokerClient:
        return self.backend.client

    async def docker(self) -> Any:
        raise BrokerError(
            "This server has no Docker access: in this JupyterHub, kernels run through "
            f"the tfenv broker at {self.broker.url}.",
            status=503,
            reason="BrokerMode",
        )

    def forget(self) -> None:
        """Forget the broker's environments (after a change of images)."""
        self._envs = None

    async def environments(self) -> dict[str, dict[str, Any]]:
        """The broker's environments by id (image status, ``allowed``), shared by
        concurrent requests and kept for 2 s."""
        now = time.monotonic()
        cached = self._envs
        if (
            cached is None
            or now - cached[0] > self.service.IMAGE_LIST_TTL
            or (cached[1].done() and cached[1].exception() is not None)
        ):
            future = asyncio.ensure_future(self.broker.environments())
            self._envs = cached = (now, future)
        envs = await asyncio.shield(cached[1])
        return {str(e.get("id")): e for e in envs if isinstance(e, dict)}

    async def _image(self, env: Environment) -> dict[str, Any]:
        entry = (await self.environments()).get(env.id)
        if entry is None:
            raise NotFoundError(
                f"The tfenv broker has no environment '{env.id}' (its catalog differs from "
                "this server's); ask your JupyterHub admin."
            )
        return dict(entry.get("image") or {})

    async def image_presence(self, envs: list[Environment]) -> dict[str, dict[str, Any]]:
        try:
            known = await self.environments()
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

    async def compatibility(
        self, envs: list[Environment], images: dict[str, dict[str, Any]]
    ) -> dict[str, Compatibility]:
        """The broker's verdicts (its host runs the kernels); where it gives none (an
        older broker, Kubernetes), ``unknown``: this server cannot judge that host."""
        try:
            known = await self.environments()
        except BrokerError:
            known = {}
        result: dict[str, Compatibility] = {}
        for env in envs:
            given = (known.get(env.id) or {}).get("compatibility")
            if not env.wants_gpu:
                result[env.id] = compat_gate.verdict(env, None, None)
            elif isinstance(given, dict) and given.get("state"):
                result[env.id] = Compatibility(str(given["state"]), str(given.get("message") or ""))
            else:
                result[env.id] = Compatibility(
                    STATE_UNKNOWN,
                    f"Cannot tell whether '{env.id}' runs on the GPUs where kernels run: "
                    "the tfenv broker's host decides, and it did not say.",
                    {"environment": env.id, "missing": "broker"},
                )
        return result

    async def image_status(self, env: Environment) -> dict[str, Any]:
        image = await self._image(env)
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

    async def cached_probe(self, env: Environment) -> dict[str, Any] | None:
        return await self._probe(env, cached_only=True)

    async def probe(self, env: Environment, *, refresh: bool) -> dict[str, Any]:
        return await self._probe(env, cached_only=False, refresh=refresh) or {}

    async def _probe(
        self, env: Environment, *, cached_only: bool, refresh: bool = False
    ) -> dict[str, Any] | None:
        """The broker's probe of ``env``'s image, kept here by image id.

        ``cached_only``: only what this server already has, as the local cached probe (a GET
        never makes the broker start a probe container); else ask the broker, which answers
        from its cache or probes (errors such as a missing image come as BrokerError).
        """
        try:
            image_id = str((await self._image(env)).get("image_id") or "")
        except (BrokerError, NotFoundError):
            if cached_only:
                return None
            raise
        cached = self._probes.get((env.id, image_id)) if image_id else None
        if cached_only or (cached is not None and not refresh):
            return cached
        answer = await self.backend.probe(None, env, refresh=refresh)
        if answer.get("state", "ok") != "ok":
            return answer
        result = {k: v for k, v in answer.items() if k != "state"}
        if image_id:
            self._probes[(env.id, image_id)] = result
        return result

    async def start_pull(self, env: Environment) -> Pull:
        raise BrokerError(PULL_BY_ADMIN.format(env=env.id), status=403, reason="BrokerMode")

    def pull_capability(self) -> dict[str, Any]:
        return {"allowed": False, "message": PULL_BY_ADMIN.format(env="<environment>")}

    async def engine(self) -> dict[str, Any] | None:
        """None: the panel says nothing of the engine in a JupyterHub. The engine is the
        broker host's (or none: Kubernetes), its ``/api/environments`` does not say how it
        runs, and a hub user can neither change its daemon.json nor tell the broker
        apart from the hub: a live-restore warning would only alarm them. The admin who
        can act runs ``jupyter tfenv check`` on the broker's host (docs/operations.md)."""
        return None

    async def remote_checkpoints(self) -> BrokerCheckpoints | None:
        """The broker's checkpoints when its kernels are Kubernetes pods (their claims are
        not this server's to read), else None (this server reads its own folder)."""
        if await self.backend.learn_backend() != "kubernetes":
            return None
        return BrokerCheckpoints(self.broker)

    async def live(self, kernel_id: str, prov: TFEnvKernelProvisioner) -> dict[str, Any]:
        if not prov.container_id:
            return {"status": "starting", "running": False}
        try:
            answer = await self.backend.live(None, prov.container_kernel_id)
        except BrokerNotFoundError as err:
            return {"status": "gone", "running": False, "message": str(err)}
        # The contract names the live status itself; accept it wrapped in "live" too.
        wrapped = answer.get("live")
        return dict(wrapped) if isinstance(wrapped, dict) else answer

    async def gpu_client(self) -> Any:
        return None  # NVML only: this server has no Docker client

    async def add_allocation(self, overview: dict[str, Any], client: Any) -> None:
        if self.backend.remote == "kubernetes":
            return
        try:
            overview["allocation"] = list((await self.broker.gpus()).get("allocation") or [])
        except BrokerError as err:  # an older broker has no GET /api/gpus
            overview["allocation_error"] = f"The broker did not list the GPU holders: {err}"

    async def reap_orphans(self, app: Any) -> None:
        """Remove the kernels a killed predecessor of this server left.

        A server that starts has no kernels yet, so every broker kernel of this user that
        was started for this hub server name (``$JUPYTERHUB_SERVER_NAME``) is an orphan:
        its server died without shutting it down (SIGKILL, out of memory) and it would
        hold GPUs and the user's kernel quota until removed. Kernels of the user's other
        named servers are left alone.
        """
        server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")
        try:
            kernels = await self.backend.list_kernels(None)
        except TFEnvError as err:
            app.log.warning("tfenv: no orphan check at start-up: %s", err)
            return
        manager = app.serverapp.kernel_manager if app.serverapp else None
        # Kernels this server knows, also those still starting (the Lab may restore a
        # notebook's kernel while this check runs).
        known = known_kernel_ids(manager) if manager is not None else set()
        if app._pool is not None:  # pool kernels are this server's too
            known |= app._pool.kernel_ids()
        for kernel in kernels:
            kernel_id = str(kernel.kernel_id or "")
            if not kernel_id or kernel_id in known or kernel.server != server:
                continue
            try:
                await self.backend.remove(None, kernel_id)
            except TFEnvError as err:
                app.log.warning("tfenv: could not remove orphaned kernel %s: %s", kernel_id, err)
                continue
            app.log.warning(
                "tfenv: removed kernel %s (%s, container %s) left by this server's previous "
                "run, which stopped without shutting it down",
                kernel_id,
                kernel.environment,
                kernel.name,
            )


Source = LocalSource | BrokerSource


def make_source(service: TFEnvService, broker: BrokerClient | None) -> Source:
    """The service's source of answers: the broker when there is one, else local."""
    if broker is None:
        return LocalSource(service)
    return BrokerSource(service, broker)
