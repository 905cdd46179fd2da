#!/usr/bin/env python3
"""Kernel start through the product: broker Docker mode vs Kubernetes mode (two nodes).

One sample is what JupyterLab waits for: the single-user server's ``POST /api/kernels``
→ websocket → the first ``execute_reply`` of ``1+1`` (benchmarks/broker_start.py's
``Target``), then ``DELETE``, for a TensorFlow 2.20 kernel
(``tfenv-test/tensorflow:2.20.0-jupyter``), with three ``jupyter server`` processes in
broker mode, each against its own tfenv broker in this process:

(a) ``docker`` (the baseline): the broker's Docker backend, as tests/broker/test_broker_e2e.py
    sets it up (its ``Broker``): kernels are containers of the local engine;
(b) ``k8s+docker``: ``backend = "kubernetes"`` against the scripted API
    (tests/support/k8s_api.py) whose node is ``DockerKubelet`` (the kernel container in Docker on
    a loopback stand-in for the pod IP), as tests/broker/test_k8s_broker.py's ``Cluster``;
(c) ``k8s+podman``: the same, the node ``PodmanKubelet`` (tests/support/k8s_podman_node.py):
    the pod, Secret and claim played by ``podman kube play``, the kernel at the podman
    pod's real IP.

The hub's token check is a stand-in (no JupyterHub, no proxy: broker_start.py measures
those); everything else is the product's code. Runs are interleaved (the order rotates
every round) after one uncounted warm-up each (which also makes (c)'s claim). Nothing is
asserted on the figures; the exit status is non-zero when a kernel failed or something
was left behind. Needs root, Docker, podman (tests/support/podman.py) and the test image.

Usage::

    .venv/bin/python benchmarks/k8s_broker_start.py [--runs 5] [--json out.json]

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
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from api_latency import TOKEN, make_workspace  # benchmarks/ is sys.path[0]
from benchstats import fmt, percentile, run_cmd
from broker_start import Target

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from tests.broker import test_broker_e2e  # noqa: E402
from tests.broker.test_broker_e2e import TOKEN as DOCKER_BROKER_TOKEN  # noqa: E402
from tests.broker.test_broker_e2e import Broker  # noqa: E402
from tests.broker.test_k8s_broker import K8S_CATALOG, Cluster  # noqa: E402
from tests.broker.test_k8s_broker import TOKEN as K8S_BROKER_TOKEN  # noqa: E402
from tests.conftest import KERNEL_UID, TF220  # noqa: E402
from tests.support import podman as pm  # noqa: E402
from tests.support.k8s_api import Kubelet  # noqa: E402
from tests.support.k8s_podman_node import PodmanKubelet  # noqa: E402
from tests.support.server_process import ServerProcess, start_tfenv_server  # noqa: E402

KERNEL = "tfenv-tf220"
#: The Docker broker's service name (its containers' label), its own so that cleaning up
#: never touches the containers of a test run beside it (test_broker_e2e's default).
test_broker_e2e.SERVICE = "tfenv-broker-bench"
test_broker_e2e.SCOPE = f"access:services!service={test_broker_e2e.SERVICE}"
PATHS = ("docker", "k8s+docker", "k8s+podman")


class Brokers:
    """The three brokers (and the scripted APIs), served by one event loop in a thread."""

    def __init__(self, catalog: Path, notebooks: Path, workdir: Path) -> None:
        self.catalog, self.notebooks, self.workdir = catalog, notebooks, workdir
        self.docker_client = docker.from_env(timeout=120)
        self.docker: Broker | None = None
        self.k8s_docker: Cluster | None = None
        self.k8s_podman: Cluster | None = None
        self.node: PodmanKubelet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.docker = Broker(self.catalog, self.notebooks, self._dir("docker"))
            self.docker.start()
            self.k8s_docker = Cluster(self.catalog, self._dir("k8s-docker"), self.docker_client)
            self.k8s_podman = Cluster(self.catalog, self._dir("k8s-podman"), self.docker_client)
            self.node = PodmanKubelet(self._dir("podman"))
            self.k8s_podman.node = self.node  # type: ignore[assignment]
            self.k8s_podman.api.kubelet = self.node
        except BaseException as err:
            self._error = err
            self._ready.set()
            raise
        for app in (self.docker.app, self.k8s_docker.app, self.k8s_podman.app):
            app.log.setLevel(logging.WARNING)  # the figures, not every request
        logging.getLogger("tornado.access").setLevel(logging.ERROR)  # the scripted APIs
        self._ready.set()
        await self._stop.wait()
        self._close()

    def _dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True)
        return path

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(120)
        if self._error is not None:
            raise RuntimeError(f"the brokers did not start: {self._error!r}") from self._error

    def urls(self) -> dict[str, tuple[str, str]]:
        """Path -> (broker URL, the user's token for it)."""
        assert self.docker and self.k8s_docker and self.k8s_podman
        return {
            "docker": (self.docker.url, DOCKER_BROKER_TOKEN),
            "k8s+docker": (self.k8s_docker.url, K8S_BROKER_TOKEN),
            "k8s+podman": (self.k8s_podman.url, K8S_BROKER_TOKEN),
        }

    def _close(self) -> None:
        self.left: list[str] = []
        if self.docker is not None:
            self.left += [f"docker broker container {c}" for c in self.docker.close()]
        if self.k8s_docker is not None:
            # Only this node's containers, and report them: none should be left.
            node = self.k8s_docker.node
            self.left += [f"k8s+docker container {name}" for name in node.containers]
            for box in node.containers.values():
                box.remove(force=True)
            self.k8s_docker.api.kubelet = Kubelet()
        for cluster in (self.k8s_docker, self.k8s_podman):
            if cluster is not None:
                self.left += [f"pod {p}" for p in cluster.close()]
        if self.node is not None:
            self.left += [f"podman: {p}" for p in self.node.stop()]

    def stop(self) -> list[str]:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(300)
        self.docker_client.close()
        return getattr(self, "left", ["the brokers' thread did not finish"])


def start_server(name: str, ws: Any, catalog: Path, broker_url: str, token: str) -> ServerProcess:
    return start_tfenv_server(
        ws.root / name,
        token=TOKEN,
        catalog=catalog,
        root_dir=ws.notebooks,
        kernel_uid=KERNEL_UID,
        kernel_gid=KERNEL_UID,
        owner="tfenv-bench",
        runtime_root=ws.runtime_root,
        name=name,
        extra_args=[
            f"--DockerKernelProvisioner.broker_url={broker_url}",
            f"--DockerKernelProvisioner.broker_token={token}",
        ],
    )


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="measured starts per path")
    parser.add_argument("--json", type=Path, help="write every sample as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("cannot run: needs root (the brokers and the scripted node)", file=sys.stderr)
        return 2
    reason = pm.unusable_reason()
    if reason is not None:
        print(f"cannot run: podman cannot run pods here: {reason}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()[0]
    say: Callable[[str], None] = lambda message: print(f"[bench] {message}", flush=True)  # noqa: E731
    pm.ensure_image(TF220)
    ws = make_workspace(KERNEL_UID, KERNEL_UID)
    catalog = ws.root / "k8s-catalog.yaml"
    tf220 = next(e for e in K8S_CATALOG if e["id"] == "tf220")
    catalog.write_text(yaml.safe_dump({"version": 1, "environments": [tf220]}))
    workdir = Path(tempfile.mkdtemp(prefix="tfenv-k8s-broker-bench-"))
    brokers = Brokers(catalog, ws.notebooks, workdir)
    servers: list[ServerProcess] = []
    failures: list[str] = []
    targets: dict[str, Target] = {}
    cwd = os.getcwd()
    # A kernel without a notebook path starts in the server's working folder, which the
    # Docker broker mounts: the notebook folder (its allowed_mount_roots).
    os.chdir(ws.notebooks)
    try:
        brokers.start()
        for path, (url, token) in brokers.urls().items():
            server = start_server(path.replace("+", "-"), ws, catalog, url, token)
            servers.append(server)
            targets[path] = Target(path, server.url, TOKEN)
        say(f"brokers and servers up: {', '.join(t.base for t in targets.values())}")
        for target in targets.values():  # one uncounted warm-up each
            target.stop(target.start(KERNEL))
            target.starts.clear()
            target.shutdowns.clear()
        say("warm-up done")
        order = list(PATHS)
        for round_no in range(args.runs):
            for path in order:
                targets[path].stop(targets[path].start(KERNEL))
            order = order[1:] + order[:1]
            say(f"round {round_no + 1}/{args.runs}")
    except Exception as err:  # reported, then cleaned up
        failures.append(f"{type(err).__name__}: {err}")
    finally:
        for server in servers:
            try:
                server.stop()
            except Exception as err:
                failures.append(f"stopping {server.name}: {err}")
        failures += [f"left behind: {what}" for what in brokers.stop()]
        os.chdir(cwd)
        ws.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nmachine: nproc {os.cpu_count()}, load {load_before:.2f} before the run, "
        f"{os.getloadavg()[0]:.2f} after"
    )
    print(f"docker {run_cmd(['docker', '--version'])}; {run_cmd(['podman', '--version'])}")
    stats: dict[str, Any] = {}
    if all(targets.get(p) and targets[p].starts for p in PATHS):
        print(f"\nPOST /api/kernels → first execute_reply of 1+1 ({args.runs} runs, interleaved)")
        print(f"{'path':<12} {'n':>3} {'p50 ms':>9} {'p90 ms':>9} {'stop p50':>9}")
        for path in PATHS:
            t = targets[path]
            st = summary([s * 1000 for s in t.starts])
            stop = summary([s * 1000 for s in t.shutdowns])
            stats[path] = {"start": st, "stop": stop}
            print(
                f"{path:<12} {st['n']:>3} {fmt(st['p50'], 9)} {fmt(st['p90'], 9)} "
                f"{fmt(stop['p50'], 9)}"
            )
        base = stats["docker"]["start"]
        for path in PATHS[1:]:
            st = stats[path]["start"]
            print(
                f"ratio {path}/docker: p50 {st['p50'] / base['p50']:.2f}, "
                f"p90 {st['p90'] / base['p90']:.2f}"
            )
    if args.json:
        samples = {p: {"starts": t.starts, "shutdowns": t.shutdowns} for p, t in targets.items()}
        args.json.write_text(json.dumps({"samples": samples, "stats": stats}, indent=1))
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    start = time.monotonic()
    code = main()
    print(f"(took {time.monotonic() - start:.0f} s)")
    sys.exit(code)
