"""Symlink races of the storage the (root) broker prepares and mounts (issue 13, items 1-2).

Each race is injected in-process at the exact step an attacker would need: right after a
folder is created, found to exist, opened or checked, it is replaced by a symlink to
something outside the storage. Tests run as root, so every chown is real: the file or
folder the symlink points to must keep its owner and mode, and the step must fail with a
message that says what is wrong.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from jupyter_tfenv.broker import policy
from jupyter_tfenv.checkpoints import storage as checkpoint_storage
from jupyter_tfenv.checkpoints.helper import _prepare_root
from jupyter_tfenv.checkpoints.layout import CheckpointStorageError, StorageConfig, locate
from jupyter_tfenv.checkpoints.storage import prepare_bind
from tests.conftest import (
    KERNEL_GID,
    KERNEL_UID,
    SERVER_PID_LABEL,
    kernel_containers,
    run_code,
    start_kernel,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")

UID, GID = KERNEL_UID, KERNEL_GID


def bind_config(tmp_path: Path, subpath: str = "{username}/{environment}") -> StorageConfig:
    return StorageConfig(
        mode="bind",
        checkpoint_root=str(tmp_path / "ckpt"),
        log_root=str(tmp_path / "logs"),
        subpath=subpath,
    )


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A root-owned 0600 file outside the storage root (the stand-in for /etc/shadow)."""
    outside = tmp_path / "etc"
    outside.mkdir(mode=0o755)
    path = outside / "shadow"
    path.write_text("root:secret\n")
    os.chown(path, 0, 0)
    os.chmod(path, 0o600)
    before = owner_and_mode(path)
    yield path
    assert owner_and_mode(path) == before, "a file outside the storage root was changed"


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def swap_for_symlink(name: str, dir_fd: int | None, target: Path) -> None:
    """Replace ``name`` (in ``dir_fd``) by a symlink to ``target``; the folder moves aside."""
    os.rename(name, name + ".moved", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    os.symlink(target, name, dir_fd=dir_fd)


def inject(
    monkeypatch: pytest.MonkeyPatch,
    func: str,
    when: Callable[[tuple[Any, ...], dict[str, Any]], bool],
    then: Callable[[tuple[Any, ...], dict[str, Any]], None],
) -> list[bool]:
    """Wrap ``os.<func>``: once ``when(args, kwargs)``, run ``then`` right after the call."""
    real = getattr(os, func)
    fired: list[bool] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return real(*args, **kwargs)
        finally:
            if not fired and when(args, kwargs):
                fired.append(True)
                then(args, kwargs)

    monkeypatch.setattr(os, func, wrapper)
    return fired


# -- item 1: prepare_bind ---------------------------------------------------------------


def test_happy_path_creates_the_folders_for_the_kernel_uid(tmp_path):
    config = bind_config(tmp_path, "shared/{username}/{environment}")
    loc = locate(config, "checkpoints", "alice", "tf220")
    old = os.umask(0o077)  # the modes are set on the descriptors, whatever the umask
    try:
        info = prepare_bind(loc, UID, GID)
    finally:
        os.umask(old)
    root = tmp_path / "ckpt"
    shared = root / "shared"
    user = shared / "alice"
    env = user / "tf220"
    assert root.stat().st_uid == 0
    assert owner_and_mode(shared) == (0, 0, 0o755)
    # Root for another uid: only the environment's folder is the user's, so the user
    # can neither rename nor replace it (their own server can still list it: group).
    assert owner_and_mode(user) == (0, GID, 0o750)
    assert owner_and_mode(env) == (UID, GID, 0o700)
    assert (info.st_dev, info.st_ino) == (env.stat().st_dev, env.stat().st_ino)
    # Again: nothing to do, same folder.
    assert prepare_bind(loc, UID, GID).st_ino == env.stat().st_ino
    assert owner_and_mode(env) == (UID, GID, 0o700)


def test_a_users_own_folder_above_the_environment_is_taken_back(tmp_path):
    """Made by an older version (the user's, 0700): root's again, by descriptor; the
    environment's folders in it stay the user's."""
    loc = locate(bind_config(tmp_path), "checkpoints", "alice", "tf220")
    user = Path(str(loc.user_dir))
    (user / "tf219").mkdir(parents=True, mode=0o700)
    for folder in (user, user / "tf219"):
        os.chown(folder, UID, GID)
    os.chmod(user, 0o700)
    prepare_bind(loc, UID, GID)
    assert owner_and_mode(user) == (0, GID, 0o750)
    assert owner_and_mode(user / "tf219") == (UID, GID, 0o700)
    assert owner_and_mode(user / "tf220") == (UID, GID, 0o700)
    # Another user's folder there is refused, and left as it is.
    os.chown(user, UID + 1, GID)
    with pytest.raises(CheckpointStorageError, match=f"belongs to uid {UID + 1}"):
        prepare_bind(loc, UID, GID)
    assert os.lstat(user).st_uid == UID + 1


def test_a_symlink_swapped_in_after_mkdir_is_refused(tmp_path, monkeypatch, victim):
    loc = locate(bind_config(tmp_path), "checkpoints", "alice", "tf220")
    fired = inject(
        monkeypatch,
        "mkdir",
        lambda args, kw: args[0] == "tf220",
        lambda args, kw: swap_for_symlink("tf220", kw.get("dir_fd"), victim),
    )
    with pytest.raises(CheckpointStorageError, match=r"tf220 is a symlink; .* Remove "):
        prepare_bind(loc, UID, GID)
    assert fired
    assert os.path.islink(str(loc.host_path))


def test_a_symlink_swapped_in_for_an_existing_root_owned_folder_is_refused(
    tmp_path, monkeypatch, victim
):
    """The issue's case: the folder exists, root's, and is about to be handed over."""
    loc = locate(bind_config(tmp_path), "checkpoints", "alice", "tf220")
    prepare_bind(loc, UID, GID)
    env = Path(str(loc.host_path))
    os.chown(env, 0, 0)  # made by hand, or by an old version: handed over when found
    fired = inject(
        monkeypatch,
        "mkdir",
        lambda args, kw: args[0] == "tf220",
        lambda args, kw: swap_for_symlink("tf220", kw.get("dir_fd"), victim),
    )
    with pytest.raises(CheckpointStorageError, match="is a symlink"):
        prepare_bind(loc, UID, GID)
    assert fired
    assert owner_and_mode(env.with_name("tf220.moved"))[0] == 0  # untouched as well


def test_a_swap_after_the_folder_was_opened_changes_only_that_folder(tmp_path, monkeypatch, victim):
    """Once opened, the descriptor is the folder: a later swap redirects nothing."""
    loc = locate(bind_config(tmp_path), "checkpoints", "alice", "tf220")
    fired = inject(
        monkeypatch,
        "open",
        lambda args, kw: args[0] == "tf220" and "dir_fd" in kw,
        lambda args, kw: swap_for_symlink("tf220", kw["dir_fd"], victim),
    )
    info = prepare_bind(loc, UID, GID)
    assert fired
    moved = Path(str(loc.host_path) + ".moved")
    assert owner_and_mode(moved) == (UID, GID, 0o700)
    assert info.st_ino == moved.stat().st_ino  # what the mount check will expect


def test_a_user_folder_swapped_for_a_symlink_to_a_folder_is_refused(tmp_path, monkeypatch):
    outside = tmp_path / "srv"
    outside.mkdir(mode=0o755)
    before = owner_and_mode(outside)
    loc = locate(bind_config(tmp_path), "logs", "alice", "tf220")
    fired = inject(
        monkeypatch,
        "mkdir",
        lambda args, kw: args[0] == "alice",
        lambda args, kw: swap_for_symlink("alice", kw.get("dir_fd"), outside),
    )
    with pytest.raises(CheckpointStorageError, match=r"logs/alice is a symlink"):
        prepare_bind(loc, UID, GID)
    assert fired
    assert owner_and_mode(outside) == before
    assert os.listdir(outside) == []  # nothing was created through the link


def test_a_file_in_place_of_a_folder_is_refused(tmp_path, victim):
    loc = locate(bind_config(tmp_path), "checkpoints", "alice", "tf220")
    Path(str(loc.user_dir)).mkdir(parents=True)
    Path(str(loc.host_path)).write_text("x")
    with pytest.raises(CheckpointStorageError, match="is not a folder"):
        prepare_bind(loc, UID, GID)


def test_the_volume_root_helper_never_follows_a_symlink(tmp_path):
    """_prepare_root (run in the helper container, and plain Python) works on a descriptor."""
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    link = tmp_path / "root-link"
    link.symlink_to(target)
    result = _prepare_root(str(link), UID, GID)
    assert "cannot open the volume root" in result["error"]
    assert owner_and_mode(target) == (0, 0, 0o755)
    real = tmp_path / "volume-root"
    real.mkdir(mode=0o755)
    assert _prepare_root(str(real), UID, GID) == {"ok": True, "changed": True}
    assert owner_and_mode(real) == (UID, GID, 0o700)


def test_prepare_kernel_storage_reports_what_it_prepared(tmp_path):
    class Env:
        id = "py"
        python = "python3"

    storage = checkpoint_storage.prepare_kernel_storage(
        None, bind_config(tmp_path), "alice", Env(), uid=UID, gid=GID, image_id="x"
    )
    assert [(c.target, c.host_path) for c in storage.checked] == [
        ("/tfenv/checkpoints", str(tmp_path / "ckpt" / "alice" / "py")),
        ("/tfenv/logs", str(tmp_path / "logs" / "alice" / "py")),
    ]
    for folder in storage.checked:
        info = os.stat(folder.host_path)
        assert (folder.dev, folder.ino) == (info.st_dev, info.st_ino)


def test_check_folder_refuses_an_ancestor_swapped_after_the_roots_check(tmp_path, monkeypatch):
    """The broker's folder check reads the folder through O_NOFOLLOW descriptors.

    A parent swapped for a symlink after the (textual) allowed-roots check, right before
    the descriptor walk (to a folder of the same user, outside the allowed roots), is
    refused, and nothing is recorded for the mount check.
    """
    home = tmp_path / "home" / "alice"
    (home / "proj" / "nb").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    (outside / "nb").mkdir(parents=True)
    for folder in (home, home / "proj", home / "proj" / "nb", outside, outside / "nb"):
        os.chown(folder, UID, GID)
    caller = policy.Caller("alice", UID, GID, str(home), frozenset())
    roots = policy.render_roots(["{home}"], caller)
    path = str(home / "proj" / "nb")
    real = policy.inside

    def inside_then_swap(p: str, root: str) -> bool:
        result = real(p, root)
        if p == path and not os.path.islink(home / "proj"):
            Swap(outside)(str(home / "proj"))
        return result

    monkeypatch.setattr(policy, "inside", inside_then_swap)
    seen: dict[str, Any] = {}
    with pytest.raises(policy.BrokerError, match="symlink") as info:
        policy.check_folder(path, caller, roots, "mount", seen)
    assert info.value.http_status == 403 and info.value.reason == "symlink"
    assert str(outside) not in info.value.message  # where the symlink leads is not said
    assert seen == {}
    # Unswapped, the folder passes and its identity is what was checked.
    monkeypatch.setattr(policy, "inside", real)
    os.unlink(home / "proj")
    os.rename(str(home / "proj") + ".moved", home / "proj")
    assert policy.check_folder(path, caller, roots, "mount", seen) == path
    assert (seen[path].dev, seen[path].ino) == (os.stat(path).st_dev, os.stat(path).st_ino)


# -- item 2: the folder a container mounts is the folder that was checked ---------------


@pytest.fixture
def broker(catalog_path: Path, jp_root_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """The real broker (tests/broker/test_broker_e2e.py's harness), requested by broker tests."""
    pytest.importorskip("jupyterhub")
    from tests.broker.test_broker_e2e import Broker

    class OwnBroker(Broker):
        def containers(self, kernel_id: str | None = None) -> list[Any]:
            # This process's broker's only: other test runs may use the same service name.
            return [
                c
                for c in super().containers(kernel_id)
                if c.labels.get(SERVER_PID_LABEL) == str(os.getpid())
            ]

    running = OwnBroker(catalog_path, jp_root_dir, tmp_path)
    yield running
    assert not running.close(), "the test left broker kernel containers behind"


@pytest.fixture
def jp_server_config(jp_server_config: Config, request: pytest.FixtureRequest) -> Config:
    """Broker mode for the tests that use the ``broker`` fixture, else local mode."""
    if "broker" in request.fixturenames:
        from tests.broker.test_broker_e2e import TOKEN

        jp_server_config.DockerKernelProvisioner.broker_url = request.getfixturevalue("broker").url
        jp_server_config.DockerKernelProvisioner.broker_token = TOKEN
    return jp_server_config


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A folder of the kernel's user outside everything it may mount: where a swap leads."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    (path / "private.txt").write_text("not for the kernel\n")
    os.chown(path, KERNEL_UID, KERNEL_GID)
    return path


async def start_error(jp_fetch: Any, name: str) -> tuple[int, str]:
    """Start a kernel for a notebook at the server's root that must fail: (status, message)."""
    from tornado.httpclient import HTTPClientError

    body = json.dumps({"name": name, "path": "nb.ipynb"})
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("api", "kernels", method="POST", body=body)
    assert info.value.response is not None
    return info.value.code, str(json.loads(info.value.response.body)["message"])


class Swap:
    """Replace a folder by a symlink to ``target`` (the folder moves aside); undo it."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.done: list[str] = []

    def __call__(self, path: str) -> None:
        os.rename(path, path + ".moved")
        os.symlink(self.target, path)
        self.done.append(path)

    def undo(self) -> None:
        for path in self.done:
            os.unlink(path)
            os.rename(path + ".moved", path)
        self.done.clear()


PROBE = (
    "import os, json\n"
    "for d in (os.getcwd(), os.environ['TFENV_CHECKPOINT_DIR'], os.environ['TFENV_LOG_DIR']):\n"
    "    open(os.path.join(d, 'probe.txt'), 'w').write('ok')\n"
    "print(json.dumps(sorted(os.listdir(os.getcwd()))))\n"
)


async def test_broker_notebook_folder_swapped_after_the_check(
    jp_fetch, jp_serverapp, jp_root_dir, broker, elsewhere, monkeypatch
):
    broker.start()
    swap = Swap(elsewhere)
    real = policy.check_folders

    def check_then_swap(req: Any, caller: Any, roots: Any, seen: Any = None) -> Any:
        cwd, mount = real(req, caller, roots, seen)
        swap(mount)  # right after the check: Docker will resolve the path again
        return cwd, mount

    monkeypatch.setattr(policy, "check_folders", check_then_swap)
    try:
        code, message = await start_error(jp_fetch, "tfenv-py")
    finally:
        swap.undo()
    assert swap.done == [] and code == 403
    assert f"{jp_root_dir} changed between the check and the mount" in message
    assert f"{jp_root_dir} is a symlink now" in message  # seen before any container
    assert not broker.containers()

    # Unswapped, the same start works, with every checked folder mounted.
    monkeypatch.setattr(policy, "check_folders", real)
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
    listing = json.loads(await run_code(jp_serverapp, kernel_id, PROBE))
    assert "probe.txt" in listing and "private.txt" not in listing
    ck = broker.app.storage_config().root("checkpoints")
    assert (Path(ck) / broker.user / "py" / "probe.txt").read_text() == "ok"
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert not broker.containers()


async def test_broker_checkpoint_folder_swapped_after_it_was_prepared(
    jp_fetch, broker, elsewhere, monkeypatch
):
    broker.start()
    swap = Swap(elsewhere)
    real = checkpoint_storage.prepare_bind

    def prepare_then_swap(loc: Any, uid: int, gid: int) -> Any:
        info = real(loc, uid, gid)
        if loc.kind == "checkpoints":
            swap(str(loc.host_path))
        return info

    monkeypatch.setattr(checkpoint_storage, "prepare_bind", prepare_then_swap)
    try:
        code, message = await start_error(jp_fetch, "tfenv-py")
        [swapped] = swap.done
    finally:
        swap.undo()
    assert code == 403
    assert f"{swapped} changed between the check and the mount" in message
    assert f"{swapped} is a symlink now" in message  # seen before any container
    assert not broker.containers()
    assert os.listdir(elsewhere) == ["private.txt"]


async def test_local_log_folder_swapped_after_it_was_prepared(
    jp_fetch, jp_serverapp, docker_engine, elsewhere, monkeypatch
):
    swap = Swap(elsewhere)
    real = checkpoint_storage.prepare_bind

    def prepare_then_swap(loc: Any, uid: int, gid: int) -> Any:
        info = real(loc, uid, gid)
        if loc.kind == "logs":
            swap(str(loc.host_path))
        return info

    monkeypatch.setattr(checkpoint_storage, "prepare_bind", prepare_then_swap)
    try:
        code, message = await start_error(jp_fetch, "tfenv-py")
        [swapped] = swap.done
    finally:
        swap.undo()
    assert code == 403
    assert f"{swapped} changed between the check and the mount" in message
    assert not kernel_containers(docker_engine)

    # Unswapped, a local start verifies its mounts and runs.
    monkeypatch.setattr(checkpoint_storage, "prepare_bind", real)
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
    await run_code(jp_serverapp, kernel_id, PROBE)
    assert (Path(swapped) / "probe.txt").read_text() == "ok"
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert not kernel_containers(docker_engine)
