"""Image pulls with per-layer progress, lock-aware, cancellable.

:func:`pull_blocking` is the one pull (for the CLI and the server): it follows Docker's
``POST /images/create`` stream, turns its lines into progress events, pulls
``repository@<locked digest>`` when a lock entry pins the tag (and tags the result), and
turns registry errors into messages a person can act on. A :class:`PullCanceller` stops
it for real: it shuts the HTTP connection to the Docker engine down, and the engine
cancels the transfer when its client goes away (verified against dockerd 20.10 with
a registry on loopback: the blob downloads stop mid-way, and no image appears).

:class:`PullManager` runs pulls for the server (asyncio; the blocking stream runs in a
worker thread), one per image at a time, and fans their events out to any number of
subscribers (a server-sent-events handler, for instance) through :meth:`Pull.events`.

A pull is ``done`` only when Docker said so (``Status: Downloaded newer image`` or
``Status: Image is up to date``) *and* the image is then on the engine; a stream that
ends early, is cancelled or carries an error never counts as done.
"""

# Longer than 600 lines: one pull's state machine (layers, progress, lock check, cancel)
# and its manager, which share the progress model and are tested as one.

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import docker
from docker import auth
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from jupyter_tfenv.backends.docker.engine import connect
from jupyter_tfenv.catalog.lock import LockFile, local_digests
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.events import EventStream
from jupyter_tfenv.errors import TFEnvError, engine_unreachable, unreachable_error

#: Docker's per-layer statuses after which a layer needs nothing more.
LAYER_DONE = ("Pull complete", "Already exists")
_DOWNLOADED = ("Verifying Checksum", "Download complete", "Extracting", "Pull complete")
_FINAL_PREFIXES = ("Status: Downloaded newer image", "Status: Image is up to date")

PullEvent = dict[str, Any]
log = logging.getLogger(__name__)


class PullCancelledError(TFEnvError):
    """The pull was cancelled; the image is not (completely) on the engine."""


@dataclass(frozen=True)
class PullTarget:
    """What a pull of an environment fetches."""

    repository: str
    reference: str  # tag or digest, as Docker's fromImage/tag pair wants it
    retag: str | None  # the tag to put on the result (locked tag references)
    locked: str | None  # the digest pinned by the catalog or the lock file

    @property
    def name(self) -> str:
        sep = "@" if self.reference.startswith("sha256:") else ":"
        return f"{self.repository}{sep}{self.reference}"


def pull_target(env: Environment, lock: LockFile | None = None) -> PullTarget:
    """``repo@digest`` for digest pins and locked tags, else ``repo:tag``."""
    ref = env.image_ref
    if ref.digest:
        return PullTarget(ref.repository, ref.digest, None, ref.digest)
    locked = lock.get(env.image) if lock is not None else None
    if locked:
        return PullTarget(ref.repository, locked, ref.tag, locked)
    return PullTarget(ref.repository, ref.tag or "latest", None, None)


@dataclass(frozen=True)
class PullResult:
    env_id: str
    image: str  # the catalog reference
    pulled: str  # what was fetched: repo:tag or repo@digest
    image_id: str
    digest: str | None
    repo_digests: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.env_id,
            "image": self.image,
            "pulled": self.pulled,
            "image_id": self.image_id,
            "digest": self.digest,
            "repo_digests": list(self.repo_digests),
        }


def explain_pull_error(env: Environment, target: PullTarget, said: str) -> str:
    """Docker's or the registry's words for a failed pull → what is wrong and what to do."""
    said = said.strip()
    lowered = said.lower()
    registry = env.image_ref.registry
    what = f"{target.name} (environment '{env.id}')"
    if "manifest unknown" in lowered or ("not found" in lowered and "manifest" in lowered):
        if target.locked and target.retag:
            hint = (
                f"The lock file pins {env.image} to {target.locked}, and that digest is gone "
                f"from the registry: `jupyter tfenv lock {env.id}` re-locks to what the tag "
                "points to now."
            )
        elif target.locked:
            hint = "The digest in the catalog is not in the registry: check the reference."
        else:
            hint = "The tag does not exist there: check the reference in the catalog."
        return f"Pulling {what} failed: the registry {registry} has no such image. {hint} " + (
            f"(Docker said: {said})"
        )
    if (
        "repository does not exist" in lowered
        or "unauthorized" in lowered
        or "denied" in lowered
        or "authentication required" in lowered
    ):
        return (
            f"Pulling {what} failed: the registry {registry} refused it (Docker said: {said}). "
            "Check the repository name, and `docker login "
            f"{registry}` if the repository is private."
        )
    if any(
        word in lowered
        for word in (
            "connection refused",
            "no such host",
            "i/o timeout",
            "dial tcp",
            "network is unreachable",
            "tls handshake",
            "server gave http response to https client",
            "context deadline exceeded",
            "no route to host",
        )
    ):
        return (
            f"Pulling {what} failed: the Docker engine cannot reach the registry {registry} "
            f"(Docker said: {said}). Check that the registry is up and reachable from the "
            "Docker engine's host (network, proxy; `insecure-registries` in daemon.json for "
            "a plain-HTTP registry that is not on loopback)."
        )
    if "no space left on device" in lowered:
        return (
            f"Pulling {what} failed: the Docker engine ran out of disk space (Docker said: "
            f"{said}). Free space (`docker system prune`) and pull again."
        )
    return (
        f"Pulling {what} failed: {said}. Check the reference, that the registry is reachable "
        "from the Docker engine, and `docker login` for private registries."
    )


# ------------------------------------------------------------------ progress accounting


@dataclass
class _Layer:
    status: str = ""
    size: int = 0  # compressed size, known once "Downloading" reports a total
    downloaded: int = 0
    extracted: int = 0
    current: int = 0  # of the current phase, as Docker reports it
    total: int = 0
    done: bool = False


@dataclass
class PullProgress:
    """Docker's pull stream lines → per-layer and overall progress."""

    layers: dict[str, _Layer] = field(default_factory=dict)
    digest: str | None = None
    final_status: str | None = None

    @property
    def finished(self) -> bool:
        return self.final_status is not None

    def overall(self) -> dict[str, Any]:
        size = sum(layer.size for layer in self.layers.values())
        downloaded = sum(min(layer.downloaded, layer.size) for layer in self.layers.values())
        extracted = sum(min(layer.extracted, layer.size) for layer in self.layers.values())
        done = sum(1 for layer in self.layers.values() if layer.done)
        unknown = any(not layer.done and not layer.size for layer in self.layers.values())
        percent: float | None
        if self.finished:
            percent = 100.0
        elif unknown or not size:
            # One method throughout: a percentage only once every layer still to fetch has
            # a known size (a layer-count guess followed by bytes would jump backwards).
            percent = None
        else:
            # Downloading and extracting are both real work: each counts for half.
            percent = min(99.9, 100.0 * (downloaded + extracted) / (2 * size))
        return {
            "current": downloaded,
            "total": size,
            "percent": None if percent is None else round(percent, 1),
            "layers": len(self.layers),
            "layers_done": done,
        }

    def layer_dict(self, layer_id: str) -> dict[str, Any]:
        layer = self.layers[layer_id]
        return {"status": layer.status, "current": layer.current, "total": layer.total}

    def update(self, raw: dict[str, Any]) -> PullEvent:
        """Apply one decoded line of Docker's stream; return the event it makes."""
        status = str(raw.get("status", ""))
        layer_id = str(raw.get("id", ""))
        if status.startswith("Digest: "):
            self.digest = status[len("Digest: ") :].strip()
        if status.startswith(_FINAL_PREFIXES):
            self.final_status = status
        # "Pulling from repo" carries the tag as its id: not a layer.
        if not layer_id or status.startswith("Pulling from"):
            return {"type": "status", "status": status, "progress": self.overall()}
        layer = self.layers.setdefault(layer_id, _Layer())
        layer.status = status
        detail = raw.get("progressDetail") or {}
        current, total = int(detail.get("current") or 0), int(detail.get("total") or 0)
        if status == "Downloading":
            if total:
                layer.size = max(layer.size, total)
            layer.downloaded = current
        elif status in _DOWNLOADED:
            layer.downloaded = layer.size
            if status == "Extracting":
                layer.extracted = current
                if total:
                    layer.size = max(layer.size, total)
                    layer.downloaded = layer.size
        if status in LAYER_DONE:
            layer.done = True
            layer.extracted = layer.downloaded = layer.size
        if total:
            layer.current, layer.total = current, total
        elif status in _DOWNLOADED or status in LAYER_DONE:
            layer.current = layer.total = layer.size
        return {
            "type": "layer",
            "layer": layer_id,
            "status": status,
            "current": layer.current,
            "total": layer.total,
            "progress": self.overall(),
        }


# ------------------------------------------------------------------ cancellation


def _shutdown_response(response: Any) -> None:
    """Stop a streaming response now, also when another thread is blocked reading it.

    ``close()`` alone does not wake a ``recv`` blocked in another thread; shutting the
    socket down does, and the Docker engine sees its client go away.
    """
    sock = None
    with contextlib.suppress(AttributeError):
        raw = response.raw._fp.fp.raw
        sock = getattr(raw, "_sock", None) or getattr(raw, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    else:
        with contextlib.suppress(Exception):
            response.close()


class PullCanceller:
    """Cancels one :func:`pull_blocking` from any thread."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._response: Any = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def attach(self, response: Any) -> None:
        with self._lock:
            self._response = response
            if self._cancelled.is_set():
                _shutdown_response(response)

    def detach(self) -> None:
        with self._lock:
            self._response = None

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
            if self._response is not None:
                _shutdown_response(self._response)


# ------------------------------------------------------------------ the pull


def _open_stream(client: docker.DockerClient, target: PullTarget) -> Any:
    """``POST /images/create`` as the docker SDK's ``APIClient.pull`` sends it, but keeping
    the response, so that a cancel can shut its connection down."""
    api = client.api
    registry, _ = auth.resolve_repository_name(target.repository)
    headers = {}
    header = auth.get_config_header(api, registry)
    if header:
        headers["X-Registry-Auth"] = header
    params = {"fromImage": target.repository, "tag": target.reference}
    response = api._post(
        api._url("/images/create"), params=params, headers=headers, stream=True, timeout=None
    )
    try:
        api._raise_for_status(response)
    except BaseException:
        response.close()
        raise
    return response


def _engine_gone(client: docker.DockerClient, target: PullTarget) -> TFEnvError | None:
    """The error of a pull whose engine went away (it stopped or restarted during the
    pull: a ping finds it gone), naming the engine and what to do; None while it answers."""
    try:
        client.ping()
    except Exception as err:
        if not engine_unreachable(err):
            return None
        return TFEnvError(
            f"Pulling {target.name} stopped: the Docker engine went away during the pull, "
            "so the image is not (completely) pulled; pull it again once the engine is back. "
            f"{unreachable_error(err).message}"
        )
    return None


def _connection_lost(client: docker.DockerClient, target: PullTarget, err: Exception) -> TFEnvError:
    """A pull's stream broke off: the engine went away, or the connection did."""
    log.debug(
        "tfenv: the pull of %s lost its connection to the Docker engine: %r", target.name, err
    )
    gone = _engine_gone(client, target)
    if gone is not None:
        return gone
    return TFEnvError(
        f"Lost the connection to the Docker engine while pulling {target.name} (did it "
        "restart?). The image is not (completely) pulled; pull it again."
    )


def pull_blocking(
    client: docker.DockerClient,
    env: Environment,
    on_event: Callable[[PullEvent], None] | None = None,
    *,
    lock: LockFile | None = None,
    canceller: PullCanceller | None = None,
) -> PullResult:
    """Pull ``env``'s image (the locked digest when ``lock`` pins its tag), blocking.

    ``on_event`` gets each progress event (``type`` ``status`` or ``layer``, with the
    overall ``progress``). Raises ``PullCancelledError`` when ``canceller`` cancelled it and
    ``TFEnvError`` with an actionable message on any failure.
    """
    target = pull_target(env, lock)
    progress = PullProgress()
    canceller = canceller or PullCanceller()
    if canceller.cancelled:
        raise PullCancelledError(f"The pull of {target.name} was cancelled.")
    try:
        response = _open_stream(client, target)
    except APIError as err:
        raise TFEnvError(explain_pull_error(env, target, str(err.explanation or err))) from err
    except DockerException as err:
        raise TFEnvError(f"Pulling {target.name} failed: {err}") from err
    canceller.attach(response)
    failure: str | None = None
    stream = client.api._stream_helper(response, decode=True)
    try:
        while not canceller.cancelled:
            try:
                raw = next(stream)
            except StopIteration:
                break
            except Exception as err:
                # A socket shut down mid-read surfaces as almost anything from urllib3.
                if canceller.cancelled:
                    break
                raise _connection_lost(client, target, err) from err
            if not isinstance(raw, dict):
                continue
            if raw.get("error"):
                detail = raw.get("errorDetail") or {}
                failure = str(detail.get("message") or raw["error"])
                break
            event = progress.update(raw)
            if on_event is not None:
                on_event(event)
    finally:
        canceller.detach()
        with contextlib.suppress(Exception):
            stream.close()
        with contextlib.suppress(Exception):
            response.close()
    if failure is not None:
        raise TFEnvError(explain_pull_error(env, target, failure))
    if canceller.cancelled and not progress.finished:
        raise PullCancelledError(
            f"The pull of {target.name} was cancelled; the image is not (completely) pulled."
        )
    if not progress.finished:
        gone = _engine_gone(client, target)
        if gone is not None:
            raise gone
        raise TFEnvError(
            f"The pull of {target.name} ended before the Docker engine reported it complete; "
            "the image is not (completely) pulled. Pull it again."
        )
    try:
        image = client.images.get(target.name)
    except (ImageNotFound, NotFound) as err:
        raise TFEnvError(
            f"The Docker engine reported the pull of {target.name} complete, but the image "
            "is not there. Pull it again."
        ) from err
    if target.retag:
        image.tag(target.repository, target.retag)
        image.reload()
    digest = target.locked or progress.digest
    if digest is None:
        found = local_digests(client, env)
        digest = found[0] if found else None
    return PullResult(
        env_id=env.id,
        image=env.image,
        pulled=target.name,
        image_id=str(image.id),
        digest=digest,
        repo_digests=list(image.attrs.get("RepoDigests") or []),
    )


# ------------------------------------------------------------------ the server's manager


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


_TERMINAL = ("done", "error", "cancelled")


class Pull:
    """One pull the server runs. Its state changes only on the event loop's thread."""

    def __init__(self, env: Environment, target: PullTarget) -> None:
        self.id = uuid.uuid4().hex
        self.environment = env.id
        self.image = env.image
        self.reference = target.name
        self.locked = target.locked
        self.state = "pulling"
        self.layers: dict[str, dict[str, Any]] = {}
        self.current = 0
        self.total = 0
        self.percent = 0.0
        self.message = f"Pulling {target.name}"
        self.image_id: str | None = None
        self.digest: str | None = None
        self.started = time.time()
        self.finished: float | None = None
        self._stream = EventStream("pull_id", self.id, _TERMINAL)
        self._canceller = PullCanceller()

    @property
    def is_finished(self) -> bool:
        return self.state in _TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "environment": self.environment,
            "image": self.image,
            "reference": self.reference,
            "locked": self.locked,
            "state": self.state,
            "layers": {k: dict(v) for k, v in self.layers.items()},
            "current": self.current,
            "total": self.total,
            "percent": self.percent,
            "message": self.message,
            "image_id": self.image_id,
            "digest": self.digest,
            "started": _iso(self.started),
            "finished": _iso(self.finished),
        }

    # -- events

    def _apply(self, event: PullEvent) -> None:
        if self.is_finished:
            return
        progress = event.get("progress") or {}
        if event["type"] == "layer":
            self.layers[event["layer"]] = {
                "status": event["status"],
                "current": event["current"],
                "total": event["total"],
            }
        if progress:
            self.current = progress["current"]
            self.total = progress["total"]
            self.percent = progress["percent"]
        if event.get("status"):
            self.message = event["status"]
        self._stream.publish(event)

    def _finish(self, state: str, message: str, result: PullResult | None = None) -> None:
        self.state = state
        self.message = message
        self.finished = time.time()
        if result is not None:
            self.image_id = result.image_id
            self.digest = result.digest
            self.percent = 100.0
            self.current = self.total
        self._stream.publish({"type": state, **self.to_dict()})

    def events(self) -> AsyncIterator[PullEvent]:
        """A ``snapshot`` of the pull so far, then its live events, in order, to the end.

        The last event is always the terminal one (``done``, ``error`` or ``cancelled``),
        also for a subscriber that comes after the pull finished.
        """
        return self._stream.events(self.to_dict)

    # -- control

    def cancel(self) -> CancelRequest:
        """Stop the transfer now (from any thread).

        The result is true when the pull was still running, and can be awaited for the
        pull's final state: ``pull.cancel()`` or ``await pull.cancel()`` (→ the Pull).
        """
        if self.is_finished:
            return CancelRequest(self, accepted=False)
        self._canceller.cancel()
        return CancelRequest(self, accepted=True)

    async def wait(self) -> Pull:
        await self._stream.wait()
        return self


class CancelRequest:
    """What :meth:`Pull.cancel` returns: truthy when the pull was running; awaitable."""

    def __init__(self, pull: Pull, *, accepted: bool) -> None:
        self.pull = pull
        self.accepted = accepted

    def __bool__(self) -> bool:
        return self.accepted

    def __await__(self) -> Generator[Any, None, Pull]:
        return self.pull.wait().__await__()


class PullManager:
    """Runs the server's pulls: one per image at a time, each in a worker thread."""

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        client_factory: Callable[[], docker.DockerClient] = connect,
        on_finish: Callable[[Pull], None] | None = None,
        keep_finished: int = 50,
    ) -> None:
        """``client``: a connected docker client (else ``client_factory()`` in the worker);
        ``on_finish(pull)``: called on the event loop once per pull that reaches ``done``,
        ``error`` or ``cancelled`` (metrics, logs); ``keep_finished``: how many finished
        pulls :meth:`get` and :meth:`list` still know."""
        self._client = client
        self._on_finish = on_finish
        self._client_factory = client_factory
        self._keep_finished = keep_finished
        self._pulls: dict[str, Pull] = {}
        self._active: dict[str, Pull] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, pull_id: str) -> Pull | None:
        return self._pulls.get(pull_id)

    def active(self, image: str) -> Pull | None:
        return self._active.get(image)

    def list(self) -> list[Pull]:
        return list(self._pulls.values())

    async def start(self, env: Environment, *, lock: LockFile | None = None) -> Pull:
        """Start pulling ``env``'s image, or return the pull of that image already running."""
        running = self._active.get(env.image)
        if running is not None and not running.is_finished:
            return running
        pull = Pull(env, pull_target(env, lock))
        self._pulls[pull.id] = pull
        self._active[env.image] = pull
        self._forget_old()
        pull._stream.publish({"type": "start", **pull.to_dict()})
        task = asyncio.get_running_loop().create_task(self._run(pull, env, lock))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pull

    async def _run(self, pull: Pull, env: Environment, lock: LockFile | None) -> None:
        loop = asyncio.get_running_loop()

        def on_event(event: PullEvent) -> None:
            loop.call_soon_threadsafe(pull._apply, event)

        def work() -> PullResult:
            client = self._client or self._client_factory()
            return pull_blocking(client, env, on_event, lock=lock, canceller=pull._canceller)

        try:
            result = await loop.run_in_executor(None, work)
        except PullCancelledError as err:
            pull._finish("cancelled", str(err))
        except TFEnvError as err:
            pull._finish("error", str(err))
        except asyncio.CancelledError:
            pull._canceller.cancel()
            pull._finish("cancelled", f"The pull of {pull.reference} was cancelled.")
            raise
        except Exception as err:
            pull._finish("error", f"Pulling {pull.reference} failed: {err}")
        else:
            pull._finish(
                "done", f"Pulled {pull.reference} ({result.digest or result.image_id})", result
            )
        finally:
            if self._active.get(pull.image) is pull:
                del self._active[pull.image]
            if self._on_finish is not None and pull.is_finished:
                try:
                    self._on_finish(pull)
                except Exception:
                    log.exception("tfenv: on_finish of pull %s failed", pull.id)

    def _forget_old(self) -> None:
        finished = [p for p in self._pulls.values() if p.is_finished]
        for old in finished[: max(0, len(finished) - self._keep_finished)]:
            del self._pulls[old.id]

    async def shutdown(self) -> None:
        """Cancel every running pull and wait for them (server shutdown)."""
        running = [p for p in self._active.values() if not p.is_finished]
        for pull in running:
            pull.cancel()
        for pull in running:
            await pull.wait()
