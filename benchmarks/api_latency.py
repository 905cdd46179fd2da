#!/usr/bin/env python3
"""REST API latency: the /tfenv endpoints against a trivial jupyter_server endpoint.

Starts a real ``jupyter_server`` with the tfenv extension in a subprocess on 127.0.0.1 (a
temporary catalog of ``tfenv-test/python:3.11-jupyter`` and
``tfenv-test/tensorflow:2.20.0-jupyter``), warms it (one probe per environment, one tfenv
kernel started through ``POST /api/kernels``), then times N sequential requests per
endpoint over one keep-alive connection:

- ``GET /api/status`` (the baseline: authenticated, no Docker, no thread hop);
- ``GET /tfenv/environments``, ``GET /tfenv/environments/<id>``,
  ``GET /tfenv/environments/<id>/probe`` (cached), ``GET /tfenv/kernels/<id>`` (live
  container status) and ``GET /tfenv/gpus``.

Every figure is compared with the baseline of the same run; the targets are p50 and p95
within 2x of the baseline's, and p95 under 50 ms. Then the cold probe of the TensorFlow
image (``POST …/probe?refresh=1``) is timed against ``docker run --rm <image> python3 -c
"import tensorflow"`` (the floor), and a second server, whose Docker socket is a logging
proxy, shows where each endpoint's time goes (Docker API calls per request and their time).

Nothing here asserts on timings: the exit status is non-zero only when a request failed,
or a container of this run was left behind.

Usage::

    python3 benchmarks/api_latency.py [--requests 200] [--json out.json]

See benchmarks/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import docker
import requests
import yaml
from benchstats import fmt, percentile, run_cmd, stats  # benchmarks/ is sys.path[0]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.server_process import (
    ServerProcess,
    start_tfenv_server,
)

PY_IMAGE = "tfenv-test/python:3.11-jupyter"
TF_IMAGE = "tfenv-test/tensorflow:2.20.0-jupyter"
BUILD_HINT = (
    "python3 scripts/build_test_images.py --only python:3.11-jupyter tensorflow:2.20.0-jupyter"
)
OWNER = "tfenv-bench"
LABEL_OWNER = "org.jupyter.tfenv.owner"
LABEL_SERVER_PID = "org.jupyter.tfenv.server-pid"
LABEL_PROBE = "org.jupyter.tfenv.probe"
TOKEN = "tfenv-api-latency"  # a throwaway token of a loopback server
RATIO_TARGET = 2.0
P95_TARGET_MS = 50.0
CATALOG = [
    {"id": "py", "image": PY_IMAGE, "display_name": "Python 3.11 (bench)"},
    {"id": "tf220", "image": TF_IMAGE, "tensorflow": "2.20.0"},
]

# ----------------------------------------------------------------------------- statistics


# ----------------------------------------------------------------------------- machine


def machine_info(client: docker.DockerClient) -> dict[str, Any]:
    version = client.version()
    info = client.info()

    def dist(name: str) -> str:
        try:
            return dist_version(name)
        except PackageNotFoundError:
            return "?"

    return {
        "nproc": run_cmd(["nproc"]),
        "os_kernel": platform.release(),
        "docker_server": version.get("Version"),
        "docker_api": version.get("ApiVersion"),
        "docker_storage_driver": info.get("Driver"),
        "docker_cgroup": f"{info.get('CgroupDriver')} v{info.get('CgroupVersion')}",
        "docker_images": len(client.api.images()),
        "docker_containers": info.get("Containers"),
        "python": platform.python_version(),
        "jupyter_server": dist("jupyter_server"),
        "tornado": dist("tornado"),
        "docker_sdk": docker.__version__,
        "jupyter_tfenv": dist("jupyter_tfenv"),
        "nvidia_ml_py": dist("nvidia-ml-py"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_machine(info: dict[str, Any]) -> None:
    print("== machine")
    print(
        f"nproc: {info['nproc']}, Linux {info['os_kernel']}, load average "
        f"{' '.join(map(str, info['load_average_at_start']))} (other work on the machine "
        "shows up as noise)"
    )
    print(
        f"docker: server {info['docker_server']} (API {info['docker_api']}), storage "
        f"{info['docker_storage_driver']}, cgroup {info['docker_cgroup']}, "
        f"{info['docker_images']} images, {info['docker_containers']} containers"
    )
    print(
        f"python {info['python']}, jupyter_server {info['jupyter_server']}, tornado "
        f"{info['tornado']}, docker SDK {info['docker_sdk']}, jupyter_tfenv "
        f"{info['jupyter_tfenv']}, nvidia-ml-py {info['nvidia_ml_py']}"
    )
    print()


# ----------------------------------------------------------------------------- docker proxy

_REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")
_HEX_ID = re.compile(r"[0-9a-f]{64}")


def normalize_call(method: str, path: str) -> str:
    """``GET /v1.41/containers/<id>/stats?stream=0&one-shot=1`` → a call's kind."""
    path, _, query = path.partition("?")
    path = re.sub(r"^/v[0-9.]+", "", path)
    path = _HEX_ID.sub("{id}", path)
    path = re.sub(r"^/containers/[^/]+/", "/containers/{id}/", path)
    path = re.sub(r"^/images/(.+)/json$", "/images/{name}/json", path)
    keys = sorted(
        part if part.split("=")[0] in ("stream", "one-shot") else part.split("=")[0]
        for part in query.split("&")
        if part
    )
    return f"{method} {path}" + (f"?{'&'.join(keys)}" if keys else "")


@dataclass
class DockerCall:
    start: float  # perf_counter of this process, when the request was forwarded
    end: float  # when the response's first bytes came back
    kind: str


class DockerProxy:
    """A Unix socket in front of the Docker engine's that logs every API call it forwards.

    The server under test gets ``DOCKER_HOST=unix://<proxy>``; each call is recorded with
    its time to the first response byte, on this process's clock, so that calls can be
    matched to the REST requests that were in flight. Only for the profile: forwarding
    adds a little latency of its own.
    """

    def __init__(self, upstream: str, folder: Path) -> None:
        self.upstream = upstream
        self.path = str(folder / "docker.sock")
        self.calls: list[DockerCall] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.upstream)
        except OSError:
            client.close()
            return
        pending: deque[tuple[float, str]] = deque()

        def forward_requests() -> None:
            try:
                while data := client.recv(65536):
                    match = _REQUEST_LINE.match(data)
                    if match:
                        kind = normalize_call(match.group(1).decode(), match.group(2).decode())
                        pending.append((time.perf_counter(), kind))
                    upstream.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)

        threading.Thread(target=forward_requests, daemon=True).start()
        try:
            while data := upstream.recv(65536):
                if data.startswith(b"HTTP/1.") and pending:
                    start, kind = pending.popleft()
                    with self._lock:
                        self.calls.append(DockerCall(start, time.perf_counter(), kind))
                client.sendall(data)
        except OSError:
            pass
        finally:
            upstream.close()
            client.close()

    def between(self, start: float, end: float) -> list[DockerCall]:
        with self._lock:
            return [c for c in self.calls if start <= c.start <= end]


def docker_socket_path() -> str | None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return host[len("unix://") :] if host.startswith("unix://") else None


# ----------------------------------------------------------------------------- the server


@dataclass
class Workspace:
    root: Path
    runtime_root: str  # short: Unix socket paths are limited to 107 bytes
    notebooks: Path
    catalog: Path

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runtime_root, ignore_errors=True)


def make_workspace(uid: int, gid: int) -> Workspace:
    root = Path(tempfile.mkdtemp(prefix="tfenv-api-bench-"))
    notebooks = root / "notebooks"
    notebooks.mkdir()
    if os.geteuid() == 0:
        os.chown(notebooks, uid, gid)
    catalog = root / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
    runtime_root = tempfile.mkdtemp(prefix="tfb-", dir="/tmp")
    return Workspace(root, runtime_root, notebooks, catalog)


class Server(ServerProcess):
    """The benchmark's server: also remembers the kernels it started."""

    kernels: list[str]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kernels = []

    def start_kernel(self, name: str) -> str:
        response = self.request("POST", "/api/kernels", json={"name": name})
        if response.status_code != 201:
            raise RuntimeError(
                f"{self.name}: starting kernel {name} failed: {response.status_code} "
                f"{response.text[:500]}"
            )
        kernel_id = str(response.json()["id"])
        self.kernels.append(kernel_id)
        return kernel_id

    def shutdown_kernels(self) -> list[str]:
        errors = []
        for kernel_id in self.kernels:
            try:
                response = self.request("DELETE", f"/api/kernels/{kernel_id}", timeout=120)
            except requests.RequestException as err:
                errors.append(f"{self.name}: shutting kernel {kernel_id} down failed: {err}")
                continue
            if response.status_code != 204:
                errors.append(
                    f"{self.name}: DELETE /api/kernels/{kernel_id}: {response.status_code}"
                )
        self.kernels.clear()
        return errors


def start_server(
    name: str, ws: Workspace, uid: int, gid: int, docker_host: str | None = None
) -> Server:
    server = start_tfenv_server(
        ws.root / name,
        token=TOKEN,
        catalog=ws.catalog,
        root_dir=ws.notebooks,
        kernel_uid=uid,
        kernel_gid=gid,
        owner=OWNER,
        runtime_root=ws.runtime_root,
        name=name,
        extra_env={"DOCKER_HOST": docker_host} if docker_host else None,
        server_class=Server,
    )
    assert isinstance(server, Server)
    return server


def warm(server: Server, failures: list[str]) -> tuple[str, dict[str, Any]]:
    """Probe every environment once, start a tfenv kernel; returns (kernel id, timings)."""
    timings: dict[str, Any] = {}
    for env in CATALOG:
        t = time.perf_counter()
        response = server.request("POST", f"/tfenv/environments/{env['id']}/probe")
        timings[f"first probe {env['id']}"] = (time.perf_counter() - t) * 1000
        if response.status_code != 200:
            failures.append(f"{server.name}: probe of {env['id']}: {response.status_code}")
    t = time.perf_counter()
    kernel_id = server.start_kernel("tfenv-py")
    timings["kernel start (POST /api/kernels)"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    response = server.request("GET", f"/tfenv/kernels/{kernel_id}")
    timings["first GET /tfenv/kernels/<id> (CPU baseline)"] = (time.perf_counter() - t) * 1000
    if response.status_code != 200:
        failures.append(f"{server.name}: GET /tfenv/kernels/<id>: {response.status_code}")
    return kernel_id, timings


# ----------------------------------------------------------------------------- measuring


@dataclass
class Endpoint:
    key: str
    path: str
    baseline: bool = False
    samples: list[float] = field(default_factory=list)
    errors: Counter[int] = field(default_factory=Counter)
    capped: bool = False


def endpoints(kernel_id: str) -> list[Endpoint]:
    return [
        Endpoint("GET /api/status (baseline)", "/api/status", baseline=True),
        Endpoint("GET /tfenv/environments", "/tfenv/environments"),
        Endpoint("GET /tfenv/environments/tf220", "/tfenv/environments/tf220"),
        Endpoint("GET /tfenv/environments/tf220/probe", "/tfenv/environments/tf220/probe"),
        Endpoint("GET /tfenv/kernels/<id>", f"/tfenv/kernels/{kernel_id}"),
        Endpoint("GET /tfenv/gpus", "/tfenv/gpus"),
    ]


def timed_get(server: Server, path: str) -> tuple[float, int, float, float]:
    """(ms, status, start, end): one GET, the body read; start/end on perf_counter."""
    start = time.perf_counter()
    response = server.session.get(server.url + path, timeout=300)
    _ = response.content
    end = time.perf_counter()
    return (end - start) * 1000, response.status_code, start, end


def measure(
    server: Server,
    eps: list[Endpoint],
    n: int,
    warmup: int,
    max_seconds: float,
    on_request: Callable[[Endpoint, float, float, float], None] | None = None,
) -> None:
    """``n`` sequential GETs per endpoint, in rounds of at most 50 with a rotating order
    (slow drift of the machine hits every endpoint alike); an endpoint stops early once
    its requests took ``max_seconds`` in all."""
    for ep in eps:
        for _ in range(warmup):
            timed_get(server, ep.path)
    rounds = max(1, math.ceil(n / 50))
    spent = dict.fromkeys((ep.key for ep in eps), 0.0)
    for r in range(rounds):
        quota = n // rounds + (1 if r < n % rounds else 0)
        order = eps[r % len(eps) :] + eps[: r % len(eps)]
        for ep in order:
            for _ in range(quota):
                if spent[ep.key] >= max_seconds * 1000:
                    ep.capped = True
                    break
                ms, status, start, end = timed_get(server, ep.path)
                spent[ep.key] += ms
                if status != 200:
                    ep.errors[status] += 1
                    continue
                ep.samples.append(ms)
                if on_request is not None:
                    on_request(ep, ms, start, end)
        done = "  ".join(f"{ep.key.split()[1]} {len(ep.samples)}" for ep in eps)
        print(f"  round {r + 1}/{rounds}: {done}", flush=True)


def spaced_kernel_status(server: Server, kernel_id: str, runs: int, gap: float) -> list[float]:
    """GET /tfenv/kernels/<id> with ``gap`` seconds between requests (a UI polling slowly)."""
    samples = []
    for _ in range(runs):
        time.sleep(gap)
        ms, status, _, _ = timed_get(server, f"/tfenv/kernels/{kernel_id}")
        if status == 200:
            samples.append(ms)
    return samples


def verdicts(eps: list[Endpoint]) -> dict[str, dict[str, Any]]:
    base = stats(next(ep for ep in eps if ep.baseline).samples)
    result = {}
    for ep in eps:
        st = stats(ep.samples)
        if not st.get("n") or not base.get("n"):
            result[ep.key] = {"stats": st}
            continue
        r50, r95 = st["p50"] / base["p50"], st["p95"] / base["p95"]
        ok = ep.baseline or (
            r50 <= RATIO_TARGET and r95 <= RATIO_TARGET and st["p95"] < P95_TARGET_MS
        )
        result[ep.key] = {
            "stats": st,
            "p50_ratio": r50,
            "p95_ratio": r95,
            "meets_target": ok,
            "errors": dict(ep.errors),
            "capped": ep.capped,
        }
    return result


def print_latency_table(eps: list[Endpoint], results: dict[str, dict[str, Any]]) -> None:
    width = max(len(ep.key) for ep in eps)
    head = f"{'endpoint':<{width}}  {'n':>4}" + "".join(
        f"{c:>9}" for c in ("p50", "p95", "mean", "max")
    )
    head += f"{'p50/base':>10}{'p95/base':>10}  target"
    print(head + "   (ms)")
    print("-" * (len(head) + 6))
    for ep in eps:
        res = results[ep.key]
        st = res["stats"]
        line = f"{ep.key:<{width}}  {st.get('n', 0):>4}"
        for col in ("p50", "p95", "mean", "max"):
            line += " " + fmt(st.get(col))
        if ep.baseline:
            line += f"{'1.00x':>10}{'1.00x':>10}  (baseline)"
        elif "p50_ratio" in res:
            line += f"{res['p50_ratio']:>9.2f}x{res['p95_ratio']:>9.2f}x  "
            line += "ok" if res["meets_target"] else "MISSED"
        if ep.capped:
            line += " (capped by --max-seconds)"
        if ep.errors:
            line += f" errors: {dict(ep.errors)}"
        print(line)
    print(
        f"target: p50 and p95 within {RATIO_TARGET:.0f}x of the baseline's, and p95 < "
        f"{P95_TARGET_MS:.0f} ms"
    )
    print()


# ----------------------------------------------------------------------------- cold probe


def cold_probes(
    server: Server, image: str, uid: int, gid: int, runs: int, failures: list[str]
) -> dict[str, Any]:
    """``POST …/tf220/probe?refresh=1`` against ``docker run --rm <image> python3 -c
    "import tensorflow"`` (as the kernel user, no network: as the probe runs), interleaved."""
    floor_argv = [
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        f"{uid}:{gid}",
        "-e",
        "TF_CPP_MIN_LOG_LEVEL=2",
        image,
        "python3",
        "-c",
        "import tensorflow",
    ]
    probes: list[dict[str, Any]] = []
    floors: list[float] = []
    for _ in range(runs):
        t = time.perf_counter()
        response = server.request("POST", "/tfenv/environments/tf220/probe?refresh=1")
        wall = (time.perf_counter() - t) * 1000
        if response.status_code != 200:
            failures.append(f"cold probe: {response.status_code} {response.text[:300]}")
            continue
        body = response.json()
        seconds = body.get("seconds") or {}
        probes.append(
            {
                "http_ms": wall,
                "server_ms": float(body.get("duration_s") or 0) * 1000,
                "in_container_ms": float(seconds.get("total") or 0) * 1000,
                "import_tensorflow_ms": float(seconds.get("tensorflow") or 0) * 1000,
                "cached": body.get("cached"),
            }
        )
        t = time.perf_counter()
        out = subprocess.run(floor_argv, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            failures.append(f"floor: {' '.join(floor_argv)}: {out.stderr.strip()[-300:]}")
            continue
        floors.append((time.perf_counter() - t) * 1000)
    return {"probes": probes, "floor_ms": floors, "floor_command": " ".join(floor_argv)}


def print_cold(cold: dict[str, Any]) -> None:
    rows = [
        ("POST …/tf220/probe?refresh=1 (HTTP)", [p["http_ms"] for p in cold["probes"]]),
        ("  of which server-side probe (duration_s)", [p["server_ms"] for p in cold["probes"]]),
        ("  of which probe.py in the container", [p["in_container_ms"] for p in cold["probes"]]),
        ("    of which import tensorflow", [p["import_tensorflow_ms"] for p in cold["probes"]]),
        ("floor: docker run --rm … import tensorflow", cold["floor_ms"]),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"{'':<{width}}  {'n':>3}{'p50':>9}{'min':>9}{'max':>9}   (ms)")
    for name, values in rows:
        st = stats(values)
        print(
            f"{name:<{width}}  {st.get('n', 0):>3} {fmt(st.get('p50'))} {fmt(st.get('min'))} "
            f"{fmt(st.get('max'))}"
        )
    probe, floor = stats([p["http_ms"] for p in cold["probes"]]), stats(cold["floor_ms"])
    if probe.get("n") and floor.get("n"):
        print(
            f"cold probe p50 / floor p50: {probe['p50'] / floor['p50']:.2f}x "
            f"({probe['p50'] - floor['p50']:+.0f} ms)"
        )
    print(f"floor: {cold['floor_command']}")
    print()


# ----------------------------------------------------------------------------- profile


def profile(
    ws: Workspace, uid: int, gid: int, n: int, max_seconds: float, failures: list[str]
) -> dict[str, Any]:
    """The endpoints again on a second server whose Docker socket is a logging proxy."""
    upstream = docker_socket_path()
    if upstream is None:
        return {"skipped": "DOCKER_HOST is not a unix socket"}
    proxy = DockerProxy(upstream, ws.root)
    server = start_server("profiled", ws, uid, gid, docker_host=f"unix://{proxy.path}")
    per_request: dict[str, list[dict[str, Any]]] = {}

    def record(ep: Endpoint, ms: float, start: float, end: float) -> None:
        calls = proxy.between(start, end)
        per_request.setdefault(ep.key, []).append(
            {
                "ms": ms,
                "calls": [c.kind for c in calls],
                "docker_ms": [(c.end - c.start) * 1000 for c in calls],
            }
        )

    try:
        kernel_id, _ = warm(server, failures)
        eps = endpoints(kernel_id)
        measure(server, eps, n, warmup=2, max_seconds=max_seconds, on_request=record)
    finally:
        failures.extend(server.shutdown_kernels())
        server_pid, code = server.pid, server.stop()
        proxy.close()
    summary: dict[str, Any] = {"server_pid": server_pid, "exit_code": code, "endpoints": {}}
    for key, reqs in per_request.items():
        kinds: Counter[str] = Counter()
        times: dict[str, list[float]] = {}
        for req in reqs:
            kinds.update(req["calls"])
            for kind, ms in zip(req["calls"], req["docker_ms"], strict=True):
                times.setdefault(kind, []).append(ms)
        summary["endpoints"][key] = {
            "requests": len(reqs),
            "ms_p50": percentile([r["ms"] for r in reqs], 50),
            "docker_calls_p50": percentile([len(r["calls"]) for r in reqs], 50),
            "docker_ms_p50": percentile([sum(r["docker_ms"]) for r in reqs], 50),
            "calls": {
                kind: {"per_request": count / len(reqs), "ms_p50": percentile(times[kind], 50)}
                for kind, count in kinds.most_common()
            },
            "samples": reqs,
        }
    return summary


def print_profile(prof: dict[str, Any]) -> None:
    if "skipped" in prof:
        print(f"profile skipped: {prof['skipped']}")
        return
    for key, ep in prof["endpoints"].items():
        share = ep["docker_ms_p50"] / ep["ms_p50"] * 100 if ep["ms_p50"] else 0
        print(
            f"{key}: p50 {ep['ms_p50']:.1f} ms over {ep['requests']} requests; Docker: "
            f"{ep['docker_calls_p50']:g} call(s)/request, {ep['docker_ms_p50']:.1f} ms "
            f"({share:.0f}%)"
        )
        for kind, call in ep["calls"].items():
            print(f"    {call['per_request']:5.2f} x {kind}  (p50 {call['ms_p50']:.1f} ms)")
    print(
        "(Docker time is the time to the first response byte, through the proxy; the rest "
        "is the server: tornado, auth, JSON, thread hops. A call the kernel restarter makes "
        "every 3 s (GET /containers/{id}/json) lands in whichever request it overlaps.)"
    )
    print()


# ----------------------------------------------------------------------------- cleanup


def leftovers(client: docker.DockerClient, pids: list[int]) -> list[str]:
    """Kernel and probe containers of this run's servers still there (then removed)."""
    names = []
    for pid in pids:
        for labels in ([f"{LABEL_OWNER}={OWNER}"], [LABEL_PROBE]):
            found = client.containers.list(
                all=True, filters={"label": [*labels, f"{LABEL_SERVER_PID}={pid}"]}
            )
            for container in found:
                names.append(f"{container.name} ({container.status})")
                with contextlib.suppress(docker.errors.DockerException):
                    container.remove(force=True)
    return names


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=200, help="requests per endpoint (200)")
    p.add_argument("--warmup", type=int, default=5, help="uncounted requests per endpoint (5)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="stop measuring an endpoint once its requests took this long in all (60)",
    )
    p.add_argument(
        "--spaced",
        type=int,
        default=5,
        help="extra GET /tfenv/kernels/<id> requests 1.2 s apart (5; 0: skip)",
    )
    p.add_argument("--probe-runs", type=int, default=3, help="cold probes and floor runs (3)")
    p.add_argument(
        "--profile-requests",
        type=int,
        default=20,
        help="requests per endpoint on the proxied server for the profile (20; 0: skip)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--uid",
        type=int,
        default=None,
        help="uid (and gid) of the kernels and probes (default: 1000 as root, else yours)",
    )
    args = p.parse_args(argv)
    if args.requests < 1:
        p.error("--requests must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        print(f"Docker is not reachable: {err} (scripts/start-dockerd.sh)", file=sys.stderr)
        return 2
    missing = []
    for image in (PY_IMAGE, TF_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    if missing:
        print(f"Missing images: {', '.join(missing)}. Build them: {BUILD_HINT}", file=sys.stderr)
        return 2
    uid = args.uid if args.uid is not None else (1000 if os.geteuid() == 0 else os.getuid())
    gid = uid if os.geteuid() == 0 else os.getgid()
    if uid == 0:
        print("Kernels may not run as uid 0; pass --uid.", file=sys.stderr)
        return 2

    info = machine_info(client)
    print_machine(info)
    ws = make_workspace(uid, gid)
    failures: list[str] = []
    results: dict[str, Any] = {
        "machine": info,
        "config": {k: v for k, v in vars(args).items() if k != "json"}
        | {"kernel_uid": uid, "kernel_gid": gid, "ratio_target": RATIO_TARGET}
        | {"p95_target_ms": P95_TARGET_MS},
        "failures": failures,
    }
    pids: list[int] = []
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    interrupted = False
    server: Server | None = None
    try:
        server = start_server("main", ws, uid, gid)
        pids.append(server.pid)
        print("== warm-up: one probe per environment, one tfenv kernel (python:3.11-jupyter)")
        kernel_id, warm_timings = warm(server, failures)
        for name, ms in warm_timings.items():
            print(f"  {name}: {ms:.0f} ms")
        results["warmup_ms"] = warm_timings
        print()

        print(
            f"== latency: {args.requests} sequential GETs per endpoint (+{args.warmup} warm-up), "
            "one keep-alive connection, rounds of ≤ 50 in a rotating order"
        )
        eps = endpoints(kernel_id)
        measure(server, eps, args.requests, args.warmup, args.max_seconds)
        print()
        res = verdicts(eps)
        print_latency_table(eps, res)
        results["latency"] = {
            ep.key: {"path": ep.path.replace(kernel_id, "<id>"), "samples_ms": ep.samples}
            | res[ep.key]
            for ep in eps
        }
        if args.spaced > 0:
            spaced = spaced_kernel_status(server, kernel_id, args.spaced, 1.2)
            st = stats(spaced)
            print(
                f"GET /tfenv/kernels/<id>, requests 1.2 s apart: n {st.get('n', 0)}, p50 "
                f"{fmt(st.get('p50'), 0)} ms, max {fmt(st.get('max'), 0)} ms"
            )
            print()
            results["kernel_status_spaced_1_2s"] = {"samples_ms": spaced, "stats": st}

        print(f"== cold probe of {TF_IMAGE}: {args.probe_runs} runs, interleaved with the floor")
        cold = cold_probes(server, TF_IMAGE, uid, gid, args.probe_runs, failures)
        print_cold(cold)
        results["cold_probe"] = cold

        if args.profile_requests > 0:
            print(
                f"== profile: {args.profile_requests} requests per endpoint on a second server "
                "whose Docker socket is a logging proxy"
            )
            prof = profile(ws, uid, gid, args.profile_requests, args.max_seconds, failures)
            if "server_pid" in prof:
                pids.append(prof["server_pid"])
            print()
            print_profile(prof)
            results["profile"] = prof
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted; cleaning up", file=sys.stderr)
    except (RuntimeError, requests.RequestException) as err:
        failures.append(f"{type(err).__name__}: {err}")
    finally:
        if server is not None:
            failures.extend(server.shutdown_kernels())
            code = server.stop()
            if code is None:
                failures.append("the server did not stop within 60 s of SIGTERM (killed)")
        left = leftovers(client, pids)
        ws.cleanup()

    results["leftovers"] = left
    print("== cleanup")
    print(f"servers: {len(pids)}; kernel or probe containers left by them: {len(left)}")
    for name in left:
        print(f"  ! leaked container {name} (now removed)")
    for failure in failures:
        print(f"  ! {failure}")
    ok = not failures and not left and not interrupted
    results["ok"] = ok
    print("result:", "OK" if ok else "FAILED")
    if args.json:
        Path(args.json).write_text(
            json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8"
        )
        print(f"JSON written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
