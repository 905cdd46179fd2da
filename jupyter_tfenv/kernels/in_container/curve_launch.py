"""Start ipykernel in a Kubernetes kernel pod behind CurveZMQ-encrypted sockets.

Shipped in the kernel's connection Secret (``/tfenv/connection/tfenv_curve.py``) and run
by the image's own python as
``python /tfenv/connection/tfenv_curve.py -f /tfenv/connection/kernel.json --ip=0.0.0.0``
when the broker encrypts the kernel's traffic (docs/kubernetes.md, "Encrypted kernel
traffic"). Standard library and the image's pyzmq only (ipykernel needs pyzmq anyway), and
Python 3.6 syntax, because it runs in images we do not control.

No ipykernel release reads CurveZMQ keys from its connection file, so the kernel itself
cannot encrypt. This launcher does it in front of the kernel, in the same process:

- ipykernel gets a private connection file (0600, in a 0700 folder of its own under the
  temporary folder) that makes it bind Unix sockets there, unreachable from outside the
  pod;
- a thread binds the five ports of the real connection file on the pod's address as
  CurveZMQ servers (the server secret key from the Secret's file, never a variable or an
  argument) and forwards every message both ways, unchanged: shell, stdin and control
  through ROUTER/DEALER pairs whose DEALERs share one identity (so that an ``input_request``
  the kernel addresses to a shell client reaches it on stdin), heartbeat the same way,
  iopub through XPUB/XSUB (subscriptions go upstream). The message signatures are the
  kernel's and its clients', untouched.

A client that does not speak CurveZMQ with the server key cannot complete the handshake:
nothing reaches the kernel, and nothing of it crosses the pod network in clear.

If the image's pyzmq was built without CurveZMQ (``zmq.has("curve")`` false), or it has
no pyzmq, the launcher says so on stderr (the ``TFENV-NO-CURVE`` line, which the start
error's logs show) with what to do, and exits with status 3.
"""

import atexit
import json
import os
import sys
import tempfile
import threading
import time

MARK = "TFENV-NO-CURVE"
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
#: The DEALERs' identity towards the kernel's ROUTERs: one for all channels.
PROXY_IDENTITY = b"tfenv-curve-proxy"


def parse_args(argv):
    """``-f FILE``, ``--ip=ADDRESS`` (wins over the file's) and the rest for ipykernel."""
    path, ip, rest = None, None, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-f" and i + 1 < len(argv):
            path = argv[i + 1]
            i += 2
            continue
        if arg.startswith("-f="):
            path = arg[3:]
        elif arg.startswith("--ip="):
            ip = arg[5:]
        elif not arg.startswith("--transport="):
            rest.append(arg)
        i += 1
    return path, ip, rest


WHAT_TO_DO = (
    "The broker encrypts kernel traffic (kubernetes_kernel_encryption); this image cannot. "
    "Probe the environment (the panel's Probe: 'prefer' then starts it in clear), use an "
    "image whose pyzmq has CurveZMQ, or ask the admin for kubernetes_kernel_encryption='off'."
)


def fail(message):
    sys.stderr.write("%s %s. %s\n" % (MARK, message, WHAT_TO_DO))
    sys.stderr.flush()
    sys.exit(3)


def private_connection(info, folder):
    """The kernel's own connection file: the same key, Unix sockets in ``folder``."""
    inner = dict(info)
    inner.pop("curve_publickey", None)
    inner.pop("curve_secretkey", None)
    inner["transport"] = "ipc"
    inner["ip"] = os.path.join(folder, "kernel")
    for number, channel in enumerate(CHANNELS):
        inner[channel + "_port"] = number + 1
    path = os.path.join(folder, "kernel.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(inner, f)
    return inner, path


def forward(zmq, info, inner, address, keys):
    """Bind the encrypted ports once the kernel bound its sockets; forward forever.
    ``keys``: the server's (secret, public) key pair."""
    secret, public = keys
    paths = ["%s-%d" % (inner["ip"], inner[ch + "_port"]) for ch in CHANNELS]
    while not all(os.path.exists(p) for p in paths):
        time.sleep(0.05)
    context = zmq.Context()
    peer = {}
    poller = zmq.Poller()
    for index, channel in enumerate(CHANNELS):
        path = paths[index]
        if channel == "iopub":
            front, back = context.socket(zmq.XPUB), context.socket(zmq.XSUB)
        else:
            front, back = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
            back.setsockopt(zmq.IDENTITY, PROXY_IDENTITY)
        front.curve_server = True
        front.curve_secretkey = secret
        front.curve_publickey = public
        front.linger = 0
        back.linger = 0
        back.connect("ipc://" + path)
        # hb is last: the server takes a connection to it as "the kernel is up".
        front.bind("tcp://%s:%d" % (address, int(info[channel + "_port"])))
        peer[front], peer[back] = back, front
        poller.register(front, zmq.POLLIN)
        poller.register(back, zmq.POLLIN)
    while True:
        for sock, _ in poller.poll():
            peer[sock].send_multipart(sock.recv_multipart())


def main():
    # sys.path[0] is this script's folder (the Secret's): a kernel should not import from it.
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(
        os.path.abspath(__file__)
    ):
        del sys.path[0]
    path, ip, rest = parse_args(sys.argv[1:])
    if path is None:
        fail("usage: tfenv_curve.py -f <connection file> [--ip=ADDRESS]")
    with open(path) as f:
        info = json.load(f)
    try:
        import zmq
    except ImportError:
        fail("pyzmq=missing: the image has no pyzmq (ipykernel needs it)")
    if not zmq.has("curve"):
        fail(
            "pyzmq=%s libzmq=%s curve=no: the image's libzmq was built without CurveZMQ"
            % (zmq.__version__, zmq.zmq_version())
        )
    try:
        secret = info["curve_secretkey"].encode("ascii")
        public = info["curve_publickey"].encode("ascii")
    except (KeyError, AttributeError):
        fail("keys=missing: the connection file holds no curve_secretkey/curve_publickey")
    folder = tempfile.mkdtemp(prefix="tfenv-kernel-")  # 0700, this uid's
    inner, inner_path = private_connection(info, folder)
    address = ip or info.get("ip") or "0.0.0.0"  # noqa: S104 -- the pod's addresses
    thread = threading.Thread(
        target=forward,
        args=(zmq, info, inner, address, (secret, public)),
        name="tfenv-curve",
    )
    thread.daemon = True
    thread.start()
    sys.argv = [sys.argv[0], "-f", inner_path, *rest]
    from ipykernel import kernelapp

    code = 0
    try:
        kernelapp.launch_new_instance()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        # What a normal exit runs (the user's atexit handlers, flushes), then leave
        # without waiting on the forwarding thread's sockets.
        atexit._run_exitfuncs()  # prints a failing handler's traceback, raises nothing
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
