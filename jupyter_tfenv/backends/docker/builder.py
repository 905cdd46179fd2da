"""Building derived environments (issue 21): pinned wheels on a pinned base, no network.

``jupyter tfenv build ID`` calls :func:`build_environment`, which

1. asks the base image's own interpreter, once, in a short container without network,
   which Python, machine and C library it has (:func:`target_of`);
2. downloads each pinned wheel **on the host** with ``pip download --no-deps
   --only-binary=:all:`` for that Python, ABI and platform into a wheel cache
   (``<jupyter data dir>/jupyter_tfenv/wheels/<target>/``), records its sha256 and checks
   it against the catalog's ``--hash`` and the lock file's earlier build;
3. installs them on the host with ``pip install --no-index --require-hashes --no-deps
   --target`` (the image needs no pip, and nothing runs as root in it);
4. builds ``FROM <base image id>`` with the folder ``COPY``'d to
   ``/usr/local/lib/tfenv-packages`` and ``PYTHONPATH`` naming it (the kernel launcher
   puts the image's ``PYTHONPATH`` first), with networking off (``network_mode="none"``);
5. checks in a container without network that the image's Python sees every pin at its
   version, then tags it with the content tag the catalog computed
   (:mod:`jupyter_tfenv.catalog.derived`) and records the build in the lock file;
   ``push`` pushes it and locks the pushed digest.

Console scripts of the packages are not installed (their ``#!`` would name the host's
Python); packages are imported, not run as commands.
"""

# Longer than 600 lines: one build's steps in their order (the image's Python, wheels,
# host install, no-network docker build, check, tag, lock, push) and the checks of builds.

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ContainerError, DockerException, ImageNotFound
from jupyter_core.paths import jupyter_data_dir
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from jupyter_tfenv.catalog.derived import Derived, Pin
from jupyter_tfenv.catalog.lock import LockFile
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.errors import TFEnvError

#: Where the packages of a derived image live (on its PYTHONPATH).
PACKAGES_DIR = "/usr/local/lib/tfenv-packages"
LABEL_INPUTS = "org.jupyter.tfenv.derived.inputs"
LABEL_BASE = "org.jupyter.tfenv.derived.base"
LABEL_BASE_ID = "org.jupyter.tfenv.derived.base-id"
LABEL_PIP = "org.jupyter.tfenv.derived.pip"

Progress = Callable[[dict[str, Any]], None]

_TARGET_SCRIPT = """
import json, platform, sys, sysconfig
libc = platform.libc_ver()
print(json.dumps({"python": "%d.%d" % sys.version_info[:2],
  "implementation": sys.implementation.name, "machine": platform.machine(),
  "libc": [libc[0], libc[1]], "purelib": sysconfig.get_paths()["purelib"]}))
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


class BuildError(TFEnvError):
    """A derived environment could not be built; the message says why and what to do."""

    http_status = 400


def default_wheel_cache() -> Path:
    return Path(jupyter_data_dir()) / "jupyter_tfenv" / "wheels"


@dataclass(frozen=True)
class Target:
    """The interpreter a derived image's packages are for."""

    python: str  # "3.11"
    machine: str  # "x86_64"
    libc: str  # "glibc" or "musl"
    libc_version: str  # "2.36"

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def key(self) -> str:
        """The wheel cache folder: ``cp311-glibc2.36-x86_64``."""
        return f"{self.abi}-{self.libc}{self.libc_version}-{self.machine}"

    def platforms(self) -> list[str]:
        """The platform tags pip may pick, newest first."""
        try:
            major, minor = (int(x) for x in self.libc_version.split(".")[:2])
        except ValueError:
            major, minor = 0, 0
        arch = self.machine
        if self.libc == "glibc" and major == 2:
            tags = [f"manylinux_2_{n}_{arch}" for n in range(minor, 4, -1)]
            legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
            tags += [f"{name}_{arch}" for n, name in legacy.items() if n <= minor]
            return tags
        if self.libc == "musl":
            return [f"musllinux_1_{n}_{arch}" for n in range(minor, -1, -1)]
        return [f"linux_{arch}"]

    def pip_args(self) -> list[str]:
        args = [
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            self.python,
        ]
        for abi in (self.abi, "abi3", "none"):
            args += ["--abi", abi]
        for tag in self.platforms():
            args += ["--platform", tag]
        return args

    def to_dict(self) -> dict[str, str]:
        return {
            "python": self.python,
            "machine": self.machine,
            "libc": f"{self.libc} {self.libc_version}",
            "key": self.key,
        }


@dataclass(frozen=True)
class Wheel:
    pin: Pin
    file: Path
    sha256: str

    def line(self) -> str:
        return f"{self.pin.spec} --hash=sha256:{self.sha256}"


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
            "packages": [w.line() for w in self.wheels],
            "already_built": self.cached,
            "pushed": self.pushed,
            "digest": self.digest,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def target_of(client: docker.DockerClient, image: str, python: str) -> Target:
    """Ask ``python`` in ``image`` (no network) which interpreter and platform it is."""
    text = _run_quiet(client, image, [python, "-I", "-c", _TARGET_SCRIPT])
    try:
        facts = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError) as err:
        raise BuildError(f"{python} in {image} did not say what it is: {text[-500:]}") from err
    if facts.get("implementation") != "cpython":
        raise BuildError(
            f"{python} in {image} is {facts.get('implementation')}; derived environments "
            "are built for CPython only."
        )
    libc, version = facts.get("libc") or ["", ""]
    if not libc:
        libc, version = "musl", "2"  # platform.libc_ver() knows glibc only
    return Target(python=facts["python"], machine=facts["machine"], libc=libc, libc_version=version)


def _pip(args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)


def _index_path(folder: Path) -> Path:
    return folder / "index.json"


def download_wheels(
    derived: Derived,
    target: Target,
    cache: Path,
    *,
    recorded: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> tuple[list[Wheel], int]:
    """The wheel of every pin, from the cache or ``pip download`` (host side, no deps).

    ``recorded``: sha256 per ``name==version`` from the lock file's earlier build; a wheel
    that differs is refused (the same pin must give the same bits everywhere). Returns the
    wheels and how many were downloaded.
    """
    folder = cache / target.key
    folder.mkdir(parents=True, exist_ok=True)
    index_file = _index_path(folder)
    try:
        index: dict[str, dict[str, str]] = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    missing = [
        p
        for p in derived.pins
        if p.spec not in index or not (folder / index[p.spec]["file"]).is_file()
    ]
    if missing:
        if progress:
            progress({"phase": "download", "message": f"downloading {len(missing)} wheel(s)"})
        with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
            reqs = Path(tmp) / "requirements.txt"
            reqs.write_text("".join(f"{p.spec}\n" for p in missing), encoding="utf-8")
            dest = Path(tmp) / "wheels"
            result = _pip(
                ["download", "--no-deps", "--dest", str(dest), *target.pip_args(), "-r", str(reqs)]
            )
            if result.returncode != 0:
                raise BuildError(
                    f"Downloading the wheels for Python {target.python} on "
                    f"{target.machine} failed (pip exit {result.returncode}): "
                    f"{result.stderr.strip()[-1500:]}\nEvery package needs a wheel for that "
                    "platform (source distributions are not built), and PyPI (or pip's "
                    "configured index) must be reachable from this host."
                )
            for file in sorted(dest.iterdir()):
                try:
                    name, version, _build, _tags = parse_wheel_filename(file.name)
                except InvalidWheelFilename:
                    continue
                spec = f"{canonicalize_name(name)}=={version}"
                match = next((p for p in missing if p.spec == spec), None)
                if match is None:
                    # pip normalizes versions ("01" → "1"): match by name then.
                    match = next((p for p in missing if p.name == canonicalize_name(name)), None)
                if match is None:
                    continue
                os.replace(file, folder / file.name)
                index[match.spec] = {"file": file.name, "sha256": _sha256(folder / file.name)}
        # Atomically: another build may read the index at the same time.
        tmp_index = folder / f".index.{os.getpid()}.json"
        tmp_index.write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp_index, index_file)
    wheels = []
    for pin in derived.pins:
        entry = index.get(pin.spec)
        if entry is None:
            raise BuildError(f"pip downloaded no wheel for {pin.spec} ({target.key}).")
        wheel = Wheel(pin=pin, file=folder / entry["file"], sha256=entry["sha256"])
        if pin.hashes and f"sha256:{wheel.sha256}" not in pin.hashes:
            raise BuildError(
                f"The wheel {wheel.file.name} of {pin.spec} has sha256:{wheel.sha256}, which "
                f"is none of the catalog's --hash values ({', '.join(pin.hashes)}). The "
                "index served other bits: check where it came from before you change the "
                "pin."
            )
        want = (recorded or {}).get(pin.spec)
        if want and want != wheel.sha256:
            raise BuildError(
                f"The wheel {wheel.file.name} of {pin.spec} has sha256:{wheel.sha256}, but "
                f"the lock file's build of this environment used sha256:{want}. Pin the hash "
                "in the catalog (--hash=sha256:…) to choose one."
            )
        wheels.append(wheel)
    return wheels, len(missing)


def _install(wheels: list[Wheel], target: Target, into: Path) -> None:
    """``pip install --no-index --require-hashes --no-deps --target`` from the cache."""
    reqs = into.parent / "requirements.txt"
    reqs.write_text("".join(w.line() + "\n" for w in wheels), encoding="utf-8")
    links = sorted({str(w.file.parent) for w in wheels})
    args = ["install", "--no-index", "--no-deps", "--require-hashes", "--no-compile"]
    for link in links:
        args += ["--find-links", link]
    result = _pip([*args, "--target", str(into), *target.pip_args(), "-r", str(reqs)])
    if result.returncode != 0:
        raise BuildError(
            f"Installing the wheels failed (pip exit {result.returncode}): "
            f"{result.stderr.strip()[-1500:]}"
        )
    shutil.rmtree(into / "bin", ignore_errors=True)  # scripts would name the host's Python
    for dirpath, dirnames, filenames in os.walk(into):
        for name in dirnames:
            Path(dirpath, name).chmod(0o755)
        for name in filenames:
            path = Path(dirpath, name)
            path.chmod(0o755 if os.access(path, os.X_OK) else 0o644)
    into.chmod(0o755)


def _dockerfile(base_id: str, image_env: list[str], labels: dict[str, str]) -> str:
    existing = next((e.split("=", 1)[1] for e in image_env if e.startswith("PYTHONPATH=")), "")
    path = PACKAGES_DIR + (f":{existing}" if existing else "")
    label = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return (
        f"FROM {base_id}\nCOPY packages {PACKAGES_DIR}\n"
        f"ENV PYTHONPATH={json.dumps(path)}\nLABEL {label}\n"
    )


def _docker_build(client: docker.DockerClient, context: Path, progress: Progress | None) -> str:
    image_id = ""
    errors = []
    try:
        for chunk in client.api.build(
            path=str(context),
            network_mode="none",
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        ):
            if "stream" in chunk and progress and chunk["stream"].strip():
                progress({"phase": "build", "message": chunk["stream"].strip()})
            if "aux" in chunk and "ID" in chunk["aux"]:
                image_id = chunk["aux"]["ID"]
            if "error" in chunk:
                errors.append(str(chunk["error"]))
    except (APIError, DockerException) as err:
        raise BuildError(f"docker build failed: {err}") from err
    if errors or not image_id:
        raise BuildError(f"docker build failed: {'; '.join(errors) or 'no image id'}")
    return image_id


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
        "inputs": derived.inputs_hash,
        "base_image": result.base_image,
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


def build_environment(
    client: docker.DockerClient,
    env: Environment,
    *,
    lock: LockFile | None = None,
    cache: Path | None = None,
    push: bool | str = False,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> BuildResult:
    """Build ``env`` (a derived environment) unless its image is already here; record it
    in ``lock`` (not saved) and push it with ``push`` (True: to its own repository; a
    registry: under that registry, see :func:`pushed_reference`)."""
    derived = env.derived
    if derived is None:
        raise BuildError(
            f"Environment '{env.id}' is not a derived environment (no base and pip in its "
            f"entry): there is nothing to build; `jupyter tfenv pull {env.id}` fetches it."
        )
    try:
        base = client.images.get(derived.base_image)
    except ImageNotFound:
        raise BuildError(
            f"The base image {derived.base_image} of '{env.id}' is not on this Docker "
            f"engine. Pull it first (`jupyter tfenv pull {derived.base}` or `docker pull "
            f"{derived.base_image}`)."
        ) from None
    recorded = (lock.builds.get(env.image) if lock is not None else None) or {}
    shas = {}
    for line in recorded.get("pip") or []:
        spec, _, sha = line.partition(" --hash=sha256:")
        shas[spec] = sha
    target = target_of(client, base.id, derived.python)
    if progress:
        progress({"phase": "target", "message": f"packages for {target.key}"})
    wheels, _downloaded = download_wheels(
        derived, target, cache or default_wheel_cache(), recorded=shas, progress=progress
    )
    existing = None
    if not rebuild:
        try:
            existing = client.images.get(env.image)
        except ImageNotFound:
            existing = None
    labels = {
        LABEL_INPUTS: derived.inputs_hash,
        LABEL_BASE: derived.base_image,
        LABEL_BASE_ID: str(base.id),
        LABEL_PIP: json.dumps([w.line() for w in wheels]),
    }
    if existing is not None and (existing.labels or {}).get(LABEL_BASE_ID) == base.id:
        image_id, cached = str(existing.id), True
    else:
        with tempfile.TemporaryDirectory(prefix="tfenv-build-") as tmp:
            context = Path(tmp) / "context"
            packages = context / "packages"
            packages.mkdir(parents=True)
            if progress:
                progress({"phase": "install", "message": f"installing {len(wheels)} wheel(s)"})
            _install(wheels, target, packages)
            (context / "Dockerfile").write_text(
                _dockerfile(str(base.id), base.attrs.get("Config", {}).get("Env") or [], labels),
                encoding="utf-8",
            )
            image_id = _docker_build(client, context, progress)
        try:
            _verify(client, image_id, derived.python, wheels)
        except BuildError:
            _remove_quietly(client, image_id)
            raise
        repository, _, tag = env.image.rpartition(":")
        client.images.get(image_id).tag(repository, tag)
        cached = False
    result = BuildResult(
        env_id=env.id,
        image=env.image,
        image_id=image_id,
        base_image=derived.base_image,
        base_id=str(base.id),
        target=target,
        wheels=wheels,
        cached=cached,
    )
    if push:
        result.pushed = pushed_reference(env.image, push if isinstance(push, str) else None)
        if result.pushed != env.image:
            repository, _, tag = result.pushed.rpartition(":")
            client.images.get(image_id).tag(repository, tag)
        result.digest = _push(client, result.pushed, progress)
    if lock is not None:
        lock.builds[env.image] = build_record(result, derived)
        if result.pushed and result.digest:
            # Teammates whose entry names the pushed repository find it under that name.
            lock.builds[result.pushed] = lock.builds[env.image]
            lock.set(result.pushed, result.digest)
    return result


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
    build is recorded): the base tag now names another image, or the base's lock entry
    moved."""
    derived = env.derived
    record = lock.builds.get(env.image) if derived is not None else None
    if derived is None or not record:
        return None
    try:
        base_id = str(client.images.get(derived.base_image).id)
    except ImageNotFound:
        return None
    if base_id != record.get("base_id"):
        return (
            f"its base {derived.base_image} is now image {base_id[:19]}, but it was built "
            f"on {str(record.get('base_id'))[:19]}: rebuild it with `jupyter tfenv build "
            f"{env.id}` (and commit the lock file)."
        )
    return None


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
    here already) and record it in the lock file at ``lock_path`` (None: no lock file)."""
    lock = LockFile.load(lock_path) if lock_path is not None else None
    result = build_environment(client, env, lock=lock)
    if lock is not None:
        lock.save()
    return result.to_dict()
