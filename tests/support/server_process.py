"""A jupyter_server with the tfenv extension in a subprocess on 127.0.0.1.

For the tests and benchmarks that need a server of its own (not pytest-jupyter's
in-process one): the schemathesis run (tests/server/test_openapi.py) and the API latency
benchmark. The server gets its own HOME and Jupyter folders, none of the caller's
``JUPYTER*``/``JPY_*``/``JUPYTERHUB_*`` variables, a token, and answers on a free port.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log."""


@dataclass
class ServerProcess:
    """A running ``python -m jupyter_server``; :meth:`stop` ends it."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    token: str
    request_timeout: float = 300.0
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.headers["Authorization"] = f"token {self.token}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.request_timeout)
        return self.session.request(method, self.url + path, **kwargs)

    def start_session(self, path: str, kernel_name: str) -> dict[str, Any]:
        """POST /api/sessions for a notebook at ``path`` (as JupyterLab opens one): the
        session model, whose kernel has started."""
        answer = self.request(
            "POST",
            "/api/sessions",
            json={"path": path, "type": "notebook", "kernel": {"name": kernel_name}},
        )
        if answer.status_code != 201:
            raise ServerStartError(
                f"{self.name}: session {path}: {answer.status_code} {answer.text}"
            )
        model: dict[str, Any] = answer.json()
        return model

    def exit_code(self, timeout: float = 60.0) -> int:
        """The exit code once the process ends; a process that has not ended after
        ``timeout`` seconds gets SIGABRT, whose Python traceback of every thread
        (PYTHONFAULTHANDLER) ends the AssertionError's log tail: where it hangs."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
            raise AssertionError(
                f"{self.name} did not exit {timeout:g} s after its signal; its threads:\n"
                + self.log_tail(12000)
            ) from None

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (the server shuts its kernels down), SIGKILL after ``timeout``."""
        self.session.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
                return None
        return self.proc.returncode


def start_tfenv_server(
    folder: Path,
    *,
    token: str,
    catalog: Path,
    root_dir: Path,
    kernel_uid: int,
    kernel_gid: int,
    owner: str,
    runtime_root: str,
    name: str = "server",
    extra_env: dict[str, str] | None = None,
    request_timeout: float = 300.0,
    start_timeout: float = 60.0,
    server_class: type[ServerProcess] = ServerProcess,
    extra_args: list[str] | None = None,
    reap_orphans: bool = False,
) -> ServerProcess:
    """Start the server with its state under ``folder`` (created); wait for /api/status.

    Orphan reaping at start is off unless ``reap_orphans`` (the caller owns what it
    starts); ``extra_args`` are more server options; kernels run as
    ``kernel_uid:kernel_gid`` with the container ``owner`` label. Raises
    :class:`ServerStartError`.
    """
    dirs = {key: folder / key for key in ("home", "config", "data", "runtime", "probes")}
    for path in dirs.values():
        path.mkdir(parents=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTER", "JPY_", "JUPYTERHUB_"))
    }
    env.update(
        HOME=str(dirs["home"]),
        JUPYTER_CONFIG_DIR=str(dirs["config"]),
        JUPYTER_DATA_DIR=str(dirs["data"]),
        JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_PLATFORM_DIRS="1",
        JUPYTER_TFENV_CATALOG=str(catalog),
        JUPYTER_TFENV_KERNEL_UID=str(kernel_uid),
        JUPYTER_TFENV_KERNEL_GID=str(kernel_gid),
        PYTHONFAULTHANDLER="1",  # SIGABRT prints every thread's traceback (exit_code)
    )
    env.update(extra_env or {})  # may replace the folders above (a shared runtime folder)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        '--ServerApp.jpserver_extensions={"jupyter_tfenv": True}',
        f"--TFEnvApp.probe_cache_dir={dirs['probes']}",
        f"--TFEnvApp.reap_orphans_on_start={reap_orphans}",
        f"--DockerKernelProvisioner.owner={owner}",
        f"--DockerKernelProvisioner.runtime_root={runtime_root}",
    ]
    if os.geteuid() == 0:
        argv.append("--allow-root")
    argv += extra_args or []
    log_path = folder / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    server = server_class(name, proc, f"http://127.0.0.1:{port}", log_path, token, request_timeout)
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(
                f"{name}: the server exited ({proc.returncode}):\n{server.log_tail()}"
            )
        with contextlib.suppress(requests.RequestException):
            if server.request("GET", "/api/status", timeout=2).status_code == 200:
                return server
        time.sleep(0.2)
    server.stop()
    raise ServerStartError(
        f"{name}: no answer on /api/status within {start_timeout:.0f} s:\n{server.log_tail()}"
    )
