"""The tfenv broker: a JupyterHub service that alone holds the Docker socket and starts
hardened kernel containers for hub users (see docs/broker.md).

Run it hub-managed (``c.JupyterHub.services`` with a ``command``: the hub passes
``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_SERVICE_NAME``,
``JUPYTERHUB_API_URL``) or external (``--ip``/``--port`` and the same variables)::

    python -m jupyter_tfenv.broker --config /etc/tfenv/broker_config.py
    jupyter tfenv broker --TFEnvBroker.max_kernels_per_user=2

The broker keeps no state of its own: kernels are found by their containers' labels, so
a restarted broker controls the kernels its predecessor started, and it never removes
kernel containers when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from docker.errors import APIError, ImageNotFound, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import RequestException
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Dict, Enum, Float, Integer, List, Unicode, Union, default, validate
from traitlets.config import Application

from jupyter_tfenv import __version__
from jupyter_tfenv.backends.docker import gpu as gpu_mod
from jupyter_tfenv.backends.docker import gpu_alloc, live
from jupyter_tfenv.backends.docker.engine import (
    KernelRequest,
    container_spec,
    explain_api_error,
    explain_start_exit,
    forget_shared_client,
    gpu_allocation,
    launcher_command,
    remove_quietly,
    run_with_gpus,
    shared_client,
    tail_logs,
)
from jupyter_tfenv.backends.docker.probe import ProbeError, cached_probe, probe_image
from jupyter_tfenv.backends.kubernetes.kernels import KubernetesKernels
from jupyter_tfenv.backends.settings import CheckpointStorageSettings, KernelContainerSettings
from jupyter_tfenv.broker import policy
from jupyter_tfenv.broker.auth import TokenLookups
from jupyter_tfenv.broker.policy import BrokerError
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
    LABEL_BROKER,
    LABEL_ENVIRONMENT,
    LABEL_GPUS,
    LABEL_HUB_SERVER,
    LABEL_IMAGE_ID,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_RUNTIME_DIR,
    LABEL_UID,
)
from jupyter_tfenv.errors import DockerUnavailableError, TFEnvError, UnknownEnvironmentError

DEFAULT_PORT = 10101
_RUNNING_STATES = ("created", "running", "restarting", "paused")


#: Where a pod's ServiceAccount namespace is mounted (in-cluster).
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def _service_url() -> Any:
    return urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))


class TFEnvBroker(KernelContainerSettings, CheckpointStorageSettings, Application):
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
        broker then needs the [kubernetes] extra and a ServiceAccount, docs/kubernetes.md).""",
    ).tag(config=True)

    kubernetes_namespace = Unicode(
        "tfenv-kernels",
        help="""Namespace of the kernel pods, their Secrets, checkpoint claims and
        NetworkPolicies. Label it pod-security.kubernetes.io/enforce=restricted; the
        broker's Role is in this namespace only.""",
    ).tag(config=True)

    kubernetes_server_namespace = Unicode(
        help="""Namespace of the users' servers, which the kernels' NetworkPolicy lets in.
        Default: the broker's own (its ServiceAccount's namespace), else the kernels'.""",
    ).tag(config=True)

    @default("kubernetes_server_namespace")
    def _default_kubernetes_server_namespace(self) -> str:
        try:
            return Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip()
        except OSError:
            return ""

    kubernetes_config = Unicode(
        "",
        help="""A kubeconfig file. Default '': in-cluster credentials when the broker runs
        in a pod, else $KUBECONFIG or ~/.kube/config.""",
    ).tag(config=True)

    kubernetes_context = Unicode("", help="The kubeconfig context ('' : its current one).").tag(
        config=True
    )

    kubernetes_storage_class = Unicode(
        "",
        help="""Storage class of the checkpoint claims ('' : the cluster's default). One
        claim per user and environment; it outlives the pods.""",
    ).tag(config=True)

    kubernetes_storage_size = Unicode("10Gi", help="Size of each checkpoint claim.").tag(
        config=True
    )

    kubernetes_storage_access_modes = List(
        Unicode(),
        default_value=["ReadWriteOnce"],
        help="""Access modes of the checkpoint claims. ReadWriteOnce binds a claim to one
        node at a time: two kernels of one user and environment on two nodes need
        ReadWriteMany (NFS, CephFS, ...).""",
    ).tag(config=True)

    kubernetes_uid = Integer(
        1000,
        help="""uid the kernel pods run as (users are kept apart by their own claims,
        Secrets and policies, not by uids). Not 0: the restricted standard forbids it.""",
    ).tag(config=True)

    kubernetes_gid = Integer(100, help="gid (and fsGroup) of the kernel pods.").tag(config=True)

    kubernetes_start_timeout = Float(
        120.0,
        help="""Seconds a kernel pod may take to run, image pulls not counted (they have
        kubernetes_pull_timeout).""",
    ).tag(config=True)

    kubernetes_pull_timeout = Float(
        1800.0,
        help="""Seconds a node may spend pulling a kernel image during one start
        (pre-pull big images with a DaemonSet: docs/kubernetes.md).""",
    ).tag(config=True)

    kubernetes_schedule_timeout = Float(
        10.0,
        help="""Seconds a kernel pod may stay unschedulable (no node with a free GPU, ...)
        before the start fails with the scheduler's reason. Raise it where a cluster
        autoscaler adds nodes.""",
    ).tag(config=True)

    kubernetes_egress_allow = List(
        Union([Unicode(), Dict()]),
        default_value=[],
        help="""Egress a networked kernel pod (catalog network other than 'none') gets
        beyond public addresses and the cluster DNS: 'CIDR' (every port), 'CIDR:PORT'
        (TCP), 'CIDR:PORT/UDP', or a NetworkPolicy egress rule dict ({'to': [...],
        'ports': [...]}). Private, link-local (the cloud metadata server) and in-cluster
        addresses are closed unless listed here (docs/kubernetes.md).""",
    ).tag(config=True)

    kubernetes_server_selector = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        default_value={
            "component": "singleuser-server",
            "hub.jupyter.org/username": "{username}",
            "hub.jupyter.org/servername": "{servername}",
        },
        help="""The labels of a user's server pods, which a kernel's NetworkPolicy admits:
        {username} and {servername} become the names' label values under
        kubernetes_server_label_scheme; a label that renders empty (the default server's
        name) is left out. One value must hold {username}.""",
    ).tag(config=True)

    kubernetes_server_label_scheme = Enum(
        ["safe", "escape"],
        default_value="safe",
        help="""How the server pods' labels spell names: 'safe' (KubeSpawner 7, z2jh 4)
        or 'escape' (KubeSpawner before 7, or slug_scheme='escape'). Names whose label
        value another name could share are refused (docs/kubernetes.md).""",
    ).tag(config=True)

    kubernetes_accept_hashed_server_labels = Bool(
        False,
        help="""Under the 'safe' scheme, accept user and server names that KubeSpawner
        labels with a 32-bit hash (e-mail addresses, ...): another name could be chosen to
        share the label and reach the user's kernel ports. Set it only where users cannot
        choose their hub names.""",
    ).tag(config=True)

    kubernetes_helper_pods_per_user = Integer(
        1,
        help="""Checkpoint helper pods (listing, deletion) one user may run at a time; a
        request beyond waits for a slot. Each holds 250m CPU and 256Mi.""",
    ).tag(config=True)

    # -- checkpoint storage (the same names as DockerKernelProvisioner's) -----------------

    @default("checkpoint_root")
    def _default_checkpoint_root(self) -> str:
        return os.environ.get("JUPYTER_TFENV_CHECKPOINT_ROOT") or "/srv/tfenv/checkpoints"

    @default("log_root")
    def _default_log_root(self) -> str:
        return os.environ.get("JUPYTER_TFENV_LOG_ROOT") or "/srv/tfenv/logs"

    # -- state ---------------------------------------------------------------------------

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.catalog: TFEnvCatalog | None = None
        self.hub_auth: Any = None
        self._client: Any = None
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._probes: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: Probe containers running per user: {user: {token: GPUs}} (they count as kernels).
        self._probing: dict[str, dict[object, int]] = {}
        self._host_gpus: tuple[float, int | None] | None = None
        self._gpus: tuple[float, dict[str, Any]] | None = None
        self._k8s: KubernetesKernels | None = None
        self._tokens: TokenLookups | None = None

    @property
    def k8s(self) -> KubernetesKernels | None:
        """The Kubernetes-mode endpoints (backend = 'kubernetes'), else None."""
        if self.backend != "kubernetes":
            return None
        if self._k8s is None:
            self._k8s = KubernetesKernels(self)
        return self._k8s

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

    # -- helpers -------------------------------------------------------------------------

    def storage_config(self) -> StorageConfig:
        return StorageConfig.from_provisioner(self)

    def get_catalog(self) -> TFEnvCatalog:
        if self.catalog is None:
            self.init_catalog()
        assert self.catalog is not None
        return self.catalog

    async def docker(self) -> Any:
        if self._client is None:
            self._client = await asyncio.to_thread(shared_client, self.docker_timeout)
        return self._client

    def _docker_lost(self, err: Exception) -> BrokerError:
        if self._client is not None:
            forget_shared_client(self._client)
            self._client = None
        return BrokerError(
            f"The Docker engine stopped answering: {err}. Ask an admin to check it "
            "(`docker info` on the host).",
            status=503,
        )

    def user_lock(self, name: str) -> asyncio.Lock:
        lock = self._user_locks.get(name)
        if lock is None:
            lock = self._user_locks[name] = asyncio.Lock()
        return lock

    async def host_gpus(self) -> int | None:
        """The host's NVIDIA GPU count (NVML), cached for a minute; None when unknown."""
        if self.gpu_devices:
            return len(self.gpu_devices)
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
        account = (self.kubernetes_uid, self.kubernetes_gid) if self.k8s else None
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

    # -- containers by label ----------------------------------------------------------------

    def _filters(self, caller: Caller, kernel_id: str | None = None) -> dict[str, Any]:
        labels = [
            f"{LABEL_OWNER}={caller.name}",
            f"{LABEL_UID}={caller.uid}",
            f"{LABEL_BROKER}={self.broker_id}",
        ]
        labels.append(f"{LABEL_KERNEL_ID}={kernel_id}" if kernel_id else LABEL_KERNEL_ID)
        return {"label": labels}

    async def kernel_rows(
        self, caller: Caller, kernel_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The caller's broker kernel containers (the list API's rows; one Docker call)."""
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
        return str(row.get("State", "")).lower() in _RUNNING_STATES

    @staticmethod
    def _row_gpus(row: dict[str, Any]) -> int:
        try:
            return int((row.get("Labels") or {}).get(LABEL_GPUS, "0"))
        except ValueError:
            return 0

    async def usage(self, caller: Caller, *, exclude: str | None = None) -> policy.Usage:
        rows = await self.kernel_rows(caller)
        return policy.usage_of(
            (
                self._row_gpus(row)
                for row in rows
                if self._running(row) and (row.get("Labels") or {}).get(LABEL_KERNEL_ID) != exclude
            ),
            self.probe_gpus(caller),
        )

    def probe_gpus(self, caller: Caller) -> list[int]:
        """The GPUs of each probe container the broker runs for ``caller`` now."""
        return list(self._probing.get(caller.name, {}).values())

    async def find_kernel(self, caller: Caller, kernel_id: str) -> Any:
        """The caller's container of ``kernel_id`` (a docker SDK container), or 404."""
        policy.check_kernel_id(kernel_id)
        rows = await self.kernel_rows(caller, kernel_id)
        if not rows:
            raise BrokerError(
                f"No kernel {kernel_id} of yours.", status=404, reason="no such kernel"
            )
        rows.sort(key=lambda r: (self._running(r), r.get("Created", 0)), reverse=True)
        client = await self.docker()
        try:
            return await asyncio.to_thread(client.containers.get, rows[0]["Id"])
        except NotFound:
            raise BrokerError(
                f"No kernel {kernel_id} of yours.", status=404, reason="no such kernel"
            ) from None

    # -- endpoints -------------------------------------------------------------------------

    async def me(self, caller: Caller) -> dict[str, Any]:
        usage = await (self.k8s.usage(caller) if self.k8s else self.usage(caller))
        return {
            **caller.to_dict(),
            "backend": self.backend,
            "limits": {
                "max_kernels": policy.limit_value(self.max_kernels_per_user),
                "max_gpus": policy.limit_value(self.max_gpus_per_user),
            },
            "usage": usage.to_dict(),
        }

    async def gpus(self, caller: Caller) -> dict[str, Any]:
        """Each device kernels may get and who holds it: the caller's kernels by id, other
        users' without names (docs/gpus.md)."""
        if self.k8s is not None:
            return {
                "allocation": [],
                "message": "On Kubernetes the scheduler allocates GPUs (nvidia.com/gpu).",
            }
        client = await self.docker()
        try:
            rows = await asyncio.to_thread(
                gpu_allocation, client, list(self.gpu_devices), viewer=caller.name
            )
        except RequestsConnectionError as err:
            raise self._docker_lost(err) from err
        return {"allocation": rows, "placement": self.gpu_placement}

    async def environments(self, caller: Caller) -> dict[str, Any]:
        catalog = self.get_catalog()
        envs = catalog.all()
        images = await self._image_index() if self.k8s is None else {}
        result = []
        for env in envs:
            allowed, reason = policy.environment_allowed(
                env.id, caller.groups, self.environment_groups
            )
            item = {
                **env.summary(),
                "image_ref": env.image,
                "allowed": allowed,
                "image": (
                    self._image_status(env, images)
                    if self.k8s is None
                    else self.k8s.image_status(env)
                ),
            }
            if reason:
                item["reason"] = reason
            result.append(item)
        return {"environments": result}

    async def _image_index(self) -> dict[str, dict[str, Any]] | str:
        """``{reference: image row}`` of the engine's images, or the error text."""
        try:
            client = await self.docker()
            rows = await asyncio.to_thread(client.api.images)
        except (DockerUnavailableError, APIError, RequestException) as err:
            return str(err)
        index: dict[str, dict[str, Any]] = {}
        for row in rows:
            for ref in (row.get("RepoTags") or []) + (row.get("RepoDigests") or []):
                index[ref] = row
        return index

    @staticmethod
    def _image_status(env: Environment, index: dict[str, dict[str, Any]] | str) -> dict[str, Any]:
        if isinstance(index, str):
            return {"present": None, "error": index}
        last = env.image.rsplit("/", 1)[-1]
        ref = env.image if (":" in last or "@" in env.image) else f"{env.image}:latest"
        row = index.get(ref) or index.get(f"docker.io/{ref}")
        if row is None:
            return {"present": False, "image_id": None, "repo_digests": [], "size": None}
        return {
            "present": True,
            "image_id": row.get("Id"),
            "repo_digests": list(row.get("RepoDigests") or []),
            "size": row.get("Size"),
        }

    async def probe(self, caller: Caller, env_id: str, *, refresh: bool) -> dict[str, Any]:
        env = self.environment_for(caller, env_id, status=404)
        if self.k8s is not None:
            return await self.k8s.probe(caller, env, refresh=refresh)
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
            async with self.user_lock(caller.name):
                running = self._probes.get(env.id)
                if running is None or running.done():
                    running = await self._start_probe(client, caller, env, refresh=refresh)
        try:
            result = await asyncio.shield(running)
        except ProbeError as err:
            if err.http_status == 400 and "jupyter tfenv pull" in err.message:
                raise _image_missing(env) from err
            raise BrokerError(err.message, status=err.http_status, logs=err.logs) from err
        return {"state": "ok", **result}

    async def _start_probe(
        self, client: Any, caller: Caller, env: Environment, *, refresh: bool
    ) -> asyncio.Future[dict[str, Any]]:
        """Start probing ``env`` as ``caller`` once the quotas allow it (call under the
        caller's lock); the probe counts until it ends."""
        gpus = 0
        if env.wants_gpu:
            gpus = policy.gpu_count(
                list(env.gpus) if isinstance(env.gpus, tuple) else env.gpus,
                await self.host_gpus(),
            )
        policy.check_quota(
            caller,
            await self.usage(caller),
            gpus,
            max_kernels=self.max_kernels_per_user,
            max_gpus=self.max_gpus_per_user,
            probe=True,
        )
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

    def runtime_dirs_limit(self) -> int | None:
        """``max_runtime_dirs_per_user``, or its default from the kernel quota."""
        if self.max_runtime_dirs_per_user is not None:
            return self.max_runtime_dirs_per_user
        kernels = policy.limit_value(self.max_kernels_per_user)
        return 32 if kernels is None else max(2 * kernels, 4)

    async def prepare_runtime(self, caller: Caller, kernel_id: str, restart: bool) -> str:
        policy.check_kernel_id(kernel_id)
        async with self.user_lock(caller.name):
            await self.sweep_runtime_dirs(caller, keep=policy.runtime_name(kernel_id))
            return await asyncio.to_thread(
                policy.prepare_runtime_dir,
                self.runtime_root,
                caller,
                kernel_id,
                restart=restart,
                max_dirs=self.runtime_dirs_limit(),
            )

    async def sweep_runtime_dirs(self, caller: Caller, *, keep: str = "") -> list[str]:
        """Remove the caller's runtime folders of kernels that never started (no container
        names them, unchanged for runtime_dir_stale_seconds); the removed folders."""
        stale = await asyncio.to_thread(
            policy.stale_runtime_dirs,
            self.runtime_root,
            caller,
            older_than=self.runtime_dir_stale_seconds,
            keep=[keep] if keep else [],
        )
        if not stale:
            return []
        try:
            rows = await self.kernel_rows(caller)
        except BrokerError as err:  # Docker is away: nothing is known to be unused
            self.log.warning("tfenv-broker: runtime folders not swept: %s", err)
            return []
        in_use = [(r.get("Labels") or {}).get(LABEL_RUNTIME_DIR, "") for r in rows]
        removed = await asyncio.to_thread(
            policy.remove_stale_runtime_dirs, self.runtime_root, caller, stale, in_use
        )
        if removed:
            self.log.info(
                "tfenv-broker: removed %d runtime folder(s) of %s (uid %d) whose kernels never "
                "started: %s",
                len(removed),
                caller.name,
                caller.uid,
                ", ".join(os.path.basename(p) for p in removed),
            )
        return removed

    async def sweep_all_runtime_dirs(self) -> None:
        """:meth:`sweep_runtime_dirs` for every uid with a folder under runtime_root."""
        for uid in await asyncio.to_thread(policy.runtime_uids, self.runtime_root):
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            caller = Caller(name=name, uid=uid, gid=uid, home="/")
            async with self.user_lock(caller.name):
                try:
                    await self.sweep_runtime_dirs(caller)
                except Exception as err:  # a sweep never stops the broker
                    self.log.warning("tfenv-broker: runtime sweep of uid %d failed: %s", uid, err)

    # -- start ---------------------------------------------------------------------------

    async def start_kernel(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        if self.k8s is not None:
            return await self.k8s.start(caller, body)
        if "key" in body:
            raise BrokerError(
                "field 'key' is not accepted: in Docker mode the connection file in the "
                "kernel's runtime folder holds the key.",
                reason="field not accepted",
            )
        req = policy.validate_start_body(body, self.env_allowlist)
        env = self.environment_for(caller, req.environment)
        roots = policy.render_roots(self.allowed_mount_roots, caller)
        seen: dict[str, mountcheck.CheckedFolder] = {}
        cwd, mount = await asyncio.to_thread(policy.check_folders, req, caller, roots, seen)
        rundir = await asyncio.to_thread(
            policy.verify_runtime_dir, self.runtime_root, caller, req.kernel_id
        )
        try:
            return await self._start(
                caller, req, env, cwd=cwd, mount=mount, rundir=rundir, checked=[seen[mount]]
            )
        except BaseException:
            await asyncio.to_thread(
                policy.remove_runtime_dir, self.runtime_root, caller, req.kernel_id
            )
            raise

    async def _start(
        self,
        caller: Caller,
        req: policy.StartRequest,
        env: Environment,
        *,
        cwd: str,
        mount: str,
        rundir: str,
        checked: list[mountcheck.CheckedFolder],
    ) -> dict[str, Any]:
        conn = await asyncio.to_thread(policy.read_connection_file, rundir, caller)
        client = await self.docker()
        image = await asyncio.to_thread(self._resolve_image, client, env)
        await self._check_lock(client, env)
        new_gpus = policy.gpu_count(
            list(env.gpus) if isinstance(env.gpus, tuple) else env.gpus, await self.host_gpus()
        )
        async with self.user_lock(caller.name):
            rows = await self.kernel_rows(caller)
            same = [
                r for r in rows if (r.get("Labels") or {}).get(LABEL_KERNEL_ID) == req.kernel_id
            ]
            usage = policy.usage_of(
                (self._row_gpus(r) for r in rows if self._running(r) and r not in same),
                self.probe_gpus(caller),
            )
            policy.check_quota(
                caller,
                usage,
                new_gpus,
                max_kernels=self.max_kernels_per_user,
                max_gpus=self.max_gpus_per_user,
            )
            for row in same:  # a restart: the kernel's previous container goes
                await asyncio.to_thread(self._remove_by_id, client, row["Id"])
            mounts, storage_env, checkpoints, prepared = await asyncio.to_thread(
                self._prepare_storage, client, caller, env, str(image.id)
            )
            # Docker mounts by path, and a user can swap a folder they own for a symlink
            # at any moment: it gets the checked folders, bind-mounted by descriptor.
            staged = mountcheck.StagedMounts()
            try:
                sources = await asyncio.to_thread(self._stage, staged, [*checked, *prepared])
                kreq = KernelRequest(
                    kernel_id=req.kernel_id,
                    cmd=launcher_command(env.python, f"{rundir}/{policy.CONNECTION_FILE}"),
                    uid=caller.uid,
                    gid=caller.gid,
                    owner=caller.name,
                    workdir=cwd,
                    notebook_mount=mount,
                    notebook_source=sources[mount],
                    runtime_dir=rundir,
                    runtimes_dir=self.runtimes_dir or None,
                    image_id=str(image.id),
                    environment=self._kernel_env(caller, req.env, mount),
                    transport="ipc",
                    memory=self.default_memory or None,
                    pids=self.default_pids or None,
                    shm_size=self.default_shm_size or None,
                    extra_mounts=tuple(mountcheck.from_staging(mounts, sources)),
                    extra_env=storage_env,
                    extra_labels={
                        LABEL_BROKER: self.broker_id,
                        LABEL_UID: str(caller.uid),
                        LABEL_GPUS: str(new_gpus),
                        LABEL_HUB_SERVER: req.server,
                    },
                )
                spec = await asyncio.to_thread(container_spec, env, kreq)
                container, gpu_devices = await self._run_with_gpus(
                    client, caller, env, spec, [*same, *_hinted(req.gpu_devices)]
                )
            finally:
                # The container (if any) has its own copy of the mounts by now.
                await asyncio.to_thread(staged.release)
        try:
            await self._verify_mounts(container, [*checked, *prepared])
            await self._wait_until_bound(env, container, conn)
        except BrokerError:
            raise
        except BaseException:
            await asyncio.to_thread(remove_quietly, container)
            raise
        self.log.info(
            "tfenv-broker: started kernel %s for %s (uid %d): %s in container %s",
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

    @staticmethod
    def _kernel_env(caller: Caller, passed: dict[str, str], mount: str) -> dict[str, str]:
        env = dict(passed)
        home = caller.home if policy.inside(caller.home, mount) else "/tmp"  # noqa: S108
        env.update({"HOME": home, "USER": caller.name, "LOGNAME": caller.name})
        return env

    @staticmethod
    def _resolve_image(client: Any, env: Environment) -> Any:
        try:
            return client.images.get(env.image)
        except ImageNotFound:
            raise _image_missing(env) from None
        except APIError as err:
            raise BrokerError(explain_api_error(err, env), status=500) from err
        except RequestsConnectionError as err:
            raise BrokerError(f"The Docker engine stopped answering: {err}.", status=503) from err

    async def _check_lock(self, client: Any, env: Environment) -> None:
        catalog = self.get_catalog()
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
            raise BrokerError(
                err.message + " (Ask an admin: these commands run on the broker's host.)",
                status=409,
                reason="not locked",
            ) from err
        except LockMismatchError as err:
            if catalog.lock_policy == "warn":
                self.log.warning("tfenv-broker: starting anyway (lock_policy=warn): %s", err)
                return
            raise BrokerError(
                err.message + " (Ask an admin: these commands run on the broker's host.)",
                status=409,
                reason="lock mismatch",
            ) from err
        except TFEnvError as err:
            raise BrokerError(err.message, status=500, reason="lock file") from err

    def _prepare_storage(
        self, client: Any, caller: Caller, env: Environment, image_id: str
    ) -> tuple[list[Any], dict[str, str], dict[str, Any], list[mountcheck.CheckedFolder]]:
        """The caller's checkpoint and log folders (or volumes) for ``env``; blocking."""
        try:
            storage = prepare_kernel_storage(
                client,
                self.storage_config(),
                caller.name,
                env,
                uid=caller.uid,
                gid=caller.gid,
                image_id=image_id,
                helper_image=self.checkpoint_helper_image,
            )
        except CheckpointStorageError as err:
            raise BrokerError(
                f"The checkpoint storage of '{env.id}' is not usable: {err}",
                status=500,
                reason="checkpoint storage",
            ) from err
        return storage.mounts, storage.environment, storage.info, storage.checked

    @staticmethod
    def _stage(
        staged: mountcheck.StagedMounts, folders: list[mountcheck.CheckedFolder]
    ) -> dict[str, str]:
        """Each checked folder's staging path, by target; blocking (see StagedMounts)."""
        try:
            return {folder.target: staged.stage(folder) for folder in folders}
        except mountcheck.MountChangedError as err:
            raise BrokerError(err.message, status=403, reason="mount changed") from err
        except mountcheck.StagingError as err:
            raise BrokerError(err.message, status=500, reason="staging mount") from err

    async def _verify_mounts(self, container: Any, checked: list[mountcheck.CheckedFolder]) -> None:
        """The container mounted the folders that were checked, or it is removed (403).

        Docker resolves each bind source again when it mounts it; see
        :func:`~jupyter_tfenv.checkpoints.mountcheck.verify_mounts` (strict: the broker is root).
        """
        try:
            await asyncio.to_thread(
                mountcheck.verify_mounts, container, checked, strict=True, log=self.log
            )
        except mountcheck.MountChangedError as err:
            raise BrokerError(err.message, status=403, reason="mount changed") from err

    async def _run_with_gpus(
        self,
        client: Any,
        caller: Caller,
        env: Environment,
        spec: dict[str, Any],
        previous: list[dict[str, Any]],
    ) -> tuple[Any, tuple[str, ...]]:
        """:meth:`_run` on devices the allocator picks (a restart keeps the ``previous``
        container's); the broker stays stateless: the engine's labels are the picture."""
        prefer = tuple(
            d
            for row in previous
            for d in ((row.get("Labels") or {}).get(gpu_alloc.LABEL_GPU_DEVICES) or "").split(",")
            if d
        )
        try:
            return await run_with_gpus(
                client,
                env,
                spec,
                lambda spec: self._run(client, env, spec),
                configured=self.gpu_devices,
                viewer=caller.name,
                placement=self.gpu_placement,
                prefer=prefer,
                wait=self.gpu_wait_timeout,
            )
        except gpu_alloc.GpuUnavailableError as err:
            raise BrokerError(err.message, status=err.status, reason="no free gpu") from err

    async def _run(self, client: Any, env: Environment, spec: dict[str, Any]) -> Any:
        creating = asyncio.ensure_future(asyncio.to_thread(client.containers.run, **spec))
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await creating
            await asyncio.to_thread(self._remove_by_name, client, spec["name"])
            raise
        except APIError as err:
            await asyncio.to_thread(self._remove_by_name, client, spec["name"])
            text = explain_api_error(err, env)
            # The environment cannot run here as declared (no image, no python, no GPUs):
            # the request's fault, not the broker's.
            known = ("jupyter tfenv pull", "has no '", "has no NVIDIA runtime")
            status = 400 if any(k in text for k in known) else 500
            raise BrokerError(text, status=status, reason="docker refused") from err
        except RequestsConnectionError as err:
            raise self._docker_lost(err) from err

    @staticmethod
    def _remove_by_name(client: Any, name: str) -> None:
        with contextlib.suppress(NotFound):
            remove_quietly(client.containers.get(name))

    @staticmethod
    def _remove_by_id(client: Any, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            remove_quietly(client.containers.get(container_id))

    async def _wait_until_bound(
        self, env: Environment, container: Any, conn: dict[str, Any]
    ) -> None:
        paths = policy.socket_paths(conn)
        rundir = os.path.dirname(str(conn["ip"]))
        started = time.monotonic()
        delay, next_inspect = 0.005, 0.0
        while True:
            if policy.sockets_bound(paths, rundir):
                return
            now = time.monotonic()
            if now >= next_inspect:
                try:
                    await asyncio.to_thread(container.reload)
                except NotFound:
                    container.attrs = {"State": {"ExitCode": None}}
                    container.status = "removed"
                if container.status not in _RUNNING_STATES:
                    if policy.sockets_bound(paths, rundir):
                        return
                    await self._fail_exited(env, container)
                next_inspect = now + 0.25
            if now - started > self.start_timeout:
                logs = await asyncio.to_thread(tail_logs, container)
                await asyncio.to_thread(remove_quietly, container)
                raise BrokerError(
                    f"The kernel of '{env.id}' did not start within {self.start_timeout:.0f} s "
                    "(c.TFEnvBroker.start_timeout); the container was removed.",
                    status=500,
                    reason="start timeout",
                    logs=logs,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.05)

    async def _fail_exited(self, env: Environment, container: Any) -> None:
        state = (container.attrs or {}).get("State", {}) or {}
        logs = await asyncio.to_thread(tail_logs, container)
        await asyncio.to_thread(remove_quietly, container)
        why = explain_start_exit(
            env, state.get("ExitCode"), bool(state.get("OOMKilled")), logs, admin=True
        )
        raise BrokerError(why.message, status=why.status, reason=why.reason, logs=why.logs)

    # -- the other kernel endpoints ---------------------------------------------------------

    async def list_kernels(self, caller: Caller) -> dict[str, Any]:
        if self.k8s is not None:
            return await self.k8s.list_kernels(caller)
        rows = await self.kernel_rows(caller)
        kernels = []
        for row in rows:
            labels = row.get("Labels") or {}
            kernels.append(
                {
                    "kernel_id": labels.get(LABEL_KERNEL_ID),
                    "container_id": row.get("Id"),
                    "name": (row.get("Names") or ["/"])[0].lstrip("/"),
                    "environment": labels.get(LABEL_ENVIRONMENT),
                    "status": row.get("State"),
                    "started_at": _iso(row.get("Created")),
                    "gpus": self._row_gpus(row),
                    "server": labels.get(LABEL_HUB_SERVER, ""),
                }
            )
        return {"kernels": kernels}

    async def kernel(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        if self.k8s is not None:
            return await self.k8s.kernel(caller, kernel_id)
        container = await self.find_kernel(caller, kernel_id)
        attrs = container.attrs or {}
        state = attrs.get("State") or {}
        config = attrs.get("Config") or {}
        labels = config.get("Labels") or {}
        root = await asyncio.to_thread(os.path.abspath, self.runtime_root)
        rundir = policy.runtime_dir_for(root, caller.uid, kernel_id)
        return {
            "kernel_id": kernel_id,
            "container_id": container.id,
            "name": container.name,
            "status": state.get("Status"),
            "running": bool(state.get("Running")),
            "exit_code": state.get("ExitCode"),
            "oom_killed": bool(state.get("OOMKilled")),
            "started_at": state.get("StartedAt"),
            "environment": labels.get(LABEL_ENVIRONMENT),
            "image_id": attrs.get("Image") or labels.get(LABEL_IMAGE_ID),
            # For a server that adopts the running kernel (keep_kernels_on_stop): its
            # working directory, and the runtime folder with its connection file.
            "workdir": config.get("WorkingDir") or "",
            "runtime_dir": rundir if labels.get(LABEL_RUNTIME_DIR) == rundir else "",
        }

    async def signal(self, caller: Caller, kernel_id: str, signum: int) -> None:
        if self.k8s is not None:
            return await self.k8s.signal(caller, kernel_id, signum)
        container = await self.find_kernel(caller, kernel_id)
        try:
            await asyncio.to_thread(container.kill, signal=signum)
        except NotFound:
            raise BrokerError(
                f"No kernel {kernel_id} of yours.", status=404, reason="no such kernel"
            ) from None
        except APIError as err:
            if err.status_code != 409:  # not running: nothing to signal
                raise

    async def logs(self, caller: Caller, kernel_id: str, tail: int) -> dict[str, Any]:
        if self.k8s is not None:
            return await self.k8s.logs(caller, kernel_id, tail)
        container = await self.find_kernel(caller, kernel_id)
        return {"logs": await asyncio.to_thread(tail_logs, container, tail)}

    async def live(self, caller: Caller, kernel_id: str) -> dict[str, Any]:
        if self.k8s is not None:
            return await self.k8s.live(caller, kernel_id)
        container = await self.find_kernel(caller, kernel_id)
        client = await self.docker()
        gpus = await self.gpu_overview(client)
        try:
            return await asyncio.to_thread(
                live.kernel_live_status, client, container.id, gpus, cpu_baseline=False
            )
        except live.ContainerGone as err:
            raise BrokerError(err.message, status=404, reason="no such kernel") from err

    async def delete_kernel(self, caller: Caller, kernel_id: str, *, keep_runtime: bool) -> None:
        if self.k8s is not None:
            return await self.k8s.delete(caller, kernel_id)
        policy.check_kernel_id(kernel_id)
        rows = await self.kernel_rows(caller, kernel_id)
        client = await self.docker()
        for row in rows:
            await asyncio.to_thread(self._remove_by_id, client, row["Id"])
            live.forget_container(row["Id"])
            names = ", ".join(n.lstrip("/") for n in row.get("Names") or [])
            self.log.info(
                "tfenv-broker: stopped kernel %s of %s (uid %d): %s, container %s",
                kernel_id,
                caller.name,
                caller.uid,
                (row.get("Labels") or {}).get(LABEL_ENVIRONMENT, "?"),
                names,
            )
        removed = False
        if not keep_runtime:
            removed = await asyncio.to_thread(
                policy.remove_runtime_dir, self.runtime_root, caller, kernel_id
            )
        if not rows and not removed:
            raise BrokerError(
                f"No kernel {kernel_id} of yours.", status=404, reason="no such kernel"
            )

    # -- serving ---------------------------------------------------------------------------

    def make_web_app(self) -> web.Application:
        from jupyter_tfenv.broker.handlers import NotFoundHandler, routes  # noqa: PLC0415 - they import this module

        prefixes = ["/"]
        prefix = "/" + self.service_prefix.strip("/") + "/"
        if prefix != "/":
            prefixes.append(prefix)
        handlers = [
            (f"{p.rstrip('/')}{path}", handler) for p in prefixes for path, handler in routes
        ]
        return web.Application(
            handlers,
            broker=self,
            log_function=_log_request,
            xsrf_cookies=False,
            compress_response=False,
            default_handler_class=NotFoundHandler,
        )

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
        sweep: PeriodicCallback | None = None
        if self.k8s is None:
            sweep = PeriodicCallback(
                self.sweep_all_runtime_dirs, 1000 * self.runtime_dir_stale_seconds
            )
            sweep.start()
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
        if sweep is not None:
            sweep.stop()
        self.log.info("tfenv-broker: stopping (kernel containers keep running)")
        server.stop()
        await server.close_all_connections()

    def start(self) -> None:
        asyncio.run(self.serve())


def _hinted(devices: tuple[str, ...]) -> list[dict[str, Any]]:
    """A restart's device hint in the shape of a container row (see _run_with_gpus)."""
    return [{"Labels": {gpu_alloc.LABEL_GPU_DEVICES: ",".join(devices)}}] if devices else []


def _image_missing(env: Environment) -> BrokerError:
    return BrokerError(
        f"The image {env.image} of environment '{env.id}' is not on this host's Docker "
        "engine, and kernel starts never pull. Ask an admin to run "
        f"`jupyter tfenv pull {env.id}` on the broker's host.",
        reason="image missing",
    )


def _iso(epoch: Any) -> str | None:
    try:
        return datetime.fromtimestamp(float(epoch), timezone.utc).isoformat()
    except (TypeError, ValueError, OverflowError):
        return None


def _log_request(handler: web.RequestHandler) -> None:
    """Access log without query strings or headers (tokens never reach the log)."""
    status = handler.get_status()
    log = handler.application.settings["broker"].log
    method, path = handler.request.method, handler.request.path
    if status < 400:
        # Servers poll kernels while they start and panels poll live status: reads are
        # debug, changes (start, signal, delete, runtime folders) info.
        level = log.debug if method == "GET" else log.info
    elif status >= 500:
        level = log.error
    elif "/api/" not in path:
        level = log.debug  # the hub's "is it up?" request, scanners
    else:
        level = log.warning
    user = getattr(handler, "caller", None)
    level(
        "%d %s %s (%s) %.1fms",
        status,
        method,
        path,
        user.name if user is not None else "-",
        1000.0 * handler.request.request_time(),
    )


main = TFEnvBroker.launch_instance
