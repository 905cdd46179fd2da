"""The in-container TensorBoard bridge: a Unix socket in the runtime folder → TensorBoard.

Mounted read-only at /opt/tfenv/tensorboard_bridge.py and run by the image's own python as
``python -I /opt/tfenv/tensorboard_bridge.py --socket <path> --port 6006 -- <tensorboard
command>``. Standard library only, and Python 3.7 syntax, because it runs in images we do
not control.

The container has no network (``network_mode: none``): TensorBoard listens on the
container's own loopback, and the server reaches it through the one Unix socket this
bridge binds in the runtime folder (mounted from the host), as kernels are reached.

Order of events, which the server relies on: start TensorBoard as a child; wait until its
port accepts connections; only then bind the socket. So the socket existing means
"TensorBoard answers" (the server's readiness check, like a kernel's bound sockets). When
TensorBoard exits, the bridge exits with its code (the server reads the container's log);
SIGTERM (``docker stop``, through docker-init) stops TensorBoard first.

TensorBoard itself runs as ``python -I tensorboard_bridge.py --run-tensorboard <args>``:
TensorBoard up to 2.20 imports ``pkg_resources``, which setuptools 81 and later no longer
ship (the TF 2.20 test image has setuptools 84: plain ``tensorboard`` fails there with
"No module named 'pkg_resources'"). When that import fails, a small stand-in for the two
calls TensorBoard makes (``iter_entry_points``, ``parse_version``), on
``importlib.metadata``, is put in its place; an image that has ``pkg_resources`` uses its
own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import types
from typing import Any

#: Printed once the socket is bound (the server's log reader may look for it).
READY_MARK = "TFENV-TENSORBOARD-READY"
#: Printed when the image has no TensorBoard to run.
NO_TENSORBOARD_MARK = "TFENV-NO-TENSORBOARD"
#: Printed when TensorBoard exits before its port answers.
EXIT_MARK = "TFENV-TENSORBOARD-EXITED"
CHUNK = 65536


class _Version:
    """``pkg_resources.parse_version`` as TensorBoard uses it: compare release numbers."""

    def __init__(self, text: str) -> None:
        parts = []
        for piece in str(text).split("+")[0].split("."):
            digits = ""
            for char in piece:
                if not char.isdigit():
                    break
                digits += char
            if not digits:
                break
            parts.append(int(digits))
        self.key = tuple(parts)

    def __lt__(self, other: _Version) -> bool:
        return self.key < other.key

    def __le__(self, other: _Version) -> bool:
        return self.key <= other.key

    def __gt__(self, other: _Version) -> bool:
        return self.key > other.key

    def __ge__(self, other: _Version) -> bool:
        return self.key >= other.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Version) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)


class _EntryPoint:
    def __init__(self, entry: Any) -> None:
        self._entry = entry
        self.name = entry.name

    def resolve(self) -> object:
        return self._entry.load()

    load = resolve


def _iter_entry_points(group: str, name: str | None = None) -> list[_EntryPoint]:
    # Python 3.8+ (older images have pkg_resources, so this is never reached there).
    metadata = importlib.import_module("importlib.metadata")
    found = metadata.entry_points()
    if hasattr(found, "select"):
        entries = list(found.select(group=group))
    else:
        entries = list(found.get(group, []))
    return [_EntryPoint(e) for e in entries if name is None or e.name == name]


def _ensure_pkg_resources() -> None:
    try:
        importlib.import_module("pkg_resources")
    except ImportError:
        stand_in = types.ModuleType("pkg_resources")
        setattr(stand_in, "iter_entry_points", _iter_entry_points)  # noqa: B010
        setattr(stand_in, "parse_version", _Version)  # noqa: B010
        sys.modules["pkg_resources"] = stand_in


def run_tensorboard(argv: list[str]) -> int:
    """TensorBoard's own ``main`` in this process, with ``pkg_resources`` made sure of."""
    _ensure_pkg_resources()
    try:
        tensorboard_main = importlib.import_module("tensorboard.main")
    except ImportError as err:
        print(f"{NO_TENSORBOARD_MARK} error={err}", file=sys.stderr, flush=True)
        return 3
    sys.argv = ["tensorboard", *argv]
    tensorboard_main.run_main()
    return 0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tensorboard_bridge")
    parser.add_argument("--socket", required=True, help="Unix socket to bind")
    parser.add_argument("--port", type=int, default=6006, help="TensorBoard's loopback port")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- tensorboard command")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("no TensorBoard command after --")
    return args


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(child: subprocess.Popen, port: int, timeout: float) -> int | None:
    """None once ``port`` accepts; the child's exit code if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = child.poll()
        if code is not None:
            return code
        if _port_open(port):
            return None
        time.sleep(0.2)
    child.terminate()
    return child.wait()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _forward(
    port: int, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(
            _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer)
        )
    finally:
        upstream_writer.close()
        client_writer.close()


async def _serve(path: str, port: int, child: subprocess.Popen) -> int:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a previous run's socket (a restarted container)
    old = os.umask(0o077)  # the socket file: the runtime folder's owner only
    try:
        server = await asyncio.start_unix_server(
            lambda r, w: _forward(port, r, w), path=path, limit=CHUNK
        )
    finally:
        os.umask(old)
    print(READY_MARK, flush=True)
    loop = asyncio.get_event_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    while not stop.is_set() and child.poll() is None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    server.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    if child.poll() is None:
        child.terminate()
        try:
            return child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()
    return child.returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run-tensorboard"]:
        return run_tensorboard(argv[1:])
    args = _parse(argv)
    child = subprocess.Popen(args.command)
    # Until the socket is bound, SIGTERM stops the child too (docker stop while starting).
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    code = wait_for_port(child, args.port, args.start_timeout)
    if code is not None:
        print(f"{EXIT_MARK} code={code}", file=sys.stderr, flush=True)
        return code or 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(args.socket, args.port, child))
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
