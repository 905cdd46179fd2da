"""TensorBoards through the broker on Kubernetes: the pods of
:mod:`jupyter_tfenv.backends.kubernetes.tensorboard`, in the broker's answers.

The same operations as the Docker backend's ``/api/tensorboards`` (open, list, get, stop,
the idle sweep, close), for a broker whose backend is ``kubernetes``: a TensorBoard is a
pod of the environment's image over the user's log claims (read-only), and the answer
names its ``address`` (``tcp:<pod ip>:6006``, what the server's proxy connects to:
``tensorboard/proxy.py``'s ``tcp_target``) instead of a socket. Policy as for kernels:
the caller's own only (another user's name is a 404), the view's environment one the
caller may use (404/403), the comparison's image environment too (409), at most
``max_per_user`` at once (429). Activity is kept here, per user and name: every ``get``
is one; the sweep deletes the pods no server asked for within ``idle_timeout`` (a pod
this broker did not start, a previous broker's, is timed from the sweep that finds it).

The broker's ``tensorboards`` is this object when its backend is ``kubernetes``
(``broker/tensorboards.py``), so its ``/api/tensorboards`` routes come here.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from jupyter_tfenv.backends.kubernetes.start import COMPONENT_LABEL, MANAGED_BY
from jupyter_tfenv.backends.kubernetes.tensorboard import COMPONENT
from jupyter_tfenv.broker.policy import BrokerError
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.core.labels import LABEL_ENVIRONMENT, LABEL_OWNER, LABEL_TENSORBOARD
from jupyter_tfenv.errors import TFEnvError
from jupyter_tfenv.tensorboard.container import COMPARE, newest_environment, tensorboard_name
from jupyter_tfenv.tensorboard.manager import parse_view
from jupyter_tfenv.tensorboard.proxy import tcp_target

MANAGED_BY_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


class PodTensorBoardsAtBroker:
    """Every user's TensorBoard pods at this broker (a ``KubernetesBackend``'s)."""

    def __init__(
        self,
        broker: Any,
        *,
        max_per_user: int = 2,
        idle_timeout: float = 1800.0,
        compare_environment: str = "",
    ) -> None:
        self.broker = broker
        self.max_per_user = max_per_user
        self.idle_timeout = idle_timeout
        self.compare_environment = compare_environment
        #: (user, name) → (started, last activity), monotonic-free wall seconds.
        self._seen: dict[tuple[str, str], tuple[float, float]] = {}

    def _backend(self) -> Any:
        return self.broker.kernel_backend

    def _image_env(self, caller: Caller, view: str, environment: str | None) -> Environment:
        if environment is not None:
            env: Environment = self.broker.environment_for(caller, environment, status=404)
            return env
        configured = self.compare_environment
        newest = newest_environment(self.broker.get_catalog().all())
        image_env = configured or (newest.id if newest is not None else "")
        if not image_env:
            raise BrokerError(
                "No environment says its TensorFlow version, so none can run the comparison: "
                "set c.TFEnvBroker.tensorboard_environment.",
                status=409,
                reason="no image for compare",
            )
        env = self.broker.environment_for(caller, image_env, status=409)
        return env

    def _log_envs(self, caller: Caller, view: str, image_env: Environment) -> list[Environment]:
        if view != COMPARE:
            return [image_env]
        usable = []
        for env in self.broker.get_catalog().all():
            try:
                usable.append(self.broker.environment_for(caller, env.id, status=403))
            except TFEnvError:
                continue  # not this user's to use: its logs are not shown
        return usable

    def _answer(self, caller: Caller, state: Any, image: str = "") -> dict[str, Any]:
        name = state.annotations.get(LABEL_TENSORBOARD, "")
        started, last = self._seen.get((caller.name, name), (time.time(), time.time()))
        environment = None if name == COMPARE else state.annotations.get(LABEL_ENVIRONMENT)
        ready = state.running and state.ip and not state.deleting
        return {
            "name": name,
            "view": COMPARE if name == COMPARE else "environment",
            "environment": environment,
            "image": image or state.image,
            "state": "running" if ready else "error",
            "message": None
            if ready
            else "The pod is being deleted."
            if state.deleting
            else (state.reason or f"The pod is {state.phase}."),
            "started_at": _iso(started),
            "last_activity": _iso(last),
            "address": tcp_target(state.ip, 6006) if ready else None,
        }

    async def open(self, caller: Caller, body: Any) -> tuple[dict[str, Any], bool]:
        """``POST``: the caller's TensorBoard of the view, started or reused."""
        try:
            view, environment = parse_view(body)
        except TFEnvError as err:
            raise BrokerError(err.message, reason="bad body") from None
        image_env = self._image_env(caller, view, environment)
        name = tensorboard_name(view, environment)
        backend = self._backend()
        async with self.broker.user_lock(caller.name):
            others = [
                s
                for s in await backend.tensorboards(caller)
                if s.annotations.get(LABEL_TENSORBOARD) != name
            ]
            if self.max_per_user == 0:
                raise BrokerError(
                    "TensorBoard is turned off on this hub "
                    "(c.TFEnvBroker.max_tensorboards_per_user = 0); ask your JupyterHub admin.",
                    status=403,
                    reason="tensorboard off",
                )
            if self.max_per_user > 0 and len(others) >= self.max_per_user:
                names = ", ".join(s.annotations.get(LABEL_TENSORBOARD, "?") for s in others)
                raise BrokerError(
                    f"You have {len(others)} TensorBoard(s) open, the most this hub allows "
                    f"(c.TFEnvBroker.max_tensorboards_per_user = {self.max_per_user}). Close "
                    f"one ({names or 'none'}) and open this one again.",
                    status=429,
                    reason="tensorboard quota",
                )
            started = await backend.start_tensorboard(
                caller, name, image_env, self._log_envs(caller, view, image_env)
            )
        now = time.time()
        first = self._seen.get((caller.name, name), (now, now))[0]
        self._seen[(caller.name, name)] = (now if not started.reused else first, now)
        state = await backend.tensorboard_state(caller, name)
        if state is None:
            raise not_found(name)
        return self._answer(caller, state, backend.image_of(image_env)), not started.reused

    async def listing(self, caller: Caller) -> dict[str, Any]:
        states = await self._backend().tensorboards(caller)
        return {"tensorboards": [self._answer(caller, s) for s in states]}

    async def get(self, caller: Caller, name: str) -> dict[str, Any]:
        """The caller's TensorBoard (404 for anyone else's): asking is activity."""
        state = await self._backend().tensorboard_state(caller, name)
        if state is None:
            raise not_found(name)
        now = time.time()
        self._seen[(caller.name, name)] = (self._seen.get((caller.name, name), (now, now))[0], now)
        return self._answer(caller, state)

    async def stop(self, caller: Caller, name: str) -> None:
        try:
            await self._backend().stop_tensorboard(caller, name)
        except BrokerError as err:
            if err.http_status == 404:
                raise not_found(name) from None
            raise
        self._seen.pop((caller.name, name), None)

    async def sweep(self) -> list[tuple[str, str]]:
        """Delete the pods no server asked for within the idle timeout (the ones this
        broker knows of); what it deleted. Never raises."""
        if not self.idle_timeout:
            return []
        gone = []
        now = time.time()
        try:
            await self._adopt(now)
        except Exception as err:  # a sweep never stops the broker
            self.broker.log.warning("tfenv-broker: TensorBoard pods not listed: %s", err)
        for (user, name), (_, last) in list(self._seen.items()):
            if now - last < self.idle_timeout:
                continue
            try:
                # The pods are found by the owner's name; the ids are not used.
                caller = Caller(name=user, uid=0, gid=0, home="/")
                await self._backend().stop_tensorboard(caller, name)
            except Exception as err:  # a sweep never stops the broker
                if getattr(err, "http_status", 0) != 404:
                    self.broker.log.warning(
                        "tfenv-broker: TensorBoard %s of %s not removed: %s", name, user, err
                    )
                    continue  # tried again at the next sweep
            self._seen.pop((user, name), None)
            gone.append((user, name))
        return gone

    async def close(self) -> None:
        """The broker stops: the pods stay (the pod IPs do not change with the broker);
        the next broker's sweep finds them and removes them once idle."""

    async def _adopt(self, now: float) -> None:
        """TensorBoard pods this broker does not know (a previous broker's, before a
        restart) are timed from now: the sweep removes them once idle as long."""
        from jupyter_tfenv.backends.kubernetes.podstatus import pod_state  # noqa: PLC0415

        api = self._backend().api()
        answer = await api._call(
            api.core.list_namespaced_pod,
            api.namespace,
            label_selector=f"{COMPONENT_LABEL}={COMPONENT},{MANAGED_BY_SELECTOR}",
        )
        for item in (answer or {}).get("items") or []:
            state = pod_state(item)
            key = (
                state.annotations.get(LABEL_OWNER, ""),
                state.annotations.get(LABEL_TENSORBOARD, ""),
            )
            if all(key) and key not in self._seen:
                self._seen[key] = (now, now)


def not_found(name: str) -> BrokerError:
    """The 404 of a TensorBoard the caller does not have (container or pod)."""
    return BrokerError(
        f"You have no TensorBoard '{name}' at the broker (it may have been closed or removed "
        "when unused). Open it again: POST /api/tensorboards.",
        status=404,
        reason="no such tensorboard",
    )
