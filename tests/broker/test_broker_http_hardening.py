"""Issue 17: attacks on the root broker's HTTP API by local users, against the real broker
process (``python -m jupyter_tfenv.broker``, root), real Unix users, real HTTP and the
real ``HubAuth`` talking to a loopback stand-in for the hub's token API
(tests/support/broker_process.py).

* item 3: a folder outside the caller's roots is refused without being resolved; no
  answer names what a symlink points to (``/proc/<pid>/cwd``, ``/proc/<pid>/fd/N``,
  symlinks into another user's 0700 home); an unreadable path is no 500;
* item 6: a request without a token is answered when its headers arrive, before its
  body; a body over ``max_body_size`` gets 413 unread; bad tokens cost one hub request
  per cache window, also when they arrive together;
* item 7: runtime folders per user are capped (429) and never-started ones are removed;
* item 10: a token revoked at the hub stops working once ``token_cache_seconds`` passed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.conftest import PY_IMAGE
from tests.support.broker_process import SERVICE, BrokerProcess, LoopbackHub, UnixUser, UnixUsers

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the broker runs as root; the test makes users"),
    pytest.mark.timeout(300),
]

KID = "3f2a9c1e-7b6d-4e2a-9f1c-0123456789ab"
TOKEN_A = "token-of-user-a-17"
TOKEN_B = "token-of-user-b-17"


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[UnixUser, UnixUser]]:
    made = UnixUsers()
    try:
        yield made.make("tfenv-t17a"), made.make("tfenv-t17b")
    finally:
        made.remove()


@pytest.fixture
def hub(users: tuple[UnixUser, UnixUser]) -> Iterator[LoopbackHub]:
    running = LoopbackHub()
    running.add_user(TOKEN_A, users[0].name)
    running.add_user(TOKEN_B, users[1].name)
    yield running
    running.close()


@pytest.fixture
def make_broker(hub: LoopbackHub) -> Iterator[Callable[..., BrokerProcess]]:
    started: list[BrokerProcess] = []

    def make(**settings: Any) -> BrokerProcess:
        broker = BrokerProcess(hub, settings)
        started.append(broker)
        return broker

    yield make
    for broker in started:
        print(f"--- broker log (shown when the test fails) ---\n{broker.log()}")
        broker.stop()


def start_body(path: str) -> dict[str, Any]:
    return {"kernel_id": KID, "environment": "py", "cwd": path}


# -- item 3: no symlink targets, nothing resolved outside the roots, no 500 -----------------


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def test_the_broker_reveals_no_path_of_another_user(
    users: tuple[UnixUser, UnixUser], make_broker: Callable[..., BrokerProcess]
) -> None:
    a, b = users
    secret = b.home / "secret-plans-4711.txt"
    secret.write_text("B's plans\n")
    hidden = b.home / "hidden-project-0815"
    hidden.mkdir()
    for path in (secret, hidden):
        os.chown(path, b.uid, b.gid)
    link_in_b = b.home / "projects-link"
    link_in_b.symlink_to(hidden)
    os.lchown(link_in_b, b.uid, b.gid)
    # A's own symlink into B's home (A may make it: it only names a path).
    peek = a.home / "peek"
    peek.symlink_to(hidden)
    os.lchown(peek, a.uid, a.gid)
    # B's process: cwd in B's 0700 home, B's secret open as fd 3.
    holder = subprocess.Popen(
        ["sh", "-c", 'exec 3<"$0"; exec sleep 600', str(secret)],
        user=b.uid,
        group=b.gid,
        extra_groups=[],
        cwd=b.home,
    )
    # And one of B's processes that has exited but is not reaped yet (a zombie): its
    # /proc/<pid>/cwd can no longer be read, even by root.
    zombie = subprocess.Popen(["sh", "-c", "exit 0"], user=b.uid, group=b.gid, extra_groups=[])
    try:
        _wait_for(lambda: os.path.exists(f"/proc/{holder.pid}/fd/3"), "B's process opened")
        _wait_for(lambda: not os.path.exists(f"/proc/{zombie.pid}/cwd"), "B's zombie")
        broker = make_broker()
        b_home, secret_name, hidden_name = str(b.home), secret.name, hidden.name
        cases = {
            # path sent → what the answer must not contain
            f"/proc/{holder.pid}/cwd": [b_home],
            f"/proc/{holder.pid}/fd/3": [b_home, secret_name],
            f"/proc/{holder.pid}/root": [],
            f"/proc/{os.getpid()}/cwd": [os.getcwd()],  # a process of root's
            f"/proc/{zombie.pid}/cwd": [],
            str(link_in_b): [hidden_name],
            str(peek): [hidden_name, b_home],
            str(peek / "sub"): [hidden_name, b_home],
            f"{a.home}/../{b.name}/projects-link": [hidden_name],
        }
        for path, secrets in cases.items():
            status, answer = broker.request("POST", "/api/kernels", TOKEN_A, start_body(path))
            assert status == 403, (path, status, answer)
            assert answer["reason"] in ("outside allowed roots", "symlink"), (path, answer)
            for text in secrets:
                assert text not in json.dumps(answer), (path, text, answer)
        # Nothing was started, and B's things are as they were.
        assert secret.read_text() == "B's plans\n"
    finally:
        holder.kill()
        holder.wait()
        zombie.wait()


def test_folders_the_caller_cannot_enter_are_not_looked_into(
    users: tuple[UnixUser, UnixUser], make_broker: Callable[..., BrokerProcess]
) -> None:
    """Inside the caller's own root, a folder they cannot enter (root's, 0700) gives the
    same 403 whether what is behind it exists or not: the broker, root, tells them nothing
    they could not see themselves. Never a 500."""
    a, _ = users
    locked = a.home / "locked-by-root"
    (locked / "exists").mkdir(parents=True, exist_ok=True)
    os.chmod(locked, 0o700)
    broker = make_broker()
    answers = []
    for name in ("exists", "missing"):
        path = str(locked / name)
        status, answer = broker.request("POST", "/api/kernels", TOKEN_A, start_body(path))
        assert status == 403, (path, answer)
        assert answer["reason"] == "permission denied"
        assert "may not enter" in answer["message"]
        answers.append(answer["message"].replace(path, "PATH"))
    assert answers[0] == answers[1]


# -- item 6: bodies are not read before authentication; small bodies; cached refusals ------


def _raw_request(port: int, head: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head.encode())
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any], bool]:
    """``(status, JSON body, closed)``: the whole answer, and whether the server closed
    the connection after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    try:
        closed = sock.recv(1) == b""
    except ConnectionResetError:
        closed = True
    return status, json.loads(rest[:length]), closed


def _head(method: str, path: str, length: int | None, token: str | None = None) -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: token {token}")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return "\r\n".join(lines) + "\r\n\r\n"


def test_a_request_without_a_token_is_refused_before_its_body(
    hub: LoopbackHub, make_broker: Callable[..., BrokerProcess]
) -> None:
    broker = make_broker()
    rss_before = broker.rss_kib()
    size = 8 * 1024 * 1024
    for _ in range(4):
        sock = _raw_request(broker.port, _head("POST", "/api/kernels", size))
        try:
            # Not one byte of the body was sent, and the answer is there.
            status, answer, closed = _read_response(sock)
            assert (status, answer["reason"]) == (403, "no user")
            assert closed  # the connection is closed: the body is never read
            # Sending the body now fails: nobody reads it.
            with pytest.raises(OSError):
                for _ in range(size // 65536):
                    sock.sendall(b"x" * 65536)
        finally:
            sock.close()
    assert hub.asked[""] == 0  # no hub request for no token
    # 32 MiB were offered; the broker did not take them in.
    assert broker.rss_kib() - rss_before < 16 * 1024


def test_a_body_over_max_body_size_is_413(
    hub: LoopbackHub, make_broker: Callable[..., BrokerProcess]
) -> None:
    broker = make_broker()  # max_body_size: 64 KiB by default
    # Declared too large: answered before any of it is sent.
    sock = _raw_request(broker.port, _head("POST", "/api/kernels", 200 * 1024, TOKEN_A))
    try:
        status, answer, closed = _read_response(sock)
    finally:
        sock.close()
    assert (status, answer["reason"]) == (413, "body too large")
    assert "c.TFEnvBroker.max_body_size" in answer["message"]
    assert closed
    # Chunked, no length: refused once it grows beyond the limit.
    sock = _raw_request(broker.port, _head("POST", "/api/kernels", None, TOKEN_A))
    try:
        piece = b"x" * 16384
        for _ in range(8):  # 128 KiB, twice the limit (all of it fits in socket buffers)
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        status, answer, closed = _read_response(sock)
    finally:
        sock.close()
    assert (status, answer["reason"]) == (413, "body too large")
    assert closed
    # An ordinary request still works.
    status, answer = broker.request("POST", f"/api/kernels/{KID}/runtime", TOKEN_A, {})
    assert status == 200, answer


def test_repeated_bad_tokens_cost_one_hub_request(
    hub: LoopbackHub, make_broker: Callable[..., BrokerProcess]
) -> None:
    broker = make_broker(token_cache_seconds=60.0)
    hub.delay = 0.5  # the 16 requests below all wait for the hub at once
    results: list[tuple[int, Any]] = []

    def ask() -> None:
        results.append(broker.request("GET", "/api/me", "random-bad-token"))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    hub.delay = 0.0
    for _ in range(5):
        results.append(broker.request("GET", "/api/me", "random-bad-token"))
    assert [status for status, _ in results] == [403] * 21
    assert {answer["reason"] for _, answer in results} == {"no user"}
    assert hub.asked["random-bad-token"] == 1
    # A valid token is asked about once, too.
    for _ in range(3):
        assert broker.request("POST", f"/api/kernels/{KID}/runtime", TOKEN_A, {})[0] == 200
    assert hub.asked[TOKEN_A] == 1


# -- item 10: the token cache window -------------------------------------------------------


def test_token_cache_seconds_reaches_hubauth(monkeypatch: pytest.MonkeyPatch) -> None:
    from jupyter_tfenv.broker.app import TFEnvBroker

    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "x")
    assert TFEnvBroker().token_cache_seconds == 5.0
    app = TFEnvBroker()
    app.initialize(["--TFEnvBroker.token_cache_seconds=2"])
    assert app.hub_auth.cache_max_age == 2
    assert "token_cache_seconds" in TFEnvBroker.class_get_help()


def test_a_revoked_token_stops_working_after_the_cache_window(
    hub: LoopbackHub, make_broker: Callable[..., BrokerProcess]
) -> None:
    broker = make_broker(token_cache_seconds=1.0)
    status, _ = broker.request("POST", f"/api/kernels/{KID}/runtime", TOKEN_B, {})
    assert status == 200
    hub.revoke(TOKEN_B)
    time.sleep(1.5)  # past the window
    status, answer = broker.request("POST", f"/api/kernels/{KID}/runtime", TOKEN_B, {})
    assert (status, answer["reason"]) == (403, "no user")
    assert hub.asked[TOKEN_B] == 2


# -- item 7: runtime folders are capped and swept ------------------------------------------


def kid(n: int) -> str:
    return f"{n:08d}-7b6d-4e2a-9f1c-0123456789ab"


def test_runtime_folders_per_user_are_capped(
    users: tuple[UnixUser, UnixUser], make_broker: Callable[..., BrokerProcess]
) -> None:
    a, _ = users
    broker = make_broker(max_runtime_dirs_per_user=3)
    for n in range(3):
        status, answer = broker.request("POST", f"/api/kernels/{kid(n)}/runtime", TOKEN_A, {})
        assert status == 200, answer
    status, answer = broker.request("POST", f"/api/kernels/{kid(3)}/runtime", TOKEN_A, {})
    assert (status, answer["reason"]) == (429, "runtime folder quota")
    assert "c.TFEnvBroker.max_runtime_dirs_per_user" in answer["message"]
    user_root = Path(broker.runtime_root, str(a.uid))
    assert sorted(os.listdir(user_root)) == [kid(n) for n in range(3)]
    # Asking again for a folder the user has is no new folder; another user has their own.
    assert broker.request("POST", f"/api/kernels/{kid(0)}/runtime", TOKEN_A, {})[0] == 200
    assert broker.request("POST", f"/api/kernels/{kid(3)}/runtime", TOKEN_B, {})[0] == 200
    assert not (user_root / kid(3)).exists()


@pytest.mark.docker
def test_folders_of_kernels_that_never_started_are_removed(
    users: tuple[UnixUser, UnixUser],
    make_broker: Callable[..., BrokerProcess],
    images: docker.DockerClient,
) -> None:
    a, _ = users
    broker = make_broker(max_runtime_dirs_per_user=3, runtime_dir_stale_seconds=60.0)
    for n in range(3):
        assert broker.request("POST", f"/api/kernels/{kid(n)}/runtime", TOKEN_A, {})[0] == 200
    user_root = Path(broker.runtime_root, str(a.uid))
    # Folders 0 and 1 are an hour old; a container of A names folder 1 (a kernel).
    hour_ago = time.time() - 3600
    for n in (0, 1):
        os.utime(user_root / kid(n), (hour_ago, hour_ago))
    container = images.containers.create(
        PY_IMAGE,
        ["true"],
        network_mode="none",
        labels={
            "org.jupyter.tfenv.owner": a.name,
            "org.jupyter.tfenv.uid": str(a.uid),
            "org.jupyter.tfenv.broker": SERVICE,
            "org.jupyter.tfenv.kernel-id": kid(1),
            "org.jupyter.tfenv.runtime-dir": str(user_root / kid(1)),
        },
    )
    try:
        status, answer = broker.request("POST", f"/api/kernels/{kid(3)}/runtime", TOKEN_A, {})
        assert status == 200, answer
        assert sorted(os.listdir(user_root)) == [kid(1), kid(2), kid(3)]
        assert "whose kernels never started" in broker.log()
    finally:
        container.remove(force=True)


@pytest.mark.docker
def test_the_broker_sweeps_never_started_folders_by_itself(
    users: tuple[UnixUser, UnixUser],
    make_broker: Callable[..., BrokerProcess],
    images: docker.DockerClient,
) -> None:
    """Without any further request of their user, stale folders go (a sweep every
    runtime_dir_stale_seconds); a fresh one stays."""
    a, _ = users
    broker = make_broker(runtime_dir_stale_seconds=1.0)
    for n in range(2):
        assert broker.request("POST", f"/api/kernels/{kid(n)}/runtime", TOKEN_A, {})[0] == 200
    user_root = Path(broker.runtime_root, str(a.uid))
    hour_ago = time.time() - 3600
    os.utime(user_root / kid(0), (hour_ago, hour_ago))
    # Folder 1 stays fresh: its user keeps writing into it (a connection file).
    deadline = time.monotonic() + 60
    while (user_root / kid(0)).exists() and time.monotonic() < deadline:
        os.utime(user_root / kid(1))
        time.sleep(0.1)
    assert not (user_root / kid(0)).exists()
    assert (user_root / kid(1)).is_dir()
