"""The KernelBackend contract (backends/base.py), the same tests for every backend.

Each backend comes as a :class:`Harness` (the ``harness`` fixture's parameters): it makes
the backend and whatever a start needs before ``start`` (for Docker: the connection folder
lent to the caller, the connection file the caller writes into it, the notebook folder the
caller's policy checked). The tests then use only the interface: start, find, state,
list_kernels, logs, signal, live, remove, image_status, probe, the features and their
refusals. Docker runs real containers of the small test image; another backend is added as
another parameter (the Kubernetes one against the scripted API).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from traitlets.config import Config

from jupyter_tfenv.backends.base import (
    FEATURES,
    ImageStatus,
    KernelBackend,
    KernelInfo,
    KernelNotFound,
    KernelStart,
    KernelSummary,
    UnsupportedByBackend,
    Usage,
)
from jupyter_tfenv.backends.docker.engine import launcher_command
from jupyter_tfenv.backends.settings import CheckpointStorageSettings, KernelContainerSettings
from jupyter_tfenv.catalog.loading import TFEnvCatalog
from jupyter_tfenv.catalog.model import Environment
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.kernels import connection
from jupyter_tfenv.provisioning.settings import ProvisionerSettings
from tests.conftest import CATALOG, KERNEL_GID, KERNEL_UID

pytestmark = pytest.mark.usefixtures("images")

OWNER = "tfenv-contract"


class Harness:
    """One backend under the contract, and how to prepare a start for it."""

    backend: KernelBackend
    caller: Caller
    catalog: TFEnvCatalog
    #: Whether the backend itself applies the caller's quotas through ``admit`` (the
    #: broker client does not: the broker applies its own) and keeps callers apart by the
    #: ``caller`` argument (the broker client: by its token).
    takes_policy = True

    async def ready(self) -> None:
        """Called first in each test, on the test's event loop."""

    async def request(self, kernel_id: str) -> KernelStart:
        raise NotImplementedError

    async def after_start(self, kernel_id: str) -> None:
        """Called once ``start`` returned: the local server's backend leaves waiting for the
        kernel's sockets to its provisioner (await_ready=False), so the harness waits."""

    def close(self) -> None:
        """Remove whatever the tests left (the fixture's teardown; synchronous)."""


class _Settings(KernelContainerSettings, CheckpointStorageSettings):
    """The shared settings traits, as a provisioner or the broker holds them."""


class _LocalSettings(ProvisionerSettings, KernelContainerSettings, CheckpointStorageSettings):
    """A provisioner's settings traits (what ``local_backend`` reads of a provisioner)."""

    log = logging.getLogger("tests.contract")


class DockerHarness(Harness):
    def __init__(self, tmp_path: Path, runtime_root: str, catalog: TFEnvCatalog) -> None:
        from jupyter_tfenv.backends.docker.backend import DockerBackend

        self.catalog = catalog
        notebooks = tmp_path / "home" / OWNER
        notebooks.mkdir(parents=True)
        os.chown(notebooks, KERNEL_UID, KERNEL_GID)
        for folder in (tmp_path, tmp_path / "home"):
            folder.chmod(0o755)
        self.notebooks = str(notebooks)
        self.caller = Caller(name=OWNER, uid=KERNEL_UID, gid=KERNEL_GID, home=self.notebooks)
        settings = _Settings(
            checkpoint_storage="off", start_timeout=60.0, default_memory=512 * 1024**2
        )
        self.scope = f"contract-{uuid.uuid4().hex[:8]}"
        self.backend = DockerBackend(
            settings,
            catalog=lambda: catalog,
            runtime_root=runtime_root,
            scope_labels={"org.jupyter.tfenv.broker": self.scope},
            probe_cache_dir=str(tmp_path / "probes"),
            strict_mounts=True,
            config_section="TFEnvBroker",
        )

    async def request(self, kernel_id: str) -> KernelStart:
        from jupyter_tfenv.broker import policy

        answer = await self.backend.prepare_connection(self.caller, kernel_id, False)
        rundir = answer["runtime_dir"]
        write_connection_file(rundir)
        # What the broker's policy checks before a start: the notebook folder.
        req = policy.StartRequest(
            kernel_id=kernel_id, environment="py", cwd=self.notebooks, mount=self.notebooks, env={}
        )
        seen: dict[str, Any] = {}
        cwd, mount = await asyncio.to_thread(
            policy.check_folders, req, self.caller, [self.notebooks], seen
        )
        return KernelStart(
            kernel_id=kernel_id,
            environment="py",
            cwd=cwd,
            mount=mount,
            runtime_dir=rundir,
            checked=(seen[mount],),
        )

    def close(self) -> None:
        import docker

        client = docker.from_env()
        for c in client.containers.list(
            all=True, filters={"label": f"org.jupyter.tfenv.broker={self.scope}"}
        ):
            c.remove(force=True)


class LocalDockerHarness(Harness):
    """DockerBackend as a local server builds it (provisioning/local.py ``local_backend``):
    its own connection folders ``{runtime_root}/{kernel}`` (made here, as the provisioner
    makes them), containers found by their owner label, folders mounted by path, and the
    wait for the kernel's sockets left to the caller."""

    def __init__(self, tmp_path: Path, runtime_root: str, catalog: TFEnvCatalog) -> None:
        from jupyter_tfenv.provisioning.local import local_backend

        self.catalog = catalog
        notebooks = tmp_path / "home" / OWNER
        notebooks.mkdir(parents=True)
        os.chown(notebooks, KERNEL_UID, KERNEL_GID)
        for folder in (tmp_path, tmp_path / "home"):
            folder.chmod(0o755)
        self.notebooks = str(notebooks)
        self.owner = f"{OWNER}-{uuid.uuid4().hex[:8]}"
        self.caller = Caller(name=self.owner, uid=KERNEL_UID, gid=KERNEL_GID, home="/tmp")
        self.root = runtime_root  # short: Unix socket paths stay under 107 bytes
        prov = _LocalSettings(
            checkpoint_storage="off",
            start_timeout=60.0,
            default_memory=512 * 1024**2,
            owner=self.owner,
            uid=KERNEL_UID,
            gid=KERNEL_GID,
            runtime_root=self.root,
        )
        self.backend = local_backend(prov)  # type: ignore[arg-type]

    async def request(self, kernel_id: str) -> KernelStart:
        root = await asyncio.to_thread(connection.prepare_runtime_root, self.root)
        rundir = os.path.join(root, connection.runtime_name(kernel_id))
        os.mkdir(rundir, 0o700)
        os.chown(rundir, KERNEL_UID, KERNEL_GID)
        write_connection_file(rundir)
        return KernelStart(
            kernel_id=kernel_id,
            environment="py",
            cwd=self.notebooks,
            mount=self.notebooks,
            runtime_dir=rundir,
            cmd=tuple(
                launcher_command(
                    self.catalog.get("py").python, f"{rundir}/{connection.CONNECTION_FILE}"
                )
            ),
        )

    async def after_start(self, kernel_id: str) -> None:
        rundir = os.path.join(os.path.abspath(self.root), connection.runtime_name(kernel_id))
        info = json.loads((Path(rundir) / connection.CONNECTION_FILE).read_text())
        paths = connection.socket_paths(info)
        for _ in range(600):
            if connection.sockets_bound(paths, rundir):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the kernel {kernel_id} did not bind its sockets")

    def close(self) -> None:
        import docker

        client = docker.from_env()
        for c in client.containers.list(
            all=True, filters={"label": f"org.jupyter.tfenv.owner={self.owner}"}
        ):
            c.remove(force=True)


def write_connection_file(rundir: str) -> None:
    """What the caller's server does: the connection file, in the folder lent to it."""
    info = {
        "transport": "ipc",
        "ip": f"{rundir}/k",
        "shell_port": 1,
        "iopub_port": 2,
        "stdin_port": 3,
        "control_port": 4,
        "hb_port": 5,
        "key": uuid.uuid4().hex,
        "signature_scheme": "hmac-sha256",
        "kernel_name": "tfenv-py",
    }
    path = Path(rundir) / connection.CONNECTION_FILE
    path.write_text(json.dumps(info))
    os.chmod(path, 0o600)
    os.chown(path, KERNEL_UID, KERNEL_GID)


class BrokerHarness(Harness):
    """BrokerBackend (a single-user server's side) against an in-process broker over HTTP,
    which answers with its DockerBackend: the same contract, end to end."""

    takes_policy = False

    def __init__(self, tmp_path: Path, catalog_path: Path) -> None:
        from jupyter_tfenv.backends.broker import BrokerBackend, BrokerClient
        from tests.broker.test_broker_e2e import TOKEN, Broker

        home = tmp_path / "home"
        home.mkdir()
        os.chown(home, KERNEL_UID, KERNEL_GID)
        tmp_path.chmod(0o755)
        self.notebooks = str(home)
        self.broker = Broker(catalog_path, home, tmp_path)
        self.catalog = self.broker.app.get_catalog()
        self.caller = Caller(name=self.broker.user, uid=KERNEL_UID, gid=KERNEL_GID, home="/")
        self.backend = BrokerBackend(BrokerClient(self.broker.url, TOKEN))

    async def ready(self) -> None:
        self.broker.start()

    async def request(self, kernel_id: str) -> KernelStart:
        answer = await self.backend.prepare_connection(self.caller, kernel_id, False)
        write_connection_file(str(answer["runtime_dir"]))
        return KernelStart(
            kernel_id=kernel_id, environment="py", cwd=self.notebooks, mount=self.notebooks
        )

    def close(self) -> None:
        self.broker.close()


@pytest.fixture
def contract_catalog(tmp_path: Path) -> TFEnvCatalog:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": CATALOG}))
    catalog = TFEnvCatalog(config=Config({"TFEnvCatalog": {"catalog_files": [str(path)]}}))
    catalog.refresh()
    return catalog


@pytest.fixture(params=["docker", "docker-local", "broker"])
def harness(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    runtime_root: str,
    contract_catalog: TFEnvCatalog,
) -> Iterator[Harness]:
    made: Harness
    if request.param == "broker":
        pytest.importorskip("jupyterhub")
        made = BrokerHarness(tmp_path, tmp_path / "catalog.yaml")
    elif request.param == "docker-local":
        made = LocalDockerHarness(tmp_path, runtime_root, contract_catalog)
    else:
        made = DockerHarness(tmp_path, runtime_root, contract_catalog)
    try:
        yield made
    finally:
        made.close()


def _env(h: Harness, env_id: str) -> Environment:
    return h.catalog.get(env_id)


async def test_features_are_declared_and_refusals_say_which(harness: Harness) -> None:
    await harness.ready()
    backend = harness.backend
    assert backend.name
    assert backend.features <= set(FEATURES)
    with pytest.raises(ValueError, match="unknown backend feature"):
        backend.supports("teleport")
    err = backend.unsupported("teleporting kernels", "Use a bus.")
    assert isinstance(err, UnsupportedByBackend) and err.http_status == 501
    assert (
        str(err) == f"The {backend.name} backend does not support teleporting kernels. Use a bus."
    )


async def test_a_kernel_from_start_to_remove(harness: Harness) -> None:
    await harness.ready()
    backend, caller = harness.backend, harness.caller
    kid = str(uuid.uuid4())
    env = _env(harness, "py")
    admitted: list[tuple[Usage, int]] = []

    answer = await backend.start(
        caller, await harness.request(kid), env, admit=lambda u, g: admitted.append((u, g))
    )
    assert answer["kernel_id"] == kid and answer["environment"] == "py"
    if harness.takes_policy:
        assert admitted == [(Usage(kernels=0, gpus=0, probes=0), 0)]
    await harness.after_start(kid)

    info = await backend.find(caller, kid)
    assert isinstance(info, KernelInfo)
    assert info.running and info.environment == "py" and info.kernel_id == kid
    assert (await backend.state(caller, kid)).container_id == info.container_id
    assert set(info.to_dict()) >= {"kernel_id", "container_id", "status", "running"}

    rows = await backend.list_kernels(caller)
    assert [r.kernel_id for r in rows] == [kid]
    assert isinstance(rows[0], KernelSummary) and rows[0].environment == "py"
    assert (await backend.usage(caller)).kernels == 1

    assert isinstance(await backend.logs(caller, kid, tail=5), str)
    if backend.supports("live"):
        live = await backend.live(caller, kid)
        assert live["running"] is True
    else:
        with pytest.raises(UnsupportedByBackend):
            await backend.live(caller, kid)

    await backend.signal(caller, kid, signal.SIGINT)  # an interrupt: the kernel lives on
    assert (await backend.state(caller, kid)).running

    if harness.takes_policy:
        # Another caller sees nothing of it: the same answer as for no kernel at all.
        other = replace(caller, name="someone-else", uid=caller.uid + 1)
        assert await backend.find(other, kid) is None
        with pytest.raises(KernelNotFound) as gone:
            await backend.state(other, kid)
        assert gone.value.http_status == 404 and "of yours" in gone.value.message

    await backend.remove(caller, kid)
    assert await backend.find(caller, kid) is None
    with pytest.raises(KernelNotFound):
        await backend.state(caller, kid)
    assert await backend.list_kernels(caller) == []
    if harness.takes_policy:
        with pytest.raises(KernelNotFound):
            await backend.remove(caller, kid)
    else:
        await backend.remove(caller, kid)  # the broker client: gone already is done


async def test_admit_refuses_before_anything_is_made(harness: Harness) -> None:
    await harness.ready()
    from jupyter_tfenv.backends.base import BackendError

    if not harness.takes_policy:
        pytest.skip("the broker client sends no admit hook: the broker applies its quotas")
    backend, caller = harness.backend, harness.caller
    kid = str(uuid.uuid4())

    def refuse(usage: Usage, gpus: int) -> None:
        raise BackendError("You have 0 kernels left.", status=429)

    with pytest.raises(BackendError) as refused:
        await backend.start(caller, await harness.request(kid), _env(harness, "py"), admit=refuse)
    assert refused.value.http_status == 429
    assert await backend.list_kernels(caller) == []


async def test_image_status_by_environment(harness: Harness) -> None:
    await harness.ready()
    envs = [_env(harness, "py"), _env(harness, "missing")]
    status = await harness.backend.image_status(envs)
    assert set(status) == {"py", "missing"}
    assert all(isinstance(s, ImageStatus) for s in status.values())
    if harness.backend.name == "docker":
        assert status["py"].present is True and status["py"].image_id
        assert status["missing"].to_dict() == {
            "present": False,
            "image_id": None,
            "repo_digests": [],
            "size": None,
        }


async def test_what_a_backend_lacks_is_refused_with_a_message(harness: Harness) -> None:
    await harness.ready()
    backend, caller = harness.backend, harness.caller
    calls = {
        "checkpoints": lambda: backend.checkpoints(caller, ["py"]),
        "gpu_allocation": lambda: backend.gpus(caller),
    }
    for feature, call in calls.items():
        if backend.supports(feature):
            continue
        with pytest.raises(UnsupportedByBackend) as refused:
            await call()
        assert refused.value.http_status == 501
        assert f"The {backend.name} backend does not support" in refused.value.message
