#!/usr/bin/env python3
"""TensorBoard click-to-first-page: cold (a new container) and reused, as a ratio.

Starts a real ``jupyter_server`` with the tfenv extension in a subprocess on 127.0.0.1 (a
temporary catalog of ``tfenv-test/tensorflow:2.20.0-jupyter``), then, per round:

- **cold**: ``POST /tfenv/tensorboards {"environment": "bench-tf220"}`` (202) and
  ``GET <url>`` until it answers 200 with TensorBoard's index page (what the JupyterLab
  tab does after a click: the POST, then the page; the page answers once the container's
  TensorBoard runs);
- **reused**: the same POST again (200, the running one) and the page;
- then ``DELETE`` (the next round is cold again).

Reused is printed as a ratio against the cold start of the same run. Nothing here asserts
on timings: the exit status is non-zero only when a request failed or a TensorBoard
container of the run was left behind.

Usage::

    python3 benchmarks/tensorboard_open.py [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.support.server_process import start_tfenv_server  # noqa: E402

IMAGE = "tfenv-test/tensorflow:2.20.0-jupyter"
OWNER = "tfenv-bench-tensorboard"
TOKEN = "tfenv-bench-tensorboard-token"  # a throwaway token of a loopback server
LABEL = "org.jupyter.tfenv.tensorboard"


def open_to_first_page(server: Any, timeout: float) -> tuple[float, int]:
    """Seconds from the POST to TensorBoard's page answering 200, and the POST's status."""
    started = time.perf_counter()
    answer = server.request("POST", "/tfenv/tensorboards", json={"environment": "bench-tf220"})
    if answer.status_code not in (200, 202):
        raise RuntimeError(f"POST: {answer.status_code} {answer.text}")
    page_path = answer.json()["url"]
    deadline = started + timeout
    while time.perf_counter() < deadline:
        page = server.request("GET", page_path, timeout=60)
        if page.status_code == 200 and "<title>TensorBoard</title>" in page.text:
            return time.perf_counter() - started, answer.status_code
        time.sleep(0.05)
    raise RuntimeError(f"no TensorBoard page within {timeout:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="cold + reused opens (default 3)")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--uid", type=int, default=1000 if os.geteuid() == 0 else os.getuid())
    parser.add_argument("--json", help="write the samples as JSON")
    args = parser.parse_args(argv)
    client = docker.from_env()
    client.images.get(IMAGE)  # never pulled here
    work = Path(tempfile.mkdtemp(prefix="tfenv-bench-tb-"))
    runtime_root = tempfile.mkdtemp(prefix="tbb-", dir="/tmp")  # short: socket paths
    catalog = work / "catalog.yaml"
    catalog.write_text(
        yaml.safe_dump({"version": 1, "environments": [{"id": "bench-tf220", "image": IMAGE}]})
    )
    notebooks = work / "notebooks"
    notebooks.mkdir()
    if os.geteuid() == 0:
        os.chown(notebooks, args.uid, args.uid)
    server = start_tfenv_server(
        work / "server",
        token=TOKEN,
        catalog=catalog,
        root_dir=notebooks,
        kernel_uid=args.uid,
        kernel_gid=args.uid,
        owner=OWNER,
        runtime_root=runtime_root,
    )
    cold: list[float] = []
    reused: list[float] = []
    failed = False
    left: list[Any] = []
    try:
        for _ in range(args.rounds):
            seconds, status = open_to_first_page(server, args.timeout)
            if status != 202:
                raise RuntimeError(f"a cold open answered {status}, not 202")
            cold.append(seconds)
            seconds, status = open_to_first_page(server, args.timeout)
            if status != 200:
                raise RuntimeError(f"a reused open answered {status}, not 200")
            reused.append(seconds)
            server.request("DELETE", "/tfenv/tensorboards/env-bench-tf220")
    except Exception as err:
        failed = True
        print(f"FAILED: {err}\n{server.log_tail()}", file=sys.stderr)
    finally:
        server.stop()
        left = client.containers.list(
            all=True, filters={"label": [LABEL, f"org.jupyter.tfenv.owner={OWNER}"]}
        )
        for container in left:
            container.remove(force=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(runtime_root, ignore_errors=True)
    if cold and reused:
        c, r = stats(cold), stats(reused)
        print(
            f"TensorBoard click-to-first-page, {IMAGE}, {len(cold)} round(s), "
            f"nproc {os.cpu_count()}"
        )
        for label, s in (("cold   (new container)", c), ("reused (running one)  ", r)):
            ms = {k: fmt(v * 1000) for k, v in s.items() if k != "n"}
            print(f"  {label}: p50 {ms['p50']} ms  min {ms['min']} ms  max {ms['max']} ms")
        print(f"  reused / cold (p50):    {r['p50'] / c['p50']:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cold": cold, "reused": reused}, indent=2))
    if left:
        print(f"LEFT BEHIND: {[c.name for c in left]}", file=sys.stderr)
    return 1 if failed or left else 0


if __name__ == "__main__":
    sys.exit(main())
