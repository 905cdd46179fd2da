#!/usr/bin/env python3
"""Checkpoint I/O: TensorFlow writing and reading ~1 GiB inside a tfenv kernel vs natively.

What is measured, in one run, interleaved round by round:

``native``
    The baseline: the same TensorFlow code in a plain process on the host, outside any
    container, writing to a folder on the same filesystem as the bind root. The host has
    no TensorFlow, and installing one from PyPI would give bits other than the image's,
    so the script makes a virtualenv (cached, offline) from **the very wheel set the test
    image ``tfenv-test/tensorflow:2.20.0-jupyter`` was built from** (tensorflow-cpu 2.20.0
    for CPython 3.11, ``scripts/build_test_images.py``'s cache; downloaded like that
    script does when missing). Same TensorFlow, same Python minor version, same disk,
    same CPUs: the only difference left is the container.
``bind``
    The product path: a real tfenv kernel of that image, started by the
    ``DockerKernelProvisioner`` (hardened container, kernel uid 1000 when run as root),
    writing to ``$TFENV_CHECKPOINT_DIR`` = ``/tfenv/checkpoints``, a bind mount of a host
    folder under ``--dir`` (``checkpoint_storage = "bind"``).
``volume`` (unless ``--no-volume``)
    The same with ``checkpoint_storage = "volume"``: a named local volume (it lives under
    Docker's data root, ``/var/lib/docker/volumes``; the script prints whether that is the
    same filesystem as ``--dir``).

Both sides are long-lived processes with TensorFlow imported (the kernel, and a native
worker reading one command per line), and each does one uncounted warm-up sample first,
so that first-use costs (thread pools, allocator growth) land on neither side's figures.

Each sample: a ``tf.Variable`` of ``--mib`` MiB of float32 (default 1024: 256 M values),
``tf.train.Checkpoint(v=…).write()`` timed (*write*, into the page cache), then an
``fsync`` of every file written (*write + fsync*: on disk), then — after the host's page
cache is dropped (``echo 3 > /proc/sys/vm/drop_caches``; when that is refused the read
figures say they may come from memory) — ``Checkpoint.read()`` into a fresh variable timed
(*cold read*), and a checksum compared. Throughput is data-file bytes per second, MiB/s;
the summary gives medians and the ratio ``tfenv / native`` (target: ≥ 0.9x for the bind
mount). Nothing is asserted on timings; the exit status is non-zero when a variant failed,
a checksum did not match, or something of the run was left behind.

Usage::

    python3 benchmarks/checkpoint_io.py [--rounds 3] [--mib 1024] [--dir PATH] [--no-volume]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import docker
from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import build_test_images  # noqa: E402

from jupyter_tfenv.provisioning.kernelspecs import TFEnvKernelSpecManager  # noqa: E402

TF_IMAGE = "tfenv-test/tensorflow:2.20.0-jupyter"
WHEEL_SET = "tf-2.20.0"
MIB = 1024**2

#: The benchmark itself: the same source runs in the kernel and in the native process.
IO_CODE = r"""
import json, os, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf


def _files(prefix):
    folder = os.path.dirname(prefix)
    base = os.path.basename(prefix)
    return [os.path.join(folder, f) for f in os.listdir(folder) if f.startswith(base + ".")]


def bench_write(folder, mib):
    n = mib * 1024 * 1024 // 4
    v = tf.Variable(tf.random.uniform([n], seed=7))
    checksum = float(tf.reduce_sum(v))
    prefix = os.path.join(folder, "bench")
    t0 = time.perf_counter()
    path = tf.train.Checkpoint(v=v).write(prefix)
    t1 = time.perf_counter()
    for name in _files(path):
        fd = os.open(name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    t2 = time.perf_counter()
    size = sum(os.path.getsize(f) for f in _files(path))
    del v
    return {"write_s": t1 - t0, "durable_s": t2 - t0, "bytes": size, "checksum": checksum,
            "path": path}


def bench_read(path, mib):
    n = mib * 1024 * 1024 // 4
    v = tf.Variable(tf.zeros([n]))
    t0 = time.perf_counter()
    tf.train.Checkpoint(v=v).read(path).assert_consumed()
    _ = v.numpy()[-1]  # the values are really in memory
    t1 = time.perf_counter()
    checksum = float(tf.reduce_sum(v))
    del v
    return {"read_s": t1 - t0, "checksum": checksum}
"""

#: The native side: a long-lived process like the kernel, one JSON command per line.
NATIVE_WORKER = r"""
import json, sys
exec(compile(open(sys.argv[1]).read(), "io_code", "exec"))
for line in sys.stdin:
    cmd = json.loads(line)
    fn = bench_write if cmd["call"] == "write" else bench_read
    print("RESULT " + json.dumps(fn(cmd["arg"], cmd["mib"])), flush=True)
"""


def log(msg: str) -> None:
    print(msg, flush=True)


# -- the native side ---------------------------------------------------------------------------


def native_python(args: argparse.Namespace) -> str:
    """A python with the image's TensorFlow wheels, outside any container (cached venv)."""
    if args.native_python:
        return str(args.native_python)
    ws = build_test_images.WHEEL_SETS[WHEEL_SET]
    cache = build_test_images.cache_dir()
    wheels = build_test_images.ensure_wheels(ws, cache, verbose=False)
    venv = (
        cache
        / "bench"
        / f"venv-{WHEEL_SET}-{ws.key()}-py{sys.version_info[0]}{sys.version_info[1]}"
    )
    python = venv / "bin" / "python"
    if (venv / ".complete").is_file():
        return str(python)
    log(f"making the native baseline's virtualenv (offline, from {wheels}) ...")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--find-links",
            str(wheels),
            *ws.requirements,
        ],
        check=True,
    )
    (venv / ".complete").write_text("ok\n")
    return str(python)


class Native:
    """The baseline process: the image's TensorFlow on the host, warm like a kernel."""

    def __init__(self, python: str, code_file: Path) -> None:
        self.python = python
        self.code_file = code_file
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            self.python,
            "-u",
            "-c",
            NATIVE_WORKER,
            str(self.code_file),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )

    async def call(self, what: str, arg: str, mib: int) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((json.dumps({"call": what, "arg": arg, "mib": mib}) + "\n").encode())
        await self.proc.stdin.drain()
        while True:
            line = (await self.proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"the native process exited ({await self.proc.wait()})")
            if line.startswith("RESULT "):
                return dict(json.loads(line[len("RESULT ") :]))

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 30)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# -- the kernel side ---------------------------------------------------------------------------


class Kernel:
    """A tfenv kernel of the benchmark environment with one checkpoint storage mode."""

    def __init__(self, ksm: Any, config: Config, cwd: str) -> None:
        self.km = AsyncKernelManager(
            kernel_name="tfenv-bench-tf220", kernel_spec_manager=ksm, config=config
        )
        self.cwd = cwd
        self.kc: Any = None

    async def start(self) -> None:
        await self.km.start_kernel(cwd=self.cwd)
        self.kc = self.km.client()
        self.kc.start_channels()
        await self.kc.wait_for_ready(timeout=120)
        await self.run(IO_CODE)

    async def run(self, code: str, timeout: float = 600) -> str:
        out: list[str] = []
        errors: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                errors.append("\n".join(msg["content"]["traceback"]))

        reply = await self.kc.execute_interactive(code, output_hook=hook, timeout=timeout)
        if reply["content"]["status"] != "ok":
            raise RuntimeError("kernel error: " + "".join(errors)[-2000:])
        return "".join(out)

    async def call(self, expr: str) -> dict[str, Any]:
        text = await self.run(f"print('RESULT ' + json.dumps({expr}))")
        line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
        return dict(json.loads(line[len("RESULT ") :]))

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.km.provisioner.checkpoint_info or {})

    async def stop(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        with contextlib.suppress(Exception):
            await self.km.shutdown_kernel(now=True)


# -- helpers -----------------------------------------------------------------------------------


def drop_caches() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
    except OSError:
        return False
    return True


def machine(client: docker.DockerClient, paths: dict[str, str]) -> list[str]:
    info = client.info()
    lines = [
        f"machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.platform()}",
        f"docker: server {client.version().get('Version')}, storage {info.get('Driver')}, "
        f"data root {info.get('DockerRootDir')}",
    ]
    for label, path in paths.items():
        st = os.stat(path)
        out = subprocess.run(["df", "-h", path], capture_output=True, text=True, check=False)
        dev = out.stdout.splitlines()[-1].split()[0] if out.returncode == 0 else "?"
        lines.append(f"{label}: {path} (device {os.major(st.st_dev)}:{os.minor(st.st_dev)}, {dev})")
    return lines


def versions(python: str) -> str:
    code = (
        "import sys, tensorflow as tf; "
        "print('TensorFlow', tf.__version__, 'Python', sys.version.split()[0])"
    )
    out = subprocess.run(
        [python, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return out.stdout.strip() or "?"


def make_workdir(parent: str | None) -> Path:
    """A fresh folder for the native side and the bind root: one filesystem for both."""
    base = Path(parent).resolve() if parent else Path.home()
    return Path(tempfile.mkdtemp(prefix="tfenv-ckpt-bench-", dir=base))


def write_json(path: str, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- main --------------------------------------------------------------------------------------


async def benchmark(args: argparse.Namespace) -> int:
    client = docker.from_env(timeout=300)
    try:
        client.images.get(TF_IMAGE)
    except docker.errors.ImageNotFound:
        log(f"{TF_IMAGE} is missing: python3 scripts/build_test_images.py")
        return 2
    python = native_python(args)
    uid = int(
        os.environ.get("JUPYTER_TFENV_KERNEL_UID", 1000 if os.geteuid() == 0 else os.getuid())
    )
    gid = int(os.environ.get("JUPYTER_TFENV_KERNEL_GID", uid))
    work = make_workdir(args.dir)
    token = uuid.uuid4().hex[:8]
    code_file = work / "io_code.py"
    code_file.write_text(IO_CODE)
    native_dir = work / "native"
    native_dir.mkdir()
    bind_root = work / "bind"
    notebooks = work / "notebooks"
    notebooks.mkdir()
    os.chown(notebooks, uid, gid)
    catalog = work / "catalog.yaml"
    catalog.write_text(
        "version: 1\nenvironments:\n"
        f"  - id: bench-tf220\n    image: {TF_IMAGE}\n    network: none\n"
    )
    os.environ["JUPYTER_TFENV_CATALOG"] = str(catalog)
    ksm = TFEnvKernelSpecManager()
    base = {"uid": uid, "gid": gid, "runtime_root": f"/tmp/tfenv-bench-{token}"}
    configs = {
        "bind": Config(
            {
                "DockerKernelProvisioner": {
                    **base,
                    "checkpoint_storage": "bind",
                    "checkpoint_root": str(bind_root),
                    "log_root": str(work / "bind-logs"),
                }
            }
        ),
        "volume": Config(
            {
                "DockerKernelProvisioner": {
                    **base,
                    "checkpoint_storage": "volume",
                    "checkpoint_volume": f"tfenv-bench{token}-ckpt-{{username}}-{{environment}}",
                    "log_volume": f"tfenv-bench{token}-logs-{{username}}-{{environment}}",
                }
            }
        ),
    }
    variants = ["bind"] + ([] if args.no_volume else ["volume"])
    failures: list[str] = []
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in ["native", *variants]}
    kernels: dict[str, Kernel] = {}
    dropped = True
    native = Native(python, code_file)
    try:
        await native.start()
        for name in variants:
            kernels[name] = Kernel(ksm, configs[name], str(notebooks))
            await kernels[name].start()
        host_of: dict[str, str] = {"native": str(native_dir)}
        for name, kernel in kernels.items():
            where = kernel.info["checkpoints"]
            if "host_path" in where:
                host_of[name] = where["host_path"]
            else:
                host_of[name] = client.volumes.get(where["volume"]).attrs["Mountpoint"]
        for line in machine(client, host_of):
            log(line)
        log(f"native: {python} ({versions(python)}); kernels: {TF_IMAGE}")
        log(
            f"checkpoint: a float32 variable of {args.mib} MiB; {args.rounds} rounds, interleaved\n"
        )

        async def sample(name: str, mib: int) -> dict[str, Any]:
            nonlocal dropped
            if name == "native":
                wrote = await native.call("write", str(native_dir), mib)
                dropped = drop_caches() and dropped
                read = await native.call("read", wrote["path"], mib)
                for f in native_dir.iterdir():
                    f.unlink()
            else:
                kernel = kernels[name]
                wrote = await kernel.call(f"bench_write(os.environ['TFENV_CHECKPOINT_DIR'], {mib})")
                dropped = drop_caches() and dropped
                read = await kernel.call(f"bench_read({wrote['path']!r}, {mib})")
                await kernel.run(
                    f"import glob\nfor f in glob.glob({wrote['path']!r} + '.*'): os.unlink(f)\n"
                )
            if read["checksum"] != wrote["checksum"]:
                raise RuntimeError("the checksum read back differs from the one written")
            return {**wrote, **read}

        names = ["native", *variants]
        for name in names:  # warm-up, not counted: first-use costs on both sides
            await sample(name, min(args.mib, 64))
        for round_no in range(args.rounds):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                try:
                    result = await sample(name, args.mib)
                except Exception as err:  # reported; the run goes on
                    failures.append(f"{name} round {round_no + 1}: {err}")
                    log(f"round {round_no + 1} {name}: FAILED {err}")
                    continue
                results[name].append(result)
                mib = result["bytes"] / MIB
                log(
                    f"round {round_no + 1} {name:>7}: write {mib / result['write_s']:7.0f} "
                    f"MiB/s, write+fsync {mib / result['durable_s']:7.0f} MiB/s, cold read "
                    f"{mib / result['read_s']:7.0f} MiB/s"
                )
    finally:
        await native.stop()
        for kernel in kernels.values():
            await kernel.stop()
        for volume in client.volumes.list():
            if volume.name.startswith(f"tfenv-bench{token}-"):
                volume.remove(force=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(f"/tmp/tfenv-bench-{token}", ignore_errors=True)
        left = [
            c.name
            for c in client.containers.list(
                all=True, filters={"label": "org.jupyter.tfenv.kernel-id"}
            )
            if c.labels.get("org.jupyter.tfenv.server-pid") == str(os.getpid())
        ]
        if left:
            failures.append(f"containers left behind: {left}")

    log("\n== summary (median MiB/s over rounds; ratio = tfenv / native)")
    if not dropped:
        log("   NOTE: the page cache could not be dropped: 'cold read' may be served from memory")
    header = f"{'variant':>8} | {'write':>8} | {'write+fsync':>11} | {'cold read':>9}"
    log(header)
    log("-" * len(header))
    medians: dict[str, dict[str, float]] = {}
    for name, samples in results.items():
        if not samples:
            continue
        medians[name] = {
            key: median([s["bytes"] / MIB / s[f"{key}_s"] for s in samples])
            for key in ("write", "durable", "read")
        }
        m = medians[name]
        log(f"{name:>8} | {m['write']:8.0f} | {m['durable']:11.0f} | {m['read']:9.0f}")
    if "native" in medians:
        for name in variants:
            if name not in medians:
                continue
            ratio = {k: medians[name][k] / medians["native"][k] for k in medians[name]}
            log(
                f"{name:>8} / native: write {ratio['write']:.2f}x, write+fsync "
                f"{ratio['durable']:.2f}x, cold read {ratio['read']:.2f}x"
                + ("   (target ≥ 0.90x)" if name == "bind" else "")
            )
            # The same, paired round by round (samples next to each other in time), which
            # is steadier than a ratio of medians when the machine's load drifts.
            pairs = list(zip(results[name], results["native"], strict=False))
            paired = {
                k: median([n[f"{k}_s"] / v[f"{k}_s"] for v, n in pairs])
                for k in ("write", "durable", "read")
            }
            log(
                f"{'':>8}   per-round ratio, median: write {paired['write']:.2f}x, "
                f"write+fsync {paired['durable']:.2f}x, cold read {paired['read']:.2f}x"
            )
    if args.json:
        write_json(args.json, {"samples": results, "medians": medians})
    for failure in failures:
        log(f"FAILED: {failure}")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="samples per variant (default 3)")
    parser.add_argument("--mib", type=int, default=1024, help="checkpoint size in MiB (1024)")
    parser.add_argument("--dir", help="parent folder of the bind root and the native folder")
    parser.add_argument("--no-volume", action="store_true", help="skip the named-volume variant")
    parser.add_argument("--native-python", help="a python with tensorflow 2.20.0 to use instead")
    parser.add_argument("--json", help="also write every sample as JSON")
    return asyncio.run(benchmark(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
