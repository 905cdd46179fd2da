"""A real JupyterHub with real system users, for the broker's end-to-end tests.

What it sets up (everything torn down again by :meth:`HubHarness.close`):

* two system users (``useradd -m``, homes 0700) and a Unix group that holds the first one
  only; users and group this run did not create are reused and left alone;
* a Python those users can run: a venv made from Debian's ``/usr/bin/python3`` in a
  world-readable cache folder, with the installed JupyterHub and JupyterLab versions and a
  wheel of this repository (rebuilt only when the sources change);
* JupyterHub as root on 127.0.0.1 (free ports) with configurable-http-proxy, started from
  a small generated config that loads ``examples/hub/jupyterhub_config.py`` (the
  documented config is the tested one) and overrides ports, state paths, the
  single-user command (plus JupyterLab flags for the browser test) and the catalog, and
  adds a service token for the test driver. The tfenv broker runs as the hub-managed
  service the example declares; a second one, ``tfenv-broker-gpu``, is declared as an
  external service that tests/hub/test_hub_gpus.py starts on a GPU engine of its own.

The helpers talk HTTP (``requests``) to the hub's REST API, to the users' servers through
the proxy, and to the broker; kernel code runs over the kernel websocket through the
proxy (tornado, in a worker thread so that no test's event loop is involved).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import importlib.metadata
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from jupyter_tfenv.backends.docker.engine import list_containers
from tests.support.dist import DistError, build_wheel
from tests.support.server_process import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from kernel_ws import Execution, execute

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "examples" / "hub" / "jupyterhub_config.py"

ALICE = "tfenv-alice"
BOB = "tfenv-bob"
GPU_GROUP = "tfenv-gpu"
#: The Unix group whose members may log in (TFENV_USERS_GROUP of the example config).
LOGIN_GROUP = "tfenv-hubusers"
BROKER_SERVICE = "tfenv-broker"
DRIVER_SERVICE = "tfenv-test-driver"
#: A hub service that may use alice's server and read tfenv, but not write (scope test).
READER_SERVICE = "tfenv-test-reader"
#: A second tfenv broker, on a Docker engine with a working NVIDIA device driver (a
#: stand-in hook): declared to the hub as an external service, started by
#: tests/hub/test_hub_gpus.py when it runs (GpuBrokerService).
GPU_BROKER_SERVICE = "tfenv-broker-gpu"

OWNER_LABEL = "org.jupyter.tfenv.owner"
KERNEL_LABEL = "org.jupyter.tfenv.kernel-id"

#: The GECOS field of the users the harness creates: how a later run knows them as ours.
USER_MARK = "jupyter_tfenv hub tests"

USER_PYTHON = "/usr/bin/python3"
#: Installed in the users' venv, at the versions the tests' Python has (beside a wheel of
#: this repo): the single-user server, and JupyterLab so that ``/user/<name>/lab`` serves
#: the Lab (the example config's ``default_url``).
USER_VENV_DISTS = ("jupyterhub", "jupyterlab")
CACHE_ROOT = Path(os.environ.get("TFENV_HUB_TEST_CACHE", "/var/cache/jupyter-tfenv-tests"))

T0 = time.monotonic()


class HarnessError(RuntimeError):
    """The harness could not set something up; the message says what and where to look."""


def default_progress(message: str) -> None:
    print(f"[hub-tests +{time.monotonic() - T0:5.1f}s] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; a failure raises with its output."""
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise HarnessError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


# -- system users ---------------------------------------------------------------------


@dataclass(frozen=True)
class UnixUser:
    name: str
    uid: int
    gid: int
    home: Path

    @classmethod
    def lookup(cls, name: str) -> UnixUser:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir))


@dataclass
class SystemUsers:
    """The test's Unix users and groups; remembers which ones it created.

    ``groups``: the restricted-environment group (alice only) and the group allowed to log
    in to the hub (both users). Every user gets a random password (``passwords``) for the
    PAM login test.
    """

    names: tuple[str, ...] = (ALICE, BOB)
    groups: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {GPU_GROUP: (ALICE,), LOGIN_GROUP: (ALICE, BOB)}
    )
    created_users: list[str] = field(default_factory=list)
    created_groups: list[str] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)

    def ensure(self) -> dict[str, UnixUser]:
        for name in self.names:
            try:
                pwd.getpwnam(name)
            except KeyError:
                # uids from 1000 whatever this host's login.defs says: the broker refuses
                # accounts below c.TFEnvBroker.min_uid (1000) as system accounts.
                run(
                    [
                        "useradd",
                        "--create-home",
                        "--shell",
                        "/bin/bash",
                        "-c",
                        USER_MARK,
                        "--key",
                        "UID_MIN=1000",
                        "--key",
                        "GID_MIN=1000",
                        name,
                    ]
                )
            if pwd.getpwnam(name).pw_gecos == USER_MARK and name not in self.created_users:
                # Ours, also when a killed earlier run left it behind: removed at the end.
                self.created_users.append(name)
            user = UnixUser.lookup(name)
            os.chmod(user.home, 0o700)
            self.passwords[name] = secrets.token_urlsafe(18)
        if self.created_users:
            lines = "".join(f"{n}:{self.passwords[n]}\n" for n in self.created_users)
            run(["chpasswd"], input=lines)
        for group, wanted in self.groups.items():
            try:
                members = set(grp.getgrnam(group).gr_mem)
                # A group that holds only our users is a leftover of a killed run: ours too.
                if members and members <= set(self.created_users):
                    self.created_groups.append(group)
            except KeyError:
                run(["groupadd", group])
                self.created_groups.append(group)
            for name in wanted:
                if name not in grp.getgrnam(group).gr_mem:
                    run(["usermod", "--append", "--groups", group, name])
        return {name: UnixUser.lookup(name) for name in self.names}

    def remove(self) -> None:
        for name in self.created_users:
            # Processes of the user would make userdel fail; the hub stopped them already.
            kill_processes_of(pwd.getpwnam(name).pw_uid)
            subprocess.run(["userdel", "--remove", name], check=False, capture_output=True)
        self.created_users.clear()
        for group in self.created_groups:
            subprocess.run(["groupdel", group], check=False, capture_output=True)
        self.created_groups.clear()


def kill_processes_of(uid: int) -> list[int]:
    """SIGKILL each process (by pid) whose real uid is ``uid``; the pids."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uid_line = next((ln for ln in status.splitlines() if ln.startswith("Uid:")), "")
        if uid_line.split()[1:2] == [str(uid)]:
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
    return killed


# -- the users' Python ----------------------------------------------------------------


def source_hash() -> str:
    """Hash of what goes into the users' venv: this package's sources and versions."""
    digest = hashlib.sha256()
    for dist in USER_VENV_DISTS:
        digest.update(f"{dist}=={importlib.metadata.version(dist)}\0".encode())
    digest.update(USER_PYTHON.encode())
    digest.update((REPO / "pyproject.toml").read_bytes())
    package = REPO / "jupyter_tfenv"
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package)
        if (
            not path.is_file()
            or rel.parts[0] == "labextension"
            or "__pycache__" in rel.parts
            or path.suffix == ".pyc"
        ):
            continue
        digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    # The built labextension: its package.json names the bundle's hashed file names.
    for extra in (
        "install.json",
        "schema/catalog.schema.json",
        "jupyter_tfenv/labextension/package.json",
    ):
        if (REPO / extra).is_file():
            digest.update((REPO / extra).read_bytes())
    return digest.hexdigest()[:16]


def ensure_user_venv(progress: Callable[[str], None] = default_progress) -> Path:
    """The users' venv (``/usr/bin/python3`` + jupyterhub, jupyterlab and this repo's
    wheel), cached."""
    if not os.access(USER_PYTHON, os.X_OK):
        raise HarnessError(f"{USER_PYTHON} is missing: apt-get install python3 python3-venv")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    CACHE_ROOT.chmod(0o755)
    venv = CACHE_ROOT / f"hub-venv-{source_hash()}"
    done = venv / ".complete"
    with open(CACHE_ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            progress(f"users' venv cached: {venv}")
            return venv
        started = time.monotonic()
        progress(
            f"building the users' venv {venv} (jupyterhub, jupyterlab, a wheel of this repo) ..."
        )
        shutil.rmtree(venv, ignore_errors=True)
        old_umask = os.umask(0o022)
        try:
            with tempfile.TemporaryDirectory(prefix="tfenv-wheel-") as wheels:
                # As an admin installs it: `pip wheel .` with pip's build isolation.
                try:
                    wheel = build_wheel(REPO, Path(wheels))
                except DistError as err:
                    raise HarnessError(f"building the wheel of {REPO} failed: {err}") from err
                run([USER_PYTHON, "-m", "venv", str(venv)])
                run(
                    [
                        str(venv / "bin" / "python"),
                        "-m",
                        "pip",
                        "install",
                        "--disable-pip-version-check",
                        "--no-warn-script-location",
                        "-q",
                        *(f"{d}=={importlib.metadata.version(d)}" for d in USER_VENV_DISTS),
                        str(wheel),
                    ]
                )
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        finally:
            os.umask(old_umask)
        done.write_text(datetime.now(timezone.utc).isoformat() + "\n")
        # Older venvs of other source states: only this one is kept.
        for old in CACHE_ROOT.glob("hub-venv-*"):
            if old != venv:
                shutil.rmtree(old, ignore_errors=True)
        progress(f"users' venv built in {time.monotonic() - started:.0f} s")
    return venv


# -- the hub --------------------------------------------------------------------------


@dataclass
class HubPaths:
    root: Path  # 0755: users' servers read the catalog here
    checkpoint_root: Path
    log_root: Path
    runtime_root: Path
    catalog: Path
    log: Path


TEST_CONFIG = """\
# Generated by tests/hub/harness.py: the example config, with test ports and paths.
import os
import sys

c = get_config()  # noqa: F821
load_subconfig({example!r})  # noqa: F821

c.JupyterHub.bind_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.pid_file = {proxy_pid!r}
c.JupyterHub.pid_file = {hub_pid!r}
c.JupyterHub.db_url = "sqlite:///{db}"
c.JupyterHub.cookie_secret_file = {cookie!r}
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.log_level = "DEBUG" if {debug!r} else "INFO"
# The browser test (test_hub_lab.py) drives the Lab through window.jupyterapp; no news or
# update checks (nothing leaves the machine).
c.Spawner.args = [
    *c.Spawner.args,
    "--LabApp.expose_app_in_browser=True",
    "--LabApp.news_url=None",
    "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
]

# Extra single-user server arguments per user, for one test (HubHarness.set_server_args):
# read from a JSON file at each spawn, added to the documented c.Spawner.args.
def _tfenv_test_server_args(spawner):
    import json

    base = getattr(spawner, "_tfenv_base_args", None)
    if base is None:
        base = spawner._tfenv_base_args = list(spawner.args)
    try:
        with open({server_args!r}) as f:
            extra = json.load(f).get(spawner.user.name) or []
    except FileNotFoundError:
        extra = []
    spawner.args = [*base, *extra]


c.Spawner.pre_spawn_hook = _tfenv_test_server_args

# The broker runs from this checkout (`python -m` puts the cwd first on sys.path), also
# where the installed jupyter_tfenv is an editable install of another checkout.
for _service in c.JupyterHub.services:
    if _service["name"] == {broker!r}:
        _service["cwd"] = {repo!r}

# The test driver: a service with a token that may create users, tokens and servers.
c.JupyterHub.services.append({{"name": {driver!r}, "api_token": {driver_token!r}}})
# A service that may use alice's server and read tfenv there, but not write.
c.JupyterHub.services.append({{"name": {reader!r}, "api_token": {reader_token!r}}})
c.JupyterHub.load_roles.append(
    {{
        "name": "tfenv-test-driver",
        "scopes": [
            "admin:users",
            "admin:servers",
            "admin:groups",
            "tokens",
            "list:users",
            "read:users",
            "read:roles",
            "read:services",
            "access:servers",
            "custom:tfenv:read",
            "custom:tfenv:write",
            "custom:tfenv:execute",
            "access:services!service={broker}",
        ],
        "services": [{driver!r}],
    }}
)
# The GPU broker (test_hub_gpus.py): an external service (the test starts the process,
# with the token and URL below); users' servers pointed at it may call it, as they may
# call the example's broker.
c.JupyterHub.services.append(
    {{
        "name": {gpu_broker!r},
        "url": "http://127.0.0.1:{gpu_broker_port}",
        "api_token": {gpu_broker_token!r},
        "display": False,
    }}
)
c.Spawner.server_token_scopes = [
    *c.Spawner.server_token_scopes,
    "access:services!service={gpu_broker}",
]
for _role in c.JupyterHub.load_roles:
    if _role["name"] == "user":
        _role["scopes"] = [*_role["scopes"], "access:services!service={gpu_broker}"]
c.JupyterHub.load_roles.append(
    {{
        "name": "tfenv-test-reader",
        "scopes": ["access:servers!user={alice}", "custom:tfenv:read!user={alice}"],
        "services": [{reader!r}],
    }}
)
"""


@dataclass
class HubHarness:
    """One JupyterHub (with its proxy and the tfenv broker) and its test users."""

    workdir: Path
    venv: Path
    users: dict[str, UnixUser]
    catalog: dict[str, Any]
    progress: Callable[[str], None] = default_progress
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Unix passwords of the users (PAM login).
    passwords: dict[str, str] = field(default_factory=dict)
    #: Python appended to the generated config (``c``, ``os`` and ``sys`` are there).
    extra_config: str = ""
    proxy_port: int = 0
    hub_port: int = 0
    proxy_api_port: int = 0
    broker_port: int = 0
    driver_token: str = field(default_factory=lambda: secrets.token_hex(24))
    reader_token: str = field(default_factory=lambda: secrets.token_hex(24))
    #: The GPU broker service's port and hub token (GPU_BROKER_SERVICE).
    gpu_broker_port: int = 0
    gpu_broker_token: str = field(default_factory=lambda: secrets.token_hex(24))
    process: subprocess.Popen[bytes] | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    paths: HubPaths | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        import yaml

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        root = self.workdir
        state = root / "state"
        state.mkdir(mode=0o700, exist_ok=True)
        # Short: runtime folders hold Unix sockets (107 bytes at most).
        runtime_root = Path(tempfile.mkdtemp(prefix="tfb-", dir="/run"))
        runtime_root.rmdir()  # the broker makes it, with its own modes
        self.paths = HubPaths(
            root=root,
            checkpoint_root=root / "srv-tfenv" / "checkpoints",
            log_root=root / "srv-tfenv" / "logs",
            runtime_root=runtime_root,
            catalog=root / "tfenv-catalog.yaml",
            log=root / "jupyterhub.log",
        )
        self.paths.catalog.write_text(yaml.safe_dump(self.catalog, sort_keys=False))
        self.paths.catalog.chmod(0o644)
        # /srv/tfenv as the guide sets it up: root-owned 0755 above the per-user folders.
        self.paths.checkpoint_root.parent.mkdir(mode=0o755)
        self.paths.checkpoint_root.mkdir(mode=0o755)
        self.paths.log_root.mkdir(mode=0o755)
        for port_name in (
            "proxy_port",
            "hub_port",
            "proxy_api_port",
            "broker_port",
            "gpu_broker_port",
        ):
            setattr(self, port_name, free_port())
        config = state / "jupyterhub_test_config.py"
        config.write_text(
            TEST_CONFIG.format(
                example=str(EXAMPLE_CONFIG),
                proxy_port=self.proxy_port,
                hub_port=self.hub_port,
                proxy_api_port=self.proxy_api_port,
                proxy_pid=str(state / "proxy.pid"),
                hub_pid=str(state / "jupyterhub.pid"),
                db=str(state / "jupyterhub.sqlite"),
                cookie=str(state / "cookie_secret"),
                singleuser=str(self.venv / "bin" / "jupyterhub-singleuser"),
                debug=bool(os.environ.get("TFENV_HUB_TEST_DEBUG")),
                driver=DRIVER_SERVICE,
                driver_token=self.driver_token,
                reader=READER_SERVICE,
                reader_token=self.reader_token,
                gpu_broker=GPU_BROKER_SERVICE,
                gpu_broker_port=self.gpu_broker_port,
                gpu_broker_token=self.gpu_broker_token,
                broker=BROKER_SERVICE,
                alice=ALICE,
                repo=str(REPO),
                server_args=str(self.server_args_file),
            )
            + self.extra_config
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTER", "JPY_", "TFENV_", "CONFIGPROXY"))
        }
        env.update(
            {
                # The knobs examples/hub/jupyterhub_config.py reads from the environment.
                "JUPYTER_TFENV_CATALOG": str(self.paths.catalog),
                "TFENV_BROKER_PORT": str(self.broker_port),
                "TFENV_CHECKPOINT_ROOT": str(self.paths.checkpoint_root),
                "TFENV_LOG_ROOT": str(self.paths.log_root),
                "TFENV_RUNTIME_ROOT": str(self.paths.runtime_root),
                "TFENV_USERS_GROUP": LOGIN_GROUP,
                "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(24),
                # The hub's proxy, configurable-http-proxy, is in this venv's bin.
                "PATH": venv_path(),
                **self.extra_env,
            }
        )
        self.progress(f"starting JupyterHub on 127.0.0.1:{self.proxy_port} (log {self.paths.log})")
        log = open(self.paths.log, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=state,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_for(self._hub_answers, 90, "JupyterHub to answer")
        self.progress("JupyterHub is up; waiting for the tfenv broker service")
        self.wait_for(self._broker_answers, 60, "the tfenv broker to answer")
        self.progress(f"tfenv broker answers on 127.0.0.1:{self.broker_port}")

    def close(self) -> None:
        """Stop servers, the hub (with proxy and broker) and remove test containers."""
        if self.process is not None and self.process.poll() is None:
            for name in self.users:
                with contextlib.suppress(Exception):
                    self.stop_server(name, timeout=60)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.paths is not None:
            state = self.paths.root / "state"
            for pid_file in (state / "proxy.pid",):
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        for pid in self.broker_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        # Kernels the stopped servers did not shut down (reported, then removed).
        leftovers = remove_test_containers(self.users)
        if leftovers:
            self.progress(
                f"removed {len(leftovers)} kernel container(s) still running after the hub "
                f"stopped: {', '.join(sorted(leftovers))}"
            )
        if self.paths is not None:
            shutil.rmtree(self.paths.runtime_root, ignore_errors=True)

    @property
    def server_args_file(self) -> Path:
        return self.workdir / "state" / "server_args.json"

    def set_server_args(self, name: str, args: list[str]) -> None:
        """Extra arguments of ``name``'s single-user server from its next spawn on
        (``[]``: the example config's alone)."""
        import json

        path = self.server_args_file
        current = json.loads(path.read_text()) if path.exists() else {}
        current[name] = list(args)
        path.write_text(json.dumps(current))

    def log_tail(self, lines: int = 80) -> str:
        if self.paths is None or not self.paths.log.exists():
            return ""
        return "\n".join(self.paths.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_for(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(
                    f"JupyterHub exited ({self.process.returncode}) while waiting for {what}:"
                    f"\n{self.log_tail()}"
                )
            with contextlib.suppress(requests.RequestException):
                if check():
                    return
            time.sleep(0.25)
        raise HarnessError(
            f"timed out after {timeout:.0f} s waiting for {what}:\n{self.log_tail()}"
        )

    def _hub_answers(self) -> bool:
        return requests.get(self.hub_api, timeout=5).status_code == 200

    def _broker_answers(self) -> bool:
        # Any HTTP answer means it listens (without a token: 403).
        requests.get(f"{self.broker_url}/api/me", timeout=5)
        return True

    # -- URLs and requests --------------------------------------------------------------

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    @property
    def hub_api(self) -> str:
        return f"{self.public_url}/hub/api"

    @property
    def broker_url(self) -> str:
        return f"http://127.0.0.1:{self.broker_port}"

    def hub(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A request to the hub's REST API with the driver's (admin) token."""
        headers = {"Authorization": f"token {self.driver_token}", **kwargs.pop("headers", {})}
        return requests.request(
            method, f"{self.hub_api}{path}", headers=headers, timeout=60, **kwargs
        )

    def token(self, name: str) -> str:
        """An API token of user ``name`` (with the user's own permissions), made once."""
        if name not in self.tokens:
            response = self.hub("POST", f"/users/{name}/tokens", json={"note": "hub tests"})
            if response.status_code != 201:
                raise HarnessError(f"token for {name}: {response.status_code} {response.text}")
            self.tokens[name] = response.json()["token"]
        return self.tokens[name]

    def user_request(
        self, method: str, owner: str, path: str, token: str, **kwargs: Any
    ) -> requests.Response:
        """``method /user/{owner}/{path}`` through the proxy, as the holder of ``token``."""
        headers = {"Authorization": f"token {token}", **kwargs.pop("headers", {})}
        kwargs.setdefault("allow_redirects", False)
        return requests.request(
            method,
            f"{self.public_url}/user/{owner}/{path.lstrip('/')}",
            headers=headers,
            timeout=kwargs.pop("timeout", 180),
            **kwargs,
        )

    def broker(self, method: str, path: str, token: str | None, **kwargs: Any) -> requests.Response:
        """A request straight to the broker, with ``token`` (None: no Authorization)."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"token {token}"
        return requests.request(
            method, f"{self.broker_url}{path}", headers=headers, timeout=120, **kwargs
        )

    # -- users and servers --------------------------------------------------------------

    def browser_login(self, name: str, password: str) -> tuple[requests.Session, int]:
        """Log in on the hub's login form as a browser does; the session and the status
        of the form's answer (302 on success)."""
        session = requests.Session()
        page = session.get(f"{self.public_url}/hub/login", timeout=30)
        page.raise_for_status()
        xsrf = next((c.value for c in session.cookies if c.name == "_xsrf"), "")
        answer = session.post(
            f"{self.public_url}/hub/login",
            data={"username": name, "password": password, "_xsrf": xsrf},
            allow_redirects=False,
            timeout=60,
        )
        return session, answer.status_code

    def ensure_hub_user(self, name: str) -> None:
        response = self.hub("GET", f"/users/{name}")
        if response.status_code == 404:
            response = self.hub("POST", f"/users/{name}")
            if response.status_code not in (200, 201):
                raise HarnessError(
                    f"creating hub user {name}: {response.status_code} {response.text}"
                )

    def server_state(self, name: str) -> dict[str, Any] | None:
        response = self.hub("GET", f"/users/{name}")
        response.raise_for_status()
        servers: dict[str, Any] = response.json().get("servers") or {}
        return servers.get("")

    def start_server(self, name: str, timeout: float = 150) -> None:
        self.ensure_hub_user(name)
        state = self.server_state(name)
        if state and state.get("ready"):
            return
        started = time.monotonic()
        if not state:
            response = self.hub("POST", f"/users/{name}/server")
            if response.status_code not in (201, 202, 400):
                raise HarnessError(f"spawning {name}: {response.status_code} {response.text}")

        def ready() -> bool:
            current = self.server_state(name)
            if current is None:
                raise HarnessError(f"{name}'s server stopped while starting:\n{self.log_tail()}")
            return bool(current.get("ready"))

        self.wait_for(ready, timeout, f"{name}'s server")
        self.progress(f"server of {name} spawned in {time.monotonic() - started:.1f} s")

    def stop_server(self, name: str, timeout: float = 60) -> None:
        response = self.hub("DELETE", f"/users/{name}/server")
        if response.status_code == 404 or self.server_state(name) is None:
            return
        self.wait_for(lambda: self.server_state(name) is None, timeout, f"{name}'s server to stop")

    # -- kernels ------------------------------------------------------------------------

    def start_kernel(
        self, owner: str, env_id: str, path: str = "", token: str | None = None
    ) -> requests.Response:
        """POST /user/{owner}/api/kernels for ``tfenv-<env_id>``; the raw response."""
        return self.user_request(
            "POST",
            owner,
            "api/kernels",
            token or self.token(owner),
            json={"name": f"tfenv-{env_id}", "path": path},
        )

    def kernel(self, owner: str, env_id: str, path: str = "") -> str:
        """Start a kernel that must start; its id."""
        response = self.start_kernel(owner, env_id, path)
        if response.status_code != 201:
            raise AssertionError(
                f"kernel start tfenv-{env_id} for {owner}: {response.status_code} {response.text}"
                f"\n{self.log_tail(40)}"
            )
        return str(response.json()["id"])

    def shutdown_kernel(self, owner: str, kernel_id: str) -> requests.Response:
        return self.user_request("DELETE", owner, f"api/kernels/{kernel_id}", self.token(owner))

    def list_kernels(self, owner: str) -> list[dict[str, Any]]:
        response = self.user_request("GET", owner, "api/kernels", self.token(owner))
        response.raise_for_status()
        kernels: list[dict[str, Any]] = response.json()
        return kernels

    def execute(self, owner: str, kernel_id: str, code: str, **kwargs: Any) -> Execution:
        url = f"ws://127.0.0.1:{self.proxy_port}/user/{owner}/api/kernels/{kernel_id}/channels"
        return execute(url, self.token(owner), code, **kwargs)

    def run_code(self, owner: str, kernel_id: str, code: str, timeout: float = 120) -> str:
        """Run ``code``, which must succeed; its stdout."""
        result = self.execute(owner, kernel_id, code, timeout=timeout)
        assert result.ok, str(result)
        return result.stdout

    # -- the broker process -------------------------------------------------------------

    def broker_pids(self) -> list[int]:
        """Processes running ``-m jupyter_tfenv.broker`` with this hub's broker port."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"jupyter_tfenv.broker" not in cmdline:
                continue
            marker = f"JUPYTERHUB_SERVICE_URL=http://127.0.0.1:{self.broker_port}".encode()
            if any(item.startswith(marker) for item in environ) or str(
                self.broker_port
            ).encode() in b" ".join(cmdline):
                found.append(int(entry.name))
        return found


# -- containers -----------------------------------------------------------------------


def tfenv_containers(users: Iterable[str]) -> list[Any]:
    import docker

    client = docker.from_env(timeout=60)
    try:
        owners = set(users)
        return [
            c for c in list_containers(client, [OWNER_LABEL]) if c.labels.get(OWNER_LABEL) in owners
        ]
    finally:
        client.close()


def remove_test_containers(users: Iterable[str]) -> list[str]:
    removed = []
    for container in tfenv_containers(users):
        with contextlib.suppress(Exception):
            container.remove(force=True)
            removed.append(container.name)
    return removed


def venv_path() -> str:
    """PATH with this venv's bin first (scripts/setup.sh puts configurable-http-proxy
    there), also when pytest was started without it on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    rest = [p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if p != venv_bin]
    return os.pathsep.join([venv_bin, *rest])


def hub_test_prerequisites() -> str | None:
    """Why the hub tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "the JupyterHub tests need root (system users, LocalProcessSpawner, the broker)"
    if shutil.which("configurable-http-proxy", path=venv_path()) is None:
        return "configurable-http-proxy is missing: run scripts/setup.sh (it installs it in .venv)"
    try:
        importlib.metadata.version("jupyterhub")
    except importlib.metadata.PackageNotFoundError:
        return "jupyterhub is not installed (pip install -e .[test])"
    return None
