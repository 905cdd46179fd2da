"""Where kernels run: one interface (``base.KernelBackend``) and its three peers.

- ``base``: the interface, its result dataclasses, ``supports()`` and ``UnsupportedByBackend``.
- ``docker/``: containers on a Docker engine, in-process for a local server and for the
  broker (engine client and container specs, GPU allocation, live readings, probes, pulls).
- ``kubernetes/``: pods, for the broker (manifests, Pod Security checks, the API client).
- ``broker``: the tfenv broker's REST API, for a single-user server on JupyterHub.
- ``settings``: the container and storage settings the provisioner and the broker share.

The peers never import each other (an import-linter contract in pyproject.toml).
"""
