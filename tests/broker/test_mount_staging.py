"""The broker mounts the folders it checked, not what their paths lead to later (issue 17).

A user owns ``<checkpoint root>/<user>/`` (or did) and the parent of their notebook
folder, so they can swap either folder for a symlink at any moment, in a tight loop. The
broker bind-mounts the descriptor of each checked folder onto a staging folder of its own
(mountcheck.StagedMounts) and gives Docker that path: a swap after the check changes
nothing the kernel sees. The kernel's launcher runs under ``python -I``, so no code of the
user's (a ``usercustomize`` in the home folder) runs before the broker's mount check, and
a differing mount kills the container at once.

Real broker, real Docker engine, real kernels; the swaps are injected in-process at the
step an attacker would aim for (right before Docker is asked to start the container), or
made by a racing process of the user's uid with ``renameat2(RENAME_EXCHANGE)``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tornado.httpclient import HTTPClientError

from jupyter_tfenv.broker import policy
from jupyter_tfenv.checkpoints import mountcheck
from tests.checkpoints import test_storage_races
from tests.checkpoints.test_storage_races import start_error
from tests.conftest import CATALOG, KERNEL_GID, KERNEL_UID, PY_IMAGE, run_code, start_kernel

#: The real broker and broker-mode server of tests/checkpoints/test_storage_races.py.
broker = test_storage_races.broker
jp_server_config = test_storage_races.jp_server_config

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the broker runs as root"),
]

SLOW_PYTHON = (
    "#!/bin/sh\n"
    "# A user's slow start-up: it would leave a trace after ~0.8 s (the old grace was 1 s).\n"
    "sleep 0.8\n"
    'echo "$$" > ./slow-start-marker\n'
    'exec python3 "$@"\n'
)

LIST_MOUNTS = (
    "import os, json\n"
    "print(json.dumps({'cwd': sorted(os.listdir(os.getcwd())),\n"
    "    'ckpt': sorted(os.listdir(os.environ['TFENV_CHECKPOINT_DIR']))}))\n"
)


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    """The test catalog, plus ``slow``: its interpreter sleeps before it starts python."""
    slow = tmp_path / "slow"
    slow.mkdir()
    script = slow / "python"
    script.write_text(SLOW_PYTHON)
    script.chmod(0o755)
    entries = [
        *CATALOG,
        {
            "id": "slow",
            "image": PY_IMAGE,
            "python": "/opt/slow/python",
            "mounts": [{"source": str(slow), "target": "/opt/slow", "read_only": True}],
        },
    ]
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "environments": entries}))
    return path


@pytest.fixture
def jp_root_dir(tmp_path: Path) -> Path:
    """The notebook folder: a folder in the kernel user's home, as ``~/work`` would be.

    The user owns the home folder, so they can rename or replace the notebook folder.
    """
    home = tmp_path / "home"
    root = home / "work"
    root.mkdir(parents=True)
    for folder in (home, root):
        os.chown(folder, KERNEL_UID, KERNEL_GID)
    return root


@pytest.fixture
def secret(tmp_path: Path) -> Iterator[Path]:
    """Another user's private folder (root's, 0700), where a swap would lead."""
    path = tmp_path / "other-user"
    path.mkdir(mode=0o700)
    (path / "secret.txt").write_text("not yours\n")
    os.chown(path, 0, 0)
    yield path
    assert sorted(os.listdir(path)) == ["secret.txt"], "something was created in the secret"
    assert (path / "secret.txt").read_text() == "not yours\n"


class Swap:
    """Replace a folder by a symlink (its real folder moves aside); undo it."""

    def __init__(self) -> None:
        self.done: list[str] = []

    def __call__(self, path: str, target: Path) -> None:
        os.rename(path, path + ".moved")
        os.symlink(target, path)
        self.done.append(path)

    def undo(self) -> None:
        for path in self.done:
            os.unlink(path)
            os.rename(path + ".moved", path)
        self.done.clear()


def swap_before_docker_runs(
    running: Any, monkeypatch: pytest.MonkeyPatch, paths: Any, target: Path, swap: Swap
) -> None:
    """Right before the broker asks Docker for the container (after every check), swap
    each of ``paths()`` for a symlink to ``target``: the moment an attacker aims for."""
    real = running.app.kernel_backend._run

    async def swap_then_run(client: Any, env: Any, spec: dict[str, Any]) -> Any:
        for path in paths():
            Path(path, "mine.txt").write_text("checked\n")
            swap(path, target)
        return await real(client, env, spec)

    monkeypatch.setattr(running.app.kernel_backend, "_run", swap_then_run)


def checkpoint_folder(running: Any, env: str = "py") -> str:
    return str(Path(running.app.storage_config().root("checkpoints")) / running.user / env)


def mount_points_below(folder: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return [f.split()[4] for f in handle if f.split()[4].startswith(folder + "/")]


def test_a_staged_folder_is_the_checked_one_whatever_happens_to_its_path(tmp_path, secret):
    folder = tmp_path / "alice" / "proj"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("checked\n")
    checked = mountcheck.CheckedFolder.of(str(folder), os.stat(folder))
    staged = mountcheck.StagedMounts(str(tmp_path / "staging" / "mounts"))
    try:
        path = staged.stage(checked)
        Swap()(str(folder), secret)  # after the staging: changes nothing
        assert os.listdir(path) == ["mine.txt"]
        assert mount_points_below(staged.root) == [path]
        info = os.stat(path)
        assert (info.st_dev, info.st_ino) == (checked.dev, checked.ino)
        assert oct(os.stat(os.path.dirname(path)).st_mode & 0o777) == "0o700"
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            line = next(line for line in handle if line.split()[4] == path)
        assert "shared:" not in line
        # Swapped before the staging: refused, nothing is mounted.
        with pytest.raises(mountcheck.MountChangedError, match="is a symlink now"):
            staged.stage(checked)
    finally:
        staged.release()
    assert mount_points_below(staged.root) == []
    assert os.listdir(staged.root) == []
    assert sorted(os.listdir(str(folder) + ".moved")) == ["mine.txt"]
    os.unlink(folder)
    os.rename(str(folder) + ".moved", folder)
    mountcheck._umount(staged.root)


def test_staging_mounts_a_dead_broker_left_behind_are_detached_not_deleted(tmp_path, monkeypatch):
    folder = tmp_path / "alice" / "proj"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("keep me\n")
    root = str(tmp_path / "staging" / "mounts")
    left = mountcheck.StagedMounts(root)
    path = left.stage(mountcheck.CheckedFolder.of(str(folder), os.stat(folder)))
    old = os.stat(left.folder).st_mtime - 2 * mountcheck.STAGING_STALE_SECONDS
    os.utime(str(left.folder), (old, old))
    try:
        monkeypatch.setattr(mountcheck, "_SWEPT", set())  # a new broker process
        fresh = mountcheck.StagedMounts(root)
        fresh.stage(mountcheck.CheckedFolder.of(str(folder), os.stat(folder)))
        assert mount_points_below(root) == fresh.paths and path not in fresh.paths
        assert not os.path.exists(str(left.folder))
        fresh.release()
    finally:
        left.release()
        mountcheck._umount(root)
    assert (folder / "mine.txt").read_text() == "keep me\n"


async def test_a_checkpoint_folder_swapped_before_the_mount_keeps_the_checked_folder(
    jp_fetch, jp_serverapp, broker, secret, monkeypatch
):
    """The issue's attack on ``<root>/<user>/<env>``: the kernel gets the checked folder."""
    broker.start()
    swap = Swap()
    swap_before_docker_runs(broker, monkeypatch, lambda: [checkpoint_folder(broker)], secret, swap)
    try:
        kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
        assert swap.done, "the swap was not made"
        seen = json.loads(await run_code(jp_serverapp, kernel_id, LIST_MOUNTS))
    finally:
        swap.undo()
    assert seen["ckpt"] == ["mine.txt"]
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert not broker.containers()


@pytest.mark.slow
async def test_another_environments_checkpoints_are_staged_read_only(
    jp_fetch, jp_serverapp, broker, secret, monkeypatch, docker_engine
):
    """Train in 2.19, continue in 2.20, through the broker: the 2.19 folder is mounted
    read-only at /tfenv/checkpoints-of/tf219, and like the kernel's own folders it is the
    checked folder, bind-mounted by descriptor (a swap before Docker runs changes nothing)."""
    from tests.checkpoints.test_checkpoints import CONTINUE_FROM_OTHER, TRAIN

    broker.start()
    kernel_id = await start_kernel(jp_fetch, "tfenv-tf219", "nb.ipynb")
    try:
        trained = json.loads(
            (await run_code(jp_serverapp, kernel_id, TRAIN)).strip().splitlines()[-1]
        )
    finally:
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    source = checkpoint_folder(broker, "tf219")
    assert os.path.isfile(os.path.join(source, "tf", "checkpoint"))

    swap = Swap()
    swap_before_docker_runs(broker, monkeypatch, lambda: [source], secret, swap)
    try:
        kernel_id = await start_kernel(jp_fetch, "tfenv-tf220", "nb.ipynb")
        assert swap.done, "the swap was not made"
        try:
            out = await run_code(jp_serverapp, kernel_id, CONTINUE_FROM_OTHER)
            got = json.loads(out.strip().splitlines()[-1])
            (container,) = broker.containers(kernel_id)
            mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        finally:
            await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    finally:
        swap.undo()
    assert got["version"] == "2.20.0" and got["listed"] == ["tf219"]
    assert got["latest"] == "/tfenv/checkpoints-of/tf219/tf/ckpt-2"
    assert got["tf"] == trained["weights"] == got["h5"]
    assert got["write"] == "EROFS" and got["save"] != "saved"
    mount = mounts["/tfenv/checkpoints-of/tf219"]
    assert mount["RW"] is False
    assert mount["Source"].startswith(mountcheck.STAGING_ROOT + "/"), mount
    assert "mine.txt" in os.listdir(source)  # the checked folder got the swap's marker
    assert not broker.containers()


async def test_a_notebook_folder_swapped_before_the_mount_keeps_the_checked_folder(
    jp_fetch, jp_serverapp, jp_root_dir, broker, secret, monkeypatch
):
    broker.start()
    swap = Swap()
    swap_before_docker_runs(broker, monkeypatch, lambda: [str(jp_root_dir)], secret, swap)
    try:
        kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
        assert swap.done, "the swap was not made"
        seen = json.loads(await run_code(jp_serverapp, kernel_id, LIST_MOUNTS))
    finally:
        swap.undo()
    assert "mine.txt" in seen["cwd"] and "secret.txt" not in seen["cwd"]
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert not broker.containers()


async def test_a_failed_mount_does_not_tell_whether_a_path_exists(
    jp_fetch, jp_serverapp, broker, tmp_path, monkeypatch
):
    """A swap to an existing and to a missing root-only path: the same (working) start."""
    broker.start()
    hidden = tmp_path / "root-only"
    (hidden / "exists").mkdir(parents=True)
    hidden.chmod(0o700)
    seen = []
    real = broker.app.kernel_backend._run
    for target in (hidden / "exists", hidden / "missing"):
        swap = Swap()
        monkeypatch.setattr(broker.app.kernel_backend, "_run", real)
        swap_before_docker_runs(
            broker, monkeypatch, lambda: [checkpoint_folder(broker)], target, swap
        )
        try:
            kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
            seen.append(json.loads(await run_code(jp_serverapp, kernel_id, LIST_MOUNTS))["ckpt"])
        finally:
            swap.undo()
        await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert seen == [["mine.txt"], ["mine.txt"]]
    assert os.listdir(hidden / "exists") == [] and not (hidden / "missing").exists()
    assert not broker.containers()


async def test_a_broker_that_cannot_mount_refuses_to_start_kernels(jp_fetch, broker, monkeypatch):
    """No CAP_SYS_ADMIN (or another mount namespace): fail closed, saying what to do,
    never fall back to letting Docker mount the user's path."""
    broker.start()

    def no_mount(source: Any, target: str, flags: int) -> None:
        raise PermissionError(1, "Operation not permitted", target)

    monkeypatch.setattr(mountcheck, "_mount", no_mount)
    code, message = await start_error(jp_fetch, "tfenv-py")
    assert code == 500
    assert "could not bind-mount" in message and "CAP_SYS_ADMIN" in message
    assert "mount namespace" in message
    assert not broker.containers()


async def test_the_launcher_imports_no_usercustomize_but_the_kernel_has_the_user_site(
    jp_fetch, jp_serverapp, jp_root_dir, broker, monkeypatch
):
    """HOME is the notebook folder: its usercustomize.py must not run in the launcher
    (before the broker checked the mounts); the kernel still imports --user packages."""
    real = policy.caller_from_model

    def home_in_the_notebook_folder(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real(*args, **kwargs), home=str(jp_root_dir))

    monkeypatch.setattr(policy, "caller_from_model", home_in_the_notebook_folder)
    site = jp_root_dir / ".local" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "usercustomize.py").write_text(
        "import os, sys\n"
        "name = 'customized-%s-%d' % (os.path.basename(sys.argv[0]) or 'python', os.getpid())\n"
        "open(os.path.join(os.environ['HOME'], name), 'w').close()\n"
    )
    (site / "tfenv_user_package.py").write_text("WHERE = 'the user site'\n")
    for folder, _, files in os.walk(jp_root_dir / ".local"):
        os.chown(folder, KERNEL_UID, KERNEL_GID)
        for name in files:
            os.chown(os.path.join(folder, name), KERNEL_UID, KERNEL_GID)
    broker.start()
    kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
    out = await run_code(
        jp_serverapp,
        kernel_id,
        "import os, sys, tfenv_user_package\n"
        "print(os.environ['HOME'], tfenv_user_package.WHERE, sys.argv[0])\n",
    )
    assert out.split() == [str(jp_root_dir), "the", "user", "site", "/opt/tfenv/launch.py"]
    await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    assert not broker.containers()
    markers = [n for n in os.listdir(jp_root_dir) if n.startswith("customized-")]
    assert markers == [], "usercustomize.py ran in the kernel container"


async def test_a_differing_mount_kills_the_container_before_user_code_runs_on(
    jp_fetch, jp_root_dir, broker, monkeypatch
):
    """Strict mode: no grace for a container whose mount is not the checked folder."""
    broker.start()
    real = mountcheck.verify_mounts

    def another_folder(container: Any, checked: Any, **kwargs: Any) -> None:
        folders = list(checked)
        folders[0] = dataclasses.replace(folders[0], ino=folders[0].ino + 1)
        real(container, folders, **kwargs)

    monkeypatch.setattr(mountcheck, "verify_mounts", another_folder)
    code, message = await start_error(jp_fetch, "tfenv-slow")
    assert code == 403
    assert "changed between the check and the mount" in message
    assert "another folder at" in message
    assert not broker.containers()
    # The slow start-up would have written its marker ~0.8 s after the container started.
    assert not (jp_root_dir / "slow-start-marker").exists()


RACER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = int(sys.argv[1])
a, b = sys.argv[2].encode(), sys.argv[3].encode()
os.setgroups([]); os.setgid(int(sys.argv[5])); os.setuid(int(sys.argv[4]))
sys.stdout.write("racing\n"); sys.stdout.flush()
while True:
    if libc.renameat2(fd, a, fd, b, 2) != 0:  # RENAME_EXCHANGE
        sys.exit("renameat2: " + os.strerror(ctypes.get_errno()))
"""


async def test_a_user_swapping_the_notebook_folder_in_a_loop_never_gets_the_secret(
    jp_fetch, jp_serverapp, jp_root_dir, broker, secret, monkeypatch
):
    """The user's own process exchanges their notebook folder and a symlink to another
    user's folder as fast as it can while the broker starts kernels: each start either
    fails with a message, or the kernel has the folder that was checked."""
    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        pytest.skip("no renameat2 in this C library")
    parent = jp_root_dir.parent  # the user's home: the folder they may mount from
    broker.app.allowed_mount_roots = [str(parent)]
    broker.start()
    (jp_root_dir / "mine.txt").write_text("checked\n")
    os.symlink(secret, parent / "decoy")
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    names = (jp_root_dir.name.encode(), b"decoy")
    argv = [sys.executable, "-c", RACER, str(fd), jp_root_dir.name, "decoy"]
    racer = subprocess.Popen(  # noqa: ASYNC220 - it runs beside the loop, killed below
        [*argv, str(KERNEL_UID), str(KERNEL_GID)], pass_fds=[fd], stdout=subprocess.PIPE
    )

    def pause() -> None:
        """Stop the racer; put the real folder back in place if it was out."""
        os.kill(racer.pid, signal.SIGSTOP)
        os.waitpid(racer.pid, os.WUNTRACED)
        if jp_root_dir.is_symlink():
            assert libc.renameat2(fd, names[0], fd, names[1], 2) == 0

    # It races the broker only: the user's own server failing on its own folder is not
    # what this is about.
    real = broker.app.start_kernel

    async def racing_start(caller: Any, body: Any) -> Any:
        os.kill(racer.pid, signal.SIGCONT)
        try:
            return await real(caller, body)
        finally:
            pause()

    monkeypatch.setattr(broker.app, "start_kernel", racing_start)
    outcomes: list[str] = []
    try:
        assert racer.stdout is not None and racer.stdout.readline() == b"racing\n"
        pause()
        for _ in range(12):
            try:
                kernel_id = await start_kernel(jp_fetch, "tfenv-py", "nb.ipynb")
            except HTTPClientError as err:
                assert err.response is not None
                message = str(json.loads(err.response.body)["message"])
                assert err.code in (400, 403), message
                assert str(jp_root_dir) in message
                # Refused at a check, never because a container had another folder.
                assert "another folder at" not in message
                outcomes.append("refused")
                continue
            seen = json.loads(await run_code(jp_serverapp, kernel_id, LIST_MOUNTS))
            assert "secret.txt" not in seen["cwd"]
            assert "mine.txt" in seen["cwd"]
            outcomes.append("started")
            await jp_fetch("api", "kernels", kernel_id, method="DELETE")
    finally:
        racer.kill()
        racer.wait()
        if jp_root_dir.is_symlink():
            libc.renameat2(fd, names[0], fd, names[1], 2)
        os.close(fd)
    assert len(outcomes) == 12, outcomes
    assert not broker.containers()


def test_kernelspecs_of_older_versions_start_the_launcher_isolated_too():
    from jupyter_tfenv.backends.docker.engine import isolated_launcher, launcher_command

    old = ["python3", "/opt/tfenv/launch.py", "-f", "/r/kernel.json"]
    assert isolated_launcher(old) == launcher_command("python3", "/r/kernel.json")
    assert isolated_launcher(isolated_launcher(old)) == isolated_launcher(old)
    other = ["python3", "-m", "ipykernel_launcher", "-f", "/r/kernel.json"]
    assert isolated_launcher(other) == other
