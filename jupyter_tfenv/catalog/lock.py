"""The lock file: which digest each catalog image reference resolved to.

A version tag such as ``tensorflow/tensorflow:2.20.0-jupyter`` is a promise, not a
guarantee: whoever controls the registry can point it at other bits. The lock file
(``tfenv-lock.json``, next to the catalog file by default) records the digest each tag
resolved to when the team locked it::

    {
      "version": 1,
      "images": {
        "tensorflow/tensorflow:2.20.0-jupyter": {
          "digest": "sha256:…",
          "repository": "tensorflow/tensorflow",
          "locked_at": "2025-01-31T12:00:00Z"
        }
      },
      "builds": {"tfenv-derived/ds:v2-…": {"image_id": "sha256:…", "pip": […], …}},
      "resolved": {"ds": {"inputs": "…", "base_digest": "sha256:…", "pip": […], "tag": "v2-…"}}
    }

``builds`` and ``resolved`` are written by ``jupyter tfenv build`` (derived environments,
docs/building.md): ``resolved`` names each derived entry's image (the catalog reads it).

With an entry, ``jupyter tfenv pull`` fetches ``repository@digest`` (and tags it), so
everyone gets the same bits even after the tag moved, and :func:`check_lock` refuses a
local image that does not carry the locked digest. References pinned by digest
(``repo@sha256:…``) are their own lock and need no entry.

``c.TFEnvCatalog.lock_policy`` says what a kernel start does with the lock: ``enforce``
(the default) refuses a local image that is not the locked digest of its tag, and checks
only tags that have an entry (a missing lock file, or a tag without an entry, starts);
``strict`` refuses those too (:func:`require_lock`); ``warn`` logs a mismatch and starts;
``off`` ignores the lock.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from jupyter_tfenv.catalog.images import parse_image_ref
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.errors import TFEnvError

LOCK_VERSION = 1
LOCK_FILE_NAME = "tfenv-lock.json"
#: The values of ``c.TFEnvCatalog.lock_policy``.
LOCK_POLICIES = ("enforce", "strict", "warn", "off")


class LockMismatchError(TFEnvError):
    """The local image of an environment does not carry the digest its lock entry names."""

    def __init__(
        self, message: str, *, env_id: str, image: str, locked: str, local: list[str]
    ) -> None:
        super().__init__(message)
        self.env_id = env_id
        self.image = image
        self.locked = locked
        self.local = list(local)


class LockMissingError(TFEnvError):
    """``lock_policy = strict``: the environment's tag has no lock entry (or no lock file)."""

    def __init__(self, message: str, *, env_id: str, image: str, path: str | None) -> None:
        super().__init__(message)
        self.env_id = env_id
        self.image = image
        self.path = path


def default_lock_path(catalog_file: str | os.PathLike[str]) -> Path:
    """Where the lock file of a catalog file lives: ``tfenv-lock.json`` next to it."""
    return Path(catalog_file).resolve().parent / LOCK_FILE_NAME


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _familiar(repository: str) -> str:
    """Docker Hub names the way Docker prints them: ``docker.io/library/x`` → ``x``."""
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if repository.startswith(prefix):
            repository = repository[len(prefix) :]
            if repository.startswith("library/") and repository.count("/") == 1:
                repository = repository[len("library/") :]
            break
    return repository


@dataclass(frozen=True)
class LockChange:
    """What :func:`lock_environments` did for one environment."""

    env_id: str
    image: str
    old: str | None
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.env_id,
            "image": self.image,
            "old": self.old,
            "new": self.new,
            "changed": self.changed,
        }


class LockFile:
    """The lock file in memory. ``load`` tolerates a missing file; ``save`` is atomic."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        images: dict[str, Any] | None = None,
        *,
        missing: bool = False,
        builds: dict[str, Any] | None = None,
        resolved: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.images: dict[str, dict[str, str]] = dict(images or {})
        #: Derived environments built here (``jupyter tfenv build``): image → base, wheels.
        self.builds: dict[str, dict[str, Any]] = dict(builds or {})
        #: Each derived entry's resolution (by id): base digest, every package with its
        #: sha256, the content tag (jupyter_tfenv.catalog.derived.Resolution).
        self.resolved: dict[str, dict[str, Any]] = dict(resolved or {})
        #: Whether ``load`` found no file (an empty lock either way).
        self.missing = missing

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LockFile:
        """Read ``path``; a missing file is an empty lock, a broken one a ``TFEnvError``."""
        target = Path(path)
        try:
            text = target.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(target, missing=True)
        except OSError as err:
            raise TFEnvError(f"Cannot read the lock file {target}: {err}.") from err
        try:
            data = json.loads(text)
        except ValueError as err:
            raise TFEnvError(
                f"The lock file {target} is not valid JSON ({err}). Fix it, or delete it and "
                "run `jupyter tfenv lock` to write a new one."
            ) from err
        if not isinstance(data, dict) or data.get("version") != LOCK_VERSION:
            raise TFEnvError(
                f"The lock file {target} is not a version {LOCK_VERSION} tfenv lock file "
                '(expected {"version": 1, "images": {…}}). Delete it and run '
                "`jupyter tfenv lock` to write a new one."
            )
        images = data.get("images") or {}
        if not isinstance(images, dict):
            raise TFEnvError(f"The lock file {target}: 'images' must be an object.")
        for ref, entry in images.items():
            if not isinstance(entry, dict) or not str(entry.get("digest", "")).startswith(
                "sha256:"
            ):
                raise TFEnvError(
                    f"The lock file {target}: the entry of '{ref}' has no 'sha256:' digest."
                )
        builds = data.get("builds") or {}
        if not isinstance(builds, dict):
            raise TFEnvError(f"The lock file {target}: 'builds' must be an object.")
        resolved = data.get("resolved") or {}
        if not isinstance(resolved, dict):
            raise TFEnvError(f"The lock file {target}: 'resolved' must be an object.")
        return cls(target, images, builds=builds, resolved=resolved)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": LOCK_VERSION,
            "images": dict(sorted(self.images.items())),
        }
        if self.builds:
            data["builds"] = dict(sorted(self.builds.items()))
        if self.resolved:
            data["resolved"] = dict(sorted(self.resolved.items()))
        return data

    def save(self) -> None:
        """Write the file atomically (a temporary file in the same folder, then rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if self.path.exists():
                os.chmod(tmp, self.path.stat().st_mode & 0o777)
            else:
                os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, ref: str) -> str | None:
        """The locked digest of image reference ``ref``, or None."""
        entry = self.images.get(ref)
        return entry["digest"] if entry else None

    def entry(self, ref: str) -> dict[str, str] | None:
        entry = self.images.get(ref)
        return dict(entry) if entry else None

    def set(self, ref: str, digest: str) -> None:
        if not digest.startswith("sha256:"):
            raise TFEnvError(f"'{digest}' is not a digest (expected 'sha256:…').")
        if self.get(ref) == digest:
            return
        self.images[ref] = {
            "digest": digest,
            "repository": parse_image_ref(ref).repository,
            "locked_at": _now(),
        }

    def remove(self, ref: str) -> bool:
        return self.images.pop(ref, None) is not None

    def __contains__(self, ref: object) -> bool:
        return ref in self.images

    def __len__(self) -> int:
        return len(self.images)


def _registry_error(env: Environment, err: Exception) -> TFEnvError:
    text = str(getattr(err, "explanation", None) or err).strip()
    lowered = text.lower()
    registry = env.image_ref.registry
    if isinstance(err, NotFound) or "manifest unknown" in lowered:
        return TFEnvError(
            f"The registry {registry} has no image '{env.image}' (environment '{env.id}'): "
            f"the tag does not exist there (the registry said: {text}). Check the "
            "reference in the catalog."
        )
    if "unauthorized" in lowered or "denied" in lowered or "authentication" in lowered:
        return TFEnvError(
            f"The registry {registry} refused access to '{env.image}' (the registry said: "
            f"{text}). Run `docker login {registry}` as the user whose Docker engine pulls."
        )
    return TFEnvError(
        f"Cannot reach the registry {registry} to resolve '{env.image}' (environment "
        f"'{env.id}'): {text}. Check that the registry is up and reachable from the Docker "
        "engine, or lock from the local image with `jupyter tfenv lock --from-local`."
    )


def resolve_digest(client: docker.DockerClient, env: Environment) -> str:
    """The digest ``env.image`` has in its registry now (asks the registry)."""
    if env.image_ref.digest:
        return env.image_ref.digest
    try:
        data = client.images.get_registry_data(env.image)
    except (APIError, NotFound) as err:
        raise _registry_error(env, err) from err
    except DockerException as err:
        raise TFEnvError(f"Cannot resolve '{env.image}': {err}") from err
    digest = str(data.id or "")
    if not digest.startswith("sha256:"):
        raise TFEnvError(f"The registry answered no digest for '{env.image}'.")
    return digest


def _local_image(client: docker.DockerClient, env: Environment) -> Any | None:
    try:
        return client.images.get(env.image)
    except ImageNotFound:
        return None


def _digests_of(image: Any, repository: str) -> list[str]:
    want = _familiar(repository)
    found = []
    for repo_digest in image.attrs.get("RepoDigests") or []:
        repo, _, digest = repo_digest.rpartition("@")
        if _familiar(repo) == want and digest not in found:
            found.append(digest)
    return found


def local_digests(client: docker.DockerClient, env: Environment) -> list[str]:
    """Digests the local image of ``env`` carries for its repository ([] when absent).

    A locally built image that was never pushed or pulled has none.
    """
    image = _local_image(client, env)
    if image is None:
        return []
    return _digests_of(image, env.image_ref.repository)


def lock_environments(
    client: docker.DockerClient,
    envs: Iterable[Environment],
    lock: LockFile,
    *,
    from_local: bool = False,
) -> list[LockChange]:
    """Record the digest of each tag-pinned environment's image in ``lock`` (not saved).

    By default the digest is the registry's (what a pull would fetch now); with
    ``from_local`` it is the one the local image carries (for images pulled earlier, or a
    registry that cannot be reached). Environments pinned by digest are skipped.
    """
    changes = []
    for env in envs:
        if env.image_ref.digest:
            continue
        old = lock.get(env.image)
        if from_local:
            image = _local_image(client, env)
            if image is None:
                raise TFEnvError(
                    f"The image {env.image} of environment '{env.id}' is not on this Docker "
                    f"engine, so there is no local digest to lock. Pull it first "
                    f"(`jupyter tfenv pull {env.id}`), or lock from the registry."
                )
            digests = _digests_of(image, env.image_ref.repository)
            if not digests:
                raise TFEnvError(
                    f"The local image {env.image} of environment '{env.id}' has no registry "
                    "digest (it was built or tagged here, never pushed or pulled), so it "
                    "cannot be locked. Push it to a registry, or pin it by digest."
                )
            new = old if old in digests else digests[0]
        else:
            new = resolve_digest(client, env)
        assert new is not None
        lock.set(env.image, new)
        changes.append(LockChange(env_id=env.id, image=env.image, old=old, new=new))
    return changes


def unlocked_message(env: Environment, path: str | os.PathLike[str] | None) -> str:
    """Why ``lock_policy = strict`` refuses ``env``, and the command that fixes it."""
    fix = (
        f"Run `jupyter tfenv lock {env.id}` to record the digest {env.image} points to "
        "(and commit the lock file with the catalog; rewrite kernelspecs written to disk "
        "with `jupyter tfenv kernelspecs`)."
    )
    if env.derived is not None:
        fix = (
            f"Run `jupyter tfenv build {env.id}` (it records the build in the lock file; "
            "with --push, the pushed digest too) and commit the lock file with the catalog."
        )
    start = f"Environment '{env.id}': lock_policy is 'strict' and"
    if path is None:
        return (
            f"{start} there is no lock file (no catalog file, and neither "
            "c.TFEnvCatalog.lock_file nor $JUPYTER_TFENV_LOCK names one). Set one, then "
            f"run `jupyter tfenv lock {env.id}`."
        )
    if not Path(path).is_file():
        return f"{start} the lock file {path} does not exist. {fix}"
    return f"{start} the lock file {path} has no entry for {env.image}. {fix}"


def require_lock(
    env: Environment, lock: LockFile | None, path: str | os.PathLike[str] | None = None
) -> None:
    """``lock_policy = strict``: raise ``LockMissingError`` unless ``env`` is locked.

    Locked means pinned by digest, or an entry for its tag in ``lock`` (None: no lock
    file is configured). ``path`` defaults to the lock's own path.
    """
    if env.image_ref.digest or (lock is not None and lock.get(env.image)):
        return
    if env.derived is not None and lock is not None and env.image in lock.builds:
        return  # built here by `jupyter tfenv build`: its tag is its content
    where = path if path is not None else (lock.path if lock is not None else None)
    raise LockMissingError(
        unlocked_message(env, where),
        env_id=env.id,
        image=env.image,
        path=None if where is None else str(where),
    )


def lock_status(
    client: docker.DockerClient,
    env: Environment,
    lock: LockFile | None,
    policy: str = "enforce",
) -> dict[str, Any]:
    """``{"locked": digest|None, "local": [...], "matches": bool|None}`` for the UI and CLI.

    ``matches`` is None when nothing is locked; for a reference pinned by digest the pin
    is the lock (``"pinned_by_digest": True``). ``policy`` is the lock policy and
    ``refused`` whether it refuses a kernel start now: a mismatch under enforce or
    strict, no entry (or no lock file) under strict. ``lock`` None: no lock file is
    configured.
    """
    if lock is None:
        lock = LockFile("", missing=True)
        lock_file = None
    else:
        lock_file = str(lock.path)
    pinned = env.image_ref.digest
    locked = pinned or lock.get(env.image)
    image = _local_image(client, env)
    local = [] if image is None else _digests_of(image, env.image_ref.repository)
    if pinned and image is not None and pinned not in local:
        local.insert(0, pinned)  # found by digest, so it has it
    matches = None if locked is None else locked in local
    built = env.derived is not None and env.image in lock.builds
    refused = (policy in ("enforce", "strict") and matches is False) or (
        policy == "strict" and locked is None and not built
    )
    return {
        "locked": locked,
        "local": local,
        "present": image is not None,
        "matches": matches,
        "pinned_by_digest": bool(pinned),
        "policy": policy,
        "lock_file": lock_file,
        "lock_file_exists": lock_file is not None and not lock.missing,
        "refused": refused,
    }


def check_lock(client: docker.DockerClient, env: Environment, lock: LockFile) -> None:
    """Raise ``LockMismatchError`` when the local image that would run is not the locked one.

    Environments pinned by digest and environments without a lock entry pass (that is
    ``enforce``; ``strict`` calls :func:`require_lock` first).
    """
    if env.image_ref.digest:
        return
    locked = lock.get(env.image)
    if locked is None:
        return
    image = _local_image(client, env)
    local = [] if image is None else _digests_of(image, env.image_ref.repository)
    if locked in local:
        return
    where = f"the lock file {lock.path}"
    if image is None:
        now = "it is not on this Docker engine"
    elif local:
        now = f"the local image has {', '.join(local)} (image {str(image.id)[:19]})"
    else:
        now = (
            f"the local image {str(image.id)[:19]} has no registry digest for "
            f"{env.image_ref.repository} (built or tagged locally)"
        )
    raise LockMismatchError(
        f"Environment '{env.id}': {env.image} is locked to {locked} in {where}, but {now}. "
        f"Run `jupyter tfenv pull {env.id}` to fetch the locked digest "
        f"({env.image_ref.repository}@{locked}), or `jupyter tfenv lock {env.id}` to accept "
        "what the tag points to now, deliberately.",
        env_id=env.id,
        image=env.image,
        locked=locked,
        local=local,
    )
