#!/usr/bin/env python3
"""The demo's end-to-end check, as a user would do it, through a running JupyterLab.

Run by ``scripts/demo.sh --check`` against the JupyterLab it started:

1. waits until the server answers (``GET /api/status``) while its process lives;
2. the demo catalog's kernel is in ``GET /api/kernelspecs``;
3. starts that kernel (``POST /api/kernels``), runs ``import tensorflow as tf`` over the
   kernel websocket and checks that ``tf.__version__`` is the pinned version and the
   kernel is not root;
4. ``GET /tfenv/kernels/<id>``: the kernel runs in a running container of the catalog's
   image;
5. makes a folder as the file browser's New Folder does (``POST /api/contents``, then a
   rename) and has the kernel write a file into it;
6. with ``--cold KERNEL``: starts that kernel (no warm pool) and checks that its first
   ``import tensorflow`` writes nothing to stderr (the catalog's TF_CPP_MIN_LOG_LEVEL);
7. shuts the kernels down, then the server (``POST /api/shutdown``).

Exit 0 when every step passed; otherwise 1 with what failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_ws import execute

T0 = time.monotonic()


class CheckFailed(RuntimeError):
    pass


def say(text: str) -> None:
    print(f"[demo-check] {time.monotonic() - T0:6.1f} s  {text}", flush=True)


def request(base: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=300) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        with contextlib.suppress(ValueError):
            detail = json.loads(detail).get("message", detail)
        raise CheckFailed(f"{method} {path}: HTTP {err.code}: {detail}") from err
    return json.loads(raw) if raw else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_server(base: str, token: str, pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            raise CheckFailed(f"JupyterLab (pid {pid}) exited before it answered")
        try:
            request(base, token, "GET", "/api/status")
        except (CheckFailed, OSError):
            time.sleep(0.5)
            continue
        return
    raise CheckFailed(f"JupyterLab did not answer at {base} within {timeout:.0f} s")


def check(args: argparse.Namespace) -> None:
    base = args.url.rstrip("/")
    token = os.environ["JUPYTER_TOKEN"]
    wait_for_server(base, token, args.pid, args.start_timeout)
    say(f"JupyterLab answers at {base}")

    specs = request(base, token, "GET", "/api/kernelspecs")["kernelspecs"]
    if args.kernel not in specs:
        raise CheckFailed(f"kernel {args.kernel} is not offered; kernelspecs: {sorted(specs)}")
    spec = specs[args.kernel]["spec"]
    tfenv = spec.get("metadata", {}).get("tfenv", {})
    say(f"kernel picker offers {args.kernel}: {spec['display_name']!r} ({tfenv.get('image')})")

    kernel = request(base, token, "POST", "/api/kernels", {"name": args.kernel})
    kid = kernel["id"]
    try:
        say(f"kernel {kid} started")
        ws = f"{base.replace('http', 'ws', 1)}/api/kernels/{kid}/channels"
        result = execute(
            ws,
            token,
            "import os, tensorflow as tf\nprint(tf.__version__, os.getuid())",
            timeout=args.exec_timeout,
        )
        if not result.ok:
            raise CheckFailed(f"import tensorflow failed in the kernel:\n{result}")
        version, _, uid = result.stdout.strip().partition(" ")
        say(f"tf.__version__ = {version} (kernel uid {uid})")
        if version != args.expect:
            raise CheckFailed(f"tf.__version__ is {version!r}, the catalog pins {args.expect!r}")
        if uid == "0":
            raise CheckFailed("the kernel runs as root")

        status = request(base, token, "GET", f"/tfenv/kernels/{kid}")
        live = status.get("live") or {}
        say(
            f"container {str(status.get('container_id'))[:12]} ({live.get('status')}) runs "
            f"{live.get('image_ref')}, image {str(live.get('image_id'))[:19]}"
        )
        if not live.get("running"):
            raise CheckFailed(f"the kernel's container is not running: {live}")
        if live.get("image_ref") != tfenv.get("image"):
            ref, pinned = live.get("image_ref"), tfenv.get("image")
            raise CheckFailed(f"the kernel runs {ref!r}, not the catalog's {pinned!r}")

        # New Folder in the file browser, then a file from the kernel into it.
        made = request(base, token, "POST", "/api/contents", {"type": "directory"})
        folder = f"data-{kid[:8]}"
        path = urllib.parse.quote(made["path"])
        request(base, token, "PATCH", f"/api/contents/{path}", {"path": folder})
        result = execute(
            ws,
            token,
            f"import os\nopen({folder + '/out.csv'!r}, 'w').write('x,y\\n')\n"
            f"print(os.stat({folder!r}).st_uid, os.stat({folder + '/out.csv'!r}).st_uid)",
            timeout=args.exec_timeout,
        )
        if not result.ok:
            raise CheckFailed(
                f"the kernel cannot write into a folder made in the file browser:\n{result}"
            )
        owners = result.stdout.split()
        say(f"kernel wrote {folder}/out.csv into a new folder of the file browser (uids {owners})")
    finally:
        request(base, token, "DELETE", f"/api/kernels/{kid}")
        say(f"kernel {kid} shut down")
    if args.cold:
        cold_import(base, token, args)
    request(base, token, "POST", "/api/shutdown")
    say("JupyterLab asked to shut down")


def cold_import(base: str, token: str, args: argparse.Namespace) -> None:
    """The first ``import tensorflow`` of a cold kernel: its output, no stderr block."""
    kid = request(base, token, "POST", "/api/kernels", {"name": args.cold})["id"]
    try:
        ws = f"{base.replace('http', 'ws', 1)}/api/kernels/{kid}/channels"
        code = "import tensorflow as tf\nprint(tf.__version__)"
        result = execute(ws, token, code, timeout=args.exec_timeout)
        if not result.ok:
            raise CheckFailed(f"import tensorflow failed in {args.cold}:\n{result}")
        version = result.stdout.strip()
        say(f"{args.cold} (cold): import tensorflow -> {version}, stderr {result.stderr!r}")
        if result.stderr.strip():
            raise CheckFailed(
                f"the first import tensorflow in {args.cold} wrote to stderr (a pink block "
                f"in the notebook): {result.stderr!r}"
            )
    finally:
        request(base, token, "DELETE", f"/api/kernels/{kid}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", required=True, help="JupyterLab's base URL")
    parser.add_argument("--pid", type=int, required=True, help="JupyterLab's process id")
    parser.add_argument("--kernel", required=True, help="kernelspec name, e.g. tfenv-tf-2.20-cpu")
    parser.add_argument("--expect", required=True, help="the pinned TensorFlow version")
    parser.add_argument("--cold", help="a kernelspec without warm pool: first import, no stderr")
    parser.add_argument("--start-timeout", type=float, default=120)
    parser.add_argument("--exec-timeout", type=float, default=300)
    args = parser.parse_args()
    try:
        check(args)
    except (CheckFailed, TimeoutError, ConnectionError, OSError) as err:
        print(f"[demo-check] FAILED: {err}", file=sys.stderr, flush=True)
        return 1
    say("passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
