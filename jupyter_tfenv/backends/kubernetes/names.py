"""Names and labels of a user's Kubernetes objects: valid label values, DNS labels and
the object names derived from the owner and what they name, with a 128-bit hash (two
users' objects never share a name), and their pre-issue-17 (legacy) forms."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from jupyter_tfenv.backends.kubernetes.start import (
    _DNS_LABEL_RE,
    _HASH_LEN,
    _LABEL_VALUE_RE,
    _LEGACY_HASH_LEN,
    _MAX_LABEL,
    COMPONENT_LABEL,
    ENCRYPTION_ANNOTATION,
    MANAGED_BY,
    KernelStart,
    KubernetesManifestError,
)
from jupyter_tfenv.core.labels import (
    LABEL_ENVIRONMENT,
    LABEL_HUB_SERVER,
    LABEL_IMAGE_REF,
    LABEL_KERNEL_ID,
    LABEL_OWNER,
    LABEL_UID,
    choices_label,
)

# --- names and labels ------------------------------------------------------------------


def _digest_of(*parts: str) -> str:
    """128 bits of SHA-256 over the parts as a JSON list (unambiguous for any strings)."""
    return hashlib.sha256(json.dumps(list(parts)).encode("utf-8")).hexdigest()[:_HASH_LEN]


def _legacy_digest_of(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:_LEGACY_HASH_LEN]


def label_value(value: str) -> str:
    """``value`` as a valid label value (at most 63 of ``[A-Za-z0-9._-]``, alphanumeric ends).

    Values that already are valid (and hold no ``--``) stay as they are; any other becomes
    a readable slug, ``---`` and 128 bits of a hash of the original. A kept value never
    holds ``--`` and an escaped one always holds ``---``, so no name's label value equals
    another's, even a name chosen to look like an escaped one.
    """
    if "--" not in value and len(value) <= _MAX_LABEL and _LABEL_VALUE_RE.match(value):
        return value
    body = re.sub(r"[^A-Za-z0-9._]+", "-", value)
    body = body[: _MAX_LABEL - _HASH_LEN - 3]
    body = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", body)
    return f"{body or 'x'}---{_digest_of(value)}"


def legacy_label_value(value: str) -> str:
    """The label value objects made before issue 17 carry (a 40-bit hash): what finds them."""
    if len(value) <= _MAX_LABEL and _LABEL_VALUE_RE.match(value):
        return value
    body = re.sub(r"[^A-Za-z0-9._-]+", "-", value)
    body = body[: _MAX_LABEL - _LEGACY_HASH_LEN - 1]
    body = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", body)
    tag = _legacy_digest_of(value)
    return f"{body}-{tag}" if body else tag


def dns_label(prefix: str, *parts: str, always_hash: bool = False) -> str:
    """A DNS label (object name, at most 63 characters) from a fixed prefix and free parts.

    Parts are lower-cased and stripped of anything but ``[a-z0-9-]`` for readability; a
    128-bit hash of the original parts is appended (after ``--``) whenever there is more
    than one part, cleaning changed them, or ``always_hash``: different parts never give
    one name. A name without a hash never holds ``--`` (prefixes hold none), one with a
    hash always does, so the two kinds never meet.
    """
    cleaned = [re.sub(r"[^a-z0-9-]+", "-", p.lower()).strip("-") for p in parts]
    name = "-".join([prefix, *[c for c in cleaned if c]])
    if (
        not always_hash
        and len(parts) == 1
        and cleaned == list(parts)
        and all(parts)
        and "--" not in parts[0]
        and len(name) <= _MAX_LABEL - _HASH_LEN - 3
    ):
        return name
    tag = _digest_of(*parts)
    head = re.sub(r"-+", "-", name[: _MAX_LABEL - _HASH_LEN - 3]).rstrip("-")
    return f"{head}--{tag}"


def _legacy_dns_label(prefix: str, *parts: str, always_hash: bool = False) -> str:
    """:func:`dns_label` as it was before issue 17 (40-bit hash): names of old objects."""
    cleaned = [re.sub(r"[^a-z0-9-]+", "-", p.lower()).strip("-") for p in parts]
    name = "-".join([prefix, *[c for c in cleaned if c]])
    if not always_hash and cleaned == list(parts) and all(parts) and len(name) <= _MAX_LABEL:
        return name
    tag = _legacy_digest_of(*parts)
    head = name[: _MAX_LABEL - _LEGACY_HASH_LEN - 1].rstrip("-")
    return f"{head}-{tag}"


def kernel_labels(start: KernelStart) -> dict[str, str]:
    """The labels of a kernel pod (and its Secret and NetworkPolicy): owner, kernel, …"""
    return {
        **MANAGED_BY,
        COMPONENT_LABEL: "kernel",
        LABEL_OWNER: label_value(start.username),
        LABEL_KERNEL_ID: label_value(start.kernel_id),
        LABEL_ENVIRONMENT: label_value(start.env.id),
        LABEL_HUB_SERVER: label_value(start.server_name),
        LABEL_UID: str(start.uid),
    }


def kernel_annotations(start: KernelStart) -> dict[str, str]:
    """The exact values behind the (possibly escaped) labels, the image as pinned, and
    the resources chosen at launch (docs/choices.md), where the entry offers a choice."""
    return {
        LABEL_OWNER: start.username,
        LABEL_KERNEL_ID: start.kernel_id,
        LABEL_ENVIRONMENT: start.env.id,
        LABEL_HUB_SERVER: start.server_name,
        LABEL_IMAGE_REF: start.env.image,
        # As the Docker side's label (an annotation: JSON is no label value).
        **choices_label(start.env.chosen),
        # An encrypted kernel says so (kernels/curve.py); the broker's answers read it.
        **({ENCRYPTION_ANNOTATION: "curve"} if start.curve is not None else {}),
    }


def kernel_selector(start: KernelStart) -> dict[str, str]:
    """matchLabels that select this kernel's pod and no other (label values are injective,
    and a user's kernel ids are theirs)."""
    return {
        LABEL_KERNEL_ID: label_value(start.kernel_id),
        LABEL_OWNER: label_value(start.username),
    }


def kernel_pod_name(username: str, kernel_id: str) -> str:
    """The pod (and NetworkPolicy) of ``username``'s kernel ``kernel_id``: another user's
    kernel of the same id has another name, so a start can never replace theirs."""
    return dns_label("tfenv-kernel", username, kernel_id)


def kernel_secret_name(username: str, kernel_id: str) -> str:
    return dns_label("tfenv-connection", username, kernel_id)


def legacy_kernel_pod_name(kernel_id: str) -> str:
    """The name pods had before issue 17 (the kernel id only)."""
    return _legacy_dns_label("tfenv-kernel", kernel_id)


def pod_name(start: KernelStart) -> str:
    return kernel_pod_name(start.username, start.kernel_id)


def secret_name(start: KernelStart) -> str:
    return kernel_secret_name(start.username, start.kernel_id)


def network_policy_name(start: KernelStart) -> str:
    return kernel_pod_name(start.username, start.kernel_id)


def claim_name(username: str, env_id: str) -> str:
    """One name per (user, environment), with a 128-bit hash: names never collide, even
    for names chosen to collide (the claim is mounted read-write)."""
    return dns_label("tfenv-storage", username, env_id, always_hash=True)


def legacy_claim_name(username: str, env_id: str) -> str:
    """The claim name before issue 17 (a 40-bit hash): still used when such a claim exists
    and its annotations name this user and environment (the backend checks them)."""
    return _legacy_dns_label("tfenv-storage", username, env_id, always_hash=True)


def pvc_name(start: KernelStart) -> str:
    return start.claim or claim_name(start.username, start.env.id)


def claim_owned_by(claim: Mapping[str, Any], username: str, env_id: str) -> bool:
    """Whether a claim's annotations name this user and environment exactly."""
    annotations = (claim.get("metadata") or {}).get("annotations") or {}
    return annotations.get(LABEL_OWNER) == username and (
        annotations.get(LABEL_ENVIRONMENT) == env_id
    )


def _check_namespace(namespace: str) -> str:
    if not _DNS_LABEL_RE.match(namespace) or len(namespace) > _MAX_LABEL:
        raise KubernetesManifestError(
            f"namespace '{namespace}' is not a Kubernetes namespace name "
            "(lower case letters, digits and '-', at most 63)."
        )
    return namespace


def _metadata(start: KernelStart, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": _check_namespace(start.namespace), "labels": labels}
