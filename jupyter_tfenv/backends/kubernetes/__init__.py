"""The Kubernetes backend: kernels as pods in one namespace, for the broker (docs/kubernetes.md).

- :mod:`.backend`: :class:`KubernetesBackend`, the ``KernelBackend`` peer of Docker; it is
  given :class:`KubernetesSettings` (:mod:`.settings`) and plain callables, never the broker.
- :mod:`.helpers`: the short pods beside kernels (environment probes, checkpoint helpers).
- :mod:`.api`: :class:`~.api.KubernetesAPI`, the ``kubernetes`` client wrapper that submits,
  follows and removes the objects (needs the ``[kubernetes]`` extra; imported on first use);
  :mod:`.podstatus`: what its answers say (pod states, events, why a start failed).
- :mod:`.manifests`: pure builders of every object, re-exported from :mod:`.start` (what a
  start is made of), :mod:`.names` (names and labels), :mod:`.pods` (Secret, claim, kernel
  and helper pods), :mod:`.servers` (server pod labels) and :mod:`.network`
  (NetworkPolicies, owner references); :mod:`.pss`: the restricted Pod Security check.

``KubernetesBackend`` and ``KubernetesSettings`` are importable from here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KubernetesBackend", "KubernetesSettings"]


def __getattr__(name: str) -> Any:
    # Lazily: importing the manifests must not import the backend (and the catalog).
    if name == "KubernetesBackend":
        from jupyter_tfenv.backends.kubernetes.backend import KubernetesBackend  # noqa: PLC0415

        return KubernetesBackend
    if name == "KubernetesSettings":
        from jupyter_tfenv.backends.kubernetes.settings import KubernetesSettings  # noqa: PLC0415

        return KubernetesSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
