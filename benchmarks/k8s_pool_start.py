#!/usr/bin/env python3
"""Kernel start in Kubernetes mode: from the warm pool vs cold, in the same run.

One ``jupyter server`` process in broker mode against a tfenv broker with
``backend = "kubernetes"`` on the scripted API (tests/support/k8s_api.py) whose node is
``DockerKubelet`` (each pod's kernel container runs in Docker, on a loopback stand-in for
the pod IP), set up as tests/broker/test_k8s_broker.py's ``Cluster``. Its catalog has two
entries of the same image (``tfenv-test/tensorflow:2.20.0-jupyter``):

- ``cold``: no pool: each start makes the pod, its Secret and NetworkPolicy, and waits
  for the kernel's sockets (the baseline);
- ``pooled``: ``pool_size: 2``: the server started two pods ahead through the broker; a
  start takes one (the adoption: the broker's state, the pod's sockets, the move into
  the notebook's folder and variables).

One sample is what JupyterLab waits for: ``POST /api/kernels`` → websocket → the first
``execute_reply`` of ``1+1`` (benchmarks/broker_start.py's ``Target``), then ``DELETE``.
Runs alternate (the order flips every round) after one uncounted warm-up each; before
each pooled start the benchmark waits until the pool is full again (a pool's point is
the start that finds it ready; that wait is not in the samples). The user's kernel limit
is raised so that the pool never gives a pod up for a cold start. The hub's token check
is a stand-in, as in the tests. Nothing is asserted on the figures; the exit status is
non-zero when a kernel failed or something was left behind. Needs root, Docker and the
test image.

Usage::

    .venv/bin/python benchmarks/k8s_pool_start.py [--runs 5] [--json out.json]

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from api_latency import TOKEN, make_workspace  # benchmarks/ is sys.path[0]
from benchstats import fmt, run_cmd
from broker_start import Target
from k8s_broker_start import Brokers, start_server, summary

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jupyter_tfenv.backends.kubernetes import manifests as m  # noqa: E402
from tests.broker.test_k8s_broker import TOKEN as K8S_BROKER_TOKEN  # noqa: E402
from tests.broker.test_k8s_broker import Cluster  # noqa: E402
from tests.conftest import KERNEL_UID, TF220  # noqa: E402

POOL_SIZE = 2
CATALOG = [
    {"id": "cold", "image": TF220, "tensorflow": "2.20.0"},
    {"id": "pooled", "image": TF220, "tensorflow": "2.20.0", "pool_size": POOL_SIZE},
]
PATHS = ("cold", "pooled")


class PoolBrokers(Brokers):
    """k8s_broker_start's brokers, only the Kubernetes one on the Docker node (its
    ``Cluster``), served by one event loop in a thread."""

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.k8s_docker = Cluster(self.catalog, self._dir("k8s-docker"), self.docker_client)
        except BaseException as err:
            self._error = err
            self._ready.set()
            raise
        self.k8s_docker.app.log.setLevel(logging.WARNING)  # the figures, not every request
        logging.getLogger("tornado.access").setLevel(logging.ERROR)  # the scripted API
        self._ready.set()
        await self._stop.wait()
        self._close()

    def pooled_pods(self) -> int:
        """The running pods of the pooled environment (the pool's, and a taken one)."""
        assert self.k8s_docker is not None
        return sum(
            1
            for p in self.k8s_docker.pods()
            if (p["metadata"].get("annotations") or {}).get(m.LABEL_ENVIRONMENT) == "pooled"
            and (p.get("status") or {}).get("phase") == "Running"
        )


def wait_for_pool(brokers: PoolBrokers, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while brokers.pooled_pods() < POOL_SIZE:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the pool did not fill up ({POOL_SIZE} pods) in {timeout:.0f} s")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="measured starts per path")
    parser.add_argument("--json", type=Path, help="write every sample as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("cannot run: needs root (the broker and the scripted node)", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]

    def say(message: str) -> None:
        print(f"[bench] {message}", flush=True)

    ws = make_workspace(KERNEL_UID, KERNEL_UID)
    catalog = ws.root / "k8s-pool-catalog.yaml"
    catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
    workdir = Path(tempfile.mkdtemp(prefix="tfenv-k8s-pool-bench-"))
    brokers = PoolBrokers(catalog, ws.notebooks, workdir)
    server = None
    failures: list[str] = []
    target: Target | None = None
    samples: dict[str, list[float]] = {p: [] for p in PATHS}
    cwd = os.getcwd()
    os.chdir(ws.notebooks)
    try:
        brokers.start()
        assert brokers.k8s_docker is not None
        # Pool pods count against the user's kernels; the cold start must not take the
        # pool's place (make_room), or the next pooled start would find it short.
        brokers.k8s_docker.app.max_kernels_per_user = 3 * POOL_SIZE
        server = start_server("k8s-pool", ws, catalog, brokers.k8s_docker.url, K8S_BROKER_TOKEN)
        target = Target("k8s-pool", server.url, TOKEN)
        wait_for_pool(brokers)
        say(f"broker and server up, pool of {POOL_SIZE} ready: {target.base}")
        for path in PATHS:  # one uncounted warm-up each
            wait_for_pool(brokers)
            target.stop(target.start(f"tfenv-{path}"))
        say("warm-up done")
        order = list(PATHS)
        for round_no in range(args.runs):
            for path in order:
                wait_for_pool(brokers)
                before = len(target.starts)
                target.stop(target.start(f"tfenv-{path}"))
                samples[path].append(target.starts[before])
            order.reverse()
            say(f"round {round_no + 1}/{args.runs}")
    except Exception as err:  # reported, then cleaned up
        failures.append(f"{type(err).__name__}: {err}")
    finally:
        if server is not None:
            try:
                server.stop()  # its pool pods go with it
            except Exception as err:
                failures.append(f"stopping the server: {err}")
        failures += [f"left behind: {what}" for what in brokers.stop()]
        os.chdir(cwd)
        ws.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nmachine: nproc {os.cpu_count()}, load {load_before:.2f} before the run, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    print(f"docker {run_cmd(['docker', '--version'])}")
    stats: dict[str, Any] = {}
    if all(samples[p] for p in PATHS):
        print(
            f"\nKubernetes mode (scripted API, Docker node): POST /api/kernels → first "
            f"execute_reply of 1+1 ({args.runs} runs each, alternating)"
        )
        print(f"{'path':<8} {'n':>3} {'p50 ms':>9} {'p90 ms':>9}")
        for path in PATHS:
            st = summary([s * 1000 for s in samples[path]])
            stats[path] = st
            print(f"{path:<8} {st['n']:>3} {fmt(st['p50'], 9)} {fmt(st['p90'], 9)}")
        cold, pooled = stats["cold"], stats["pooled"]
        print(
            f"ratio pooled/cold: p50 {pooled['p50'] / cold['p50']:.2f}, "
            f"p90 {pooled['p90'] / cold['p90']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"samples": samples, "stats": stats}, indent=1))
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    start = time.monotonic()
    code = main()
    print(f"(took {time.monotonic() - start:.0f} s)")
    sys.exit(code)
