"""The tfenv broker: a JupyterHub service that starts kernels for hub users through one
KernelBackend (hardened containers on the host's Docker engine, or Kubernetes pods; see
docs/broker.md). Policy is here: who the caller is, environments, folders, quotas, locks.

Run it hub-managed (``c.JupyterHub.services`` with a ``command``: the hub passes
``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_SERVICE_NAME``,
``JUPYTERHUB_API_URL``) or external (``--ip``/``--port`` and the same variables)::

    python -m jupyter_tfenv.broker --config /etc/tfenv/broker_config.py
    jupyter tfenv broker --TFEnvBroker.max_kernels_per_user=2

The broker keeps no state of its own: kernels are found by their labels, so a restarted
broker controls the kernels its predecessor started, and never removes them when it starts.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Dict, Enum, Float, Integer, List, Type, Unicode, default, validate
from traitlets.config import Application

from jupyter_tfenv.backends.base import Admit, KernelBackend, KernelStart
from jupyter_tfenv.backends.settings import CheckpointStorageSettings, KernelContainerSettings
from jupyter_tfenv.broker import deaths, policy
from jupyter_tfenv.broker.auth import TokenLookups
from jupyter_tfenv.broker.backends import make_backend
from jupyter_tfenv.broker.kubernetes_settings import KubernetesBrokerSettings
from jupyter_tfenv.broker.policy import BrokerError
from jupyter_tfenv.broker.sweep import KeptKernelSettings, start_sweeps
from jupyter_tfenv.broker.tensorboards import BrokerTensorBoardSettings
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.checkpoints import mountcheck
from jupyter_tfenv.checkpoints.layout import StorageConfig
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.version import __version__
from jupyter_tfenv.errors import UnknownEnvironmentError

DEFAULT_PORT = 10101


def _service_url() -> Any:
    return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))


class TFEnvBroker(
    KernelContainerSettings,
    CheckpointStorageSettings,
    KubernetesBrokerSettings,
    KeptKernelSettings,
    BrokerTensorBoardSettings,
    Application,
):
    """The tfenv broker (JupyterHub service): starts kernel containers for hub users."""

    name = "tfenv-broker"
    description = __doc__
    version = __version__

    aliases = {
        "ip": "TFEnvBroker.ip",
        "port": "TFEnvBroker.port",
        "config": "TFEnvBroker.config_file",
        "log-level": "Application.log_level",
    }

    classes = [TFEnvCatalog]

    config_file = Unicode(
        "", help="A traitlets Python config file (c.TFEnvBroker…, c.TFEnvCatalog…)."
    ).tag(config=True)

    # -- where it listens and who it is --------------------------------------------------

    ip = Unicode(
        help="Address to listen on. Default: the host of $JUPYTERHUB_SERVICE_URL, else 127.0.0.1.",
    ).tag(config=True)

    @default("ip")
    def _default_ip(self) -> str:
        return _service_url().hostname or "127.0.0.1"

    port = Integer(
        help=f"Port to listen on. Default: the port of $JUPYTERHUB_SERVICE_URL, else "
        f"{DEFAULT_PORT}.",
    ).tag(config=True)

    @default("port")
    def _default_port(self) -> int:
        return _service_url().port or DEFAULT_PORT

    service_name = Unicode(
        help="The broker's JupyterHub service name. Default: $JUPYTERHUB_SERVICE_NAME, else "
        "'tfenv-broker'. Kernel containers carry it in the org.jupyter.tfenv.broker label.",
    ).tag(config=True)

    @default("service_name")
    def _default_service_name(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME") or "tfenv-broker"

    broker_id = Unicode(
        help="""This broker's id, the value of the org.jupyter.tfenv.broker label of its
        containers: it lists, counts, signals and removes only containers with its own id.
        Give every broker that shares a Docker engine (several hubs on one host) its own
        id; keep it when the broker restarts or moves, or it loses track of its running
        kernels. Default: the service name.""",
    ).tag(config=True)

    @default("broker_id")
    def _default_broker_id(self) -> str:
        return self.service_name

    service_prefix = Unicode(
        help="""URL prefix the hub's proxy routes to the broker ($JUPYTERHUB_SERVICE_PREFIX,
        e.g. /services/tfenv-broker/). The API answers both under it and at /api/…, so
        clients may call the broker through the proxy or directly.""",
    ).tag(config=True)

    @default("service_prefix")
    def _default_service_prefix(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/"

    access_scopes = List(
        Unicode(),
        help="""Scopes a caller's token must carry (any one of them). Default:
        access:services!service=<service_name>.""",
    ).tag(config=True)

    @default("access_scopes")
    def _default_access_scopes(self) -> list[str]:
        return [f"access:services!service={self.service_name}"]

    hub_api_url = Unicode(
        help="The hub's API URL (default: $JUPYTERHUB_API_URL, as HubAuth reads it)."
    ).tag(config=True)

    @default("hub_api_url")
    def _default_hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "")

    token_cache_seconds = Float(
        5.0,
        min=0.0,
        help="""Seconds the broker keeps the hub's answer about a token (whose it is, its
        scopes and the user's hub groups), for successful and failed lookups alike. A token
        revoked at the hub, or a user removed from a group, keeps access at most this long;
        0 asks the hub on every request. Replaces c.HubAuth.cache_max_age for the broker
        (which is set to the same value).""",
    ).tag(config=True)

    token_cache_size = Integer(
        4096,
        min=1,
        help="""How many tokens' answers the broker remembers at most (least recently used
        dropped first): random tokens cannot grow its memory.""",
    ).tag(config=True)

    max_body_size = Integer(
        64 * 1024,
        min=1024,
        help="""Largest request body in bytes (the API's bodies are a few hundred bytes);
        a larger one is refused with 413 before it is read. Requests without a token are
        refused when their headers arrive, before any body is read.""",
    ).tag(config=True)

    # -- policy ------------------------------------------------------------------------

    min_uid = Integer(
        policy.DEFAULT_MIN_UID,
        min=0,
        help="""The lowest uid the broker serves. A hub user whose Unix account has a lower
        uid (system accounts: daemon, postgres, nobody's kind) is refused (403) before any
        folder is made for it. uid 0 (root) and 65534 (nobody), and those primary gids,
        are always refused, even with min_uid 0. Lower it only on hosts whose user accounts
        start below 1000 (see UID_MIN in /etc/login.defs).""",
    ).tag(config=True)

    runtime_root = Unicode(
        "/run/tfenv-broker",
        help="""Folder of the kernels' runtime folders: {runtime_root}/{uid}/{kernel id}
        (root-owned 0711 above the kernel's own 0700 folder). Keep it short: Unix socket
        paths are limited to 107 bytes, and a kernel's folder name has up to 36.""",
    ).tag(config=True)

    max_runtime_dirs_per_user = Integer(
        None,
        allow_none=True,
        help="""Runtime folders a user may have at once (each POST .../runtime makes one);
        the one beyond is refused (429). Default: twice max_kernels_per_user (at least 4),
        or 32 when kernels are unlimited. Negative: unlimited.""",
    ).tag(config=True)

    @validate("max_runtime_dirs_per_user")
    def _valid_max_runtime_dirs(self, proposal: Any) -> int | None:
        value = proposal["value"]
        return None if value is None or value < 0 else int(value)

    runtime_dir_stale_seconds = Float(
        300.0,
        min=1.0,
        help="""A runtime folder that no container of its user names and that has not
        changed for this long (a kernel that never started) is removed, at the user's next
        runtime request and by a sweep every this many seconds.""",
    ).tag(config=True)

    allowed_mount_roots = List(
        Unicode(),
        default_value=["{home}"],
        help="""Folders under which a user's notebook folder may be mounted into their
        kernels ('{home}' is the user's home folder, '{username}' their name), e.g.
        ["{home}", "/data/projects/{username}"]. The folder must also belong to the user.""",
    ).tag(config=True)

    env_allowlist = List(
        Unicode(),
        default_value=["LANG", "LC_ALL", "LC_CTYPE", "TZ", "JPY_SESSION_NAME"],
        help="""Environment variables a client may pass to its kernel; any other name is
        refused (400). JUPYTERHUB_* and tokens never reach a kernel.""",
    ).tag(config=True)

    max_kernels_per_user = Integer(
        4,
        allow_none=True,
        help="""Running tfenv kernels per user; the one beyond is refused (429). 0 allows
        none; None or a negative number means unlimited.""",
    ).tag(config=True)

    max_gpus_per_user = Integer(
        None,
        allow_none=True,
        help="""GPUs a user's running tfenv kernels may hold together (an environment with
        gpus: all counts as every GPU of the host). None or negative: unlimited.""",
    ).tag(config=True)

    environment_groups = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        help="""Environments restricted to groups: {env id: [group names]}. A user may use
        such an environment only as a member of one of its groups (Unix groups, and hub
        groups when the hub reports them). Environments not named here are open to all.""",
    ).tag(config=True)

    probe_cache_dir = Unicode(
        "/var/cache/tfenv-broker/probes",
        help="Folder of cached environment probes (by image id; shared by all users).",
    ).tag(config=True)

    probe_timeout = Float(180.0, help="Seconds one environment probe may take.").tag(config=True)

    # -- the Kubernetes backend (docs/kubernetes.md) --------------------------------------

    backend = Enum(
        ["docker", "kubernetes"],
        default_value="docker",
        help="""Where kernels run: 'docker' (containers on this host's engine) or
        'kubernetes' (pods in kubernetes_namespace, through the Kubernetes API; the
        broker then needs the [kubernetes] extra and a ServiceAccount, docs/kubernetes.md).
        The shorthand of backend_class.""",
    ).tag(config=True)

    backend_class = Type(
        default_value=None,
        klass=KernelBackend,
        allow_none=True,
        help="""The KernelBackend class kernels run through (a subclass of DockerBackend or
        KubernetesBackend, built from this broker's traits). Default: the one `backend`
        names.""",
    ).tag(config=True)

    # -- checkpoint storage (the same names as TFEnvKernelProvisioner's) -----------------

    @default("checkpoint_root")
    def _default_checkpoint_root(self) -> str:
        return os.environ.get("JUPYTER_TFENV_CHECKPOINT_ROOT") or "/srv/tfenv/checkpoints"

    @default("log_root")
    def _default_log_root(self) -> str:
        return os.environ.get("JUPYTER_TFENV_LOG_ROOT") or "/srv/tfenv/logs"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.catalog: TFEnvCatalog | None = None
        self.hub_auth: Any = None
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._backend: KernelBackend | None = None
        self._tokens: TokenLookups | None = None

    @property
    def kernel_backend(self) -> KernelBackend:
        """Where kernels run: one :class:`KernelBackend`, built once from this broker's
        traits (``backend_class``, else the one ``backend`` names)."""
        if self._backend is None:
            self._backend = make_backend(self)
        return self._backend

    @default("log_level")
    def _default_log_level(self) -> int:
        return logging.INFO

    @default("log_format")
    def _default_log_format(self) -> str:
        return "[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s] %(message)s"

    @default("log_datefmt")
    def _default_log_datefmt(self) -> str:
        return "%Y-%m-%d %H:%M:%S"

    def initialize(self, argv: list[str] | None = None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            path = Path(self.config_file).expanduser().resolve()
            if not path.is_file():
                raise SystemExit(f"tfenv-broker: no config file {path}")
            self.load_config_file(path.name, path=str(path.parent))
            # The command line wins over the config file.
            self.update_config(self.cli_config)
        self.init_catalog()
        self.init_auth()

    def init_catalog(self) -> None:
        self.catalog = TFEnvCatalog(parent=self)
        self.catalog.refresh()

    def init_auth(self) -> None:
        from jupyterhub.services.auth import HubAuth  # noqa: PLC0415 - only the service needs it

        kwargs: dict[str, Any] = {"parent": self}
        if self.hub_api_url:
            kwargs["api_url"] = self.hub_api_url
        # HubAuth's 5 minutes would let a revoked token, or a user removed from a group,
        # keep access that long. The broker's own cache (TokenLookups) answers instead;
        # HubAuth's is kept to the same window (0 there means forever: 1 s).
        kwargs["cache_max_age"] = max(1, round(self.token_cache_seconds))
        self.hub_auth = HubAuth(**kwargs)

    def storage_config(self) -> StorageConfig:
        return StorageConfig.from_provisioner(self)

    def get_catalog(self) -> TFEnvCatalog:
        if self.catalog is None:
            self.init_catalog()
        assert self.catalog is not None
        return self.catalog

    def user_lock(self, name: str) -> asyncio.Lock:
        lock = self._user_locks.get(name)
        if lock is None:
            lock = self._user_locks[name] = asyncio.Lock()
        return lock

    async def authenticate(self, token: str | None) -> Caller:
        """The caller of a request, from its token only; a 403 ``BrokerError`` otherwise."""
        model = None
        if token:
            if self._tokens is None:
                self._tokens = TokenLookups(
                    max_age=self.token_cache_seconds, max_entries=self.token_cache_size
                )
            try:
                model = await self._tokens.model(self.hub_auth, token)
            except web.HTTPError as err:
                raise BrokerError(
                    f"Cannot ask JupyterHub who the token belongs to: {err.log_message}",
                    status=503,
                    reason="hub unavailable",
                ) from err
        scope_ok = bool(model) and bool(self.hub_auth.check_scopes(set(self.access_scopes), model))
        account = self.kernel_backend.account
        return await asyncio.to_thread(
            policy.caller_from_model,
            model,
            scope_ok=scope_ok,
            min_uid=self.min_uid,
            account=account,
        )

    def environment_for(self, caller: Caller, env_id: str, *, status: int = 400) -> Environment:
        """A catalog environment the caller may use (unknown: ``status``; not allowed: 403)."""
        try:
            env = self.get_catalog().get(env_id)
        except UnknownEnvironmentError as err:
            raise BrokerError(err.message, status=status, reason="unknown environment") from err
        allowed, reason = policy.environment_allowed(env.id, caller.groups, self.environment_groups)
        if not allowed:
            raise BrokerError(str(reason), status=403, reason="environment not allowed")
        return env

    def _admit(self, caller: Caller, *, probe: bool = False) -> Admit:
        """The caller's quota check (``admit(usage, new_gpus)``), for the backend to call
        under the caller's lock."""
        return functools.partial(
            policy.check_quota,
            caller,
            max_kernels=self.max_kernels_per_user,
            max_gpus=self.max_gpus_per_user,
            probe=probe,
        )

    def runtime_dirs_limit(self) -> int | None:
        """``max_runtime_dirs_per_user``, or its default from the kernel quota."""
        if self.max_runtime_dirs_per_user is not None:
            return self.max_runtime_dirs_per_user
        kernels = policy.limit_value(self.max_kernels_per_user)
        return 32 if kernels is None else max(2 * kernels, 4)

    # -- endpoints -------------------------------------------------------------------------

    async def me(self, caller: Caller) -> dict[str, Any]:
        usage = await self.kernel_backend.usage(caller)
        return {
            **caller.to_dict(),
            "backend": self.kernel_backend.name,
            "limits": {
                "max_kernels": policy.limit_value(self.max_kernels_per_user),
                "max_gpus": policy.limit_value(self.max_gpus_per_user),
            },
            "usage": usage.to_dict(),
        }

    async def gpus(self, caller: Caller) -> dict[str, Any]:
        """Each device kernels may get and who holds it: the caller's kernels by id, other
        users' without names (docs/gpus.md)."""
        return await self.kernel_backend.gpus(caller)

    async def environments(self, caller: Caller) -> dict[str, Any]:
        envs, groups = self.get_catalog().all(), self.environment_groups
        images = await self.kernel_backend.image_status(envs)
        judge = getattr(self.kernel_backend, "compatibility", None)  # GPUs here: gpus.md
        verdicts = await judge(envs, images) if judge else {}
        result = []
        for env in envs:
            allowed, reason = policy.environment_allowed(env.id, caller.groups, groups)
            item = {
                **env.summary(),
                "image_ref": env.image,
                "allowed": allowed,
                "image": images[env.id].to_dict(),
                **({"reason": reason} if reason else {}),
                **({"compatibility": verdicts[env.id]} if env.id in verdicts else {}),
            }
            result.append(item)
        return {"environments": result}

    async def probe(self, caller: Caller, env_id: str, *, refresh: bool) -> dict[str, Any]:
        env = self.environment_for(caller, env_id, status=404)
        return await self.kernel_backend.probe(
            caller, env, refresh=refresh, admit=self._admit(caller, probe=True)
        )

    async def prepare_connection(
        self, caller: Caller, kernel_id: str, restart: bool
    ) -> dict[str, Any]:
        """``POST /api/kernels/<id>/runtime``: the runtime folder lent to the caller, or
        how the kernel is reached (the backend says which)."""
        return await self.kernel_backend.prepare_connection(caller, kernel_id, restart)

    async def start_kernel(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        body = dict(body)
        key = body.pop("key", None)
        backend = self.kernel_backend
        if backend.supports("runtime_dirs") and key is not None:
            # Refused first, as before: the connection file holds the key.
            raise BrokerError(
                "field 'key' is not accepted: in Docker mode the connection file in the "
                "kernel's runtime folder holds the key.",
                reason="field not accepted",
            )
        keys = policy.curve_keys(body.pop("curve", None), backend.supports("runtime_dirs"))
        req = policy.validate_start_body(body, self.env_allowlist)
        env = policy.chosen(self.environment_for(caller, req.environment), req.choices)
        request = KernelStart(
            kernel_id=req.kernel_id,
            environment=env.id,
            cwd=req.cwd,
            mount=req.mount,
            env=dict(req.env),
            server=req.server,
            gpu_devices=req.gpu_devices,
            key=key,
            choices=env.chosen,
            curve=keys,
        )
        if backend.supports("runtime_dirs"):
            request = await self._checked_folders(caller, req, request)
        return await backend.start(caller, request, env, admit=self._admit(caller))

    async def _checked_folders(
        self, caller: Caller, req: policy.StartRequest, request: KernelStart
    ) -> KernelStart:
        """The host folders of a start, checked as the caller (the broker is root): the
        notebook folder and its mount, and the runtime folder lent to the caller."""
        roots = policy.render_roots(self.allowed_mount_roots, caller)
        seen: dict[str, mountcheck.CheckedFolder] = {}
        cwd, mount = await asyncio.to_thread(policy.check_folders, req, caller, roots, seen)
        rundir = await asyncio.to_thread(
            policy.verify_runtime_dir, self.runtime_root, caller, req.kernel_id
        )
        return replace(request, cwd=cwd, mount=mount, runtime_dir=rundir, checked=(seen[mount],))

    async def list_kernels(self, caller: Caller) -> dict[str, Any]:
        kernels = await self.kernel_backend.list_kernels(caller)
        return {"kernels": [k.to_dict() for k in kernels]}

    async def kernel(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        info = await self.kernel_backend.state(caller, kernel_id)
        return {**info.to_dict(), **await deaths.engine_death(self.kernel_backend, info)}

    async def signal(self, caller: Caller, kernel_id: str, signum: int) -> None:
        await self.kernel_backend.signal(caller, kernel_id, signum)

    async def logs(self, caller: Caller, kernel_id: str, tail: int) -> dict[str, Any]:
        return {"logs": await self.kernel_backend.logs(caller, kernel_id, tail)}

    async def live(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        return await self.kernel_backend.live(caller, kernel_id)

    async def delete_kernel(self, caller: Caller, kernel_id: str, *, keep_runtime: bool) -> None:
        await self.kernel_backend.remove(caller, kernel_id, keep_runtime=keep_runtime)

    def _checkpoints_backend(self) -> KernelBackend:
        if not self.kernel_backend.supports("checkpoints"):
            raise BrokerError(
                "Checkpoints are read by the broker in Kubernetes mode only: in Docker mode a "
                "user's server reads its own checkpoint folder.",
                status=404,
                reason="not in docker mode",
            )
        return self.kernel_backend

    async def checkpoints(self, caller: Caller, env_ids: list[str]) -> dict[str, Any]:
        return await self._checkpoints_backend().checkpoints(caller, env_ids)

    async def delete_checkpoint(
        self, caller: Caller, env_id: str, paths: list[str]
    ) -> dict[str, Any]:
        backend = self._checkpoints_backend()
        env = self.environment_for(caller, env_id, status=404)
        return await backend.delete_checkpoint(caller, env, paths)

    # -- serving ---------------------------------------------------------------------------

    def make_web_app(self) -> web.Application:
        from jupyter_tfenv.broker.handlers import make_web_app  # noqa: PLC0415 - they import this module

        return make_web_app(self)

    async def serve(self) -> None:
        if not getattr(self.hub_auth, "api_token", ""):
            raise SystemExit(
                "tfenv-broker: no JupyterHub API token: run it as a JupyterHub service (the hub "
                "sets $JUPYTERHUB_API_TOKEN), or set $JUPYTERHUB_API_TOKEN to the token of the "
                "service declared in c.JupyterHub.services."
            )
        app = self.make_web_app()
        # The handlers refuse a body over max_body_size with 413 (JSON) before reading it;
        # tornado's own limit (which just closes the connection) is the backstop.
        server = HTTPServer(app, xheaders=False, max_body_size=2 * self.max_body_size)
        server.listen(self.port, address=self.ip)
        # Housekeeping: runtime folders of kernels that never started, kept kernels.
        sweeps = start_sweeps(self)
        envs = self.get_catalog().all()
        self.log.info(
            "tfenv-broker %s (service %s) listening on http://%s:%d%s; %d environment(s): %s",
            __version__,
            self.service_name,
            self.ip,
            self.port,
            self.service_prefix,
            len(envs),
            ", ".join(e.id for e in envs) or "none",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        for sweep in sweeps:
            sweep.stop()
        await self.tensorboards.close()  # no server could reach them after the restart
        await self.kernel_backend.close()
        self.log.info("tfenv-broker: stopping (kernel containers keep running)")
        server.stop()
        await server.close_all_connections()

    def start(self) -> None:
        asyncio.run(self.serve())


main = TFEnvBroker.launch_instance
