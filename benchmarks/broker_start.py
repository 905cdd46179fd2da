#!/usr/bin/env python3
"""What the JupyterHub broker costs: kernel starts and live status, broker vs local mode.

In one run, on one Docker engine, as root:

* **local** (the baseline): a ``jupyter server`` run by root with the tfenv extension in
  local mode (it talks to Docker itself), kernels running as the test user's uid;
* **hub**: the test user's ``jupyterhub-singleuser`` server, spawned by a real JupyterHub
  (the tested example config, ``examples/hub/jupyterhub_config.py``), which starts its
  kernels through the tfenv broker service; every request goes through the hub's proxy.

Both are timed the same way, over HTTP as JupyterLab does it: ``POST /api/kernels`` →
websocket → the first ``execute_reply`` of ``1+1`` (start), then ``DELETE`` (shutdown),
interleaved round by round; then ``GET /tfenv/kernels/<id>`` (the live status the panel
polls; in hub mode one broker round trip). The hub figures include the proxy hop, which
``GET /api/status`` through the proxy vs directly shows on its own.

Nothing is asserted on the figures; the exit status is non-zero only when a kernel failed
or something of the run was left behind. Needs root, a Docker engine, the test images and
configurable-http-proxy (``scripts/setup.sh`` installs all of them).

Usage::

    python3 benchmarks/broker_start.py [--runs 10] [--env py] [--status-runs 100]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from api_latency import TOKEN, make_workspace, start_server  # benchmarks/ is sys.path[0]
from benchstats import percentile, stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.hub.harness import (  # noqa: E402 - after the sys.path entry above
    HubHarness,
    SystemUsers,
    ensure_user_venv,
    execute,
    hub_test_prerequisites,
    remove_test_containers,
    tfenv_containers,
)

#: Its own user and login group, so that it can run beside the hub tests.
USER = "tfenv-bench"
LOGIN_GROUP = "tfenv-benchusers"

IMAGES = {
    "py": "tfenv-test/python:3.11-jupyter",
    "tf220": "tfenv-test/tensorflow:2.20.0-jupyter",
}


def fmt(value: float) -> str:
    return f"{value * 1000:8.1f}"


class Target:
    """A server to time: base URL of its Jupyter API, its token, a websocket base URL."""

    def __init__(self, name: str, base: str, token: str) -> None:
        self.name = name
        self.base = base.rstrip("/")
        self.token = token
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"
        self.starts: list[float] = []
        self.shutdowns: list[float] = []
        self.status: list[float] = []

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 300)
        kwargs.setdefault("allow_redirects", False)
        return self.session.request(method, f"{self.base}{path}", **kwargs)

    def ws(self, kernel_id: str) -> str:
        return f"ws{self.base[4:]}/api/kernels/{kernel_id}/channels"

    def start(self, kernel_name: str) -> str:
        """One measured start; the kernel id."""
        started = time.perf_counter()
        response = self.request("POST", "/api/kernels", json={"name": kernel_name})
        if response.status_code != 201:
            raise RuntimeError(f"{self.name}: start: {response.status_code} {response.text}")
        kernel_id = str(response.json()["id"])
        result = execute(self.ws(kernel_id), self.token, "1+1", timeout=180)
        if not result.ok:
            raise RuntimeError(f"{self.name}: execute: {result}")
        self.starts.append(time.perf_counter() - started)
        return kernel_id

    def stop(self, kernel_id: str) -> None:
        started = time.perf_counter()
        response = self.request("DELETE", f"/api/kernels/{kernel_id}")
        if response.status_code != 204:
            raise RuntimeError(f"{self.name}: shutdown: {response.status_code} {response.text}")
        self.shutdowns.append(time.perf_counter() - started)

    def time_get(self, path: str, runs: int, into: list[float]) -> None:
        for _ in range(runs):
            started = time.perf_counter()
            response = self.request("GET", path)
            into.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{self.name}: GET {path}: {response.status_code}")


def table(title: str, rows: list[tuple[str, list[float]]], baseline: list[float]) -> None:
    print(f"\n{title}")
    print(f"  {'':<32}{'p50 ms':>9}{'p95 ms':>9}{'min ms':>9}   vs local p50")
    base = percentile(baseline, 50)
    for name, values in rows:
        s = stats(values)
        ratio = s["p50"] / base if base else float("nan")
        print(
            f"  {name:<32}{fmt(s['p50'])} {fmt(s['p95'])} {fmt(s['min'])}   "
            f"{ratio:5.2f}x ({(s['p50'] - base) * 1000:+.1f} ms)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="measured starts per mode")
    parser.add_argument("--env", choices=sorted(IMAGES), default="py")
    parser.add_argument("--status-runs", type=int, default=100, help="GETs per endpoint")
    args = parser.parse_args(argv)

    missing = hub_test_prerequisites()
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    say: Callable[[str], None] = lambda message: print(f"[bench] {message}", flush=True)  # noqa: E731
    users = SystemUsers(names=(USER,), groups={LOGIN_GROUP: (USER,)})
    workdir = Path(tempfile.mkdtemp(prefix="tfenv-broker-bench-"))
    hub: HubHarness | None = None
    local = None
    ws = None
    failures: list[str] = []
    try:
        unix_users = users.ensure()
        bench_user = unix_users[USER]
        venv = ensure_user_venv(say)
        catalog = {
            "version": 1,
            "environments": [{"id": key, "image": image} for key, image in IMAGES.items()],
        }
        hub = HubHarness(
            workdir=workdir,
            venv=venv,
            users=unix_users,
            catalog=catalog,
            progress=say,
            extra_env={"TFENV_USERS_GROUP": LOGIN_GROUP},
        )
        hub.start()
        hub.start_server(USER)
        ws = make_workspace(bench_user.uid, bench_user.gid)
        local = start_server("local", ws, bench_user.uid, bench_user.gid)
        say(f"local server on {local.url}, {USER}'s server through {hub.public_url}")

        targets = [
            Target("local (jupyter server, Docker)", local.url, TOKEN),
            Target("hub (proxy + broker)", f"{hub.public_url}/user/{USER}", hub.token(USER)),
        ]
        kernel_name = f"tfenv-{args.env}"
        for target in targets:  # one uncounted warm-up each
            target.stop(target.start(kernel_name))
            target.starts.clear()
            target.shutdowns.clear()
        for round_no in range(args.runs):
            order = targets if round_no % 2 == 0 else targets[::-1]
            for target in order:
                target.stop(target.start(kernel_name))
        say(f"{args.runs} starts per mode done")

        proxy_hop: dict[str, list[float]] = {"direct": [], "proxy": []}
        for target in targets:
            kernel_id = target.start(kernel_name)
            target.time_get(f"/tfenv/kernels/{kernel_id}", args.status_runs, target.status)
            target.stop(kernel_id)
        direct = Target("hub api direct", f"http://127.0.0.1:{hub.hub_port}/hub", "")
        via_proxy = Target("hub api proxy", f"{hub.public_url}/hub", "")
        direct.time_get("/api/", args.status_runs, proxy_hop["direct"])
        via_proxy.time_get("/api/", args.status_runs, proxy_hop["proxy"])

        print(f"\nmachine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; env {args.env}")
        base = targets[0]
        table(
            f"kernel start → first execute_reply ({args.runs} runs each, interleaved)",
            [(t.name, t.starts) for t in targets],
            base.starts,
        )
        table("kernel shutdown (DELETE)", [(t.name, t.shutdowns) for t in targets], base.shutdowns)
        table(
            f"GET /tfenv/kernels/<id> ({args.status_runs} each)",
            [(t.name, t.status) for t in targets],
            base.status,
        )
        table(
            "the proxy hop alone: GET /hub/api/",
            [("direct", proxy_hop["direct"]), ("through the proxy", proxy_hop["proxy"])],
            proxy_hop["direct"],
        )
    except Exception as err:  # reported, then cleaned up
        failures.append(f"{type(err).__name__}: {err}")
    finally:
        if local is not None:
            failures.extend(local.shutdown_kernels())
            local.stop()
        if hub is not None:
            hub.close()
        left = [c.name for c in tfenv_containers(users.names)]
        remove_test_containers(users.names)
        users.remove()
        if ws is not None:
            ws.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        if left:
            failures.append(f"containers left behind: {left}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
