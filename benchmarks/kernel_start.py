#!/usr/bin/env python3
"""Kernel start latency: a local ipykernel against jupyter_tfenv container kernels.

Measures, in one run, the time from the start request (``AsyncKernelManager.start_kernel``)
to the first ``execute_reply`` of ``1+1``, and the time of a full shutdown, for:

(a) ``local``: the host's ``python3`` kernelspec (jupyter_client's LocalProvisioner);
(b) ``py311``: a tfenv kernel of ``tfenv-test/python:3.11-jupyter`` (python + ipykernel);
(c) ``tf220`` (with ``--tf``): a tfenv kernel of ``tfenv-test/tensorflow:2.20.0-jupyter``.

Starts are interleaved (the order rotates every round) after one uncounted warm-up per
variant. Then ``docker run --rm <image> true`` is timed as context, a few starts of each
variant are profiled phase by phase (Docker API calls, process exec, socket bind, the moment
the kernel can answer, first reply), and N tfenv kernels are started concurrently. At the
end no container labelled ``org.jupyter.tfenv.kernel-id`` of this run may be left.

Nothing here asserts on timings: the exit status is non-zero only when a kernel failed to
start or answer, or a container or runtime folder of this run was left behind.

Usage::

    python3 benchmarks/kernel_start.py [--runs 10] [--concurrency 8] [--tf] [--json out.json]

See benchmarks/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from queue import Empty
from typing import Any

import docker
import jupyter_client
import zmq
import zmq.asyncio
from benchstats import fmt, percentile, run_cmd, stats  # benchmarks/ is sys.path[0]
from docker.api.client import APIClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from jupyter_client.session import Session

from jupyter_tfenv.backends.docker.engine import SERVER_INSTANCE
from jupyter_tfenv.core.labels import LABEL_KERNEL_ID, LABEL_RUNTIME_DIR, LABEL_SERVER_INSTANCE
from jupyter_tfenv.provisioning import provisioner as tfenv_provisioner
from jupyter_tfenv.provisioning.kernelspecs import TFEnvKernelSpecManager

PY_IMAGE = "tfenv-test/python:3.11-jupyter"
TF_IMAGE = "tfenv-test/tensorflow:2.20.0-jupyter"
TARGET_MS = 150.0
CODE = "1+1"
BUILD_HINT = (
    "python3 scripts/build_test_images.py --only python:3.11-jupyter tensorflow:2.20.0-jupyter"
)

# Run inside a kernel (profile only): its process start, on the host's CLOCK_BOOTTIME
# (containers share the host kernel's clocks), and the interpreter/ipykernel versions.
PROBE_CODE = """
def _tfenv_probe():
    import os, sys, ipykernel
    with open('/proc/self/stat') as f:
        ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    start = ticks / os.sysconf('SC_CLK_TCK')
    return {'start_boottime': start, 'python': sys.version.split()[0],
            'ipykernel': ipykernel.__version__, 'uid': os.getuid(), 'pid': os.getpid()}
"""

POLLER = "kernel-start-bind-poller"


# ----------------------------------------------------------------------------- stats


def table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    label_width = max([len(name) for name, _ in rows] + [len(title)])
    head = f"{title:<{label_width}}  {'n':>3}" + "".join(
        f"{col:>9}" for col in ("p50", "p95", "mean", "min", "max")
    )
    print(head + "   (ms)")
    print("-" * (len(head) + 6))
    for name, st in rows:
        line = f"{name:<{label_width}}  {st.get('n', 0):>3}"
        for col in ("p50", "p95", "mean", "min", "max"):
            line += " " + fmt(st.get(col))
        print(line)
    print()


# ----------------------------------------------------------------------------- setup


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def machine_info(client: docker.DockerClient) -> dict[str, Any]:
    version = client.version()
    info = client.info()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        ipykernel_version = dist_version("ipykernel")
    except PackageNotFoundError:
        ipykernel_version = "?"
    return {
        "nproc": run_cmd(["nproc"]),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(mem / 1024**3, 1),
        "os_kernel": platform.release(),
        "docker_cli": run_cmd(["docker", "version", "--format", "{{.Client.Version}}"]),
        "docker_server": version.get("Version"),
        "docker_api": version.get("ApiVersion"),
        "docker_storage_driver": info.get("Driver"),
        "docker_cgroup": f"{info.get('CgroupDriver')} v{info.get('CgroupVersion')}",
        "docker_default_runtime": info.get("DefaultRuntime"),
        "python": platform.python_version(),
        "jupyter_client": jupyter_client.__version__,
        "ipykernel_host": ipykernel_version,
        "pyzmq": zmq.__version__,
        "docker_sdk": docker.__version__,
        "default_executor_workers": min(32, (os.cpu_count() or 1) + 4),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def print_machine(info: dict[str, Any]) -> None:
    print("== machine")
    print(
        f"nproc: {info['nproc']} (os.cpu_count {info['cpu_count']}), {info['cpu_model']}, "
        f"{info['memory_gib']} GiB RAM, Linux {info['os_kernel']}, load average "
        f"{' '.join(map(str, info['load_average_at_start']))} (other work on the machine "
        "shows up as noise)"
    )
    print(
        f"docker: server {info['docker_server']} (API {info['docker_api']}), "
        f"cli {info['docker_cli']}, storage {info['docker_storage_driver']}, "
        f"cgroup {info['docker_cgroup']}, runtime {info['docker_default_runtime']}"
    )
    print(
        f"python {info['python']}, jupyter_client {info['jupyter_client']}, "
        f"ipykernel {info['ipykernel_host']} (host), pyzmq {info['pyzmq']}, "
        f"docker SDK {info['docker_sdk']}, asyncio default executor "
        f"{info['default_executor_workers']} threads"
    )
    print()


@dataclass
class Variant:
    key: str
    label: str
    kernel_name: str
    ksm: KernelSpecManager
    image: str | None = None
    samples: list[dict[str, float]] = field(default_factory=list)
    shutdowns: list[float] = field(default_factory=list)

    def series(self, name: str) -> list[float]:
        return [s[name] for s in self.samples if name in s]


@dataclass
class Workspace:
    root: Path
    notebook_dir: Path
    catalog: Path
    uid: int
    gid: int


def make_workspace(uid: int, gid: int, with_tf: bool) -> Workspace:
    root = Path(tempfile.mkdtemp(prefix="tfenv-bench-"))
    root.chmod(0o755)
    notebook_dir = root / "nb"
    notebook_dir.mkdir(mode=0o755)
    if os.geteuid() == 0:
        os.chown(notebook_dir, uid, gid)
    lines = [
        "version: 1",
        "environments:",
        "  - id: bench-py311",
        f"    image: {PY_IMAGE}",
        "    display_name: Benchmark Python 3.11",
    ]
    if with_tf:
        lines += [
            "  - id: bench-tf220",
            f"    image: {TF_IMAGE}",
            "    display_name: Benchmark TensorFlow 2.20.0",
        ]
    catalog = root / "catalog.yaml"
    catalog.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.environ["JUPYTER_TFENV_CATALOG"] = str(catalog)
    os.environ["JUPYTER_TFENV_KERNEL_UID"] = str(uid)
    os.environ["JUPYTER_TFENV_KERNEL_GID"] = str(gid)
    # The benchmark's own checkpoint storage (the kernel's mounts are part of its start).
    os.environ["JUPYTER_TFENV_CHECKPOINT_ROOT"] = str(root / "checkpoints")
    os.environ["JUPYTER_TFENV_LOG_ROOT"] = str(root / "logs")
    return Workspace(root, notebook_dir, catalog, uid, gid)


# ----------------------------------------------------------------------------- one kernel


class KernelRun:
    """One kernel: start → first execute_reply → shutdown, with timestamps."""

    live: set[KernelRun] = set()  # for the emergency cleanup

    def __init__(self, variant: Variant, cwd: str, timeout: float, wait_ready: bool) -> None:
        self.variant = variant
        self.cwd = cwd
        self.timeout = timeout
        self.wait_ready = wait_ready
        self.km = AsyncKernelManager(
            kernel_name=variant.kernel_name, kernel_spec_manager=variant.ksm
        )
        self.kc: Any = None
        self.times: dict[str, float] = {}
        self.kernel_id: str | None = None
        self.runtime_dir: str | None = None
        self.reply: dict[str, Any] | None = None

    async def start(
        self,
        t0: float | None = None,
        code: str = CODE,
        user_expressions: dict[str, str] | None = None,
    ) -> dict[str, float]:
        """Start the kernel and wait for the reply to ``code``; times are in ms from t0."""
        KernelRun.live.add(self)
        t0 = time.perf_counter() if t0 is None else t0
        # The local kernel's stderr (ipykernel 7 warns about unencrypted TCP) is dropped.
        quiet = {} if self.variant.image else {"stderr": subprocess.DEVNULL}
        await self.km.start_kernel(cwd=self.cwd, **quiet)
        self.kernel_id = self.km.kernel_id
        prov = self.km.provisioner
        self.runtime_dir = getattr(prov, "runtime_dir", None)
        self.times["start_kernel"] = (time.perf_counter() - t0) * 1000
        self.kc = self.km.client()
        self.kc.start_channels()
        if self.wait_ready:
            await self.kc.wait_for_ready(timeout=self.timeout)
            self.times["ready"] = (time.perf_counter() - t0) * 1000
        self.reply = await self.execute(code, user_expressions)
        self.times["first_reply"] = (time.perf_counter() - t0) * 1000
        status = self.reply["content"].get("status")
        if status != "ok":
            raise RuntimeError(f"execute_reply status {status}: {self.reply['content']}")
        return self.times

    async def execute(
        self, code: str, user_expressions: dict[str, str] | None = None
    ) -> dict[str, Any]:
        msg_id = self.kc.execute(code, store_history=False, user_expressions=user_expressions or {})
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no execute_reply within {self.timeout:.0f} s")
            try:
                msg = await self.kc.get_shell_msg(timeout=min(1.0, remaining))
            except Empty:
                if not await self.km.is_alive():
                    raise RuntimeError("the kernel died before its first execute_reply") from None
                continue
            if msg["msg_type"] == "execute_reply" and msg["parent_header"].get("msg_id") == msg_id:
                return msg  # type: ignore[no-any-return]

    async def shutdown(self, now: bool = False) -> float:
        """Full shutdown (shutdown_request, wait, container/process removal); ms."""
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None
        t = time.perf_counter()
        try:
            if self.km.has_kernel:
                await self.km.shutdown_kernel(now=now)
        finally:
            KernelRun.live.discard(self)
        return (time.perf_counter() - t) * 1000


async def measure_once(
    variant: Variant,
    ws: Workspace,
    args: argparse.Namespace,
    failures: list[str],
    kernel_ids: set[str],
    runtime_dirs: set[str],
    record: bool,
) -> None:
    run = KernelRun(variant, str(ws.notebook_dir), args.timeout, args.wait_for_ready)
    failed = False
    times: dict[str, float] = {}
    try:
        times = await run.start()
    except Exception as err:  # reported; the run goes on
        failed = True
        failures.append(f"{variant.key}: start failed: {type(err).__name__}: {err}")
        print(f"  ! {variant.key}: {type(err).__name__}: {err}", file=sys.stderr)
    finally:
        if run.kernel_id:
            kernel_ids.add(run.kernel_id)
        if run.runtime_dir:
            runtime_dirs.add(run.runtime_dir)
        try:
            down = await run.shutdown(now=failed)
        except Exception as err:
            failures.append(f"{variant.key}: shutdown failed: {type(err).__name__}: {err}")
            down = math.nan
    if record and not failed:
        variant.samples.append(times)
        variant.shutdowns.append(down)


# ----------------------------------------------------------------------------- docker run


def time_docker_run(image: str, runs: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """``docker run --rm <image> true`` wall time: the floor of any container start here."""
    samples = []
    argv = ["docker", "run", "--rm", *extra, image, "true"]
    for i in range(runs + 1):
        t = time.perf_counter()
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
        elapsed = (time.perf_counter() - t) * 1000
        if out.returncode != 0:
            return {"error": out.stderr.strip()[-300:]}
        if i:  # the first one is a warm-up
            samples.append(elapsed)
    return {"samples_ms": samples, "stats": stats(samples)}


# ----------------------------------------------------------------------------- profile

M_CREATED = "container created (engine clock)"
M_STARTED = "container started (engine clock)"
M_EXEC = "kernel process exec'd (10 ms ticks)"
M_BOUND = "kernel's 5 IPC sockets bound (1 ms poll)"
M_READY = "kernel answered an early kernel_info (2nd client)"
M_RETURNED = "start_kernel() returned"
M_REPLY = "first execute_reply"


class Recorder:
    """Timestamps (ms from t0) of Docker API calls, provisioner phases and socket binding."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()
        self.bound_at: float | None = None
        self.ready_at: float | None = None
        self.probe: asyncio.Task[None] | None = None
        self.bound_checks = 0
        self.stop = threading.Event()
        self.poller: threading.Thread | None = None

    def now(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def add(self, name: str, start: float, end: float) -> None:
        with self.lock:
            self.events.append((name, start, end))

    def watch(self, bound: Callable[[], bool]) -> None:
        """Poll ``bound`` every 1 ms in a thread; note when it first holds."""

        def poll() -> None:
            while not self.stop.is_set():
                with contextlib.suppress(Exception):
                    if bound():
                        self.bound_at = self.now()
                        return
                time.sleep(0.001)

        self.poller = threading.Thread(target=poll, name=POLLER, daemon=True)
        self.poller.start()

    def close(self) -> None:
        self.stop.set()
        if self.poller is not None:
            self.poller.join()


async def early_probe(info: dict[str, Any], rec: Recorder, timeout: float) -> None:
    """Ask for kernel_info from the moment the connection file exists (a second client).

    Its socket retries every 1 ms (jupyter_client's retry every 100 ms), so the reply
    marks when the kernel could first answer, whatever the provisioner does meanwhile.
    """
    ctx = zmq.asyncio.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.reconnect_ivl = 1
    if info.get("curve_publickey") and info.get("curve_secretkey"):
        sock.curve_secretkey = info["curve_secretkey"].encode()
        sock.curve_publickey = info["curve_publickey"].encode()
        sock.curve_serverkey = info["curve_publickey"].encode()
    key = info["key"]
    session = Session(
        key=key.encode() if isinstance(key, str) else key,
        signature_scheme=info.get("signature_scheme", "hmac-sha256"),
    )
    if info.get("transport", "tcp") == "ipc":
        sock.connect(f"ipc://{info['ip']}-{info['shell_port']}")
    else:
        sock.connect(f"tcp://{info['ip']}:{info['shell_port']}")
    try:
        msg = session.msg("kernel_info_request", {})
        await sock.send_multipart(session.serialize(msg))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not await sock.poll(timeout=100):
                continue
            _idents, frames = session.feed_identities(await sock.recv_multipart())
            reply = session.deserialize(frames)
            if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
                rec.ready_at = rec.now()
                return
    finally:
        sock.close(linger=0)


@contextlib.contextmanager
def instrumented(rec: Recorder) -> Iterator[None]:
    """Wrap the docker SDK's HTTP verbs and the provisioners' phases (this process only)."""
    docker_cls = tfenv_provisioner.DockerKernelProvisioner
    local_cls = LocalProvisioner
    saved: list[tuple[type, str, Any]] = []

    def patch(owner: type, name: str, make: Callable[[Any], Any]) -> None:
        if not hasattr(owner, name):  # internals renamed: profile what is still there
            return
        saved.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, make(getattr(owner, name)))

    def http(verb: str) -> Callable[[Any], Any]:
        def make(orig: Any) -> Any:
            def wrapper(self: Any, url: str, *a: Any, **kw: Any) -> Any:
                start = rec.now()
                try:
                    return orig(self, url, *a, **kw)
                finally:
                    path = url.split("/v1.", 1)[-1].split("/", 1)[-1] if "/v1." in url else url
                    path = "/" + path.rsplit("localhost/", 1)[-1].lstrip("/")
                    rec.add(f"docker {verb} {shorten(path)}", start, rec.now())

            return wrapper

        return make

    def phase(name: str, launch: bool = False) -> Callable[[Any], Any]:
        def make(orig: Any) -> Any:
            async def wrapper(self: Any, *a: Any, **kw: Any) -> Any:
                if launch:
                    info = dict(self.connection_info)
                    rec.probe = asyncio.create_task(early_probe(info, rec, 60.0))
                    if hasattr(self, "_bound"):
                        rec.watch(self._bound)
                start = rec.now()
                try:
                    return await orig(self, *a, **kw)
                finally:
                    rec.add(name, start, rec.now())

            return wrapper

        return make

    def count_bound(orig: Any) -> Any:
        def wrapper(self: Any) -> bool:
            if threading.current_thread().name != POLLER:
                rec.bound_checks += 1
            return bool(orig(self))

        return wrapper

    def connect_phase(orig: Any) -> Any:
        def wrapper(*a: Any, **kw: Any) -> Any:
            start = rec.now()
            try:
                return orig(*a, **kw)
            finally:
                rec.add("provisioner connect() (new DockerClient)", start, rec.now())

        return wrapper

    for verb in ("_get", "_post", "_delete"):
        patch(APIClient, verb, http(verb[1:].upper()))
    patch(docker_cls, "pre_launch", phase("DockerKernelProvisioner.pre_launch"))
    patch(docker_cls, "launch_kernel", phase("provisioner launch_kernel", launch=True))
    patch(docker_cls, "_wait_until_bound", phase("provisioner _wait_until_bound"))
    patch(docker_cls, "_bound", count_bound)
    patch(docker_cls, "post_launch", phase("provisioner post_launch"))
    patch(local_cls, "pre_launch", phase("LocalProvisioner.pre_launch"))
    patch(local_cls, "launch_kernel", phase("provisioner launch_kernel (Popen)", launch=True))
    orig_connect = getattr(tfenv_provisioner, "connect", None)
    if orig_connect is not None:
        tfenv_provisioner.connect = connect_phase(orig_connect)
    try:
        yield
    finally:
        rec.close()
        if orig_connect is not None:
            tfenv_provisioner.connect = orig_connect
        for owner, name, original in reversed(saved):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def shorten(path: str) -> str:
    """``/containers/<64 hex>/json`` → ``/containers/<id>/json``; drop the query."""
    parts = []
    for part in path.split("?", 1)[0].split("/"):
        opaque = len(part) >= 32 or part.startswith(("tfenv-", "sha256:")) or ":" in part
        parts.append("<id>" if opaque else part)
    return "/".join(parts)


def parse_docker_time(value: str) -> float | None:
    """RFC 3339 with nanoseconds → epoch seconds (µs precision)."""
    if not value or value.startswith("0001"):
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head + "+00:00").timestamp()
    return stamp + (float("0." + frac[:9]) if frac else 0.0)


async def profile_start(
    variant: Variant,
    ws: Workspace,
    args: argparse.Namespace,
    client: docker.DockerClient,
    kernel_ids: set[str],
    runtime_dirs: set[str],
) -> dict[str, Any]:
    """One instrumented start, phase by phase (a container's or the local kernel's)."""
    run = KernelRun(variant, str(ws.notebook_dir), args.timeout, wait_ready=False)
    result: dict[str, Any] = {"variant": variant.key}
    created_at = started_at = None
    with instrumented(rec := Recorder()):
        boot_offset = time.time() - boottime()  # epoch = CLOCK_BOOTTIME + offset
        boot_at_t0 = boottime() - (time.perf_counter() - rec.t0)
        try:
            await run.start(t0=rec.t0)
            rec.close()
            if rec.probe is not None:
                await asyncio.wait_for(rec.probe, args.timeout)
            times = dict(run.times)
            # Kernel-side facts: separate requests, after the measured reply.
            await run.execute(PROBE_CODE)
            reply = await run.execute("", {"p": "_tfenv_probe()"})
            expr = reply["content"]["user_expressions"]["p"]
            probe = ast.literal_eval(expr["data"]["text/plain"])
            container_id = getattr(run.km.provisioner, "container_id", None)
            if container_id:
                attrs = client.api.inspect_container(container_id)
                started_at = parse_docker_time(attrs["State"].get("StartedAt", ""))
                created_at = parse_docker_time(attrs.get("Created", ""))
        finally:
            if run.kernel_id:
                kernel_ids.add(run.kernel_id)
            if run.runtime_dir:
                runtime_dirs.add(run.runtime_dir)
            down = await run.shutdown()

    def from_epoch(epoch: float | None) -> float | None:
        return None if epoch is None else (epoch - boot_offset - boot_at_t0) * 1000

    marks = {
        M_CREATED: from_epoch(created_at),
        M_STARTED: from_epoch(started_at),
        M_EXEC: (probe["start_boottime"] - boot_at_t0) * 1000,
        M_BOUND: rec.bound_at,
        M_READY: rec.ready_at,
        M_RETURNED: times["start_kernel"],
        M_REPLY: times["first_reply"],
    }
    result.update(
        {
            "events": [{"name": n, "start_ms": s, "end_ms": e} for n, s, e in rec.events],
            "marks_ms": marks,
            "segments_ms": segments(marks),
            "bound_checks": rec.bound_checks,
            "kernel": probe,
            "shutdown_ms": down,
        }
    )
    return result


SEGMENT_KEYS = ("launch", "kernel_init", "wait")
SEGMENTS = (
    ("launch", "request → kernel process exec'd (Popen / docker create+start)"),
    ("kernel_init", "exec → kernel answers (python + ipykernel start)"),
    ("wait", "→ first execute_reply (bind detection, connect, round trip)"),
)


def segments(marks: dict[str, float | None]) -> dict[str, float] | None:
    exec_at, ready, reply = (marks[k] for k in (M_EXEC, M_READY, M_REPLY))
    if exec_at is None or ready is None or reply is None:
        return None
    return {
        "launch": exec_at,
        "kernel_init": ready - exec_at,
        "wait": reply - ready,
        "total": reply,
    }


def print_timeline(prof: dict[str, Any]) -> None:
    print(f"-- timeline of one {prof['variant']} start (ms from the start request)")
    rows = [(e["start_ms"], e["end_ms"], e["name"]) for e in prof["events"]]
    rows += [(v, None, "* " + k) for k, v in prof["marks_ms"].items() if v is not None]
    for start, end, name in sorted(rows, key=lambda r: (r[0], r[1] or r[0])):
        if end is None:
            print(f"  {start:8.1f}                       {name}")
        else:
            print(f"  {start:8.1f} → {end:8.1f} ({end - start:7.1f})  {name}")
    api = [e for e in prof["events"] if e["name"].startswith("docker ")]
    kernel = prof["kernel"]
    line = (
        f"  kernel: python {kernel['python']}, ipykernel {kernel['ipykernel']}, "
        f"uid {kernel['uid']}; shutdown {prof['shutdown_ms']:.1f} ms"
    )
    if api:
        total = sum(e["end_ms"] - e["start_ms"] for e in api)
        line += (
            f"; {len(api)} docker API calls ({total:.1f} ms), "
            f"{prof['bound_checks']} provisioner bind checks"
        )
    print(line)


def print_profile_summary(profiles: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median of each segment per variant, and the container overhead at equal kernel init."""
    keys = [k for k in profiles if any(p.get("segments_ms") for p in profiles[k])]
    med: dict[str, dict[str, float]] = {}
    for key in keys:
        segs = [p["segments_ms"] for p in profiles[key] if p.get("segments_ms")]
        med[key] = {s: percentile([x[s] for x in segs], 50) for s in (*SEGMENT_KEYS, "total")}
    rows = [*SEGMENTS, ("total", "total: start request → first execute_reply")]
    width = max(len(desc) for _, desc in rows)
    n = min(len(profiles[k]) for k in keys)
    print(f"-- where the time goes (median of {n} instrumented starts per variant, ms)")
    print(f"  {'':<{width}}" + "".join(f"{k:>10}" for k in keys))
    for seg, desc in rows:
        print(f"  {desc:<{width}}" + "".join(fmt(med[k][seg], 10) for k in keys))
    out: dict[str, Any] = {"median_segments_ms": med, "overhead_at_equal_kernel_init_ms": {}}
    for base_key in (k for k in keys if k.startswith("local")):
        base = med[base_key]
        for key in keys:
            if key.startswith("local"):
                continue
            # What the container adds if its kernel started as fast as the local one.
            extra = (med[key]["total"] - med[key]["kernel_init"]) - (
                base["total"] - base["kernel_init"]
            )
            out["overhead_at_equal_kernel_init_ms"].setdefault(key, {})[base_key] = extra
            print(
                f"  {key} vs {base_key}: what the container adds with the kernels' own start "
                f"taken out (total - kernel_init, minus {base_key}'s): {extra:+.1f} ms"
            )
    print()
    return out


def print_summary(results: dict[str, Any]) -> None:
    load = [round(x, 2) for x in os.getloadavg()]
    results["load_average_at_end"] = load
    print(f"== summary (load average now {' '.join(map(str, load))})")
    overhead = results["profile"].get("overhead_at_equal_kernel_init_ms", {})
    for key, by_base in results["comparison"].items():
        var = results["variants"][key]
        print(f"{key}: first execute_reply p50 {var['stats']['p50']:.1f} ms")
        for base_key, cmp in by_base.items():
            local = results["variants"][base_key]["stats"]
            print(
                f"  vs {base_key} p50 {local['p50']:.1f} ms: {cmp['p50_diff_ms']:+.1f} ms, "
                f"ratio {cmp['p50_ratio']:.2f}x (target ≤ {TARGET_MS:.0f} ms: "
                f"{'met' if cmp['within_target'] else 'NOT met'})"
            )
        for base_key, extra in overhead.get(key, {}).items():
            print(
                f"  vs {base_key} with the kernels' own start time taken out (profile "
                f"medians): {extra:+.1f} ms (target: {'met' if extra <= TARGET_MS else 'NOT met'})"
            )
        for extra in ("", "--network none "):
            run = results["docker_run_true"].get(extra + var["image"], {})
            if "stats" in run:
                print(
                    f"  context: `docker run --rm {extra}{var['image']} true` "
                    f"p50 {run['stats']['p50']:.1f} ms"
                )
    for key, res in results["concurrency"].items():
        print(
            f"concurrency {key}: {res['ready']}/{res['n']} answered, "
            f"wall {res['wall_ms']:.1f} ms, shutdown of all {res['shutdown_wall_ms']:.1f} ms"
        )
    print()


# ----------------------------------------------------------------------------- concurrency


async def concurrent_starts(
    variant: Variant,
    ws: Workspace,
    args: argparse.Namespace,
    n: int,
    kernel_ids: set[str],
    runtime_dirs: set[str],
) -> dict[str, Any]:
    runs = [
        KernelRun(variant, str(ws.notebook_dir), args.timeout, args.wait_for_ready)
        for _ in range(n)
    ]
    t0 = time.perf_counter()
    results = await asyncio.gather(*(r.start(t0=t0) for r in runs), return_exceptions=True)
    wall = (time.perf_counter() - t0) * 1000
    ok = [r for r, res in zip(runs, results, strict=True) if not isinstance(res, BaseException)]
    errors = [f"{type(res).__name__}: {res}" for res in results if isinstance(res, BaseException)]
    for r in runs:
        if r.kernel_id:
            kernel_ids.add(r.kernel_id)
        if r.runtime_dir:
            runtime_dirs.add(r.runtime_dir)
    t1 = time.perf_counter()
    downs = await asyncio.gather(
        *(r.shutdown(now=r not in ok) for r in runs), return_exceptions=True
    )
    down_wall = (time.perf_counter() - t1) * 1000
    errors += [f"shutdown: {type(d).__name__}: {d}" for d in downs if isinstance(d, BaseException)]
    replies = [r.times["first_reply"] for r in ok]
    return {
        "variant": variant.key,
        "n": n,
        "ready": len(ok),
        "wall_ms": wall,
        "per_kernel_first_reply_ms": replies,
        "per_kernel": stats(replies),
        "shutdown_wall_ms": down_wall,
        "errors": errors,
    }


def print_concurrency(res: dict[str, Any], label: str) -> None:
    st = res["per_kernel"]
    print(
        f"{label}: {res['ready']}/{res['n']} ready (answered execute_request); "
        f"wall until all answered {res['wall_ms']:.1f} ms; per kernel p50 "
        f"{fmt(st.get('p50'), 0)} / max {fmt(st.get('max'), 0)} ms; "
        f"shutdown of all {res['shutdown_wall_ms']:.1f} ms"
    )
    for err in res["errors"]:
        print(f"  ! {err}")


# ----------------------------------------------------------------------------- leaks


def leftovers(
    client: docker.DockerClient, kernel_ids: set[str], runtime_dirs: set[str]
) -> dict[str, Any]:
    """Kernel containers and runtime folders of this process still there, then removed.

    Containers are found by this process's server-instance label, so that one whose start
    was interrupted before its kernel id was known is found too; containers of other
    servers on the same engine are counted, never touched.
    """
    labelled = client.containers.list(all=True, filters={"label": [LABEL_KERNEL_ID]})
    ours = [
        c
        for c in labelled
        if (c.labels or {}).get(LABEL_SERVER_INSTANCE) == SERVER_INSTANCE
        or (c.labels or {}).get(LABEL_KERNEL_ID) in kernel_ids
    ]
    dirs = set(runtime_dirs) | {(c.labels or {}).get(LABEL_RUNTIME_DIR, "") for c in ours}
    left_dirs = sorted(d for d in dirs if d and os.path.exists(d))
    names = [f"{c.name} ({c.status})" for c in ours]
    for container in ours:  # reported above as a failure; do not leave it running
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)
    for path in left_dirs:
        shutil.rmtree(path, ignore_errors=True)
    return {
        "labelled_total": len(labelled),
        "ours": names,
        "runtime_dirs": left_dirs,
        "kernels_started": len(kernel_ids),
    }


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=10, help="measured starts per variant (10)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="tfenv kernels started at once in the concurrency part (8; 0: skip)",
    )
    p.add_argument("--tf", action="store_true", help=f"also measure {TF_IMAGE}")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="seconds one kernel may take to answer (120)"
    )
    p.add_argument(
        "--wait-for-ready",
        action="store_true",
        help="call jupyter_client's wait_for_ready() before the execute_request, "
        "as nbclient does (adds its ≥200 ms IOPub flush to every variant)",
    )
    p.add_argument(
        "--local-python",
        metavar="PYTHON",
        help="also measure a local kernel of this interpreter (e.g. a venv with the image's "
        "ipykernel version), for a like-for-like baseline",
    )
    p.add_argument(
        "--profile-runs",
        type=int,
        default=3,
        help="instrumented starts per variant for the phase profile (3; 0: skip)",
    )
    p.add_argument(
        "--executor-workers",
        type=int,
        default=0,
        help="size of asyncio's default thread pool, which runs the provisioner's "
        "blocking Docker calls (0: asyncio's default, min(32, nproc + 4))",
    )
    p.add_argument(
        "--uid",
        type=int,
        default=None,
        help="uid (and gid) the container kernels run as (default: 1000 when run as root, "
        "else your own uid and gid)",
    )
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def check_images(client: docker.DockerClient, images: list[str]) -> list[str]:
    missing = []
    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing.append(image)
    return missing


def local_alt_variant(python: str, ws: Workspace) -> Variant:
    """A local kernel of another interpreter (e.g. a venv with the image's ipykernel)."""
    out = subprocess.run(
        [
            python,
            "-c",
            "import ipykernel, sys; print(ipykernel.__version__, sys.version.split()[0])",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"--local-python {python} has no ipykernel: {out.stderr.strip()}")
    ipk, pyver = out.stdout.split()
    folder = ws.root / "kernels" / "bench-local-alt"
    folder.mkdir(parents=True)
    spec = {
        "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"local {pyver}, ipykernel {ipk}",
        "language": "python",
    }
    (folder / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    ksm = KernelSpecManager(kernel_dirs=[str(folder.parent)])
    label = f"local ipykernel {ipk} (python {pyver})"
    return Variant("local-alt", label, "bench-local-alt", ksm)


async def benchmark(
    args: argparse.Namespace, client: docker.DockerClient, ws: Workspace, results: dict[str, Any]
) -> None:
    if args.executor_workers:
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=args.executor_workers)
        )
    failures: list[str] = results["failures"]
    kernel_ids: set[str] = results.setdefault("_kernel_ids", set())
    runtime_dirs: set[str] = results.setdefault("_runtime_dirs", set())

    tfenv_ksm = TFEnvKernelSpecManager()
    specs = tfenv_ksm.find_kernel_specs()
    variants = [Variant("local", "local ipykernel (python3)", "python3", KernelSpecManager())]
    if args.local_python:
        variants.append(local_alt_variant(args.local_python, ws))
    variants.append(Variant("py311", f"tfenv {PY_IMAGE}", "tfenv-bench-py311", tfenv_ksm, PY_IMAGE))
    if args.tf:
        variants.append(
            Variant("tf220", f"tfenv {TF_IMAGE}", "tfenv-bench-tf220", tfenv_ksm, TF_IMAGE)
        )
    locals_ = [v for v in variants if v.image is None]
    containers = [v for v in variants if v.image is not None]
    for v in containers:
        if v.kernel_name not in specs:
            problems = "; ".join(str(p) for p in tfenv_ksm.catalog.problems())
            raise RuntimeError(f"kernelspec {v.kernel_name} is not served ({problems})")

    mode = "wait_for_ready() + execute" if args.wait_for_ready else "execute right away"
    print(
        f"== sequential starts: {args.runs} measured per variant (+1 warm-up), interleaved; "
        f"metric: start_kernel() → first execute_reply of {CODE!r} ({mode})"
    )
    for v in variants:
        await measure_once(v, ws, args, failures, kernel_ids, runtime_dirs, record=False)
    for i in range(args.runs):
        order = variants[i % len(variants) :] + variants[: i % len(variants)]
        for v in order:
            await measure_once(v, ws, args, failures, kernel_ids, runtime_dirs, record=True)
        done = "  ".join(
            f"{v.key} {v.samples[-1]['first_reply']:.0f}" for v in variants if v.samples
        )
        print(f"  round {i + 1:>2}/{args.runs}: {done} ms", flush=True)
    print()

    table(
        "start → first execute_reply", [(v.label, stats(v.series("first_reply"))) for v in variants]
    )
    table(
        "  of which start_kernel()", [(v.label, stats(v.series("start_kernel"))) for v in variants]
    )
    table("shutdown_kernel() (full)", [(v.label, stats(v.shutdowns)) for v in variants])

    comparison: dict[str, dict[str, Any]] = {}
    for v in containers:
        st = stats(v.series("first_reply"))
        for base in locals_:
            local = stats(base.series("first_reply"))
            if not st.get("n") or not local.get("n"):
                continue
            diff, ratio = st["p50"] - local["p50"], st["p50"] / local["p50"]
            comparison.setdefault(v.key, {})[base.key] = {
                "p50_diff_ms": diff,
                "p50_ratio": ratio,
                "target_ms": TARGET_MS,
                "within_target": diff <= TARGET_MS,
            }
            verdict = "within" if diff <= TARGET_MS else "OVER"
            print(
                f"{v.key} vs {base.key}, p50: {diff:+.1f} ms, ratio {ratio:.2f}x  "
                f"(target: container adds ≤ {TARGET_MS:.0f} ms → {verdict})"
            )
    print()

    print("== context: a bare container, `docker run --rm [--network none] <image> true` (CLI)")
    docker_run: dict[str, Any] = {}
    for v in containers:
        assert v.image is not None
        for extra in ((), ("--network", "none")):
            res = await asyncio.to_thread(time_docker_run, v.image, max(3, args.runs), extra)
            name = " ".join((*extra, v.image))
            docker_run[name] = res
            if "error" in res:
                print(f"  {name}: failed: {res['error']}")
            else:
                st = res["stats"]
                print(
                    f"  {name}: p50 {st['p50']:.1f} ms (min {st['min']:.1f}, "
                    f"max {st['max']:.1f}, n {st['n']}, +1 warm-up)"
                )
    print()

    profiles: dict[str, list[dict[str, Any]]] = {v.key: [] for v in variants}
    profile_summary: dict[str, Any] = {}
    if args.profile_runs > 0:
        print(
            f"== profile: {args.profile_runs} instrumented start(s) per variant, interleaved "
            "(1 ms pollers and API wrappers: a little slower than the runs above)"
        )
        for i in range(args.profile_runs):
            for v in variants[i % len(variants) :] + variants[: i % len(variants)]:
                try:
                    prof = await profile_start(v, ws, args, client, kernel_ids, runtime_dirs)
                except Exception as err:
                    failures.append(f"{v.key}: profiled start failed: {type(err).__name__}: {err}")
                    continue
                profiles[v.key].append(prof)
        for v in variants:
            if profiles[v.key]:
                print_timeline(profiles[v.key][-1])
        print()
        if any(profiles.values()):
            profile_summary = print_profile_summary(profiles)

    concurrency = {}
    if args.concurrency > 0:
        print(f"== concurrency: {args.concurrency} kernels started at once (asyncio.gather)")
        for v in containers:
            res = await concurrent_starts(v, ws, args, args.concurrency, kernel_ids, runtime_dirs)
            concurrency[v.key] = res
            print_concurrency(res, v.label)
            if res["ready"] != res["n"] or res["errors"]:
                failures.append(
                    f"{v.key}: concurrency: {res['ready']}/{res['n']} ready, "
                    f"{len(res['errors'])} errors"
                )
        res = await concurrent_starts(
            locals_[0], ws, args, args.concurrency, kernel_ids, runtime_dirs
        )
        concurrency["local"] = res
        print_concurrency(res, locals_[0].label + " (context)")
        print()

    results.update(
        {
            "variants": {
                v.key: {
                    "label": v.label,
                    "image": v.image,
                    "first_reply_ms": v.series("first_reply"),
                    "start_kernel_ms": v.series("start_kernel"),
                    "shutdown_ms": v.shutdowns,
                    "stats": stats(v.series("first_reply")),
                    "start_kernel_stats": stats(v.series("start_kernel")),
                    "shutdown_stats": stats(v.shutdowns),
                }
                for v in variants
            },
            "comparison": comparison,
            "docker_run_true": docker_run,
            "profile": {"runs": profiles, **profile_summary},
            "concurrency": concurrency,
        }
    )
    print_summary(results)


async def emergency_cleanup() -> None:
    for run in list(KernelRun.live):
        with contextlib.suppress(Exception):
            await run.shutdown(now=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as err:
        print(
            f"Docker is not reachable: {err} (scripts/start-dockerd.sh starts one)", file=sys.stderr
        )
        return 2
    images = [PY_IMAGE] + ([TF_IMAGE] if args.tf else [])
    missing = check_images(client, images)
    if missing:
        print(f"Missing images: {', '.join(missing)}. Build them: {BUILD_HINT}", file=sys.stderr)
        return 2
    if args.uid is None:
        args.uid = 1000 if os.geteuid() == 0 else os.getuid()
    gid = args.uid if os.geteuid() == 0 else os.getgid()
    if args.uid == 0:
        print("Kernels may not run as uid 0; pass --uid.", file=sys.stderr)
        return 2

    info = machine_info(client)
    print_machine(info)
    ws = make_workspace(args.uid, gid, args.tf)
    results: dict[str, Any] = {
        "machine": info,
        "failures": [],
        "config": {k: v for k, v in vars(args).items() if k != "json"},
    }
    results["config"].update(
        {
            "code": CODE,
            "kernel_uid": args.uid,
            "kernel_gid": gid,
            "notebook_dir": str(ws.notebook_dir),
        }
    )

    async def run_all() -> None:
        try:
            await benchmark(args, client, ws, results)
        finally:
            await emergency_cleanup()

    # SIGTERM → KeyboardInterrupt, so that the finally blocks remove the containers.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    interrupted = False
    try:
        asyncio.run(run_all())
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted; cleaning up", file=sys.stderr)
    finally:
        shutil.rmtree(ws.root, ignore_errors=True)

    left = leftovers(client, results.pop("_kernel_ids", set()), results.pop("_runtime_dirs", set()))
    results["leftovers"] = left
    print("== cleanup")
    print(
        f"kernels started by this run: {left['kernels_started']}; containers labelled "
        f"{LABEL_KERNEL_ID} left from this run: {len(left['ours'])}; runtime folders left: "
        f"{len(left['runtime_dirs'])} (labelled containers on the engine, any owner: "
        f"{left['labelled_total']}, before this cleanup)"
    )
    for name in left["ours"]:
        print(f"  ! leaked container {name} (now removed)")
    for path in left["runtime_dirs"]:
        print(f"  ! leaked runtime folder {path} (now removed)")
    failures = results["failures"]
    for failure in failures:
        print(f"  ! {failure}")
    ok = not failures and not left["ours"] and not left["runtime_dirs"] and not interrupted
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
