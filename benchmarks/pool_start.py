#!/usr/bin/env python3
"""Kernel start with the warm pool, as JupyterLab starts a notebook's kernel.

One real ``jupyter_server`` (tests/support/server_process.py) with four kernels to start, in the
same run, interleaved round by round:

- ``local``: the server's own ``python3`` ipykernel (the baseline);
- ``cold``: a tfenv kernel of ``tfenv-test/tensorflow:2.20.0-jupyter`` (no pool);
- ``pooled``: the same image with ``pool_size: 2`` (a container started ahead);
- ``pooled+tf``: the same with ``preimport: true`` (TensorFlow imported ahead).

Each start is ``POST /api/sessions`` (the kernel starts), then the kernel websocket and
an ``execute_request``, as JupyterLab does: time to the first ``execute_reply`` of
``1+1``, and then of ``import tensorflow as tf`` (tfenv variants). Before each pooled
start the benchmark waits until the pool is full again (a pool's point is the start that
finds it ready). Nothing is asserted on timings; exit 1 only when a start failed or a
container was left behind.

Usage::

    .venv/bin/python benchmarks/pool_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker
import yaml
from benchstats import fmt, stats  # benchmarks/ is sys.path[0]

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from kernel_ws import execute  # noqa: E402

from tests.support.server_process import start_tfenv_server  # noqa: E402

TF_IMAGE = "tfenv-test/tensorflow:2.20.0-jupyter"
OWNER = "tfenv-bench-pool"
TOKEN = "tfenv-bench-pool-token"  # a throwaway token of a loopback server
POOL_LABEL = "org.jupyter.tfenv.pool"
KERNEL_UID = KERNEL_GID = 1000
CATALOG = [
    {"id": "cold", "image": TF_IMAGE, "tensorflow": "2.20.0"},
    {"id": "pooled", "image": TF_IMAGE, "tensorflow": "2.20.0", "pool_size": 2},
    {
        "id": "pooledtf",
        "image": TF_IMAGE,
        "tensorflow": "2.20.0",
        "pool_size": 2,
        "preimport": True,
    },
]
VARIANTS = [
    ("local", "python3"),
    ("cold", "tfenv-cold"),
    ("pooled", "tfenv-pooled"),
    ("pooled+tf", "tfenv-pooledtf"),
]


def pool_full(client: docker.DockerClient, env_id: str, size: int, taken: set[str]) -> bool:
    found = client.containers.list(
        filters={
            "label": [POOL_LABEL, f"org.jupyter.tfenv.environment={env_id}"],
            "status": "running",
        }
    )
    return len([c for c in found if c.id not in taken]) >= size


def one_start(server: Any, kernel: str, path: str, *, tf: bool) -> dict[str, float]:
    started = time.monotonic()
    session = server.start_session(path, kernel)
    url = server.url.replace("http", "ws", 1) + f"/api/kernels/{session['kernel']['id']}/channels"
    first = execute(url, TOKEN, "1+1", timeout=300)
    if not first.ok:
        raise RuntimeError(f"{kernel}: 1+1 failed: {first}")
    sample = {"first_reply": time.monotonic() - started}
    if tf:
        t0 = time.monotonic()
        result = execute(url, TOKEN, "import tensorflow as tf", timeout=300)
        if not result.ok:
            raise RuntimeError(f"{kernel}: import tensorflow failed: {result}")
        sample["import_tf"] = time.monotonic() - t0
    server.request("DELETE", f"/api/sessions/{session['id']}")
    server.request("DELETE", f"/api/kernels/{session['kernel']['id']}")
    return sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="measured starts per variant")
    args = parser.parse_args(argv)
    client = docker.from_env()
    base = Path(tempfile.mkdtemp(prefix="tfenv-bench-pool-"))
    runtime_root = tempfile.mkdtemp(prefix="tfbp-", dir="/tmp")
    os.chmod(runtime_root, 0o711)
    notebooks = base / "notebooks"
    notebooks.mkdir()
    os.chown(notebooks, KERNEL_UID, KERNEL_GID)
    catalog = base / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
    server = start_tfenv_server(
        base / "server",
        token=TOKEN,
        catalog=catalog,
        root_dir=notebooks,
        kernel_uid=KERNEL_UID,
        kernel_gid=KERNEL_GID,
        owner=OWNER,
        runtime_root=runtime_root,
    )
    samples: dict[str, list[dict[str, float]]] = {name: [] for name, _ in VARIANTS}
    failed = False
    try:
        for rnd in range(args.runs + 1):  # round 0: warm-up, not counted
            order = VARIANTS[rnd % len(VARIANTS) :] + VARIANTS[: rnd % len(VARIANTS)]
            for name, kernel in order:
                env_id = kernel.removeprefix("tfenv-")
                if name.startswith("pooled"):
                    deadline = time.monotonic() + 600
                    while not pool_full(client, env_id, 2, set()):
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"the pool of {env_id} did not fill")
                        time.sleep(0.2)
                sample = one_start(server, kernel, f"{name}-{rnd}.ipynb", tf=name != "local")
                if rnd:
                    samples[name].append(sample)
                print(
                    f"round {rnd} {name:10s} first reply {sample['first_reply'] * 1000:8.1f} ms"
                    + (
                        f"  import tf {sample['import_tf'] * 1000:8.1f} ms"
                        if "import_tf" in sample
                        else ""
                    ),
                    flush=True,
                )
    except Exception as err:
        print(f"FAILED: {err}", file=sys.stderr)
        failed = True
    finally:
        server.stop()
        left = client.containers.list(
            all=True, filters={"label": f"org.jupyter.tfenv.owner={OWNER}"}
        )
        for container in left:
            container.remove(force=True)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(runtime_root, ignore_errors=True)
        if left:
            print(f"FAILED: {len(left)} container(s) left behind", file=sys.stderr)
            failed = True

    base_p50 = stats([s["first_reply"] for s in samples["local"]]).get("p50")
    print()
    header = ("n", "p50 ms", "p95 ms", "vs local", "import tf p50 ms")
    print(f"{'variant':12s} {header[0]:>3s} " + " ".join(f"{h:>9s}" for h in header[1:4]), end="")
    print(f" {header[4]:>17s}")
    for name, _ in VARIANTS:
        first = stats([s["first_reply"] for s in samples[name]])
        imp = stats([s["import_tf"] for s in samples[name] if "import_tf" in s])
        ratio = first.get("p50", float("nan")) / base_p50 if base_p50 else float("nan")
        print(
            f"{name:12s} {first.get('n', 0):3d} {fmt(first.get('p50', float('nan')) * 1000, 9)} "
            f"{fmt(first.get('p95', float('nan')) * 1000, 9)} {fmt(ratio, 9, 2)} "
            f"{fmt(imp.get('p50', float('nan')) * 1000 if imp.get('n') else None, 17)}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
