#!/usr/bin/env python3
"""Kernel start latency: the generated Kubernetes pod under podman against ``docker run``.

One sample is the time from the start request to the first ``execute_reply`` (of ``1+1``)
of a TensorFlow 2.20 kernel (``tfenv-test/tensorflow:2.20.0-jupyter``), for:

(a) ``podman``: the Secret, claim and Pod of
    ``jupyter_tfenv.backends.kubernetes.manifests.kernel_objects``
    played by ``podman kube play`` on a bridge network, as tier 2 plays them
    (tests/support/podman.py: ``podman secret create``, ``kube play``, the pod IP lookup), the
    client connecting at the pod's IP;
(b) ``docker``: ``docker run -d`` of the same image running the same kernel command
    (``manifests.kernel_command``) over TCP, with the same uid/gid, variables, read-only
    connection file, checkpoint and log folders, no capabilities and no-new-privileges;
    host network (this Docker engine has no bridge) on free ports, the client on
    127.0.0.1.

The request goes out as soon as the start call returns (ZeroMQ queues it until the kernel
binds). Runs are interleaved (the order alternates every round) after one uncounted
warm-up each; the claim exists after the warm-up, so podman's samples are starts of a
user's second and later kernels (the first also runs the claim's prepare pod). Nothing
is asserted on timings: the exit status is non-zero only when a kernel did not answer or
something of the run was left behind.

Usage::

    .venv/bin/python benchmarks/k8s_podman_start.py [--runs 5] [--json out.json]

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

from benchstats import fmt, percentile, run_cmd  # benchmarks/ is sys.path[0]
from jupyter_client import BlockingKernelClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jupyter_tfenv.backends.kubernetes import manifests as m  # noqa: E402
from jupyter_tfenv.catalog.validation import environment_from_dict  # noqa: E402
from tests.support import podman as pm  # noqa: E402

UID = GID = 1000
CODE = "1+1"
LABEL = "org.jupyter.tfenv.bench"


def start_of(kernel_id: str, ports: m.KernelPorts | None = None) -> m.KernelStart:
    env = environment_from_dict({"id": "tf220", "image": pm.TF_IMAGE, "tensorflow": "2.20.0"})
    return m.KernelStart(
        env=env,
        username="bench",
        uid=UID,
        gid=GID,
        kernel_id=kernel_id,
        namespace="bench",
        ports=ports or m.KernelPorts(),
    )


def free_ports() -> m.KernelPorts:
    """Five free host ports: on the host network the fixed pod ports may be taken."""
    socks = [socket.socket() for _ in range(5)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        ports = [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    return m.KernelPorts(*ports)


def first_reply(info: dict[str, Any], timeout: float) -> None:
    """Send ``1+1`` at once and wait for its execute_reply."""
    client = BlockingKernelClient()
    client.load_connection_info(cast(Any, info))
    client.start_channels()
    try:
        msg_id = client.execute(CODE)
        deadline = time.monotonic() + timeout
        while True:
            reply = client.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            if reply["parent_header"].get("msg_id") == msg_id:
                if reply["content"]["status"] != "ok":
                    raise RuntimeError(f"execute failed: {reply['content']}")
                return
    finally:
        client.stop_channels()


def podman_sample(session: pm.PodmanSession, timeout: float) -> dict[str, float]:
    start = start_of(f"bench-{uuid.uuid4().hex[:12]}")
    key = secrets.token_hex(32)
    t0 = time.perf_counter()
    pod = session.play_kernel(m.kernel_objects(start, key))
    t_play = time.perf_counter()
    first_reply(m.connection_info(start, key, ip=pod.ip), timeout)
    t1 = time.perf_counter()
    session.kube_down(pod.name)
    t2 = time.perf_counter()
    return {
        "total": (t1 - t0) * 1000,
        "start_call": (t_play - t0) * 1000,
        "stop": (t2 - t1) * 1000,
    }


def docker_sample(workdir: Path, timeout: float) -> dict[str, float]:
    start = start_of(f"bench-{uuid.uuid4().hex[:12]}", free_ports())
    key = secrets.token_hex(32)
    run_dir = Path(tempfile.mkdtemp(dir=workdir))
    conn = run_dir / m.CONNECTION_FILE
    conn.write_text(json.dumps(m.connection_info(start, key)))
    conn.chmod(0o444)
    for sub in ("checkpoints", "logs"):
        (run_dir / sub).mkdir()
        os.chown(run_dir / sub, UID, GID)
    env_args = [a for e in m.kernel_env(start) for a in ("-e", f"{e['name']}={e['value']}")]
    name = f"tfenv-bench-{start.kernel_id}"
    argv = [
        "docker", "run", "-d", "--name", name, "--label", LABEL,
        "--network", "host", "--user", f"{UID}:{GID}",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{conn}:{m.CONNECTION_PATH}:ro",
        "-v", f"{run_dir / 'checkpoints'}:/tfenv/checkpoints",
        "-v", f"{run_dir / 'logs'}:/tfenv/logs",
        *env_args, start.env.image, *m.kernel_command(start),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, text=True)
    t_run = time.perf_counter()
    try:
        first_reply(m.connection_info(start, key, ip="127.0.0.1"), timeout)
        t1 = time.perf_counter()
    finally:
        subprocess.run(["docker", "rm", "-f", name], check=True, capture_output=True)
    t2 = time.perf_counter()
    return {"total": (t1 - t0) * 1000, "start_call": (t_run - t0) * 1000, "stop": (t2 - t1) * 1000}


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="measured starts per path")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per kernel")
    parser.add_argument("--json", type=Path, help="write every sample as JSON")
    args = parser.parse_args(argv)
    # A SIGTERM (timeout, kill) still runs the clean-up of pods, volumes and containers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reason = pm.unusable_reason()
    if reason is not None:
        print(f"podman cannot run pods here: {reason}", file=sys.stderr)
        return 2
    print(f"machine: nproc {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    print(f"podman {run_cmd(['podman', '--version'])}; docker {run_cmd(['docker', '--version'])}")
    print(f"podman runtime: {pm.podman('info', '--format', '{{.Host.OCIRuntime.Name}}').stdout}")
    pm.ensure_image()
    samples: dict[str, list[dict[str, float]]] = {"podman": [], "docker": []}
    with tempfile.TemporaryDirectory(prefix="tfenv-bench-") as tmp:
        workdir = Path(tmp)
        with pm.podman_session(workdir) as session:
            runners = {
                "podman": lambda: podman_sample(session, args.timeout),
                "docker": lambda: docker_sample(workdir, args.timeout),
            }
            for run in runners.values():  # warm-up (the claim, page cache), uncounted
                run()
            for i in range(args.runs):
                order = ["podman", "docker"] if i % 2 == 0 else ["docker", "podman"]
                for name in order:
                    samples[name].append(runners[name]())
    left = run_cmd(["docker", "ps", "-aq", "--filter", f"label={LABEL}"])
    print()
    print(f"{'path':<8} {'n':>3} {'p50':>9} {'p90':>9}   start->first execute_reply (ms)")
    stats = {}
    for name, rows in samples.items():
        st = summary([r["total"] for r in rows])
        call = summary([r["start_call"] for r in rows])
        stop = summary([r["stop"] for r in rows])
        stats[name] = {"total": st, "start_call": call, "stop": stop}
        print(
            f"{name:<8} {st['n']:>3} {fmt(st['p50'])} {fmt(st['p90'])}"
            f"   (start call p50 {fmt(call['p50']).strip()}, stop p50 {fmt(stop['p50']).strip()})"
        )
    ratio50 = stats["podman"]["total"]["p50"] / stats["docker"]["total"]["p50"]
    ratio90 = stats["podman"]["total"]["p90"] / stats["docker"]["total"]["p90"]
    print(f"\nratio podman/docker: p50 {ratio50:.2f}, p90 {ratio90:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"samples": samples, "stats": stats}, indent=1))
    if left:
        print(f"LEFT BEHIND: docker containers {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
