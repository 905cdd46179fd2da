"""CurveZMQ for kernel pods (docs/kubernetes.md, "Encrypted kernel traffic"): the keys, the
broker's policy, and the in-pod launcher that encrypts in front of ipykernel.

What the installed parts support (found out for issue 22, written down in the docs):
jupyter_client 8.10 connects with CurveZMQ when its connection info carries
``curve_publickey``/``curve_secretkey`` (the server's key pair, used as its own client key
pair too; the heartbeat makes an ephemeral one); no ipykernel release binds with them, so
the kernel's side is :mod:`jupyter_tfenv.kernels.in_container.curve_launch`, which the
broker ships in the kernel's Secret. Docker kernels talk over Unix sockets in their
runtime folder and are never encrypted: nothing of them crosses a network.

Pure logic: no Kubernetes, no HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_tfenv.errors import TFEnvError

#: c.TFEnvBroker.kubernetes_kernel_encryption's values.
POLICIES = ("prefer", "require", "off")
#: What a kernel's traffic is: the broker's kernel answer and the kernel status say it.
CURVE = "curve"
NONE = "none"
#: The launcher's file name in the Secret (and in the pod, beside kernel.json).
LAUNCHER_FILE = "tfenv_curve.py"
#: The in-pod launcher, read into each encrypted kernel's Secret.
LAUNCHER_PATH = Path(__file__).parent / "in_container" / "curve_launch.py"
#: The launcher's marker on stderr when the image cannot encrypt.
NO_CURVE_MARK = "TFENV-NO-CURVE"
#: A Z85 CurveZMQ key: 40 characters of the Z85 alphabet.
_Z85_RE = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


class EncryptionRefused(TFEnvError):
    """``require`` and a kernel that cannot be encrypted: the start is refused (409)."""

    http_status = 409


@dataclass(frozen=True)
class CurveKeys:
    """A kernel's CurveZMQ server key pair (Z85 text)."""

    public: str
    secret: str

    def connection_fields(self) -> dict[str, str]:
        """As jupyter_client 8.10's connection info names them."""
        return {"curve_publickey": self.public, "curve_secretkey": self.secret}

    def as_request(self) -> dict[str, str]:
        """The start request's ``curve`` field."""
        return {"public_key": self.public, "secret_key": self.secret}


def server_support() -> str | None:
    """None when this process (a user's server) can talk CurveZMQ to a kernel; else why
    not (pyzmq without CurveZMQ, a jupyter_client before 8.10)."""
    import zmq  # noqa: PLC0415
    from jupyter_client.connect import ConnectionFileMixin  # noqa: PLC0415

    if not zmq.has("curve"):
        return f"this server's libzmq {zmq.zmq_version()} (pyzmq {zmq.__version__}) has no CurveZMQ"
    if "curve_publickey" not in ConnectionFileMixin.class_trait_names():
        import jupyter_client  # noqa: PLC0415

        return (
            f"this server's jupyter_client {jupyter_client.__version__} cannot connect with "
            "CurveZMQ (8.10 or later can)"
        )
    return None


def offer() -> CurveKeys | None:
    """A user's server's offer for a kernel pod: a new key pair where it can encrypt."""
    return new_keys() if server_support() is None else None


def use(km: Any, keys: CurveKeys | None) -> None:
    """Make a kernel manager (jupyter_client 8.10's connection traits) connect with
    ``keys``, or in clear (None): every socket it makes from now on follows."""
    if not hasattr(km, "curve_publickey"):
        return
    km.curve_publickey = keys.public.encode("ascii") if keys is not None else None
    km.curve_secretkey = keys.secret.encode("ascii") if keys is not None else None


def secure(sock: Any, km: Any) -> None:
    """A socket of ours towards a kernel (before connect): CurveZMQ like the kernel
    manager's, with an ephemeral client key pair."""
    server_key = getattr(km, "curve_publickey", None)
    if server_key:
        import zmq  # noqa: PLC0415

        public, secret = zmq.curve_keypair()
        sock.curve_publickey, sock.curve_secretkey = public, secret
        sock.curve_serverkey = server_key


def new_keys() -> CurveKeys:
    import zmq  # noqa: PLC0415

    public, secret = zmq.curve_keypair()
    return CurveKeys(public=public.decode("ascii"), secret=secret.decode("ascii"))


def keys_from_request(value: Any) -> CurveKeys | None:
    """The start request's ``curve`` field (``{"public_key", "secret_key"}``) checked: two
    Z85 keys of one pair; None when absent. Raises :class:`ValueError` with what is wrong."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"public_key", "secret_key"}:
        raise ValueError(
            "'curve' must be an object with exactly 'public_key' and 'secret_key' (the "
            "kernel's CurveZMQ server key pair, Z85 text)."
        )
    public, secret = value["public_key"], value["secret_key"]
    if not all(isinstance(k, str) and _Z85_RE.match(k) for k in (public, secret)):
        raise ValueError("'curve' keys must be 40-character Z85 CurveZMQ keys.")
    import zmq  # noqa: PLC0415

    if zmq.curve_public(secret.encode("ascii")).decode("ascii") != public:
        raise ValueError("'curve': public_key is not the public key of secret_key.")
    return CurveKeys(public=public, secret=secret)


def keys_from_connection(conn: Mapping[str, Any]) -> CurveKeys | None:
    """The key pair in a connection file (a kernel's Secret), or None."""
    public, secret = conn.get("curve_publickey"), conn.get("curve_secretkey")
    if isinstance(public, str) and isinstance(secret, str) and public and secret:
        return CurveKeys(public=public, secret=secret)
    return None


@dataclass(frozen=True)
class Decision:
    """What a start does: encrypt with ``keys``, or run in clear (``warning`` says why
    where the policy wanted encryption)."""

    keys: CurveKeys | None
    warning: str = ""

    @property
    def encryption(self) -> str:
        return CURVE if self.keys is not None else NONE


def decide(
    policy: str,
    keys: CurveKeys | None,
    *,
    image: str,
    image_support: str | None = None,
    server_reason: str = "",
) -> Decision:
    """The broker's policy applied to one start.

    ``keys``: the server's offer (None: it sent none, it cannot encrypt, ``server_reason``
    may say why). ``image_support``: None where the image is not known to lack CurveZMQ,
    else why it cannot (its probe's finding). ``off`` never encrypts; ``prefer`` encrypts
    where both sides can and otherwise runs in clear with a warning; ``require`` refuses
    (:class:`EncryptionRefused`) what it cannot encrypt.
    """
    if policy not in POLICIES:
        raise ValueError(f"kubernetes_kernel_encryption must be one of {POLICIES}: {policy!r}")
    if policy == "off":
        return Decision(None)
    if keys is None:
        why = server_reason or (
            "the user's server sent no CurveZMQ keys with the start (jupyter_tfenv before "
            "issue 22, a jupyter_client before 8.10, or pyzmq without CurveZMQ on the server)"
        )
        what = (
            "upgrade the single-user image to jupyter_client 8.10 or later with a pyzmq "
            "that has CurveZMQ (zmq.has('curve')) and this jupyter_tfenv"
        )
    elif image_support is not None:
        why = f"image {image} cannot encrypt: {image_support}"
        what = (
            f"use an image of '{image}''s environment whose pyzmq has CurveZMQ (pyzmq's "
            "wheels do; zmq.has('curve') says it)"
        )
    else:
        return Decision(keys)
    if policy == "require":
        raise EncryptionRefused(
            f"The kernel's traffic cannot be encrypted: {why}. The broker's "
            "kubernetes_kernel_encryption is 'require', so the kernel was not started: "
            f"{what}, or ask the admin for 'prefer' (starts in clear, with a warning) "
            "(docs/kubernetes.md, 'Encrypted kernel traffic')."
        )
    return Decision(
        None,
        warning=(
            f"the kernel's ZeroMQ traffic is NOT encrypted: {why}; to encrypt, {what} "
            "(kubernetes_kernel_encryption 'prefer')"
        ),
    )


def image_support(probe: Mapping[str, Any] | None) -> str | None:
    """Why an image cannot encrypt, from its probe's ``zmq`` facts (in_container/probe.py);
    None where it can or nobody knows yet (no probe ran: the launcher then says it)."""
    facts = (probe or {}).get("zmq")
    if isinstance(facts, Mapping) and facts.get("curve") is False:
        return (
            f"its pyzmq {facts.get('pyzmq', '?')} (libzmq {facts.get('libzmq', '?')}) was "
            "built without CurveZMQ"
        )
    return None


def launcher_source() -> str:
    """The in-pod launcher's text, as the Secret carries it."""
    return LAUNCHER_PATH.read_text(encoding="utf-8")
