"""``/tfenv/environments``: the catalog, image status, probes and pulls per environment."""

from __future__ import annotations

import asyncio
from typing import Any

from docker.errors import ImageNotFound
from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_tfenv.backends.docker.builder import NO_LOCK_FILE, build_environment
from jupyter_tfenv.backends.docker.compat_gate import summary
from jupyter_tfenv.catalog.lock import LockFile
from jupyter_tfenv.errors import BackendError
from jupyter_tfenv.server.handlers.base import TFEnvHandler


class EnvironmentsHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        state = self.tfenv
        catalog = state.catalog
        envs = catalog.all()
        images = await state.image_presence(envs)
        verdicts = await state.compatibility(envs, images)
        reply = {
            "environments": [
                {
                    **env.summary(),
                    "image_status": images.get(env.id),
                    "compatibility": summary(verdicts[env.id]),
                }
                for env in envs
            ],
            "problems": [p.to_dict() for p in catalog.problems()],
            "pulls": state.pull_capability(),
            # The engine's live-restore, for the panel's admin line (issue 24); cached.
            "engine": await state.engine(),
        }
        if state.files is not None:
            reply["files"] = state.files
        self.write_json(reply)


class EnvironmentHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, env_id: str) -> None:
        state = self.tfenv
        env = state.catalog.get(env_id)
        images = await state.image_presence([env])
        probe = await state.cached_probe(env)
        verdict = (await state.compatibility([env], images))[env.id]
        self.write_json(
            {
                **env.summary(),
                "image_status": images.get(env.id),
                "probe": probe,
                "compatibility": {**summary(verdict), "details": verdict.details},
            }
        )


class ImageHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, env_id: str) -> None:
        state = self.tfenv
        self.write_json(await state.image_status(state.catalog.get(env_id)))


class ProbeHandler(TFEnvHandler):
    @web.authenticated
    @authorized
    async def get(self, env_id: str) -> None:
        """The cached probe; never starts a container."""
        state = self.tfenv
        env = state.catalog.get(env_id)
        cached = await state.cached_probe(env)
        if cached is None:
            self.write_json({"state": "not_probed", "environment": env.id})
            return
        self.write_json({"state": "ok", **cached})

    @web.authenticated
    @authorized(action="execute")
    async def post(self, env_id: str) -> None:
        """Probe now (a throwaway container), or return the cache unless ``?refresh=1``."""
        state = self.tfenv
        env = state.catalog.get(env_id)
        raw = self.get_query_argument("refresh", "0").lower()
        if raw not in ("0", "1", "true", "false", "yes", "no"):
            raise web.HTTPError(400, "refresh must be 1 or 0 (true or false)")
        refresh = raw in ("1", "true", "yes")
        result = await state.probe(env, refresh=refresh)
        self.write_json({"state": "ok", **result})


class PullHandler(TFEnvHandler):
    @web.authenticated
    @authorized(action="write")
    async def post(self, env_id: str) -> None:
        """Start pulling the environment's image; follow it at /tfenv/pulls/<id>/events."""
        state = self.tfenv
        pull = await state.start_pull(state.catalog.get(env_id))
        self.set_header("Location", self.base_url.rstrip("/") + f"/tfenv/pulls/{pull.id}")
        self.write_json(pull.to_dict(), status=202)


class BuildHandler(TFEnvHandler):
    @web.authenticated
    @authorized(action="write")
    async def post(self, env_id: str) -> None:
        """Start building a derived environment on this server's engine, as `jupyter tfenv
        build` does (docs/building.md); follow it at /tfenv/builds/<id>(/events). A build
        of the same image already running is answered instead of a second one."""
        state = self.tfenv
        env = state.catalog.get(env_id)
        if env.derived is None:
            raise BackendError(
                f"'{env.id}' is not a derived environment (no base and pip): nothing to "
                "build; pull it instead.",
                status=400,
                reason="not derived",
            )
        if not state.pull_capability().get("allowed"):
            raise BackendError(
                f"In this JupyterHub, environments are built by an admin: ask them to run "
                f"`jupyter tfenv build {env.id} --push` and pull it on the host.",
                status=403,
                reason="BrokerMode",
            )
        client = await state.docker()
        jobs = state.builds
        job = jobs.active(env.image)
        if job is None:
            await asyncio.to_thread(_can_start, client, env, state.lock_path)
            lock_path = state.lock_path

            def work(progress: Any) -> dict[str, Any]:
                lock = LockFile.load(lock_path)
                result = build_environment(client, env, lock=lock, progress=progress)
                lock.save()
                return result.to_dict()

            job = jobs.start(env.id, env.image, work)
        self.set_header("Location", self.base_url.rstrip("/") + f"/tfenv/builds/{job.id}")
        self.write_json(job.to_dict(), status=202)


def _can_start(client: Any, env: Any, lock_path: Any) -> None:
    """Refuse (409) a build that cannot start: no lock file to record it in, or a base that
    is not on the engine (checked again by the build itself)."""
    if lock_path is None:
        raise BackendError(NO_LOCK_FILE, status=409, reason="no lock file")
    derived = env.derived
    try:
        client.images.get(derived.base_image)
    except ImageNotFound:
        how = (
            f"`jupyter tfenv build {env.id}` on the host builds the chain, base first"
            if derived.parent
            else f"pull it first (`jupyter tfenv pull {derived.base}`, or Pull in this panel)"
        )
        raise BackendError(
            f"The base image {derived.base_image} of '{env.id}' is not on this server's "
            f"Docker engine: {how}.",
            status=409,
            reason="base not present",
        ) from None


routes = [
    (r"/tfenv/environments", EnvironmentsHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)", EnvironmentHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)/image", ImageHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)/probe", ProbeHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)/pull", PullHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)/build", BuildHandler),
]
