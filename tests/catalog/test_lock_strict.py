"""``lock_policy = strict``: a tag without a lock entry, or no lock file at all, never starts.

``enforce`` (the default) stays as it was: it refuses only a mismatch of a locked tag. Real
kernel starts through the real server, the real CLI, the broker's own check, and a real
registry on 127.0.0.1 for the locked environment that does start.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from jupyter_tfenv.broker.app import TFEnvBroker
from jupyter_tfenv.broker.policy import BrokerError
from jupyter_tfenv.catalog.lock import LockFile, LockMissingError, require_lock
from jupyter_tfenv.catalog.validation import environment_from_dict
from jupyter_tfenv.provisioning.kernelspecs import kernelspec_dict
from tests.conftest import PY_IMAGE, run_tfenv_cli, start_error, start_kernel
from tests.support.registry import Registry, RegistryCleanup, registry, registry_cleanup  # noqa: F401

pytestmark = pytest.mark.docker

DIGEST = "sha256:" + "1" * 64


tfenv_cli = run_tfenv_cli


# -- pure logic --------------------------------------------------------------------------


def test_require_lock_says_what_is_missing_and_what_to_run(tmp_path):
    env = environment_from_dict({"id": "py", "image": PY_IMAGE})
    path = tmp_path / "tfenv-lock.json"
    with pytest.raises(LockMissingError) as info:
        require_lock(env, LockFile.load(path))
    assert f"the lock file {path} does not exist" in info.value.message
    assert "`jupyter tfenv lock py`" in info.value.message

    other = LockFile(path, {"tfenv-test/other:1": {"digest": DIGEST}})
    other.save()
    with pytest.raises(LockMissingError) as info:
        require_lock(env, LockFile.load(path))
    assert f"the lock file {path} has no entry for {PY_IMAGE}" in info.value.message
    assert "`jupyter tfenv lock py`" in info.value.message

    with pytest.raises(LockMissingError) as info:
        require_lock(env, None)
    assert "there is no lock file" in info.value.message and "lock_file" in info.value.message

    require_lock(env, LockFile(path, {PY_IMAGE: {"digest": DIGEST}}))
    pinned = environment_from_dict({"id": "p", "image": f"tfenv-test/python@{DIGEST}"})
    require_lock(pinned, None)  # a digest is its own lock


def test_strict_kernelspecs_carry_the_policy_without_a_digest(tmp_path):
    env = environment_from_dict({"id": "py", "image": PY_IMAGE})
    lock_file = str(tmp_path / "tfenv-lock.json")
    config = kernelspec_dict(env, lock_policy="strict", lock_file=lock_file)["metadata"][
        "kernel_provisioner"
    ]["config"]
    assert config["lock_policy"] == "strict" and config["lock_file"] == lock_file
    assert "locked_digest" not in config
    config = kernelspec_dict(env, lock_policy="enforce", lock_file=lock_file)["metadata"][
        "kernel_provisioner"
    ]["config"]
    assert "lock_policy" not in config  # enforce without an entry: nothing to check


def write_catalog(folder: Path, envs: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.yaml"
    path.write_text(yaml.safe_dump({"environments": envs}))
    return path


def test_jupyter_tfenv_check_reports_unlocked_environments_under_strict(tmp_path):
    catalog = write_catalog(tmp_path / "team", [{"id": "py", "image": PY_IMAGE}])
    config = tmp_path / "jupyter_config.py"
    config.write_text('c.TFEnvCatalog.lock_policy = "strict"\n')
    result = tfenv_cli("check", "--offline", "--catalog", str(catalog), "--config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not exist" in result.stdout and "`jupyter tfenv lock py`" in result.stdout
    assert "ok  py" not in result.stdout
    enforce = tfenv_cli("check", "--offline", "--catalog", str(catalog))
    assert enforce.returncode == 0, enforce.stdout + enforce.stderr


async def test_the_broker_refuses_unlocked_environments_under_strict(tmp_path, docker_engine):
    catalog = write_catalog(tmp_path / "team", [{"id": "py", "image": PY_IMAGE}])
    settings = {"catalog_files": [str(catalog)], "lock_policy": "strict"}
    broker = TFEnvBroker(config=Config({"TFEnvCatalog": settings}))
    env = broker.get_catalog().get("py")
    with pytest.raises(BrokerError) as info:
        await broker.kernel_backend._check_lock(docker_engine, env)
    assert info.value.http_status == 409 and info.value.reason == "not locked"
    assert "does not exist" in info.value.message and "jupyter tfenv lock py" in info.value.message

    # enforce: the same environment passes (only locked tags are checked).
    settings["lock_policy"] = "enforce"
    broker = TFEnvBroker(config=Config({"TFEnvCatalog": settings}))
    await broker.kernel_backend._check_lock(docker_engine, broker.get_catalog().get("py"))


# -- real kernel starts ------------------------------------------------------------------


@pytest.fixture
def reg_ref(registry: Registry) -> str:  # noqa: F811
    return registry.repo("strict-py") + ":3.11-jupyter"


@pytest.fixture
def jp_server_config(jp_server_config: Config, tmp_path: Path, reg_ref: str) -> Config:
    catalog = write_catalog(
        tmp_path / "team",
        [{"id": "py", "image": PY_IMAGE}, {"id": "reg", "image": reg_ref}],
    )
    jp_server_config.TFEnvCatalog.catalog_files = [str(catalog)]
    jp_server_config.TFEnvCatalog.lock_policy = "strict"
    return jp_server_config


async def test_strict_refuses_a_start_without_a_lock_file_or_without_an_entry(
    jp_fetch,
    jp_serverapp,
    registry_cleanup: RegistryCleanup,  # noqa: F811
    reg_ref,
):
    catalog_file = jp_serverapp.kernel_spec_manager.catalog.files()[0]
    lock_file = Path(catalog_file).parent / "tfenv-lock.json"
    assert not lock_file.exists()

    # (a) No lock file: the image is here and would run under enforce; strict refuses.
    code, message = await start_error(jp_fetch, "tfenv-py")
    assert code == 409
    assert f"the lock file {lock_file} does not exist" in message
    assert "`jupyter tfenv lock py`" in message
    status = json.loads((await jp_fetch("tfenv", "environments", "py", "image")).body)
    assert status["lock"]["policy"] == "strict" and status["lock"]["refused"] is True
    assert status["lock"]["lock_file_exists"] is False and status["lock"]["locked"] is None

    # (b) A lock file that has the other environment only.
    locked = registry_cleanup.push(PY_IMAGE, reg_ref)
    result = tfenv_cli("lock", "reg", "--catalog", catalog_file)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(lock_file.read_text())["images"]) == {reg_ref}
    code, message = await start_error(jp_fetch, "tfenv-py")
    assert code == 409
    assert f"the lock file {lock_file} has no entry for {PY_IMAGE}" in message
    assert "`jupyter tfenv lock py`" in message
    status = json.loads((await jp_fetch("tfenv", "environments", "py", "image")).body)
    assert status["lock"]["refused"] is True and status["lock"]["lock_file_exists"] is True

    # The locked environment starts, as it does under enforce.
    status = json.loads((await jp_fetch("tfenv", "environments", "reg", "image")).body)
    assert status["lock"]["locked"] == locked and status["lock"]["refused"] is False
    kernel_id = await start_kernel(jp_fetch, "tfenv-reg")
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
