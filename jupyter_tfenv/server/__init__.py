"""The Jupyter server extension: wiring, the ``/tfenv`` REST API, and what the hub asks of it.

- ``app``: ``TFEnvApp``, the extension; it wires the catalog, the kernelspec manager, the
  backend (through the provisioner's defaults), lifecycle tasks and the handlers. Wiring only.
- ``service``: ``TFEnvService``, what the handlers ask (environments, image status, probes,
  pulls, kernel status, GPUs, checkpoints), through the one backend the server holds.
- ``handlers/``: thin tornado handlers, one module per resource; errors mapped once in
  ``handlers/base.py``.
- ``hub``: ``TFEnvHubAuthorizer``, JupyterHub scopes for the ``/tfenv`` endpoints.
- ``metrics``: the Prometheus metrics on jupyter_server's ``/metrics``.
"""
