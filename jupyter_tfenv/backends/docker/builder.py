"""Building derived environments (issue 21): resolved wheels on a pinned base, no network.

``jupyter tfenv build ID`` calls :func:`build_environment`, which

1. asks the base image's own interpreter, once, in a short container without network,
   which Python, machine and C library it has and which packages it holds
   (:func:`facts_of`);
2. resolves the pins and their dependencies **on the host** for that interpreter
   (:mod:`jupyter_tfenv.backends.docker.wheels`: ``pip download --only-binary=:all:``, the
   base's packages kept as constraints), or, when the lock file already holds this
   entry's resolution, fetches exactly that set; every wheel is cached with its sha256;
3. names the image by content: the base's digest (:func:`base_digest_of`) and the resolved
   set give the tag (:func:`jupyter_tfenv.catalog.derived.content_tag`);
4. installs the set on the host with ``pip install --no-index --require-hashes --no-deps
   --target`` (the image needs no pip, and no package code runs) and makes the image bit
   for bit (:mod:`jupyter_tfenv.backends.docker.layers`): the folder as one normalized layer
   at ``/usr/local/lib/tfenv-packages`` (fixed order, times and owners), the base's own
   config plus that layer and ``PYTHONPATH`` naming the folder (the kernel launcher puts
   the image's ``PYTHONPATH`` first), ``docker load``ed: the same inputs give the same
   image id on every engine, and nothing runs in a container but the checks;
5. checks in a container without network that the image's Python sees every package at
   its version, tags it, and records the resolution (``resolved[id]``, which names the
   image in the catalog) and the build (``builds[image]``) in the lock file; ``push``
   pushes it and locks the pushed digest.

A base that is itself derived is built first (:func:`build_chain`); a child is built FROM
its parent's image and resolved against the parent's packages.

Console scripts of the packages are not installed (their ``#!`` would name the host's
Python); packages are imported, not run as commands.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import docker
from docker.errors import APIError, ContainerError, DockerException, ImageNotFound
from jupyter_core.paths import jupyter_data_dir

from jupyter_tfenv.backends.docker import layers
from jupyter_tfenv.backends.docker.wheels import BuildError, Target, Wheel, fetch, install, resolve
from jupyter_tfenv.catalog.derived import Derived, Resolution
from jupyter_tfenv.catalog.images import parse_image_ref
from jupyter_tfenv.catalog.lock import LockFile
from jupyter_tfenv.catalog.model import Environment

#: Where the packages of a derived image live (on its PYTHONPATH).
PACKAGES_DIR = "/usr/local/lib/tfenv-packages"
LABEL_INPUTS = "org.jupyter.tfenv.derived.inputs"
LABEL_BASE = "org.jupyter.tfenv.derived.base"
LABEL_BASE_ID = "org.jupyter.tfenv.derived.base-id"
LABEL_PIP = "org.jupyter.tfenv.derived.pip"

Progress = Callable[[dict[str, Any]], None]

_TARGET_SCRIPT = """
import json, platform, sys, sysconfig
from importlib import metadata
libc = platform.libc_ver()
packages = {}
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    if name and name not in packages:
        packages[name] = dist.version
print(json.dumps({"python": "%d.%d" % sys.version_info[:2],
  "implementation": sys.implementation.name, "machine": platform.machine(),
  "libc": [libc[0], libc[1]], "purelib": sysconfig.get_paths()["purelib"],
  "packages": packages}))
"""
# The modes and owners of the packages folder's parents, which its layer carries.
_PARENTS_SCRIPT = f"""
import json, os
dirs = {{}}
for path in {[str(p) for p in reversed(PurePosixPath(PACKAGES_DIR).parents[:-1])]!r}:
    try:
        st = os.stat(path)
    except OSError:
        continue
    dirs[path] = [st.st_mode & 0o7777, st.st_uid, st.st_gid]
print(json.dumps(dirs))
"""
_CHECK_SCRIPT = """
import json, sys
from importlib import metadata
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = metadata.version(name)
    except Exception as err:
        out[name] = None
print(json.dumps(out))
"""


def default_wheel_cache() -> Path:
    return Path(jupyter_data_dir()) / "jupyter_tfenv" / "wheels"


@dataclass
class BuildResult:
    env_id: str
    image: str
    image_id: str
    base_image: str
    base_id: str
    target: Target
    wheels: list[Wheel]
    cached: bool
    resolution: Resolution
    #: Whether the packages were resolved now (else: the lock file's resolution).
    resolved_now: bool = False
    pushed: str | None = None
    digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.env_id,
            "image": self.image,
            "image_id": self.image_id,
            "base_image": self.base_image,
            "base_id": self.base_id,
            "target": self.target.to_dict(),
            "base_digest": self.resolution.base_digest,
            "packages": [w.line() for w in self.wheels],
            "resolved_now": self.resolved_now,
            "already_built": self.cached,
            "pushed": self.pushed,
            "digest": self.digest,
        }


def _run_quiet(client: docker.DockerClient, image: str, cmd: list[str]) -> str:
    """``cmd`` in a throwaway container: no network, no capabilities, nobody's uid."""
    try:
        out = client.containers.run(
            image,
            cmd,
            network_mode="none",
            user="65534:65534",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            remove=True,
            stdout=True,
            stderr=True,
            entrypoint=[],
        )
    except ContainerError as err:
        said = (err.stderr or b"").decode(errors="replace").strip()[-1000:]
        raise BuildError(f"{' '.join(cmd[:2])} failed in {image}: {said or err}") from err
    except (APIError, DockerException) as err:
        raise BuildError(f"Cannot run a container of {image}: {err}") from err
    return out.decode(errors="replace") if isinstance(out, bytes) else str(out)


def facts_of(
    client: docker.DockerClient, image: str, python: str
) -> tuple[Target, dict[str, str], dict[str, tuple[int, int, int]]]:
    """Ask ``python`` in ``image`` (no network) which interpreter and platform it is, which
    packages it sees (its ``PYTHONPATH`` applied: a derived base's packages too), and the
    mode, uid and gid of the packages folder's parents (``/usr`` …)."""
    text = _run_quiet(client, image, [python, "-c", _TARGET_SCRIPT + _PARENTS_SCRIPT])
    try:
        lines = text.strip().splitlines()
        facts = json.loads(lines[-2])
        parents = {
            str(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in json.loads(lines[-1]).items()
        }
    except (ValueError, IndexError, TypeError) as err:
        raise BuildError(f"{python} in {image} did not say what it is: {text[-500:]}") from err
    if facts.get("implementation") != "cpython":
        raise BuildError(
            f"{python} in {image} is {facts.get('implementation')}; derived environments "
            "are built for CPython only."
        )
    libc, version = facts.get("libc") or ["", ""]
    if not libc:
        libc, version = "musl", "2"  # platform.libc_ver() knows glibc only
    target = Target(
        python=facts["python"], machine=facts["machine"], libc=libc, libc_version=version
    )
    packages = facts.get("packages") or {}
    return target, {str(k): str(v) for k, v in packages.items()}, parents


def identities(image: Any) -> set[str]:
    """Every name of an image's bits: its id and its repository digests."""
    found = {str(image.id)}
    for repo_digest in image.attrs.get("RepoDigests") or []:
        found.add(repo_digest.rpartition("@")[2])
    return found


def base_digest_of(image: Any, ref: str, lock: LockFile | None) -> str:
    """What a derived tag hashes of its base: the reference's digest when it is pinned by
    one, else the lock file's digest of it (when the local image carries it), else the
    local image's repository digest, else its image id (an image built or tagged here)."""
    parsed = parse_image_ref(ref)
    if parsed.digest:
        return parsed.digest
    carried = [
        rd.rpartition("@")[2]
        for rd in image.attrs.get("RepoDigests") or []
        if _same_repository(rd.rpartition("@")[0], parsed.repository)
    ]
    locked = lock.get(ref) if lock is not None else None
    if locked and locked in carried:
        return locked
    return carried[0] if carried else str(image.id)


def _same_repository(one: str, two: str) -> bool:
    def plain(name: str) -> str:
        for prefix in ("docker.io/", "index.docker.io/"):
            name = name.removeprefix(prefix)
        return name.removeprefix("library/")

    return plain(one) == plain(two)


def _verify(client: docker.DockerClient, image_id: str, python: str, wheels: list[Wheel]) -> None:
    """The built image's Python (its PYTHONPATH applied) sees each pin at its version."""
    names = [w.pin.name for w in wheels]
    text = _run_quiet(client, image_id, [python, "-c", _CHECK_SCRIPT, *names])
    seen = json.loads(text.strip().splitlines()[-1])
    wrong = [
        f"{w.pin.name} is {seen.get(w.pin.name) or 'missing'}"
        for w in wheels
        if seen.get(w.pin.name) != w.pin.version
    ]
    if wrong:
        raise BuildError(
            f"The built image does not see the pinned versions: {', '.join(wrong)}. Does the "
            "base image set PYTHONPATH or run Python with -E/-I?"
        )


def build_record(result: BuildResult, derived: Derived) -> dict[str, Any]:
    """What the lock file keeps of a build (``builds[image]``)."""
    return {
        "id": result.env_id,
        "inputs": derived.inputs_hash,
        "base_image": result.base_image,
        "base_digest": result.resolution.base_digest,
        "base_id": result.base_id,
        "target": result.target.key,
        "pip": [w.line() for w in result.wheels],
        "image_id": result.image_id,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _push(client: docker.DockerClient, image: str, progress: Progress | None) -> str:
    repository, _, tag = image.rpartition(":")
    digest = ""
    try:
        for chunk in client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise BuildError(
                    f"Pushing {image} failed: {chunk['error']}. Check `docker login` for "
                    "the registry, and that the entry's repository names it."
                )
            if progress and chunk.get("status"):
                progress({"phase": "push", "message": str(chunk["status"])})
            digest = (chunk.get("aux") or {}).get("Digest") or digest
    except (APIError, DockerException) as err:
        raise BuildError(f"Pushing {image} failed: {err}") from err
    if not digest.startswith("sha256:"):
        raise BuildError(f"Pushing {image} returned no digest.")
    return digest


def _base_image(client: docker.DockerClient, env: Environment, derived: Derived) -> Any:
    try:
        return client.images.get(derived.base_image)
    except ImageNotFound:
        if derived.parent:
            raise BuildError(
                f"The base '{derived.parent}' of '{env.id}' is a derived environment that is "
                f"not built on this Docker engine ({derived.base_image}). `jupyter tfenv build "
                f"{env.id}` builds the chain, base first."
            ) from None
        raise BuildError(
            f"The base image {derived.base_image} of '{env.id}' is not on this Docker "
            f"engine. Pull it first (`jupyter tfenv pull {derived.base}` or `docker pull "
            f"{derived.base_image}`)."
        ) from None


def build_environment(
    client: docker.DockerClient,
    env: Environment,
    *,
    lock: LockFile | None = None,
    cache: Path | None = None,
    push: bool | str = False,
    rebuild: bool = False,
    resolve_again: bool = False,
    progress: Progress | None = None,
) -> BuildResult:
    """Build ``env`` (a derived environment) unless its image is already here; record it
    in ``lock`` (not saved) and push it with ``push`` (True: to its own repository; a
    registry: under that registry, see :func:`pushed_reference`).

    The lock's resolution of the entry (``env.derived.resolution``) is used as it is, unless
    ``resolve_again`` or the base's interpreter changed; the image's tag is computed from
    the base's digest and the set, so it may differ from ``env.image`` (a base that moved,
    a new resolution): the result names the image built."""
    derived = env.derived
    if derived is None:
        raise BuildError(
            f"Environment '{env.id}' is not a derived environment (no base and pip in its "
            f"entry): there is nothing to build; `jupyter tfenv pull {env.id}` fetches it."
        )
    base = _base_image(client, env, derived)
    target, base_packages, parents = facts_of(client, base.id, derived.python)
    if progress:
        progress({"phase": "target", "message": f"packages for {target.key}"})
    cache = cache or default_wheel_cache()
    recorded = derived.resolution
    if recorded is not None and not resolve_again and recorded.target == target.key:
        wheels, _ = fetch(recorded.pip, derived.pins, target, cache, progress=progress)
        resolved_now = False
    else:
        wheels = resolve(
            derived.pins, target, cache, base_packages=base_packages, progress=progress
        )
        resolved_now = True
    resolution = Resolution(
        inputs=derived.inputs_hash,
        target=target.key,
        base_image=derived.base_image,
        base_digest=base_digest_of(base, derived.base_image, lock),
        pip=tuple(sorted(w.line() for w in wheels)),
    )
    image = f"{derived.repository}:{resolution.tag}"
    if progress:
        progress({"phase": "resolve", "message": f"{len(wheels)} package(s): {image}"})
    existing = None
    if not rebuild:
        try:
            existing = client.images.get(image)
        except ImageNotFound:
            existing = None
    labels = {
        LABEL_INPUTS: derived.inputs_hash,
        LABEL_BASE: derived.base_image,
        LABEL_BASE_ID: str(base.id),
        LABEL_PIP: json.dumps(list(resolution.pip)),
    }
    if existing is not None and (existing.labels or {}).get(LABEL_BASE_ID) == base.id:
        image_id, cached = str(existing.id), True
    else:
        with tempfile.TemporaryDirectory(prefix="tfenv-build-") as tmp:
            packages = Path(tmp) / "packages"
            packages.mkdir()
            if progress:
                progress({"phase": "install", "message": f"installing {len(wheels)} wheel(s)"})
            install(wheels, target, packages)
            if progress:
                progress({"phase": "build", "message": "making the image's layer"})
            made = layers.Recipe(str(base.id), PACKAGES_DIR, labels, parents, len(wheels))
            image_id = layers.make_image(client, made, packages, Path(tmp), cache)
        if progress:
            progress({"phase": "verify", "message": f"importing {len(wheels)} package(s)"})
        try:
            _verify(client, image_id, derived.python, wheels)
        except BuildError:
            _remove_quietly(client, image_id)
            raise
        if progress:
            progress({"phase": "tag", "message": f"tagging {image}"})
        repository, _, tag = image.rpartition(":")
        client.images.get(image_id).tag(repository, tag)
        cached = False
    result = BuildResult(
        env_id=env.id,
        image=image,
        image_id=image_id,
        base_image=derived.base_image,
        base_id=str(base.id),
        target=target,
        wheels=wheels,
        cached=cached,
        resolution=resolution,
        resolved_now=resolved_now,
    )
    if push:
        result.pushed = pushed_reference(image, push if isinstance(push, str) else None)
        if result.pushed != image:
            repository, _, tag = result.pushed.rpartition(":")
            client.images.get(image_id).tag(repository, tag)
        result.digest = _push(client, result.pushed, progress)
    if lock is not None:
        old = lock.resolved.get(env.id) or {}
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        lock.resolved[env.id] = {
            **resolution.to_dict(),
            "image": image,
            # When the set was resolved (kept while builds reuse it).
            "resolved_at": when if resolved_now else str(old.get("resolved_at") or when),
        }
        lock.builds[image] = build_record(result, derived)
        if result.pushed and result.digest:
            # Teammates whose entry names the pushed repository find it under that name.
            lock.builds[result.pushed] = lock.builds[image]
            lock.set(result.pushed, result.digest)
    return result


def build_chain(
    catalog: Any,
    client: docker.DockerClient,
    env_ids: list[str],
    *,
    lock: LockFile | None,
    progress: Progress | None = None,
    **options: Any,
) -> list[BuildResult]:
    """Build ``env_ids`` of ``catalog`` (a TFEnvCatalog) and the derived bases they stand
    on, base first; after each build the lock is saved and the catalog re-read, so that a
    child is built FROM its parent's new image."""
    order: list[str] = []

    def visit(env_id: str, seen: tuple[str, ...]) -> None:
        env = catalog.get(env_id)
        if env_id in order or env_id in seen:
            return
        if env.derived is not None and env.derived.parent:
            visit(env.derived.parent, (*seen, env_id))
        order.append(env_id)

    for env_id in env_ids:
        visit(env_id, ())
    results = []
    for env_id in order:
        env = catalog.get(env_id)
        if env.derived is None and env_id not in env_ids:
            continue
        if progress:
            progress({"phase": "start", "message": f"building {env.id}: {env.image} …"})
        # A base built on the way takes no options: built (or found) as it is, not pushed.
        given = options if env_id in env_ids else {"cache": options.get("cache")}
        results.append(build_environment(client, env, lock=lock, progress=progress, **given))
        if lock is not None:
            lock.save()
            catalog.refresh(force=True)
    return results


def pushed_reference(image: str, registry: str | None) -> str:
    """Where ``--push [REGISTRY]`` pushes ``image``: itself, or its repository path (its own
    registry, if any, left out) under ``registry``, with the same content tag."""
    if not registry:
        return image
    repository, _, tag = image.rpartition(":")
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        repository = rest
    return f"{registry.rstrip('/')}/{repository}:{tag}"


def _remove_quietly(client: docker.DockerClient, image_id: str) -> None:
    with contextlib.suppress(APIError, DockerException):
        client.images.remove(image_id, force=True)


def stale_reason(client: docker.DockerClient, env: Environment, lock: LockFile) -> str | None:
    """Why the lock's build of ``env`` no longer matches its base (None: it does, or no
    build is recorded): the base tag now names other bits, a derived base was rebuilt, or
    the entry's base changed since the lock's resolution."""
    derived = env.derived
    if derived is None:
        return None
    fix = f"rebuild it with `jupyter tfenv build {env.id}` (and commit the lock file)."
    resolution = derived.resolution
    if resolution is None:
        old = Resolution.from_dict(lock.resolved.get(env.id))
        if old is not None and old.base_image != derived.base_image:
            return (
                f"its base is now {derived.base_image}, but it was built on {old.base_image}: {fix}"
            )
        return None
    try:
        base = client.images.get(derived.base_image)
    except ImageNotFound:
        return None
    if resolution.base_digest in identities(base):
        return None
    what = f"'{derived.parent}' was rebuilt" if derived.parent else f"{derived.base_image} moved"
    return (
        f"its base {what}: it is now image {str(base.id)[:19]}, but the build was on "
        f"{resolution.base_digest[:19]}: {fix}"
    )


def check_builds(
    client: docker.DockerClient,
    envs: list[Environment],
    lock: LockFile | None,
    problems: list[dict[str, Any]],
    warnings: list[str],
) -> None:
    """``jupyter tfenv check``: derived environments built on a base that moved since
    (problems); builds in the lock that no environment names any more (warnings: a pin
    or base changed)."""
    if lock is None:
        return
    for env in envs:
        reason = stale_reason(client, env, lock)
        if reason:
            problems.append(
                {
                    "source": str(lock.path),
                    "entry": f"'{env.id}'",
                    "field": "base",
                    "message": f"stale build: {reason}",
                }
            )
    images = {env.image for env in envs}
    for image in sorted(set(lock.builds) - images):
        warnings.append(
            f"the lock file {lock.path} records a build of {image}, which no environment "
            "names any more (its pins or base changed): rebuild the environment with "
            "`jupyter tfenv build`, which records the new image."
        )


def build_and_record(
    client: docker.DockerClient, env: Environment, lock_path: Path | None
) -> dict[str, Any]:
    """``jupyter tfenv build ID`` for the server's Build action: build ``env`` (unless it is
    here already) and record it in the lock file at ``lock_path``, which names the image."""
    if lock_path is None:
        raise BuildError(NO_LOCK_FILE)
    lock = LockFile.load(lock_path)
    result = build_environment(client, env, lock=lock)
    lock.save()
    return result.to_dict()


NO_LOCK_FILE = (
    "A derived environment's image is named by the resolution recorded in the lock file, "
    "and there is none (no catalog file, and neither c.TFEnvCatalog.lock_file nor "
    "$JUPYTER_TFENV_LOCK names one). Set one, then build."
)
