"""The tfenv broker's policy, without Docker or a hub: request schema, folders (real
folders in a tmp dir, owned by other uids: these tests run as root), the runtime-folder
handover, groups, quotas and the broker's configuration."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_tfenv.broker import policy
from jupyter_tfenv.broker.policy import BrokerError, Usage
from jupyter_tfenv.core.caller import Caller
from tests.support.broker_process import ACCOUNT, UnixUser, unix_account

__all__ = ["unix_account"]  # a fixture: a real Unix account, made and removed

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to other uids)")

UID, GID = 1001, 1001
OTHER_UID = 1002
KID = "3f2a9c1e-7b6d-4e2a-9f1c-0123456789ab"
ALLOW = ["LANG", "LC_ALL", "LC_CTYPE", "TZ", "JPY_SESSION_NAME"]


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A short tmp folder (root's, 0700): runtime folders below it must leave room for
    Unix socket paths (at most 107 bytes), which pytest's own tmp_path does not."""
    path = Path(tempfile.mkdtemp(prefix="tfp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The caller's home: a folder of uid 1001 below root-owned folders."""
    path = tmp_path.resolve() / "home" / "alice"
    path.mkdir(parents=True)
    os.chown(path, UID, GID)
    return path


@pytest.fixture
def caller(home: Path) -> Caller:
    return Caller(name="alice", uid=UID, gid=GID, home=str(home), groups=frozenset({"alice"}))


def users_dir(path: Path, uid: int = UID) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, uid)
    return path


def body(**extra: object) -> dict[str, object]:
    base: dict[str, object] = {
        "kernel_id": KID,
        "environment": "py",
        "cwd": "/home/alice/nb",
        "mount": "/home/alice",
        "env": {"LANG": "C.UTF-8"},
    }
    base.update(extra)
    return base


# -- request schema ----------------------------------------------------------------------


def test_a_valid_body_is_accepted() -> None:
    req = policy.validate_start_body(body(), ALLOW)
    assert req == policy.StartRequest(
        KID, "py", "/home/alice/nb", "/home/alice", {"LANG": "C.UTF-8"}
    )


def test_mount_defaults_to_cwd_and_env_to_nothing() -> None:
    req = policy.validate_start_body(
        {"kernel_id": KID, "environment": "py", "cwd": "/home/alice/nb", "mount": None}, ALLOW
    )
    assert req.mount == "/home/alice/nb"
    assert req.env == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image", "alpine:3"),
        ("cmd", ["sh"]),
        ("uid", 0),
        ("gid", 0),
        ("privileged", True),
        ("mounts", [{"source": "/", "target": "/host"}]),
        ("checkpoint_root", "/etc"),
        ("network", "host"),
        ("cap_add", ["SYS_ADMIN"]),
        ("user", "root"),
    ],
)
def test_fields_the_broker_decides_are_refused(field: str, value: object) -> None:
    with pytest.raises(BrokerError) as info:
        policy.validate_start_body(body(**{field: value}), ALLOW)
    err = info.value
    assert err.http_status == 400
    assert f"field '{field}' is not accepted: the broker decides" in err.message
    assert err.reason == "field not accepted"


def test_several_refused_fields_are_all_named() -> None:
    with pytest.raises(BrokerError, match="fields 'image', 'privileged' are not accepted"):
        policy.validate_start_body(body(image="x", privileged=True), ALLOW)


@pytest.mark.parametrize("server", ["", "gpu-box", "exp.2~a_b"])
def test_the_hub_server_name_is_kept(server: str) -> None:
    assert policy.validate_start_body(body(server=server), ALLOW).server == server


@pytest.mark.parametrize("server", ["../x", "a/b", 7, "x" * 256, "a b"])
def test_bad_hub_server_names_are_refused(server: object) -> None:
    with pytest.raises(BrokerError, match="JUPYTERHUB_SERVER_NAME") as info:
        policy.validate_start_body(body(server=server), ALLOW)
    assert info.value.http_status == 400


@pytest.mark.parametrize(
    "kernel_id", ["", "../../etc", "a/b/c/d/e/f/g", 123, None, "short", "x" * 65]
)
def test_bad_kernel_ids_are_refused(kernel_id: object) -> None:
    with pytest.raises(BrokerError) as info:
        policy.validate_start_body(body(kernel_id=kernel_id), ALLOW)
    assert info.value.http_status == 400


@pytest.mark.parametrize("missing", ["environment", "cwd"])
def test_required_fields(missing: str) -> None:
    data = body()
    del data[missing]
    with pytest.raises(BrokerError, match=f"'{missing}'"):
        policy.validate_start_body(data, ALLOW)


def test_env_outside_the_allowlist_is_refused_and_listed() -> None:
    with pytest.raises(BrokerError) as info:
        policy.validate_start_body(
            body(env={"JUPYTERHUB_API_TOKEN": "secret", "LD_PRELOAD": "/x.so", "TZ": "UTC"}),
            ALLOW,
        )
    err = info.value
    assert err.http_status == 400
    assert "JUPYTERHUB_API_TOKEN, LD_PRELOAD" in err.message
    assert "TZ" not in err.message.split("Kernels get only")[0]
    assert "secret" not in err.message  # values are never echoed


def test_env_values_must_be_strings() -> None:
    with pytest.raises(BrokerError, match="must be strings: LANG"):
        policy.check_env({"LANG": 1}, ALLOW)
    with pytest.raises(BrokerError, match="'env' must be an object"):
        policy.check_env(["LANG"], ALLOW)


def test_json_body() -> None:
    assert policy.parse_json_body(b"") == {}
    assert policy.parse_json_body(b'{"a": 1}') == {"a": 1}
    with pytest.raises(BrokerError, match="not valid JSON"):
        policy.parse_json_body(b"{")
    with pytest.raises(BrokerError, match="JSON object"):
        policy.parse_json_body(b"[1]")


def test_signal_body() -> None:
    assert policy.check_signal({"signal": 2}) == 2
    for bad in ({"signal": 0}, {"signal": "INT"}, {"signal": True}, {}, {"signal": 99}):
        with pytest.raises(BrokerError):
            policy.check_signal(bad)
    with pytest.raises(BrokerError, match="not accepted"):
        policy.check_signal({"signal": 2, "container": "x"})


# -- folders -----------------------------------------------------------------------------


def test_own_folder_under_home_is_accepted(caller: Caller, home: Path) -> None:
    nb = users_dir(home / "nb")
    roots = policy.render_roots(["{home}"], caller)
    assert policy.check_folder(str(nb), caller, roots, "cwd") == str(nb)
    assert policy.check_folder(str(home), caller, roots, "mount") == str(home)
    assert policy.check_folder(str(nb) + "/", caller, roots, "cwd") == str(nb)


def test_relative_and_root_paths_are_refused(caller: Caller) -> None:
    roots = ["/"]
    with pytest.raises(BrokerError) as info:
        policy.check_folder("home/alice", caller, roots, "cwd")
    assert info.value.http_status == 400
    with pytest.raises(BrokerError, match="host's root is never mounted") as info:
        policy.check_folder("/", caller, roots, "mount")
    assert info.value.http_status == 403


def test_symlink_escape_is_refused(caller: Caller, home: Path, tmp_path: Path) -> None:
    secret = tmp_path.resolve() / "secret"
    users_dir(secret)  # even a folder of the caller's uid: the path must be real
    (home / "link").symlink_to(secret)
    roots = policy.render_roots(["{home}"], caller)
    with pytest.raises(BrokerError) as info:
        policy.check_folder(str(home / "link"), caller, roots, "mount")
    assert info.value.http_status == 403
    assert info.value.reason == "symlink"
    # A symlink in the middle of the path, too.
    users_dir(secret / "sub")
    with pytest.raises(BrokerError, match="not its own real path"):
        policy.check_folder(str(home / "link" / "sub"), caller, roots, "cwd")


def test_dotdot_is_refused(caller: Caller, home: Path) -> None:
    users_dir(home / "nb")
    roots = policy.render_roots(["{home}"], caller)
    with pytest.raises(BrokerError, match="not its own real path"):
        policy.check_folder(f"{home}/nb/../nb", caller, roots, "cwd")


def test_outside_the_allowed_roots_is_refused(caller: Caller, home: Path) -> None:
    sibling = users_dir(Path(f"{home}2"))  # /…/alice2: a string prefix, not inside
    roots = policy.render_roots(["{home}"], caller)
    with pytest.raises(BrokerError) as info:
        policy.check_folder(str(sibling), caller, roots, "mount")
    assert info.value.http_status == 403
    assert "c.TFEnvBroker.allowed_mount_roots" in info.value.message


def test_another_users_folder_is_refused(caller: Caller, home: Path) -> None:
    theirs = users_dir(home / "shared", uid=OTHER_UID)
    roots_owned = users_dir(home / "roots")
    os.chown(roots_owned, 0, 0)
    roots = policy.render_roots(["{home}"], caller)
    for path in (theirs, roots_owned):
        with pytest.raises(BrokerError) as info:
            policy.check_folder(str(path), caller, roots, "mount")
        assert info.value.http_status == 403
        assert info.value.reason == "not owner"
        assert f"not to you (uid {UID})" in info.value.message


def test_another_user_cannot_mount_the_callers_home(home: Path) -> None:
    bob = Caller("bob", OTHER_UID, OTHER_UID, str(home.parent / "bob"), frozenset())
    roots = policy.render_roots(["{home}"], bob)
    with pytest.raises(BrokerError, match="outside the folders you may mount"):
        policy.check_folder(str(home), bob, roots, "mount")
    # Even with a root that covers it, the folder is alice's.
    with pytest.raises(BrokerError, match="belongs to uid 1001"):
        policy.check_folder(str(home), bob, [str(home.parent)], "mount")


def test_missing_folder_and_file(caller: Caller, home: Path) -> None:
    roots = policy.render_roots(["{home}"], caller)
    with pytest.raises(BrokerError, match="does not exist"):
        policy.check_folder(str(home / "nope"), caller, roots, "cwd")
    (home / "file").write_text("x")
    os.chown(home / "file", UID, GID)
    with pytest.raises(BrokerError, match="is not a folder"):
        policy.check_folder(str(home / "file"), caller, roots, "cwd")


def test_cwd_must_be_inside_mount(caller: Caller, home: Path) -> None:
    a, b = users_dir(home / "a"), users_dir(home / "b")
    roots = policy.render_roots(["{home}"], caller)
    req = policy.validate_start_body(body(cwd=str(a), mount=str(b)), ALLOW)
    with pytest.raises(BrokerError, match="not inside 'mount'"):
        policy.check_folders(req, caller, roots)
    req = policy.validate_start_body(body(cwd=str(a), mount=str(home)), ALLOW)
    assert policy.check_folders(req, caller, roots) == (str(a), str(home))


def test_roots_are_rendered_per_user(caller: Caller, home: Path) -> None:
    assert policy.render_roots(["{home}", "/data/{username}", "relative", "/"], caller) == [
        str(home),
        "/data/alice",
    ]


# -- runtime folders -----------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def write_connection_file(rundir: Path, **overrides: object) -> Path:
    info: dict[str, object] = {
        "transport": "ipc",
        "ip": f"{rundir}/k",
        "shell_port": 1,
        "iopub_port": 2,
        "stdin_port": 3,
        "control_port": 4,
        "hb_port": 5,
        "key": "k",
        "signature_scheme": "hmac-sha256",
    }
    info.update(overrides)
    path = rundir / "kernel.json"
    path.write_text(json.dumps(info))
    os.chmod(path, 0o600)
    os.chown(path, UID, GID)
    return path


def test_runtime_folder_handover(tmp_path: Path, caller: Caller) -> None:
    root = tmp_path.resolve() / "run" / "tfenv-broker"
    rundir = Path(policy.prepare_runtime_dir(str(root), caller, KID))
    assert rundir == root / str(UID) / KID
    for parent in (root, root / str(UID)):
        assert os.lstat(parent).st_uid == 0
        assert mode(parent) == 0o711
    info = os.lstat(rundir)
    assert (info.st_uid, info.st_gid, mode(rundir)) == (UID, GID, 0o700)

    with pytest.raises(BrokerError, match="No connection file"):
        policy.verify_runtime_dir(str(root), caller, KID)
    write_connection_file(rundir)
    assert policy.verify_runtime_dir(str(root), caller, KID) == str(rundir)
    os.chmod(rundir, 0o1700)  # jupyter_client's write_connection_file adds the sticky bit
    assert policy.verify_runtime_dir(str(root), caller, KID) == str(rundir)
    assert policy.read_connection_file(str(rundir), caller)["transport"] == "ipc"

    # restart: same folder, connection file kept, stale sockets gone
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(rundir / "k-1"))
    sock.close()
    again = policy.prepare_runtime_dir(str(root), caller, KID, restart=True)
    assert again == str(rundir)
    assert (rundir / "kernel.json").exists()
    assert not (rundir / "k-1").exists()

    # a fresh start replaces the folder
    policy.prepare_runtime_dir(str(root), caller, KID)
    assert not (rundir / "kernel.json").exists()

    assert policy.remove_runtime_dir(str(root), caller, KID)
    assert not rundir.exists()
    assert not policy.remove_runtime_dir(str(root), caller, KID)


def test_runtime_folder_is_verified_again(tmp_path: Path, caller: Caller) -> None:
    root = tmp_path.resolve() / "rt"
    with pytest.raises(BrokerError, match="has no runtime folder"):
        policy.verify_runtime_dir(str(root), caller, KID)
    rundir = Path(policy.prepare_runtime_dir(str(root), caller, KID))
    conn = write_connection_file(rundir)

    os.chmod(rundir, 0o755)  # group and others may enter
    with pytest.raises(BrokerError) as info:
        policy.verify_runtime_dir(str(root), caller, KID)
    assert info.value.http_status == 403
    os.chmod(rundir, 0o700)

    os.chown(conn, 0, 0)  # somebody else's connection file
    with pytest.raises(BrokerError, match="regular file of uid 1001"):
        policy.verify_runtime_dir(str(root), caller, KID)

    conn.unlink()
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    conn.symlink_to(target)
    os.lchown(conn, UID, GID)
    with pytest.raises(BrokerError) as info:
        policy.verify_runtime_dir(str(root), caller, KID)
    assert info.value.http_status == 403

    # The kernel's folder replaced by a symlink (only root could, but still).
    conn.unlink()
    os.rmdir(rundir)
    rundir.symlink_to(tmp_path)
    with pytest.raises(BrokerError, match="not a 0700 folder"):
        policy.verify_runtime_dir(str(root), caller, KID)


def test_another_users_runtime_folder_is_not_verified(tmp_path: Path, caller: Caller) -> None:
    root = tmp_path.resolve() / "rt"
    rundir = Path(policy.prepare_runtime_dir(str(root), caller, KID))
    write_connection_file(rundir)
    bob = Caller("bob", OTHER_UID, OTHER_UID, "/home/bob", frozenset())
    # bob's path is below his own uid's folder: alice's folder is never his.
    with pytest.raises(BrokerError, match="no runtime folder"):
        policy.verify_runtime_dir(str(root), bob, KID)
    assert not policy.remove_runtime_dir(str(root), bob, KID)
    assert rundir.exists()


def test_runtime_root_of_another_user_is_refused(tmp_path: Path, caller: Caller) -> None:
    root = users_dir(tmp_path.resolve() / "rt", uid=OTHER_UID)
    with pytest.raises(BrokerError) as info:
        policy.prepare_runtime_dir(str(root), caller, KID)
    assert info.value.http_status == 500
    assert "c.TFEnvBroker.runtime_root" in info.value.message


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"transport": "tcp", "ip": "0.0.0.0"}, "transport 'ipc'"),
        ({"ip": "/tmp/k"}, "must be a socket path prefix"),
        ({"hb_port": "5"}, "hb_port"),
    ],
)
def test_connection_file_must_be_ipc_in_the_runtime_folder(
    tmp_path: Path, caller: Caller, overrides: dict[str, object], match: str
) -> None:
    root = tmp_path.resolve() / "rt"
    rundir = Path(policy.prepare_runtime_dir(str(root), caller, KID))
    write_connection_file(rundir, **overrides)
    with pytest.raises(BrokerError, match=match):
        policy.read_connection_file(str(rundir), caller)


def test_socket_paths() -> None:
    info = {"ip": "/r/k", **{f"{ch}_port": i for i, ch in enumerate(policy.CHANNELS, 1)}}
    assert policy.socket_paths(info) == ["/r/k-1", "/r/k-2", "/r/k-3", "/r/k-4", "/r/k-5"]


# -- groups ----------------------------------------------------------------------------------


def test_environment_groups() -> None:
    rules = {"tf220-gpu": ["tfenv-gpu", "admins"], "closed": []}
    assert policy.environment_allowed("py", {"alice"}, rules) == (True, None)
    assert policy.environment_allowed("tf220-gpu", {"alice", "tfenv-gpu"}, rules) == (True, None)
    allowed, reason = policy.environment_allowed("tf220-gpu", {"alice", "staff"}, rules)
    assert not allowed
    assert reason is not None
    assert "members of admins, tfenv-gpu" in reason
    assert "c.TFEnvBroker.environment_groups" in reason
    assert "you are in alice, staff" in reason
    assert policy.environment_allowed("closed", {"alice"}, rules)[0] is False


# -- quotas ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpus", "host", "count"),
    [
        ("none", 4, 0),
        (None, 4, 0),
        ("all", 4, 4),
        ("all", None, 1),
        ("all", 0, 1),
        (2, None, 2),
        (["0", "GPU-abc"], 8, 2),
        (("1",), 8, 1),
    ],
)
def test_gpu_count(gpus: object, host: int | None, count: int) -> None:
    assert policy.gpu_count(gpus, host) == count


def test_usage() -> None:
    assert policy.usage_of([0, 2, 1]) == Usage(kernels=3, gpus=3)
    assert policy.usage_of([]) == Usage()


def test_kernel_quota(caller: Caller) -> None:
    policy.check_quota(caller, Usage(1, 0), 0, max_kernels=2, max_gpus=None)
    with pytest.raises(BrokerError) as info:
        policy.check_quota(caller, Usage(2, 0), 0, max_kernels=2, max_gpus=None)
    err = info.value
    assert err.http_status == 429
    assert err.message.startswith(
        "alice already runs 2 tfenv kernels; the limit per user is 2 "
        "(c.TFEnvBroker.max_kernels_per_user). Shut one down"
    )
    with pytest.raises(BrokerError, match="may run no tfenv kernels"):
        policy.check_quota(caller, Usage(0, 0), 0, max_kernels=0, max_gpus=None)
    for unlimited in (None, -1):
        policy.check_quota(caller, Usage(100, 50), 8, max_kernels=unlimited, max_gpus=unlimited)


def test_gpu_quota(caller: Caller) -> None:
    policy.check_quota(caller, Usage(1, 1), 0, max_kernels=4, max_gpus=1)  # a CPU kernel
    policy.check_quota(caller, Usage(0, 0), 1, max_kernels=4, max_gpus=1)
    with pytest.raises(BrokerError) as info:
        policy.check_quota(caller, Usage(1, 1), 1, max_kernels=4, max_gpus=1)
    assert info.value.http_status == 429
    assert "the limit per user is 1 (c.TFEnvBroker.max_gpus_per_user)" in info.value.message
    with pytest.raises(BrokerError, match="needs 4 more"):
        policy.check_quota(caller, Usage(0, 0), 4, max_kernels=4, max_gpus=2)


def test_limits_as_shown() -> None:
    assert policy.limit_value(None) is None
    assert policy.limit_value(-1) is None
    assert policy.limit_value(0) == 0
    assert policy.limit_value(3) == 3


# -- who the caller is -------------------------------------------------------------------


def test_no_token_or_unknown_token() -> None:
    with pytest.raises(BrokerError) as info:
        policy.caller_from_model(None, scope_ok=False)
    assert info.value.http_status == 403
    assert "Authorization: token" in info.value.message


def test_service_tokens_are_refused() -> None:
    with pytest.raises(BrokerError, match="JupyterHub service, not to a user") as info:
        policy.caller_from_model({"kind": "service", "name": "cull"}, scope_ok=True)
    assert info.value.http_status == 403


def test_tokens_without_the_scope_are_refused() -> None:
    with pytest.raises(BrokerError, match="does not carry the scope") as info:
        policy.caller_from_model({"kind": "user", "name": "tfenv"}, scope_ok=False)
    assert info.value.http_status == 403


def test_users_without_a_unix_account_are_refused() -> None:
    with pytest.raises(BrokerError, match="no Unix account") as info:
        policy.caller_from_model({"kind": "user", "name": "no-such-user-x9"}, scope_ok=True)
    assert info.value.http_status == 403


def test_unix_account_and_groups(unix_account: UnixUser) -> None:
    import pwd

    account = pwd.getpwnam(ACCOUNT)
    caller = policy.caller_from_model(
        {"kind": "user", "name": ACCOUNT, "groups": ["hub-team"]}, scope_ok=True
    )
    assert (caller.uid, caller.gid, caller.home) == (
        account.pw_uid,
        account.pw_gid,
        account.pw_dir,
    )
    assert "hub-team" in caller.groups
    assert caller.groups & policy.unix_groups(ACCOUNT, account.pw_gid)
    assert caller.to_dict()["groups"] == sorted(caller.groups)


# -- the broker's configuration ------------------------------------------------------------


def test_broker_config_and_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_tfenv.broker.app import TFEnvBroker
    from jupyter_tfenv.checkpoints.layout import StorageConfig

    monkeypatch.delenv("JUPYTER_TFENV_CHECKPOINT_ROOT", raising=False)
    monkeypatch.delenv("JUPYTER_TFENV_LOG_ROOT", raising=False)
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:18765/")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_NAME", "my-broker")
    config = tmp_path / "broker_config.py"
    config.write_text(
        "c.TFEnvBroker.max_kernels_per_user = 7\n"
        "c.TFEnvBroker.max_gpus_per_user = 3\n"
        "c.TFEnvBroker.environment_groups = {'gpu': ['tfenv-gpu']}\n"
    )
    broker = TFEnvBroker()
    broker.initialize([f"--config={config}", "--TFEnvBroker.max_gpus_per_user=1"])
    assert (broker.ip, broker.port) == ("127.0.0.1", 18765)
    assert broker.max_kernels_per_user == 7
    assert broker.max_gpus_per_user == 1  # the command line wins over the file
    assert broker.environment_groups == {"gpu": ["tfenv-gpu"]}
    assert broker.access_scopes == ["access:services!service=my-broker"]
    assert broker.runtime_root == "/run/tfenv-broker"
    assert broker.env_allowlist == ALLOW
    storage = StorageConfig.from_provisioner(broker)
    assert storage.mode == "bind"
    assert storage.checkpoint_root == "/srv/tfenv/checkpoints"
    assert storage.log_root == "/srv/tfenv/logs"

    monkeypatch.setenv("JUPYTER_TFENV_CHECKPOINT_ROOT", str(tmp_path / "ck"))
    assert TFEnvBroker().checkpoint_root == str(tmp_path / "ck")


# -- the HTTP layer (a fake hub; refusals that happen before any Docker call) ---------------


class FakeHubAuth:
    """Answers user_for_token from a dict, as HubAuth does from the hub's /api/user."""

    def __init__(self, models: dict[str, dict[str, object]]) -> None:
        self.models = models
        self.api_token = "broker-token"
        self.seen: list[str] = []

    async def user_for_token(
        self, token: str, use_cache: bool = True, sync: bool = True
    ) -> dict[str, object] | None:
        self.seen.append(token)
        return self.models.get(token)

    def check_scopes(self, required: set[str], model: dict[str, object]) -> set[str]:
        from jupyterhub.services.auth import check_scopes

        return set(check_scopes(required, set(model.get("scopes") or [])))


def run_http(tmp_path: Path, requests: list[tuple[str, str, str | None, object]]) -> list:
    """Serve a broker on a free port and make ``(method, path, token, body)`` requests;
    returns ``(status, json)`` per request."""
    import asyncio

    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from jupyter_tfenv.broker.app import TFEnvBroker

    scope = "access:services!service=tfenv-broker"
    broker = TFEnvBroker(
        service_name="tfenv-broker",
        service_prefix="/services/tfenv-broker/",
        runtime_root=str(tmp_path.resolve() / "rt"),
    )
    broker.hub_auth = FakeHubAuth(
        {
            "user-token": {"kind": "user", "name": ACCOUNT, "scopes": [scope]},
            "noscope-token": {"kind": "user", "name": ACCOUNT, "scopes": ["read:users"]},
            "service-token": {"kind": "service", "name": "cull", "scopes": [scope]},
            "nounix-token": {"kind": "user", "name": "no-such-user-x9", "scopes": [scope]},
        }
    )

    async def main() -> list:
        sockets = bind_sockets(0, "127.0.0.1")
        port = sockets[0].getsockname()[1]
        server = HTTPServer(broker.make_web_app())
        server.add_sockets(sockets)
        results = []
        try:
            for method, path, token, payload in requests:
                headers = {"Authorization": f"token {token}"} if token else {}
                req = HTTPRequest(
                    f"http://127.0.0.1:{port}{path}",
                    method=method,
                    headers=headers,
                    body=None if method in ("GET", "DELETE") else json.dumps(payload),
                )
                resp = await AsyncHTTPClient().fetch(req, raise_error=False)
                results.append((resp.code, json.loads(resp.body) if resp.body else None))
        finally:
            server.stop()
            await server.close_all_connections()
        return results

    return asyncio.run(main())


def test_http_authentication_refusals(tmp_path: Path) -> None:
    results = run_http(
        tmp_path,
        [
            ("GET", "/api/me", None, None),
            ("GET", "/api/me", "bogus", None),
            ("GET", "/api/me", "noscope-token", None),
            ("GET", "/api/me", "service-token", None),
            ("GET", "/api/kernels", "nounix-token", None),
            ("GET", "/services/tfenv-broker/api/me", "noscope-token", None),
            ("GET", "/api/elsewhere", None, None),
        ],
    )
    assert [status for status, _ in results] == [403] * 7
    reasons = [answer["reason"] for _, answer in results]
    assert reasons == [
        "no user",
        "no user",
        "missing scope",
        "not a user",
        "no unix account",
        "missing scope",
        "no user",
    ]
    assert all(set(answer) == {"message", "reason"} for _, answer in results)


def test_http_start_refusals_and_runtime_folder(tmp_path: Path, unix_account: UnixUser) -> None:
    import pwd

    tok = "user-token"
    results = run_http(
        tmp_path,
        [
            ("POST", "/api/kernels", tok, {**body(), "image": "alpine:3"}),
            ("POST", "/api/kernels", tok, {**body(), "env": {"JUPYTERHUB_API_TOKEN": "x"}}),
            ("POST", "/api/kernels", tok, [1, 2]),
            ("POST", f"/api/kernels/{KID}/runtime", tok, {"restart": False, "uid": 0}),
            ("POST", f"/api/kernels/{KID}/runtime", tok, {"restart": False}),
            ("POST", "/services/tfenv-broker/api/kernels/x/runtime", tok, {}),
            ("POST", f"/api/kernels/{KID}/signal", tok, {"signal": "KILL"}),
        ],
    )
    statuses = [status for status, _ in results]
    assert statuses == [400, 400, 400, 400, 200, 400, 400]
    assert "field 'image' is not accepted: the broker decides" in results[0][1]["message"]
    assert "JUPYTERHUB_API_TOKEN" in results[1][1]["message"]
    rundir = Path(results[4][1]["runtime_dir"])
    assert rundir.parent == tmp_path.resolve() / "rt" / str(pwd.getpwnam(ACCOUNT).pw_uid)
    assert os.lstat(rundir).st_uid == pwd.getpwnam(ACCOUNT).pw_uid
