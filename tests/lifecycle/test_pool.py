"""The warm pool (catalog ``pool_size``, ``preimport``): real server, real containers.

A kernel start takes a container that was started before the request; the pool refills;
the kernel runs in the notebook's folder with the notebook's session variable; a
shutdown leaves the pool; a server stop leaves nothing.
"""

from __future__ import annotations

import os
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
from tests.conftest import KERNEL_GID, KERNEL_UID, PY_IMAGE, TF220
from tests.support.server_process import ServerProcess, ServerStartError, start_tfenv_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from kernel_ws import execute

pytestmark = [pytest.mark.docker, pytest.mark.slow]

OWNER = "tfenv-pool-test"
TOKEN = "tfenv-pool-test-token"  # a throwaway token of a loopback server
POOL_LABEL = "org.jupyter.tfenv.pool"


def containers(client: docker.DockerClient, *labels: str) -> list[Any]:
    return list_containers(client, [f"org.jupyter.tfenv.owner={OWNER}", *labels])


def wait_for(what: str, check: Any, timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


@pytest.fixture
def pool_server(
    images: docker.DockerClient, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[ServerProcess, Path]]:
    catalog_envs, *extra_args = request.param
    runtime_root = tempfile.mkdtemp(prefix="tfpl-", dir="/tmp")
    os.chmod(runtime_root, 0o711)
    notebooks = tmp_path / "notebooks"
    (notebooks / "sub").mkdir(parents=True)
    for folder in (notebooks, notebooks / "sub"):
        os.chown(folder, KERNEL_UID, KERNEL_GID)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"version": 1, "environments": catalog_envs}))
    try:
        server = start_tfenv_server(
            tmp_path / "server",
            token=TOKEN,
            catalog=catalog,
            root_dir=notebooks,
            kernel_uid=KERNEL_UID,
            kernel_gid=KERNEL_GID,
            owner=OWNER,
            runtime_root=runtime_root,
            extra_args=extra_args,
        )
    except ServerStartError as err:
        pytest.fail(str(err))
    try:
        yield server, notebooks
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(30)
        for container in containers(images):
            container.remove(force=True)
        os.system(f"rm -rf {runtime_root}")


def ws(server: ServerProcess, kernel_id: str) -> str:
    return server.url.replace("http", "ws", 1) + f"/api/kernels/{kernel_id}/channels"


@pytest.mark.parametrize(
    "pool_server",
    [([{"id": "py", "image": PY_IMAGE, "display_name": "Python (pool)", "pool_size": 2}],)],
    indirect=True,
)
def test_a_kernel_start_takes_a_pooled_container(
    pool_server: tuple[ServerProcess, Path], images: docker.DockerClient
) -> None:
    server, notebooks = pool_server
    pooled = wait_for("two pool kernels", lambda: len(containers(images, POOL_LABEL)) == 2)
    assert pooled
    before = {c.id for c in containers(images, POOL_LABEL)}

    session = server.start_session("sub/train.ipynb", "tfenv-py")
    kernel_id = session["kernel"]["id"]
    status = server.request("GET", f"/tfenv/kernels/{kernel_id}").json()
    # The kernel runs in a container that existed before the request: a pool kernel.
    assert status["container_id"] in before
    assert status["live"]["running"] is True
    assert status["origin"] == "pool"  # the panel's "from pool" badge

    result = execute(
        ws(server, kernel_id),
        TOKEN,
        "import os\nprint(os.getcwd())\n"
        "print(os.environ.get('JPY_SESSION_NAME'))\nprint(os.getuid())",
    )
    assert result.ok, result
    cwd, session_name, uid = result.stdout.split()
    assert cwd == str(notebooks / "sub")
    assert session_name.endswith("sub/train.ipynb")
    assert uid == str(KERNEL_UID)
    # A file it writes lands in the notebook's folder, as the kernel's user.
    result = execute(ws(server, kernel_id), TOKEN, "open('out.txt', 'w').write('hi')")
    assert result.ok, result
    assert (notebooks / "sub" / "out.txt").stat().st_uid == KERNEL_UID

    # The pool refills: two pool kernels ready again, besides the one taken.
    wait_for(
        "the pool to refill",
        lambda: len({c.id for c in containers(images, POOL_LABEL)} - {status["container_id"]}) == 2,
    )
    assert "takes pool kernel" in server.log()

    # Shutdown removes the notebook's kernel and leaves the pool.
    answer = server.request("DELETE", f"/api/sessions/{session['id']}")
    assert answer.status_code == 204
    answer = server.request("DELETE", f"/api/kernels/{kernel_id}")
    assert answer.status_code in (204, 404)
    wait_for(
        "the taken container to go",
        lambda: status["container_id"] not in {c.id for c in containers(images)},
    )
    assert len(containers(images, POOL_LABEL)) == 2

    # A server stop leaves nothing.
    assert server.stop() == 0, server.log_tail()
    assert containers(images) == []


@pytest.mark.parametrize(
    "pool_server",
    [([{"id": "tf", "image": TF220, "tensorflow": "2.20.0", "pool_size": 1, "preimport": True}],)],
    indirect=True,
)
def test_a_preimported_pool_kernel_has_tensorflow_loaded(
    pool_server: tuple[ServerProcess, Path], images: docker.DockerClient
) -> None:
    server, _ = pool_server
    wait_for("the pool kernel", lambda: "of 'tf' ready (1/1)" in server.log())
    kernel_id = server.start_session("nb.ipynb", "tfenv-tf")["kernel"]["id"]
    assert "takes pool kernel" in server.log()
    result = execute(
        ws(server, kernel_id),
        TOKEN,
        "import sys\nprint('tensorflow' in sys.modules, 'tensorflow' in dir())",
    )
    assert result.ok, result
    # Imported (in sys.modules), but no name bound in the notebook's namespace.
    assert result.stdout.split() == ["True", "False"]
    result = execute(ws(server, kernel_id), TOKEN, "import tensorflow as tf\nprint(tf.__version__)")
    assert result.stdout.strip() == "2.20.0"
    assert server.stop() == 0, server.log_tail()
    assert containers(images) == []


@pytest.mark.parametrize(
    "pool_server",
    [
        (
            [{"id": "py", "image": PY_IMAGE, "pool_size": 2, "idle_timeout": 3}],
            "--TFEnvApp.cull_interval=1",
        )
    ],
    indirect=True,
)
def test_an_idle_pool_is_emptied_and_fills_again_at_the_next_start(
    pool_server: tuple[ServerProcess, Path], images: docker.DockerClient
) -> None:
    server, _ = pool_server
    wait_for("two pool kernels", lambda: len(containers(images, POOL_LABEL)) == 2)
    # No kernel start for longer than the environment's idle timeout: the pool goes.
    wait_for("the idle pool to go", lambda: containers(images, POOL_LABEL) == [], timeout=60)
    # Said in the log before its kernels are shut down.
    assert "pool of 'py' emptied" in server.log()
    # The next start is a cold one (a new container), and the pool fills again.
    kernel_id = server.start_session("nb.ipynb", "tfenv-py")["kernel"]["id"]
    status = server.request("GET", f"/tfenv/kernels/{kernel_id}").json()
    (taken,) = [c for c in containers(images) if c.id == status["container_id"]]
    assert POOL_LABEL not in taken.labels
    wait_for("the pool to fill again", lambda: len(containers(images, POOL_LABEL)) == 2)
    server.request("DELETE", f"/api/kernels/{kernel_id}")
    assert server.stop() == 0, server.log_tail()
    assert containers(images) == []
