"""The wheels of a derived environment (issue 21), on the host: resolved, cached, installed.

:func:`resolve` asks pip, on the host, for the entry's pins **and their dependencies**
(``pip download --only-binary=:all:`` for the image's own Python version, ABI and platform,
the base image's own packages as constraints, so a dependency the base already has stays
the base's), keeps every wheel in the cache (``<wheel cache>/<target>/``) with its sha256
and returns the set the image lacks: ``name==version --hash=sha256:…``, which the lock file
records. :func:`fetch` gets a recorded set back (from the cache, else ``pip download
--no-deps`` of exactly those versions), refusing a wheel whose hash is not the recorded
one. :func:`install` installs a set with ``pip install --no-index --require-hashes
--no-deps --target``: nothing is resolved or fetched at install time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from jupyter_tfenv.catalog.derived import Pin
from jupyter_tfenv.errors import TFEnvError

Progress = Callable[[dict[str, Any]], None]


class BuildError(TFEnvError):
    """A derived environment could not be built; the message says why and what to do."""

    http_status = 400


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip(
    args: list[str], on_line: Callable[[str], None] | None = None
) -> subprocess.CompletedProcess[str]:
    """``pip ARGS`` on the host; ``on_line`` gets each line of its output as it comes."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    if on_line is None:
        return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1800)
    out: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as err:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.append(line)
                on_line(line.rstrip())
            code = proc.wait(timeout=1800)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, code, "".join(out), err.read())


class _DownloadCount:
    """``downloading wheels n/m`` from pip download's lines: each ``Collecting`` is one
    more wheel to get, each wheel downloaded (or found already there) one more got."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.done = 0
        self.total = 0

    def __call__(self, line: str) -> None:
        words = line.split()
        got = words[:1] in (["Downloading"], ["Using"]) and any(w.endswith(".whl") for w in words)
        if line.startswith("Collecting "):
            self.total += 1
        elif got or line.strip().startswith("File was already downloaded"):
            self.done += 1
        else:
            return
        total = max(self.total, self.done)
        self.progress(
            {
                "phase": "download",
                "message": f"downloading wheels {self.done}/{total}",
                "done": self.done,
                "total": total,
            }
        )


class _Cache:
    """One target's folder of the wheel cache, with its index (``name==version`` → file, sha256)."""

    def __init__(self, cache: Path, target: Target) -> None:
        self.folder = cache / target.key
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index_file = self.folder / "index.json"
        try:
            self.index: dict[str, dict[str, str]] = json.loads(
                self.index_file.read_text(encoding="utf-8")
            )
        except (OSError, ValueError):
            self.index = {}

    def get(self, spec: str) -> Wheel | None:
        entry = self.index.get(spec)
        if entry is None or not (self.folder / entry["file"]).is_file():
            return None
        name, _, version = spec.partition("==")
        return Wheel(Pin(name, version), self.folder / entry["file"], entry["sha256"])

    def add(self, file: Path) -> Wheel | None:
        """Move a downloaded wheel in; None for a file that is not a wheel."""
        try:
            name, version, _build, _tags = parse_wheel_filename(file.name)
        except InvalidWheelFilename:
            return None
        pin = Pin(canonicalize_name(name), str(version))
        os.replace(file, self.folder / file.name)
        wheel = Wheel(pin, self.folder / file.name, sha256_of(self.folder / file.name))
        self.index[pin.spec] = {"file": file.name, "sha256": wheel.sha256}
        return wheel

    def save(self) -> None:
        # Atomically: another build may read the index at the same time.
        tmp = self.folder / f".index.{os.getpid()}.json"
        tmp.write_text(json.dumps(self.index, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.index_file)


def _download(
    cache: _Cache,
    target: Target,
    lines: list[str],
    extra: list[str],
    what: str,
    *,
    progress: Progress | None = None,
) -> list[Wheel]:
    """``pip download`` of requirement ``lines`` into the cache; the wheels pip saved.
    ``progress`` gets ``downloading wheels n/m`` events (``done``, ``total``)."""
    with tempfile.TemporaryDirectory(dir=cache.folder, prefix=".download-") as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        dest = Path(tmp) / "wheels"
        result = pip(
            ["download", "--dest", str(dest), *target.pip_args(), *extra, "-r", str(reqs)],
            _DownloadCount(progress) if progress else None,
        )
        if result.returncode != 0:
            said = result.stderr.strip()[-1500:]
            hint = (
                "Every package needs a wheel for that platform (source distributions are not "
                "built), and PyPI (or pip's configured index) must be reachable from this host."
            )
            if "conflict" in said.lower() or "ResolutionImpossible" in said:
                hint = (
                    "The pins, their dependencies and the packages the base image already has "
                    "(kept at its versions unless you pin another) cannot be satisfied "
                    "together: change a pin, or pin the dependency pip names."
                )
            raise BuildError(
                f"{what} for Python {target.python} on {target.machine} failed (pip exit "
                f"{result.returncode}): {said}\n{hint}"
            )
        wheels = [cache.add(file) for file in sorted(dest.iterdir()) if file.is_file()]
    cache.save()
    return [w for w in wheels if w is not None]


def _check_catalog_hashes(pins: tuple[Pin, ...], wheels: dict[str, Wheel]) -> None:
    for pin in pins:
        wheel = wheels.get(pin.name)
        if wheel is None:
            continue
        if pin.hashes and f"sha256:{wheel.sha256}" not in pin.hashes:
            raise BuildError(
                f"The wheel {wheel.file.name} of {pin.spec} has sha256:{wheel.sha256}, which "
                f"is none of the catalog's --hash values ({', '.join(pin.hashes)}). The "
                "index served other bits: check where it came from before you change the "
                "pin."
            )


def resolve(
    pins: tuple[Pin, ...],
    target: Target,
    cache: Path,
    *,
    base_packages: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> list[Wheel]:
    """The pins and their dependencies for ``target``, less what the base already has at
    the same version (``base_packages``: ``{name: version}``, kept as constraints unless a
    pin names the package). Wheels are checked against the catalog's ``--hash`` values."""
    if progress:
        progress({"phase": "resolve", "message": f"resolving {len(pins)} pin(s) and dependencies"})
    folder = _Cache(cache, target)
    pinned = {p.name for p in pins}
    kept: dict[str, str] = {}
    for name, version in (base_packages or {}).items():
        try:
            Version(version)
        except InvalidVersion:
            continue
        if canonicalize_name(name) not in pinned:
            kept[canonicalize_name(name)] = version
    extra: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tfenv-constraints-") as tmp:
        if kept:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text(
                "".join(f"{n}=={v}\n" for n, v in sorted(kept.items())), encoding="utf-8"
            )
            extra = ["-c", str(constraints)]
        wheels = _download(
            folder,
            target,
            [p.spec for p in pins],
            extra,
            "Resolving the packages",
            progress=progress,
        )
    found = {w.pin.name: w for w in wheels}
    missing = [p.spec for p in pins if p.name not in found]
    if missing:
        raise BuildError(f"pip resolved no wheel for {', '.join(missing)} ({target.key}).")
    _check_catalog_hashes(pins, found)
    added = [w for name, w in sorted(found.items()) if kept.get(name) != w.pin.version]
    return added


def fetch(
    lines: tuple[str, ...] | list[str],
    pins: tuple[Pin, ...],
    target: Target,
    cache: Path,
    *,
    progress: Progress | None = None,
) -> tuple[list[Wheel], int]:
    """The wheels of a recorded set (``name==version --hash=sha256:…``): from the cache,
    else downloaded without dependencies; a wheel whose sha256 is not the recorded one is
    refused. Returns the wheels and how many were downloaded."""
    folder = _Cache(cache, target)
    wanted = {}
    for line in lines:
        spec, _, sha = line.partition(" --hash=sha256:")
        wanted[spec] = sha
    missing = [spec for spec, sha in wanted.items() if _cached(folder, spec, sha) is None]
    if missing:
        if progress:
            progress({"phase": "download", "message": f"downloading {len(missing)} wheel(s)"})
        _download(
            folder, target, missing, ["--no-deps"], "Downloading the wheels", progress=progress
        )
    wheels = []
    for spec, sha in sorted(wanted.items()):
        wheel = folder.get(spec)
        if wheel is None:
            raise BuildError(f"pip downloaded no wheel for {spec} ({target.key}).")
        if wheel.sha256 != sha:
            raise BuildError(
                f"The wheel {wheel.file.name} of {spec} has sha256:{wheel.sha256}, but the lock "
                f"file's resolution of this environment has sha256:{sha}. Pin the hash in the "
                "catalog (--hash=sha256:…) to choose one, or resolve again with `jupyter "
                "tfenv build --resolve`."
            )
        wheels.append(wheel)
    _check_catalog_hashes(pins, {w.pin.name: w for w in wheels})
    return wheels, len(missing)


def _cached(folder: _Cache, spec: str, sha: str) -> Wheel | None:
    wheel = folder.get(spec)
    return wheel if wheel is not None and wheel.sha256 == sha else None


def install(wheels: list[Wheel], target: Target, into: Path) -> None:
    """``pip install --no-index --require-hashes --no-deps --target`` from the cache."""
    reqs = into.parent / "requirements.txt"
    reqs.write_text("".join(w.line() + "\n" for w in wheels), encoding="utf-8")
    links = sorted({str(w.file.parent) for w in wheels})
    args = ["install", "--no-index", "--no-deps", "--require-hashes", "--no-compile"]
    for link in links:
        args += ["--find-links", link]
    result = pip([*args, "--target", str(into), *target.pip_args(), "-r", str(reqs)])
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


__all__ = ["BuildError", "Target", "Wheel", "fetch", "install", "resolve"]
