#!/usr/bin/env python3
"""Build the local Docker images that the jupyter_tfenv tests and demo run on.

No container registry can be reached from the build and CI machines, so nothing is
pulled: a Debian bookworm root file system is made with ``debootstrap`` and imported,
Python wheels are downloaded on the host with ``pip download`` and copied into
``docker build --network none`` contexts, where they are installed with ``--no-index``.

Images (all labelled ``org.jupyter.tfenv.stand-in=true``):

- ``tfenv-test/base:bookworm``               debootstrap minbase + python3 + ca-certificates
- ``tfenv-test/python:3.11``                 the base, python3 only, no ipykernel
- ``tfenv-test/python:3.11-jupyter``         python3 + ipykernel
- ``tfenv-test/nopython:1``                  the base with every python3 binary removed
- ``tfenv-test/tensorflow:2.20.0``           python3 + tensorflow-cpu 2.20.0, no ipykernel
- ``tfenv-test/tensorflow:2.20.0-jupyter``   the previous + ipykernel
- ``tfenv-test/tensorflow:2.19.0-jupyter``   python3 + tensorflow-cpu 2.19.0 + ipykernel

Every image carries ``org.jupyter.tfenv.test-recipe=<sha256>``, a hash of its recipe
(Dockerfile text, package pins, parent's recipe hash). An image whose tag exists with
the same hash is not rebuilt. Wheels and the root file system tarball are cached in
``$TFENV_DEV_CACHE`` (default ``~/.cache/jupyter_tfenv-dev``).

Usage::

    python3 scripts/build_test_images.py [--only NAME ...] [--tag-demo] [--verbose]

``--tag-demo`` also tags the TensorFlow images as the upstream names the product demo
uses (``tensorflow/tensorflow:2.20.0-jupyter`` ...), as stand-ins for Docker Hub.

From Python (tests)::

    sys.path.insert(0, "scripts")
    from build_test_images import ensure_images
    ensure_images(["tensorflow:2.20.0-jupyter"])
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

RECIPE_LABEL = "org.jupyter.tfenv.test-recipe"
STAND_IN_LABEL = "org.jupyter.tfenv.stand-in"
PREFIX = "[images]"

# Bookworm's python3 is 3.11.2: wheels are chosen for exactly that interpreter.
IMAGE_PYTHON_VERSION = "3.11.2"
# bookworm has glibc 2.36: every manylinux tag up to that one runs in the images.
GLIBC_MINOR_MAX = 36
PIP_VERSION = "25.2"
PIP_WHEEL = f"pip-{PIP_VERSION}-py3-none-any.whl"
# The upstream tensorflow/tensorflow:2.20.0-jupyter image was built with ipykernel 6.30.x.
IPYKERNEL_PIN = "ipykernel==6.30.1"

DEFAULT_MIRROR = "http://deb.debian.org/debian"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BuildError(RuntimeError):
    """A step of the image build failed; the message says which and where the log is."""


# --------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class RootfsRecipe:
    suite: str = "bookworm"
    variant: str = "minbase"
    include: tuple[str, ...] = ("python3", "ca-certificates")
    # paths (relative to the rootfs) whose *contents* are dropped before the import
    strip: tuple[str, ...] = (
        "var/lib/apt/lists",
        "var/cache/apt",
        "var/log",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "usr/share/lintian",
    )
    changes: tuple[str, ...] = (
        f"ENV PATH={CONTAINER_PATH}",
        "ENV LANG=C.UTF-8",
        'CMD ["/bin/bash"]',
    )
    revision: int = 1

    def text(self) -> str:
        return json.dumps(
            {
                "suite": self.suite,
                "variant": self.variant,
                "include": list(self.include),
                "strip": list(self.strip),
                "changes": list(self.changes),
                "revision": self.revision,
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class WheelSet:
    """Wheels downloaded on the host for one set of requirements."""

    name: str
    requirements: tuple[str, ...]

    def key(self) -> str:
        text = json.dumps(
            {
                "requirements": [*self.requirements, f"pip=={PIP_VERSION}"],
                "python": IMAGE_PYTHON_VERSION,
                "platforms": _wheel_platforms(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


WHEEL_SETS: dict[str, WheelSet] = {
    ws.name: ws
    for ws in (
        WheelSet("ipykernel", (IPYKERNEL_PIN,)),
        WheelSet("tf-2.20.0", ("tensorflow-cpu==2.20.0",)),
        WheelSet("tf-2.19.0", ("tensorflow-cpu==2.19.0",)),
    )
}


@dataclass(frozen=True)
class ImageSpec:
    key: str  # short name, e.g. "tensorflow:2.20.0-jupyter"
    parent: str | None  # key of the parent image; None: imported from the rootfs
    wheel_sets: tuple[str, ...] = ()
    install: tuple[str, ...] = ()  # requirements to pip install from the wheels
    run: str | None = None  # extra shell run after the install
    check: tuple[str, ...] = ()  # smoke test run in a fresh container after a build
    demo_tags: tuple[str, ...] = field(default=())

    @property
    def ref(self) -> str:
        return f"tfenv-test/{self.key}"


def _py(code: str) -> tuple[str, ...]:
    return ("python3", "-c", code)


_NO_IPYKERNEL = "import importlib.util as u; assert u.find_spec('ipykernel') is None"

SPECS: dict[str, ImageSpec] = {
    s.key: s
    for s in (
        ImageSpec("base:bookworm", None, check=_py("import ssl, json, sys; print(sys.version)")),
        ImageSpec("python:3.11", "base:bookworm", check=_py(_NO_IPYKERNEL)),
        ImageSpec(
            "python:3.11-jupyter",
            "python:3.11",
            wheel_sets=("ipykernel",),
            install=(IPYKERNEL_PIN,),
            check=_py("import ipykernel; print(ipykernel.__version__)"),
        ),
        ImageSpec(
            "nopython:1",
            "base:bookworm",
            run=(
                "rm -f /usr/bin/python3* /usr/bin/pydoc3* /usr/bin/py3compile /usr/bin/py3clean"
                " && ! command -v python3 && ! command -v python"
            ),
            check=("sh", "-c", "! command -v python3"),
        ),
        ImageSpec(
            "tensorflow:2.20.0",
            "python:3.11",
            wheel_sets=("tf-2.20.0",),
            install=("tensorflow-cpu==2.20.0",),
            check=_py(
                "import tensorflow as tf; assert tf.__version__ == '2.20.0', tf.__version__; "
                + _NO_IPYKERNEL
            ),
            demo_tags=("tensorflow/tensorflow:2.20.0",),
        ),
        ImageSpec(
            "tensorflow:2.20.0-jupyter",
            "tensorflow:2.20.0",
            wheel_sets=("ipykernel",),
            install=(IPYKERNEL_PIN,),
            check=_py("import tensorflow as tf, ipykernel; assert tf.__version__ == '2.20.0'"),
            demo_tags=("tensorflow/tensorflow:2.20.0-jupyter",),
        ),
        ImageSpec(
            "tensorflow:2.19.0-jupyter",
            "python:3.11",
            wheel_sets=("tf-2.19.0", "ipykernel"),
            install=("tensorflow-cpu==2.19.0", IPYKERNEL_PIN),
            check=_py("import tensorflow as tf, ipykernel; assert tf.__version__ == '2.19.0'"),
            demo_tags=("tensorflow/tensorflow:2.19.0-jupyter",),
        ),
    )
}

ROOTFS = RootfsRecipe()


def _wheel_platforms() -> list[str]:
    plats = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR_MAX, 4, -1)]
    return [*plats, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def dockerfile(spec: ImageSpec) -> str:
    """The Dockerfile text of a built (non-imported) image."""
    if spec.parent is None:
        raise ValueError(f"{spec.key} is imported, it has no Dockerfile")
    lines = [f"FROM {SPECS[spec.parent].ref}"]
    steps: list[str] = []
    if spec.install:
        lines.append("COPY wheels/ /tmp/wheels/")
        pip = (
            f"python3 /tmp/wheels/{PIP_WHEEL}/pip install --no-index --find-links /tmp/wheels"
            " --break-system-packages --root-user-action=ignore --no-cache-dir"
            " --disable-pip-version-check --no-warn-script-location --progress-bar off "
            + " ".join(f"'{req}'" for req in spec.install)
        )
        steps += [pip, "rm -rf /tmp/wheels"]
    if spec.run:
        steps.append(spec.run)
    if steps:
        lines.append("RUN " + " \\\n && ".join(steps))
    return "\n".join(lines) + "\n"


def recipe_hash(key: str, _memo: dict[str, str] | None = None) -> str:
    """sha256 of an image's recipe: its Dockerfile (or rootfs recipe), pins, parent hash."""
    memo = {} if _memo is None else _memo
    if key in memo:
        return memo[key]
    spec = SPECS[key]
    parts: dict[str, object] = {"ref": spec.ref}
    if spec.parent is None:
        parts["rootfs"] = ROOTFS.text()
    else:
        parts["parent"] = recipe_hash(spec.parent, memo)
        parts["dockerfile"] = dockerfile(spec)
        parts["wheels"] = {
            name: [*WHEEL_SETS[name].requirements, f"pip=={PIP_VERSION}"]
            for name in spec.wheel_sets
        }
        parts["python"] = IMAGE_PYTHON_VERSION
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    memo[key] = digest
    return digest


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(f"{PREFIX} {msg}", flush=True)


def cache_dir() -> Path:
    env = os.environ.get("TFENV_DEV_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "jupyter_tfenv-dev"


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def run_logged(
    argv: Sequence[str],
    logfile: Path,
    what: str,
    *,
    verbose: bool = False,
    env: dict[str, str] | None = None,
    stdin: IO[bytes] | None = None,
) -> None:
    """Run a command, its output appended to ``logfile`` (and echoed when verbose)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as out:
        out.write(f"\n$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                env=env,
            )
        except FileNotFoundError as exc:
            raise BuildError(f"{what}: {argv[0]} not found ({exc})") from exc
        assert proc.stdout is not None
        for chunk in iter(proc.stdout.readline, b""):
            out.write(chunk)
            if verbose:
                sys.stdout.write(chunk.decode(errors="replace"))
                sys.stdout.flush()
        code = proc.wait()
    if code != 0:
        raise BuildError(f"{what} failed (exit {code}); last lines of {logfile}:\n{_tail(logfile)}")


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise BuildError("the docker CLI is not installed") from exc
    if check and proc.returncode != 0:
        raise BuildError(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def image_labels(ref: str) -> dict[str, str] | None:
    """The labels of a local image, or None when no image has that name."""
    proc = docker("image", "inspect", "--format", "{{json .Config.Labels}}", ref, check=False)
    if proc.returncode != 0:
        return None
    labels = json.loads(proc.stdout.strip() or "null")
    return dict(labels) if isinstance(labels, dict) else {}


def image_id(ref: str) -> str | None:
    proc = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _drop_replaced(old_id: str | None, ref: str) -> None:
    """Remove the image a rebuild replaced, when nothing else refers to it."""
    if old_id and old_id != image_id(ref):
        docker("rmi", old_id, check=False)  # fails harmlessly when tagged or a parent


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so that concurrent runs do not build the same thing twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build to finish (lock {path}) ...")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()).rstrip("/") + "/"
    found: list[str] = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                found.append(point)
    return found


def remove_tree(root: Path) -> None:
    """rm -rf a chroot, first unmounting anything (proc, sys, dev) left mounted inside it."""
    if not root.exists():
        return
    for point in sorted(_mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    left = _mounts_under(root)
    if left:
        raise BuildError(f"refusing to delete {root}: still mounted inside it: {left}")
    shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- rootfs


def debian_mirror() -> str:
    """The Debian mirror apt uses on this host (``$TFENV_DEBIAN_MIRROR`` overrides)."""
    env = os.environ.get("TFENV_DEBIAN_MIRROR")
    if env:
        return env
    candidates: list[Path] = [Path("/etc/apt/sources.list")]
    sources_d = Path("/etc/apt/sources.list.d")
    if sources_d.is_dir():
        candidates += sorted(sources_d.glob("*.list")) + sorted(sources_d.glob("*.sources"))
    for path in candidates:
        try:
            text = path.read_text()
        except OSError:
            continue
        # one-line format: deb [opts] URI suite components
        for line in text.splitlines():
            m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(2) == ROOTFS.suite and m.group(1).rstrip("/").endswith("/debian"):
                return m.group(1).rstrip("/")
        # deb822 format: stanzas separated by blank lines
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            suites = fields.get("suites", "").split()
            if "deb" not in fields.get("types", "").split() or ROOTFS.suite not in suites:
                continue
            for uri in fields.get("uris", "").split():
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


def ensure_rootfs_tar(cache: Path, verbose: bool) -> Path:
    """The cached tarball of the debootstrapped root file system; made when missing."""
    digest = hashlib.sha256(ROOTFS.text().encode()).hexdigest()[:16]
    tar = cache / "rootfs" / f"{ROOTFS.suite}-{ROOTFS.variant}-{digest}.tar"
    if tar.is_file():
        log(f"cached rootfs {tar}")
        return tar
    if os.geteuid() != 0:
        raise BuildError("debootstrap needs root: run this script as root")
    if shutil.which("debootstrap") is None:
        raise BuildError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = debian_mirror()
    logfile = cache / "logs" / "rootfs.log"
    logfile.unlink(missing_ok=True)
    tar.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tar.parent))
    target = work / "root"
    try:
        log(f"debootstrap {ROOTFS.suite} ({ROOTFS.variant}) from {mirror} (~40 s) ...")
        run_logged(
            [
                "debootstrap",
                f"--variant={ROOTFS.variant}",
                "--include=" + ",".join(ROOTFS.include),
                ROOTFS.suite,
                str(target),
                mirror,
            ],
            logfile,
            "debootstrap",
            verbose=verbose,
        )
        for rel in ROOTFS.strip:
            sub = target / rel
            if sub.is_dir():
                for child in sub.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
        for rel in ("etc/resolv.conf", "etc/hostname"):  # the host's; Docker mounts its own
            (target / rel).unlink(missing_ok=True)
            (target / rel).write_text("")
        partial = work / "rootfs.tar"
        run_logged(
            [
                "tar",
                "--numeric-owner",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-C",
                str(target),
                "-cf",
                str(partial),
                ".",
            ],
            logfile,
            "tar of the rootfs",
            verbose=verbose,
        )
        partial.replace(tar)
    finally:
        remove_tree(work)
    size = tar.stat().st_size / 2**20
    log(f"rootfs tarball {tar} ({size:.0f} MiB)")
    return tar


# --------------------------------------------------------------------------- wheels


def ensure_wheels(ws: WheelSet, cache: Path, verbose: bool) -> Path:
    """A directory holding the wheels of ``ws`` (plus pip's own); downloaded when missing."""
    dest = cache / "wheels" / f"{ws.name}-{ws.key()}"
    if (dest / ".complete").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{ws.name}-", dir=dest.parent))
    logfile = cache / "logs" / f"wheels-{ws.name}.log"
    logfile.unlink(missing_ok=True)
    reqs = [*ws.requirements, f"pip=={PIP_VERSION}"]
    log(f"downloading wheels {ws.name}: {' '.join(reqs)} ...")
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        "--only-binary=:all:",
        "--python-version",
        IMAGE_PYTHON_VERSION,
        "--implementation",
        "cp",
    ]
    for plat in _wheel_platforms():
        argv += ["--platform", plat]
    argv += ["-d", str(partial), *reqs]
    try:
        run_logged(argv, logfile, f"pip download of {ws.name}", verbose=verbose)
        if not (partial / PIP_WHEEL).is_file():
            raise BuildError(f"pip download of {ws.name} did not produce {PIP_WHEEL}")
        (partial / ".complete").write_text("\n".join(sorted(p.name for p in partial.iterdir())))
        if dest.exists():
            shutil.rmtree(dest)
        partial.rename(dest)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    size = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20
    log(f"wheels {ws.name}: {len(list(dest.glob('*.whl')))} files, {size:.0f} MiB in {dest}")
    return dest


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------- images


def _label_args(spec: ImageSpec) -> list[str]:
    return [f"{RECIPE_LABEL}={recipe_hash(spec.key)}", f"{STAND_IN_LABEL}=true"]


def _smoke_test(spec: ImageSpec, logfile: Path, verbose: bool) -> None:
    if spec.check:
        run_logged(
            ["docker", "run", "--rm", "--network", "none", spec.ref, *spec.check],
            logfile,
            f"smoke test of {spec.ref}",
            verbose=verbose,
        )


def _import_base(spec: ImageSpec, cache: Path, verbose: bool) -> None:
    tar = ensure_rootfs_tar(cache, verbose)
    logfile = cache / "logs" / f"{_safe(spec.key)}.log"
    logfile.unlink(missing_ok=True)
    argv = ["docker", "import"]
    for change in (*ROOTFS.changes, *(f"LABEL {lab}" for lab in _label_args(spec))):
        argv += ["--change", change]
    log(f"importing {spec.ref} ...")
    run_logged(
        [*argv, str(tar), spec.ref], logfile, f"docker import of {spec.ref}", verbose=verbose
    )
    _smoke_test(spec, logfile, verbose)


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _build(spec: ImageSpec, cache: Path, verbose: bool) -> None:
    wheel_dirs = [ensure_wheels(WHEEL_SETS[name], cache, verbose) for name in spec.wheel_sets]
    logfile = cache / "logs" / f"{_safe(spec.key)}.log"
    logfile.unlink(missing_ok=True)
    ctx_root = cache / "contexts"
    ctx_root.mkdir(parents=True, exist_ok=True)
    ctx = Path(tempfile.mkdtemp(prefix=f"{_safe(spec.key)}-", dir=ctx_root))
    try:
        (ctx / "Dockerfile").write_text(dockerfile(spec))
        if wheel_dirs:
            wheels = ctx / "wheels"
            wheels.mkdir()
            for wdir in wheel_dirs:
                for whl in wdir.glob("*.whl"):
                    if not (wheels / whl.name).exists():
                        _link_or_copy(whl, wheels / whl.name)
        argv = ["docker", "build", "--network", "none", "--force-rm", "-t", spec.ref]
        for lab in _label_args(spec):
            argv += ["--label", lab]
        env = dict(os.environ, DOCKER_BUILDKIT="0")  # the legacy builder: no buildx needed
        log(f"building {spec.ref} ...")
        run_logged(
            [*argv, str(ctx)], logfile, f"docker build of {spec.ref}", verbose=verbose, env=env
        )
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    _smoke_test(spec, logfile, verbose)


def _resolve(names: Iterable[str] | None) -> list[str]:
    """Image keys to ensure, parents first; names may be keys or full refs."""
    if names is None:
        wanted = list(SPECS)
    else:
        wanted = []
        for name in names:
            key = name.removeprefix("tfenv-test/")
            if key not in SPECS:
                known = ", ".join(SPECS)
                raise BuildError(f"unknown image {name!r}; known: {known}")
            wanted.append(key)
    order: list[str] = []

    def visit(key: str) -> None:
        parent = SPECS[key].parent
        if parent is not None:
            visit(parent)
        if key not in order:
            order.append(key)

    for key in wanted:
        visit(key)
    return order


def _tag_demo(keys: Iterable[str]) -> None:
    for key in keys:
        spec = SPECS[key]
        for demo in spec.demo_tags:
            labels = image_labels(demo)
            if labels is not None and labels.get(STAND_IN_LABEL) != "true":
                log(f"NOT tagging {demo}: a real image of that name exists here")
                continue
            docker("tag", spec.ref, demo)
            log(f"tagged {demo} -> {spec.ref} (stand-in)")


def ensure_images(
    names: Iterable[str] | None = None,
    *,
    tag_demo: bool = False,
    verbose: bool = False,
) -> None:
    """Make sure the named test images (default: all) exist with their current recipe.

    ``names`` are keys such as ``"tensorflow:2.20.0-jupyter"`` or full refs such as
    ``"tfenv-test/tensorflow:2.20.0-jupyter"``; parents are ensured first. Raises
    ``BuildError`` on failure.
    """
    keys = _resolve(names)
    if docker("version", "--format", "{{.Server.Version}}", check=False).returncode != 0:
        raise BuildError("no Docker engine answers (start one with scripts/start-dockerd.sh)")
    cache = cache_dir()
    with locked(cache / ".lock"):
        for key in keys:
            spec = SPECS[key]
            want = recipe_hash(key)
            labels = image_labels(spec.ref)
            if labels is not None and labels.get(RECIPE_LABEL) == want:
                log(f"cached {spec.ref}")
                continue
            old = image_id(spec.ref)
            start = time.monotonic()
            if spec.parent is None:
                _import_base(spec, cache, verbose)
            else:
                _build(spec, cache, verbose)
            _drop_replaced(old, spec.ref)
            log(f"built {spec.ref} in {time.monotonic() - start:.0f} s")
        if tag_demo:
            _tag_demo(keys)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",
        metavar="NAME",
        help=f"build only these images (and their parents); one of: {', '.join(SPECS)}",
    )
    parser.add_argument(
        "--tag-demo",
        action="store_true",
        help="also tag the TensorFlow images as tensorflow/tensorflow:* stand-ins",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="echo build output")
    parser.add_argument("--list", action="store_true", help="print the image names and exit")
    args = parser.parse_args(argv)
    if args.list:
        for spec in SPECS.values():
            print(spec.ref)
        return 0
    start = time.monotonic()
    try:
        ensure_images(args.only, tag_demo=args.tag_demo, verbose=args.verbose)
    except BuildError as exc:
        print(f"{PREFIX} ERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"{PREFIX} interrupted", file=sys.stderr, flush=True)
        return 130
    log(f"all done in {time.monotonic() - start:.1f} s (cache: {cache_dir()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
