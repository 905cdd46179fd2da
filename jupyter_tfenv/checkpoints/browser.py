"""Browsing one user's checkpoints: discovery and the browser the REST API uses.

Browsing never follows a symlink and never opens a path a request names: the folder is
walked (:func:`jupyter_tfenv.checkpoints.helper._inventory`), its files are grouped into
checkpoints (:func:`jupyter_tfenv.checkpoints.classification.classify`), and a request
can only pick one of those by its exact name. Anything else is a
:class:`CheckpointNotFound` with one fixed message, so that a refused path and a missing
one look the same. The user is the server's kernel owner, never a request field.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from jupyter_tfenv.checkpoints.classification import classify, public_item
from jupyter_tfenv.checkpoints.helper import _delete, _inventory, run_helper
from jupyter_tfenv.checkpoints.layout import (
    CheckpointChanged,
    CheckpointNotFound,
    CheckpointPreconditionRequired,
    CheckpointStorageError,
    Location,
    StorageConfig,
    check_environment_name,
    check_item_name,
    is_inside,
    locate,
    unescape_path_component,
)
from jupyter_tfenv.core.labels import (
    LABEL_OWNER,
    LABEL_STORAGE_ENV,
    LABEL_STORAGE_KIND,
)
from jupyter_tfenv.core.paths import (
    CONTAINER_CHECKPOINT_DIR,
    CONTAINER_LOG_DIR,
)

# -- reading a bind location (blocking) ---------------------------------------------------


def bind_folder(loc: Location) -> str | None:
    """The location's folder when it exists as a real folder inside the user's storage.

    None when it is missing, or reached through a symlink anywhere below the root (or is
    one): such a folder could be anywhere, so it is treated as absent.
    """
    assert loc.host_path is not None and loc.user_dir is not None
    path = loc.host_path
    real = os.path.realpath(path)
    if real != os.path.normpath(path) or not is_inside(real, loc.user_dir):
        return None
    return real if os.path.isdir(real) else None


def scan_bind(loc: Location) -> dict[str, Any]:
    folder = bind_folder(loc)
    if folder is None:
        return {"exists": False, "entries": [], "state": {}, "checks": {}, "truncated": False}
    return dict(_inventory(folder))


def discover_bind(config: StorageConfig, username: str) -> list[str]:
    """Environments with a checkpoint folder of this user (real folders, canonical names)."""
    loc = locate(config, "checkpoints", username, "x")
    assert loc.user_dir is not None and loc.base is not None
    user_dir = loc.user_dir
    real = os.path.realpath(user_dir)
    if real != os.path.normpath(user_dir) or not os.path.isdir(real):
        return []
    found = []
    try:
        with os.scandir(real) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    name = unescape_path_component(entry.name)
                    if name is not None:
                        found.append(name)
    except OSError:
        return []
    return sorted(found)


def discover_volumes(client: Any, config: StorageConfig, username: str) -> list[str]:
    """Environments with a checkpoint volume of this user: volumes labelled with the user
    and kind whose name is what the template gives for their environment label."""
    volumes = client.volumes.list(
        filters={"label": [f"{LABEL_OWNER}={username}", f"{LABEL_STORAGE_KIND}=checkpoints"]},
    )
    names = []
    for volume in volumes:
        env = (volume.attrs.get("Labels") or {}).get(LABEL_STORAGE_ENV)
        # Only a volume whose name is what the template gives for that label counts.
        if env and locate(config, "checkpoints", username, env).volume == volume.name:
            names.append(env)
    return sorted(names)


def if_match_tags(header: str | None) -> list[str]:
    """The ETags an ``If-Match`` header names (quotes and ``W/`` dropped); ``*`` stays
    ``*``, which matches no item: it would confirm nothing."""
    tags = [t.strip().removeprefix("W/").strip('"') for t in (header or "").split(",")]
    return [t for t in tags if t]


# -- the browser the REST API uses ----------------------------------------------------------


class RemoteCheckpoints(Protocol):
    """Checkpoints kept where this server cannot read them (the broker's Kubernetes
    claims): listed and deleted by the broker."""

    async def inventories(self, envs: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """``{env: ("namespace/claim", inventory)}``, as :func:`_inventory` makes them."""
        ...

    async def delete(self, env: str, paths: list[str]) -> dict[str, Any]:
        """``{"removed": [...], "failed": [[path, why], ...]}`` as :func:`_delete`."""
        ...


class CheckpointBrowser:
    """List and delete one user's checkpoints; the user is fixed when it is built.

    ``owner`` is the kernel owner of this server (the same name its kernels' folders are
    made for), never anything a request says. ``helper_images`` returns, per environment
    id, ``(image, python)`` of a local image that can run the volume helper.
    """

    def __init__(
        self,
        config: StorageConfig,
        *,
        owner: str,
        uid: int,
        gid: int,
        catalog_ids: Callable[[], list[str]],
        helper_images: Callable[[], Awaitable[dict[str, tuple[str, str]]]],
        docker: Callable[[], Awaitable[Any]],
        remote: Callable[[], Awaitable[RemoteCheckpoints | None]] | None = None,
    ) -> None:
        self.config = config
        self._remote = remote
        self.owner = owner
        self.uid = uid
        self.gid = gid
        self._catalog_ids = catalog_ids
        self._helper_images = helper_images
        self._docker = docker
        self._reads: dict[tuple[str, ...], asyncio.Future[list[dict[str, Any]]]] = {}

    @property
    def enabled(self) -> bool:
        return self.config.mode != "off"

    def summary(self) -> dict[str, Any]:
        return {"user": self.owner, **self.config.summary()}

    # -- which environments ------------------------------------------------------------

    async def environment_names(self) -> list[str]:
        names = set(self._catalog_ids())
        if await self.remote() is not None:
            return sorted(names)  # the broker's claims: one per catalog environment
        if self.config.mode == "bind":
            names.update(await asyncio.to_thread(discover_bind, self.config, self.owner))
        elif self.config.mode == "volume":
            names.update(await self._discover_volumes())
        return sorted(names)

    async def _discover_volumes(self) -> list[str]:
        client = await self._docker()
        return await asyncio.to_thread(discover_volumes, client, self.config, self.owner)

    # -- reading -----------------------------------------------------------------------

    async def remote(self) -> RemoteCheckpoints | None:
        return await self._remote() if self._remote is not None else None

    async def _scan(
        self, envs: list[str], kind: str = "checkpoints"
    ) -> dict[str, tuple[Location, dict[str, Any]]]:
        """Each environment's folder (or volume) of ``kind`` walked: ``{env: (location,
        inventory)}``. The broker's claims hold checkpoints only (the caller refuses
        ``logs`` there: :mod:`jupyter_tfenv.checkpoints.logruns`)."""
        remote = await self.remote()
        if remote is not None and kind == "checkpoints":
            got = await remote.inventories(envs)
            empty: dict[str, Any] = {"exists": False, "entries": [], "state": {}, "checks": {}}
            return {
                env: (
                    self._claim_location(env, got[env][0] if env in got else "", "checkpoints"),
                    got[env][1] if env in got else empty,
                )
                for env in envs
            }
        locs = {env: locate(self.config, kind, self.owner, env) for env in envs}
        if self.config.mode == "bind":
            results = await asyncio.gather(
                *(asyncio.to_thread(scan_bind, loc) for loc in locs.values())
            )
            return {env: (locs[env], inv) for env, inv in zip(locs, results, strict=True)}
        return await self._scan_volumes(locs)

    async def _scan_volumes(
        self, locs: dict[str, Location]
    ) -> dict[str, tuple[Location, dict[str, Any]]]:
        client = await self._docker()
        existing = {
            v.name for v in await asyncio.to_thread(client.volumes.list) if v.name is not None
        }
        out: dict[str, tuple[Location, dict[str, Any]]] = {}
        present = {}
        for env, loc in locs.items():
            if loc.volume in existing:
                present[env] = loc
            else:
                out[env] = (loc, {"exists": False, "entries": [], "state": {}, "checks": {}})
        if present:
            names = tuple(str(loc.volume) for loc in present.values())
            # Each read costs a container start: requests for the same volumes that come
            # in while one runs share its result; nothing is kept once it is done.
            running = self._reads.get(names)
            if running is None:
                running = asyncio.ensure_future(self._read_volumes(client, names, list(present)))
                self._reads[names] = running
                running.add_done_callback(lambda _: self._reads.pop(names, None))
            results = await asyncio.shield(running)
            for (env, loc), inv in zip(present.items(), results, strict=True):
                out[env] = (loc, inv)
        return out

    async def _read_volumes(
        self, client: Any, names: tuple[str, ...], envs: list[str]
    ) -> list[dict[str, Any]]:
        image, python = await self._helper_for(envs)
        return list(
            await asyncio.to_thread(
                run_helper,
                client,
                image=image,
                python=python,
                volumes=list(names),
                call="_inventory",
                args={"roots": [f"/v/{i}" for i in range(len(names))]},
                user=f"{self.uid}:{self.gid}",
                read_only=True,
                owner=self.owner,
            )
        )

    async def _helper_for(self, envs: list[str]) -> tuple[str, str]:
        if self.config.helper_image:
            return self.config.helper_image, "python3"
        images = await self._helper_images()
        for env in envs:
            if env in images:
                return images[env]
        if images:
            return next(iter(images.values()))
        raise CheckpointStorageError(
            "Reading checkpoint volumes needs a local image with Python: pull an "
            "environment's image, or set c.DockerKernelProvisioner.checkpoint_helper_image."
        )

    def _claim_location(self, env: str, claim: str, kind: str) -> Location:
        path = CONTAINER_CHECKPOINT_DIR if kind == "checkpoints" else CONTAINER_LOG_DIR
        return Location(kind, self.owner, env, path, claim=claim)

    def _environment_view(
        self, env: str, loc: Location, inv: dict[str, Any], in_catalog: bool
    ) -> dict[str, Any]:
        host_root = loc.host_path
        items = classify(inv, host_root=host_root) if inv.get("exists") else []
        if loc.claim is not None:
            logs = self._claim_location(env, loc.claim, "logs").describe()
        else:
            logs = locate(self.config, "logs", self.owner, env).describe()
        return {
            "environment": env,
            "in_catalog": in_catalog,
            "exists": bool(inv.get("exists")),
            "location": loc.describe(),
            "container_path": loc.container_path,
            "log_location": logs,
            "log_container_path": CONTAINER_LOG_DIR,
            "truncated": bool(inv.get("truncated")),
            "checkpoints": items,
        }

    async def overview(self) -> dict[str, Any]:
        """Every environment of the user: the catalog's, and any with a folder or volume."""
        if not self.enabled:
            return {"storage": self.summary(), "environments": []}
        envs = await self.environment_names()
        catalog = set(self._catalog_ids())
        scanned = await self._scan(envs)
        views = []
        for env in envs:
            loc, inv = scanned[env]
            view = self._environment_view(env, loc, inv, env in catalog)
            view["checkpoints"] = [public_item(i) for i in view["checkpoints"]]
            views.append(view)
        storage = self.summary()
        if await self.remote() is not None:
            storage = {
                "user": self.owner,
                "mode": "kubernetes",
                "container_paths": storage["container_paths"],
                "variables": storage["variables"],
            }
        return {"storage": storage, "environments": views}

    async def _environment(self, env: str) -> dict[str, Any]:
        if not self.enabled:
            raise CheckpointNotFound()
        check_environment_name(env)
        try:
            locate(self.config, "checkpoints", self.owner, env)
        except CheckpointStorageError:
            raise CheckpointNotFound() from None
        in_catalog = env in self._catalog_ids()
        scanned = await self._scan([env])
        loc, inv = scanned[env]
        if not in_catalog and not inv.get("exists"):
            raise CheckpointNotFound()
        return self._environment_view(env, loc, inv, in_catalog)

    async def environment(self, env: str) -> dict[str, Any]:
        view = await self._environment(env)
        view["checkpoints"] = [public_item(i) for i in view["checkpoints"]]
        return view

    async def _item(self, env: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        check_item_name(name)
        view = await self._environment(env)
        for item in view["checkpoints"]:
            if item["name"] == name:
                return view, item
        raise CheckpointNotFound()

    async def item(self, env: str, name: str) -> dict[str, Any]:
        _, item = await self._item(env, name)
        return public_item(item, detail=True)

    async def delete(self, env: str, name: str, if_match: str | None) -> dict[str, Any]:
        """Delete one checkpoint (a whole set, with its leftovers), confirmed by its ETag.

        ``if_match`` is the ``If-Match`` header: the item's ETag as listed. None → 428,
        another value → 412 (it changed since the user looked at it).
        """
        view, item = await self._item(env, name)
        tags = if_match_tags(if_match)
        if not tags:
            raise CheckpointPreconditionRequired(
                "Deleting a checkpoint needs its ETag from the listing in an If-Match header: "
                "that is the confirmation that this, as listed, is what to delete."
            )
        if item["etag"] not in tags:
            raise CheckpointChanged(
                f"The checkpoint '{name}' changed since it was listed (a save may be running); "
                "list it again and confirm the new state."
            )
        loc = locate(self.config, "checkpoints", self.owner, env)
        result = await self.remove_all(loc, list(item["_remove"]), f"'{name}'")
        return {
            "environment": view["environment"],
            "deleted": public_item(item),
            "removed": sorted(result["removed"]),
        }

    async def remove_paths(self, loc: Location, remove: list[str]) -> dict[str, Any]:
        """Remove ``remove`` (paths relative to ``loc``'s folder, files or folders) by
        descriptor, where the location lives: the broker's claim, a volume (the helper
        container) or a bind folder. ``{"removed": [...], "failed": [[path, why], ...]}``.

        The paths come from a fresh walk of that folder, never from a request.
        """
        remote = await self.remote()
        if remote is not None and loc.kind == "checkpoints":
            return await remote.delete(loc.environment, remove)
        if loc.is_volume:
            client = await self._docker()
            image, python = await self._helper_for([loc.environment])
            return dict(
                await asyncio.to_thread(
                    run_helper,
                    client,
                    image=image,
                    python=python,
                    volumes=[str(loc.volume)],
                    call="_delete",
                    args={"root": "/v/0", "paths": remove},
                    user=f"{self.uid}:{self.gid}",
                    read_only=False,
                    owner=self.owner,
                )
            )
        folder = await asyncio.to_thread(bind_folder, loc)
        if folder is None:
            raise CheckpointNotFound()
        return dict(await asyncio.to_thread(_delete, folder, remove))

    async def remove_all(self, loc: Location, remove: list[str], what: str) -> dict[str, Any]:
        """:meth:`remove_paths`, and :class:`CheckpointStorageError` naming ``what`` (e.g.
        ``'the run 'r1''``) and the first paths that could not be removed."""
        result = await self.remove_paths(loc, remove)
        if result["failed"]:
            raise CheckpointStorageError(
                f"Could not delete every file of {what}: "
                + ", ".join(f"{p} ({why})" for p, why in result["failed"][:5])
            )
        return result
