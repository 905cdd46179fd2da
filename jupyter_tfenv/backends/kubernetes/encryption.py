"""The broker's encryption policy for one kernel pod (``kubernetes_kernel_encryption``,
docs/kubernetes.md "Encrypted kernel traffic"): the server's CurveZMQ keys go into the
start (the Secret and the in-pod launcher, pods.py) where the policy and both sides
allow it; otherwise the start runs in clear with a warning (``prefer``) or is refused
(``require``, 409). The decision itself is :func:`jupyter_tfenv.kernels.curve.decide`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from jupyter_tfenv.backends.base import BackendError
from jupyter_tfenv.backends.kubernetes.start import ENCRYPTION_ANNOTATION, KernelStart
from jupyter_tfenv.kernels import curve


def encrypted(
    policy: str,
    start: KernelStart,
    keys: curve.CurveKeys | None,
    probe: Mapping[str, Any] | None,
    log: logging.Logger | logging.LoggerAdapter[Any],
) -> tuple[KernelStart, dict[str, str]]:
    """``start`` with the keys where it is encrypted, and the answer's fields
    (``encryption``, and ``encryption_warning`` where ``prefer`` runs it in clear)."""
    try:
        decision = curve.decide(
            policy, keys, image=start.env.image, image_support=curve.image_support(probe)
        )
    except curve.EncryptionRefused as err:
        raise BackendError(err.message, status=409, reason="not encrypted") from err
    if decision.keys is not None:
        return dataclasses.replace(start, curve=decision.keys), {"encryption": curve.CURVE}
    fields = {"encryption": curve.NONE}
    if decision.warning:
        log.warning(
            "tfenv-broker: kernel %s of %s (%s): %s",
            start.kernel_id,
            start.username,
            start.env.id,
            decision.warning,
        )
        fields["encryption_warning"] = decision.warning
    return start, fields


def encryption_of(annotations: Mapping[str, str]) -> str:
    """A kernel pod's encryption, as its annotation says: "curve" or "none"."""
    return curve.CURVE if annotations.get(ENCRYPTION_ANNOTATION) == curve.CURVE else curve.NONE
