"""Kernels that outlive the server (``c.TFEnvApp.keep_kernels_on_stop``): real servers,
real containers.

A server (``python -m jupyter_server`` in a subprocess) starts a container kernel, the
notebook sets ``x = 42`` and starts a loop that prints; the server is killed (SIGKILL) or
stopped as JupyterHub stops it (SIGINT, no tty); a new server on the same runtime root
lists the kernel under its old id, ``x`` is still 42 and the loop's output goes on.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from jupyter_tfenv.backends.docker.engine import list_containers
from tests.conftest import KERNEL_GID, KERNEL_UID, PY_IMAGE, run_tfenv_cli
from tests.support.server_process import ServerProcess, ServerStartError, start_tfenv_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from kernel_ws import execute, watch_output

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OWNER = "tfenv-adopt-test"
TOKEN = "tfenv-adopt-test-token"  # a throwaway token of a loopback server
CATALOG = [
    {"id": "py", "image": PY_IMAGE, "display_name": "Python 3.11 (test)"},
    {"id": "gpu", "image": PY_IMAGE, "gpus": "all", "display_name": "GPU (test)"},
]
POOLED = {"id": "pooled", "image": PY_IMAGE, "display_name": "Pooled (test)", "pool_size": 1}
#: A cell that runs for a while and says how far it got.
LOOP = (
    "import time\nfor i in range(600):\n    print(f'tick {i}', flush=True)\n    time.sleep(0.5)\n"
)


class Setup:
    """One notebook folder, catalog and runtime root; servers started on them in turn."""

    def __init__(self, base: Path, runtime_root: str) -> None:
        self.base = base
        self.runtime_root = runtime_root
        self.notebooks = base / "notebooks"
        self.notebooks.mkdir()
        os.chown(self.notebooks, KERNEL_UID, KERNEL_GID)
        self.catalog = base / "catalog.yaml"
        self.catalog.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
        self.servers: list[ServerProcess] = []

    def start(
        self, *args: str, reap: bool = False, env: dict[str, str] | None = None
    ) -> ServerProcess:
        try:
            server = start_tfenv_server(
                self.base / f"server{len(self.servers)}",
                token=TOKEN,
                catalog=self.catalog,
                root_dir=self.notebooks,
                kernel_uid=KERNEL_UID,
                kernel_gid=KERNEL_GID,
                owner=OWNER,
                runtime_root=self.runtime_root,
                name=f"server{len(self.servers)}",
                extra_args=list(args),
                reap_orphans=reap,
                extra_env=env,
            )
        except ServerStartError as err:
            pytest.fail(str(err))
        self.servers.append(server)
        return server


@pytest.fixture
def setup(images: docker.DockerClient, tmp_path: Path) -> Iterator[Setup]:
    # Short: IPC socket paths are limited to 107 bytes.
    runtime_root = tempfile.mkdtemp(prefix="tfad-", dir="/tmp")
    os.chmod(runtime_root, 0o711)
    here = Setup(tmp_path, runtime_root)
    try:
        yield here
    finally:
        for server in here.servers:
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait(30)
        for container in containers(images):
            container.remove(force=True)
        subprocess.run(["rm", "-rf", runtime_root], check=False)


def containers(client: docker.DockerClient) -> list[Any]:
    return list_containers(client, [f"org.jupyter.tfenv.owner={OWNER}"])


def start_kernel(server: ServerProcess, name: str = "tfenv-py") -> str:
    answer = server.request("POST", "/api/kernels", json={"name": name})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def ws(server: ServerProcess, kernel_id: str) -> str:
    return server.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"


def ticks(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"tick (\d+)", text)]


def prepare_kernel(server: ServerProcess, name: str = "tfenv-py") -> tuple[str, int]:
    """A kernel with ``x = 42`` and the loop running; (kernel id, last tick seen)."""
    kernel_id = start_kernel(server, name)
    result = execute(ws(server, kernel_id), TOKEN, "x = 42")
    assert result.ok, result
    seen = watch_output(ws(server, kernel_id), TOKEN, lambda t: len(ticks(t)) >= 2, code=LOOP)
    return kernel_id, max(ticks(seen))


def listed(server: ServerProcess) -> list[str]:
    answer = server.request("GET", "/api/kernels")
    # Also during the start-up adoption: it once answered 500 there (an adopted kernel was
    # listed before jupyter_server had set its last_activity).
    assert answer.status_code == 200, f"{answer.status_code} {answer.text[:300]}"
    return [k["id"] for k in answer.json()]


def check_adopted(server: ServerProcess, kernel_id: str, last_tick: int, env: str = "py") -> None:
    # Adoption runs right after the server started listening: within seconds.
    deadline = time.monotonic() + 60
    while kernel_id not in listed(server) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert kernel_id in listed(server), server.log_tail()
    # The loop started before the restart goes on: its output reaches the new server.
    try:
        later = watch_output(ws(server, kernel_id), TOKEN, lambda t: bool(ticks(t)), timeout=60)
    except (ConnectionError, TimeoutError) as err:
        raise AssertionError(f"{err}; the server's log:\n{server.log_tail()}") from err
    assert min(ticks(later)) > last_tick, (last_tick, later)
    answer = server.request("POST", f"/api/kernels/{kernel_id}/interrupt")
    assert answer.status_code == 204, answer.text
    # Requests that reach the kernel while the interrupted cell unwinds are aborted, as
    # in JupyterLab after an error; the next one runs.
    for _ in range(20):
        result = execute(ws(server, kernel_id), TOKEN, "print(x)")
        if result.status != "aborted":
            break
        time.sleep(0.5)
    assert result.ok, result
    assert result.stdout.strip() == "42"
    status = server.request("GET", f"/tfenv/kernels/{kernel_id}").json()
    assert status["live"]["running"] is True
    assert status["environment"]["id"] == env
    # The panel's badge: recorded as each kernel's adoption returns, a moment after the
    # kernel is listed.
    deadline = time.monotonic() + 60
    while status["origin"] is None and time.monotonic() < deadline:
        time.sleep(0.25)
        status = server.request("GET", f"/tfenv/kernels/{kernel_id}").json()
    assert status["origin"] == "adopted", status


def shut_down_and_stop(server: ServerProcess, kernel_id: str, client: docker.DockerClient) -> None:
    answer = server.request("DELETE", f"/api/kernels/{kernel_id}")
    assert answer.status_code == 204, answer.text
    assert server.stop() == 0, server.log_tail()
    assert containers(client) == []


def test_a_killed_server_loses_no_kernel(setup: Setup, images: docker.DockerClient) -> None:
    first = setup.start("--TFEnvApp.keep_kernels_on_stop=all")
    kernel_id, last_tick = prepare_kernel(first)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(30)
    (container,) = containers(images)
    assert container.status == "running"

    second = setup.start("--TFEnvApp.keep_kernels_on_stop=all", reap=True)
    check_adopted(second, kernel_id, last_tick)
    assert "adopted kernel " + kernel_id in second.log()
    # The adopting server holds it now: `jupyter tfenv gc` leaves it alone.
    gc = run_tfenv_cli(
        "gc",
        "--dry-run",
        "--json",
        env={
            "JUPYTER_TFENV_CATALOG": str(setup.catalog),
            "JUPYTER_TFENV_KERNEL_UID": str(KERNEL_UID),
        },
    )
    assert kernel_id not in gc.stdout + gc.stderr, gc.stdout + gc.stderr
    shut_down_and_stop(second, kernel_id, images)
    assert not any(Path(setup.runtime_root).iterdir())


def test_a_server_stopped_by_sigint_without_a_tty_keeps_its_kernel(
    setup: Setup, images: docker.DockerClient
) -> None:
    first = setup.start("--TFEnvApp.keep_kernels_on_stop=all")
    kernel_id, last_tick = prepare_kernel(first)
    first.proc.send_signal(signal.SIGINT)  # as JupyterHub's LocalProcessSpawner: no tty
    assert first.exit_code(60) == 0, first.log_tail()
    assert "keeps running in container" in first.log()
    (container,) = containers(images)
    assert container.status == "running"
    rundir = container.labels["org.jupyter.tfenv.runtime-dir"]
    kept = json.loads((Path(rundir) / "tfenv-kept.json").read_text())
    assert time.time() - kept["kept_at"] < 600

    second = setup.start("--TFEnvApp.keep_kernels_on_stop=all")
    check_adopted(second, kernel_id, last_tick)
    assert not (Path(rundir) / "tfenv-kept.json").exists()
    # A restart makes a new container: no longer the adopted one.
    answer = second.request("POST", f"/api/kernels/{kernel_id}/restart")
    assert answer.status_code == 200, answer.text
    status = second.request("GET", f"/tfenv/kernels/{kernel_id}").json()
    assert status["container_id"] != container.id and status["origin"] is None, status
    shut_down_and_stop(second, kernel_id, images)


def test_a_notebook_finds_its_kept_kernel_again_without_session_settings(
    setup: Setup, images: docker.DockerClient
) -> None:
    """With keep_kernels_on_stop and no c.SessionManager.database_filepath, the sessions
    go to a file in the server's runtime folder: the next server of the same user (same
    runtime folder, same notebook root) gives the notebook its kept kernel, not a new one."""
    runtime = setup.base / "user-runtime"  # the user's Jupyter runtime folder, both times
    user = {"JUPYTER_RUNTIME_DIR": str(runtime)}
    first = setup.start("--TFEnvApp.keep_kernels_on_stop=all", env=user)
    kernel_id = first.start_session("sub/train.ipynb", "tfenv-py")["kernel"]["id"]
    assert execute(ws(first, kernel_id), TOKEN, "x = 42").ok
    assert "notebook sessions are kept in " + str(runtime) in first.log()
    first.proc.send_signal(signal.SIGINT)
    assert first.exit_code(60) == 0, first.log_tail()
    assert [p.name for p in runtime.glob("tfenv-sessions-*.db")], sorted(runtime.iterdir())

    second = setup.start("--TFEnvApp.keep_kernels_on_stop=all", env=user)
    deadline = time.monotonic() + 60
    sessions: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        sessions = second.request("GET", "/api/sessions").json()
        if sessions:
            break
        time.sleep(0.25)
    assert [(s["path"], s["kernel"]["id"]) for s in sessions] == [("sub/train.ipynb", kernel_id)], (
        second.log_tail()
    )
    # JupyterLab opening the notebook again asks for its session by path: the same kernel.
    again = second.start_session("sub/train.ipynb", "tfenv-py")
    assert again["kernel"]["id"] == kernel_id
    result = execute(ws(second, kernel_id), TOKEN, "print(x)")
    assert result.ok and result.stdout.strip() == "42", result
    shut_down_and_stop(second, kernel_id, images)


def test_without_keep_a_stop_removes_kernels_as_before(
    setup: Setup, images: docker.DockerClient
) -> None:
    # 'gpu' keeps only GPU environments: this CPU kernel goes with its server.
    first = setup.start("--TFEnvApp.keep_kernels_on_stop=gpu")
    start_kernel(first)
    first.proc.send_signal(signal.SIGINT)
    assert first.exit_code(60) == 0, first.log_tail()
    assert containers(images) == []


def test_a_kernel_kept_too_long_is_removed_not_adopted(
    setup: Setup, images: docker.DockerClient
) -> None:
    first = setup.start("--TFEnvApp.keep_kernels_on_stop=all")
    kernel_id = start_kernel(first)
    first.proc.send_signal(signal.SIGINT)
    assert first.exit_code(60) == 0, first.log_tail()
    (container,) = containers(images)
    rundir = Path(container.labels["org.jupyter.tfenv.runtime-dir"])
    # Kept two hours ago (the marker the stopping server wrote, set back in time).
    (rundir / "tfenv-kept.json").write_text(json.dumps({"kept_at": time.time() - 7200}))

    second = setup.start(
        "--TFEnvApp.keep_kernels_on_stop=all", "--TFEnvApp.adopt_timeout=3600", reap=True
    )
    deadline = time.monotonic() + 60
    while containers(images) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert containers(images) == [], second.log_tail()
    assert kernel_id not in [k["id"] for k in second.request("GET", "/api/kernels").json()]
    assert "longer than c.TFEnvApp.adopt_timeout" in second.log()
    assert not rundir.exists()
    assert second.stop() == 0


def test_a_kernel_taken_from_the_pool_is_adopted_under_its_notebook_id(
    setup: Setup, images: docker.DockerClient
) -> None:
    setup.catalog.write_text(yaml.safe_dump({"version": 1, "environments": [*CATALOG, POOLED]}))
    first = setup.start("--TFEnvApp.keep_kernels_on_stop=all")
    deadline = time.monotonic() + 120
    while "of 'pooled' ready (1/1)" not in first.log() and time.monotonic() < deadline:
        time.sleep(0.25)
    kernel_id = first.start_session("nb.ipynb", "tfenv-pooled")["kernel"]["id"]
    assert "takes pool kernel" in first.log()
    result = execute(ws(first, kernel_id), TOKEN, "x = 42")
    assert result.ok, result
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(30)

    # The next server adopts it under the notebook's kernel id (its container label
    # names the pool id); the killed server's untaken pool kernel is reaped.
    second = setup.start("--TFEnvApp.keep_kernels_on_stop=all", reap=True)
    deadline = time.monotonic() + 60
    while kernel_id not in listed(second) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert kernel_id in listed(second), second.log_tail()
    result = execute(ws(second, kernel_id), TOKEN, "print(x)")
    assert result.stdout.strip() == "42", result
    answer = second.request("DELETE", f"/api/kernels/{kernel_id}")
    assert answer.status_code == 204, answer.text
    assert second.stop() == 0, second.log_tail()
    assert containers(images) == []
