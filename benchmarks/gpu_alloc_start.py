#!/usr/bin/env python3
"""What GPU allocation adds to a kernel container's start (docs/gpus.md).

On a Docker engine of its own whose NVIDIA device driver is real (tests/support/gpu_engine.py: a
stand-in ``nvidia-container-runtime-hook`` on dockerd's PATH), with a stand-in inventory
of ``--devices`` devices, the same container is started two ways, interleaved round by
round:

* **plain** (the baseline): ``containers.run`` with a device request for a fixed device
  id, as a start without allocation does;
* **allocated**: ``docker_runtime.run_with_gpus``, as the provisioner and the broker do:
  under the allocation lock, list the engine's GPU holdings, pick a free device, create
  the container with its labels, list the holdings again (the re-check).

Containers of earlier rounds keep running (``--keep`` of them), so that the holdings the
allocator reads are not empty. One sample is the time until ``run`` returned; the kernel's
own start (ipykernel binding its sockets) comes on top of both and is the same for both.
Nothing is asserted on the figures; the exit status is non-zero only when a start failed.
Needs root, dockerd and the test image ``tfenv-test/python:3.11-jupyter`` on the main
engine (``scripts/build_test_images.py``).

Usage::

    .venv/bin/python benchmarks/gpu_alloc_start.py [--runs 20] [--devices 32] [--keep 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import docker
from benchstats import fmt, stats  # benchmarks/ is sys.path[0]
from docker.types import DeviceRequest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jupyter_tfenv.backends.docker.engine import run_with_gpus  # noqa: E402
from jupyter_tfenv.catalog.validation import environment_from_dict  # noqa: E402
from jupyter_tfenv.core.labels import LABEL_KERNEL_ID  # noqa: E402
from tests.support.gpu_engine import GpuEngine  # noqa: E402

IMAGE = "tfenv-test/python:3.11-jupyter"


async def main(args: argparse.Namespace) -> int:
    engine = GpuEngine()
    try:
        client = engine.start()
        engine.load_image(docker.from_env(timeout=120), IMAGE)
        env = environment_from_dict({"id": "bench-gpu1", "image": IMAGE, "gpus": 1})
        devices = [str(n) for n in range(args.devices)]
        base: dict[str, Any] = {
            "image": IMAGE,
            "command": ["sleep", "3600"],
            "detach": True,
            "network_mode": "none",
            "init": True,
        }

        async def run(spec: dict[str, Any]) -> Any:
            return await asyncio.to_thread(client.containers.run, **spec)

        samples: dict[str, list[float]] = {"plain": [], "allocated": []}
        kept: list[Any] = []
        for number in range(args.runs + 1):  # round 0 warms up, uncounted
            order = ["plain", "allocated"] if number % 2 else ["allocated", "plain"]
            for variant in order:
                labels = {LABEL_KERNEL_ID: f"bench-{variant}-{number}"}
                started = time.perf_counter()
                if variant == "plain":
                    request = DeviceRequest(device_ids=["0"], capabilities=[["gpu"]])
                    container = await run({**base, "labels": labels, "device_requests": [request]})
                else:
                    container, _ = await run_with_gpus(
                        client,
                        env,
                        {**base, "labels": labels},
                        run,
                        configured=devices,
                        viewer=None,
                        placement="pack",
                    )
                elapsed = time.perf_counter() - started
                if number:
                    samples[variant].append(elapsed * 1000)
                if variant == "allocated" and len(kept) < args.keep:
                    kept.append(container)  # stays: the holdings are not empty
                else:
                    container.remove(force=True)
        print(f"container start on the stand-in GPU engine, {args.runs} runs each, ", end="")
        print(f"{args.devices} devices, {len(kept)} kernels holding one")
        print(f"{'variant':<10} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
        figures = {k: stats(v) for k, v in samples.items()}
        for name, row in figures.items():
            print(f"{name:<10} {fmt(row['p50'])} {fmt(row['p95'])} {fmt(row['mean'])}")
        added = figures["allocated"]["p50"] - figures["plain"]["p50"]
        print(f"allocation adds {added:.1f} ms at p50 ", end="")
        print(f"({figures['allocated']['p50'] / figures['plain']['p50']:.2f}x the plain start)")
        return 0
    finally:
        engine.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--devices", type=int, default=32)
    parser.add_argument("--keep", type=int, default=8)
    sys.exit(asyncio.run(main(parser.parse_args())))
