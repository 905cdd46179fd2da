"""The real tfenv broker as its own process, a loopback stand-in for the hub's token API,
and Unix users made for a test (and removed after it).

* :class:`LoopbackHub` answers ``GET /hub/api/user`` as JupyterHub does (the model of the
  token's user with its scopes, 403 for a token it does not know) on 127.0.0.1, and counts
  how often each token was asked about. The broker talks to it with the real
  ``HubAuth``, over HTTP, exactly as it talks to a hub.
* :class:`BrokerProcess` runs ``python -m jupyter_tfenv.broker`` (root, as in a
  deployment) with that hub's URL and a catalog of the test images, on a free loopback
  port; its log is printed when a test fails.
* :class:`UnixUsers` creates real accounts (``useradd``, uids from 1000, homes 0700),
  marked in their GECOS field so a killed run's leftovers are recognised and removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CATALOG
from tests.hub.harness import kill_processes_of

SERVICE = "tfenv-broker-proc"
SCOPE = f"access:services!service={SERVICE}"
BROKER_TOKEN = "broker-service-token-for-tests"
#: What GECOS says for accounts a test made (removed after it, or by the next run).
USER_MARK = "tfenv broker process test user"


class LoopbackHub:
    """JupyterHub's ``GET /hub/api/user`` on 127.0.0.1: ``models`` maps tokens to users."""

    def __init__(self) -> None:
        self.models: dict[str, dict[str, Any]] = {}
        #: How often the hub was asked about each token.
        self.asked: Counter[str] = Counter()
        #: Seconds each answer waits (so that concurrent lookups overlap for sure).
        self.delay = 0.0
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                token = self.headers.get("Authorization", "").partition(" ")[2].strip()
                with hub._lock:
                    hub.asked[token] += 1
                    model = hub.models.get(token)
                time.sleep(hub.delay)
                if self.path.rstrip("/") != "/hub/api/user" or model is None:
                    self._answer(403, {"status": 403, "message": "Forbidden"})
                else:
                    self._answer(200, model)

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"

    def add_user(self, token: str, name: str, groups: list[str] | None = None) -> None:
        """A token of hub user ``name`` with the broker's access scope."""
        with self._lock:
            self.models[token] = {
                "kind": "user",
                "name": name,
                "admin": False,
                "groups": groups or [],
                "scopes": [SCOPE],
                "session_id": None,
            }

    def revoke(self, token: str) -> None:
        with self._lock:
            self.models.pop(token, None)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerProcess:
    """``python -m jupyter_tfenv.broker`` against ``hub``, with ``settings`` as
    ``c.TFEnvBroker`` config (a dict) and the test images' catalog."""

    def __init__(self, hub: LoopbackHub, settings: dict[str, Any] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tfbp-", dir="/tmp"))  # short socket paths
        self.runtime_root = str(self.dir / "rt")
        catalog = self.dir / "catalog.yaml"
        catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
        config = {
            "runtime_root": self.runtime_root,
            "checkpoint_root": str(self.dir / "ck"),
            "log_root": str(self.dir / "logs"),
            "probe_cache_dir": str(self.dir / "probes"),
            **(settings or {}),
        }
        lines = [f"c.TFEnvBroker.{key} = {value!r}" for key, value in config.items()]
        lines.append(f"c.TFEnvCatalog.catalog_files = [{str(catalog)!r}]")
        config_file = self.dir / "broker_config.py"
        config_file.write_text("\n".join(lines) + "\n")
        self.port = free_port()
        self.log_path = self.dir / "broker.log"
        env = {
            **os.environ,
            "JUPYTERHUB_API_TOKEN": BROKER_TOKEN,
            "JUPYTERHUB_API_URL": hub.api_url,
            "JUPYTERHUB_SERVICE_NAME": SERVICE,
            "JUPYTERHUB_SERVICE_PREFIX": f"/services/{SERVICE}/",
        }
        env.pop("JUPYTERHUB_SERVICE_URL", None)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter_tfenv.broker",
                    f"--config={config_file}",
                    "--ip=127.0.0.1",
                    f"--port={self.port}",
                    "--log-level=DEBUG",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
            )
        self._wait_until_listening()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the broker exited at start:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the broker does not listen on {self.port}:\n{self.log()}")

    def request(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """One request (``http.client``); ``(status, JSON answer or None)``."""
        import http.client

        headers = {"Authorization": f"token {token}"} if token else {}
        raw = None if body is None else json.dumps(body).encode()
        if raw is not None:
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=raw, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        return response.status, json.loads(data) if data else None

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        subprocess.run(["rm", "-rf", str(self.dir)], check=False)


@dataclass(frozen=True)
class UnixUser:
    name: str
    uid: int
    gid: int
    home: Path


class UnixUsers:
    """Real Unix accounts for a test: ``make(name)`` creates one (homes 0700, uids from
    1000: the broker refuses system accounts); ``remove()`` kills their processes and
    deletes them with their homes."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def make(self, name: str) -> UnixUser:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--create-home",
                    "--user-group",
                    "--shell",
                    "/bin/sh",
                    "-c",
                    USER_MARK,
                    "--key",
                    "UID_MIN=1000",
                    "--key",
                    "GID_MIN=1000",
                    name,
                ],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(name)
        if entry.pw_gecos != USER_MARK:
            raise RuntimeError(f"a Unix account {name} exists that no test made: not touched")
        if name not in self.made:
            self.made.append(name)
        os.chmod(entry.pw_dir, 0o700)
        return UnixUser(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))

    def remove(self) -> None:
        for name in self.made:
            with contextlib.suppress(KeyError):
                kill_processes_of(pwd.getpwnam(name).pw_uid)
            subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
        self.made.clear()


#: The Unix account of the policy tests' hub user (made by :func:`unix_account`).
ACCOUNT = "tfenv-pol"


@pytest.fixture(scope="module")
def unix_account() -> Iterator[UnixUser]:
    """A real, ordinary Unix account (:data:`ACCOUNT`) for the module's tests, made when
    missing and removed afterwards, so that no test depends on what the host has."""
    made = UnixUsers()
    try:
        yield made.make(ACCOUNT)
    finally:
        made.remove()
