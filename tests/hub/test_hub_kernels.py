"""Each hub user's TensorFlow kernel, started through the proxy with the user's own token.

The kernel runs as the user's Unix uid, writes into the user's home and checkpoint
folder as that user, and its container is hardened and carries no hub token.
"""

from __future__ import annotations

import grp
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_tfenv.checkpoints import mountcheck

from .harness import ALICE, BOB, KERNEL_LABEL, HubHarness, UnixUser, tfenv_containers

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def single_user_token(name: str) -> str:
    """$JUPYTERHUB_API_TOKEN of ``name``'s running jupyterhub-singleuser process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"jupyterhub-singleuser" not in cmdline:
            continue
        values = dict(item.split(b"=", 1) for item in environ if b"=" in item)
        if values.get(b"JUPYTERHUB_USER") == name.encode():
            return values[b"JUPYTERHUB_API_TOKEN"].decode()
    raise AssertionError(f"no jupyterhub-singleuser process of {name}")


def broker_token(hub: HubHarness) -> str:
    for pid in hub.broker_pids():
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        for item in environ:
            if item.startswith(b"JUPYTERHUB_API_TOKEN="):
                return item.split(b"=", 1)[1].decode()
    raise AssertionError("no broker process with a JUPYTERHUB_API_TOKEN")


def kernel_container(hub: HubHarness, kernel_id: str) -> Any:
    found = [c for c in tfenv_containers(hub.users) if c.labels.get(KERNEL_LABEL) == kernel_id]
    assert len(found) == 1, f"kernel {kernel_id}: containers {[c.name for c in found]}"
    return found[0]


def run_as(user: str, code: str) -> str:
    """``code`` run by Debian's python3 as ``user`` (a login-less runuser); its output."""
    result = subprocess.run(
        ["runuser", "-u", user, "--", "/usr/bin/python3", "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        timeout=60,
    )
    return (result.stdout + result.stderr).strip()


TF_CODE = """
import json, os
import tensorflow as tf
ckpt = tf.train.Checkpoint(v=tf.Variable(3.0))
saved = ckpt.save(os.path.join(os.environ["TFENV_CHECKPOINT_DIR"], "hubtest", "ckpt"))
with open({marker!r}, "w") as f:
    f.write("written by the kernel")
print(json.dumps({{
    "tf": tf.__version__,
    "uid": os.getuid(),
    "gid": os.getgid(),
    "cwd": os.getcwd(),
    "checkpoint_dir": os.environ["TFENV_CHECKPOINT_DIR"],
    "saved": saved,
    "hub_env": sorted(k for k in os.environ if k.startswith("JUPYTERHUB")),
}}))
"""


@pytest.mark.parametrize("owner", [ALICE, BOB])
def test_tf_kernel_runs_as_the_user(
    hub: HubHarness,
    alice_server: str,
    bob_server: str,
    kernels: Callable[..., str],
    owner: str,
) -> None:
    user: UnixUser = hub.users[owner]
    kernel_id = kernels(owner, "tf220")
    marker = f"hub-test-{uuid.uuid4().hex[:8]}.txt"
    out = hub.run_code(owner, kernel_id, TF_CODE.format(marker=marker), timeout=240)
    facts = json.loads(out.strip().splitlines()[-1])

    assert facts["tf"] == "2.20.0"
    assert (facts["uid"], facts["gid"]) == (user.uid, user.gid)
    assert facts["hub_env"] == [], "JUPYTERHUB_* variables reached the kernel"

    # The notebook folder is the user's home, mounted at the same path.
    assert facts["cwd"] == str(user.home)
    written = user.home / marker
    assert written.read_text() == "written by the kernel"
    assert (written.stat().st_uid, written.stat().st_gid) == (user.uid, user.gid)
    written.unlink()

    # The checkpoint lands in the user's own folder on the host, owned by the user.
    assert hub.paths is not None
    user_folder = hub.paths.checkpoint_root / owner
    host_dir = user_folder / "tf220" / "hubtest"
    index = host_dir / "ckpt-1.index"
    assert index.is_file(), f"{index} missing; {host_dir} holds {sorted(os.listdir(host_dir))}"
    assert index.stat().st_uid == user.uid
    assert host_dir.stat().st_uid == user.uid
    # Only the environment's folder is the user's; the one above it is root's (the user
    # can neither rename nor replace what is mounted), open to the user's group only.
    env_folder = user_folder / "tf220"
    assert env_folder.stat().st_uid == user.uid
    assert env_folder.stat().st_mode & 0o077 == 0, "a user's checkpoint folder is not private"
    assert (user_folder.stat().st_uid, user_folder.stat().st_gid) == (0, user.gid)
    assert user_folder.stat().st_mode & 0o027 == 0, "a user's checkpoint folder is not private"

    # And the user's server lists it (read as the user, through tfenv's API).
    listing = hub.user_request("GET", owner, "tfenv/checkpoints/tf220", hub.token(owner))
    assert listing.status_code == 200, listing.text
    assert "hubtest" in listing.text


def test_container_is_hardened_and_carries_no_token(
    hub: HubHarness, alice_server: str, kernels: Callable[..., str]
) -> None:
    alice = hub.users[ALICE]
    kernel_id = kernels(ALICE, "py")
    out = hub.run_code(
        ALICE,
        kernel_id,
        "import os; print(sorted(k for k in os.environ if k.startswith('JUPYTERHUB')))",
    )
    assert out.strip() == "[]"

    attrs = kernel_container(hub, kernel_id).attrs
    config, host = attrs["Config"], attrs["HostConfig"]
    assert config["User"] == f"{alice.uid}:{alice.gid}"
    assert host["CapDrop"] == ["ALL"] or "ALL" in (host["CapDrop"] or [])
    assert not host.get("CapAdd")
    assert any(opt.startswith("no-new-privileges") for opt in host["SecurityOpt"] or [])
    assert host["NetworkMode"] == "none"
    assert not host.get("Privileged")
    env = config.get("Env") or []
    assert not [e for e in env if e.startswith("JUPYTERHUB_")], env

    # Writable mounts are Alice's own folders only; nothing of Docker's is mounted. The
    # folders the broker checked reach Docker as staging mounts of their descriptors
    # (detached once the container runs): what the container has there is compared with
    # Alice's folders by identity, seen through the container's own root.
    assert hub.paths is not None
    own = [
        str(alice.home),
        f"{hub.paths.runtime_root}/{alice.uid}/",
        f"{hub.paths.checkpoint_root}/{ALICE}/",
        f"{hub.paths.log_root}/{ALICE}/",
    ]
    own_folders = [alice.home] + [
        folder
        for root in (hub.paths.checkpoint_root, hub.paths.log_root)
        for folder in (root / ALICE).iterdir()
    ]
    identities = {(f.stat().st_dev, f.stat().st_ino) for f in own_folders}
    pid = attrs["State"]["Pid"]
    mounts = attrs.get("Mounts") or []
    assert "docker.sock" not in json.dumps(mounts)
    for mount in mounts:
        if not mount.get("RW"):
            continue
        source = mount.get("Source", "")
        if source.startswith(mountcheck.STAGING_ROOT + "/"):
            assert not os.path.exists(source), f"staging mount left behind: {mount}"
            seen = os.stat(f"/proc/{pid}/root{mount['Destination']}")
            assert (seen.st_dev, seen.st_ino) in identities, mount
        else:
            assert any(source == o.rstrip("/") or source.startswith(o) for o in own), mount

    secrets = {
        "alice's API token": hub.token(ALICE),
        "alice's server token": single_user_token(ALICE),
        "the broker's token": broker_token(hub),
        "the driver's token": hub.driver_token,
    }
    exposed = json.dumps([env, config.get("Cmd"), config.get("Entrypoint"), config["Labels"]])
    for what, value in secrets.items():
        assert value not in exposed, f"{what} is in the container's Env/Cmd/Labels"


@pytest.mark.parametrize("owner", [ALICE, BOB])
def test_users_cannot_open_the_docker_socket(hub: HubHarness, owner: str) -> None:
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect('/var/run/docker.sock')\n"
        "    print('CONNECTED')\n"
        "except OSError as err:\n"
        "    print(type(err).__name__)\n"
    )
    assert run_as(owner, code) == "PermissionError"


@pytest.mark.parametrize("owner", [ALICE, BOB])
def test_servers_run_as_their_users(
    hub: HubHarness, alice_server: str, bob_server: str, owner: str
) -> None:
    user = hub.users[owner]
    found: list[tuple[set[str], list[str]]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"jupyterhub-singleuser" in cmdline and f"JUPYTERHUB_USER={owner}".encode() in environ:
            uids = next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1:]
            groups = next(ln for ln in status.splitlines() if ln.startswith("Groups:")).split()[1:]
            found.append((set(uids), groups))
    assert found, f"no jupyterhub-singleuser process of {owner}"
    docker_gid = str(grp.getgrnam("docker").gr_gid) if _has_group("docker") else None
    for process_uids, process_groups in found:
        assert process_uids == {str(user.uid)}, f"{owner}'s server runs as uids {process_uids}"
        assert docker_gid not in process_groups, f"{owner}'s server is in the docker group"


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
