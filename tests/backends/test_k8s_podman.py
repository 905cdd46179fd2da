"""Kubernetes kernels (issue 11), tier 2: a real pod under ``podman kube play``.

The Secret, checkpoint claim and Pod that
``jupyter_tfenv.backends.kubernetes.manifests.kernel_objects``
generates are played by podman (tests/support/podman.py says what it adapts for podman 4.3.1 and
why) on a podman bridge network. A real TensorFlow kernel then answers over TCP at the
pod's own IP address, with the key from the mounted connection file, as the pod's uid,
without capabilities, and its checkpoints outlive the pod. No Kubernetes API server is
involved (tier 3: the API's behaviour; tier 1: the objects themselves).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterator
from queue import Empty
from typing import Any, cast

import pytest
from jupyter_client import BlockingKernelClient

from jupyter_tfenv.backends.kubernetes import manifests as m
from jupyter_tfenv.catalog.validation import environment_from_dict
from tests.support import podman as pm

NAMESPACE = "tfenv-kernels"
ALICE = ("alice", 1000, 1000)
BOB = ("bob", 1001, 1001)


def env_tf220() -> Any:
    return environment_from_dict({"id": "tf220", "image": pm.TF_IMAGE, "tensorflow": "2.20.0"})


def start_of(user: tuple[str, int, int], kernel_id: str | None = None) -> m.KernelStart:
    name, uid, gid = user
    return m.KernelStart(
        env=env_tf220(),
        username=name,
        uid=uid,
        gid=gid,
        kernel_id=kernel_id or f"{os.getpid()}-{secrets.token_hex(6)}",
        namespace=NAMESPACE,
    )


@pytest.fixture(scope="module")
def session(
    docker_engine: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[pm.PodmanSession]:
    reason = pm.unusable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"tier 2 must run in CI: {reason}")
        pytest.skip(reason)
    pm.ensure_image()
    with pm.podman_session(tmp_path_factory.mktemp("podman")) as s:
        yield s


class Kernel:
    """A played kernel pod and a client connected to it at the pod's IP."""

    def __init__(self, session: pm.PodmanSession, start: m.KernelStart) -> None:
        self.start = start
        self.key = secrets.token_hex(32)
        self.pod = session.play_kernel(m.kernel_objects(start, self.key))
        # The pod runs before ipykernel listens (TensorFlow's image takes seconds, more on
        # a busy host): a client's heartbeat that finds no one at once says "died".
        self.wait_listening(start.ports.hb)
        self.client = self.connect(self.key)
        try:
            self.client.wait_for_ready(timeout=120)
        except RuntimeError:
            logs = pm.podman("logs", self.pod.container(), check=False)
            raise AssertionError(f"kernel did not answer:\n{logs.stdout}\n{logs.stderr}") from None

    def wait_listening(self, port: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((self.pod.ip, port), timeout=2).close()
                return
            except OSError as err:
                if time.monotonic() > deadline:
                    logs = pm.podman("logs", self.pod.container(), check=False)
                    raise AssertionError(
                        f"nothing listens on {self.pod.ip}:{port} after {timeout:.0f} s ({err}):"
                        f"\n{logs.stdout}\n{logs.stderr}"
                    ) from None
                time.sleep(0.25)

    def connect(self, key: str) -> BlockingKernelClient:
        client = BlockingKernelClient()
        info = m.connection_info(self.start, key, ip=self.pod.ip)
        client.load_connection_info(cast(Any, info))
        client.start_channels()
        return client

    def run(self, code: str, timeout: float = 120) -> str:
        """``code``'s stdout; fails on an error reply."""
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["header"]["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out.append(msg["content"]["text"])
            elif msg["header"]["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        reply = self.client.execute_interactive(code, output_hook=hook, timeout=timeout)
        assert reply["content"]["status"] == "ok", "".join(out)
        return "".join(out)

    def json(self, code: str) -> Any:
        return json.loads(self.run(code).strip().splitlines()[-1])

    def close(self) -> None:
        self.client.stop_channels()


@pytest.fixture(scope="module")
def alice(session: pm.PodmanSession) -> Iterator[Kernel]:
    kernel = Kernel(session, start_of(ALICE))
    yield kernel
    kernel.close()
    session.kube_down(kernel.pod.name)


def test_tensorflow_kernel_answers_at_the_pod_ip(alice: Kernel) -> None:
    assert alice.pod.ip != "127.0.0.1"
    assert not alice.pod.ip.startswith("127.")
    assert alice.client.shell_channel.session.key == alice.key.encode()
    out = alice.run("import os\nimport tensorflow as tf\nprint(tf.__version__, os.getuid())")
    assert out.split() == ["2.20.0", str(alice.start.uid)]
    # Nothing is published on the host: only the pod's address has the kernel.
    listening = alice.json(
        "import json\n"
        "rows = [l.split() for l in open('/proc/net/tcp').read().splitlines()[1:]]\n"
        "print(json.dumps(sorted({(r[1].split(':')[0], int(r[1].split(':')[1], 16))"
        " for r in rows if r[3] == '0A'})))"
    )
    ports = set(alice.start.ports.by_name().values())
    assert {port for _, port in listening} >= ports
    assert all(addr == "00000000" for addr, port in listening if port in ports)


def test_a_client_with_a_wrong_key_gets_no_reply(alice: Kernel) -> None:
    intruder = alice.connect(secrets.token_hex(32))
    try:
        intruder.execute("print('should not run')")
        with pytest.raises(Empty):
            intruder.get_shell_msg(timeout=5)
        # The kernel is still fine for its owner.
        assert alice.run("print(6 * 7)").strip() == "42"
    finally:
        intruder.stop_channels()


def test_the_key_comes_from_the_read_only_mounted_file(alice: Kernel) -> None:
    facts = alice.json(
        "import json, os\n"
        f"p = {m.CONNECTION_PATH!r}\n"
        "info = json.load(open(p))\n"
        "try:\n"
        "    open(p, 'a').close(); err = None\n"
        "except OSError as e:\n"
        "    err = e.errno\n"
        "try:\n"
        "    open(os.path.join(os.path.dirname(p), 'x'), 'w').close(); err_dir = None\n"
        "except OSError as e:\n"
        "    err_dir = e.errno\n"
        "env = dict(os.environ)\n"
        "proc_env = open('/proc/self/environ', 'rb').read().decode(errors='replace')\n"
        "print(json.dumps({'key': info['key'], 'err': err, 'err_dir': err_dir,"
        " 'env': env, 'proc_env': proc_env, 'ip': info['ip']}))"
    )
    assert facts["key"] == alice.key
    assert facts["ip"] == m.ALL_ADDRESSES
    assert facts["err"] is not None and facts["err_dir"] is not None
    assert not [k for k, v in facts["env"].items() if alice.key in v]
    assert alice.key not in facts["proc_env"]


def test_the_security_context_holds_in_the_running_pod(alice: Kernel) -> None:
    status = alice.json(
        "import json\n"
        "print(json.dumps(dict(l.split(':', 1) for l in open('/proc/self/status')"
        ".read().splitlines() if ':' in l)))"
    )
    uid, gid = alice.start.uid, alice.start.gid
    assert status["Uid"].split() == [str(uid)] * 4
    assert status["Gid"].split() == [str(gid)] * 4
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapPrm"], 16) == 0
    assert int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    # A root-only operation fails in the pod.
    denied = alice.json(
        "import json, os\n"
        "try:\n"
        "    os.setuid(0); r = 'root'\n"
        "except PermissionError:\n"
        "    r = 'denied'\n"
        "print(json.dumps(r))"
    )
    assert denied == "denied"


WRITE_CHECKPOINT = """
import json, os
path = os.path.join(os.environ['TFENV_CHECKPOINT_DIR'], 'model.ckpt')
with open(path, 'w') as f:
    f.write(%r)
with open(os.path.join(os.environ['TFENV_LOG_DIR'], 'train.log'), 'w') as f:
    f.write('epoch 1')
print(json.dumps(os.stat(path).st_uid))
"""

READ_CHECKPOINT = """
import json, os
ckpt, logs = os.environ['TFENV_CHECKPOINT_DIR'], os.environ['TFENV_LOG_DIR']
path = os.path.join(ckpt, 'model.ckpt')
text = open(path).read() if os.path.exists(path) else None
print(json.dumps({'text': text, 'uid': os.stat(path).st_uid if text is not None else None,
                  'ckpt': sorted(os.listdir(ckpt)), 'logs': sorted(os.listdir(logs)),
                  'logs_writable': os.access(logs, os.W_OK)}))
"""


def test_checkpoints_survive_the_pod_and_stay_the_users(session: pm.PodmanSession) -> None:
    token = secrets.token_hex(8)
    first = Kernel(session, start_of(ALICE))
    try:
        assert first.json(WRITE_CHECKPOINT % token) == ALICE[1]
    finally:
        first.close()
        session.kube_down(first.pod.name)
    assert pm.podman("pod", "exists", first.pod.name, check=False).returncode == 1

    second = Kernel(session, start_of(ALICE))
    try:
        assert second.start.kernel_id != first.start.kernel_id
        assert m.pvc_name(second.start) == m.pvc_name(first.start)
        seen = second.json(READ_CHECKPOINT)
        assert seen["text"] == token
        assert seen["uid"] == ALICE[1]
        # Two sub-folders of one claim: the log is not among the checkpoints.
        assert seen["ckpt"] == ["model.ckpt"]
        assert seen["logs"] == ["train.log"]
        assert seen["logs_writable"]

        bob = Kernel(session, start_of(BOB))
        try:
            assert m.pvc_name(bob.start) != m.pvc_name(second.start)
            theirs = bob.json(READ_CHECKPOINT)
            assert theirs["text"] is None
            assert theirs["ckpt"] == [] and theirs["logs"] == []
            assert bob.json(WRITE_CHECKPOINT % "bob's") == BOB[1]
        finally:
            bob.close()
            session.kube_down(bob.pod.name)
        # Bob's write went to Bob's claim.
        assert second.json(READ_CHECKPOINT)["text"] == token
    finally:
        second.close()
        session.kube_down(second.pod.name)
