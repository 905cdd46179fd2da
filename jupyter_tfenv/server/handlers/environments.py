"""``/tfenv/environments``: the catalog, image status, probes and pulls per environment."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from jupyter_tfenv.backends.docker.builder import build_and_record
from jupyter_tfenv.backends.docker.compat_gate import summary
from jupyter_tfenv.errors import BackendError
from jupyter_tfenv.server.handlers.base import TFEnvHandler

#: Builds in progress, by image: a second request for the same image waits for the first.
_BUILDS: dict[str, asyncio.Future[Any]] = {}


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
        """Build a derived environment on this server's engine, as `jupyter tfenv build`
        does (docs/building.md); answers when it is built, with what was built."""
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
        running = _BUILDS.get(env.image)
        if running is None or running.done():
            running = asyncio.ensure_future(
                asyncio.to_thread(build_and_record, client, env, state.lock_path)
            )
            _BUILDS[env.image] = running
        self.write_json(await asyncio.shield(running))


routes = [
    (r"/tfenv/environments", EnvironmentsHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)", EnvironmentHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)/image", ImageHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)/probe", ProbeHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)/pull", PullHandler),
    (r"/tfenv/environments/(?P<env_id>[^/]+)/build", BuildHandler),
]
