"""Build jupyter_tfenv's distributions the way users and admins do.

- :func:`fresh_tree`: the files a fresh clone has (tracked and not ignored), without
  node_modules, the built labextension or the .venv of this checkout;
- :func:`build_dists`: ``python -m build`` on such a tree, in pypa/build's isolated
  environment (only pyproject.toml's build requirements), which builds the sdist and then
  the wheel from the sdist;
- :func:`build_wheel`: ``pip wheel --no-deps`` of a source folder, with pip's build
  isolation, as ``pip install .`` does (the JupyterHub tests' users' venv).

No step borrows this checkout's venv: its ``bin`` folder is taken off PATH, so a build
requirement missing from pyproject.toml fails here as it would for a user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class DistError(RuntimeError):
    """A build step failed; the message carries its output."""


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path


def _env() -> dict[str, str]:
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p != venv_bin]
    env = {
        key: value
        for key, value in os.environ.items()
        # As a user's shell: no skip switch of the build hooks, no venv of ours.
        if key not in {"HATCH_JUPYTER_BUILDER_SKIP_NPM", "SKIP_JUPYTER_BUILDER", "VIRTUAL_ENV"}
        and not key.startswith("PIP_REQUIRE")
    }
    env["PATH"] = os.pathsep.join(path)
    return env


def run(args: list[str], *, cwd: Path | None = None, timeout: float = 1200, **env: str) -> str:
    started = time.monotonic()
    result = subprocess.run(
        args,
        cwd=cwd,
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    print(
        f"[dist] {' '.join(args[:5])} ...: exit {result.returncode} in "
        f"{time.monotonic() - started:.0f} s"
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise DistError(f"{' '.join(args)} failed (exit {result.returncode}):\n{output[-6000:]}")
    return output


def fresh_tree(dest: Path, source: Path = REPO) -> Path:
    """Copy what ``git clone`` of ``source``'s working tree would hold into ``dest``."""
    listed = run(
        ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    )
    dest.mkdir(parents=True)
    for name in filter(None, listed.split("\0")):
        src = source / name
        if not src.is_file():  # deleted in the working tree, not yet committed
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


def build_dists(tree: Path, outdir: Path) -> Dists:
    """``python -m build``: the sdist, then the wheel built from that sdist."""
    run([sys.executable, "-m", "build", "--outdir", str(outdir), str(tree)])
    sdists = sorted(outdir.glob("jupyter_tfenv-*.tar.gz"))
    wheels = sorted(outdir.glob("jupyter_tfenv-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        raise DistError(f"expected one sdist and one wheel in {outdir}: {sorted(outdir.iterdir())}")
    return Dists(sdists[0], wheels[0])


def build_wheel(source: Path, outdir: Path, *, python: str = sys.executable, **env: str) -> Path:
    """``pip wheel --no-deps SOURCE`` with build isolation; the wheel's path. ``env``
    overrides variables of the build (``PATH``, for one)."""
    outdir.mkdir(parents=True, exist_ok=True)
    run(
        [
            python,
            "-m",
            "pip",
            "wheel",
            "--disable-pip-version-check",
            "--no-deps",
            "-q",
            "-w",
            str(outdir),
            str(source),
        ],
        **env,
    )
    wheels = sorted(outdir.glob("jupyter_tfenv-*.whl"))
    if len(wheels) != 1:
        raise DistError(f"expected one wheel in {outdir}: {wheels}")
    return wheels[0]
