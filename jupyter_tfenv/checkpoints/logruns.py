"""TensorBoard log runs of one user's environment: listing them, deleting one.

A **run** is a folder directly in the environment's log folder (``TFENV_LOG_DIR``):
``keras.callbacks.TensorBoard(os.path.join(os.environ["TFENV_LOG_DIR"], "run1"))`` makes
the run ``run1`` (with its ``train/`` and ``validation/`` below). Files directly in the
log folder (a writer pointed at ``TFENV_LOG_DIR`` itself) are the run ``.``. A run's
``last_write`` is the newest modification time of anything in it, its ``size`` the sum
of its files, its ``etag`` changes whenever any of its files does.

The folder is read and written with the checkpoint browser's code (the same walk by
descriptor, the same helper container for volumes, the same removal by descriptor): a
request only ever picks a run by its exact name among those a fresh walk found, and a
name that could lead anywhere else (``..``, a ``/``, NUL) is refused with 400.
"""

from __future__ import annotations

from typing import Any

from jupyter_tfenv.checkpoints.browser import CheckpointBrowser, if_match_tags
from jupyter_tfenv.checkpoints.classification import _etag, _File, _iso
from jupyter_tfenv.checkpoints.layout import (
    CheckpointChanged,
    CheckpointNotFound,
    CheckpointPreconditionRequired,
    CheckpointStorageError,
    check_environment_name,
    locate,
)
from jupyter_tfenv.core.paths import CONTAINER_LOG_DIR
from jupyter_tfenv.errors import NotFoundError, TFEnvError

#: The run of the files directly in the log folder.
TOP_RUN = "."


class LogRunNameRefused(TFEnvError):
    """A run name that is not one component of the log folder (it could lead outside)."""

    http_status = 400


class LogsNotFound(NotFoundError):
    """No such environment, or no such run, in the user's log storage."""


class LogsUnsupported(TFEnvError):
    """Where this server cannot read the log folders (the broker's Kubernetes claims)."""

    http_status = 501


def check_run_name(name: str) -> None:
    """Refuse (400) a run name that is not one entry of the log folder, or ``.``."""
    if not name or "\0" in name or "/" in name or "\\" in name or name == ".." or len(name) > 255:
        raise LogRunNameRefused(
            f"{name!r} is not a log run: a run is one folder directly in the environment's "
            "log folder (or '.' for the files at its top); a path that leads anywhere else "
            "is refused. List GET /tfenv/logs/<environment> for the run names."
        )


def group_runs(inv: dict[str, Any]) -> list[dict[str, Any]]:
    """An inventory (:func:`jupyter_tfenv.checkpoints.helper._inventory`) → its runs,
    each with ``name``, ``last_write``, ``size``, ``files``, ``etag`` and ``_remove``
    (what a delete removes: the run's folder, or the top's files)."""
    groups: dict[str, list[_File]] = {}
    for path, kind, size, mtime_ns in inv.get("entries", []):
        top = path.split("/", 1)[0]
        entry = _File(path, kind, int(size), int(mtime_ns))
        if "/" not in path and kind != "d":
            groups.setdefault(TOP_RUN, []).append(entry)
        else:
            groups.setdefault(top, []).append(entry)
    runs = []
    for name, files in sorted(groups.items()):
        runs.append(
            {
                "name": name,
                "last_write": _iso(max(f.mtime_ns for f in files)),
                "size": sum(f.size for f in files if f.kind == "f"),
                "files": sum(1 for f in files if f.kind == "f"),
                "etag": _etag(files),
                "_remove": [f.path for f in files if "/" not in f.path],
            }
        )
    return runs


def _public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if not k.startswith("_")}


class LogRuns:
    """The log runs of the checkpoint browser's user (the server's kernel owner)."""

    def __init__(self, browser: CheckpointBrowser) -> None:
        self.browser = browser

    async def _walk(self, env: str) -> tuple[dict[str, Any], dict[str, Any]]:
        browser = self.browser
        if not browser.enabled:
            raise LogsNotFound(
                "Log storage is off (c.TFEnvKernelProvisioner.checkpoint_storage = 'off'): "
                "kernels keep no TensorBoard logs here."
            )
        if await browser.remote() is not None:
            raise LogsUnsupported(
                "Log runs of Kubernetes kernels are in the broker's log claims, which this "
                "server cannot list yet: open TensorBoard, or list the claim with kubectl."
            )
        missing = LogsNotFound(
            f"No log folder of environment {env!r} in your log storage: start a kernel of it "
            "(its TFENV_LOG_DIR is made then); GET /tfenv/checkpoints lists your environments."
        )
        try:
            check_environment_name(env)
            locate(browser.config, "logs", browser.owner, env)
        except (CheckpointNotFound, CheckpointStorageError):
            raise missing from None
        scanned = await browser._scan([env], kind="logs")
        loc, inv = scanned[env]
        if env not in browser._catalog_ids() and not inv.get("exists"):
            raise missing
        view = {
            "environment": env,
            "exists": bool(inv.get("exists")),
            "location": loc.describe(),
            "container_path": CONTAINER_LOG_DIR,
            "truncated": bool(inv.get("truncated")),
        }
        return view, inv

    async def list(self, env: str) -> dict[str, Any]:
        """``{environment, exists, location, container_path, truncated, runs: [...]}``."""
        view, inv = await self._walk(env)
        return {**view, "runs": [_public(r) for r in group_runs(inv)]}

    async def delete(self, env: str, name: str, if_match: str | None) -> dict[str, Any]:
        """Delete one run, confirmed by its ETag as listed (``If-Match``): 428 without
        it, 412 when the run changed since (a kernel still writing to it)."""
        check_run_name(name)
        view, inv = await self._walk(env)
        run = next((r for r in group_runs(inv) if r["name"] == name), None)
        if run is None:
            raise LogsNotFound(
                f"No run {name!r} in the log folder of {env!r} (deleted already?): list "
                f"GET /tfenv/logs/{env} again."
            )
        tags = if_match_tags(if_match)
        if not tags:
            raise CheckpointPreconditionRequired(
                "Deleting a log run needs its ETag from the listing in an If-Match header: "
                "that is the confirmation that this run, as listed, is what to delete."
            )
        if run["etag"] not in tags:
            raise CheckpointChanged(
                f"The run {name!r} changed since it was listed (a kernel may still write to "
                "it); list it again and confirm the new state."
            )
        loc = locate(self.browser.config, "logs", self.browser.owner, env)
        result = await self.browser.remove_all(loc, list(run["_remove"]), f"the run {name!r}")
        return {
            "environment": view["environment"],
            "deleted": _public(run),
            "removed": sorted(result["removed"]),
        }
