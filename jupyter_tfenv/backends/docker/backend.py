"""The Docker peer of :class:`~jupyter_tfenv.backends.base.KernelBackend`: kernels in
hardened containers on one Docker engine, found by their labels.

The broker holds one for all hub users (``scope_labels`` = its broker id); it is built
from the shared settings (:mod:`jupyter_tfenv.backends.settings`), never from the broker.
Policy stays with the caller: who the caller is, which environments and folders they may
use, their quotas (the ``admit`` hook) and their lock. This class only runs containers:

- connection folders ``{runtime_root}/{uid}/{kernel}`` lent to the caller, who writes the
  connection file; ready means "sockets bound" (:mod:`jupyter_tfenv.kernels.connection`);
- the folders the caller's policy checked are mounted by descriptor (staged) and
  verified after the container is made (``strict_mounts``: the broker runs as root);
- GPUs are picked by :func:`~jupyter_tfenv.backends.docker.engine.run_with_gpus` from the
  engine's own labels: the backend keeps no state of kernels, so a restarted process
  controls the containers its predecessor started.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from docker.errors import APIError, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError

from jupyter_tfenv.backends.base import (
    Admit,
    BackendError,
    ImageStatus,
    KernelBackend,
    KernelInfo,
    KernelNotFound,
    KernelStart,
    KernelSummary,
    gpu_count,
    usage_of,
)
from jupyter_tfenv.backends.docker import compat_gate, gpu_alloc, live
from jupyter_tfenv.backends.docker.containers import (
    KernelContainers,
    hinted,
    image_missing,
    iso,
    kernel_env,
    stage,
)
from jupyter_tfenv.backends.docker.engine import (
    KernelRequest,
    container_spec,
    explain_api_error,
    explain_start_exit,
    gpu_allocation,
    launcher_command,
    run_with_gpus,
    tail_logs,
)
from jupyter_tfenv.backends.docker.probe import ProbeError, cached_probe, probe_image
from jupyter_tfenv.backends.docker.steps import (
    discard,
    exit_state,
    remove_by_name,
    run_shielded,
    wait_until_bound,
)
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints import mountcheck
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.labels import (
    LABEL_ENVIRONMENT,
    LABEL_GPUS,
    LABEL_HUB_SERVER,
    LABEL_IMAGE_ID,
    LABEL_KERNEL_ID,
    LABEL_RUNTIME_DIR,
    LABEL_UID,
    choices_of,
)
from jupyter_tfenv.kernels import connection


class DockerBackend(KernelContainers, KernelBackend):
    """Kernel containers on the Docker engine, for callers that each have a uid.

    ``settings`` has the traits of ``KernelContainerSettings`` and
    ``CheckpointStorageSettings`` (the broker, a provisioner). What differs between uses
    is an option here: ``scope_labels`` (every kernel carries them and every lookup
    filters by them: the broker's id), ``user_lock`` (the caller's per-user lock),
    ``strict_mounts`` and ``config_section`` (named in messages).

    A local server (provisioning/local.py) builds one for its own kernels: ``catalog``
    None (the kernelspec's lock was checked by the provisioner), ``uid_label=False``
    (its containers carry no uid, GPU count or hub server label: found by their owner
    label), ``runtime_dir_of`` naming its connection folders ``{runtime_root}/{kernel}``
    (the broker lends ``{runtime_root}/{uid}/{kernel}``), ``stage_mounts=False`` (not
    root: folders are mounted by path), ``home`` (HOME in every kernel),
    ``read_only_rootfs``, and ``await_ready=False``: the provisioner waits for the
    sockets of its own transport (IPC or TCP) itself. Its REST service's backend also
    takes ``gpu_overview``: the server's own cached GPU overview (its metrics too).
    """

    name = "docker"
    features = frozenset({"adopt", "pool", "live", "gpu_allocation", "runtime_dirs"})

    def __init__(
        self,
        settings: Any,
        *,
        catalog: Callable[[], TFEnvCatalog] | None,
        runtime_root: str,
        scope_labels: Mapping[str, str] | None = None,
        probe_cache_dir: str = "",
        probe_timeout: float = 180.0,
        runtime_dir_stale_seconds: float = 600.0,
        max_runtime_dirs: Callable[[], int | None] | int | None = None,
        user_lock: Callable[[str], asyncio.Lock] | None = None,
        strict_mounts: bool = True,
        uid_label: bool = True,
        runtime_dir_of: Callable[[str, Caller, str], str] | None = None,
        stage_mounts: bool = True,
        home: str | None = None,
        read_only_rootfs: bool = False,
        await_ready: bool = True,
        gpu_overview: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        config_section: str = "TFEnvBroker",
        log_prefix: str = "tfenv-broker",
        log: logging.Logger | Any = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.runtime_root = runtime_root
        self.scope_labels = dict(scope_labels or {})
        self.probe_cache_dir = probe_cache_dir
        self.probe_timeout = probe_timeout
        self.runtime_dir_stale_seconds = runtime_dir_stale_seconds
        self.max_runtime_dirs = max_runtime_dirs
        self.strict_mounts = strict_mounts
        self.uid_label = uid_label
        self.runtime_dir_of = runtime_dir_of or _lent_runtime_dir
        self.stage_mounts = stage_mounts
        self.home = home
        self.read_only_rootfs = read_only_rootfs
        self.await_ready = await_ready
        self.host_gpu_overview = gpu_overview
        self.config_section = config_section
        self.log_prefix = log_prefix
        self.log = log or logging.getLogger("jupyter_tfenv.backends.docker")
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock = user_lock or self._own_lock
        self._client: Any = None
        self._probes: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: Probe containers running per user: {user: {token: GPUs}} (they count as kernels).
        self._probing: dict[str, dict[object, int]] = {}
        self._host_gpus: tuple[float, int | None] | None = None
        self._gpus: tuple[float, dict[str, Any]] | None = None

    def _own_lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    # -- kernels -----------------------------------------------------------------------------

    async def find(self, caller: Caller, kernel_id: str) -> KernelInfo | None:
        try:
            return await self.state(caller, kernel_id)
        except KernelNotFound:
            return None

    async def state(self, caller: Caller, kernel_id: str) -> KernelInfo:
        container = await self.container(caller, kernel_id)
        attrs = container.attrs or {}
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        root = await asyncio.to_thread(os.path.abspath, self.runtime_root)
        rundir = self.runtime_dir_of(root, caller, kernel_id)
        return KernelInfo(
            kernel_id=kernel_id,
            container_id=container.id,
            name=container.name,
            status=state.get("Status"),
            running=bool(state.get("Running")),
            exit_code=state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            started_at=state.get("StartedAt"),
            environment=labels.get(LABEL_ENVIRONMENT),
            image_id=attrs.get("Image") or labels.get(LABEL_IMAGE_ID),
            # For a server that adopts it (keep_kernels_on_stop): workdir, sockets, choice.
            workdir=config.get("WorkingDir") or "",
            runtime_dir=rundir if labels.get(LABEL_RUNTIME_DIR) == rundir else "",
            choices=choices_of(labels),
        )

    async def adopt(self, caller: Caller, kernel_id: str) -> KernelInfo:
        return await self.state(caller, kernel_id)

    async def list_kernels(self, caller: Caller) -> list[KernelSummary]:
        rows = await self.kernel_rows(caller)
        return [
            KernelSummary(
                kernel_id=(row.get("Labels") or {}).get(LABEL_KERNEL_ID),
                container_id=row.get("Id"),
                name=(row.get("Names") or ["/"])[0].lstrip("/"),
                environment=(row.get("Labels") or {}).get(LABEL_ENVIRONMENT),
                status=row.get("State"),
                started_at=iso(row.get("Created")),
                gpus=self._row_gpus(row),
                server=(row.get("Labels") or {}).get(LABEL_HUB_SERVER, ""),
            )
            for row in rows
        ]

    async def signal(self, caller: Caller, kernel_id: str, signum: int) -> None:
        container = await self.container(caller, kernel_id)
        try:
            await asyncio.to_thread(container.kill, signal=signum)
        except NotFound:
            raise KernelNotFound(kernel_id) from None
        except APIError as err:
            if err.status_code != 409:  # not running: nothing to signal
                raise

    async def logs(self, caller: Caller, kernel_id: str, tail: int = 30) -> str:
        container = await self.container(caller, kernel_id)
        return str(await asyncio.to_thread(tail_logs, container, tail))

    async def live(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        container = await self.container(caller, kernel_id)
        client = await self.docker()
        if self.host_gpu_overview is not None:
            gpus = await self.host_gpu_overview()
        else:
            gpus = await self.gpu_overview(client)
        try:
            return dict(
                await asyncio.to_thread(
                    live.kernel_live_status, client, container.id, gpus, cpu_baseline=False
                )
            )
        except live.ContainerGone as err:
            raise BackendError(err.message, status=404, reason="no such kernel") from err

    async def remove(self, caller: Caller, kernel_id: str, *, keep_runtime: bool = False) -> None:
        connection.check_kernel_id(kernel_id)
        rows = await self.kernel_rows(caller, kernel_id)
        client = await self.docker()
        for row in rows:
            await asyncio.to_thread(remove_by_name, client, row["Id"])
            live.forget_container(row["Id"])
            names = ", ".join(n.lstrip("/") for n in row.get("Names") or [])
            self.log.info(
                "%s: stopped kernel %s of %s (uid %d): %s, container %s",
                self.log_prefix,
                kernel_id,
                caller.name,
                caller.uid,
                (row.get("Labels") or {}).get(LABEL_ENVIRONMENT, "?"),
                names,
            )
        removed = False
        if not keep_runtime:
            removed = await self._drop_runtime_dir(caller, kernel_id)
        if not rows and not removed:
            raise KernelNotFound(kernel_id)

    async def gpus(self, caller: Caller) -> dict[str, Any]:
        """Each device kernels may get and who holds it: the caller's kernels by id, other
        users' without names (docs/gpus.md)."""
        client = await self.docker()
        try:
            rows = await asyncio.to_thread(
                gpu_allocation, client, list(self.settings.gpu_devices), viewer=caller.name
            )
        except RequestsConnectionError as err:
            raise self._docker_lost(err) from err
        return {"allocation": rows, "placement": self.settings.gpu_placement}

    async def compatibility(
        self, envs: list[Environment], images: Mapping[str, ImageStatus]
    ) -> dict[str, dict[str, str]]:
        """Each environment's GPU compatibility here (``{state, message}``, the listings'
        field), from cached probes and NVML (compat_gate); never a probe container."""
        ids = {env_id: status.image_id for env_id, status in images.items()}
        host = functools.partial(compat_gate.host_overview, self)
        found = await compat_gate.verdicts(envs, ids, host, compat_gate.backend_cache_dir(self))
        return {env_id: compat_gate.summary(verdict) for env_id, verdict in found.items()}

    # -- start -------------------------------------------------------------------------------

    async def start(
        self,
        caller: Caller,
        request: KernelStart,
        env: Environment,
        *,
        admit: Admit | None = None,
    ) -> dict[str, Any]:
        if request.key is not None:
            raise BackendError(
                "field 'key' is not accepted: in Docker mode the connection file in the "
                "kernel's runtime folder holds the key.",
                reason="field not accepted",
            )
        try:
            return await self._start(caller, request, env, admit)
        except BaseException:
            await self._drop_runtime_dir(caller, request.kernel_id)
            raise

    async def _start(
        self, caller: Caller, req: KernelStart, env: Environment, admit: Admit | None
    ) -> dict[str, Any]:
        rundir = req.runtime_dir
        checked = list(req.checked)
        conn: dict[str, Any] = {}
        if self.await_ready:
            conn = await asyncio.to_thread(connection.read_connection_file, rundir, caller)
        client = await self.docker()
        image = await asyncio.to_thread(self._resolve_image, client, env)
        if self.catalog is not None:
            await self._check_lock(client, env)
        # Incompatible GPUs: 409; GPUs of this host the build cannot run on: left out.
        avoid = compat_gate.unusable_devices(await compat_gate.check_start(self, env, image.id))
        new_gpus = 0
        if admit is not None or self.uid_label:
            new_gpus = gpu_count(
                list(env.gpus) if isinstance(env.gpus, tuple) else env.gpus,
                await self.host_gpus(),
            )
        s = self.settings
        async with self._lock(caller.name):
            rows = await self.kernel_rows(caller)
            same = [
                r for r in rows if (r.get("Labels") or {}).get(LABEL_KERNEL_ID) == req.kernel_id
            ]
            if admit is not None:
                admit(
                    usage_of(
                        (self._row_gpus(r) for r in rows if self._running(r) and r not in same),
                        self.probe_gpus(caller),
                    ),
                    new_gpus,
                )
            for row in same:  # a restart: the kernel's previous container goes
                await asyncio.to_thread(remove_by_name, client, row["Id"])
            mounts, storage_env, checkpoints, prepared = await asyncio.to_thread(
                self.prepare_storage, client, caller, env, str(image.id)
            )
            # Docker mounts by path, and a user can swap a folder for a symlink at any moment:
            # as root it gets the checked folders by descriptor (else by path: their own).
            staged = mountcheck.StagedMounts()
            try:
                sources: dict[str, str] = {}
                if self.stage_mounts:
                    sources = await asyncio.to_thread(stage, staged, [*checked, *prepared])
                kreq = KernelRequest(
                    kernel_id=req.kernel_id,
                    cmd=list(req.cmd)
                    or launcher_command(env.python, f"{rundir}/{connection.CONNECTION_FILE}"),
                    uid=caller.uid,
                    gid=caller.gid,
                    owner=caller.name,
                    workdir=req.cwd,
                    notebook_mount=req.mount or None,
                    notebook_source=sources.get(req.mount),
                    runtime_dir=rundir,
                    runtimes_dir=s.runtimes_dir or None,
                    image_id=str(image.id),
                    environment=kernel_env(caller, dict(req.env), req.mount, self.home),
                    transport=req.transport,
                    memory=s.default_memory or None,
                    pids=s.default_pids or None,
                    shm_size=s.default_shm_size or None,
                    read_only_rootfs=self.read_only_rootfs,
                    extra_mounts=tuple(mountcheck.from_staging(mounts, sources)),
                    extra_env=storage_env,
                    extra_labels={
                        **self.scope_labels,
                        **self._caller_labels(caller, req, new_gpus),
                    },
                )
                spec = await asyncio.to_thread(container_spec, env, kreq)
                container, gpu_devices = await self._run_with_gpus(
                    client, caller, env, spec, [*same, *hinted(req.gpu_devices)], unusable=avoid
                )
            finally:
                # The container (if any) has its own copy of the mounts by now.
                await asyncio.to_thread(staged.release)
        try:
            await self._verify_mounts(container, [*checked, *prepared])
            if self.await_ready:
                await self._wait_until_bound(env, container, conn)
        except BackendError:
            raise
        except BaseException:
            await discard(container, self.docker, self.log)
            raise
        self.log.info(
            "%s: started kernel %s for %s (uid %d): %s in container %s",
            self.log_prefix,
            req.kernel_id,
            caller.name,
            caller.uid,
            env.id,
            container.name,
        )
        return {
            "kernel_id": req.kernel_id,
            "container_id": container.id,
            "name": container.name,
            "image_id": str(image.id),
            "environment": env.id,
            "runtime_dir": rundir,
            "checkpoints": checkpoints,
            "gpu_devices": list(gpu_devices),
        }

    def _caller_labels(self, caller: Caller, req: KernelStart, gpus: int) -> dict[str, str]:
        """The labels a kernel carries beside the engine's own (uid_label: the caller's
        uid, GPU count and hub server; and the request's own)."""
        labels = dict(req.labels)
        if self.uid_label:
            labels.update(
                {LABEL_UID: str(caller.uid), LABEL_GPUS: str(gpus), LABEL_HUB_SERVER: req.server}
            )
        return labels

    async def _run_with_gpus(
        self,
        client: Any,
        caller: Caller,
        env: Environment,
        spec: dict[str, Any],
        previous: list[dict[str, Any]],
        *,
        unusable: dict[str, str],
    ) -> tuple[Any, tuple[str, ...]]:
        """:meth:`_run` on devices the allocator picks (a restart keeps the ``previous``
        container's); stateless: the engine's labels are the picture."""
        prefer = tuple(
            d
            for row in previous
            for d in ((row.get("Labels") or {}).get(gpu_alloc.LABEL_GPU_DEVICES) or "").split(",")
            if d
        )
        s = self.settings
        try:
            return await run_with_gpus(
                client,
                env,
                spec,
                lambda spec: self._run(client, env, spec),
                configured=s.gpu_devices,
                viewer=caller.name,
                placement=s.gpu_placement,
                prefer=prefer,
                wait=s.gpu_wait_timeout,
                unusable=unusable,
            )
        except gpu_alloc.GpuUnavailableError as err:
            raise BackendError(err.message, status=err.status, reason="no free gpu") from err

    async def _run(self, client: Any, env: Environment, spec: dict[str, Any]) -> Any:
        try:
            return await run_shielded(client, spec)
        except APIError as err:
            text = explain_api_error(err, env)
            # The environment cannot run here as declared (no image, no python, no GPUs):
            # the request's fault, not the backend's.
            known = ("jupyter tfenv pull", "has no '", "has no NVIDIA runtime")
            status = 400 if any(k in text for k in known) else 500
            raise BackendError(text, status=status, reason="docker refused") from err
        except RequestsConnectionError as err:
            raise self._docker_lost(err) from err

    async def _wait_until_bound(
        self, env: Environment, container: Any, conn: dict[str, Any]
    ) -> None:
        paths = connection.socket_paths(conn)
        rundir = os.path.dirname(str(conn["ip"]))
        timeout = self.settings.start_timeout

        async def exited() -> dict[str, Any] | None:
            return await asyncio.to_thread(exit_state, container)

        async def timed_out() -> None:
            logs = await asyncio.to_thread(tail_logs, container)
            await discard(container, self.docker, self.log)
            raise BackendError(
                f"The kernel of '{env.id}' did not start within {timeout:.0f} s "
                f"(c.{self.config_section}.start_timeout); the container was removed.",
                status=504,  # the kernel did not answer in time: no server fault
                reason="start timeout",
                logs=logs,
            )

        async def failed(state: dict[str, Any]) -> None:
            logs = await asyncio.to_thread(tail_logs, container)
            await discard(container, self.docker, self.log)
            why = explain_start_exit(env, state, logs, admin=True)
            raise BackendError(why.message, status=why.status, reason=why.reason, logs=why.logs)

        await wait_until_bound(
            lambda: connection.sockets_bound(paths, rundir),
            exited,
            timeout=timeout,
            on_exit=failed,
            on_timeout=timed_out,
        )

    # -- environments ------------------------------------------------------------------------

    async def probe(
        self,
        caller: Caller,
        env: Environment,
        *,
        refresh: bool = False,
        admit: Admit | None = None,
    ) -> dict[str, Any]:
        running = self._probes.get(env.id)
        if running is None or running.done():
            client = await self.docker()
            if not refresh:
                cached = await asyncio.to_thread(
                    cached_probe, client, env, cache_dir=Path(self.probe_cache_dir)
                )
                if cached is not None:
                    return {"state": "ok", **cached}
            # A probe container is a kernel while it runs: counted, under the user's lock,
            # against the same quotas (one per environment at a time, shared by all users).
            async with self._lock(caller.name):
                running = self._probes.get(env.id)
                if running is None or running.done():
                    running = await self._start_probe(client, caller, env, refresh, admit)
        try:
            result = await asyncio.shield(running)
        except ProbeError as err:
            if err.http_status == 400 and "jupyter tfenv pull" in err.message:
                raise image_missing(env) from err
            raise BackendError(err.message, status=err.http_status, logs=err.logs) from err
        return {"state": "ok", **result}

    async def _start_probe(
        self,
        client: Any,
        caller: Caller,
        env: Environment,
        refresh: bool,
        admit: Admit | None,
    ) -> asyncio.Future[dict[str, Any]]:
        """Start probing ``env`` as ``caller`` once ``admit`` allows it (call under the
        caller's lock); the probe counts until it ends."""
        gpus = 0
        if env.wants_gpu:
            gpus = gpu_count(
                list(env.gpus) if isinstance(env.gpus, tuple) else env.gpus,
                await self.host_gpus(),
            )
        if admit is not None:
            admit(await self.usage(caller), gpus)
        token = object()
        held = self._probing.setdefault(caller.name, {})
        held[token] = gpus

        def release(_: Any) -> None:
            mine = self._probing.get(caller.name, {})
            mine.pop(token, None)
            if not mine:
                self._probing.pop(caller.name, None)

        running = asyncio.ensure_future(
            asyncio.to_thread(
                probe_image,
                client,
                env,
                cache_dir=Path(self.probe_cache_dir),
                uid=caller.uid,
                gid=caller.gid,
                timeout=self.probe_timeout,
                refresh=refresh,
            )
        )
        running.add_done_callback(release)
        self._probes[env.id] = running
        return running


def _lent_runtime_dir(root: str, caller: Caller, kernel_id: str) -> str:
    """The connection folder the broker lends a caller for a kernel."""
    return connection.runtime_dir_for(root, caller.uid, kernel_id)
