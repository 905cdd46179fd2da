"""The broker's and the local provisioner's defences against other users on the host
(issue 13, items 3, 5 and 7): system accounts are no callers, runtime folders are never
shared or trusted when someone else made them, symlinks in a user's runtime folder reveal
nothing, probes count against the quotas, and a broker sees only its own containers.

Unit tests use real folders, sockets and uids (these tests run as root); the HTTP tests
run the real broker (tests/broker/test_broker_e2e.py's, with a stand-in for the hub's token
check) against the real Docker engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from jupyter_tfenv.broker import policy
from jupyter_tfenv.broker.policy import BrokerError, Usage
from jupyter_tfenv.core.caller import Caller
from jupyter_tfenv.errors import KernelStartError
from jupyter_tfenv.kernels.connection import default_runtime_root, prepare_runtime_root
from jupyter_tfenv.provisioning.provisioner import DockerKernelProvisioner
from tests.broker.test_broker_e2e import SCOPE, SERVICE, TOKEN, Broker, StandInHubAuth, broker
from tests.conftest import KERNEL_GID, KERNEL_UID, PY_IMAGE
from tests.support.broker_process import ACCOUNT, UnixUser, unix_account

# The real broker fixture, shared with tests/broker/test_broker_e2e.py; a real Unix account.
__all__ = ["broker", "unix_account"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (other uids, chown)")

OTHER_UID = 4242
KID = "3f2a9c1e-7b6d-4e2a-9f1c-0123456789ab"


def mode(path: str | Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short folder in /tmp (Unix socket paths), root's, 0700."""
    path = Path(tempfile.mkdtemp(prefix="tfh-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- 3. system accounts are no callers -------------------------------------------------------


def model(name: str) -> dict[str, Any]:
    return {"kind": "user", "name": name, "scopes": [SCOPE], "groups": []}


@pytest.mark.parametrize("name", ["daemon", "nobody", "root"])
def test_system_accounts_are_refused(name: str) -> None:
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"no Unix account {name} here")
    with pytest.raises(BrokerError) as info:
        policy.caller_from_model(model(name), scope_ok=True)
    err = info.value
    assert (err.http_status, err.reason) == (403, "system account")
    assert f"'{name}'" in err.message
    assert f"uid {account.pw_uid}" in err.message
    assert "c.TFEnvBroker.min_uid" in err.message
    if name == "daemon":
        assert "below the broker's minimum uid 1000" in err.message


def test_min_uid_is_configurable_but_root_and_nobody_never_pass(unix_account: UnixUser) -> None:
    daemon = pwd.getpwnam("daemon")
    caller = policy.caller_from_model(model("daemon"), scope_ok=True, min_uid=1)
    assert caller.uid == daemon.pw_uid
    for name in ("root", "nobody"):
        with pytest.raises(BrokerError, match=r"whatever c\.TFEnvBroker\.min_uid says"):
            policy.caller_from_model(model(name), scope_ok=True, min_uid=0)
    # The test suite's users (useradd: uids from 1000) pass the default.
    assert policy.caller_from_model(model(ACCOUNT), scope_ok=True).uid >= 1000
    with pytest.raises(BrokerError, match="below the broker's minimum uid 5000"):
        policy.caller_from_model(model(ACCOUNT), scope_ok=True, min_uid=5000)


def test_min_uid_trait() -> None:
    from jupyter_tfenv.broker.app import TFEnvBroker

    assert TFEnvBroker().min_uid == 1000
    assert "min_uid" in TFEnvBroker.class_get_help()
    broker_app = TFEnvBroker()
    broker_app.initialize(["--TFEnvBroker.min_uid=2000"])
    assert broker_app.min_uid == 2000


async def fetch(
    broker: Broker, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    request = HTTPRequest(
        broker.url + path,
        method=method,
        headers={"Authorization": f"token {token}"},
        body=None if method in ("GET", "DELETE") else json.dumps(body or {}),
        request_timeout=120,
    )
    response = await AsyncHTTPClient().fetch(request, raise_error=False)
    return response.code, json.loads(response.body) if response.body else None


@pytest.mark.docker
async def test_the_real_broker_refuses_system_accounts_before_any_folder(
    broker: Broker, jp_root_dir: Path, tmp_path: Path
) -> None:
    broker.app.hub_auth = StandInHubAuth(
        {f"{n}-token": model(n) for n in ("daemon", "nobody", "root")} | {TOKEN: model(broker.user)}
    )
    broker.start()
    ck, logs = Path(broker.app.checkpoint_root), Path(broker.app.log_root)
    for name in ("daemon", "nobody", "root"):
        account = pwd.getpwnam(name)
        token = f"{name}-token"
        # daemon (uid 1) is below the default 1000; root and nobody are refused even at 0.
        broker.app.min_uid = 1000 if name == "daemon" else 0
        start = {"kernel_id": KID, "environment": "py", "cwd": account.pw_dir}
        answers = [
            await fetch(broker, "POST", f"api/kernels/{KID}/runtime", token, {}),
            await fetch(broker, "POST", "api/kernels", token, start),
            await fetch(broker, "GET", "api/environments/py/probe?refresh=1", token),
            await fetch(broker, "GET", "api/me", token),
        ]
        for status, answer in answers:
            assert (status, answer["reason"]) == (403, "system account"), answer
            assert f"uid {account.pw_uid}" in answer["message"]
            assert "c.TFEnvBroker.min_uid" in answer["message"]
        # Nothing was made for it: no runtime folder, no checkpoint or log folder.
        assert not Path(broker.runtime_root, str(account.pw_uid)).exists()
    assert os.listdir(broker.runtime_root) == []
    assert not ck.exists() and not logs.exists()
    assert not broker.containers()
    # An ordinary user still gets a runtime folder from the same broker.
    broker.app.min_uid = 1000
    status, answer = await fetch(broker, "POST", f"api/kernels/{KID}/runtime", TOKEN, {})
    assert status == 200
    assert Path(answer["runtime_dir"]).parent == Path(broker.runtime_root, str(KERNEL_UID))


# -- 5. the local provisioner's runtime root -----------------------------------------------


def test_a_runtime_root_of_another_uid_is_refused(short_tmp: Path) -> None:
    root = short_tmp / "tfenv-0"
    root.mkdir(mode=0o711)
    os.chown(root, OTHER_UID, OTHER_UID)
    with pytest.raises(KernelStartError) as info:
        prepare_runtime_root(str(root))
    message = str(info.value)
    assert f"{root} belongs to uid {OTHER_UID}, not to this server's uid 0" in message
    assert "c.DockerKernelProvisioner.runtime_root" in message
    assert os.lstat(root).st_uid == OTHER_UID  # left as it was


def test_a_symlinked_runtime_root_is_refused(short_tmp: Path) -> None:
    target = short_tmp / "elsewhere"
    target.mkdir(mode=0o755)
    root = short_tmp / "tfenv-0"
    root.symlink_to(target)
    with pytest.raises(KernelStartError, match=f"{root} is a symlink \\(to {target}\\)"):
        prepare_runtime_root(str(root))
    assert mode(target) == 0o755  # never chmod-ed through the link
    # A symlink to a folder of another uid, and a dangling one, too.
    os.chown(target, OTHER_UID, OTHER_UID)
    with pytest.raises(KernelStartError, match="is a symlink"):
        prepare_runtime_root(str(root))
    root.unlink()
    root.symlink_to(short_tmp / "missing")
    with pytest.raises(KernelStartError, match="is a symlink"):
        prepare_runtime_root(str(root))
    assert not (short_tmp / "missing").exists()


@pytest.mark.parametrize("bad_mode", [0o777, 0o770, 0o1777])
def test_a_runtime_root_others_can_write_to_is_refused(short_tmp: Path, bad_mode: int) -> None:
    root = short_tmp / "rt"
    root.mkdir()
    os.chmod(root, bad_mode)
    with pytest.raises(KernelStartError, match="is writable by other users"):
        prepare_runtime_root(str(root))


def test_a_runtime_root_that_is_a_file_or_in_an_open_folder_is_refused(short_tmp: Path) -> None:
    (short_tmp / "file").write_text("x")
    with pytest.raises(KernelStartError, match="is not a folder"):
        prepare_runtime_root(str(short_tmp / "file"))
    open_parent = short_tmp / "open"
    open_parent.mkdir()
    os.chmod(open_parent, 0o777)  # no sticky bit: anyone could rename our folder away
    with pytest.raises(KernelStartError, match="no sticky bit"):
        prepare_runtime_root(str(open_parent / "rt"))


def test_a_good_runtime_root_is_made_or_kept(short_tmp: Path) -> None:
    fresh = short_tmp / "a" / "rt"
    old_umask = os.umask(0o077)
    try:
        assert prepare_runtime_root(str(fresh)) == str(fresh)
    finally:
        os.umask(old_umask)
    assert (os.lstat(fresh).st_uid, mode(fresh)) == (0, 0o711)
    mine = short_tmp / "mine"
    mine.mkdir(mode=0o700)
    prepare_runtime_root(str(mine))
    assert mode(mine) == 0o711
    # /tmp itself (1777, sticky) is a fine parent: the default /tmp/tfenv-<uid>.
    assert prepare_runtime_root(str(short_tmp)) == str(short_tmp)


def test_the_provisioner_refuses_a_runtime_root_of_another_uid(short_tmp: Path) -> None:
    root = short_tmp / "rt"
    root.mkdir(mode=0o711)
    os.chown(root, OTHER_UID, OTHER_UID)
    prov = DockerKernelProvisioner(kernel_id=KID, runtime_root=str(root))
    with pytest.raises(KernelStartError, match=f"belongs to uid {OTHER_UID}"):
        prov._prepare_runtime_dir(restart=False)
    assert os.listdir(root) == []  # no kernel folder was made in it
    os.chown(root, 0, 0)
    rundir = Path(prov._prepare_runtime_dir(restart=False))
    assert rundir.parent == root
    assert mode(rundir) == 0o700


def test_the_default_runtime_root(short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = os.getuid()
    fallback = f"/tmp/tfenv-{uid}"
    assert default_runtime_root({}) == fallback
    xdg = short_tmp / "xdg"
    xdg.mkdir(mode=0o700)
    assert default_runtime_root({"XDG_RUNTIME_DIR": str(xdg)}) == f"{xdg}/tfenv"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert DockerKernelProvisioner(kernel_id=KID).runtime_root == f"{xdg}/tfenv"
    # Not usable: another user's, open to others, a symlink, relative, too long.
    os.chown(xdg, OTHER_UID, OTHER_UID)
    assert default_runtime_root({"XDG_RUNTIME_DIR": str(xdg)}) == fallback
    os.chown(xdg, uid, uid)
    os.chmod(xdg, 0o755)
    assert default_runtime_root({"XDG_RUNTIME_DIR": str(xdg)}) == fallback
    os.chmod(xdg, 0o700)
    (short_tmp / "link").symlink_to(xdg)
    assert default_runtime_root({"XDG_RUNTIME_DIR": str(short_tmp / "link")}) == fallback
    assert default_runtime_root({"XDG_RUNTIME_DIR": "run/user/0"}) == fallback
    deep = xdg / ("d" * 90)
    deep.mkdir(mode=0o700)
    assert default_runtime_root({"XDG_RUNTIME_DIR": str(deep)}) == fallback


# -- 7. runtime folder names, socket checks, probes, broker ids -------------------------------


def test_kernel_ids_with_the_same_prefix_get_their_own_folders(short_tmp: Path) -> None:
    caller = Caller(name="alice", uid=1001, gid=1001, home="/home/alice")
    root = str(short_tmp / "rt")
    first, second = KID, KID[:-1] + "c"
    assert KID.replace("-", "")[:12] == second.replace("-", "")[:12]  # the old names clashed
    one = policy.prepare_runtime_dir(root, caller, first)
    (Path(one) / "kernel.json").write_text("{}")
    two = policy.prepare_runtime_dir(root, caller, second)
    assert one != two
    assert (Path(one) / "kernel.json").exists()  # the second kernel did not replace it
    assert policy.runtime_dir_for(root, caller.uid, second) == two
    # Long ids (up to 64 characters) are hashed: still one folder per id, still short.
    long_a, long_b = "a" * 63 + "1", "a" * 63 + "2"
    names = {policy.runtime_name(k) for k in (long_a, long_b, "a" * 36, "a" * 37)}
    assert len(names) == 4
    assert all(len(n) <= policy.RUNTIME_NAME_MAX for n in names)
    assert policy.runtime_name(long_a) == policy.runtime_name(long_a)
    assert policy.runtime_name(long_a).startswith("_")  # no kernel id starts with '_'
    with pytest.raises(BrokerError):
        policy.check_kernel_id("_" + "a" * 32)


def test_local_kernels_with_the_same_prefix_get_their_own_folders(short_tmp: Path) -> None:
    """The local provisioner names folders as the broker does: a second kernel whose id
    shares the first 12 hex digits no longer removes the first one's live folder."""
    root = short_tmp / "rt"
    second = KID[:-1] + "c"
    one = Path(
        DockerKernelProvisioner(kernel_id=KID, runtime_root=str(root))._prepare_runtime_dir(
            restart=False
        )
    )
    (one / "kernel.json").write_text("{}")
    two = Path(
        DockerKernelProvisioner(kernel_id=second, runtime_root=str(root))._prepare_runtime_dir(
            restart=False
        )
    )
    assert one != two
    assert (one / "kernel.json").exists()


def bind_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def test_sockets_bound_follows_no_symlink(short_tmp: Path) -> None:
    rundir = short_tmp / "run"
    rundir.mkdir()
    outside = short_tmp / "out"
    outside.mkdir()
    bind_socket(outside / "s")
    (outside / "f").write_text("x")
    info = {"ip": f"{rundir}/k", **{f"{ch}_port": i for i, ch in enumerate(policy.CHANNELS, 1)}}
    paths = policy.socket_paths(info)
    assert not policy.sockets_bound(paths, str(rundir))
    # The user's links to an existing socket or file elsewhere count as nothing.
    for i, path in enumerate(paths):
        os.symlink(outside / ("s" if i % 2 else "f"), path)
    assert not policy.sockets_bound(paths, str(rundir))
    for path in paths:
        os.unlink(path)
    # Nor does a path that leaves the folder through a link and '..'.
    os.symlink(outside, rundir / "x")
    escaping = [f"{rundir}/x/../k-{i}" for i in range(1, 6)]
    for i in range(1, 6):
        bind_socket(short_tmp / f"k-{i}")
    assert not policy.sockets_bound(escaping, str(rundir))
    assert not policy.sockets_bound([str(short_tmp / "k-1")], str(rundir))
    # A regular file is no socket either; real sockets in the folder are.
    (rundir / "k-1").write_text("x")
    assert not policy.sockets_bound(paths[:1], str(rundir))
    os.unlink(rundir / "k-1")
    for path in paths:
        bind_socket(Path(path))
    assert policy.sockets_bound(paths, str(rundir))
    with pytest.raises(BrokerError, match="socket path prefix"):
        policy.check_connection_info(
            {**info, "transport": "ipc", "ip": f"{rundir}/x/../k"}, str(rundir)
        )


def test_probes_count_in_the_kernel_and_gpu_quota() -> None:
    caller = Caller(name="alice", uid=1001, gid=1001, home="/home/alice")
    usage = policy.usage_of([0], [1])
    assert usage == Usage(kernels=1, gpus=1, probes=1)
    with pytest.raises(BrokerError) as info:
        policy.check_quota(caller, usage, 0, max_kernels=2, max_gpus=None)
    assert info.value.http_status == 429
    assert "alice already runs 1 tfenv kernel and 1 environment probe" in info.value.message
    with pytest.raises(BrokerError, match="this environment probe needs 1 more"):
        policy.check_quota(caller, usage, 1, max_kernels=3, max_gpus=1, probe=True)
    policy.check_quota(caller, usage, 0, max_kernels=3, max_gpus=1, probe=True)


def write_connection_file(rundir: Path) -> None:
    ports = {f"{ch}_port": 50000 + i for i, ch in enumerate(policy.CHANNELS)}
    info = {"transport": "ipc", "ip": f"{rundir}/k", "key": "k", "signature_scheme": "hmac-sha256"}
    path = rundir / "kernel.json"
    path.write_text(json.dumps({**info, **ports}))
    os.chown(path, KERNEL_UID, KERNEL_GID)
    os.chmod(path, 0o600)


@pytest.mark.docker
async def test_a_running_probe_counts_against_the_quota(
    broker: Broker, jp_root_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jupyter_tfenv.backends.docker.backend as docker_backend

    broker.app.max_kernels_per_user = 1
    broker.app.probe_cache_dir = str(tmp_path / "probes")
    # An in-process step that holds the (real) probe until the test lets it go.
    release, entered = threading.Event(), threading.Event()
    real_probe = docker_backend.probe_image

    def held_probe(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(120)
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(docker_backend, "probe_image", held_probe)
    broker.start()
    probing = asyncio.ensure_future(
        fetch(broker, "GET", "api/environments/py/probe?refresh=1", TOKEN)
    )
    try:
        assert await asyncio.to_thread(entered.wait, 120)
        status, me = await fetch(broker, "GET", "api/me", TOKEN)
        assert status == 200
        assert me["usage"] == {"kernels": 0, "gpus": 0, "probes": 1}
        # A second probe (another environment) and a kernel are both beyond the limit.
        status, answer = await fetch(broker, "GET", "api/environments/tf220/probe?refresh=1", TOKEN)
        assert (status, answer["reason"]) == (429, "kernel quota")
        assert "1 environment probe" in answer["message"]
        assert "start this environment probe again" in answer["message"]
        (jp_root_dir / "nb").mkdir()
        os.chown(jp_root_dir / "nb", KERNEL_UID, KERNEL_GID)
        status, answer = await fetch(broker, "POST", f"api/kernels/{KID}/runtime", TOKEN, {})
        assert status == 200
        write_connection_file(Path(answer["runtime_dir"]))
        start = {"kernel_id": KID, "environment": "py", "cwd": str(jp_root_dir / "nb")}
        status, answer = await fetch(broker, "POST", "api/kernels", TOKEN, start)
        assert (status, answer["reason"]) == (429, "kernel quota"), answer
        assert "and 1 environment probe" in answer["message"]
        assert not broker.containers(KID)
    finally:
        release.set()
        status, result = await probing
    assert status == 200 and result["state"] == "ok", result
    status, me = await fetch(broker, "GET", "api/me", TOKEN)
    assert me["usage"]["probes"] == 0
    assert broker.app.kernel_backend._probing == {}
    # A cached probe starts no container and is answered whatever the usage.
    entered.clear()
    status, result = await fetch(broker, "GET", "api/environments/py/probe", TOKEN)
    assert (status, result["cached"]) == (200, True)
    assert not entered.is_set()


@pytest.mark.docker
async def test_a_broker_sees_only_its_own_containers(broker: Broker, jp_root_dir: Path) -> None:
    assert broker.app.broker_id == SERVICE  # the default: the service name
    broker.start()
    client = docker.from_env(timeout=60)
    labels = {
        "org.jupyter.tfenv.owner": broker.user,
        "org.jupyter.tfenv.uid": str(KERNEL_UID),
        "org.jupyter.tfenv.kernel-id": KID,
        "org.jupyter.tfenv.environment": "py",
        "org.jupyter.tfenv.gpus": "0",
    }

    def sleeper(broker_id: str) -> Any:
        return client.containers.run(
            PY_IMAGE,
            ["sleep", "300"],
            detach=True,
            labels={**labels, "org.jupyter.tfenv.broker": broker_id},
            network_mode="none",
            user=f"{KERNEL_UID}:{KERNEL_GID}",
        )

    foreign = sleeper("another-broker")
    try:
        # Same owner, uid and kernel id, another broker's: not listed, counted or touched.
        status, listing = await fetch(broker, "GET", "api/kernels", TOKEN)
        assert (status, listing) == (200, {"kernels": []})
        status, me = await fetch(broker, "GET", "api/me", TOKEN)
        assert me["usage"]["kernels"] == 0
        assert (await fetch(broker, "GET", f"api/kernels/{KID}", TOKEN))[0] == 404
        signal = await fetch(broker, "POST", f"api/kernels/{KID}/signal", TOKEN, {"signal": 9})
        assert signal[0] == 404
        assert (await fetch(broker, "DELETE", f"api/kernels/{KID}", TOKEN))[0] == 404
        foreign.reload()
        assert foreign.status == "running"
        # The same container with this broker's id is this broker's (the control).
        own = sleeper(SERVICE)
        status, listing = await fetch(broker, "GET", "api/kernels", TOKEN)
        assert [k["container_id"] for k in listing["kernels"]] == [own.id]
        assert (await fetch(broker, "GET", "api/me", TOKEN))[1]["usage"]["kernels"] == 1
        assert (await fetch(broker, "DELETE", f"api/kernels/{KID}", TOKEN))[0] == 204
        assert not broker.containers(KID)
        foreign.reload()
        assert foreign.status == "running"
    finally:
        foreign.remove(force=True)
        client.close()


def test_a_runtime_root_too_long_for_sockets_is_refused(short_tmp: Path) -> None:
    caller = Caller(name="alice", uid=1001, gid=1001, home="/home/alice")
    root = short_tmp / ("r" * 60)
    with pytest.raises(BrokerError, match="more than Unix sockets allow") as info:
        policy.prepare_runtime_dir(str(root), caller, KID)
    assert info.value.http_status == 500
    assert not root.exists()
