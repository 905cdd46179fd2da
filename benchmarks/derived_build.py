"""Build time of a derived environment (issue 21): cold wheel cache (resolved and
downloaded), warm (the lock's resolution, wheels from the cache, no network), and the build
that finds its image already there.

A script, not a test: it prints figures and asserts nothing about them. It needs a Docker
engine, the small test image (tfenv-test/python:3.11-jupyter) and PyPI reachable from the
host (the cold runs download the wheels). Every image it builds is removed at the end.

    .venv/bin/python benchmarks/derived_build.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import docker

from jupyter_tfenv.backends.docker.builder import build_environment
from jupyter_tfenv.catalog.lock import LockFile
from jupyter_tfenv.catalog.validation import environment_from_dict

BASE = "tfenv-test/python:3.11-jupyter"
#: Pure-Python and binary wheels; importlib-metadata brings its dependency zipp (resolved).
PINS = ["six==1.16.0", "tomli==2.0.1", "pyyaml==6.0.2", "importlib-metadata==6.8.0"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="write the samples as JSON")
    args = parser.parse_args()
    client = docker.from_env(timeout=300)
    prefix = f"tfenv-bench-derived-{uuid.uuid4().hex[:8]}"
    samples: dict[str, list[float]] = {"cold cache": [], "warm cache": [], "already built": []}
    try:
        for run in range(args.runs):
            entry = {"id": "bench", "base": BASE, "pip": PINS, "repository": f"{prefix}/r{run}"}
            with tempfile.TemporaryDirectory(prefix="tfenv-bench-wheels-") as cache:
                lock = LockFile(Path(cache) / "tfenv-lock.json", missing=True)
                for label, rebuild in (
                    ("cold cache", True),
                    ("warm cache", True),
                    ("already built", False),
                ):
                    # After the first build, the entry as the catalog names it: the lock's
                    # resolution (no resolving, wheels from the cache).
                    record = lock.resolved.get("bench")
                    env = environment_from_dict(
                        {**entry, **({"resolved": record} if record else {})}
                    )
                    start = time.perf_counter()
                    build_environment(
                        client, env, lock=lock, cache=Path(cache) / "w", rebuild=rebuild
                    )
                    samples[label].append(time.perf_counter() - start)
    finally:
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(prefix):
                    client.images.remove(tag, force=True)
    print(f"derived build of {BASE} + {', '.join(PINS)}, {args.runs} run(s)")
    print(f"{'variant':<14} {'median s':>9} {'min s':>7} {'max s':>7}")
    for label, values in samples.items():
        print(f"{label:<14} {statistics.median(values):9.2f} {min(values):7.2f} {max(values):7.2f}")
    cold, warm = statistics.median(samples["cold cache"]), statistics.median(samples["warm cache"])
    print(f"warm / cold: {warm / cold:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(samples, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
