"""Kernel runtimes: ipykernel for images that lack it, without changing the image.

A runtime is a folder of ipykernel and its dependencies for one Python ABI and machine
(``cp311-x86_64``), built on the host with pip (``--target``, binary wheels only) by an
explicit ``jupyter tfenv runtime build`` and mounted read-only at /opt/tfenv/runtimes in
every kernel container. The in-container launcher appends the matching one to sys.path
only when the image's python has no ipykernel of its own. Nothing is ever installed at
kernel start.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

from jupyter_tfenv.errors import TFEnvError

#: manylinux tags pip may pick binary wheels for, newest first.
_MANYLINUX = [f"manylinux_2_{n}" for n in (34, 31, 28, 27, 26, 24, 17)] + [
    "manylinux2014",
    "manylinux1",
]


def default_runtimes_dir() -> Path:
    return Path(jupyter_data_dir()) / "jupyter_tfenv" / "runtimes"


def runtime_tag(python: str, machine: str | None = None) -> str:
    """``3.11`` → ``cp311-x86_64`` (the launcher computes the same tag in the container)."""
    match = re.fullmatch(r"3\.([0-9]{1,2})", python.strip())
    if not match:
        raise TFEnvError(f"'{python}' is not a Python version like 3.11.")
    return f"cp3{match.group(1)}-{machine or platform.machine()}"


def runtime_build_hint(python: str) -> str:
    version = python if re.fullmatch(r"3\.[0-9]{1,2}", python) else "3.X"
    return (
        f"Build one once on the server's host with `jupyter tfenv runtime build --python "
        f"{version}` (it is mounted read-only; the image stays unchanged)."
    )


def build_command(
    python: str,
    target: Path,
    *,
    machine: str | None = None,
    find_links: list[str] | None = None,
    no_index: bool = False,
    spec: str = "ipykernel>=6.29",
) -> list[str]:
    minor = runtime_tag(python, machine).split("-")[0][2:]
    arch = machine or platform.machine()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--target",
        str(target),
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        f"3.{minor[1:]}",
    ]
    for tag in _MANYLINUX:
        cmd += ["--platform", f"{tag}_{arch}"]
    for link in find_links or []:
        cmd += ["--find-links", link]
    if no_index:
        cmd.append("--no-index")
    cmd.append(spec)
    return cmd


def build_runtime(
    python: str,
    *,
    runtimes_dir: Path | None = None,
    machine: str | None = None,
    find_links: list[str] | None = None,
    no_index: bool = False,
    force: bool = False,
) -> Path:
    """Build (or rebuild with ``force``) the runtime for ``python``; return its folder.

    Built into a temporary sibling and renamed at the end, so a kernel never mounts a
    half-built runtime.
    """
    root = runtimes_dir or default_runtimes_dir()
    final = root / runtime_tag(python, machine)
    if final.is_dir() and not force:
        return final
    root.mkdir(parents=True, exist_ok=True)
    if root.stat().st_uid == os.getuid():
        # Kernels run as other uids and must read the mounted runtimes.
        root.chmod(0o755)
    building = root / f".{final.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    cmd = build_command(python, building, machine=machine, find_links=find_links, no_index=no_index)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise TFEnvError(
            f"Building the kernel runtime for Python {python} failed (pip exit "
            f"{result.returncode}):\n{result.stderr.strip()[-2000:]}"
        )
    # Readable by every kernel uid; never writable from a container (mounted read-only).
    for dirpath, dirnames, filenames in os.walk(building):
        for name in dirnames:
            Path(dirpath, name).chmod(0o755)
        for name in filenames:
            path = Path(dirpath, name)
            path.chmod(0o755 if os.access(path, os.X_OK) else 0o644)
    building.chmod(0o755)
    if final.exists():
        shutil.rmtree(final)
    building.rename(final)
    return final


def list_runtimes(runtimes_dir: Path | None = None) -> list[str]:
    root = runtimes_dir or default_runtimes_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
