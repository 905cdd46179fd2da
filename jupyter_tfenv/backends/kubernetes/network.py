"""The kernel's NetworkPolicy (ingress from its owner's server only; egress: none, or
public addresses and DNS plus ``kubernetes_egress_allow``), the namespace's default-deny
policy, and owner references (objects that go with their pod)."""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jupyter_tfenv.backends.kubernetes.names import (
    _check_namespace,
    _metadata,
    kernel_labels,
    kernel_selector,
    network_policy_name,
)
from jupyter_tfenv.backends.kubernetes.servers import default_server_selector
from jupyter_tfenv.backends.kubernetes.start import (
    COMPONENT_LABEL,
    MANAGED_BY,
    KernelStart,
    KubernetesManifestError,
)

NON_PUBLIC_V4 = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
NON_PUBLIC_V6 = ("::1/128", "::ffff:0:0/96", "64:ff9b::/96", "fc00::/7", "fe80::/10", "ff00::/8")
#: Where a networked kernel resolves names: the cluster DNS in kube-system.
DNS_NAMESPACE = "kube-system"

_ALLOW_RE = re.compile(
    r"^(?P<net>[0-9A-Fa-f:.]+/\d{1,3})(?::(?P<port>\d{1,5})(?:/(?P<proto>TCP|UDP|SCTP))?)?$"
)


def public_egress_rules() -> list[dict[str, Any]]:
    """The egress every networked kernel gets: public addresses, and DNS (53, UDP and TCP)
    to the cluster's DNS pods in kube-system."""
    return [
        {
            "to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": list(NON_PUBLIC_V4)}},
                {"ipBlock": {"cidr": "::/0", "except": list(NON_PUBLIC_V6)}},
            ]
        },
        {
            "to": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": DNS_NAMESPACE}
                    }
                }
            ],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        },
    ]


def egress_allow_rule(item: str | Mapping[str, Any]) -> dict[str, Any]:
    """One entry of c.TFEnvBroker.kubernetes_egress_allow as a NetworkPolicy egress rule:
    ``"10.20.0.0/16"`` (every port), ``"10.20.0.5/32:5432"`` (TCP), ``"10.0.0.10/32:53/UDP"``,
    or a NetworkPolicyEgressRule dict (``to``, ``ports``) taken as it is."""
    if isinstance(item, Mapping):
        extra = sorted(set(item) - {"to", "ports"})
        if extra or not item:
            raise KubernetesManifestError(
                f"kubernetes_egress_allow entry {dict(item)!r}: a NetworkPolicy egress rule "
                f"has only 'to' and 'ports'{f', not {extra}' if extra else ''}."
            )
        return copy.deepcopy(dict(item))
    match = _ALLOW_RE.match(str(item).strip())
    if match is None:
        raise KubernetesManifestError(
            f"kubernetes_egress_allow entry {item!r}: expected 'CIDR', 'CIDR:PORT' or "
            "'CIDR:PORT/UDP' (e.g. '10.20.0.5/32:5432'), or an egress rule dict."
        )
    try:
        net = ipaddress.ip_network(match["net"], strict=True)
    except ValueError as err:
        raise KubernetesManifestError(f"kubernetes_egress_allow entry {item!r}: {err}.") from err
    rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": str(net)}}]}
    if match["port"]:
        port = int(match["port"])
        if not 1 <= port <= 65535:
            raise KubernetesManifestError(f"kubernetes_egress_allow entry {item!r}: bad port.")
        rule["ports"] = [{"protocol": match["proto"] or "TCP", "port": port}]
    return rule


def egress_rules(
    network: str, allow: Sequence[str | Mapping[str, Any]] = ()
) -> list[dict[str, Any]]:
    """A kernel's egress rules: none for ``network: none``; else public addresses, DNS and
    what the admin opened on purpose (``allow``)."""
    if network == "none":
        return []
    return [*public_egress_rules(), *(egress_allow_rule(a) for a in allow)]


def kernel_network_policy(
    start: KernelStart,
    server_selector: Mapping[str, str] | None = None,
    *,
    server_namespace: str | None = None,
    egress_allow: Sequence[str | Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Only the owning user's server pod reaches the kernel pod, on its five ports.

    ``server_namespace``: where server pods run when that is not the kernels' namespace
    (the peer then names both the namespace and the pods). Policies add up: the
    namespace needs a default deny (:func:`default_deny_policy`) for this one to be the
    only way in.
    """
    if server_selector is None:
        server_selector = default_server_selector(start.username, start.server_name)
    selector = dict(server_selector)
    if not selector:
        raise KubernetesManifestError("the server pod selector may not be empty (every pod).")
    peer: dict[str, Any] = {"podSelector": {"matchLabels": selector}}
    if server_namespace is not None and server_namespace != start.namespace:
        peer["namespaceSelector"] = {
            "matchLabels": {"kubernetes.io/metadata.name": server_namespace}
        }
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": kernel_selector(start)},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [peer],
                "ports": [
                    {"protocol": "TCP", "port": port} for port in start.ports.by_name().values()
                ],
            }
        ],
        # Always stated: ``network: none`` (the Docker backend's default) lets nothing new
        # out (replies on the ingress connections still flow: policies are stateful); any
        # other network reaches public addresses and DNS only, never the cluster's
        # services or the cloud metadata server (as z2jh's servers).
        "egress": egress_rules(start.env.network, egress_allow),
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(start, network_policy_name(start), kernel_labels(start)),
        "spec": spec,
    }


def default_deny_policy(namespace: str) -> dict[str, Any]:
    """No ingress to any tfenv kernel pod of ``namespace`` but what a kernel's policy allows."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "tfenv-kernels-default-deny",
            "namespace": _check_namespace(namespace),
            "labels": dict(MANAGED_BY),
        },
        "spec": {
            "podSelector": {"matchLabels": {**MANAGED_BY, COMPONENT_LABEL: "kernel"}},
            "policyTypes": ["Ingress"],
        },
    }


def owner_reference(pod: Mapping[str, Any]) -> dict[str, Any]:
    """An ownerReference to ``pod`` as the API server returned it (with its uid)."""
    meta = pod.get("metadata") or {}
    if pod.get("kind") != "Pod" or not meta.get("name") or not meta.get("uid"):
        raise KubernetesManifestError(
            "an owner reference needs the created pod (kind Pod, metadata.name and .uid)."
        )
    return {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}


def with_owner(obj: Mapping[str, Any], pod: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``obj`` owned by ``pod``: deleted with it by the garbage collector."""
    ref = owner_reference(pod)
    out = copy.deepcopy(dict(obj))
    meta = out.setdefault("metadata", {})
    if meta.get("namespace") != (pod.get("metadata") or {}).get("namespace"):
        raise KubernetesManifestError(
            "an owner must be in the same namespace as what it owns "
            f"({meta.get('namespace')!r} vs {pod['metadata'].get('namespace')!r})."
        )
    refs = [r for r in meta.get("ownerReferences", []) if r.get("uid") != ref["uid"]]
    meta["ownerReferences"] = [*refs, ref]
    return out
