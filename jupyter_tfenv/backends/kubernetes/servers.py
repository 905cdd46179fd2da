"""Which server pods may reach a kernel: KubeSpawner's label spellings of user and server
names ('safe', 'escape'), the ambiguous names refused, and the NetworkPolicy peer selector
built from the broker's ``kubernetes_server_selector``."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping

from jupyter_tfenv.backends.kubernetes.start import (
    _LABEL_VALUE_RE,
    _MAX_LABEL,
    KubernetesManifestError,
)

_KS_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_KS_HASH_LEN = 8
_KS_MAX = 32


def kubespawner_label(name: str) -> str:
    """The label value KubeSpawner 7 (z2jh 4) gives a user or server name.

    Its documented "safe" scheme: a name that already is a valid label value (and has no
    ``--``) stays as it is; any other becomes a lower-case slug of at most 21 characters
    (runs of anything but ``[a-z0-9]`` become ``-``, it starts with a letter, else ``x-``
    is put in front), then ``---`` and the first 8 hex digits of the name's SHA-256: 32
    characters at most. The server's NetworkPolicy must select exactly this value.
    """
    if not name:
        return ""
    if "--" not in name and len(name) <= _MAX_LABEL and _KS_LABEL_RE.match(name):
        return name
    room = _KS_MAX - _KS_HASH_LEN - 3
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).lstrip("-")[:room].rstrip("-")
    if slug and not slug[0].isalpha():
        slug = "x-" + slug[: room - 2]
    tag = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_KS_HASH_LEN]
    return f"{slug or 'x'}---{tag}"


def default_server_selector(username: str, server_name: str = "") -> dict[str, str]:
    """matchLabels of a user's server pod as KubeSpawner 7 labels it (z2jh 4's defaults):
    ``component: singleuser-server`` and the user (and server) names as
    :func:`kubespawner_label` makes them.

    A deployment that labels server pods differently passes its own selector to
    :func:`kernel_network_policy`.
    """
    labels = {
        "component": "singleuser-server",
        "hub.jupyter.org/username": kubespawner_label(username),
    }
    if server_name:
        labels["hub.jupyter.org/servername"] = kubespawner_label(server_name)
    return labels


_ESCAPE_SAFE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
#: How server pods' labels spell names (c.TFEnvBroker.kubernetes_server_label_scheme).
SERVER_LABEL_SCHEMES = ("safe", "escape")


def escape_label(name: str) -> str:
    """The label value KubeSpawner before 7 (and 7 with ``slug_scheme = "escape"``) gives a
    name: escapism with ``-`` as the escape character (each byte of anything but
    ``[a-z0-9]`` as ``-XX``), lower-cased. ``-`` itself is escaped, so the mapping is
    injective ("bob.x" is "bob-2ex", "bob-2ex" is "bob-2d2ex"); names longer than a label
    value allows are refused by :func:`server_label_problem`."""
    out: list[str] = []
    for ch in name:
        if ch in _ESCAPE_SAFE:
            out.append(ch)
        else:
            out.extend(f"-{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out).lower()


def server_label(name: str, scheme: str = "safe") -> str:
    """``name`` (a user's or server's) as the server pod's label value under ``scheme``."""
    if scheme == "safe":
        return kubespawner_label(name)
    if scheme == "escape":
        return escape_label(name)
    raise KubernetesManifestError(
        f"kubernetes_server_label_scheme '{scheme}' is not one of "
        f"{', '.join(SERVER_LABEL_SCHEMES)}."
    )


def server_label_problem(name: str, scheme: str = "safe", *, accept_hashed: bool = False) -> str:
    """Why ``name`` cannot be told apart from another name by its server label value under
    ``scheme`` ('' when it can). The kernel's NetworkPolicy admits the server pods whose
    label equals this value: a value two names share would admit the other's server."""
    if not name:
        return ""
    label = server_label(name, scheme)
    if len(label) > _MAX_LABEL or not _LABEL_VALUE_RE.match(label):
        return (
            f"'{name}' is too long for a label value under the '{scheme}' scheme ('{label}' "
            "has more than 63 characters): server pods could not be told apart by it."
        )
    if scheme == "safe" and label != name and not accept_hashed:
        return (
            f"'{name}' is not a valid label value as it is, so KubeSpawner labels its server "
            f"'{label}', which carries a 32-bit hash: another name chosen to match it would be "
            "admitted to this user's kernels. Ask an admin for a name of letters, digits, "
            "'.', '_' and single '-', or (where users cannot choose their names) to set "
            "c.TFEnvBroker.kubernetes_accept_hashed_server_labels = True."
        )
    return ""


def server_selector_from(
    template: Mapping[str, str], scheme: str = "safe", *, accept_hashed: bool = False
) -> Callable[[str, str], dict[str, str]]:
    """A server selector (user, server name) -> matchLabels from a template such as
    ``{"component": "singleuser-server", "hub.jupyter.org/username": "{username}",
    "hub.jupyter.org/servername": "{servername}"}``: ``{username}`` and ``{servername}``
    become the names' label values under ``scheme``; a label whose value renders empty
    (the default server's name) is left out. A name whose label value is ambiguous
    (:func:`server_label_problem`) is refused with the reason."""
    if scheme not in SERVER_LABEL_SCHEMES:
        raise KubernetesManifestError(
            f"kubernetes_server_label_scheme '{scheme}' is not one of "
            f"{', '.join(SERVER_LABEL_SCHEMES)}."
        )
    if not any("{username}" in str(v) for v in template.values()):
        raise KubernetesManifestError(
            "c.TFEnvBroker.kubernetes_server_selector must select the user: one of its "
            "values must hold '{username}' (else every user's server reaches every kernel)."
        )

    def selector(username: str, server_name: str = "") -> dict[str, str]:
        for what, name in (("user name", username), ("server name", server_name)):
            problem = server_label_problem(name, scheme, accept_hashed=accept_hashed)
            if problem:
                raise KubernetesManifestError(f"The {what} {problem}")
        labels: dict[str, str] = {}
        for key, value in template.items():
            try:
                rendered = str(value).format(
                    username=server_label(username, scheme),
                    servername=server_label(server_name, scheme) if server_name else "",
                )
            except (KeyError, IndexError, ValueError) as err:
                raise KubernetesManifestError(
                    f"c.TFEnvBroker.kubernetes_server_selector['{key}'] = {value!r}: only "
                    f"{{username}} and {{servername}} may appear ({err})."
                ) from err
            if rendered:
                labels[key] = rendered
        return labels

    return selector


#: Addresses a networked kernel never reaches (unless kubernetes_egress_allow opens them):
#: private ranges (in-cluster services, the nodes), carrier-grade NAT, link-local (the
#: cloud metadata server 169.254.169.254), loopback, multicast, reserved. As z2jh's
