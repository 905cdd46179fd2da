"""What :class:`~jupyter_tfenv.backends.docker.backend.DockerBackend` stands on: the engine
client, a caller's kernel containers found by their labels (owner, uid and the backend's
scope labels, e.g. the broker's id), usage for quotas, the connection folders lent to
callers and their sweep, the checkpoint storage and the check of the mounts, the image
index, the image and lock checks before a start, and the small pure helpers of a start.
No state of kernels is kept: the labels are the picture.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from docker.errors import APIError, ImageNotFound, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import RequestException

from jupyter_tfenv.backends.base import (
    BackendError,
    ImageStatus,
    KernelNotFound,
    Usage,
    usage_of,
)
from jupyter_tfenv.backends.docker import gpu as gpu_mod
from jupyter_tfenv.backends.docker import gpu_alloc
from jupyter_tfenv.backends.docker.engine import (
    explain_api_error,
    forget_shared_client,
    shared_client,
)
from jupyter_tfenv.backends.docker.steps import RUNNING_STATES
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.lock import (
    LockFile,
    LockMismatchError,
    LockMissingError,
    check_lock,
    require_lock,
)
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints import mountcheck
from jupyter_tfenv.checkpoints.layout import CheckpointStorageError, StorageConfig
from jupyter_tfenv.checkpoints.storage import prepare_kernel_storage
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.labels import (
    LABEL_GPUS,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_RUNTIME_DIR,
    LABEL_UID,
)
from jupyter_tfenv.errors import DockerUnavailableError, TFEnvError
from jupyter_tfenv.kernels import connection


class KernelContainers:
    """A caller's kernel containers on one engine (the base of DockerBackend)."""

    settings: Any
    strict_mounts: bool
    catalog: Callable[[], TFEnvCatalog] | None
    scope_labels: dict[str, str]
    uid_label: bool
    runtime_dir_of: Callable[[str, Caller, str], str]
    runtime_root: str
    runtime_dir_stale_seconds: float
    max_runtime_dirs: Callable[[], int | None] | int | None
    log_prefix: str
    log: logging.Logger | Any
    _client: Any
    _probing: dict[str, dict[object, int]]
    _host_gpus: tuple[float, int | None] | None
    _gpus: tuple[float, dict[str, Any]] | None
    _lock: Callable[[str], asyncio.Lock]

    # -- the engine ------------------------------------------------------------------------

    async def docker(self) -> Any:
        if self._client is None:
            self._client = await asyncio.to_thread(shared_client, self.settings.docker_timeout)
        return self._client

    def _docker_lost(self, err: Exception) -> BackendError:
        if self._client is not None:
            forget_shared_client(self._client)
            self._client = None
        return BackendError(
            f"The Docker engine stopped answering: {err}. Ask an admin to check it "
            "(`docker info` on the host).",
            status=503,
        )

    async def host_gpus(self) -> int | None:
        """The host's NVIDIA GPU count (NVML), cached for a minute; None when unknown."""
        if self.settings.gpu_devices:
            return len(self.settings.gpu_devices)
        cached = self._host_gpus
        if cached is not None and time.monotonic() - cached[0] < 60:
            return cached[1]
        overview = await asyncio.to_thread(gpu_mod.gpu_overview, None)
        count = len(overview.get("gpus") or []) if overview.get("state") == "ok" else None
        self._host_gpus = (time.monotonic(), count)
        return count

    async def gpu_overview(self, client: Any) -> dict[str, Any]:
        """The host's GPUs and which kernels hold them (NVML), kept for 2 s."""
        cached = self._gpus
        if cached is not None and time.monotonic() - cached[0] < 2.0:
            return cached[1]
        overview = await asyncio.to_thread(gpu_mod.gpu_overview, client)
        self._gpus = (time.monotonic(), overview)
        return overview

    # -- containers by label ---------------------------------------------------------------

    def _filters(self, caller: Caller, kernel_id: str | None = None) -> dict[str, Any]:
        labels = [f"{LABEL_OWNER}={caller.name}"]
        if self.uid_label:
            labels.append(f"{LABEL_UID}={caller.uid}")
        labels += [f"{k}={v}" for k, v in self.scope_labels.items()]
        labels.append(f"{LABEL_KERNEL_ID}={kernel_id}" if kernel_id else LABEL_KERNEL_ID)
        return {"label": labels}

    async def kernel_rows(
        self, caller: Caller, kernel_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The caller's kernel containers (the list API's rows; one Docker call)."""
        client = await self.docker()
        try:
            rows = await asyncio.to_thread(
                client.api.containers, all=True, filters=self._filters(caller, kernel_id)
            )
        except RequestsConnectionError as err:
            raise self._docker_lost(err) from err
        return list(rows)

    @staticmethod
    def _running(row: dict[str, Any]) -> bool:
        return str(row.get("State", "")).lower() in RUNNING_STATES

    @staticmethod
    def _row_gpus(row: dict[str, Any]) -> int:
        try:
            return int((row.get("Labels") or {}).get(LABEL_GPUS, "0"))
        except ValueError:
            return 0

    def probe_gpus(self, caller: Caller) -> list[int]:
        """The GPUs of each probe container running for ``caller`` now."""
        return list(self._probing.get(caller.name, {}).values())

    async def usage(self, caller: Caller, *, exclude: str | None = None) -> Usage:
        rows = await self.kernel_rows(caller)
        return usage_of(
            (
                self._row_gpus(row)
                for row in rows
                if self._running(row) and (row.get("Labels") or {}).get(LABEL_KERNEL_ID) != exclude
            ),
            self.probe_gpus(caller),
        )

    async def container(self, caller: Caller, kernel_id: str) -> Any:
        """The caller's container of ``kernel_id`` (a docker SDK container), or 404."""
        connection.check_kernel_id(kernel_id)
        rows = await self.kernel_rows(caller, kernel_id)
        if not rows:
            raise KernelNotFound(kernel_id)
        rows.sort(key=lambda r: (self._running(r), r.get("Created", 0)), reverse=True)
        client = await self.docker()
        try:
            return await asyncio.to_thread(client.containers.get, rows[0]["Id"])
        except NotFound:
            raise KernelNotFound(kernel_id) from None

    # -- connection folders ------------------------------------------------------------------

    async def prepare_connection(
        self, caller: Caller, kernel_id: str, restart: bool
    ) -> dict[str, Any]:
        connection.check_kernel_id(kernel_id)
        async with self._lock(caller.name):
            await self.sweep_runtime_dirs(caller, keep=connection.runtime_name(kernel_id))
            rundir = await asyncio.to_thread(
                connection.prepare_runtime_dir,
                self.runtime_root,
                caller,
                kernel_id,
                restart=restart,
                max_dirs=(
                    self.max_runtime_dirs()
                    if callable(self.max_runtime_dirs)
                    else self.max_runtime_dirs
                ),
            )
        return {"runtime_dir": rundir}

    async def _drop_runtime_dir(self, caller: Caller, kernel_id: str) -> bool:
        """Remove the kernel's connection folder (where ``runtime_dir_of`` says)."""
        root = await asyncio.to_thread(os.path.abspath, self.runtime_root)
        rundir = self.runtime_dir_of(root, caller, kernel_id)
        if rundir == connection.runtime_dir_for(root, caller.uid, kernel_id):
            return bool(
                await asyncio.to_thread(
                    connection.remove_runtime_dir, self.runtime_root, caller, kernel_id
                )
            )
        exists = await asyncio.to_thread(os.path.lexists, rundir)
        await asyncio.to_thread(shutil.rmtree, rundir, True)
        return bool(exists)

    async def sweep_runtime_dirs(self, caller: Caller, *, keep: str = "") -> list[str]:
        """Remove the caller's runtime folders of kernels that never started (no container
        names them, unchanged for runtime_dir_stale_seconds); the removed folders."""
        stale = await asyncio.to_thread(
            connection.stale_runtime_dirs,
            self.runtime_root,
            caller,
            older_than=self.runtime_dir_stale_seconds,
            keep=[keep] if keep else [],
        )
        if not stale:
            return []
        try:
            rows = await self.kernel_rows(caller)
        except BackendError as err:  # Docker is away: nothing is known to be unused
            self.log.warning("%s: runtime folders not swept: %s", self.log_prefix, err)
            return []
        in_use = [(r.get("Labels") or {}).get(LABEL_RUNTIME_DIR, "") for r in rows]
        removed = await asyncio.to_thread(
            connection.remove_stale_runtime_dirs, self.runtime_root, caller, stale, in_use
        )
        if removed:
            self.log.info(
                "%s: removed %d runtime folder(s) of %s (uid %d) whose kernels never started: %s",
                self.log_prefix,
                len(removed),
                caller.name,
                caller.uid,
                ", ".join(os.path.basename(p) for p in removed),
            )
        return removed

    async def sweep(self) -> None:
        """:meth:`sweep_runtime_dirs` for every uid with a folder under runtime_root."""
        for uid in await asyncio.to_thread(connection.runtime_uids, self.runtime_root):
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            caller = Caller(name=name, uid=uid, gid=uid, home="/")
            async with self._lock(caller.name):
                try:
                    await self.sweep_runtime_dirs(caller)
                except Exception as err:  # a sweep never stops the process
                    self.log.warning(
                        "%s: runtime sweep of uid %d failed: %s", self.log_prefix, uid, err
                    )

    # -- storage and mounts ------------------------------------------------------------------

    def prepare_storage(
        self, client: Any, caller: Caller, env: Environment, image_id: str
    ) -> tuple[list[Any], dict[str, str], dict[str, Any], list[mountcheck.CheckedFolder]]:
        """The caller's checkpoint and log folders (or volumes) for ``env``; blocking."""
        try:
            storage = prepare_kernel_storage(
                client,
                StorageConfig.from_provisioner(self.settings),
                caller.name,
                env,
                uid=caller.uid,
                gid=caller.gid,
                image_id=image_id,
                helper_image=self.settings.checkpoint_helper_image,
            )
        except CheckpointStorageError as err:
            raise BackendError(
                f"The checkpoint storage of '{env.id}' is not usable: {err}",
                status=500,
                reason="checkpoint storage",
            ) from err
        return storage.mounts, storage.environment, storage.info, storage.checked

    async def _verify_mounts(self, container: Any, checked: list[mountcheck.CheckedFolder]) -> None:
        """The container mounted the folders that were checked, or it is removed (403).

        Docker resolves each bind source again when it mounts it; see
        :func:`~jupyter_tfenv.checkpoints.mountcheck.verify_mounts`.
        """
        try:
            await asyncio.to_thread(
                mountcheck.verify_mounts,
                container,
                checked,
                strict=self.strict_mounts,
                log=self.log,
            )
        except mountcheck.MountChangedError as err:
            raise BackendError(err.message, status=403, reason="mount changed") from err

    # -- images ------------------------------------------------------------------------------

    async def image_status(self, envs: list[Environment]) -> dict[str, ImageStatus]:
        index = await self._image_index()
        return {env.id: image_status_of(env, index) for env in envs}

    async def _image_index(self) -> dict[str, dict[str, Any]] | str:
        """``{reference: image row}`` of the engine's images, or the error text."""
        try:
            client = await self.docker()
            rows = await asyncio.to_thread(client.api.images)
        except (DockerUnavailableError, APIError, RequestException) as err:
            return str(err)
        return image_index(rows)

    # -- before a start ----------------------------------------------------------------------

    @staticmethod
    def _resolve_image(client: Any, env: Environment) -> Any:
        try:
            return client.images.get(env.image)
        except ImageNotFound:
            raise image_missing(env) from None
        except APIError as err:
            raise BackendError(explain_api_error(err, env), status=500) from err
        except RequestsConnectionError as err:
            raise BackendError(f"The Docker engine stopped answering: {err}.", status=503) from err

    async def _check_lock(self, client: Any, env: Environment) -> None:
        assert self.catalog is not None  # else the caller checks the lock
        catalog = self.catalog()
        if catalog.lock_policy == "off":
            return
        path = catalog.lock_path()
        strict = catalog.lock_policy == "strict"
        try:
            if path is None:
                if strict:
                    require_lock(env, None)
                return
            lock = await asyncio.to_thread(LockFile.load, path)
            if strict:
                await asyncio.to_thread(require_lock, env, lock)
            await asyncio.to_thread(check_lock, client, env, lock)
        except LockMissingError as err:
            raise BackendError(
                err.message + " (Ask an admin: these commands run on the broker's host.)",
                status=409,
                reason="not locked",
            ) from err
        except LockMismatchError as err:
            if catalog.lock_policy == "warn":
                self.log.warning("%s: starting anyway (lock_policy=warn): %s", self.log_prefix, err)
                return
            raise BackendError(
                err.message + " (Ask an admin: these commands run on the broker's host.)",
                status=409,
                reason="lock mismatch",
            ) from err
        except TFEnvError as err:
            raise BackendError(err.message, status=500, reason="lock file") from err


def kernel_env(
    caller: Caller, passed: dict[str, str], mount: str, home: str | None = None
) -> dict[str, str]:
    """The kernel's variables: ``passed``, with HOME (``home``, else the caller's home
    where the notebook mount holds it, else /tmp), USER and LOGNAME the caller's."""
    env = dict(passed)
    if home is None:
        home = caller.home if inside(caller.home, mount) else "/tmp"  # noqa: S108
    env.update({"HOME": home, "USER": caller.name, "LOGNAME": caller.name})
    return env


def inside(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def stage(
    staged: mountcheck.StagedMounts, folders: list[mountcheck.CheckedFolder]
) -> dict[str, str]:
    """Each checked folder's staging path, by target; blocking (see StagedMounts)."""
    try:
        return {folder.target: staged.stage(folder) for folder in folders}
    except mountcheck.MountChangedError as err:
        raise BackendError(err.message, status=403, reason="mount changed") from err
    except mountcheck.StagingError as err:
        raise BackendError(err.message, status=500, reason="staging mount") from err


def image_index(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{reference: image row}`` of the engine's image list (its tags and digests)."""
    index: dict[str, dict[str, Any]] = {}
    for row in rows:
        for ref in (row.get("RepoTags") or []) + (row.get("RepoDigests") or []):
            index[ref] = row
    return index


def image_status_of(env: Environment, index: dict[str, dict[str, Any]] | str) -> ImageStatus:
    if isinstance(index, str):
        return ImageStatus(present=None, error=index)
    last = env.image.rsplit("/", 1)[-1]
    ref = env.image if (":" in last or "@" in env.image) else f"{env.image}:latest"
    row = index.get(ref) or index.get(f"docker.io/{ref}")
    if row is None:
        return ImageStatus(present=False)
    return ImageStatus(
        present=True,
        image_id=row.get("Id"),
        repo_digests=tuple(row.get("RepoDigests") or ()),
        size=row.get("Size"),
    )


def hinted(devices: tuple[str, ...]) -> list[dict[str, Any]]:
    """A restart's device hint in the shape of a container row (see _run_with_gpus)."""
    return [{"Labels": {gpu_alloc.LABEL_GPU_DEVICES: ",".join(devices)}}] if devices else []


def image_missing(env: Environment) -> BackendError:
    if env.derived is not None:
        return BackendError(
            f"The environment '{env.id}' is not built yet on this host's Docker engine "
            f"(image {env.image}), and kernel starts never build. Ask an admin to run "
            f"`jupyter tfenv build {env.id} --push` (then `jupyter tfenv pull {env.id}`) "
            "on the broker's host.",
            reason="image missing",
        )
    return BackendError(
        f"The image {env.image} of environment '{env.id}' is not on this host's Docker "
        "engine, and kernel starts never pull. Ask an admin to run "
        f"`jupyter tfenv pull {env.id}` on the broker's host.",
        reason="image missing",
    )


def iso(epoch: Any) -> str | None:
    try:
        return datetime.fromtimestamp(float(epoch), timezone.utc).isoformat()
    except (TypeError, ValueError, OverflowError):
        return None
