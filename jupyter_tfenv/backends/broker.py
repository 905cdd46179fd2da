"""The single-user server's side of the tfenv broker: an async client of its HTTP API.

In a JupyterHub deployment the user's server never touches the Docker socket; the
``tfenv-docker`` provisioner and the ``/tfenv`` REST API ask the broker instead (see
docs/broker.md for the contract). Every request carries ``Authorization: token <token>``
(the server's ``$JUPYTERHUB_API_TOKEN`` by default) and JSON.

Error answers become :class:`BrokerError` (a ``TFEnvError``) whose ``http_status`` is the
broker's status and whose message is the broker's ``message``, unchanged: a quota (429) or
policy (403) refusal reaches JupyterLab's "Error Starting Kernel" dialog word for word.
A broker that does not answer is a :class:`BrokerUnavailableError` (503).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from jupyter_tfenv.backends.base import (
    Admit,
    ImageStatus,
    KernelBackend,
    KernelInfo,
    KernelNotFound,
    KernelStart,
    KernelSummary,
    Usage,
)
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.errors import TFEnvError

#: Where the server finds the broker, and with which token (JupyterHub's spawner sets them).
BROKER_URL_VAR = "JUPYTER_TFENV_BROKER_URL"
BROKER_TOKEN_VAR = "JUPYTER_TFENV_BROKER_TOKEN"  # noqa: S105 - a variable name


class BrokerError(TFEnvError):
    """The broker refused or failed a request; ``http_status`` is its answer's status."""

    def __init__(
        self, message: str, *, status: int = 500, reason: str = "", logs: str = ""
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.reason = reason
        self.logs = logs


class BrokerUnavailableError(BrokerError):
    """The broker does not answer (connection refused, reset, timed out)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503, reason="BrokerUnavailable")


class BrokerNotFoundError(BrokerError):
    """404: no such kernel of this user (or no such environment)."""


class BrokerClient:
    """One broker (base URL and token); cheap to create, safe to share within a loop."""

    def __init__(self, url: str, token: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/") + "/"
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token
        return f"BrokerClient({self.url!r})"

    def _unavailable(self, err: BaseException | str) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            f"The tfenv broker at {self.url} does not answer ({err}); ask your JupyterHub "
            "admin to check that the tfenv broker service runs."
        )

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """``method`` ``path`` (relative to the base URL) → the decoded JSON answer (None
        for an empty one); error answers raise :class:`BrokerError`."""
        if not self._token:
            raise BrokerError(
                f"No token for the tfenv broker at {self.url}: the server has neither "
                f"${BROKER_TOKEN_VAR} nor $JUPYTERHUB_API_TOKEN "
                "(c.DockerKernelProvisioner.broker_token); ask your JupyterHub admin.",
                status=403,
                reason="NoBrokerToken",
            )
        headers = {"Authorization": f"token {self._token}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body)
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT", "PATCH"):
            payload = ""
        request = HTTPRequest(
            self.url + path.lstrip("/"),
            method=method,
            headers=headers,
            body=payload,
            request_timeout=timeout or self.timeout,
            connect_timeout=10.0,
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as err:
            if err.code == 599 or err.response is None:  # timeout or a closed connection
                raise self._unavailable(err.message or err) from err
            raise self._error(err.code, err.response.body) from err
        except OSError as err:  # refused, reset, no route, name not known
            raise self._unavailable(err.strerror or err) from err
        if not response.body:
            return None
        try:
            return json.loads(response.body)
        except ValueError as err:
            raise BrokerError(
                f"The tfenv broker at {self.url} answered {method} {path} with something "
                "that is not JSON; is broker_url the broker's address?",
                status=502,
                reason="BadBrokerAnswer",
            ) from err

    def _error(self, status: int, raw: bytes | None) -> BrokerError:
        data: Any = None
        try:
            data = json.loads(raw or b"")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {}
        message = str(data.get("message") or "").strip()
        if not message:
            text = (raw or b"").decode("utf-8", "replace").strip()
            message = f"The tfenv broker at {self.url} answered {status}" + (
                f": {text[:300]}" if text and not text.startswith("<") else "."
            )
        cls = BrokerNotFoundError if status == 404 else BrokerError
        return cls(
            message,
            status=status,
            reason=str(data.get("reason") or ""),
            logs=str(data.get("logs") or ""),
        )

    # -- the API (docs/broker.md) ------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        return dict(await self.request("GET", "api/me"))

    async def gpus(self) -> dict[str, Any]:
        """``{"allocation": [device with its holders, …]}`` (docs/gpus.md)."""
        return dict(await self.request("GET", "api/gpus") or {})

    async def environments(self) -> list[dict[str, Any]]:
        answer = await self.request("GET", "api/environments")
        return list((answer or {}).get("environments") or [])

    async def probe(self, env_id: str, *, refresh: bool = False) -> dict[str, Any]:
        """``{"state": "ok", ...}``: the image's probe (the broker runs it when not cached)."""
        path = f"api/environments/{quote(env_id, safe='')}/probe"
        return dict(await self.request("GET", path + ("?refresh=1" if refresh else "")))

    async def prepare_runtime(self, kernel_id: str, *, restart: bool) -> dict[str, Any]:
        """Docker mode: ``{"runtime_dir": ...}``, the kernel's folder, made by the broker.
        Kubernetes mode: ``{"backend": "kubernetes", "transport": "tcp", "ports": ...}``."""
        answer = await self.request(
            "POST", f"api/kernels/{_kid(kernel_id)}/runtime", {"restart": restart}
        )
        return dict(answer or {})

    async def start_kernel(self, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        return dict(await self.request("POST", "api/kernels", body, timeout=timeout))

    async def checkpoints(self, envs: list[str]) -> dict[str, Any]:
        """Kubernetes mode: ``{env: {"claim", "namespace", "inventory"}}``."""
        query = "&".join(f"environment={quote(e, safe='')}" for e in envs)
        answer = await self.request("GET", f"api/checkpoints?{query}")
        return dict((answer or {}).get("environments") or {})

    async def delete_checkpoint_files(self, env: str, paths: list[str]) -> dict[str, Any]:
        path = f"api/checkpoints/{quote(env, safe='')}/delete"
        return dict(await self.request("POST", path, {"paths": paths}))

    async def kernels(self) -> list[dict[str, Any]]:
        answer = await self.request("GET", "api/kernels")
        return list((answer or {}).get("kernels") or [])

    async def kernel(self, kernel_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"api/kernels/{_kid(kernel_id)}"))

    async def keep_kernel(self, kernel_id: str, *, held_as: str | None = None) -> dict[str, Any]:
        """Kubernetes mode: this server stops and keeps the kernel (its pod is marked kept;
        ``held_as``: a taken pool pod's kernel id in this server)."""
        body = {"held_as": held_as} if held_as else {}
        return dict(await self.request("POST", f"api/kernels/{_kid(kernel_id)}/keep", body) or {})

    async def adopt_kernel(self, kernel_id: str) -> dict[str, Any]:
        """Kubernetes mode: take a kept kernel over: its state with ``ip``, ``ports`` and
        the ``key`` from its Secret (the caller's own kernels only)."""
        return dict(await self.request("POST", f"api/kernels/{_kid(kernel_id)}/adopt", {}))

    async def signal(self, kernel_id: str, signum: int) -> None:
        await self.request("POST", f"api/kernels/{_kid(kernel_id)}/signal", {"signal": signum})

    async def logs(self, kernel_id: str, tail: int = 30) -> str:
        answer = await self.request("GET", f"api/kernels/{_kid(kernel_id)}/logs?tail={tail}")
        return str((answer or {}).get("logs") or "")

    async def live(self, kernel_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"api/kernels/{_kid(kernel_id)}/live"))

    async def delete_kernel(self, kernel_id: str, *, restart: bool = False) -> None:
        """Remove the kernel's container and runtime folder (``restart``: keep the folder);
        no error when already gone."""
        path = f"api/kernels/{_kid(kernel_id)}"
        try:
            await self.request("DELETE", path + ("?restart=1" if restart else ""))
        except BrokerNotFoundError:
            return


def _kid(kernel_id: str) -> str:
    return quote(kernel_id, safe="")


class BrokerBackend(KernelBackend):
    """The broker's REST API as a :class:`KernelBackend`, for a single-user server on a
    hub: every call is one request, answered by the broker's own backend (Docker or
    Kubernetes). The token says who the caller is, so the ``caller`` arguments are not
    sent; the broker applies its policy (groups, quotas, folders) itself.

    Which features there are depends on the broker's backend (``GET /api/me``'s
    ``backend``): :meth:`learn_backend` reads it once; until then Docker's are assumed.
    """

    name = "broker"
    features = frozenset({"adopt", "pool", "live", "gpu_allocation", "runtime_dirs"})

    #: What the broker's backends support, seen from a server.
    _FEATURES_OF = {
        "docker": frozenset({"adopt", "pool", "live", "gpu_allocation", "runtime_dirs"}),
        "kubernetes": frozenset({"live", "checkpoints", "adopt"}),
    }

    def __init__(self, client: BrokerClient) -> None:
        self.client = client
        #: The broker's backend ("docker", "kubernetes"), once asked.
        self.remote: str | None = None

    @property
    def url(self) -> str:
        return self.client.url

    async def learn_backend(self) -> str:
        """The broker's backend, asked once (``GET /api/me``); sets :attr:`features`."""
        if self.remote is None:
            me = await self.client.me()
            self.remote = str(me.get("backend") or "docker")
            self.features = self._FEATURES_OF.get(self.remote, frozenset())
        return self.remote

    async def prepare_connection(
        self, caller: Caller | None, kernel_id: str, restart: bool
    ) -> dict[str, Any]:
        return await self.client.prepare_runtime(kernel_id, restart=restart)

    async def start(
        self,
        caller: Caller | None,
        request: KernelStart,
        env: Environment,
        *,
        admit: Admit | None = None,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """``POST /api/kernels`` (the broker checks quotas: ``admit`` is not called)."""
        body: dict[str, Any] = {
            "kernel_id": request.kernel_id,
            "environment": env.id,
            "cwd": request.cwd,
            "mount": request.mount or None,
            "env": dict(request.env),
            "server": request.server,
        }
        if request.gpu_devices:
            body["gpu_devices"] = list(request.gpu_devices)
        if request.choices:
            body["choices"] = dict(request.choices)
        if request.key is not None:
            body["key"] = request.key
        if request.curve is not None:  # CurveZMQ keys for a kernel pod (kernels/curve.py)
            body["curve"] = request.curve.as_request()
        return await self.client.start_kernel(body, timeout=timeout)

    async def usage(self, caller: Caller | None, *, exclude: str | None = None) -> Usage:
        usage = (await self.client.me()).get("usage") or {}
        return Usage(
            kernels=int(usage.get("kernels", 0)),
            gpus=int(usage.get("gpus", 0)),
            probes=int(usage.get("probes", 0)),
        )

    async def find(self, caller: Caller | None, kernel_id: str) -> KernelInfo | None:
        try:
            return KernelInfo.from_dict(await self.client.kernel(kernel_id))
        except BrokerNotFoundError:
            return None

    async def adopt(self, caller: Caller | None, kernel_id: str) -> KernelInfo:
        info = await self.find(caller, kernel_id)
        if info is None:
            raise KernelNotFound(kernel_id)
        return info

    async def list_kernels(self, caller: Caller | None) -> list[KernelSummary]:
        return [KernelSummary.from_dict(row) for row in await self.client.kernels()]

    async def logs(self, caller: Caller | None, kernel_id: str, tail: int = 30) -> str:
        return await self.client.logs(kernel_id, tail)

    async def signal(self, caller: Caller | None, kernel_id: str, signum: int) -> None:
        await self.client.signal(kernel_id, signum)

    async def remove(
        self, caller: Caller | None, kernel_id: str, *, keep_runtime: bool = False
    ) -> None:
        await self.client.delete_kernel(kernel_id, restart=keep_runtime)

    async def live(self, caller: Caller | None, kernel_id: str) -> dict[str, Any]:
        return await self.client.live(kernel_id)

    async def gpus(self, caller: Caller | None) -> dict[str, Any]:
        return await self.client.gpus()

    async def image_status(self, envs: list[Environment]) -> dict[str, ImageStatus]:
        """The broker's image status of each environment it knows (others: unknown)."""
        known = {str(e.get("id")): e for e in await self.client.environments()}
        out = {}
        for env in envs:
            entry = known.get(env.id)
            out[env.id] = (
                ImageStatus.from_dict(entry.get("image") or {})
                if entry is not None
                else ImageStatus(
                    present=None, error=f"The tfenv broker has no environment '{env.id}'."
                )
            )
        return out

    async def probe(
        self,
        caller: Caller | None,
        env: Environment,
        *,
        refresh: bool = False,
        admit: Admit | None = None,
    ) -> dict[str, Any]:
        return await self.client.probe(env.id, refresh=refresh)

    async def checkpoints(self, caller: Caller | None, env_ids: list[str]) -> dict[str, Any]:
        """The broker's checkpoints (a broker over Kubernetes: see :meth:`learn_backend`)."""
        if not self.supports("checkpoints"):
            raise self.unsupported("checkpoints", "This server reads its own folder.")
        return await self.client.checkpoints(env_ids)

    async def delete_checkpoint(
        self, caller: Caller | None, env: Environment, paths: list[str]
    ) -> dict[str, Any]:
        if not self.supports("checkpoints"):
            raise self.unsupported("checkpoints", "This server deletes in its own folder.")
        return await self.client.delete_checkpoint_files(env.id, paths)
