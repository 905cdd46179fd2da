"""A real JupyterLab for the browser tests, started as a subprocess.

``start_lab`` runs ``python -m jupyterlab`` on a free loopback port with a token, in
isolated Jupyter config/data/runtime folders and HOME (so no user setting or workspace
leaks in), but with this Python's ``share/jupyter`` left in the search path, so that the
built ``jupyter-tfenv`` labextension loads as it does for a user. The server runs the
``jupyter_tfenv`` server extension with a catalog file of the test images; its kernels run
as uid 1000 in containers labelled with the server's pid.

``LabServer.stop`` shuts the server down through its REST API (which shuts its kernels
down), falls back to signals, and removes — and reports — any container of its pid left
behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml

KERNEL_UID = 1000
KERNEL_GID = 1000
OWNER = "tfenv-pytest-ui"
SERVER_PID_LABEL = "org.jupyter.tfenv.server-pid"
OWNER_LABEL = "org.jupyter.tfenv.owner"

PY_IMAGE = "tfenv-test/python:3.11-jupyter"
TF220 = "tfenv-test/tensorflow:2.20.0-jupyter"
TF219 = "tfenv-test/tensorflow:2.19.0-jupyter"
MISSING_IMAGE = "tfenv-test/not-built:9.9.9"

#: TensorFlow's C++ start-up notes (oneDNN, CPU features) would fill the cell's stderr.
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2"}

#: User settings of every test server: no "get notified about Jupyter news?" toast.
USER_SETTINGS: dict[str, dict[str, Any]] = {
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}

#: The environments of the browser tests (``network: none`` by default).
UI_CATALOG: list[dict[str, Any]] = [
    {"id": "tf220", "image": TF220, "tensorflow": "2.20.0", "env": QUIET_TF},
    {"id": "tf219", "image": TF219, "tensorflow": "2.19.0", "env": QUIET_TF},
    {"id": "gpu", "image": PY_IMAGE, "gpus": "all", "display_name": "Python 3.11 (all GPUs)"},
    {"id": "missing", "image": MISSING_IMAGE, "tensorflow": "9.9.9"},
]

#: Chromium flags for headless runs on a build machine (no sandbox: we run as root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_executable() -> str | None:
    """Debian's Chromium (``$TFENV_CHROMIUM`` overrides); None when not installed."""
    explicit = os.environ.get("TFENV_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


def kernel_user_can_run(python: str = sys.executable) -> bool:
    """Whether the kernels' uid can run ``python`` with JupyterLab (not when its
    interpreter lives in a folder only root can read, such as pyenv's under /root)."""
    try:
        result = subprocess.run(
            [python, "-c", "import jupyterlab, jupyter_tfenv"],
            user=KERNEL_UID,
            group=KERNEL_GID,
            capture_output=True,
            timeout=60,
            check=False,
            cwd="/",
        )
    except OSError:
        return False
    return result.returncode == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LabServer:
    url: str  # http://127.0.0.1:PORT/ (base URL, with the trailing slash)
    token: str
    proc: subprocess.Popen[bytes]
    base: Path  # everything of this server: config, data, runtime, home, log
    root_dir: Path
    catalog_path: Path
    runtime_root: Path
    log_path: Path
    environments: list[dict[str, Any]] = field(default_factory=list)
    #: Starts the server process again as it was started (same port, token, folders).
    launch: Any = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def lab_url(self, workspace: str | None = None, *, reset: bool = True) -> str:
        path = f"lab/workspaces/{workspace}" if workspace else "lab"
        query = f"?reset&token={self.token}" if reset else f"?token={self.token}"
        return f"{self.url}{path}{query}"

    def api(self, method: str, path: str, body: Any = None, timeout: float = 120) -> Any:
        """Call the server's REST API with the token; return the decoded JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path.lstrip('/')}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw.strip() else None

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def write_catalog(self, environments: list[dict[str, Any]]) -> None:
        """Rewrite the catalog file (the server re-reads it when it changes)."""
        self.environments = list(environments)
        tmp = self.catalog_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump({"version": 1, "environments": self.environments}))
        tmp.replace(self.catalog_path)

    def shutdown_kernels(self) -> None:
        """Shut every session and kernel down (their containers go with them)."""
        with contextlib.suppress(OSError, urllib.error.URLError):
            for session in self.api("GET", "api/sessions") or []:
                with contextlib.suppress(OSError, urllib.error.URLError):
                    self.api("DELETE", f"api/sessions/{session['id']}")
            for kernel in self.api("GET", "api/kernels") or []:
                with contextlib.suppress(OSError, urllib.error.URLError):
                    self.api("DELETE", f"api/kernels/{kernel['id']}")

    def containers(self, client: docker.DockerClient) -> list[Any]:
        """Every container (running or not) labelled with this server's pid."""
        return [
            c
            for c in client.containers.list(
                all=True, filters={"label": f"{SERVER_PID_LABEL}={self.pid}"}
            )
            if (c.labels or {}).get(OWNER_LABEL) == OWNER
        ]

    def wait_ready(self, timeout: float) -> None:
        """Until the server answers /api/status; RuntimeError when it exits or never does."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with {self.proc.returncode} at start:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "api/status", timeout=5)
                return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(10)
                raise RuntimeError(f"JupyterLab did not answer in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def restart(self, timeout: float = 120) -> None:
        """Stop the server as JupyterHub's local spawner does (SIGINT without a tty; SIGTERM,
        then SIGKILL when it has not exited) and start it again on the same port, token and
        folders: an open JupyterLab page reconnects to it.

        The escalation is JupyterHub's own (a kept kernel outlives a SIGKILL as well). A
        server that ignores SIGINT (started from a shell's background job) only stops at
        the SIGTERM: tests/conftest.py starts every server with SIGINT at its default."""
        for how, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 30)):
            self.proc.send_signal(how)
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                print(f"[ui] JupyterLab did not exit {wait} s after signal {how}")
        self.proc = self.launch()
        self.wait_ready(timeout)

    def stop(self, client: docker.DockerClient) -> list[str]:
        """Stop the server; return the names of containers it left (they are removed)."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, urllib.error.URLError):
                self.api("POST", "api/shutdown", timeout=30)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        left = self.containers(client)
        for container in left:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        shutil.rmtree(self.runtime_root, ignore_errors=True)
        return [c.name for c in left]


def start_lab(
    base: Path,
    environments: list[dict[str, Any]],
    *,
    python: str = sys.executable,
    extra_args: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
    settings: dict[str, dict[str, Any]] | None = None,
    timeout: float = 120,
    as_kernel_user: bool = False,
    shared_folder: bool = False,
) -> LabServer:
    """Start JupyterLab (a subprocess of ``python``) and wait until its API answers.

    ``as_kernel_user``: the server runs as the kernels' uid and gid (as ``scripts/demo.sh``
    runs it), with the Docker socket's group; otherwise as this process's user (root).
    ``shared_folder``: the notebook folder is the kernels' group's, setgid, and the server's
    umask 002 (the demo's way when its user cannot run this Python).
    """
    base.mkdir(parents=True, exist_ok=True)
    dirs = {name: base / name for name in ("config", "data", "runtime", "home", "ipython")}
    for path in dirs.values():
        path.mkdir(exist_ok=True)
    root_dir = base / "notebooks"
    root_dir.mkdir(exist_ok=True)
    os.chown(root_dir, KERNEL_UID, KERNEL_GID)
    # Short: Unix socket paths must stay under 107 bytes.
    runtime_root = Path(tempfile.mkdtemp(prefix="tfui-", dir="/tmp"))
    settings_dir = dirs["config"] / "lab" / "user-settings"
    for plugin, values in {**USER_SETTINGS, **(settings or {})}.items():
        package, name = plugin.split(":", 1)
        target = settings_dir / package / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values, indent=1))
    catalog_path = base / "catalog.yaml"
    catalog_path.write_text(yaml.safe_dump({"version": 1, "environments": environments}))

    config = {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_tfenv": True},
            "open_browser": False,
        },
        "DockerKernelProvisioner": {
            "owner": OWNER,
            "runtime_root": str(runtime_root),
            "start_timeout": 90.0,
        },
        "TFEnvApp": {"reap_orphans_on_start": False},
    }
    (dirs["config"] / "jupyter_server_config.json").write_text(json.dumps(config, indent=1))

    port = free_port()
    token = secrets.token_hex(24)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JUPYTER", "JPY_", "JUPYTERHUB_"))
    }
    env.update(
        {
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "IPYTHONDIR": str(dirs["ipython"]),
            "HOME": str(dirs["home"]),
            "JUPYTER_PLATFORM_DIRS": "1",
            "JUPYTER_TFENV_CATALOG": str(catalog_path),
            "JUPYTER_TFENV_KERNEL_UID": str(KERNEL_UID),
            "JUPYTER_TFENV_KERNEL_GID": str(KERNEL_GID),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra_env or {})
    args = [
        python,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--allow-root",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.extension_manager=readonly",
        *(extra_args or []),
    ]
    log_path = base / "jupyterlab.log"
    identity: dict[str, Any] = {}
    if as_kernel_user:
        socket_path = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        socket_path = socket_path.removeprefix("unix://")
        identity = {
            "user": KERNEL_UID,
            "group": KERNEL_GID,
            "extra_groups": [os.stat(socket_path).st_gid],
        }
        # Everything of this server is its own: config, data, runtime, home, notebooks.
        os.chown(runtime_root, KERNEL_UID, KERNEL_GID)
        for folder, _, files in os.walk(base):
            for path in (folder, *(os.path.join(folder, name) for name in files)):
                os.chown(path, KERNEL_UID, KERNEL_GID)
    if shared_folder:
        os.chmod(root_dir, 0o2775)
        identity["umask"] = 0o002

    def launch() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                args,
                cwd=root_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **identity,
            )

    log_path.write_bytes(b"")
    proc = launch()
    server = LabServer(
        url=f"http://127.0.0.1:{port}/",
        token=token,
        proc=proc,
        base=base,
        root_dir=root_dir,
        catalog_path=catalog_path,
        runtime_root=runtime_root,
        log_path=log_path,
        environments=list(environments),
        launch=launch,
    )
    server.wait_ready(timeout)
    return server
